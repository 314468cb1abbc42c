"""Known-answer tests of jwst_klipprep.algorithms.centering with the built-in optics model."""

import logging

import numpy as np
import pytest

from jwst_klipprep.algorithms.centering import (
    StarOffset,
    combine_offsets,
    extract_stamp,
    fit_region,
    measure_star_offset,
)
from jwst_klipprep.psf.builtin import coronagraphic_psf
from jwst_klipprep.psf.models import MODEL_CACHE
from jwst_klipprep.psf.stamps import StampModel, make_model_callable

SCALE = 0.0629  # arcsec / px (NIRCam LW)
SHAPE = (45, 45)
CENTER = (22.0, 22.0)
RADIUS = 13.0  # the stamp must reach fit_radius + 9 px from the mask centre
MAS = 1000 * SCALE  # mas per px


def builtin(offset_yx_px, center=CENTER, shape=SHAPE):
    """Built-in MASK335R F444W model (computed per call), star at mask + offset."""
    return coronagraphic_psf(filter="F444W", coronagraph="MASKA335R", shape=shape,
                             offset_yx_arcsec=(offset_yx_px[0] * SCALE,
                                               offset_yx_px[1] * SCALE),
                             center_yx=center, pixel_scale=SCALE, nlambda=2, oversample=2)


def exposure(offset_yx_px, rng, *, nints=5, peak_snr=300.0, read=10.0):
    """Integrations (electrons) of the model at a known offset, Poisson + read noise."""
    psf = builtin(offset_yx_px)
    clean = psf * (peak_snr**2 / psf.max())  # ~peak SNR when Poisson-dominated
    err = np.sqrt(clean + read**2)
    data = clean + rng.normal(size=(nints,) + psf.shape) * err
    return data, np.broadcast_to(err, data.shape).copy()


def mas(offset_px):
    return np.asarray(offset_px) * MAS


@pytest.mark.parametrize("truth_mas", [(0.0, 0.0), (12.0, -7.0), (-25.0, 30.0)])
def test_noiseless_offsets_recovered_with_the_same_model(truth_mas):
    truth = np.array(truth_mas) / MAS
    data = 1e5 * builtin(truth)
    res = measure_star_offset(data, builtin, fit_radius=RADIUS, robust=None)
    assert isinstance(res, StarOffset)
    assert res.offset_yx.shape == (1, 2) and res.combined_yx.shape == (2,)
    assert np.all(np.abs(mas(res.combined_yx - truth)) < 0.02)
    assert res.converged
    assert res.niter <= 3 and res.nmodel <= 3
    assert np.isclose(res.scale[0], 1e5, rtol=1e-3)


def test_noisy_offsets_recovered_well_below_one_mas():
    rng = np.random.default_rng(1)
    truth = np.array([18.0, -22.0]) / MAS
    data, err = exposure(truth, rng, nints=5)
    res = measure_star_offset(data, builtin, err=err, fit_radius=RADIUS)
    error = mas(res.combined_yx - truth)
    assert np.hypot(*error) < 0.3
    assert np.all(np.abs(error) < 4 * mas(res.combined_err_yx))
    assert res.converged and res.used.all()
    assert np.all(np.abs(res.chi2_red - 1) < 0.2)


def test_forward_iterations_remove_the_zero_offset_bias():
    truth = np.array([30.0, -30.0]) / MAS
    data = 1e5 * builtin(truth)
    zero = measure_star_offset(data, builtin, iterations=0, fit_radius=RADIUS, robust=None)
    one = measure_star_offset(data, builtin, iterations=1, fit_radius=RADIUS, robust=None)
    two = measure_star_offset(data, builtin, iterations=2, fit_radius=RADIUS, robust=None)
    bias = [np.hypot(*mas(r.combined_yx - truth)) for r in (zero, one, two)]
    assert bias[0] > 2.0  # the occulted PSF is not a shifted copy of the centred one
    assert bias[1] < 0.2 * bias[0]
    assert bias[2] < 0.02
    assert not zero.converged and two.converged


def test_uncertainties_are_calibrated_on_repeated_noise():
    rng = np.random.default_rng(7)
    truth = np.array([-9.0, 14.0]) / MAS
    data, err = exposure(truth, rng, nints=60, peak_snr=150.0)
    res = measure_star_offset(data, builtin, err=err, fit_radius=RADIUS, clip_sigma=None)
    z = (res.offset_yx - truth) / res.offset_err_yx
    assert 0.8 < np.std(z) < 1.25
    assert np.all(np.abs(np.mean(z, axis=0)) < 0.5)
    # the combined error is the error of the mean of the integrations
    spread = np.std(res.offset_yx, axis=0, ddof=1) / np.sqrt(len(data))
    assert np.all((res.combined_err_yx > 0.75 * spread) & (res.combined_err_yx < 1.35 * spread))
    assert np.all(np.abs(res.combined_yx - truth) < 4 * res.combined_err_yx)
    assert res.nmodel <= 3  # one shared model per round


def test_without_err_the_uncertainties_come_from_the_residuals():
    rng = np.random.default_rng(3)
    truth = np.array([5.0, 5.0]) / MAS
    data, err = exposure(truth, rng, nints=30, peak_snr=150.0)
    res = measure_star_offset(data, builtin, fit_radius=RADIUS, clip_sigma=None)
    z = (res.offset_yx - truth) / res.offset_err_yx
    # residual-based (White) errors: measured 1.3-1.6x too small here; pass ERR when known
    assert 0.6 < np.std(z) < 1.8


def test_nan_and_bad_pixels_are_ignored_and_inputs_not_mutated():
    rng = np.random.default_rng(11)
    truth = np.array([10.0, 20.0]) / MAS
    data, err = exposure(truth, rng, nints=3)
    data[:, 22, 17:20] = np.nan  # NaN near the core
    data[:, :, 0] = np.nan
    data[1, 25, 25] = 1e9  # flagged wild pixel
    bad = np.zeros(data.shape, bool)
    bad[1, 25, 25] = True
    bad[:, 20, 20] = True
    err[:, 30, 30] = np.nan  # unusable error: pixel excluded
    weights = np.ones(SHAPE)
    copies = [a.copy() for a in (data, err, bad, weights)]
    res = measure_star_offset(data, builtin, err=err, bad=bad, weights=weights,
                              fit_radius=RADIUS)
    for before, after in zip(copies, (data, err, bad, weights), strict=True):
        np.testing.assert_array_equal(before, after)
    assert np.hypot(*mas(res.combined_yx - truth)) < 0.5
    assert res.converged


def test_integration_without_valid_pixels_gives_nan_row():
    rng = np.random.default_rng(12)
    truth = np.array([0.2, -0.1])
    data, err = exposure(truth, rng, nints=3)
    data[2] = np.nan
    res = measure_star_offset(data, builtin, err=err, fit_radius=RADIUS)
    assert np.isnan(res.offset_yx[2]).all() and not res.used[2]
    assert np.all(np.isfinite(res.offset_yx[:2]))
    assert np.hypot(*mas(res.combined_yx - truth)) < 0.5
    data[:] = np.nan
    with pytest.raises(ValueError, match="no integration"):
        measure_star_offset(data, builtin, fit_radius=RADIUS)


def test_an_outlying_integration_is_rejected_from_the_combination(caplog):
    rng = np.random.default_rng(5)
    truth = np.array([-0.3, 0.25])
    data, err = exposure(truth, rng, nints=6)
    moved, _ = exposure(truth + np.array([0.3, 0.0]), rng, nints=1)
    data[4] = moved[0]  # the star jumped by ~19 mas in one integration
    with caplog.at_level(logging.INFO, logger="jwst_klipprep.algorithms.centering"):
        res = measure_star_offset(data, builtin, err=err, fit_radius=RADIUS)
    assert not res.used[4] and res.used.sum() == 5
    assert "rejected" in caplog.text
    # that integration is fitted with its own model (more than model_tol away)
    assert res.nmodel > res.niter
    assert np.all(np.abs(mas(res.offset_yx[4] - truth - [0.3, 0.0])) < 0.5)
    assert np.hypot(*mas(res.combined_yx - truth)) < 0.3


def test_per_integration_guess_and_distinct_pointings():
    truths = np.array([[0.3, -0.2], [-0.25, 0.4]])
    data = np.stack([1e5 * builtin(t) for t in truths])
    res = measure_star_offset(data, builtin, fit_radius=RADIUS, robust=None, clip_sigma=None,
                              guess_yx=truths + 0.05)
    assert np.all(np.abs(mas(res.offset_yx - truths)) < 0.05)


def test_off_centre_mask_and_fit_region():
    center = (21.3, 23.6)

    def model(offset):
        return builtin(offset, center=center)

    truth = np.array([0.2, 0.35])
    data = 1e5 * model(truth)
    res = measure_star_offset(data, model, center_yx=center, fit_radius=RADIUS, robust=None)
    assert np.all(np.abs(mas(res.combined_yx - truth)) < 0.05)
    region = fit_region(SHAPE, center, 3.0)
    assert region.sum() == np.sum(np.hypot(*(np.indices(SHAPE) - np.reshape(center, (2, 1, 1))))
                                  <= 3.0)
    assert fit_region(SHAPE, center, None).all()


def test_invalid_arguments():
    data = np.ones((2,) + SHAPE)
    with pytest.raises(ValueError, match="iterations"):
        measure_star_offset(data, builtin, iterations=-1)
    with pytest.raises(TypeError, match="callable"):
        measure_star_offset(data, np.ones(SHAPE))
    with pytest.raises(ValueError, match="guess_yx"):
        measure_star_offset(data, builtin, guess_yx=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="err must"):
        measure_star_offset(data, builtin, err=np.ones((3, 3)))
    with pytest.raises(ValueError, match="model"):
        measure_star_offset(data, lambda offset: np.ones((5, 5)))


def test_combine_offsets_weighted_mean_birge_and_clipping():
    x = np.array([[1.0, 2.0], [1.2, 2.1], [0.8, 1.9], [1.1, 2.0], [9.0, 2.0]])
    e = np.full_like(x, 0.1)
    mean, err, used = combine_offsets(x, e)
    assert used.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(mean, [1.025, 2.0])
    # scatter larger than the errors: Birge-inflated error
    chi2 = np.sum((x[:4, 0] - 1.025) ** 2 / 0.01) / 3
    np.testing.assert_allclose(err[0], 0.1 / 2 * np.sqrt(chi2))
    np.testing.assert_allclose(err[1], 0.1 / 2)  # agrees within the errors: formal error
    mean, err, used = combine_offsets(x, e, clip_sigma=None)
    assert used.all() and mean[0] > 2
    mean, err, used = combine_offsets(np.full((2, 2), np.nan), np.ones((2, 2)))
    assert np.isnan(mean).all() and not used.any()
    mean, err, used = combine_offsets(x[:1], e[:1])
    np.testing.assert_allclose(mean, x[0])
    np.testing.assert_allclose(err, e[0])


def test_extract_stamp_has_no_wraparound():
    frames = np.arange(2 * 10 * 12, dtype=float).reshape(2, 10, 12)
    stamp, origin, center = extract_stamp(frames, (1.4, 10.6), 3)
    assert stamp.shape == (2, 7, 7)
    np.testing.assert_array_equal(origin, [-2, 8])
    np.testing.assert_allclose(center, [3.4, 2.6])
    assert np.isnan(stamp[:, :2]).all() and np.isnan(stamp[:, :, 4:]).all()
    np.testing.assert_array_equal(stamp[:, 2:, :4], frames[:, :5, 8:12])
    dq, _, _ = extract_stamp(np.zeros((10, 12), np.uint32), (1.4, 10.6), 3, fill=1)
    assert dq.dtype == np.uint32 and dq[0, 0] == 1 and dq[3, 0] == 0
    far, _, _ = extract_stamp(frames, (100.0, 100.0), 2)
    assert np.isnan(far).all()


def test_make_model_callable_builtin_backend_and_cache():
    model = make_model_callable("builtin", instrument="NIRCAM", filter_name="F444W",
                                coronagraph="MASK335R", shape=SHAPE, center_yx=CENTER,
                                pixel_scale=SCALE, nlambda=2, oversample=2)
    assert isinstance(model, StampModel)
    hits = MODEL_CACHE.hits
    frame = model((0.1, -0.2))
    np.testing.assert_allclose(frame, builtin((0.1, -0.2)))
    # one cache level: the second call is served by the PSF model cache, not recomputed
    assert model((0.1, -0.2)) is frame and model.calls == 2
    assert MODEL_CACHE.hits == hits + 1
    assert not frame.flags.writeable
    truth = np.array([0.25, 0.1])
    res = measure_star_offset(3e4 * builtin(truth), model, fit_radius=RADIUS, robust=None)
    assert np.all(np.abs(mas(res.combined_yx - truth)) < 0.05)
    with pytest.raises(ValueError, match="backend"):
        make_model_callable("nope", instrument="NIRCAM", filter_name="F444W",
                            coronagraph="MASK335R", shape=SHAPE, center_yx=CENTER,
                            pixel_scale=SCALE)
    custom = make_model_callable(lambda off: np.full(SHAPE, off[0]), instrument=None,
                                 filter_name=None, coronagraph=None, shape=SHAPE,
                                 center_yx=CENTER, pixel_scale=2.0)
    assert custom((0.5, 0.0))[0, 0] == pytest.approx(1.0)  # offsets reach it in arcsec


def test_finite_difference_jacobian_for_a_psf_that_moves_more_than_the_star():
    """A model whose image moves by G @ offset (gain 4-6 with a cross term, like MIRI's 4QPM):
    from J = -I the secant needs many rounds; the measured Jacobian gets it in one."""
    gain = np.array([[4.0, 1.0], [-0.5, 6.0]])
    yy, xx = np.indices(SHAPE, dtype=float)

    def model(offset_yx_px):
        dy, dx = gain @ np.asarray(offset_yx_px, float)
        return np.exp(-((yy - CENTER[0] - dy) ** 2 + (xx - CENTER[1] - dx) ** 2) / (2 * 2.0**2))

    truth = np.array([0.11, -0.07])
    data = 1e4 * model(truth)[None]
    fd = measure_star_offset(data, model, iterations=2, fit_radius=RADIUS, robust=None,
                             jacobian_step=0.05)
    assert fd.combined_yx == pytest.approx(truth, abs=1e-4)
    assert fd.converged and fd.nmodel <= 3 + 3  # 3 for the Jacobian, <= 3 fit rounds
    plain = measure_star_offset(data, model, iterations=2, fit_radius=RADIUS, robust=None)
    assert np.max(np.abs(plain.combined_yx - truth)) > 10 * np.max(np.abs(fd.combined_yx - truth))
    with pytest.raises(ValueError, match="jacobian_step"):
        measure_star_offset(data, model, jacobian_step=0.0)
