"""``klipprep batch``: associations as Dask tasks, failures reported, resumable; real scheduler."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import distributed  # noqa: F401 - loads its config defaults before any dask.config.set below
import pytest
from astropy.io import fits
from astropy.table import Table
from batch_helpers import LIGHT_ARGS, loopback_only, small_program, truncate

from jwst_klipprep.batch import associate, expected_products, product_is_complete, run_batch
from jwst_klipprep.batch.runner import SUMMARY_NAME, validate_args
from jwst_klipprep.cli import main

_PRELOAD = str(Path(__file__).with_name("dask_loopback_preload.py"))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Overrides conftest's guard: Dask talks to itself on 127.0.0.1, nothing else is allowed
    (in the worker processes too: they load ``dask_loopback_preload.py``)."""
    loopback_only(monkeypatch)
    with dask.config.set({"distributed.worker.preload": [_PRELOAD]}):
        yield


@pytest.fixture(scope="module")
def asns(tmp_path_factory):
    """Three small programs (2 SCI + 1 REF, 2 integrations); the third has a broken member."""
    root = tmp_path_factory.mktemp("programs")
    paths = []
    for i in range(3):
        files = small_program(root / f"p{i}", program=f"0100{i}", nints=2,
                              with_background=False, seed=i)
        (group,) = associate([root / f"p{i}"])
        paths.append(group.asn_path)
        if i == 2:  # a download cut inside the reference's data
            ref = next(p for p, kind in files.items() if kind == "REF")
            with fits.open(ref) as hdul:
                truncate(ref, hdul.fileinfo(1)["datLoc"] + 1000)
    return paths


@pytest.fixture(scope="module")
def first_run(asns, tmp_path_factory):
    """``klipprep batch`` on the three ASNs, LocalCluster of two workers."""
    out = tmp_path_factory.mktemp("prepared")
    # the guard of this module is function-scoped: patch by hand for the module-scoped run
    mp = pytest.MonkeyPatch()
    loopback_only(mp)
    try:
        with dask.config.set({"distributed.worker.preload": [_PRELOAD]}):  # guard workers too
            rc = main(["batch", str(asns[0].parent), str(asns[1]), str(asns[2]),
                       f"--output_dir={out}", "--workers", "2", "--memory-limit", "2GB",
                       *LIGHT_ARGS])
    finally:
        mp.undo()
    return rc, out


@pytest.mark.slow
def test_two_succeed_one_is_reported(first_run, asns):
    rc, out = first_run
    assert rc == 1  # one association failed
    table = Table.read(out / SUMMARY_NAME)
    table["error"] = table["error"].filled("")  # empty ECSV cells read back masked
    assert list(table["asn"]) == [str(p.resolve()) for p in asns]
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert list(table["n_products"]) == [3, 3, 0]
    # the broken member is named, with its association
    assert table["error"][2].startswith(f"InputError: {asns[2].resolve().parent}/jw01002")
    assert f"(member of {asns[2].name}): cannot be opened" in table["error"][2]
    assert all(e == "" for e in table["error"][:2])
    assert (table["seconds"][:2] > 0).all() and (table["cpu_seconds"][:2] > 0).all()
    assert (table["peak_rss_mb"][:2] > 50).all()
    for asn in asns[:2]:
        names = expected_products(asn)
        assert len(names) == 3 and all(n.endswith("_nrcalong_klipprep.fits") for n in names)
        assert all(product_is_complete(out / n) for n in names)
        assert (out / f"{asn.stem}.log").stat().st_size > 0  # the pipeline log of the ASN
    assert not any((out / n).exists() for n in expected_products(asns[2]))
    assert not list(out.glob(".*tmp*"))  # the summary was replaced atomically


@pytest.mark.slow
def test_resume_skips_complete_products_and_redoes_damaged_ones(first_run, asns, tmp_path):
    _, out = first_run
    names = expected_products(asns[1])
    truncate(out / names[0], 0)  # an interrupted write: 0 bytes
    assert not product_is_complete(out / names[0])
    before = {n: (out / n).stat().st_mtime_ns for n in expected_products(asns[0])}
    table = run_batch(asns[:2], out, n_workers=1, args=LIGHT_ARGS, echo=None,
                      summary=tmp_path / "resume.ecsv")
    assert list(table["status"]) == ["skipped", "ok"]
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # not rewritten
    assert product_is_complete(out / names[0])
    assert Table.read(tmp_path / "resume.ecsv")["status"].tolist() == ["skipped", "ok"]


@pytest.mark.slow
def test_product_is_complete(first_run, asns, tmp_path):
    _, out = first_run
    good = out / expected_products(asns[0])[0]
    assert product_is_complete(good)
    cut = tmp_path / good.name
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not product_is_complete(cut)
    assert not product_is_complete(tmp_path / "missing_klipprep.fits")


@pytest.mark.slow
def test_bad_arguments_fail_before_any_work(asns, tmp_path, capsys):
    with pytest.raises(ValueError, match="unrecognized arguments: --steps.pad_frames.npixx=3"):
        validate_args(["--steps.pad_frames.npixx=3"])
    with pytest.raises(ValueError, match="shift_method"):
        validate_args(["--shift_method=nearest"])
    validate_args(LIGHT_ARGS)
    rc = main(["batch", str(asns[0]), f"--output_dir={tmp_path}", "--shift_method=nearest"])
    assert rc == 2
    assert "bad pipeline arguments" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    twin = tmp_path / "twin_asn.json"
    twin.write_text(asns[0].read_text().replace('"expname": "', f'"expname": "{asns[0].parent}/'))
    with pytest.raises(ValueError, match="would both write jw01000001001_03106_00001_nrcalong_kl"):
        run_batch([asns[0], asns[0].parent, twin], tmp_path / "out", echo=None)
    assert not (tmp_path / "out").exists()


def test_inputs_are_checked_before_any_cluster_starts(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nowhere"), f"--output_dir={tmp_path}"]) == 2
    assert "no such association file or folder" in capsys.readouterr().err
    assert main(["batch", str(tmp_path), f"--output_dir={tmp_path}"]) == 2
    assert "no association (*_asn.json) in this folder" in capsys.readouterr().err
    asn = tmp_path / "x_asn.json"
    asn.write_text(json.dumps({"products": [{"name": "x", "members": [
        {"expname": "a/jw1_nrcalong_calints.fits", "exptype": "science"},
        {"expname": "jw2_nrcalong_cal.fits", "exptype": "psf"},
        {"expname": "jw3_nrcalong_calints.fits", "exptype": "background"}]}]}))
    assert expected_products(asn) == ["jw1_nrcalong_klipprep.fits", "jw2_nrcalong_klipprep.fits"]
    assert expected_products(asn, keep_backgrounds=True)[-1] == "jw3_nrcalong_klipprep.fits"
    with pytest.raises(ValueError, match="not in args"):
        run_batch([asn], tmp_path, args=[f"--output_dir={tmp_path}"])


@pytest.fixture
def dask_cluster(tmp_path):
    """A real ``dask scheduler`` and ``dask worker`` (subprocesses on 127.0.0.1), always stopped."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    dask = [sys.executable, "-m", "dask"]  # the `dask` command of this environment
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask_logs"
    logs.mkdir()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
            env=env, cwd=tmp_path, stdout=open(logs / "scheduler.log", "w"),
            stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, (logs / "scheduler.log").read_text()
            assert procs[0].poll() is None, (logs / "scheduler.log").read_text()
            time.sleep(0.2)
        procs.append(subprocess.Popen(
            [*dask, "worker", "--scheduler-file", str(sched_file),
             "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--memory-limit",
             "2GB", "--dashboard-address", "127.0.0.1:0", "--death-timeout", "60",
             "--preload", _PRELOAD],
            env=env, cwd=tmp_path, stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT))
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.slow
def test_real_scheduler_and_worker(dask_cluster, first_run, asns, tmp_path, capsys):
    _, out = first_run
    # one complete ASN is skipped; --force reruns the other through the same scheduler
    assert main(["batch", str(asns[0]), f"--output_dir={out}", "--scheduler", dask_cluster,
                 f"--summary={tmp_path / 'a.ecsv'}", *LIGHT_ARGS]) == 0
    assert Table.read(tmp_path / "a.ecsv")["status"].tolist() == ["skipped"]
    fresh = tmp_path / "fresh"
    assert main(["batch", str(asns[1]), f"--output_dir={fresh}", "--scheduler", dask_cluster,
                 *LIGHT_ARGS]) == 0
    printed = capsys.readouterr().out
    assert f"scheduler {dask_cluster}" in printed
    assert "[1/1] ok" in printed
    table = Table.read(fresh / SUMMARY_NAME)
    assert table["status"].tolist() == ["ok"]
    assert all(product_is_complete(fresh / n) for n in expected_products(asns[1]))
    # --force with a parameter file (as `strun pars.asdf asn.json`): products rewritten with it
    from stdatamodels.jwst import datamodels

    from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline

    pars = tmp_path / "pars.asdf"
    KlipPrepPipeline(save_diagnostics=False, steps={
        "pad_frames": {"skip": False, "npix": [7]}, "fix_bad_pixels": {"skip": True},
        "recenter_frames": {"skip": True}}).export_config(str(pars))
    rc = main(["batch", str(pars), str(asns[1]), f"--output_dir={fresh}", "--scheduler",
               dask_cluster, "--force"])
    assert rc == 0 and Table.read(fresh / SUMMARY_NAME)["status"].tolist() == ["ok"]
    with datamodels.open(fresh / expected_products(asns[1])[0]) as model:
        assert model.data.shape == (2, 320 + 14, 320 + 14)
        assert model.meta.cal_step.instance["fix_bad_pixels"] == "SKIPPED"
        assert model.meta.cal_step.instance["subtract_median"] == "COMPLETE"


def test_local_workers_keep_glibc_adaptive_malloc():
    from jwst_klipprep.batch.runner import worker_environ

    environ = worker_environ()
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    assert str(environ["OMP_NUM_THREADS"]) == "1"  # one numpy thread per single-threaded worker
    assert str(environ["JWST_KLIPPREP_THREADS"]) == "1"  # and one pipeline thread
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1000}):
        assert worker_environ()["MALLOC_TRIM_THRESHOLD_"] == 1000  # the user's own value
