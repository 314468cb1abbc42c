"""Known-answer and calibration tests of jwst_klipprep.algorithms.registration."""

import numpy as np
import pytest
from scipy.special import j1

from jwst_klipprep.algorithms.registration import (
    ShiftFit,
    cross_correlation_shift,
    measure_shift,
)
from jwst_klipprep.algorithms.shift import shift_frames


def airy(shape, center_yx, lam_d=2.24):
    y, x = np.indices(shape, dtype=float)
    r = np.hypot(y - center_yx[0], x - center_yx[1]) * np.pi / lam_d
    r = np.where(r == 0, 1e-12, r)
    return (2 * j1(r) / r) ** 2


def scene(shape, shift_yx=(0.0, 0.0), *, seed=0, n_speckles=25):
    """Band-limited coronagraph-like scene: an attenuated core and a speckle halo (sums of
    F444W-like Airy patterns), evaluated analytically at the shifted positions."""
    rng = np.random.default_rng(seed)
    center = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2]) + np.asarray(shift_yx)
    image = 40 * airy(shape, center) + 0.05
    radius = rng.uniform(2.0, 0.3 * min(shape), n_speckles)
    angle = rng.uniform(0, 2 * np.pi, n_speckles)
    amplitude = rng.uniform(2, 20, n_speckles)
    for r, a, amp in zip(radius, angle, amplitude, strict=True):
        image += amp * airy(shape, center + r * np.array([np.sin(a), np.cos(a)]))
    return image


def transmission(shape, width=4.0):
    """Round-mask-like transmission, centred on the frame (static)."""
    y, x = np.indices(shape, dtype=float)
    r2 = (y - (shape[0] - 1) / 2) ** 2 + (x - (shape[1] - 1) / 2) ** 2
    return 1 - 0.999 * np.exp(-r2 / (2 * width**2))


def noisy(clean, rng, read=0.05, gain=0.002):
    """Add Gaussian noise with ``err**2 = read**2 + gain * signal``; default peak SNR ~250 on
    ``4 * scene`` (the real AU Mic frames have 250-800)."""
    err = np.sqrt(read**2 + gain * np.abs(clean))
    return clean + rng.normal(size=clean.shape) * err, err


def test_recovers_injected_shifts_with_nan_edges_and_flags():
    rng = np.random.default_rng(10)
    shape = (80, 80)
    truths = np.array([[0.3, -0.45], [-0.13, 0.77], [2.6, -3.4], [0.0, 0.0], [-4.45, 1.05]])
    reference = 4 * scene(shape)
    reference[0], reference[:, 0] = np.nan, np.nan
    reference_bad = rng.random(shape) < 0.005
    frames, errs = zip(*(noisy(4 * scene(shape, t), rng) for t in truths), strict=True)
    image, err = np.array(frames), np.array(errs)
    image[:, 0], image[:, :, 0] = np.nan, np.nan
    bad = rng.random(image.shape) < 0.005
    image[bad] = 1e4  # flagged garbage must not matter
    fit = measure_shift(reference, image, err=err, bad=bad, reference_bad=reference_bad,
                        weights=transmission(shape))
    assert isinstance(fit, ShiftFit)
    assert fit.shift_yx.shape == (5, 2) and fit.converged.all()
    error = np.abs(fit.shift_yx - truths)
    assert error.max() <= 0.005
    assert (error <= 5 * fit.shift_err_yx).all()
    assert np.all(fit.shift_err_yx < 0.0015)
    np.testing.assert_allclose(fit.scale, 1.0, atol=0.01)


@pytest.mark.parametrize("with_err", [True, False])
def test_uncertainties_are_calibrated(with_err):
    rng = np.random.default_rng(20 + with_err)
    shape, nints = (40, 40), 150
    truths = rng.uniform(-0.6, 0.6, (nints, 2))
    clean = np.array([scene(shape, t, n_speckles=10) for t in truths])
    image, err = noisy(clean, rng, read=0.3, gain=0.05)
    fit = measure_shift(scene(shape, n_speckles=10), image, err=err if with_err else None,
                        guess_yx=(0.0, 0.0))
    pull = (fit.shift_yx - truths) / fit.shift_err_yx
    assert np.abs(pull.mean()) < 0.2
    assert 0.8 < pull.std() < 1.2
    if with_err:
        assert fit.chi2_red.mean() == pytest.approx(1.0, abs=0.05)
    else:  # the chi-square then measures the noise level relative to unit weights
        assert np.sqrt(fit.chi2_red.mean()) == pytest.approx(np.mean(err), rel=0.3)


def test_uncertainties_with_a_noisy_reference_are_calibrated():
    # a noisy reference (e.g. the first science integration) adds its own noise: reference_err
    # accounts for it. Each trial needs its own reference noise to be independent.
    rng = np.random.default_rng(30)
    shape, trials = (40, 40), 100
    truths = rng.uniform(-0.6, 0.6, (trials, 2))
    clean_reference = scene(shape, n_speckles=10)
    pulls, chi2 = [], []
    for truth in truths:
        reference, reference_err = noisy(clean_reference, rng, read=0.3, gain=0.05)
        image, err = noisy(scene(shape, truth, n_speckles=10), rng, read=0.3, gain=0.05)
        fit = measure_shift(reference, image, err=err, reference_err=reference_err,
                            guess_yx=(0.0, 0.0))
        pulls.append((fit.shift_yx[0] - truth) / fit.shift_err_yx[0])
        chi2.append(fit.chi2_red[0])
    pulls = np.array(pulls)
    assert np.abs(pulls.mean()) < 0.2
    assert 0.8 < pulls.std() < 1.2
    assert np.mean(chi2) == pytest.approx(1.0, abs=0.1)


def test_cross_correlation_shift():
    shape = (64, 64)
    reference = scene(shape)
    truths = np.array([[5.4, -7.25], [0.0, 0.0], [-3.0, 2.0], [0.33, 0.66]])
    image = np.array([scene(shape, t) for t in truths])
    image[:, :2] = np.nan  # NaN-aware
    found = cross_correlation_shift(reference, image, upsample=20)
    assert found.shape == (4, 2)
    assert np.abs(found - truths).max() <= 0.05 + 1e-9


def test_multi_pixel_shift_without_guess():
    rng = np.random.default_rng(3)
    shape = (72, 72)
    truth = np.array([6.3, -4.7])
    image, err = noisy(4 * scene(shape, truth), rng)
    fit = measure_shift(4 * scene(shape), image, err=err)
    assert np.abs(fit.shift_yx[0] - truth).max() < 0.005
    # and from a commanded offset instead of the cross-correlation
    fit2 = measure_shift(4 * scene(shape), image, err=err, guess_yx=truth + 0.2)
    np.testing.assert_allclose(fit2.shift_yx, fit.shift_yx, atol=1e-4)


def test_x_and_y_not_swapped():
    shape = (64, 64)
    fit = measure_shift(scene(shape), scene(shape, (0.0, 1.3)))
    assert fit.shift_yx[0, 1] == pytest.approx(1.3, abs=2e-3)
    assert fit.shift_yx[0, 0] == pytest.approx(0.0, abs=2e-3)


def test_scale_and_offset():
    shape = (64, 64)
    image = 2.5 * scene(shape, (0.2, -0.1)) + 3.0
    fit = measure_shift(scene(shape), image, fit_offset=True)
    assert fit.scale[0] == pytest.approx(2.5, rel=1e-3)
    assert fit.offset[0] == pytest.approx(3.0, abs=1e-2)
    np.testing.assert_allclose(fit.shift_yx[0], [0.2, -0.1], atol=2e-3)
    fixed = measure_shift(scene(shape), scene(shape, (0.2, -0.1)), fit_scale=False)
    assert fixed.scale[0] == 1.0 and fixed.scale_err[0] == 0.0
    np.testing.assert_allclose(fixed.shift_yx[0], [0.2, -0.1], atol=2e-3)


def test_robust_to_unflagged_outliers():
    rng = np.random.default_rng(4)
    shape = (64, 64)
    truth = np.array([0.37, -0.21])
    image, err = noisy(scene(shape, truth), rng)
    hits = rng.integers(20, 44, size=(15, 2))
    image[hits[:, 0], hits[:, 1]] += 200 * err[hits[:, 0], hits[:, 1]]  # cosmic rays near the star
    robust = measure_shift(scene(shape), image, err=err, robust="huber")
    tukey = measure_shift(scene(shape), image, err=err, robust="tukey")
    plain = measure_shift(scene(shape), image, err=err, robust=None)
    error_robust = np.abs(robust.shift_yx[0] - truth).max()
    assert error_robust < 0.005
    assert np.abs(tukey.shift_yx[0] - truth).max() < 0.005
    assert error_robust < np.abs(plain.shift_yx[0] - truth).max()


def test_resampled_err_with_ringing_is_harmless():
    # ERR maps shifted by another tool have values near 0 or negative (Fourier ringing)
    rng = np.random.default_rng(8)
    shape = (64, 64)
    truth = np.array([0.21, -0.33])
    image, err = noisy(4 * scene(shape, truth), rng)
    err[10, 10], image[10, 10] = 1e-6, image[10, 10] + 0.5
    err[40, 20] = -0.01
    fit = measure_shift(4 * scene(shape), image, err=err)
    assert np.abs(fit.shift_yx[0] - truth).max() < 0.005
    assert fit.npix[0] < 64 * 64  # the negative ERR pixel is excluded
    with pytest.raises(ValueError, match="err_floor"):
        measure_shift(4 * scene(shape), image, err=err, err_floor="median")


def test_robust_weights_do_not_bias_clean_data():
    # on Gaussian noise without outliers the robust fit must agree with plain least squares
    rng = np.random.default_rng(9)
    shape = (64, 64)
    truths = rng.uniform(-2, 2, (6, 2))
    image, err = noisy(np.array([40 * scene(shape, t) for t in truths]), rng)
    plain = measure_shift(40 * scene(shape), image, err=err, robust=None, guess_yx=truths)
    for robust in ("huber", "tukey"):
        fit = measure_shift(40 * scene(shape), image, err=err, robust=robust, guess_yx=truths)
        assert np.abs(fit.shift_yx - plain.shift_yx).max() < 0.3 * plain.shift_err_yx.min()


def test_zero_weight_pixels_are_ignored():
    rng = np.random.default_rng(5)
    shape = (64, 64)
    image, err = noisy(scene(shape, (0.4, 0.1)), rng)
    weights = np.ones(shape)
    weights[:, :10] = 0.0
    weights[3, 3] = np.nan  # NaN weights count as 0
    fit = measure_shift(scene(shape), image, err=err, weights=weights)
    spoiled = image.copy()
    spoiled[:, :10] = 1e6
    fit_spoiled = measure_shift(scene(shape), spoiled, err=err, weights=weights)
    np.testing.assert_allclose(fit_spoiled.shift_yx, fit.shift_yx, atol=1e-9)


def test_consistent_with_shift_frames():
    shape = (64, 64)
    reference = scene(shape)
    image = 1.7 * scene(shape, (1.42, -0.61))
    fit = measure_shift(reference, image)
    aligned = shift_frames(image, -fit.shift_yx[0]).data / fit.scale[0]
    good = np.isfinite(aligned)
    assert np.abs(aligned[good] - reference[good]).max() < 2e-3 * reference.max()


def test_centring_a_star_with_a_model_psf():
    # the use of recenter_frames: reference = model PSF of a star at the mask centre
    shape = (64, 64)
    rng = np.random.default_rng(6)
    offset = np.array([0.42, -0.28])  # star position minus mask centre, px
    model = scene(shape, n_speckles=0)
    data, err = noisy(100 * scene(shape, offset, n_speckles=0), rng)
    fit = measure_shift(model, data, err=err, weights=transmission(shape), guess_yx=(0.0, 0.0))
    np.testing.assert_allclose(fit.shift_yx[0], offset, atol=3e-3)
    assert fit.scale[0] == pytest.approx(100, rel=5 * fit.scale_err[0] / 100)


def test_inputs_not_mutated():
    rng = np.random.default_rng(7)
    shape = (40, 40)
    reference = scene(shape)
    reference[5, 5] = np.nan
    image, err = noisy(np.array([scene(shape, (0.2, 0.3))] * 2), rng)
    image[0, 1, 1] = np.nan
    bad = np.zeros(shape, bool)
    bad[9, 9] = True
    weights = transmission(shape)
    arrays = (reference, image, err, bad, weights)
    copies = [a.copy() for a in arrays]
    measure_shift(reference, image, err=err, bad=bad, weights=weights, reference_err=err[0])
    cross_correlation_shift(reference, image, weights=weights, bad=bad)
    for before, after in zip(copies, arrays, strict=True):
        np.testing.assert_array_equal(before, after)


def test_empty_integration_gives_nan_not_an_error():
    shape = (40, 40)
    image = np.array([scene(shape, (0.1, 0.1)), np.full(shape, np.nan)])
    fit = measure_shift(scene(shape), image, guess_yx=(0.0, 0.0))
    assert fit.converged.tolist() == [True, False]
    assert np.isnan(fit.shift_yx[1]).all() and np.isfinite(fit.shift_yx[0]).all()
    assert fit.npix[1] == 0


def test_2d_image_gives_one_row():
    fit = measure_shift(scene((40, 40)), scene((40, 40), (0.1, 0.0)))
    assert fit.shift_yx.shape == (1, 2) and fit.scale.shape == (1,)


def test_invalid_arguments():
    reference, image = scene((32, 32)), scene((32, 32))
    with pytest.raises(ValueError, match="unknown robust 'cauchy'"):
        measure_shift(reference, image, robust="cauchy")
    with pytest.raises(ValueError, match="local kernel"):
        measure_shift(reference, image, method="fourier")
    with pytest.raises(ValueError, match="unknown method"):
        measure_shift(reference, image, method="cubic")
    with pytest.raises(ValueError, match="reference must have the frame shape"):
        measure_shift(reference[:30], image)
    with pytest.raises(ValueError, match="guess_yx"):
        measure_shift(reference, image, guess_yx=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="err must have shape"):
        measure_shift(reference, image, err=np.ones((3, 3)))
    with pytest.raises(ValueError, match="reference_err needs err"):
        measure_shift(reference, image, reference_err=np.ones((32, 32)))
    with pytest.raises(ValueError, match="upsample"):
        cross_correlation_shift(reference, image, upsample=0)
    with pytest.raises(ValueError, match="weights_frame"):
        measure_shift(reference, image, weights_frame="sky")
    with pytest.raises(ValueError, match="smooth_err"):
        measure_shift(reference, image, smooth_err=4)


def _gaussians(shape, shift_yx, width, bump):
    """A Gaussian core (+ an off-centre bump) evaluated analytically at the shifted position."""
    y, x = np.indices(shape, dtype=float)
    y = y - 31.2 - shift_yx[0]
    x = x - 32.1 - shift_yx[1]
    image = 1000 * np.exp(-(y**2 + x**2) / (2 * width**2))
    if bump:
        image += 150 * np.exp(-((y - 3) ** 2 + (x + 4) ** 2) / 4.0)
    return image


def test_weights_attached_to_the_reference_make_the_shift_covariant():
    """Two different PSFs (width 2.0 vs 2.3 px plus a bump) under a steep, mask-like weight map:
    with weights on the detector, moving the image by 1.3 px changes the "best" shift by
    0.034 px; weights that follow the reference content give the same answer (to 0.0015 px)."""
    shape = (64, 64)
    y, x = np.indices(shape, dtype=float)
    r = np.hypot(y - 31.2, x - 32.1)
    weights = (1 - np.exp(-r**2 / 8.0)) * (r < 12)
    reference = _gaussians(shape, (0, 0), 2.0, False)
    move = np.array([1.3, -0.7])
    errors = {}
    for frame in ("image", "reference"):
        at_rest, moved = (
            measure_shift(reference, _gaussians(shape, s, 2.3, True), weights=weights,
                          weights_frame=frame, robust=None).shift_yx[0]
            for s in ((0.0, 0.0), move))
        errors[frame] = np.hypot(*(moved - move - at_rest))
    assert errors["image"] > 0.02
    assert errors["reference"] < 0.003


def test_smoothed_err_keeps_a_uniform_noise_level_exact():
    """A local mean of ERR^2 changes nothing where ERR is uniform (including next to NaN)."""
    rng = np.random.default_rng(3)
    clean = 4 * scene((48, 48))
    image, _ = noisy(clean, rng)
    err = np.full(clean.shape, 0.2)
    err[10:13, 20:22] = np.nan
    plain = measure_shift(clean, image, err=err, robust=None)
    smooth = measure_shift(clean, image, err=err, robust=None, smooth_err=5)
    np.testing.assert_allclose(smooth.shift_yx, plain.shift_yx, atol=1e-9)
    np.testing.assert_allclose(smooth.shift_err_yx, plain.shift_err_yx, rtol=1e-6)
