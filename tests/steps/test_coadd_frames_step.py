import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot, write_asn
from stdatamodels.jwst import datamodels

from jwst_klipprep.algorithms.background import median_error_factor
from jwst_klipprep.base import InputError
from jwst_klipprep.geometry import set_pending_shift
from jwst_klipprep.steps.coadd_frames_step import CoaddFramesStep


def _int_times(nints):
    dtype = [("integration_number", "i4")] + [
        (f"int_{when}_{scale}", "f8") for scale in ("MJD_UTC", "BJD_TDB")
        for when in ("start", "mid", "end")]
    table = np.zeros(nints, dtype=dtype)
    table["integration_number"] = np.arange(1, nints + 1)
    table["int_start_MJD_UTC"] = 60000 + np.arange(nints) * 0.01
    table["int_end_MJD_UTC"] = table["int_start_MJD_UTC"] + 0.009
    table["int_mid_MJD_UTC"] = table["int_start_MJD_UTC"] + 0.0045
    return table


def test_coadd_blocks_errors_times():
    model = make_model(nints=7)
    model.int_times = _int_times(7)
    model.meta.exposure.integration_time = 10.0
    model.meta.exposure.exposure_time = 70.0
    before = snapshot(model)
    result = CoaddFramesStep.call(model, nframes=3)
    assert_unchanged(model, before)
    assert result.data.shape == (3, 24, 28)
    for name in ("err", "dq", "var_poisson", "var_rnoise", "var_flat"):
        assert getattr(result, name).shape == result.data.shape, name
    # block 2 = integrations 3, 4, 5 (consecutive), median of three, error of a median
    np.testing.assert_allclose(result.data[1, 10, 10], np.median(model.data[3:6, 10, 10]),
                               rtol=1e-6)
    expected_err = median_error_factor(3) * 0.1 / np.sqrt(3)
    np.testing.assert_allclose(result.err[1, 10, 10], expected_err, rtol=1e-5)
    np.testing.assert_allclose(result.err[2, 10, 10], 0.1, rtol=1e-6)  # last block: 1 value
    np.testing.assert_allclose(result.err**2, result.var_poisson + result.var_rnoise
                               + result.var_flat, rtol=1e-4)
    # the always-NaN, DO_NOT_USE pixel stays NaN and flagged; a NaN in one integration is ignored
    assert np.all(np.isnan(result.data[:, 2, 3])) and np.all(result.dq[:, 2, 3] & 1)
    assert np.isfinite(result.data[0, 5, 6]) and result.dq[0, 5, 6] == 0
    assert result.meta.exposure.nints == 3
    assert result.meta.exposure.integration_time == 30.0
    assert result.meta.exposure.exposure_time == 70.0
    assert list(result.int_times["integration_number"]) == [1, 2, 3]
    assert result.int_times["int_start_MJD_UTC"][1] == pytest.approx(60000.03)
    assert result.int_times["int_end_MJD_UTC"][2] == pytest.approx(60000.069)
    rec = result.meta.instance["klipprep"]["coadd_frames"]
    assert rec["block_sizes"] == [3, 3, 1] and rec["nints_out"] == 3
    assert result.meta.cal_step.instance["coadd_frames"] == "COMPLETE"


def test_coadd_all_by_default_mean(cube):
    result = CoaddFramesStep.call(cube, method="mean")
    assert result.data.shape == (1, 24, 28)
    np.testing.assert_allclose(result.data[0, 10, 10], cube.data[:, 10, 10].mean(), rtol=1e-6)
    np.testing.assert_allclose(result.err[0, 10, 10], 0.1 / np.sqrt(3), rtol=1e-5)


def test_coadd_image_is_skipped(image):
    result = CoaddFramesStep.call(image, nframes=2)
    np.testing.assert_array_equal(result.data, image.data)
    assert result.meta.cal_step.instance["coadd_frames"] == "SKIPPED"


def test_coadd_bad_parameters(cube):
    with pytest.raises(ValueError, match="unknown method 'sum'"):
        CoaddFramesStep.call(cube, method="sum")
    set_pending_shift(cube, np.zeros((3, 2)))
    with pytest.raises(InputError, match="pending per-integration shift"):
        CoaddFramesStep.call(cube, nframes=2)


def test_coadd_asn_and_strun(tmp_path, monkeypatch):
    from stpipe._cmdline import step_from_cmdline

    asn = write_asn(tmp_path, kinds=("science", "psf"))
    result = CoaddFramesStep.call(str(asn), nframes=2)
    assert [m.data.shape[0] for m in result] == [2, 2]
    monkeypatch.chdir(tmp_path)
    step_from_cmdline(["coadd_frames", asn.name, "--nframes=2", "--method=mean"])
    with datamodels.open(tmp_path / "jw01234001001_03106_00001_nrcalong_coadded.fits") as model:
        assert model.data.shape == (2, 24, 28) and model.meta.exposure.nints == 2


def test_coadd_int_times_of_a_segment():
    """A segment file carries the INT_TIMES of the whole exposure: rows found by number."""
    model = make_model(nints=4)
    model.int_times = _int_times(10)
    model.meta.exposure.integration_start = 5
    model.meta.exposure.integration_end = 8
    result = CoaddFramesStep.call(model, nframes=2)
    assert list(result.int_times["integration_number"]) == [1, 2]
    assert result.int_times["int_start_MJD_UTC"][0] == pytest.approx(60000.04)
    assert result.int_times["int_end_MJD_UTC"][1] == pytest.approx(60000.079)
