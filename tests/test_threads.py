"""Per-exposure threads (`base.for_each_member`): same results as one at a time, errors kept."""

import threading

import numpy as np
import pytest
from conftest import make_model
from jwst.datamodels import ModelContainer

from jwst_klipprep.base import THREADS_ENV, InputError, for_each_member, worker_threads
from jwst_klipprep.steps.subtract_median_step import SubtractMedianStep


def _container(n=3):
    models = [make_model(nints=3, ny=48, nx=52, seed=i, filename=f"jw0000{i}001001_03106_00001_"
                         "nrcalong_calints.fits") for i in range(n)]
    for i, model in enumerate(models):
        model.data = model.data + np.float32(0.5 + i)  # a different pedestal per exposure
    return ModelContainer(models)


def test_members_run_in_threads_in_order(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    seen = set()

    def work(model):
        seen.add(threading.current_thread().name)
        return model.meta.filename

    container = _container(4)
    assert for_each_member(work, container) == [m.meta.filename for m in container]
    assert all(name.startswith("klipprep") for name in seen)  # pool threads, not the caller


def test_one_thread_runs_in_the_caller_and_errors_propagate(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert worker_threads() == 1
    names = for_each_member(lambda m: threading.current_thread().name, _container(2))
    assert names == [threading.current_thread().name] * 2
    monkeypatch.setenv(THREADS_ENV, "2")

    def fail(model):
        raise InputError(f"{model.meta.filename}: broken")

    with pytest.raises(InputError, match="broken"):
        for_each_member(fail, _container(2))
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(InputError, match="JWST_KLIPPREP_THREADS='many'"):
        worker_threads()


def test_subtract_median_threads_give_the_serial_result(monkeypatch):
    container = _container(3)
    monkeypatch.setenv(THREADS_ENV, "1")
    serial = SubtractMedianStep.call(container)
    monkeypatch.setenv(THREADS_ENV, "3")
    threaded = SubtractMedianStep.call(container)
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.err, b.err)
        assert a.meta.instance["klipprep"]["subtract_median"]["level"] == \
            b.meta.instance["klipprep"]["subtract_median"]["level"]
    # the pedestals (0.5, 1.5, 2.5 above the model's own level) were measured per exposure
    levels = [np.mean(m.meta.instance["klipprep"]["subtract_median"]["level"]) for m in threaded]
    np.testing.assert_allclose(np.diff(levels), [1.0, 1.0], atol=0.05)


def test_pipeline_threads_give_the_serial_products(monkeypatch, tmp_path):
    """The whole pipeline (fix_bad_pixels' evidence and repairs, the resampling) in threads
    gives bit-identical products to one exposure at a time."""
    from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline
    from jwst_klipprep.simulate import simulate_dataset

    dataset = simulate_dataset(tmp_path, nints=2, n_reference=1, seed=4)
    results = {}
    for threads in ("1", "3"):
        monkeypatch.setenv(THREADS_ENV, threads)
        results[threads] = KlipPrepPipeline.call(str(dataset.asn_path), save_summary=False,
                                                 save_diagnostics=False)
    assert len(results["1"]) >= 3
    for a, b in zip(results["1"], results["3"], strict=True):
        assert a.meta.filename == b.meta.filename
        for attr in ("data", "err", "dq", "var_rnoise"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
        rec_a = a.meta.instance["klipprep"]["fix_bad_pixels"]
        rec_b = b.meta.instance["klipprep"]["fix_bad_pixels"]
        assert rec_a["n_repaired"] == rec_b["n_repaired"] > 0
