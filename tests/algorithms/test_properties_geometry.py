"""Property tests (hypothesis) of shifting, registration, padding and NaN replacement.

Random shapes, NaN patterns and extreme but finite values; the invariants: no crash, no NaN
where the input had none (away from the edges a shift cannot fill), shifts compose, flux is
conserved, the inputs are never modified.  Example count: the ``ci`` profile of tests/conftest.py.
"""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from jwst_klipprep.algorithms.nans import replace_nans
from jwst_klipprep.algorithms.padding import pad_frames, parse_pad
from jwst_klipprep.algorithms.registration import measure_shift
from jwst_klipprep.algorithms.shift import (
    DEFAULT_ORDER,
    compose_shifts,
    shift_frames,
    shift_positions,
)

shapes = st.tuples(st.integers(1, 3), st.integers(8, 28), st.integers(8, 28))
scales = st.sampled_from([1e-6, 1.0, 1e3, 1e8])
subpixel = st.floats(-2.5, 2.5, allow_nan=False)


def cubes(nan_fraction=0.1):
    """Parameters (shape, seed, scale, NaN fraction) of a random cube; `make_cube` builds it.

    Drawing parameters rather than arrays keeps a failing example short to print.
    """
    return st.tuples(shapes, st.integers(0, 2**32 - 1), scales, st.floats(0, nan_fraction))


def make_cube(params):
    """A random float32 cube with a random NaN pattern and a random overall scale."""
    shape, seed, scale, frac = params
    rng = np.random.default_rng(seed)
    data = (rng.normal(0, 1, shape) * scale).astype(np.float32)
    data[rng.random(shape) < frac] = np.nan
    return data


def gaussian(shape, center_yx, sigma=2.0, amplitude=100.0):
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    return amplitude * np.exp(-((yy - center_yx[0]) ** 2 + (xx - center_yx[1]) ** 2)
                              / (2 * sigma**2))


# --------------------------------------------------------------------------------------------
# shift_frames


@given(cubes(), st.tuples(subpixel, subpixel), st.sampled_from(["sinc", "lanczos", "fourier"]))
def test_shift_no_crash_no_new_nan_inside_input_kept(params, shift, method):
    data = make_cube(params)
    before = data.copy()
    err = np.abs(np.nan_to_num(data)) + 1.0
    err_before = err.copy()
    out = shift_frames(data, shift, err=err, method=method)
    np.testing.assert_array_equal(data, before)  # inputs not modified
    np.testing.assert_array_equal(err, err_before)
    assert out.data.shape == data.shape and out.err.shape == data.shape
    assert out.data.dtype == data.dtype
    if not np.isnan(data).any():
        # far enough from every edge that the kernel sees only input pixels
        margin = DEFAULT_ORDER[method] + int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 1
        inner = out.data[:, margin:-margin, margin:-margin]
        assert np.all(np.isfinite(inner))
        assert np.all(np.isfinite(out.err[:, margin:-margin, margin:-margin]))


@given(cubes(nan_fraction=0.0), st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 3),
       st.integers(-3, 3))
def test_integer_shifts_are_exact_and_compose(params, a, b, c, d):
    data = make_cube(params)
    once = shift_frames(data, compose_shifts((a, b), (c, d))).data
    twice = shift_frames(shift_frames(data, (a, b)).data, (c, d)).data
    both = np.isfinite(once) & np.isfinite(twice)
    np.testing.assert_array_equal(once[both], twice[both])
    # the content moved by exactly (a + c, b + d)
    dy, dx = a + c, b + d
    ny, nx = data.shape[-2:]
    assume(abs(dy) < ny and abs(dx) < nx)
    src = data[:, max(0, -dy): ny - max(0, dy), max(0, -dx): nx - max(0, dx)]
    dst = once[:, max(0, dy): ny - max(0, -dy), max(0, dx): nx - max(0, -dx)]
    ok = np.isfinite(dst)
    np.testing.assert_array_equal(dst[ok], src[ok])


@given(st.tuples(subpixel, subpixel), st.tuples(subpixel, subpixel), st.floats(1.5, 3.0))
def test_subpixel_shifts_compose_and_conserve_flux(s1, s2, sigma):
    shape = (1, 48, 48)
    image = gaussian(shape, (23.7, 24.2), sigma=sigma)[None]
    once = shift_frames(image, compose_shifts(s1, s2)).data
    twice = shift_frames(shift_frames(image, s1).data, s2).data
    inner = (slice(None), slice(12, 36), slice(12, 36))
    np.testing.assert_allclose(twice[inner], once[inner], atol=2e-3 * image.max())
    # flux conserved and the centroid moved by the composed shift
    assert np.nansum(once) == np.float64(np.nansum(once))
    np.testing.assert_allclose(np.nansum(once), image.sum(), rtol=2e-3)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    w = np.nan_to_num(once[0])
    centroid = np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()
    expected = shift_positions((23.7, 24.2), compose_shifts(s1, s2))
    np.testing.assert_allclose(centroid, expected, atol=0.02)


# --------------------------------------------------------------------------------------------
# measure_shift


@given(st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5)), st.integers(0, 2**32 - 1),
       st.floats(0.0, 0.05), scales)
def test_registration_recovers_shift_whatever_the_scale(shift, seed, nan_fraction, scale):
    rng = np.random.default_rng(seed)
    shape = (40, 40)
    reference = gaussian(shape, (19.6, 20.3), sigma=2.5) * scale
    image = (gaussian(shape, (19.6 + shift[0], 20.3 + shift[1]), sigma=2.5) * scale)[None]
    noise = 0.01 * scale
    image = image + rng.normal(0, noise, image.shape)
    image[rng.random(image.shape) < nan_fraction] = np.nan
    err = np.full(image.shape, noise)
    ref_before, image_before = reference.copy(), image.copy()
    fit = measure_shift(reference, image, err=err)
    np.testing.assert_array_equal(reference, ref_before)
    np.testing.assert_array_equal(image, image_before)
    assert np.all(np.isfinite(fit.shift_yx)) and np.all(np.isfinite(fit.shift_err_yx))
    np.testing.assert_allclose(fit.shift_yx[0], shift, atol=0.02)
    np.testing.assert_allclose(fit.scale, 1.0, rtol=0.02)


# --------------------------------------------------------------------------------------------
# padding and NaN replacement


pads = st.one_of(st.integers(0, 12), st.tuples(*[st.integers(0, 12)] * 4))


@given(cubes(), pads, st.sampled_from([np.nan, 0.0, -1e30]))
def test_pad_then_crop_is_identity(params, npix, fill):
    data = make_cube(params)
    before = data.copy()
    pad = parse_pad(npix)
    left, right, bottom, top = pad
    out = pad_frames(data, pad, fill_value=fill)
    np.testing.assert_array_equal(data, before)
    ny, nx = data.shape[-2:]
    assert out.shape == (data.shape[0], ny + bottom + top, nx + left + right)
    assert out.dtype == data.dtype
    np.testing.assert_array_equal(out[:, bottom:bottom + ny, left:left + nx], data)
    border = np.ones(out.shape[-2:], bool)
    border[bottom:bottom + ny, left:left + nx] = False
    np.testing.assert_array_equal(out[:, border], np.float32(fill))


@given(pads)
def test_parse_pad_round_trip(npix):
    pad = parse_pad(npix)
    assert parse_pad(list(pad)) == pad
    assert all(isinstance(v, int) and v >= 0 for v in pad)


@given(cubes(nan_fraction=0.5), st.floats(-1e30, 1e30, allow_nan=False))
def test_replace_nans_leaves_no_nan_and_keeps_the_rest(params, fill):
    data = make_cube(params)
    data[0, 0, 0] = np.inf
    before = data.copy()
    out = replace_nans(data, fill_value=fill)
    np.testing.assert_array_equal(data, before)
    assert np.all(np.isfinite(out.data))
    np.testing.assert_array_equal(out.replaced, ~np.isfinite(before))
    np.testing.assert_array_equal(out.data[~out.replaced], before[~out.replaced])
    np.testing.assert_array_equal(out.data[out.replaced], np.float32(fill))
