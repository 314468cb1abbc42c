import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.steps.fix_bad_pixels_step import FixBadPixelsStep

DNU = dqflags.pixel["DO_NOT_USE"]
FE = dqflags.pixel["FLUX_ESTIMATED"]
OUTLIER = dqflags.pixel["OUTLIER"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
SATURATED = dqflags.pixel["SATURATED"]


def _model(nints=6):
    model = make_model(nints=nints, ny=40, nx=44, seed=7)
    truth = np.array(model.data, float)
    data = np.array(model.data)
    data[:, 2, 3] = truth[:, 3, 3]  # make_model's NaN: give it a plausible true value
    truth[:, 2, 3] = truth[:, 3, 3]
    data[:, 2, 3] = np.nan
    data[1, 5, 6] = np.nan
    truth[1, 5, 6] = truth[0, 5, 6]
    data[:, 30, 10] += 5.0  # unflagged hot pixel: 50 sigma, every integration
    data[min(2, nints - 1), 25, 30] += 3.0  # a cosmic ray in one integration
    model.data = data
    dq = np.array(model.dq)
    dq[:, 2, 3] |= SATURATED  # other bits must survive
    dq[:, 0, 40:] |= DNU | NON_SCIENCE
    data = np.array(model.data)
    data[:, 0, 40:] = np.nan
    model.data = data
    model.dq = dq
    return model, truth


def test_detects_repairs_and_flags():
    model, truth = _model()
    snap = snapshot(model)
    result = FixBadPixelsStep.call(model)
    assert_unchanged(model, snap)
    dq = result.dq
    # DO_NOT_USE NaN pixel: repaired, flagged FLUX_ESTIMATED, DO_NOT_USE cleared, SATURATED kept
    assert np.all(dq[:, 2, 3] & FE) and not np.any(dq[:, 2, 3] & DNU)
    assert np.all(dq[:, 2, 3] & SATURATED)
    # the unflagged hot pixel and the cosmic ray were found (OUTLIER) and repaired near the truth
    assert np.all(dq[:, 30, 10] & OUTLIER) and np.all(dq[:, 30, 10] & FE)
    assert dq[2, 25, 30] & OUTLIER
    for idx in ((slice(None), 30, 10), (2, 25, 30), (slice(None), 2, 3), (1, 5, 6)):
        assert np.all(np.abs(result.data[idx] - truth[idx]) < 5 * result.err[idx]), idx
    # repaired ERR reflects the estimate, ERR^2 = sum of VARs there too
    total = result.var_poisson + result.var_rnoise + result.var_flat
    np.testing.assert_allclose(total[:, 30, 10], result.err[:, 30, 10] ** 2, rtol=1e-4)
    # NON_SCIENCE pixels left alone, nothing else changed much
    assert np.all(np.isnan(result.data[:, 0, 40:])) and np.all(dq[:, 0, 40:] & NON_SCIENCE)
    changed = (dq & (FE | OUTLIER)) != 0
    assert changed.sum() <= 6 * 3 + 3  # 2,3 x6 + 30,10 x6 + 5,6 + 25,30 (+ a little slack)
    rec = result.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec["n_unrepaired"] == 0
    assert result.meta.cal_step.instance["fix_bad_pixels"] == "COMPLETE"


def test_temporal_needs_enough_integrations(caplog):
    model, _ = _model(nints=2)
    result = FixBadPixelsStep.call(model, find=["dq", "temporal"], fix=["interp"])
    assert "find=temporal skipped (2 integration(s) < min_nints 3)" in caplog.text
    assert result.meta.instance["klipprep"]["fix_bad_pixels"]["found"]["temporal"] == 0


def test_custom_pixels_and_unrepairable():
    model, _ = _model()
    result = FixBadPixelsStep.call(model, find=["custom"], fix=["temporal"],
                                   custom_pixels=[10, 11])
    assert np.all(result.dq[:, 10, 11] & OUTLIER)
    # a pixel bad in every integration cannot be repaired temporally: stays NaN + DO_NOT_USE
    assert np.all(np.isnan(result.data[:, 10, 11])) and np.all(result.dq[:, 10, 11] & DNU)
    assert not np.any(result.dq[:, 10, 11] & FE)


def test_custom_mask_file(tmp_path):
    from astropy.io import fits

    model, _ = _model()
    mask = np.zeros((40, 44), np.uint8)
    mask[20, 21] = 1
    fits.writeto(tmp_path / "mask.fits", mask)
    result = FixBadPixelsStep.call(model, find=["custom"], fix=["interp"],
                                   custom_mask=str(tmp_path / "mask.fits"))
    assert np.all(result.dq[:, 20, 21] & FE)


@pytest.mark.parametrize("kwargs,match", [
    ({"find": ["dq", "sigclip"]}, r"unknown find method\(s\) \['sigclip'\]"),
    ({"fix": ["medfilt"]}, r"unknown fix method\(s\) \['medfilt'\]"),
    ({"find": ["custom"]}, "find=custom needs custom_mask or custom_pixels"),
])
def test_bad_parameters(cube, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixBadPixelsStep.call(cube, **kwargs)


def test_sigma_reaches_the_detectors():
    """A step parameter changes the result: a 12-sigma hot pixel is found at sigma=5, not 30."""
    model, _ = _model()
    data = np.array(model.data)
    err = np.array(model.err)
    data[:, 34, 36] += 12 * err[:, 34, 36]
    model.data = data
    low = FixBadPixelsStep.call(model, find=["temporal", "spatial"], sigma=5.0)
    high = FixBadPixelsStep.call(model, find=["temporal", "spatial"], sigma=30.0)
    assert np.all(low.dq[:, 34, 36] & OUTLIER)
    assert not np.any(high.dq[:, 34, 36] & OUTLIER)
    rec_low = low.meta.instance["klipprep"]["fix_bad_pixels"]
    rec_high = high.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec_low["sigma"] == 5.0 and rec_high["sigma"] == 30.0
    assert rec_low["n_detected_new"] > rec_high["n_detected_new"]
