import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot

from jwst_klipprep.steps.subtract_median_step import SubtractMedianStep

PEDESTALS = np.array([0.2, 0.5, -0.3])


def _with_pedestals(model):
    data = np.array(model.data, np.float64)
    data = data - 1.0 + (PEDESTALS[:, None, None] if data.ndim == 3 else PEDESTALS[0])
    model.data = data.astype(np.float32)
    return model


@pytest.mark.parametrize("method", ["masked", "border", "sigma_clip"])
def test_pedestals_recovered(method):
    model = _with_pedestals(make_model(nints=3, ny=80, nx=90, seed=3))
    snap = snapshot(model)
    result = SubtractMedianStep.call(model, method=method, border_width=10)
    assert_unchanged(model, snap)
    rec = result.meta.instance["klipprep"]["subtract_median"]
    # noise 0.1 per pixel; the level error is ~1.25 * 0.1 / sqrt(npix)
    bound = 0.1 * 1.3 / np.sqrt(np.array(rec["npix"]))
    assert np.all(np.abs(np.array(rec["level"]) - PEDESTALS) < 5 * bound + 1e-4)
    assert np.all(np.array(rec["level_error"]) < 2 * bound)
    # ERR grows by the level error, DQ untouched
    finite = np.isfinite(snap["err"])
    grown = np.sqrt(snap["err"] ** 2 + np.array(rec["level_error"])[:, None, None] ** 2)
    np.testing.assert_allclose(result.err[finite], grown[finite], rtol=1e-5)
    np.testing.assert_array_equal(result.dq, snap["dq"])
    assert result.meta.cal_step.instance["subtract_median"] == "COMPLETE"


def test_masked_is_not_biased_by_the_star():
    """A sigma-clipped median of the whole frame is pulled up by the PSF wings; masked is not."""
    model = _with_pedestals(make_model(nints=3, ny=80, nx=90, seed=4))
    masked = SubtractMedianStep.call(model, method="masked", use_transmission=False)
    level = np.array(masked.meta.instance["klipprep"]["subtract_median"]["level"])
    np.testing.assert_allclose(level, PEDESTALS, atol=3e-3)


def test_image_model():
    model = _with_pedestals(make_model(image=True, ny=60, nx=60))
    result = SubtractMedianStep.call(model)
    assert result.data.ndim == 2
    assert result.meta.instance["klipprep"]["subtract_median"]["level"] == pytest.approx(
        [PEDESTALS[0]], abs=5e-3)


def test_miri_runs_with_a_note(caplog):
    model = make_model(instrument="MIRI", ny=60, nx=70)
    result = SubtractMedianStep.call(model)
    assert result.meta.cal_step.instance["subtract_median"] == "COMPLETE"
    assert "MIRI: dedicated backgrounds usually do better" in caplog.text


def test_unknown_method(cube):
    from jwst_klipprep.base import ParameterError

    with pytest.raises(ParameterError, match="'method': the value \"mode\" is unacceptable"):
        SubtractMedianStep.call(cube, method="mode")
