import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import make_model
from helpers import assert_unchanged, snapshot

from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.psf.builtin import coronagraphic_psf
from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

PIXEL = 0.0629  # arcsec, NIRCam LW
MASK_YX = (40.3, 38.6)
OFFSET_YX = (0.21, -0.34)  # px, star - mask centre


@pytest.fixture(scope="module")
def psf():
    return coronagraphic_psf(filter="F444W", coronagraph="MASKA335R", shape=(81, 79),
                             center_yx=MASK_YX, offset_yx_arcsec=np.multiply(OFFSET_YX, PIXEL),
                             pixel_scale=PIXEL)


def _model(psf, nints=3, seed=0):
    rng = np.random.default_rng(seed)
    model = make_model(nints=nints, ny=81, nx=79, seed=seed)
    flux = 50.0 / psf.max()  # occulted peak 50, noise 0.05: S/N 1000
    data = flux * psf + rng.normal(0, 0.05, (nints, 81, 79))
    model.data = data.astype(np.float32)
    model.err = np.full(data.shape, 0.05, np.float32)
    model.dq = np.zeros(data.shape, np.uint32)
    model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = MASK_YX[1] + 1, MASK_YX[0] + 1
    return model


def test_offset_measured_and_star_moved_to_the_centre(psf):
    model = _model(psf)
    snap = snapshot(model)
    result = RecenterFramesStep.call(model, psf_model="builtin")
    assert_unchanged(model, snap)
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.005)  # 0.3 mas
    assert max(rec["star_offset_stat_err_yx"]) < 0.005
    # the recorded uncertainty adds the built-in model's systematic floor (30 mas per axis)
    assert rec["systematic_floor_mas"] == 30.0
    floor_px = 30.0 / (1000 * PIXEL)
    assert rec["star_offset_err_yx"] == pytest.approx(
        np.hypot(rec["star_offset_stat_err_yx"], floor_px), rel=1e-9)
    assert rec["psf_model"] == "builtin" and "biased" in rec["fidelity_warning"]
    target = ((81 - 1) / 2, (79 - 1) / 2)
    assert get_center_yx(result, "star") == pytest.approx(target)
    shift = np.subtract(target, np.add(MASK_YX, rec["star_offset_yx"]))
    assert get_center_yx(result, "crpix") == pytest.approx(np.add(MASK_YX, shift), abs=1e-6)
    assert get_center_yx(result, "mask") == pytest.approx(np.add(MASK_YX, shift), abs=1e-6)
    # the pixels moved: the data equal the noiseless PSF of a star at the array centre (the
    # input's star sat at MASK_YX + OFFSET_YX, 0.1-0.6 px away), not the input
    moved = coronagraphic_psf(filter="F444W", coronagraph="MASKA335R", shape=(81, 79),
                              center_yx=np.add(MASK_YX, shift),
                              offset_yx_arcsec=np.multiply(OFFSET_YX, PIXEL), pixel_scale=PIXEL)
    flux = 50.0 / psf.max()
    inner = np.hypot(*(np.indices((81, 79)) - np.reshape(target, (2, 1, 1)))) < 15
    residual = result.data[:, inner].mean(axis=0) - flux * moved[inner]
    unshifted = model.data.mean(axis=0)[inner] - flux * moved[inner]
    assert np.sqrt(np.mean(residual**2)) < 0.1  # noise 0.05 / sqrt(3) + resampling
    assert np.sqrt(np.mean(unshifted**2)) > 5 * np.sqrt(np.mean(residual**2))
    keys = {c[0] for c in result.extra_fits.SCI.header}
    assert {"STAROFFX", "STAROFFY", "STOFFERR", "PSFMODEL"} <= keys
    assert result.meta.cal_step.instance["recenter_frames"] == "COMPLETE"


def test_systematic_floor_parameter(psf):
    """systematic_floor overrides the measured floor; STOFFERR carries the total."""
    model = _model(psf)
    result = RecenterFramesStep.call(model, psf_model="builtin", systematic_floor=6.29)
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert rec["systematic_floor_mas"] == 6.29
    expected = np.hypot(rec["star_offset_stat_err_yx"], 0.1)  # 6.29 mas = 0.1 px
    assert rec["star_offset_err_yx"] == pytest.approx(expected, rel=1e-9)
    cards = {c[0]: c[1] for c in result.extra_fits.SCI.header}
    assert cards["STOFFERR"] == pytest.approx(max(expected), rel=1e-6)
    zero = RecenterFramesStep.call(model, psf_model="builtin", systematic_floor=0.0)
    rec0 = zero.meta.instance["klipprep"]["recenter_frames"]
    assert rec0["star_offset_err_yx"] == pytest.approx(rec0["star_offset_stat_err_yx"])
    assert max(rec0["star_offset_err_yx"]) < 0.005


def test_record_only(psf):
    model = _model(psf)
    result = RecenterFramesStep.call(model, psf_model="builtin", apply=False)
    np.testing.assert_array_equal(result.data, model.data)
    pending = np.array(result.meta.instance["klipprep"]["pending_shift_yx"])
    assert pending.shape == (3, 2)
    # the measured star position is recorded before the (pending) shift
    assert get_center_yx(result, "star") == pytest.approx(np.add(MASK_YX, OFFSET_YX), abs=0.005)


def test_user_psf_file(psf, tmp_path):
    centred = coronagraphic_psf(filter="F444W", coronagraph="MASKA335R", shape=(81, 81),
                                pixel_scale=PIXEL)
    hdu = fits.PrimaryHDU(centred)
    hdu.header["PIXELSCL"] = PIXEL
    hdu.writeto(tmp_path / "psf.fits")
    result = RecenterFramesStep.call(_model(psf), psf_model="file",
                                     psf_file=str(tmp_path / "psf.fits"))
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert rec["psf_model"] == "file"
    # a shifted centred PSF ignores how the occulted PSF changes with offset: a coarse estimate
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.1)


def test_miri_is_skipped(caplog):
    model = make_model(instrument="MIRI")
    result = RecenterFramesStep.call(model, psf_model="builtin")
    assert result.meta.cal_step.instance["recenter_frames"] == "SKIPPED"
    assert "MIRI data: no shift" in caplog.text
    np.testing.assert_array_equal(result.data, model.data)


@pytest.mark.parametrize("mask", ["MASKALWB", "MASKASWB"])
def test_bar_mask_is_skipped_with_a_warning(cube, caplog, mask):
    """The models have no bar occulter: no shift, a warning, and the pipeline goes on."""
    cube.meta.instrument.coronagraph = mask
    result = RecenterFramesStep.call(cube, psf_model="builtin")
    assert result.meta.cal_step.instance["recenter_frames"] == "SKIPPED"
    assert f"bar mask {mask}: the builtin PSF model has no bar occulter" in caplog.text
    np.testing.assert_array_equal(result.data, cube.data)


def test_stpsf_without_data_is_a_clear_error(cube, monkeypatch, tmp_path):
    monkeypatch.setenv("STPSF_PATH", str(tmp_path))  # no version.txt
    with pytest.raises(ValueError, match="psf_backend='stpsf' needs \\$STPSF_PATH"):
        RecenterFramesStep.call(cube, psf_model="stpsf")
    monkeypatch.delenv("STPSF_PATH")
    assert not (tmp_path / "data").exists()


def test_file_model_needs_a_file(cube):
    with pytest.raises(ValueError, match="psf_model=file needs psf_file"):
        RecenterFramesStep.call(cube, psf_model="file")


_MINI = Path(__file__).resolve().parents[3] / "shared" / "data" / "stpsf-data-mini"


@pytest.mark.slow
@pytest.mark.skipif(not _MINI.is_dir() or importlib.util.find_spec("stpsf") is None,
                    reason="needs stpsf (the [stpsf] extra) and ../shared/data/stpsf-data-mini")
def test_stpsf_backend_recovers_an_stpsf_star(monkeypatch):
    """Frames made with stpsf (instrument wavefront on) are centred with stpsf (same optics) to
    well under 1 mas, in the stpsf source-position convention."""
    from jwst_klipprep.psf.models import StpsfOptions, psf_frame

    home_data = (Path.home() / "data").exists()
    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    frame = psf_frame("stpsf", instrument="NIRCAM", filter_name="F444W", canonical="MASK335R",
                      offset_yx_arcsec=tuple(np.multiply(OFFSET_YX, PIXEL)), shape=(81, 79),
                      center_yx=MASK_YX, pixel_scale=PIXEL, nlambda=3, oversample=2,
                      options=StpsfOptions(si_wfe=True, pupil_npix=256))
    result = RecenterFramesStep.call(_model(frame, nints=2), psf_model="auto", pupil_npix=256)
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert rec["psf_model"] == "stpsf" and rec["psf_model_version"].startswith("stpsf ")
    assert rec["fidelity_warning"] == "" and rec["si_wfe"] is True and rec["opd"] is None
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.008)  # 0.5 mas
    assert "stpsf source position" in rec["star_position_convention"]
    # the instrument wavefront moves the image of an on-axis source ~0.6 px down (F444W): the
    # apparent image centre differs from the recorded star position by this much
    assert rec["si_image_shift_yx"][0] == pytest.approx(-0.6, abs=0.15)
    assert abs(rec["si_image_shift_yx"][1]) < 0.1
    assert (Path.home() / "data").exists() == home_data  # stpsf never created ~/data


def test_median_fit_by_default_and_per_integration_on_request(psf):
    model = _model(psf, nints=5, seed=3)
    model.data[2, 30:50, 30:50] += 40.0  # a transient in one integration: clipped by the median
    model.dq[3, 35, 35] = 1
    model.data[3, 35, 35] = np.nan
    median = RecenterFramesStep.call(model, psf_model="builtin", apply=False)
    rec = median.meta.instance["klipprep"]["recenter_frames"]
    assert rec["per_integration"] is False and rec["fitted_frames"] == "integration median"
    assert "star_offset_per_integration_yx" not in rec
    assert len(rec["chi2_red"]) == 1
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.005)
    # error of a median of 5 noisy integrations: larger than one of their mean, but small
    assert 0.0002 < max(rec["star_offset_stat_err_yx"]) < 0.005
    clean = _model(psf, nints=5, seed=3)
    per = RecenterFramesStep.call(clean, psf_model="builtin", apply=False, per_integration=True)
    rec = per.meta.instance["klipprep"]["recenter_frames"]
    assert rec["per_integration"] is True and rec["fitted_frames"] == "integrations"
    assert np.shape(rec["star_offset_per_integration_yx"]) == (5, 2)
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.005)
