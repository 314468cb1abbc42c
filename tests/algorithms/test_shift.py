"""Known-answer tests of jwst_klipprep.algorithms.shift."""

import numpy as np
import pytest
from scipy.special import j1

from jwst_klipprep.algorithms.shift import (
    DEFAULT_ORDER,
    METHODS,
    ShiftedFrames,
    compose_shifts,
    shift_frames,
    shift_positions,
)

DO_NOT_USE = 1


def airy(shape, center_yx, lam_d=2.24):
    """Sampled Airy pattern (band-limited: cutoff 1 / lam_d cycles per pixel), peak 1."""
    y, x = np.indices(shape, dtype=float)
    r = np.hypot(y - center_yx[0], x - center_yx[1]) * np.pi / lam_d
    r = np.where(r == 0, 1e-12, r)
    return (2 * j1(r) / r) ** 2


def gauss(shape, center_yx, sigma=2.0):
    y, x = np.indices(shape, dtype=float)
    return np.exp(-((y - center_yx[0]) ** 2 + (x - center_yx[1]) ** 2) / (2 * sigma**2))


INTERIOR = (slice(24, 72), slice(24, 72))


@pytest.mark.parametrize(
    ("method", "order", "tolerance"),
    [("sinc", None, 1e-3), ("sinc", 12, 6e-4), ("lanczos", 6, 3e-3), ("lanczos", 3, 1.5e-2),
     ("fourier", None, 1e-6)],
)
@pytest.mark.parametrize("shift_yx", [(0.3, -0.45), (-0.5, 0.5), (2.7, -5.2)])
def test_subpixel_shift_matches_analytic_psf(method, order, tolerance, shift_yx):
    shape, center = (96, 96), (47.2, 48.9)
    # Airy for the local kernels (a real F444W-like PSF), a smooth Gaussian for Fourier: the
    # Airy pattern's slowly decaying wings are cut by the frame edge, which a band-limited
    # shift cannot know about at the 1e-6 level.
    truth = airy if method != "fourier" else gauss
    image = truth(shape, center)
    expected = truth(shape, np.add(center, shift_yx))
    result = shift_frames(image, shift_yx, method=method, order=order)
    assert isinstance(result, ShiftedFrames)
    assert result.data.shape == shape
    error = np.abs(result.data[INTERIOR] - expected[INTERIOR]).max()
    assert error < tolerance


@pytest.mark.parametrize("method", METHODS)
def test_forth_and_back_returns_input(method):
    image = gauss((80, 80), (40.3, 39.6), sigma=2.0)
    there = shift_frames(image, (0.37, -1.61), method=method).data
    back = shift_frames(there, (-0.37, 1.61), method=method).data
    interior = (slice(16, 64), slice(16, 64))
    tolerance = 1e-6 if method == "fourier" else 1.5e-2 if method == "lanczos" else 5e-4
    assert np.abs(back[interior] - image[interior]).max() < tolerance
    # the border that went out of the frame is lost, not wrapped
    assert np.isnan(back[:, -2:]).all()


@pytest.mark.parametrize("method", METHODS)
def test_flux_conserved(method):
    image = gauss((64, 64), (31.7, 32.2), sigma=1.5) * 100
    out = shift_frames(image, (0.41, -0.27), method=method).data
    assert np.nansum(out) == pytest.approx(image.sum(), rel=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_integer_shift_is_exact(method):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 30, 40)).astype(np.float32)
    dq = rng.integers(0, 8, size=data.shape).astype(np.uint32)
    err = rng.uniform(1, 2, size=data.shape).astype(np.float32)
    out = shift_frames(data, (3, -5), dq=dq, err=err, method=method, lost_flag=1024)
    np.testing.assert_array_equal(out.data[:, 3:, :-5], data[:, :-3, 5:])
    np.testing.assert_array_equal(out.dq[:, 3:, :-5], dq[:, :-3, 5:])
    np.testing.assert_allclose(out.err[:, 3:, :-5], err[:, :-3, 5:], rtol=1e-6)
    assert out.data.dtype == np.float32
    # pixels that came from outside the frame
    assert np.isnan(out.data[:, :3]).all() and np.isnan(out.data[:, :, -5:]).all()
    assert out.lost[:, :3].all() and out.lost[:, :, -5:].all()
    assert (out.dq[:, :3] & 1024).all()
    assert out.lost.sum() == 2 * (30 * 40 - 27 * 35)


@pytest.mark.parametrize("method", METHODS)
def test_no_wrap_around(method):
    image = np.zeros((40, 40))
    image += gauss((40, 40), (20.0, 36.0), sigma=1.5) * 1000  # bright source near the +x edge
    out = shift_frames(image, (0.0, 6.3), method=method)
    # the source left through the +x edge: nothing of it reappears on the -x side
    assert np.isnan(out.data[:, :6]).all()
    # local kernels: exactly nothing; Fourier: only the ringing of the edge-truncated wing
    # (decaying as 1/r**2), far below the source
    ringing = 1e-3 if method == "fourier" else 1e-6
    assert np.nanmax(np.abs(out.data[:, :20])) < ringing * 1000
    assert np.nansum(out.data) < 0.1 * image.sum()


def test_x_and_y_not_swapped():
    image = gauss((48, 64), (20.0, 30.0), sigma=2.0)
    out = shift_frames(image, (0.0, 2.5)).data
    y, x = np.indices(image.shape)
    good = np.isfinite(out)
    total = out[good].sum()
    assert (out[good] * y[good]).sum() / total == pytest.approx(20.0, abs=1e-3)
    assert (out[good] * x[good]).sum() / total == pytest.approx(32.5, abs=1e-3)
    out = shift_frames(image, (-1.5, 0.0)).data
    good = np.isfinite(out)
    total = out[good].sum()
    assert (out[good] * y[good]).sum() / total == pytest.approx(18.5, abs=1e-3)
    assert (out[good] * x[good]).sum() / total == pytest.approx(30.0, abs=1e-3)
    assert shift_positions([20.0, 30.0], (-1.5, 0.0)).tolist() == [18.5, 30.0]


@pytest.mark.parametrize("method", METHODS)
def test_nan_does_not_spread_beyond_kernel_support(method):
    image = gauss((64, 64), (30.0, 30.0), sigma=6.0) + 1.0
    image[32, 20] = np.nan
    out = shift_frames(image, (0.5, 0.5), method=method)
    order = DEFAULT_ORDER[method]
    # lost pixels only next to where the NaN went (32.5, 20.5); the rest is finite
    assert np.isnan(out.data).sum() == out.lost.sum()
    interior = np.zeros(out.lost.shape, bool)
    interior[order:-order, order:-order] = True
    yy, xx = np.nonzero(out.lost & interior)
    assert 1 <= yy.size <= 4
    assert np.all(np.abs(yy - 32.5) <= 1) and np.all(np.abs(xx - 20.5) <= 1)
    # the neighbours are computed from valid inputs, with a bounded error
    truth = gauss((64, 64), (30.5, 30.5), sigma=6.0) + 1.0
    near = (slice(28, 38), slice(15, 26))
    assert np.nanmax(np.abs(out.data[near] - truth[near])) < 1e-2
    assert out.invalid_weight[32, 20] > 0.25 and out.invalid_weight[40, 40] == 0


def test_bad_mask_is_like_nan():
    rng = np.random.default_rng(1)
    data = rng.normal(10, 1, (2, 32, 32))
    bad = np.zeros((32, 32), bool)
    bad[10, 11] = bad[20, 5] = True
    with_nan = data.copy()
    with_nan[:, bad] = np.nan
    a = shift_frames(data, (0.3, 0.2), bad=bad)
    b = shift_frames(with_nan, (0.3, 0.2))
    np.testing.assert_array_equal(a.lost, b.lost)
    np.testing.assert_allclose(a.data, b.data, equal_nan=True)
    # the bad pixel's value (not NaN here) never reaches the output
    spiked = data.copy()
    spiked[:, bad] = 1e6
    c = shift_frames(spiked, (0.3, 0.2), bad=bad)
    np.testing.assert_allclose(c.data, a.data, equal_nan=True)


def test_lost_pixels_flagged_and_nan():
    data = np.ones((1, 20, 20))
    data[0, 0, :] = np.nan  # a NaN reference row, as in JWST calints
    dq = np.zeros(data.shape, np.uint32)
    out = shift_frames(data, (0.4, -0.6), dq=dq, lost_flag=DO_NOT_USE)
    assert out.lost.any()
    np.testing.assert_array_equal(np.isnan(out.data), out.lost)
    np.testing.assert_array_equal((out.dq & DO_NOT_USE) > 0, out.lost)
    # the NaN row and the frame edges are lost; the inside is a flat 1
    assert out.lost[0, 0].all() and out.lost[0, :, -1].all()
    np.testing.assert_allclose(out.data[~out.lost], 1.0, rtol=1e-6)


@pytest.mark.parametrize("method", ["sinc", "lanczos"])
def test_err_and_var_propagation_match_noise(method):
    rng = np.random.default_rng(2)
    sigma = 3.0
    data = rng.normal(0.0, sigma, (4, 200, 200))
    err = np.full(data.shape, sigma)
    var = {"var_rnoise": err**2, "var_poisson": 0.5 * err**2}
    out = shift_frames(data, (0.5, 0.25), err=err, var=var, method=method)
    inner = (slice(None), slice(20, -20), slice(20, -20))
    predicted = out.err[inner]
    # the formula: var_out = sum k**2 var, uniform here
    assert np.ptp(predicted) < 1e-6 * sigma
    measured = np.std(out.data[inner])
    assert measured == pytest.approx(predicted.mean(), rel=0.02)
    assert predicted.mean() < sigma  # interpolation averages the noise
    np.testing.assert_allclose(out.var["var_rnoise"][inner], predicted**2, rtol=1e-6)
    np.testing.assert_allclose(out.var["var_poisson"][inner], 0.5 * predicted**2, rtol=1e-6)
    assert set(out.var) == set(var)
    assert np.isnan(out.err[out.lost]).all() and np.isnan(out.var["var_rnoise"][out.lost]).all()


def test_dq_moves_with_content():
    data = np.zeros((1, 30, 30))
    dq = np.zeros(data.shape, np.uint32)
    dq[0, 10, 12] = 4
    out = shift_frames(data, (3, -2), dq=dq)
    assert out.dq[0, 13, 10] == 4 and np.count_nonzero(out.dq & 4) == 1
    # half a pixel in y: the flag goes to the two output pixels the input feeds most
    out = shift_frames(data, (0.5, 0.0), dq=dq)
    assert np.argwhere(out.dq[0] & 4).tolist() == [[10, 12], [11, 12]]
    # a small fractional shift: nearest pixel only
    out = shift_frames(data, (2.1, 0.0), dq=dq)
    assert np.argwhere(out.dq[0] & 4).tolist() == [[12, 12]]


def test_per_integration_shifts_and_2d_input():
    image = gauss((40, 40), (20.0, 20.0))
    cube = np.stack([image, image, image])
    shifts = np.array([[0.0, 0.0], [0.5, -1.2], [-2.25, 3.0]])
    out = shift_frames(cube, shifts)
    for i in range(3):
        single = shift_frames(image, shifts[i])
        assert single.data.shape == image.shape
        np.testing.assert_allclose(out.data[i], single.data, equal_nan=True)
        np.testing.assert_array_equal(out.lost[i], single.lost)


def test_inputs_not_mutated():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 16, 16))
    data[0, 3, 3] = np.nan
    err = np.abs(rng.normal(size=data.shape))
    dq = rng.integers(0, 4, size=data.shape).astype(np.uint32)
    var = {"var_flat": err**2}
    bad = np.zeros((16, 16), bool)
    bad[5, 5] = True
    copies = [a.copy() for a in (data, err, dq, var["var_flat"], bad)]
    for method in METHODS:
        shift_frames(data, (0.3, 1.7), err=err, dq=dq, var=var, bad=bad, method=method)
    for before, after in zip(copies, (data, err, dq, var["var_flat"], bad), strict=True):
        np.testing.assert_array_equal(before, after)


def test_invalid_arguments():
    data = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="unknown method 'spline'.*sinc, lanczos, fourier"):
        shift_frames(data, (0, 0), method="spline")
    with pytest.raises(ValueError, match="shift_yx must have shape"):
        shift_frames(data, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="order must be"):
        shift_frames(data, (0, 0), order=0)
    with pytest.raises(ValueError, match="err must have the shape"):
        shift_frames(data, (0, 0), err=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="finite"):
        shift_frames(data, (np.nan, 0))
    with pytest.raises(ValueError, match="max_invalid_weight"):
        shift_frames(data, (0, 0), max_invalid_weight=1.0)


def test_compose_shifts():
    total = compose_shifts((0.5, -1.0), np.array([[0.25, 0.25], [1.0, 2.0]]))
    np.testing.assert_allclose(total, [[0.75, -0.75], [1.5, 1.0]])
    np.testing.assert_allclose(compose_shifts((1, 2)), [1, 2])
    # one resampling by the composed shift == two successive shifts (interior, band-limited)
    image = gauss((64, 64), (32.0, 31.0), sigma=2.5)
    once = shift_frames(image, compose_shifts((0.3, -0.4), (0.45, 0.2))).data
    twice = shift_frames(shift_frames(image, (0.3, -0.4)).data, (0.45, 0.2)).data
    inner = (slice(16, 48), slice(16, 48))
    assert np.abs(once[inner] - twice[inner]).max() < 5e-4
