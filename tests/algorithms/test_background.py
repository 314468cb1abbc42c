"""Tests of jwst_klipprep.algorithms.background (arrays only, seeded, fast)."""

import numpy as np
import pytest
from astropy.stats import sigma_clip, sigma_clipped_stats

from jwst_klipprep.algorithms.background import (
    LEVEL_METHODS,
    assign_background_chunks,
    chunk_slices,
    combine_background,
    estimate_level,
    fit_background_scale,
    median_error_factor,
    select_background_pixels,
    subtract_combined_background,
)
from jwst_klipprep.algorithms.robust_stats import clipped_stats


def psf_scene(ny=160, nx=192, *, nints=40, sigma=1.0, seed=0, n_hot=30, bright=1.0,
              dtype=np.float64):
    """Bright coronagraphic-like PSF (leaking core + ring), a faint companion, hot pixels.

    Returns (data, pedestals, psf, hot) with data = psf + pedestal + N(0, sigma) + hot pixels.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    cy, cx = ny / 2 - 0.3, nx / 2 + 0.4
    r = np.hypot(yy - cy, xx - cx)
    psf = 3000.0 * np.exp(-0.5 * (r / 1.5) ** 2) + 60.0 * np.exp(-0.5 * ((r - 9.0) / 1.5) ** 2)
    psf += 15.0 * np.exp(-0.5 * ((yy - cy - 30) ** 2 + (xx - cx + 45) ** 2) / 1.5**2)
    psf *= bright
    ped = rng.uniform(-5, 5, nints)
    noise = rng.normal(0, sigma, (nints, ny, nx))
    hot = np.zeros((nints, ny, nx))
    for i in range(nints):
        hot[i, rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot)] = rng.uniform(20, 500, n_hot)
    data = psf + ped[:, None, None] + noise + hot
    return data.astype(dtype), ped, psf, hot


# ------------------------------------------------------------------------------- chunks


@pytest.mark.parametrize(
    ("nints", "n", "expected"),
    [
        (7, None, [(0, 7)]),
        (7, 3, [(0, 3), (3, 7)]),  # remainder merged into the last chunk
        (6, 3, [(0, 3), (3, 6)]),
        (8, 3, [(0, 3), (3, 8)]),
        (2, 5, [(0, 2)]),  # fewer integrations than a chunk
        (60, 25, [(0, 25), (25, 60)]),
        (10, 1, [(k, k + 1) for k in range(10)]),
    ],
)
def test_chunk_slices(nints, n, expected):
    got = chunk_slices(nints, nints_per_median=n)
    assert [(s.start, s.stop) for s in got] == expected


@pytest.mark.parametrize("nints", range(1, 30))
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_chunk_slices_cover_in_order(nints, n):
    got = chunk_slices(nints, nints_per_median=n)
    assert np.array_equal(np.concatenate([np.arange(nints)[s] for s in got]), np.arange(nints))
    sizes = [s.stop - s.start for s in got]
    assert all(size == n for size in sizes[:-1])
    assert (min(n, nints) <= sizes[-1] < 2 * n) or len(sizes) == 1


@pytest.mark.parametrize(("nints", "n"), [(0, None), (5, 0), (5, -2)])
def test_chunk_slices_invalid(nints, n):
    with pytest.raises(ValueError, match="must be >= 1"):
        chunk_slices(nints, nints_per_median=n)


def test_assign_chunks_index_and_single_chunk():
    idx = assign_background_chunks(7, 6, nints_per_median=3)
    assert idx.tolist() == [0, 0, 0, 1, 1, 1, 1]
    # One background chunk serves every integration, whatever the target length.
    assert assign_background_chunks(9, 4, nints_per_median=5).tolist() == [0] * 9
    assert assign_background_chunks(9, 60).tolist() == [0] * 9


def test_assign_chunks_mismatch_raises_with_advice():
    with pytest.raises(ValueError, match="mapping='proportional'"):
        assign_background_chunks(60, 30, nints_per_median=10)


def test_assign_chunks_proportional():
    # target 60 integrations, background 30 in 3 chunks of 10 -> 20 target ints per chunk
    idx = assign_background_chunks(60, 30, nints_per_median=10, mapping="proportional")
    assert idx.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    idx = assign_background_chunks(10, 60, nints_per_median=10, mapping="proportional")
    assert idx.tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 5, 5]  # floor((i + 0.5) * 6)


def test_assign_chunks_errors():
    with pytest.raises(ValueError, match="different numbers of chunks"):
        assign_background_chunks(6, [6, 3], nints_per_median=2)
    with pytest.raises(ValueError, match="mapping must be one of"):
        assign_background_chunks(6, 6, mapping="nearest")


# ------------------------------------------------------------------ combine_background


def _levels_stack(levels, ny=5, nx=6):
    return np.broadcast_to(np.asarray(levels, float)[:, None, None], (len(levels), ny, nx)).copy()


def test_combine_chunks_computed_per_stack():
    # Stack A: 6 ints in 3 chunks of 2; stack B: 7 ints, its last chunk holds 3 (remainder).
    a = _levels_stack([1, 1, 2, 2, 3, 3])
    b = _levels_stack([1, 1, 2, 2, 3, 3, 3])
    res = combine_background([a, b], nints_per_median=2, sigma=None)
    assert res.image.shape == (3, 5, 6)
    np.testing.assert_array_equal(res.image[:, 0, 0], [1, 2, 3])
    np.testing.assert_array_equal(res.nused[:, 0, 0], [4, 4, 5])
    assert [(s.start, s.stop) for s in res.slices[1]] == [(0, 2), (2, 4), (4, 7)]
    assert res.valid.all()


def test_combine_remainder_and_chunk_count_mismatch():
    res = combine_background(_levels_stack([5, 5, 5, 7, 7, 7, 7]), nints_per_median=3)
    np.testing.assert_array_equal(res.image[:, 2, 2], [5, 7])
    np.testing.assert_array_equal(res.nused[:, 2, 2], [3, 4])
    with pytest.raises(ValueError, match="different numbers of chunks"):
        combine_background([_levels_stack([1] * 6), _levels_stack([1] * 3)], nints_per_median=2)


def test_combine_excludes_bad_and_nan_and_flags_empty_pixels():
    rng = np.random.default_rng(1)
    data = 10 + rng.normal(0, 1, (9, 8, 8))
    bad = np.zeros(data.shape, bool)
    polluted = data.copy()
    polluted[:4, 3, 3] = 1e6  # flagged
    bad[:4, 3, 3] = True
    polluted[4, 3, 3] = np.nan
    polluted[:, 0, 0] = np.nan  # no valid input at all
    bad[:, 1, 1] = True
    ref = combine_background(data[4 + 1:, 3:4, 3:4], sigma=None)
    res = combine_background(polluted, bad=bad, sigma=None)
    assert res.nused[0, 3, 3] == 4
    assert res.image[0, 3, 3] == ref.image[0, 0, 0]
    for y, x in [(0, 0), (1, 1)]:
        assert not res.valid[0, y, x] and res.nused[0, y, x] == 0
        assert np.isnan(res.image[0, y, x]) and np.isnan(res.err[0, y, x])
    assert res.valid.sum() == 62


def test_combine_matches_astropy_sigma_clip():
    rng = np.random.default_rng(2)
    data = rng.normal(3.0, 1.0, (25, 12, 14))
    data[rng.random(data.shape) < 0.05] += 40  # cosmic rays
    for sigma, maxiters in [(3.0, 5), (2.0, 1), (2.5, None)]:
        res = combine_background(data, sigma=sigma, maxiters=maxiters)
        clipped = sigma_clip(data, sigma=sigma, maxiters=maxiters, axis=0, cenfunc="median",
                             stdfunc="std")
        np.testing.assert_allclose(res.image[0], np.ma.median(clipped, axis=0).filled(np.nan),
                                   rtol=0, atol=1e-12)
        np.testing.assert_array_equal(res.nused[0], clipped.count(axis=0))


def test_combine_sigma_and_maxiters_honoured():
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (30, 6, 6))
    data[0] += 50
    assert (combine_background(data, maxiters=0).nused == 30).all()
    assert (combine_background(data, sigma=None).nused == 30).all()
    clipped = combine_background(data, sigma=3.0)
    assert (clipped.nused <= 29).all()
    assert abs(np.mean(clipped.image)) < 0.15  # the +50 integration is gone
    assert np.mean(combine_background(data, sigma=None).image) > np.mean(clipped.image)


@pytest.mark.parametrize("nints", [3, 4, 5, 10, 15, 60])
@pytest.mark.parametrize("error_method", ["err", "scatter"])
def test_combine_error_of_median_is_calibrated(nints, error_method):
    # Each of 64x64 pixels is an independent Gaussian stack: compare the quoted error with the
    # actual scatter of the medians (1 % statistical precision).
    rng = np.random.default_rng(nints)
    sigma = 2.0
    data = 7.0 + rng.normal(0, sigma, (nints, 64, 64)).astype(np.float32)
    err = np.full_like(data, sigma)
    res = combine_background(data, err=err, error_method=error_method)
    ratio = np.std(res.image - 7.0) / np.mean(res.err)
    assert ratio == pytest.approx(1.0, abs=0.1)
    if nints >= 10:  # an error-of-the-mean formula would be ~20 % too small
        assert np.mean(res.err) > 1.12 * sigma / np.sqrt(nints)
    assert res.image.dtype == np.float32 and res.err.dtype == np.float32


def test_combine_error_methods_use_err_or_scatter():
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1.0, (40, 32, 32))
    err = np.full_like(data, 3.0)  # pessimistic ERR
    kw = {"err": err, "sigma": None}
    e_err = combine_background(data, **kw).err.mean()  # default: "err" when err given
    e_sc = combine_background(data, error_method="scatter", **kw).err.mean()
    e_max = combine_background(data, error_method="max", **kw).err.mean()
    assert e_err == pytest.approx(3.0 * median_error_factor(40) / np.sqrt(40), rel=1e-3)
    assert e_sc == pytest.approx(1.0 * median_error_factor(40) / np.sqrt(40), rel=0.05)
    assert e_max == pytest.approx(e_err)
    assert combine_background(data, sigma=None).err.mean() == pytest.approx(e_sc)  # no err
    with pytest.raises(ValueError, match="needs err"):
        combine_background(data, error_method="err")
    with pytest.raises(ValueError, match="error_method must be one of"):
        combine_background(data, err=err, error_method="mean")


def test_combine_input_validation():
    data = np.zeros((4, 5, 6))
    with pytest.raises(ValueError, match="frame shape"):
        combine_background([data, np.zeros((4, 5, 7))])
    with pytest.raises(ValueError, match="must match data"):
        combine_background(data, err=np.zeros((4, 5, 7)))
    with pytest.raises(TypeError, match="boolean"):
        combine_background(data, bad=np.zeros((4, 5, 6), int))
    with pytest.raises(ValueError, match="dimensions"):
        combine_background(np.zeros((5, 6)))


def test_median_error_factor():
    assert median_error_factor(1) == 1.0 and median_error_factor(2) == 1.0
    assert median_error_factor(10**7) == pytest.approx(np.sqrt(np.pi / 2), rel=1e-6)
    assert median_error_factor(5) == pytest.approx(1.1975, abs=0.01)  # Monte Carlo value
    assert median_error_factor(10) == pytest.approx(1.1764, abs=0.01)
    assert np.isnan(median_error_factor(0))


# ------------------------------------------------------------------------ subtraction


def test_background_levels_subtracted_exactly_and_err_grows():
    rng = np.random.default_rng(5)
    ny, nx = 20, 24
    structure = rng.normal(0, 1, (ny, nx))  # fixed pattern common to every exposure
    bkg_levels = np.repeat([10.0, 12.0, 15.0], 4)  # drifts per chunk of 4
    bkgs = [structure + bkg_levels[:, None, None] for _ in range(2)]
    berr = [np.full((12, ny, nx), 0.5) for _ in range(2)]
    comb = combine_background(bkgs, err=berr, nints_per_median=4)
    idx = assign_background_chunks(12, [12, 12], nints_per_median=4)
    sky = np.zeros((12, ny, nx))
    sky[:, 5, 5] = 100.0
    data = sky + structure + bkg_levels[:, None, None]
    err = np.full(data.shape, 0.3)
    out = subtract_combined_background(data, err, comb.image, comb.err, chunk_index=idx)
    np.testing.assert_allclose(out.data, sky, atol=1e-12)
    expected_var = (0.5 * median_error_factor(8) / np.sqrt(8)) ** 2
    np.testing.assert_allclose(out.var_added, expected_var)
    np.testing.assert_allclose(out.err**2, 0.3**2 + expected_var)
    assert (out.err > err).all() and not out.no_background.any()


def test_subtract_scale_offset_and_missing_background():
    data = np.full((3, 4, 5), 10.0)
    err = np.ones_like(data)
    bkg = np.full((4, 5), 2.0)
    bkg_err = np.full((4, 5), 0.5)
    bkg[1, 1] = np.nan
    out = subtract_combined_background(data, err, bkg, bkg_err, scale=[1.0, 2.0, 3.0],
                                       offset=[0.0, 1.0, -1.0])
    np.testing.assert_allclose(out.data[:, 0, 0], [8.0, 5.0, 5.0])
    np.testing.assert_allclose(out.var_added[:, 0, 0], [0.25, 1.0, 2.25])
    assert out.no_background[:, 1, 1].all() and out.no_background.sum() == 3
    assert np.isnan(out.data[:, 1, 1]).all() and np.isnan(out.err[:, 1, 1]).all()


def test_subtract_input_validation():
    data, err = np.zeros((3, 4, 5)), np.ones((3, 4, 5))
    with pytest.raises(ValueError, match="different subarray"):
        subtract_combined_background(data, err, np.zeros((4, 6)), np.zeros((4, 6)))
    with pytest.raises(ValueError, match="pass chunk_index"):
        subtract_combined_background(data, err, np.zeros((2, 4, 5)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="chunk_index must be"):
        subtract_combined_background(data, err, np.zeros((2, 4, 5)), np.zeros((2, 4, 5)),
                                     chunk_index=[0, 1, 2])


def test_background_functions_do_not_mutate_inputs():
    rng = np.random.default_rng(6)
    data = rng.normal(0, 1, (6, 10, 12)).astype(np.float32)
    data[0, 0, 0] = np.nan
    err = np.ones_like(data)
    bad = rng.random(data.shape) < 0.1
    copies = [a.copy() for a in (data, err, bad)]
    comb = combine_background(data, err=err, bad=bad, nints_per_median=3)
    img, img_err = comb.image.copy(), comb.err.copy()
    subtract_combined_background(data, err, comb.image, comb.err, chunk_index=[0] * 3 + [1] * 3)
    fit_background_scale(data, comb.image[0], good=~bad)
    select_background_pixels(data[0], bad=bad[0], background=comb.image[0])
    for method in LEVEL_METHODS:
        estimate_level(data, bad=bad, method=method)
    for a, c in zip((data, err, bad, comb.image, comb.err), (*copies, img, img_err),
                    strict=True):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------- scale fitting


def _structured_background(ny=64, nx=80):
    yy, xx = np.mgrid[:ny, :nx]
    glow = 20.0 * np.exp(-0.5 * ((xx - 0.6 * nx) / 4.0) ** 2)  # "glowstick"-like stripe
    return 50.0 + 0.2 * yy + glow


def test_fit_background_scale_recovers_injected_scale():
    rng = np.random.default_rng(7)
    b = _structured_background()
    scale = np.linspace(0.8, 1.3, 30)
    offset = np.linspace(-2, 2, 30)
    data = scale[:, None, None] * b + offset[:, None, None] + rng.normal(0, 1, (30, *b.shape))
    data[:, 10:20, 10:20] += 300.0  # a source that is not in the background
    good = np.ones(b.shape, bool)  # deliberately include the source: clipping must cope
    fit = fit_background_scale(data, b, good=good)
    assert np.all(np.abs(fit.scale - scale) < 4 * fit.scale_err)
    assert np.all(np.abs(fit.offset - offset) < 4 * fit.offset_err)
    assert np.std(fit.scale - scale) == pytest.approx(np.mean(fit.scale_err), rel=0.3)
    assert (fit.npix < b.size - 90).all()  # the source pixels were clipped
    assert fit.scale.shape == fit.npix.shape == (30,)


@pytest.mark.parametrize("fit_offset", [True, False])
def test_fit_background_scale_matches_least_squares_oracle(fit_offset):
    rng = np.random.default_rng(18)
    b = _structured_background(40, 50)
    data = 0.9 * b + 3.0 + rng.normal(0, 1, (3, *b.shape))
    good = rng.random(b.shape) > 0.3
    fit = fit_background_scale(data, b, good=good, fit_offset=fit_offset, sigma=None)
    for i in range(3):
        design = np.c_[b[good], np.ones(good.sum())] if fit_offset else b[good][:, None]
        coef, res, *_ = np.linalg.lstsq(design, data[i][good], rcond=None)
        cov = res[0] / (good.sum() - design.shape[1]) * np.linalg.inv(design.T @ design)
        assert fit.scale[i] == pytest.approx(coef[0], rel=1e-9)
        assert fit.scale_err[i] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-6)
        if fit_offset:
            assert fit.offset[i] == pytest.approx(coef[1], rel=1e-9)
            assert fit.offset_err[i] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-6)
        assert fit.npix[i] == good.sum()


def test_fit_background_scale_without_offset_and_degenerate():
    rng = np.random.default_rng(8)
    b = _structured_background()
    data = 1.1 * b + rng.normal(0, 1, (4, *b.shape))
    fit = fit_background_scale(data, b, good=np.ones(b.shape, bool), fit_offset=False)
    assert np.all(np.abs(fit.scale - 1.1) < 4 * fit.scale_err)
    assert np.all(fit.scale_err < 5e-4)
    assert (fit.offset == 0).all()
    flat = np.full(b.shape, 50.0)
    fit = fit_background_scale(data, flat, good=np.ones(b.shape, bool))
    assert np.isnan(fit.scale).all()
    with pytest.raises(TypeError, match="boolean"):
        fit_background_scale(data, b, good=np.ones(b.shape))


# -------------------------------------------------------------- background pixel masks


def test_select_background_pixels_excludes_sources_transmission_and_bad():
    data, _, psf, _ = psf_scene(nints=1, n_hot=0)
    img = data[0]
    trans = np.ones(img.shape)
    trans[:, :10] = 0.2  # e.g. the edge of the coronagraph substrate
    bad = np.zeros(img.shape, bool)
    bad[50, 50] = True
    good = select_background_pixels(img, transmission=trans, bad=bad)
    assert not good[psf > 1.0].any()  # PSF core, ring and companion excluded
    assert not good[:, :10].any() and not good[50, 50]
    far = np.zeros(img.shape, bool)
    far[5:30, 150:185] = True
    assert good[far].mean() > 0.95
    assert good.mean() > 0.7


def test_select_background_pixels_uses_background_structure():
    rng = np.random.default_rng(9)
    b = _structured_background() - 0.2 * np.arange(64)[:, None]  # no gradient
    img = 1.05 * b + rng.normal(0, 1, b.shape)
    img[30:34, 10:14] += 200.0
    stripe = np.abs(np.arange(b.shape[1]) - 0.6 * b.shape[1]) < 4
    without = select_background_pixels(img)
    with_bkg = select_background_pixels(img, background=b)
    assert without[:, stripe].mean() < 0.2  # the stripe looks like a source
    assert with_bkg[:, stripe].mean() > 0.9  # ... unless the background explains it
    assert not with_bkg[30:34, 10:14].any()


# ----------------------------------------------------------------- estimate_level


@pytest.mark.parametrize("method", LEVEL_METHODS)
def test_estimate_level_contract(method):
    data, ped, _, _ = psf_scene(80, 96, nints=3, dtype=np.float32)
    res = estimate_level(data, method=method, border_width=16)
    assert res.method == method
    for name in ("level", "error", "npix", "std"):
        assert getattr(res, name).shape == (3,)
    assert res.level.dtype == np.float64 and np.issubdtype(res.npix.dtype, np.integer)
    assert (res.error > 0).all() and (res.npix > 0).all()


@pytest.mark.parametrize("method", LEVEL_METHODS)
def test_estimate_level_ignores_bad_and_nan(method):
    data, _, _, _ = psf_scene(80, 96, nints=3, n_hot=0)
    rng = np.random.default_rng(10)
    bad = rng.random(data.shape) < 0.05
    bad[:, :, :3] = True  # a whole edge strip, in the border region
    flagged = np.where(bad, 1e5, data)
    as_nan = np.where(bad, np.nan, data)
    a = estimate_level(flagged, bad=bad, method=method, border_width=16)
    b = estimate_level(as_nan, method=method, border_width=16)
    np.testing.assert_array_equal(a.level, b.level)
    np.testing.assert_array_equal(a.npix, b.npix)
    assert np.all(np.abs(a.level - estimate_level(data, method=method, border_width=16).level)
                  < 0.1)


@pytest.mark.parametrize("method", LEVEL_METHODS)
def test_estimate_level_is_shift_equivariant(method):
    # Same noise, different pedestals: differences are recovered far better than
    # 0.1 * sigma / sqrt(npix).
    data, ped, _, _ = psf_scene(nints=4)
    shifted = data + np.array([0.0, 3.0, -7.5, 100.0])[:, None, None]
    a = estimate_level(data, method=method)
    b = estimate_level(shifted, method=method)
    np.testing.assert_allclose(b.level - a.level, [0.0, 3.0, -7.5, 100.0],
                               atol=1e-3 / np.sqrt(a.npix.min()))
    np.testing.assert_array_equal(a.npix, b.npix)


@pytest.mark.parametrize("method", ["masked", "border"])
def test_estimate_level_recovers_pedestals_with_bright_psf(method):
    # Bright PSF core + ring + companion + hot pixels in every frame.  The per-integration error
    # is sigma_level ~ 1.25 sigma / sqrt(npix); the mean over 40 integrations must be within
    # 0.6 sigma / sqrt(npix) (3x its standard error) and every frame within 4.5 sigma_level.
    data, ped, _, _ = psf_scene(nints=40, seed=11)
    res = estimate_level(data, method=method, border_width=24)
    z = (res.level - ped) * np.sqrt(res.npix)  # sigma = 1
    assert abs(z.mean()) < 0.6
    assert np.all(np.abs(res.level - ped) < 4.5 * res.error)
    if method == "masked":
        assert res.npix.mean() > 0.6 * data[0].size


def test_masked_rejects_faint_extended_emission():
    # A faint (2 sigma per pixel) extended blob cannot be clipped pixel by pixel: it biases the
    # whole-frame clipped median, but "masked" detects it after smoothing.
    data, ped, _, _ = psf_scene(nints=40, seed=12)
    yy, xx = np.mgrid[:160, :192]
    data += 2.0 * np.exp(-0.5 * ((yy - 40) ** 2 + (xx - 150) ** 2) / 8.0**2)
    masked = estimate_level(data, method="masked")
    clip = estimate_level(data, method="sigma_clip")
    se = np.mean(clip.error) / np.sqrt(40)
    assert np.mean(clip.level - ped) > 10 * se
    assert abs(np.mean(masked.level - ped)) < 0.3 * np.mean(clip.level - ped)


def test_border_is_a_border():
    # The prior art's axis bug made the "border" the whole frame (fraction 1.0).
    data = np.zeros((2, 320, 320))
    res = estimate_level(data, method="border", border_width=32, sigma=None)
    assert np.all(res.npix / (320 * 320) == pytest.approx(0.36))
    data[:, 32:-32, 32:-32] = 100.0  # interior must not matter
    assert np.all(estimate_level(data, method="border", border_width=32).level == 0.0)
    res16 = estimate_level(np.zeros((1, 100, 60)), method="border", border_width=16, sigma=None)
    assert res16.npix[0] == 100 * 60 - 68 * 28
    with pytest.raises(ValueError, match="border_width"):
        estimate_level(data, method="border", border_width=0)


@pytest.mark.parametrize(("sigma", "maxiters"), [(2.0, 1), (2.0, 5), (3.0, None), (1.5, 3)])
def test_sigma_clip_honours_sigma_and_maxiters(sigma, maxiters):
    rng = np.random.default_rng(13)
    data = rng.standard_t(3, (3, 40, 50))  # heavy tails: clipping changes the answer
    res = estimate_level(data, method="sigma_clip", sigma=sigma, maxiters=maxiters)
    for i in range(3):
        mean, median, std = sigma_clipped_stats(data[i], sigma=sigma, maxiters=maxiters)
        assert res.level[i] == pytest.approx(median, abs=1e-12)
        clipped = sigma_clip(data[i], sigma=sigma, maxiters=maxiters)
        assert res.npix[i] == clipped.count()


def test_sigma_and_maxiters_change_the_result():
    rng = np.random.default_rng(14)
    data = rng.standard_t(3, (2, 40, 50))
    n = [estimate_level(data, method="sigma_clip", sigma=s, maxiters=m).npix[0]
         for s, m in [(2.0, 1), (2.0, 10), (5.0, 10), (None, 10)]]
    assert n[0] > n[1] and n[2] > n[1] and n[3] == 2000


@pytest.mark.parametrize("method", LEVEL_METHODS)
def test_level_error_is_calibrated(method):
    rng = np.random.default_rng(15)
    data = 3.0 + rng.normal(0, 2.0, (400, 48, 64))
    res = estimate_level(data, method=method, border_width=8)
    assert np.std(res.level) / np.mean(res.error) == pytest.approx(1.0, abs=0.15)
    assert np.mean(res.std) == pytest.approx(2.0, rel=0.02)


def test_transmission_excludes_occulted_region():
    rng = np.random.default_rng(16)
    data = rng.normal(0, 1, (3, 60, 70))
    trans = np.ones((60, 70))
    trans[20:45, 20:50] = 0.1
    data[:, 20:45, 20:50] += 1.0  # smooth, faint: invisible to the source detection
    for method in LEVEL_METHODS:
        with_t = estimate_level(data, method=method, border_width=25, transmission=trans)
        assert np.all(np.abs(with_t.level) < 4 * with_t.error)
    without = estimate_level(data, method="sigma_clip")
    assert np.all(without.level > 0.1)


def test_estimate_level_errors_and_empty_frames():
    data = np.zeros((2, 10, 10))
    with pytest.raises(ValueError, match=r"valid methods are \('masked', 'border', 'sigma_clip'\)"):
        estimate_level(data, method="median")
    with pytest.raises(ValueError, match="3 dimensions"):
        estimate_level(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        estimate_level(data, sigma=0)
    data[1] = np.nan
    res = estimate_level(data, method="sigma_clip")
    assert res.npix.tolist() == [100, 0] and np.isnan(res.level[1]) and res.level[0] == 0


def test_clipped_stats_rows_independent():
    # The vectorised clipper must treat every row on its own (oracle: row by row).
    rng = np.random.default_rng(17)
    vals = rng.standard_t(2, (50, 31))
    vals[rng.random(vals.shape) < 0.1] = np.nan
    st = clipped_stats(vals, sigma=2.5, maxiters=None)
    for i in range(50):
        row = clipped_stats(vals[i:i + 1], sigma=2.5, maxiters=None)
        assert st.median[i] == row.median[0] and st.nused[i] == row.nused[0]
