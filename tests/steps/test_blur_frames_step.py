import numpy as np
import pytest
from helpers import assert_unchanged, snapshot, write_asn
from stdatamodels.jwst import datamodels

from jwst_klipprep.algorithms.blur import auto_fwhm
from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.steps.blur_frames_step import BlurFramesStep


def _sci_keyword(model, key):
    cards = model.instance["extra_fits"]["SCI"]["header"]
    return next(card[1] for card in cards if card[0] == key)


def test_blur_fixed_fwhm(any_model):
    before = snapshot(any_model)
    result = BlurFramesStep.call(any_model, fwhm="2.5")
    assert_unchanged(any_model, before)
    data = result.data if result.data.ndim == 3 else result.data[None]
    orig = before["data"] if before["data"].ndim == 3 else before["data"][None]
    # the star's flux (above the pedestal of 1) is conserved; NaNs stay NaN (no spreading)
    ny, nx = orig.shape[-2:]
    yy, xx = np.mgrid[:ny, :nx]
    near = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) < 9
    for out, inp in zip(data, orig, strict=True):
        assert np.nansum(out[near] - 1) == pytest.approx(np.nansum(inp[near] - 1), rel=0.01)
    inner = (slice(None), slice(8, 16), slice(8, 20))
    np.testing.assert_array_equal(np.isnan(data), np.isnan(orig))
    # errors shrink by the kernel: sqrt(sum K**2) = 1 / (sqrt(4 pi) sigma) for a wide kernel
    err = result.err if result.err.ndim == 3 else result.err[None]
    sigma = 2.5 / 2.3548200450309493
    assert np.median(err[inner]) == pytest.approx(0.1 / (np.sqrt(4 * np.pi) * sigma), rel=0.02)
    var = sum(getattr(result, n) for n in ("var_poisson", "var_rnoise", "var_flat"))
    np.testing.assert_allclose(result.err**2, var, rtol=1e-4)
    assert _sci_keyword(result, "BLURFWHM") == 2.5
    assert result.meta.instance["klipprep"]["blur_frames"]["fwhm"] == 2.5
    assert get_center_yx(result, "star") == get_center_yx(any_model, "star")


def test_blur_auto_short_wavelength(cube):
    cube.meta.instrument.filter = "F182M"
    cube.meta.photometry.pixelarea_arcsecsq = 0.045**2  # coarser than the SW pixel: undersampled
    result = BlurFramesStep.call(cube)
    rec = result.meta.instance["klipprep"]["blur_frames"]
    expected = auto_fwhm(wavelength_min_um=rec["wavelength_min_um"], diameter_m=5.2,
                         pixel_scale_arcsec=0.045, target_fwhm_px=3.45)
    assert rec["fwhm"] == pytest.approx(expected) and expected > 0.5
    assert rec["target_fwhm"] == 3.45  # the prior art's automatic choice is the default
    assert result.meta.cal_step.instance["blur_frames"] == "COMPLETE"


def test_blur_auto_nyquist_sampled_is_skipped(cube):
    cube.meta.photometry.pixelarea_arcsecsq = 0.063**2  # F444W on the LW pixel: Nyquist
    result = BlurFramesStep.call(cube, target_fwhm=2.0)
    np.testing.assert_array_equal(result.data, cube.data)
    assert result.meta.cal_step.instance["blur_frames"] == "SKIPPED"
    assert result.meta.instance["klipprep"]["blur_frames"]["fwhm"] == 0.0


@pytest.mark.parametrize("fwhm", ["0", "-1", "abc", "nan"])
def test_blur_bad_fwhm(cube, fwhm):
    with pytest.raises(ValueError, match="invalid fwhm"):
        BlurFramesStep.call(cube, fwhm=fwhm)


def test_blur_asn_and_strun(tmp_path, monkeypatch):
    from stpipe._cmdline import step_from_cmdline

    asn = write_asn(tmp_path, kinds=("science", "psf"))
    result = BlurFramesStep.call(str(asn), fwhm="1.5")
    assert all(m.meta.cal_step.instance["blur_frames"] == "COMPLETE" for m in result)
    monkeypatch.chdir(tmp_path)
    step_from_cmdline(["blur_frames", asn.name, "--fwhm=1.5"])
    with datamodels.open(tmp_path / "jw01234001001_03106_00001_nrcalong_blurred.fits") as model:
        assert model.meta.instance["klipprep"]["blur_frames"]["fwhm"] == 1.5
