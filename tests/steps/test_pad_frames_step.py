import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.keywords import get_center_yx, set_center_yx
from jwst_klipprep.steps.pad_frames_step import PadFramesStep

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]


def test_pad_asymmetric(any_model):
    before = snapshot(any_model)
    ny, nx = before["data"].shape[-2:]
    crpix1, crpix2 = before["crpix"]
    result = PadFramesStep.call(any_model, npix=[1, 2, 3, 4])

    assert_unchanged(any_model, before)
    assert result.data.shape[-2:] == (ny + 3 + 4, nx + 1 + 2)
    for name in ("err", "dq", "var_poisson", "var_rnoise", "var_flat"):
        assert getattr(result, name).shape == result.data.shape, name
    data = result.data if result.data.ndim == 3 else result.data[None]
    dq = result.dq if result.dq.ndim == 3 else result.dq[None]
    var = result.var_flat if result.var_flat.ndim == 3 else result.var_flat[None]
    inner = (slice(None), slice(3, 3 + ny), slice(1, 1 + nx))
    orig = before["data"] if before["data"].ndim == 3 else before["data"][None]
    np.testing.assert_array_equal(data[inner], orig)
    pad_mask = np.ones(data.shape, bool)
    pad_mask[inner] = False
    assert np.all(np.isnan(data[pad_mask]))
    assert np.all(np.isnan(var[pad_mask]))
    assert np.all(dq[pad_mask] == DO_NOT_USE | NON_SCIENCE)
    # CRPIX moves by (left, bottom) and the other centres with it
    assert result.meta.wcsinfo.crpix1 == pytest.approx(crpix1 + 1)
    assert result.meta.wcsinfo.crpix2 == pytest.approx(crpix2 + 3)
    assert get_center_yx(result, "mask") == pytest.approx((crpix2 - 1 + 3, crpix1 - 1 + 1))
    assert get_center_yx(result, "star") == pytest.approx((crpix2 - 1 + 3, crpix1 - 1 + 1))
    assert result.meta.subarray.xsize == nx + 3
    assert result.meta.cal_step.instance["pad_frames"] == "COMPLETE"
    rec = result.meta.instance["klipprep"]["pad_frames"]
    assert rec["npix_left_right_bottom_top"] == [1, 2, 3, 4]


def test_pad_single_value_moves_recorded_star(cube):
    set_center_yx(cube, "star", (10.25, 12.5))
    result = PadFramesStep.call(cube, npix=5)
    assert result.data.shape == (3, 34, 38)
    assert get_center_yx(result, "star") == pytest.approx((15.25, 17.5))
    assert get_center_yx(cube, "star") == pytest.approx((10.25, 12.5))


def test_pad_zero_is_identity(cube):
    result = PadFramesStep.call(cube, npix=0)
    np.testing.assert_array_equal(result.data, cube.data)


@pytest.mark.parametrize("npix", [-1, [1, 2], [1, 2, 3, 4, 5], 1.5, "abc"])
def test_bad_npix(cube, npix):
    before = snapshot(cube)
    with pytest.raises(ValueError, match="invalid npix"):
        PadFramesStep.call(cube, npix=npix)
    assert_unchanged(cube, before)


def test_inconsistent_var_dropped_with_warning(cube, caplog):
    cube.var_rnoise = np.ones((3, 10, 10), np.float32)
    result = PadFramesStep.call(cube, npix=2)
    assert "VAR_RNOISE has shape (3, 10, 10) but SCI has (3, 24, 28)" in caplog.text
    assert result.var_rnoise is None
    assert result.var_poisson.shape == result.data.shape


def test_gwcs_shifted_with_pixels(cube):
    from astropy.modeling.models import Scale, Shift
    from gwcs import coordinate_frames as cf
    from gwcs.wcs import WCS

    transform = (Shift(-10) | Scale(2.0)) & (Shift(-20) | Scale(3.0))
    cube.meta.wcs = WCS([(cf.Frame2D(name="detector"), transform), (cf.Frame2D(name="sky"), None)])
    world_before = cube.meta.wcs(7.0, 9.0)
    result = PadFramesStep.call(cube, npix=[4, 0, 6, 0])
    assert result.meta.wcs(7.0 + 4, 9.0 + 6) == pytest.approx(world_before)
    assert cube.meta.wcs(7.0, 9.0) == pytest.approx(world_before)
