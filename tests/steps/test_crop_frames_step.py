import numpy as np
import pytest
from helpers import assert_unchanged, snapshot, write_asn
from stdatamodels.jwst import datamodels

from jwst_klipprep.base import InputError
from jwst_klipprep.keywords import get_center_yx, set_center_yx
from jwst_klipprep.steps.crop_frames_step import CropFramesStep
from jwst_klipprep.steps.pad_frames_step import PadFramesStep


def test_crop_asymmetric(any_model):
    before = snapshot(any_model)
    ny, nx = before["data"].shape[-2:]
    crpix1, crpix2 = before["crpix"]
    set_center_yx(any_model, "star", (10.25, 12.5), err_yx=(0.01, 0.02))
    result = CropFramesStep.call(any_model, npix=[1, 2, 3, 0])
    assert_unchanged(any_model, before)
    assert result.data.shape[-2:] == (ny - 3, nx - 3)
    for name in ("err", "dq", "var_poisson", "var_rnoise", "var_flat"):
        assert getattr(result, name).shape == result.data.shape, name
    np.testing.assert_array_equal(result.data, before["data"][..., 3:, 1:nx - 2])
    assert result.meta.wcsinfo.crpix1 == pytest.approx(crpix1 - 1)
    assert result.meta.wcsinfo.crpix2 == pytest.approx(crpix2 - 3)
    assert get_center_yx(result, "star") == pytest.approx((7.25, 11.5))
    assert result.meta.subarray.xsize == nx - 3 and result.meta.subarray.ysize == ny - 3
    assert (result.meta.subarray.xstart, result.meta.subarray.ystart) == (2, 4)
    assert result.meta.cal_step.instance["crop_frames"] == "COMPLETE"
    assert result.meta.instance["klipprep"]["crop_frames"]["npix_left_right_bottom_top"] == \
        [1, 2, 3, 0]


def test_crop_undoes_pad(cube):
    padded = PadFramesStep.call(cube, npix=[4, 5, 6, 7])
    back = CropFramesStep.call(padded, npix=[4, 5, 6, 7])
    np.testing.assert_array_equal(back.data, cube.data)
    assert back.meta.wcsinfo.crpix1 == pytest.approx(cube.meta.wcsinfo.crpix1)
    assert get_center_yx(back, "mask") == pytest.approx(get_center_yx(cube, "mask"))


def test_crop_gwcs(cube):
    from astropy.modeling.models import Scale, Shift
    from gwcs import coordinate_frames as cf
    from gwcs.wcs import WCS

    transform = (Shift(-10) | Scale(2.0)) & (Shift(-20) | Scale(3.0))
    cube.meta.wcs = WCS([(cf.Frame2D(name="detector"), transform), (cf.Frame2D(name="sky"), None)])
    world = cube.meta.wcs(7.0, 9.0)
    result = CropFramesStep.call(cube, npix=[4, 0, 6, 0])
    assert result.meta.wcs(7.0 - 4, 9.0 - 6) == pytest.approx(world)


@pytest.mark.parametrize("npix", [-1, [1, 2], 1.5, "abc"])
def test_crop_bad_npix(cube, npix):
    with pytest.raises(ValueError, match="invalid npix"):
        CropFramesStep.call(cube, npix=npix)


def test_crop_too_much(cube):
    with pytest.raises(InputError, match="leaves no pixel"):
        CropFramesStep.call(cube, npix=[14, 14, 0, 0])


def test_crop_asn_and_strun(tmp_path, monkeypatch):
    from stpipe._cmdline import step_from_cmdline

    asn = write_asn(tmp_path, kinds=("science", "psf"))
    result = CropFramesStep.call(str(asn), npix=2)
    assert [m.data.shape for m in result] == [(3, 20, 24)] * 2
    monkeypatch.chdir(tmp_path)
    step_from_cmdline(["crop_frames", asn.name, "--npix=1,2,3,4"])
    with datamodels.open(tmp_path / "jw01234001001_03106_00001_nrcalong_cropped.fits") as model:
        assert model.data.shape == (3, 17, 25)
