"""Star / mask keywords as consumers read them: one consistent star position, uncertainties."""

import numpy as np
import pytest
from astropy.io import fits

from jwst_klipprep.consumers import fill_nans, prepare_for_consumers
from jwst_klipprep.geometry import shift_geometry
from jwst_klipprep.keywords import (
    dither_offset_yx,
    finalize_star_keywords,
    get_center_err_yx,
    get_center_yx,
    set_center_err_yx,
    set_center_yx,
    set_fits_keyword,
)

SCALE = 0.063


def _dithered(model, x_arcsec=0.015, y_arcsec=-0.03):
    model.meta.photometry.pixelarea_arcsecsq = SCALE**2
    model.meta.dither.x_offset = x_arcsec
    model.meta.dither.y_offset = y_arcsec
    return model


def _pyklip_star_xy(path):
    """What pyKLIP 2.10's JWSTData reads with its defaults (0-indexed x, y)."""
    with fits.open(path) as hdul:
        p, s = hdul[0].header, hdul["SCI"].header
        scale = np.sqrt(s["PIXAR_A2"])
        return (s.get("STARCENX", s["CRPIX1"]) - 1 + p["XOFFSET"] / scale,
                s.get("STARCENY", s["CRPIX2"]) - 1 + p["YOFFSET"] / scale)


def test_default_star_includes_the_dither(cube):
    _dithered(cube)
    mask = get_center_yx(cube, "mask")
    assert dither_offset_yx(cube) == pytest.approx((-0.03 / SCALE, 0.015 / SCALE))
    assert get_center_yx(cube, "star") == pytest.approx(
        (mask[0] - 0.03 / SCALE, mask[1] + 0.015 / SCALE))


def test_finalize_moves_offsets_out_of_xoffset(cube, tmp_path):
    _dithered(cube)
    star = get_center_yx(cube, "star")
    path = tmp_path / "raw.fits"
    cube.save(path)
    assert _pyklip_star_xy(path) == pytest.approx(star[::-1])  # pyKLIP right before
    set_center_yx(cube, "star", (10.0, 11.0))  # a measured star (includes the dither)
    assert finalize_star_keywords(cube)
    assert not finalize_star_keywords(cube)  # idempotent
    assert cube.meta.dither.x_offset == 0.0 and cube.meta.dither.y_offset == 0.0
    assert dither_offset_yx(cube, original=True) == pytest.approx((-0.03 / SCALE, 0.015 / SCALE))
    cube.save(path)
    assert _pyklip_star_xy(path) == pytest.approx((11.0, 10.0))  # and after: same as STARCEN
    with fits.open(path) as hdul:
        assert hdul[0].header["XOFFORIG"] == pytest.approx(0.015)
        assert hdul[0].header["YOFFORIG"] == pytest.approx(-0.03)
        assert hdul["SCI"].header["STARCENX"] == pytest.approx(12.0)


def test_shift_geometry_keeps_star_consistent(cube):
    _dithered(cube)
    star = np.array(get_center_yx(cube, "star"))
    shift_geometry(cube, (2.0, -3.0))
    assert get_center_yx(cube, "star") == pytest.approx(star + (2.0, -3.0))
    assert cube.meta.dither.x_offset == 0.0


def test_uncertainty_keywords(cube, tmp_path):
    assert get_center_err_yx(cube, "star") is None
    set_center_yx(cube, "star", (10.0, 11.0), err_yx=(0.02, 0.03))
    set_center_err_yx(cube, "mask", (0.1, 0.2))
    assert get_center_err_yx(cube, "star") == pytest.approx((0.02, 0.03))
    shift_geometry(cube, (1.0, 1.0))  # a shift does not change an uncertainty
    cube.save(tmp_path / "x.fits")
    with fits.open(tmp_path / "x.fits") as hdul:
        header = hdul["SCI"].header
        assert (header["STARERRX"], header["STARERRY"]) == pytest.approx((0.03, 0.02))
        assert (header["MASKERRX"], header["MASKERRY"]) == pytest.approx((0.2, 0.1))
    with pytest.raises(ValueError, match="invalid star uncertainty"):
        set_center_err_yx(cube, "star", (np.nan, 1.0))
    with pytest.raises(ValueError, match="unknown centre"):
        set_center_err_yx(cube, "crpix", (1.0, 1.0))


def test_star_uncertainty_from_the_step_records(cube):
    cube.meta.instance["klipprep"] = {
        "recenter_frames": {"star_offset_err_yx": [0.03, 0.04]},
        "align_frames": {"shift_err_yx": [[0.04, 0.03], [0.04, 0.03], [0.05, 0.03]]},
    }
    prepare_for_consumers(cube, nan_fill=False)
    assert get_center_err_yx(cube, "star") == pytest.approx((0.05, 0.05))


def test_fill_nans_flags_and_clears_non_science(cube):
    cube.data[0, 0, :] = np.nan
    cube.dq[0, 0, :] = 512 | 1
    cube.dq[1, 3, 3] = 512  # finite NON_SCIENCE pixel: untouched
    n_nan = int(np.isnan(cube.data).sum())
    assert fill_nans(cube) == n_nan
    assert np.isfinite(cube.data).all()
    assert np.all(cube.dq[0, 0, :] == 1)
    assert cube.dq[1, 3, 3] == 512
    assert cube.dq[0, 2, 3] & 1


def test_non_finite_keyword_is_left_out_and_the_file_saves(any_model, tmp_path):
    """No NaN ever reaches a FITS header: the keyword is dropped (an old value removed)."""
    set_fits_keyword(any_model, "ALGERRX", 0.25, "a measured value")
    set_fits_keyword(any_model, "ALGERRX", float("nan"), "not measured this time")
    set_fits_keyword(any_model, "ALGERRY", np.float32(np.inf))
    path = tmp_path / "x_calints.fits"
    any_model.save(path)
    with fits.open(path) as hdul:
        assert "ALGERRX" not in hdul["SCI"].header and "ALGERRY" not in hdul["SCI"].header
