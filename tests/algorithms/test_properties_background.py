"""Property tests (hypothesis) of background levels and combination, and of bad-pixel detection
and repair: random shapes, NaN patterns, flags and scales; no crash, no NaN where the input had
none, inputs never modified, known levels and defects recovered."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jwst_klipprep.algorithms.background import combine_background, estimate_level
from jwst_klipprep.algorithms.badpix import find_spatial, find_temporal, repair
from jwst_klipprep.validation import dead_integrations

shapes = st.tuples(st.integers(1, 4), st.integers(16, 40), st.integers(16, 40))
scales = st.sampled_from([1e-6, 1.0, 1e4, 1e8])


def noisy(max_nan=0.2):
    """Parameters of `make_noisy` (drawn as numbers, so a failing example prints short)."""
    return st.tuples(shapes, st.integers(0, 2**32 - 1), scales, st.floats(0, max_nan),
                     st.floats(0, max_nan))


def make_noisy(params):
    """(data, bad, level, noise): a constant level per integration plus noise, NaNs, flags."""
    shape, seed, scale, nan_fraction, bad_fraction = params
    rng = np.random.default_rng(seed)
    level = rng.uniform(-5, 5, shape[0]) * scale
    noise = 0.1 * scale
    data = (level[:, None, None] + rng.normal(0, noise, shape)).astype(np.float64)
    data[rng.random(data.shape) < nan_fraction] = np.nan
    bad = rng.random(data.shape) < bad_fraction
    return data, bad, level, noise


@pytest.mark.parametrize("method", ["masked", "border", "sigma_clip"])
@given(case=noisy())
def test_levels_recovered_at_any_scale(method, case):
    data, bad, level, noise = make_noisy(case)
    before, bad_before = data.copy(), bad.copy()
    est = estimate_level(data, bad=bad, method=method, border_width=4, transmission=None)
    np.testing.assert_array_equal(data, before)
    np.testing.assert_array_equal(bad, bad_before)
    assert est.level.shape == (data.shape[0],)
    usable = (np.isfinite(data) & ~bad).reshape(data.shape[0], -1).sum(axis=1)
    # every integration with a reasonable number of usable pixels gets a finite level
    ok = usable >= 50
    assert np.all(np.isfinite(est.level[ok])) and np.all(np.isfinite(est.error[ok]))
    tol = 6 * 1.26 * noise / np.sqrt(np.maximum(est.npix, 1)) + 1e-9 * np.abs(level)
    assert np.all(np.abs(est.level - level)[ok] <= tol[ok])
    assert np.all(est.npix <= usable)


@given(case=noisy(max_nan=0.05), offset=st.floats(-1e3, 1e3))
def test_level_moves_with_an_added_constant(case, offset):
    data, bad, _, noise = make_noisy(case)
    a = estimate_level(data, bad=bad, method="sigma_clip")
    b = estimate_level(data + offset, bad=bad, method="sigma_clip")
    ok = np.isfinite(a.level)
    atol = 1e-6 * (abs(offset) + 10 * noise + np.abs(a.level[ok]).max(initial=0.0))
    np.testing.assert_allclose(b.level[ok], a.level[ok] + offset, rtol=0, atol=atol)


@given(case=noisy(max_nan=0.3))
def test_combine_background_identical_frames_and_no_new_nan(case):
    data, bad, _, _ = make_noisy(case)
    frame = np.nan_to_num(data[0], nan=1.0)
    stack = np.repeat(frame[None], 3, axis=0)
    before = stack.copy()
    comb = combine_background(stack)
    np.testing.assert_array_equal(stack, before)
    np.testing.assert_allclose(comb.image[0], frame, rtol=1e-12, atol=1e-12 * np.abs(frame).max())
    assert np.all(np.isfinite(comb.image)) and np.all(comb.valid)
    # with NaNs and flags: NaN only where no integration was usable, never elsewhere
    comb = combine_background(data, bad=bad)
    usable = (np.isfinite(data) & ~bad).any(axis=0)
    np.testing.assert_array_equal(comb.valid[0], usable)
    assert np.all(np.isfinite(comb.image[0][usable]))


@given(case=noisy(max_nan=0.0))
def test_dead_integrations(case):
    data, bad, _, _ = make_noisy(case)
    data = data.copy()
    data[0] = np.nan
    dead = dead_integrations(data, bad)
    assert dead[0] and not dead[1:].any() if data.shape[0] > 1 else dead[0]


# --------------------------------------------------------------------------------------------
# bad pixels


def with_defects():
    """Parameters of `make_defects`."""
    return st.tuples(st.integers(3, 6), st.integers(16, 32), st.integers(16, 32),
                     st.integers(0, 2**32 - 1), scales, st.integers(0, 6))


def make_defects(params):
    """(data, err, truth_bad, sky): a smooth sky plus noise with 50-sigma hot/cold pixels."""
    nints, ny, nx, seed, scale, n = params
    rng = np.random.default_rng(seed)
    noise = 0.05 * scale
    yy, xx = np.mgrid[:ny, :nx]
    sky = scale * (1.0 + 0.01 * yy + 0.02 * xx)
    data = sky + rng.normal(0, noise, (nints, ny, nx))
    err = np.full(data.shape, noise)
    truth = np.zeros(data.shape, bool)
    # distinct, separated pixels, each bad in one integration (a pixel bad in most
    # integrations is not a temporal outlier)
    cells = rng.choice((ny // 4) * (nx // 4), size=min(n, (ny // 4) * (nx // 4)), replace=False)
    for cell in cells:
        i, y, x = rng.integers(nints), 4 * (cell // (nx // 4)) + 2, 4 * (cell % (nx // 4)) + 2
        data[i, y, x] += rng.choice([-1, 1]) * 50 * noise
        truth[i, y, x] = True
    return data, err, truth, sky


@given(case=with_defects())
def test_detection_finds_the_injected_defects_and_no_others(case):
    data, err, truth, _ = make_defects(case)
    before = data.copy()
    temporal = find_temporal(data, err=err, sigma=5.0)
    spatial = find_spatial(data, err=err, sigma=5.0)
    np.testing.assert_array_equal(data, before)
    for found in (temporal, spatial):
        assert found.shape == data.shape and found.dtype == bool
        # a 50-sigma defect is always found; false alarms at 5 sigma stay rare
        assert np.all(found[truth])
        assert (found & ~truth).sum() <= max(2, 1e-3 * data.size)


@pytest.mark.parametrize("method", ["temporal", "local", "interp"])
@given(case=with_defects())
def test_repair_changes_only_bad_pixels_and_leaves_no_nan(method, case):
    data, err, truth, sky = make_defects(case)
    data = data.copy()
    data[truth] = np.nan  # a repair must fill these, from donors
    before, err_before = data.copy(), err.copy()
    out = repair(data, truth, err=err, method=method)
    np.testing.assert_array_equal(data, before)
    np.testing.assert_array_equal(err, err_before)
    np.testing.assert_array_equal(out.data[~truth], before[~truth])
    assert not (out.repaired & ~truth).any()
    np.testing.assert_array_equal(out.repaired | out.remaining, truth)
    filled = out.repaired
    assert np.all(np.isfinite(out.data[filled]))
    assert np.all(np.isfinite(out.err[filled])) and np.all(out.err[filled] > 0)
    # the repaired value is close to the smooth truth (within a few noise sigma)
    noise = err.flat[0]
    assert np.all(np.abs(out.data[filled] - np.broadcast_to(sky, data.shape)[filled])
                  < 8 * noise)
