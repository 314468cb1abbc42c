"""Products are whole or absent, never written over an input, summary and figure last (issue 11).

The interruption tests kill a real ``strun klipprep`` run (a child process) while it is half-way
through writing a product.  The moment is made deterministic by a patch in the child only: the
k-th FITS write puts half of its bytes into the file, touches a marker file and waits; the test
sees the marker and sends the signal.  Without atomic writing, the half-written file sits under its
final name and the checks below fail.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import make_model
from stdatamodels.jwst import datamodels

from jwst_klipprep import outputs
from jwst_klipprep.base import InputError
from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline
from jwst_klipprep.simulate import simulate_dataset
from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep

_CHILD = r"""
import io, os, sys, time
import stdatamodels.model_base as mb
from stpipe._cli.strun import main

marker, stop_at = sys.argv[1], int(sys.argv[2])
original = mb.DataModel.to_fits
calls = [0]

def to_fits(self, init, *args, **kwargs):
    calls[0] += 1
    if calls[0] != stop_at:
        return original(self, init, *args, **kwargs)
    buf = io.BytesIO()
    original(self, buf, *args, **kwargs)
    data = buf.getvalue()
    if isinstance(init, (str, os.PathLike)):
        fh = open(init, "wb")
    else:
        fh = init
    fh.write(data[: len(data) // 2])
    fh.flush()
    open(marker, "w").close()
    time.sleep(120)

mb.DataModel.to_fits = to_fits
sys.argv = ["strun", *sys.argv[3:]]
sys.exit(main())
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("sim"), nints=2, n_reference=1, seed=3)


def _assert_whole(folder, expected_count=None):
    """Every visible file opens whole; return the names of the products."""
    products = sorted(p for p in folder.iterdir() if p.suffix == ".fits")
    for path in products:
        with datamodels.open(path) as model:
            assert model.meta.cal_step.instance["align_frames"] == "COMPLETE", path
            assert model.var_rnoise.shape == model.data.shape, path
            assert "klipprep" in model.meta.instance, path
            assert model.meta.filename == path.name
    visible = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    assert all(n.endswith(".fits") for n in visible), visible  # no summary, no figure
    if expected_count is not None:
        assert len(products) == expected_count
    return products


@pytest.mark.slow
@pytest.mark.parametrize("sig, stop_at", [(signal.SIGKILL, 2), (signal.SIGTERM, 1),
                                          (signal.SIGINT, 3)])
def test_interrupted_run_leaves_only_whole_files(dataset, tmp_path, sig, stop_at):
    out = tmp_path / "out"
    marker = tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(marker), str(stop_at), "klipprep",
         str(dataset.asn_path), f"--output_dir={out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, "the run ended before it wrote its products"
            assert time.monotonic() < deadline, "the run never reached its products"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # the products written before the interrupted one are whole; the interrupted one is absent
    _assert_whole(out, expected_count=stop_at - 1)
    parts = [p for p in out.iterdir() if p.name.endswith(".part")]
    if sig == signal.SIGINT:  # an exception: the temporary file is removed
        assert parts == []
    else:  # only the one hidden temporary file of the interrupted write
        assert len(parts) == 1 and parts[0].name.startswith(".")


@pytest.mark.slow
def test_summary_and_figure_are_written_after_the_products(dataset, tmp_path):
    out = tmp_path / "out"
    KlipPrepPipeline.call(str(dataset.asn_path), save_results=True, output_dir=str(out))
    products = _assert_whole_and_sides(out)
    last_product = max(p.stat().st_mtime_ns for p in products)
    for pattern in ("*_klipprep_summary.ecsv", "*_klipprep.png"):
        side = next(out.glob(pattern))
        assert side.stat().st_mtime_ns >= last_product
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _assert_whole_and_sides(folder):
    products = sorted(folder.glob("*.fits"))
    assert len(products) == 3  # two science rolls and one reference
    for path in products:
        with datamodels.open(path) as model:
            assert model.meta.filename == path.name
    return products


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
    with outputs.atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert list(tmp_path.iterdir()) == [path]


def test_stale_temporary_file_of_a_killed_run_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = tmp_path / "x.fits"
    stale = tmp_path / f".x.fits.{int(dead.stdout)}.part"
    stale.write_bytes(b"half")
    alive = tmp_path / f".x.fits.{os.getppid()}.part"  # a live process: left alone
    alive.write_bytes(b"busy")
    with outputs.atomic_path(path) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "x.fits"]


def test_step_on_its_own_product_is_refused(tmp_path):
    src = tmp_path / "jw01234001001_03106_00001_nrcalong_calints.fits"
    make_model().save(src)
    ReplaceNansStep.call(str(src), save_results=True, output_dir=str(tmp_path))
    product = tmp_path / "jw01234001001_03106_00001_nrcalong_nanrep.fits"
    before = product.read_bytes()
    with pytest.raises(InputError, match="would overwrite this input"):
        ReplaceNansStep.call(str(product), save_results=True, output_dir=str(tmp_path))
    assert product.read_bytes() == before
    # --suffix equal to the input's suffix: refused too, the input untouched
    original = src.read_bytes()
    with pytest.raises(InputError, match="would overwrite this input"):
        ReplaceNansStep.call(str(src), save_results=True, output_dir=str(tmp_path),
                             suffix="calints")
    assert src.read_bytes() == original
    # into another folder it runs
    ReplaceNansStep.call(str(product), save_results=True, output_dir=str(tmp_path / "again"))
    assert (tmp_path / "again" / product.name).exists()


def test_pipeline_on_its_own_products_in_place_is_refused(dataset, tmp_path, caplog):
    import json

    out = tmp_path / "out"
    KlipPrepPipeline.call(str(dataset.asn_path), save_results=True, output_dir=str(out),
                          save_diagnostics=False, steps={"fix_bad_pixels": {"skip": True}})
    asn = json.loads(dataset.asn_path.read_text())
    names = {p.name for p in out.glob("*.fits")}
    members = [m for m in asn["products"][0]["members"] if m["exptype"] in ("science", "psf")]
    for m in members:
        m["expname"] = m["expname"].replace("_calints", "_klipprep")
        assert m["expname"] in names
    asn["products"][0]["members"] = members
    (out / "asn.json").write_text(json.dumps(asn))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.fits")}
    with pytest.raises(InputError, match="would overwrite this input"):
        KlipPrepPipeline.call(str(out / "asn.json"), save_results=True, output_dir=str(out))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.fits")} == stamp
    # in memory (nothing saved) it runs, and says that the inputs were processed already
    caplog.clear()
    KlipPrepPipeline.call(str(out / "asn.json"), steps={"fix_bad_pixels": {"skip": True}})
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("already processed by subtract_background" in w for w in warned), warned


def test_two_products_onto_one_file_are_refused(tmp_path):
    import json

    src = tmp_path / "jw01234001001_03106_00001_nrcalong_calints.fits"
    model = make_model()
    model.meta.exposure.psf_reference = False
    model.save(src)
    member = {"expname": src.name, "exptype": "science"}
    asn = {"asn_type": "coron3", "asn_rule": "candidate_Asn_Lv3Coron", "asn_pool": "t",
           "program": "01234", "asn_id": "c1000",
           "products": [{"name": "twice", "members": [member, member]}]}
    path = tmp_path / "asn.json"
    path.write_text(json.dumps(asn))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="two products of this run|listed twice"):
        ReplaceNansStep.call(str(path), save_results=True, output_dir=str(out))
    assert not out.exists() or not list(out.iterdir())


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    src = tmp_path / "jw01234001001_03106_00001_nrcalong_calints.fits"
    make_model().save(src)
    afile = tmp_path / "notafolder"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        ReplaceNansStep.call(str(src), save_results=True, output_dir=str(afile))
    with pytest.raises(InputError, match="is a file, not a folder"):
        ReplaceNansStep.call(str(src), save_results=True, output_dir=str(afile / "sub"))


def test_second_run_into_one_folder_warns_with_the_names(tmp_path, caplog):
    src = tmp_path / "jw01234001001_03106_00001_nrcalong_calints.fits"
    make_model().save(src)
    out = tmp_path / "out"
    out.mkdir()
    product = out / "jw01234001001_03106_00001_nrcalong_nanrep.fits"
    product.write_bytes(b"an earlier run")
    ReplaceNansStep.call(str(src), save_results=True, output_dir=str(out))
    assert any(str(product) in r.getMessage() and "written before this run" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    with datamodels.open(product) as model:
        assert model.meta.cal_step.instance["replace_nans"] == "COMPLETE"
