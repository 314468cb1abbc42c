"""Telescope wavefront (OPD) input: file checks, test maps, each form through recenter_frames."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import make_model

from jwst_klipprep.base import InputError
from jwst_klipprep.psf.opd import OpdError, make_test_opd, read_opd
from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "stpsf-data-mini"
needs_mini = pytest.mark.skipif(not _MINI.is_dir(), reason="needs ../shared/data/stpsf-data-mini")
needs_stpsf = pytest.mark.skipif(
    not _MINI.is_dir() or importlib.util.find_spec("stpsf") is None,
    reason="needs stpsf (the [stpsf] extra) and ../shared/data/stpsf-data-mini",
)

PIXEL = 0.0629
SHAPE = (49, 49)
MASK_YX = (24.3, 23.6)
OFFSET_YX = (0.23, -0.31)  # px
NPIX = 256
OPTICS = dict(nlambda=1, oversample=2)


@needs_mini
def test_make_test_opd_is_a_ptt_free_map_of_the_requested_rms(tmp_path):
    path = tmp_path / "opd.fits"
    opd = make_test_opd(path, rms_nm=60.0, seed=3, npix=NPIX, data_path=_MINI)
    with fits.open(_MINI / "jwst_pupil_RevW_npix256.fits.gz") as hdul:
        pupil = hdul[0].data > 0.5
    inside = pupil & (opd != 0)
    assert np.std(opd[inside]) * 1e9 == pytest.approx(60.0, rel=0.01)
    yy, xx = np.indices(opd.shape)
    design = np.stack([np.ones(inside.sum()), xx[inside], yy[inside]], axis=1)
    ptt = np.linalg.lstsq(design, opd[inside], rcond=None)[0]
    assert np.abs(ptt).max() < 1e-15  # piston and tip/tilt removed
    spec = read_opd(path, npix=NPIX)
    assert spec.form == "fits" and spec.rms_nm == pytest.approx(60.0, rel=0.01)
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.date == "2026-01-01T00:00:00"
    # an older measurement of the same wavefront: the base plus a 15 nm drift
    older = make_test_opd(tmp_path / "old.fits", base=opd, drift_nm=15.0, seed=9, npix=NPIX,
                          data_path=_MINI)
    assert np.std((older - opd)[inside]) * 1e9 == pytest.approx(15.0, rel=0.02)


@needs_mini
def test_read_opd_forms_and_errors(tmp_path):
    cube = tmp_path / "cube.fits"
    make_test_opd(cube, form="cube", nslices=3, seed=1, npix=NPIX, data_path=_MINI)
    assert read_opd(cube, npix=NPIX, slice=2).slice == 2
    with pytest.raises(OpdError, match="cube of 3 slices: choose one with opd_slice"):
        read_opd(cube, npix=NPIX)
    with pytest.raises(OpdError, match="opd_slice=5 is outside"):
        read_opd(cube, npix=NPIX, slice=5)
    wss = tmp_path / "wss.fits"
    make_test_opd(wss, form="wss", seed=2, data_path=_MINI, date="2025-05-01T10:00:00")
    spec = read_opd(wss, npix=1024)
    assert (spec.form, spec.date, spec.slice) == ("wss", "2025-05-01T10:00:00", None)
    with pytest.raises(OpdError, match="does not match the stpsf pupil grid 1024"):
        read_opd(cube, npix=1024, slice=0)
    with pytest.raises(OpdError, match="OPD file not found"):
        read_opd(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_text("not a FITS file")
    with pytest.raises(OpdError, match="cannot read the OPD file"):
        read_opd(tmp_path / "junk.fits")
    fits.PrimaryHDU(np.zeros((NPIX, NPIX)) + np.nan).writeto(tmp_path / "nan.fits")
    with pytest.raises(OpdError, match="NaN"):
        read_opd(tmp_path / "nan.fits", npix=NPIX)
    microns = fits.PrimaryHDU(np.random.default_rng(0).normal(0, 0.06, (NPIX, NPIX)))
    microns.writeto(tmp_path / "um.fits")
    with pytest.raises(OpdError, match="not a plausible wavefront"):
        read_opd(tmp_path / "um.fits", npix=NPIX)
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    with pytest.raises(OpdError, match="no OPD image"):
        read_opd(tmp_path / "empty.fits")


def _frames(frame, nints=2, seed=0):
    rng = np.random.default_rng(seed)
    model = make_model(nints=nints, ny=SHAPE[0], nx=SHAPE[1], seed=seed)
    flux = 50.0 / frame.max()
    model.data = (flux * frame + rng.normal(0, 0.05, (nints,) + SHAPE)).astype(np.float32)
    model.err = np.full(model.data.shape, 0.05, np.float32)
    model.dq = np.zeros(model.data.shape, np.uint32)
    model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = MASK_YX[1] + 1, MASK_YX[0] + 1
    return model


def test_opd_with_the_builtin_model_is_an_error(cube, tmp_path):
    with pytest.raises(InputError, match="needs the stpsf model"):
        RecenterFramesStep.call(cube, psf_model="builtin", opd=str(tmp_path / "x.fits"))


@needs_stpsf
def test_bad_opd_files_are_clear_errors(cube, tmp_path, monkeypatch):
    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    with pytest.raises(InputError, match="x.fits: OPD file not found"):
        RecenterFramesStep.call(cube, psf_model="stpsf", opd=str(tmp_path / "x.fits"))
    fits.PrimaryHDU(np.zeros((100, 100))).writeto(tmp_path / "grid.fits")
    with pytest.raises(InputError, match="grid.fits: OPD grid 100 x 100 does not match"):
        RecenterFramesStep.call(cube, psf_model="stpsf", opd=str(tmp_path / "grid.fits"),
                                pupil_npix=NPIX)
    with pytest.raises(InputError, match="jwst_pupil_RevW_npix300"):
        RecenterFramesStep.call(cube, psf_model="stpsf", pupil_npix=300)


@pytest.mark.slow
@needs_stpsf
@pytest.mark.parametrize("form", ["fits", "cube", "wss"])
def test_each_opd_form_through_the_step(form, tmp_path, monkeypatch):
    """Frames made with a known 60 nm wavefront are centred exactly when the OPD is given."""
    from jwst_klipprep.psf.models import StpsfOptions, psf_frame

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    path = tmp_path / f"opd_{form}.fits"
    make_test_opd(path, rms_nm=60.0, seed=4, form=form, npix=NPIX, data_path=_MINI)
    slice_ = 1 if form == "cube" else None
    spec = read_opd(path, npix=NPIX, slice=slice_)
    frame = psf_frame("stpsf", instrument="NIRCAM", filter_name="F444W", canonical="MASK335R",
                      offset_yx_arcsec=tuple(np.multiply(OFFSET_YX, PIXEL)), shape=SHAPE,
                      center_yx=MASK_YX, pixel_scale=PIXEL,
                      options=StpsfOptions(opd=spec, si_wfe=True, pupil_npix=NPIX), **OPTICS)
    model = _frames(frame)
    pars = dict(psf_model="stpsf", pupil_npix=NPIX, fit_radius=10.0, **OPTICS)
    result = RecenterFramesStep.call(model, opd=str(path), opd_slice=slice_, **pars)
    rec = result.meta.instance["klipprep"]["recenter_frames"]
    assert rec["star_offset_yx"] == pytest.approx(OFFSET_YX, abs=0.008)  # 0.5 mas
    assert rec["opd"]["file"] == path.name and rec["opd"]["form"] == form
    assert rec["opd"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["opd"]["date"] == "2026-01-01T00:00:00" and rec["si_wfe"] is True
    header = {c[0]: c[1] for c in result.extra_fits.SCI.header}
    assert header["PSFOPD"] == path.name
    if form == "fits":  # the same frames without the OPD: the wavefront error biases the fit
        blind = RecenterFramesStep.call(model, **pars)
        off = blind.meta.instance["klipprep"]["recenter_frames"]["star_offset_yx"]
        assert np.hypot(*np.subtract(off, OFFSET_YX)) * PIXEL * 1000 > 3.0  # mas


@needs_stpsf
def test_simulate_opd_errors(tmp_path, monkeypatch, capsys):
    from jwst_klipprep.cli import main
    from jwst_klipprep.simulate import simulate_dataset

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    with pytest.raises(ValueError, match="needs psf_backend='stpsf'"):
        simulate_dataset(tmp_path / "a", psf_backend="builtin", opd=str(tmp_path / "x.fits"))
    assert main(["simulate", str(tmp_path / "b"), "--opd", str(tmp_path / "x.fits")]) == 2
    assert "x.fits: OPD file not found" in capsys.readouterr().err


@pytest.mark.slow
@needs_stpsf
def test_simulate_with_a_known_wavefront(tmp_path, monkeypatch):
    from jwst_klipprep.simulate import simulate_dataset

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    path = tmp_path / "opd.fits"
    make_test_opd(path, rms_nm=60.0, seed=5, npix=NPIX, data_path=_MINI)
    kw = dict(nints=1, n_reference=1, n_science_rolls=1, with_background=False,
              psf_nlambda=1, psf_oversample=1, cosmic_rays_per_integration=0)
    sim = simulate_dataset(tmp_path / "sim", psf_backend="stpsf", opd=str(path), **kw)
    psf = sim.truth["psf"]
    assert psf["opd"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert psf["pupil_npix"] == NPIX and psf["si_wfe"] is True
    assert "opd.fits" in psf["fidelity"]


@pytest.mark.slow
@needs_stpsf
@pytest.mark.parametrize("form", ["fits", "cube"])
def test_opd_without_bunit_is_taken_as_metres(form, tmp_path, monkeypatch):
    """read_opd takes a map without BUNIT as metres; the stpsf model must do the same (poppy
    alone refuses it) and give exactly the frame of the same map with BUNIT='meter'."""
    from jwst_klipprep.psf.models import StpsfOptions, psf_frame

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    with_unit = tmp_path / f"with_{form}.fits"
    make_test_opd(with_unit, rms_nm=60.0, seed=4, form=form, npix=NPIX, data_path=_MINI)
    without = tmp_path / f"without_{form}.fits"
    with fits.open(with_unit) as hdul:
        del hdul[0].header["BUNIT"]
        hdul.writeto(without)
    slice_ = 1 if form == "cube" else None
    frames = [psf_frame("stpsf", instrument="NIRCAM", filter_name="F444W", canonical="MASK335R",
                        offset_yx_arcsec=(0.01, -0.01), shape=(31, 31), center_yx=(15.0, 15.0),
                        pixel_scale=PIXEL, nlambda=1, oversample=2,
                        options=StpsfOptions(opd=read_opd(p, npix=NPIX, slice=slice_),
                                             si_wfe=False, pupil_npix=NPIX))
              for p in (with_unit, without)]
    np.testing.assert_array_equal(frames[1], frames[0])
    assert np.nanmax(frames[0]) > 0
