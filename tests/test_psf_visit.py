"""Visit-level wavefront fit (`jwst_klipprep.psf.visit`): an analytic model whose "modes" change
the PSF's shape recovers injected modes and offsets; bad input is a clear error; the stpsf
factory equals `psf_frame` with the same OPD written to a file."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jwst_klipprep.psf.visit import MODE_SETS, fit_visit, stpsf_mode_factory, wavefront_modes

_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "stpsf-data-mini"
needs_mini = pytest.mark.skipif(not _MINI.is_dir(), reason="needs ../shared/data/stpsf-data-mini")
needs_stpsf = pytest.mark.skipif(
    not _MINI.is_dir() or importlib.util.find_spec("stpsf") is None,
    reason="needs stpsf (the [stpsf] extra) and ../shared/data/stpsf-data-mini",
)

SHAPE = (41, 41)
CENTER = (20.0, 20.0)
YY, XX = np.indices(SHAPE)
MASK = 1.0 - np.exp(-((YY - CENTER[0]) ** 2 + (XX - CENTER[1]) ** 2) / (2 * 2.0**2))


def occulted_gaussian_factory(coefficients):
    """A star behind a soft Gaussian occulter: mode 0 widens the PSF (focus-like), mode 1
    stretches it along y against x (astigmatism-like); the occulter stays at the mask centre,
    so the mode response changes with the offset as a coronagraph's does."""
    c0, c1 = (float(v) for v in coefficients)
    sy = 3.0 * (1 + 0.02 * c0) * (1 + 0.02 * c1)
    sx = 3.0 * (1 + 0.02 * c0) / (1 + 0.02 * c1)

    def model(offset_yx):
        y = YY - CENTER[0] - offset_yx[0]
        x = XX - CENTER[1] - offset_yx[1]
        return 100.0 * np.exp(-0.5 * ((y / sy) ** 2 + (x / sx) ** 2)) * MASK

    return model


def _visit(coefficients, offsets, scales, noise, rng):
    frames = np.array([s * occulted_gaussian_factory(coefficients)(o)
                       for o, s in zip(offsets, scales, strict=True)])
    err = np.full(frames.shape, noise)
    return frames + rng.normal(size=frames.shape) * noise, err


@pytest.mark.parametrize("derivatives", ["mean", "each"])
def test_recovers_injected_modes_and_offsets(derivatives):
    rng = np.random.default_rng(4)
    truth_c = np.array([4.0, -3.0])
    offsets = rng.uniform(-0.5, 0.5, size=(5, 2))
    scales = rng.uniform(0.8, 1.2, size=5)
    data, err = _visit(truth_c, offsets, scales, 0.05, rng)
    fit = fit_visit(data, occulted_gaussian_factory, n_modes=2, err=err,
                    offsets0=offsets + rng.normal(0, 0.1, size=offsets.shape), iterations=8,
                    center_yx=CENTER, fit_radius=15.0, mode_step=0.5, offset_step=0.01,
                    mode_derivatives=derivatives)
    assert fit.converged
    assert fit.chi2_red == pytest.approx(1.0, abs=0.1)
    z_c = (fit.coefficients - truth_c) / fit.coefficient_err
    assert np.all(np.abs(z_c) < 4)
    assert np.all(fit.coefficient_err < 0.05)  # a real measurement, not a wide prior
    z_off = (fit.offset_yx - offsets) / fit.offset_err_yx
    assert np.all(np.abs(z_off) < 4)
    assert np.abs(fit.offset_yx - offsets).max() < 2e-3
    assert fit.scale == pytest.approx(scales, rel=2e-3)
    n, k = 5, 2
    per_step = k + 1 + 3 * n if derivatives == "mean" else k * n + 3 * n
    tries = (fit.nmodel - per_step * fit.iterations) / n  # n evaluations per tried step
    assert tries == int(tries) and fit.iterations <= tries <= fit.iterations + 5
    assert fit.covariance.shape == (k + 3 * n, k + 3 * n)


def test_modes_absorb_what_a_per_exposure_model_gets_wrong():
    """The model's shape error is common to the exposures: fitted offsets come out right only
    when the modes are fitted (with the modes held at 0 by a tight prior they are biased)."""
    rng = np.random.default_rng(7)
    truth_c = np.array([6.0, 5.0])
    offsets = np.array([[0.3, -0.2], [-0.25, 0.1], [0.05, 0.35], [-0.1, -0.3]])
    data, err = _visit(truth_c, offsets, np.ones(4), 0.02, rng)
    free = fit_visit(data, occulted_gaussian_factory, n_modes=2, err=err, iterations=8,
                     center_yx=CENTER, mode_step=0.5, offset_step=0.01)
    held = fit_visit(data, occulted_gaussian_factory, n_modes=2, err=err, iterations=8,
                     center_yx=CENTER, mode_step=0.5, offset_step=0.01, prior=1e-4)
    assert np.abs(free.offset_yx - offsets).max() < 2e-3
    assert np.abs(held.coefficients).max() < 1e-3  # the prior holds the modes at 0
    assert held.chi2_red > 10 * free.chi2_red  # the mismatch shows in chi2 ...
    # ... and the prior pulls the modes towards 0 with a moderate prior
    mid = fit_visit(data, occulted_gaussian_factory, n_modes=2, err=err, iterations=8,
                    center_yx=CENTER, mode_step=0.5, offset_step=0.01, prior=2.0)
    assert np.all(np.abs(mid.coefficients) < np.abs(free.coefficients))


def test_bad_input_is_a_clear_error():
    data = np.ones((3,) + SHAPE)
    err = np.ones_like(data)
    kw = dict(n_modes=2, err=err, center_yx=CENTER)
    with pytest.raises(ValueError, match="needs several exposures"):
        fit_visit(data[:1], occulted_gaussian_factory, n_modes=2, err=err[:1])
    with pytest.raises(ValueError, match="err shape"):
        fit_visit(data, occulted_gaussian_factory, n_modes=2, err=err[:, :5])
    with pytest.raises(ValueError, match="mode_derivatives must be"):
        fit_visit(data, occulted_gaussian_factory, mode_derivatives="median", **kw)
    with pytest.raises(ValueError, match="prior must be > 0"):
        fit_visit(data, occulted_gaussian_factory, prior=0.0, **kw)
    with pytest.raises(ValueError, match="offsets0 must be finite"):
        fit_visit(data, occulted_gaussian_factory, offsets0=np.zeros((2, 2)), **kw)
    with pytest.raises(ValueError, match="n_modes must be"):
        fit_visit(data, occulted_gaussian_factory, n_modes=0, err=err)
    with pytest.raises(ValueError, match="iterations must be"):
        fit_visit(data, occulted_gaussian_factory, iterations=0, **kw)
    with pytest.raises(ValueError, match="fewer than 10 valid pixels"):
        fit_visit(data, occulted_gaussian_factory, bad=np.ones(data.shape, bool), **kw)
    with pytest.raises(ValueError, match="returned shape"):
        fit_visit(data, lambda c: (lambda o: np.ones((5, 5))), **kw)
    with pytest.raises(ValueError, match="non-finite values"):
        fit_visit(data, lambda c: (lambda o: np.full(SHAPE, np.nan)), **kw)
    with pytest.raises(ValueError, match="singular"):  # modes the data cannot see, no prior
        fit_visit(data, lambda c: (lambda o: np.ones(SHAPE)), **kw)


def test_wavefront_modes_are_unit_rms_and_tip_tilt_free():
    yy, xx = np.indices((64, 64)) - 31.5
    pupil = (np.hypot(yy, xx) < 30).astype(float)
    modes = wavefront_modes(pupil, "low_order")
    assert modes.shape == (7, 64, 64)
    inside = pupil > 0.5
    design = np.stack([np.ones(inside.sum()), xx[inside], yy[inside]], axis=1)
    for m in modes:
        assert np.std(m[inside]) == pytest.approx(1e-9, rel=1e-9)
        assert np.abs(np.linalg.lstsq(design, m[inside], rcond=None)[0]).max() < 1e-20
        assert np.all(m[~inside] == 0)
    gram = np.einsum("kp,lp->kl", modes[:, inside], modes[:, inside]) / inside.sum() / 1e-18
    assert np.abs(gram - np.eye(7)).max() < 0.05  # nearly orthonormal on a round pupil
    assert np.array_equal(wavefront_modes(pupil, "focus_astig"), modes[:3])
    assert np.array_equal(wavefront_modes(pupil, ["coma_y"]), modes[4:5])
    assert list(MODE_SETS) == ["focus_astig", "low_order", "segments", "segments_focus"]
    with pytest.raises(ValueError, match="unknown wavefront modes"):
        wavefront_modes(pupil, "spherical")


def _segmented_pupil():
    """A toy segmented pupil: a disc cut into 4 quadrant segments (labels 1-4) by 2-px gaps."""
    yy, xx = np.indices((64, 64)) - 31.5
    pupil = (np.hypot(yy, xx) < 30) & (np.abs(yy) > 1) & (np.abs(xx) > 1)
    segments = np.where(pupil, 1 + (yy > 0) + 2 * (xx > 0), 0)
    return pupil.astype(float), segments, yy, xx


def test_segment_modes_are_unit_rms_tip_tilt_free_and_per_segment():
    pupil, segments, yy, xx = _segmented_pupil()
    inside = pupil > 0.5
    names = ["focus", "seg01_piston", "seg02_tip", "seg03_tilt", "seg04_focus"]
    modes = wavefront_modes(pupil, names, segments=segments)
    assert modes.shape == (5, 64, 64)
    design = np.stack([np.ones(inside.sum()), xx[inside], yy[inside]], axis=1)
    for m in modes:
        assert np.std(m[inside]) == pytest.approx(1e-9, rel=1e-9)
        assert np.abs(np.linalg.lstsq(design, m[inside], rcond=None)[0]).max() < 1e-20
        assert np.all(m[~inside] == 0)
    assert np.array_equal(modes[0], wavefront_modes(pupil, ["focus"])[0])
    # seg02_tip before the global PTT removal: x - <x> on segment 2, 0 elsewhere; the removal
    # adds a plane, so on each other segment the mode is a plane too, and on segment 2 the
    # mode minus that plane is linear in x with no y term
    sel = segments == 2
    a = np.linalg.lstsq(np.stack([np.ones(sel.sum()), xx[sel], yy[sel]], axis=1),
                        modes[2][sel], rcond=None)[0]
    other = (segments > 0) & ~sel
    b = np.linalg.lstsq(np.stack([np.ones(other.sum()), xx[other], yy[other]], axis=1),
                        modes[2][other], rcond=None)[0]
    assert abs(a[1] - b[1]) > 10 * abs(a[2] - b[2])  # tip = x on its segment
    # per-segment focus: quadratic on its own segment only (a plane on the others)
    for label in (1, 2, 3):
        s = segments == label
        fit = np.linalg.lstsq(np.stack([np.ones(s.sum()), xx[s], yy[s]], axis=1), modes[4][s],
                              rcond=None)
        assert np.abs(modes[4][s] - fit[0] @ np.stack([np.ones(s.sum()), xx[s], yy[s]])).max(
        ) < 1e-20
    s = segments == 4
    cx, cy = xx[s] - xx[s].mean(), yy[s] - yy[s].mean()
    q = np.stack([np.ones(s.sum()), cx, cy, cx * cx + cy * cy], axis=1)
    assert np.abs(modes[4][s] - q @ np.linalg.lstsq(q, modes[4][s], rcond=None)[0]).max() < 1e-20
    with pytest.raises(ValueError, match="segment map"):
        wavefront_modes(pupil, names)
    with pytest.raises(ValueError, match=r"segments \[7\]"):
        wavefront_modes(pupil, ["seg07_piston"], segments=segments)
    with pytest.raises(ValueError, match="unknown wavefront modes"):
        wavefront_modes(pupil, ["seg01_astig"], segments=segments)


@needs_mini
def test_segments_focus_spans_the_test_maps_exactly(tmp_path):
    """make_test_opd's maps are per-segment piston/tip/tilt/focus + the 7 global modes: the
    "segments_focus" set represents them exactly (why the benchmark's no-OPD rows with it are
    an "inverse crime"), "segments" leaves the per-segment focus out."""
    from jwst_klipprep.psf.opd import make_test_opd

    pupil = fits.getdata(_MINI / "jwst_pupil_RevW_npix256.fits.gz")
    segments = np.asarray(fits.getdata(_MINI / "JWpupil_segments_RevW_npix256.fits"), int)
    inside = pupil > 0.5
    truth = make_test_opd(tmp_path / "map.fits", rms_nm=60.0, seed=3, npix=256,
                          data_path=_MINI)[inside]
    left = {}
    for name in ("segments", "segments_focus"):
        modes = wavefront_modes(pupil, name, segments=segments)
        assert modes.shape[0] == len(MODE_SETS[name]) == 7 + 18 * (3 if name == "segments" else 4)
        design = modes[:, inside].T
        left[name] = np.std(truth - design @ np.linalg.lstsq(design, truth, rcond=None)[0])
    assert left["segments_focus"] < 1e-6 * 60e-9
    assert 5e-9 < left["segments"] < 30e-9  # the per-segment focus part of 60 nm


@pytest.mark.slow
@needs_stpsf
def test_stpsf_factory_equals_psf_frame_with_the_opd_in_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    from jwst_klipprep.psf.models import StpsfOptions, psf_frame
    from jwst_klipprep.psf.opd import make_test_opd, read_opd

    base = make_test_opd(tmp_path / "base.fits", rms_nm=50.0, seed=2, npix=256, data_path=_MINI)
    with fits.open(_MINI / "jwst_pupil_RevW_npix256.fits.gz") as hdul:
        modes = wavefront_modes(hdul[0].data, "focus_astig")
    coefficients = np.array([20.0, -10.0, 5.0])
    fits.PrimaryHDU(base + np.tensordot(coefficients, modes, axes=1),
                    header=fits.Header({"BUNIT": "meter"})).writeto(tmp_path / "moved.fits")
    kw = dict(instrument="NIRCAM", filter_name="F444W", canonical="MASK335R", shape=(33, 33),
              center_yx=(16.2, 15.8), pixel_scale=0.0629, nlambda=1, oversample=2)
    options = StpsfOptions(opd=read_opd(tmp_path / "base.fits"), si_wfe=True, pupil_npix=256)
    factory = stpsf_mode_factory(options=options, modes=modes, **kw)
    offset = (0.3, -0.2)
    arcsec = (0.3 * 0.0629, -0.2 * 0.0629)
    at_base = factory(np.zeros(3))(offset)
    moved = factory(coefficients)(offset)
    truth = psf_frame("stpsf", offset_yx_arcsec=arcsec, options=StpsfOptions(
        opd=read_opd(tmp_path / "moved.fits"), si_wfe=True, pupil_npix=256), **kw)
    scale = np.sum(truth * moved) / np.sum(moved * moved)  # normalised by the base wavefront
    assert abs(scale - 1) < 1e-3
    np.testing.assert_allclose(scale * moved, truth, rtol=0, atol=1e-9 * truth.max())
    assert np.abs(moved - at_base).max() > 0.01 * at_base.max()  # the modes do change it
    with pytest.raises(ValueError, match="modes must be"):
        stpsf_mode_factory(options=options, modes=modes[:, :10], **kw)


def test_fit_wavefront_needs_stpsf_and_an_opd_file_for_low_order(monkeypatch):
    from conftest import make_model

    from jwst_klipprep.base import ParameterError
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

    with pytest.raises(ParameterError, match="needs the stpsf model"):
        RecenterFramesStep.call(make_model(), psf_model="builtin", fit_wavefront="low_order")
    with pytest.raises(ParameterError, match="needs the stpsf model"):
        RecenterFramesStep.call(make_model(), psf_model="builtin", fit_wavefront="segments")
    with pytest.raises(Exception, match="fit_wavefront"):
        RecenterFramesStep.call(make_model(), psf_model="builtin", fit_wavefront="focus_astig")
    if not _MINI.is_dir() or importlib.util.find_spec("stpsf") is None:
        return
    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    with pytest.raises(ParameterError, match="low_order .* needs --opd=FILE"):
        RecenterFramesStep.call(make_model(), psf_model="stpsf", fit_wavefront="low_order")
    with pytest.raises(ParameterError, match="segment_prior_nm applies to"):
        RecenterFramesStep.call(make_model(), psf_model="stpsf", fit_wavefront="none",
                                segment_prior_nm=3.0)


def _exposures(model_fn, offsets, shape, mask_yx, *, seed):
    """Two-integration exposures of ``model_fn`` at each offset (peak 5000, unit noise), mask
    centre (CRPIX) at ``mask_yx``."""
    from conftest import make_model

    rng = np.random.default_rng(seed)
    exposures = []
    for k, off in enumerate(offsets):
        frame = model_fn(off)
        model = make_model(nints=2, ny=shape[0], nx=shape[1], seed=k,
                           filename=f"jw01234001001_03106_0000{k + 1}_nrcalong_calints.fits")
        model.data = (5000 * frame / frame.max() + rng.normal(0, 1.0, (2,) + shape)).astype(
            np.float32)
        model.err = np.full(model.data.shape, 1.0, np.float32)
        model.dq = np.zeros(model.data.shape, np.uint32)
        model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = mask_yx[1] + 1, mask_yx[0] + 1
        exposures.append(model)
    return exposures


@pytest.mark.slow
@needs_stpsf
def test_step_visit_fit_removes_the_drift_of_an_older_opd(tmp_path, monkeypatch):
    """Three exposures made with an OPD that drifted (focus + astigmatism, 30-40 nm rms each,
    no coma or trefoil) from the given one: the per-exposure fit is biased alike, the visit fit
    removes it and records the drift."""
    from jwst.datamodels import ModelContainer

    from jwst_klipprep.base import InputError
    from jwst_klipprep.psf.models import StpsfOptions
    from jwst_klipprep.psf.opd import make_test_opd, read_opd
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    pixel, shape, mask_yx = 0.0629, (49, 49), (24.3, 23.6)
    make_test_opd(tmp_path / "old.fits", rms_nm=60.0, seed=4, npix=256, data_path=_MINI)
    with fits.open(_MINI / "jwst_pupil_RevW_npix256.fits.gz") as hdul:
        modes = wavefront_modes(hdul[0].data, "low_order")
    drift = np.array([40.0, -40.0, 30.0, 0.0, 0.0, 0.0, 0.0])
    # the truth through the mode factory on the old OPD (= psf_frame with old + drift: the test
    # above), which saves two stpsf optical-system builds
    factory = stpsf_mode_factory(
        instrument="NIRCAM", filter_name="F444W", canonical="MASK335R", shape=shape,
        center_yx=mask_yx, pixel_scale=pixel, nlambda=1, oversample=2, modes=modes,
        options=StpsfOptions(opd=read_opd(tmp_path / "old.fits"), si_wfe=False, pupil_npix=256))
    offsets = np.array([[0.25, -0.3], [-0.2, 0.1], [0.05, 0.35]])  # px (16-22 mas)
    exposures = _exposures(factory(drift), offsets, shape, mask_yx, seed=1)
    # no instrument wavefront: two stpsf builds less (the visit fit does not depend on it)
    pars = dict(psf_model="stpsf", opd=str(tmp_path / "old.fits"), fit_radius=10.0, nlambda=1,
                oversample=2, apply=False, si_wfe=False)
    visit = RecenterFramesStep.call(ModelContainer(exposures), fit_wavefront="low_order",
                                    wavefront_prior_nm=30.0, **pars)
    mas = pixel * 1000
    for k, result in enumerate(visit):
        rec = result.meta.instance["klipprep"]["recenter_frames"]
        fit = rec["wavefront_fit"]
        # the per-exposure fit (the start) is biased by the drift; the visit fit is not
        assert np.hypot(*np.subtract(fit["per_exposure_offset_yx"], offsets[k])) * mas > 0.5
        assert np.hypot(*np.subtract(rec["star_offset_yx"], offsets[k])) * mas < 0.2
        assert fit["coefficients_nm"] == pytest.approx(drift, abs=2.0)
        assert fit["modes"] == list(MODE_SETS["low_order"]) and len(fit["members"]) == 3
        assert rec["systematic_floor_mas"] == 3.0  # VISIT_FLOOR_MAS, not the 6 mas OPD floor
        assert rec["star_offset_err_yx"] == pytest.approx(
            np.hypot(rec["star_offset_stat_err_yx"], 3.0 / mas))
        assert result.meta.cal_step.recenter_frames == "COMPLETE"
    with pytest.raises(InputError, match="needs at least 2 exposures"):
        RecenterFramesStep.call(exposures[0], fit_wavefront="low_order", **pars)


@pytest.mark.slow
@needs_stpsf
def test_step_visit_fit_without_an_opd(tmp_path, monkeypatch):
    """fit_wavefront=segments without an OPD: the telescope wavefront (global + per-segment
    terms, unknown to the step) biases the per-exposure fits alike; the visit fit fits it from
    zero with the no-OPD priors and floor. The 61-mode set is cut to 6 modes here for speed
    (the full set is measured in benchmarks/bench_recenter.py)."""
    from jwst.datamodels import ModelContainer

    from jwst_klipprep.psf.models import StpsfOptions
    from jwst_klipprep.psf.visit import VISIT_FLOORS_MAS, VISIT_PRIORS_NM
    from jwst_klipprep.steps import recenter_frames_step
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

    monkeypatch.setenv("STPSF_PATH", str(_MINI))
    names = ("focus", "astig_0", "coma_x", "seg03_piston", "seg08_tip", "seg14_tilt")
    monkeypatch.setitem(recenter_frames_step.MODE_SETS, "segments", names)
    pixel, shape, mask_yx = 0.0629, (49, 49), (24.3, 23.6)
    pupil = fits.getdata(_MINI / "jwst_pupil_RevW_npix256.fits.gz")
    segments = np.asarray(fits.getdata(_MINI / "JWpupil_segments_RevW_npix256.fits"), int)
    modes = wavefront_modes(pupil, names, segments=segments)
    truth_c = np.array([25.0, -20.0, 20.0, 8.0, -8.0, 8.0])
    factory = stpsf_mode_factory(
        instrument="NIRCAM", filter_name="F444W", canonical="MASK335R", shape=shape,
        center_yx=mask_yx, pixel_scale=pixel, nlambda=1, oversample=2, modes=modes,
        options=StpsfOptions(opd=None, si_wfe=False, pupil_npix=256))
    offsets = np.array([[0.25, -0.3], [-0.2, 0.1], [0.05, 0.35]])  # px (16-22 mas)
    exposures = _exposures(factory(truth_c), offsets, shape, mask_yx, seed=2)
    visit = RecenterFramesStep.call(ModelContainer(exposures), fit_wavefront="segments",
                                    psf_model="stpsf", fit_radius=10.0, nlambda=1,
                                    oversample=2, apply=False, si_wfe=False)
    mas = pixel * 1000
    floor = VISIT_FLOORS_MAS[("segments", False)]
    for k, result in enumerate(visit):
        rec = result.meta.instance["klipprep"]["recenter_frames"]
        fit = rec["wavefront_fit"]
        start = np.hypot(*np.subtract(fit["per_exposure_offset_yx"], offsets[k])) * mas
        now = np.hypot(*np.subtract(rec["star_offset_yx"], offsets[k])) * mas
        assert start > 8.0 and now < 0.5, (start, now)  # measured 11-12 -> 0.07-0.11 mas
        assert fit["coefficients_nm"] == pytest.approx(truth_c, abs=1.0)
        assert fit["modes"] == list(names) and fit["opd_given"] is False
        assert (fit["prior_nm"], fit["segment_prior_nm"]) == VISIT_PRIORS_NM[False]
        assert rec["pupil_npix"] == 256  # the visit fit's default grid without an OPD
        assert rec["systematic_floor_mas"] == floor
        assert rec["star_offset_err_yx"] == pytest.approx(
            np.hypot(rec["star_offset_stat_err_yx"], floor / mas))
        assert result.meta.cal_step.recenter_frames == "COMPLETE"


def test_visit_floors_priors_and_damping():
    from jwst_klipprep.psf.visit import VISIT_PRIORS_NM, mode_priors, visit_floor_mas

    assert visit_floor_mas("segments_focus", opd_given=False) == 7.0
    assert visit_floor_mas("low_order", opd_given=True) == 3.0
    with pytest.raises(ValueError, match="no measured floor .*'low_order' without an OPD"):
        visit_floor_mas("low_order", opd_given=False)
    prior = mode_priors(MODE_SETS["segments"], global_nm=12.0, segment_nm=6.0)
    assert prior.shape == (61,) and np.all(prior[:7] == 12.0) and np.all(prior[7:] == 6.0)
    assert VISIT_PRIORS_NM[False] == (12.0, 6.0)
    # the damped fit and plain Gauss-Newton agree on a well-posed problem; damping < 0 is an error
    rng = np.random.default_rng(3)
    offsets = rng.uniform(-0.4, 0.4, size=(4, 2))
    data, err = _visit(np.array([5.0, -4.0]), offsets, np.ones(4), 0.05, rng)
    kw = dict(n_modes=2, err=err, center_yx=CENTER, mode_step=0.5, offset_step=0.01,
              iterations=10)
    lm = fit_visit(data, occulted_gaussian_factory, **kw)
    gn = fit_visit(data, occulted_gaussian_factory, damping=0.0, **kw)
    assert lm.converged and gn.converged
    assert np.abs(lm.offset_yx - gn.offset_yx).max() < 2e-3
    assert np.abs(lm.offset_yx - offsets).max() < 5e-3
    with pytest.raises(ValueError, match="damping must be >= 0"):
        fit_visit(data, occulted_gaussian_factory, damping=-1.0, **kw)
