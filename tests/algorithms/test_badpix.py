"""Tests of jwst_klipprep.algorithms.badpix on synthetic coronagraphic cubes."""

import logging

import numpy as np
import pytest
from scipy import special

from jwst_klipprep.algorithms import badpix

READ, GAIN = 0.2, 0.0025  # ERR^2 = READ^2 + GAIN * signal


def airy(yy, xx, cy, cx, lam_over_d=2.8, oversample=4):
    """Pixel-integrated Airy pattern of peak ~1 centred on (cy, cx)."""
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    out = np.zeros(np.broadcast(yy, xx).shape)
    for dy in sub:
        for dx in sub:
            r = np.hypot(yy + dy - cy, xx + dx - cx) * np.pi / lam_over_d
            r = np.where(r == 0, 1e-9, r)
            out += (2 * special.j1(r) / r) ** 2
    return out / oversample**2


def coronagraph(size, seed=0, lam_over_d=2.8, oversample=2):
    """Band-limited coronagraph-like PSF (peak-normalised to the off-axis PSF) and off-axis PSF:
    circular pupil with random phase aberrations, pupil-mean field removed to 99.5 %
    (the starlight a perfect coronagraph takes away), 2x oversampled then binned."""
    rng = np.random.default_rng(seed)
    n = size * oversample
    yy, xx = np.mgrid[:n, :n] - n // 2
    pupil = np.hypot(yy, xx) < n / (lam_over_d * oversample) / 2
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    freq[0, 0] = 1.0
    phase = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * freq**-1.4).real
    field = pupil * np.exp(1j * 0.08 * phase / phase[pupil].std())

    def image(f):
        img = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(f)))) ** 2
        return img.reshape(size, oversample, size, oversample).sum(axis=(1, 3))

    off = image(field)
    return image(field - 0.995 * pupil * field[pupil].mean()) / off.max(), off / off.max()


def fourier_shift(img, dy, dx):
    ky, kx = np.fft.fftfreq(img.shape[0])[:, None], np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real


def scene(nints=12, size=72, seed=0, jitter=0.02):
    """Noiseless truth, ERR, star and companion positions of a coronagraph-like cube: speckles
    up to ~800 ERR around the star, a companion of ~300 ERR, a background, each integration
    shifted by a small pointing jitter (0.02 px rms)."""
    rng = np.random.default_rng(seed)
    coron, off = coronagraph(size, seed)
    star = (size // 2, size // 2)
    comp = (star[0] + 14, star[1] - 11)
    base = 2.5e5 * coron + 150.0 * fourier_shift(off, comp[0] - star[0], comp[1] - star[1]) + 0.5
    truth = np.array([fourier_shift(base, *rng.normal(scale=jitter, size=2)) for _ in range(nints)])
    err = np.sqrt(READ**2 + GAIN * np.maximum(truth, 0))
    return truth.astype(np.float32), err.astype(np.float32), star, comp


def noisy(truth, err, seed=1):
    rng = np.random.default_rng(seed)
    return (truth + err * rng.normal(size=truth.shape)).astype(np.float32)


def isolated_positions(shape, n, rng, margin=3, avoid=()):
    """n pixel positions (y, x) at least 5 px apart and from the ``avoid`` points."""
    out = []
    while len(out) < n:
        y, x = rng.integers(margin, shape[0] - margin), rng.integers(margin, shape[1] - margin)
        if all(max(abs(y - a), abs(x - b)) >= 5 for a, b in out + list(avoid)):
            out.append((int(y), int(x)))
    return out


def radius(shape, center):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - center[0], xx - center[1])


@pytest.fixture(scope="module")
def cube():
    truth, err, star, comp = scene()
    return truth, err, noisy(truth, err), star, comp


# ----------------------------------------------------------------------------- find_dq etc.
def test_find_dq_bits_and_ignore():
    dq = np.array([[[0, 1, 512, 513, 4, 5]]], dtype=np.uint32)
    np.testing.assert_array_equal(
        badpix.find_dq(dq, bad_bits=1, ignore_bits=512), [[[0, 1, 0, 0, 0, 1]]]
    )
    np.testing.assert_array_equal(badpix.find_dq(dq, bad_bits=1 | 4), [[[0, 1, 0, 1, 1, 1]]])
    assert not badpix.find_dq(dq, bad_bits=0).any()
    with pytest.raises(TypeError, match="integer"):
        badpix.find_dq(dq.astype(float), bad_bits=1)


def test_find_nonfinite_respects_ignore():
    data = np.array([[[1.0, np.nan, np.inf, np.nan]]])
    ignore = np.array([[[False, False, False, True]]])
    np.testing.assert_array_equal(badpix.find_nonfinite(data, ignore=ignore), [[[0, 1, 1, 0]]])


def test_find_custom_masks_and_pixels():
    shape = (3, 5, 6)
    mask2 = np.zeros((5, 6), bool)
    mask2[1, 2] = True
    found = badpix.find_custom(shape, mask=mask2, pixels=[(4, 5), (2, 0, 0)])
    assert found.shape == shape
    assert found[:, 1, 2].all() and found[:, 4, 5].all()
    assert found[2, 0, 0] and not found[:2, 0, 0].any()
    assert found.sum() == 3 + 3 + 1
    mask3 = np.zeros(shape, int)
    mask3[1, 3, 3] = 7
    assert badpix.find_custom(shape, mask=mask3).sum() == 1
    with pytest.raises(ValueError, match="outside"):
        badpix.find_custom(shape, pixels=[(5, 0)])
    with pytest.raises(ValueError, match="shape"):
        badpix.find_custom(shape, mask=np.zeros((4, 6)))


# ----------------------------------------------------------------------------- temporal
def test_find_temporal_finds_transients_not_the_psf(cube):
    truth, err, data, star, comp = cube
    rng = np.random.default_rng(3)
    data = data.copy()
    hits = np.zeros(data.shape, bool)
    for amp in (10, 30, 100, 1000):
        for y, x in isolated_positions(data.shape[1:], 10, rng):
            k = rng.integers(data.shape[0])
            data[k, y, x] += amp * err[k, y, x] * rng.choice([-1, 1])
            hits[k, y, x] = True
    found = badpix.find_temporal(data, err=err)
    assert found[hits].all()
    clean = ~hits
    assert found[clean].mean() < 1e-3
    core = radius(data.shape[1:], star) <= 8
    assert not (found & clean)[:, core].any()  # the jittered bright ring is not an outlier


def test_find_temporal_silent_when_too_few_integrations(cube, caplog):
    truth, err, data, *_ = cube
    bad_int = data[:2].copy()
    bad_int[0, 5, 5] += 1e4
    with caplog.at_level(logging.INFO, logger="jwst_klipprep.algorithms"):
        found = badpix.find_temporal(bad_int, err=err[:2])
    assert not found.any()
    assert "skipped" in caplog.text
    # without ERR the MAD needs at least 5 integrations
    assert not badpix.find_temporal(data[:4], min_nints=3).any()
    four = data[:5].copy()
    four[2, 5, 5] += 1e4
    assert badpix.find_temporal(four)[2, 5, 5]


def test_find_temporal_ignores_known_bad(cube):
    truth, err, data, *_ = cube
    data = data.copy()
    data[3, 10, 10] = 1e6
    bad = np.zeros(data.shape, bool)
    bad[3, 10, 10] = True
    assert not badpix.find_temporal(data, err=err, bad=bad).any()


# ----------------------------------------------------------------------------- spatial
def inject_static(truth, data, err, rng, amps=(10, 30, 100, 1000), keep_off=None):
    """Static hot and cold pixels (3 of each sign and amplitude in ERR units) where the defect
    stands out of the local PSF structure: the 3x3 range of the truth is below half of it.
    ``keep_off``: 2-D mask of known bad pixels to stay 2 px away from (a pixel next to a bad
    column has only its 2 vertical neighbours left and is tested with a wide tolerance)."""
    data = data.copy()
    where = {}
    taken = []
    for amp in amps:
        for sign in (1, -1):
            placed = 0
            while placed < 3:
                y, x = (int(i) for i in rng.integers(3, np.array(data.shape[1:]) - 3))
                patch = truth[0, y - 1:y + 2, x - 1:x + 2]
                if np.ptp(patch) > 0.5 * amp * err[0, y, x]:
                    continue
                if any(max(abs(y - a), abs(x - b)) < 5 for a, b in taken):
                    continue
                if keep_off is not None and keep_off[y - 2:y + 3, x - 2:x + 3].any():
                    continue
                taken.append((y, x))
                data[:, y, x] += sign * amp * err[:, y, x]
                where[(y, x)] = sign * amp
                placed += 1
    return data, where


def test_find_spatial_recall_and_false_flags(cube):
    truth, err, data, star, comp = cube
    rng = np.random.default_rng(5)
    data, where = inject_static(truth, data, err, rng)
    found = badpix.find_spatial(data, err=err)
    defect = np.zeros(data.shape, bool)
    for y, x in where:
        defect[:, y, x] = True
    assert found[defect].all()
    assert found[~defect].mean() < 1e-3
    near = (radius(data.shape[1:], star) <= 8) | (radius(data.shape[1:], comp) <= 3)
    assert not found[:, near].any()  # no flag on the bright ring nor the companion


def test_find_spatial_per_integration_transients(cube):
    truth, err, data, star, comp = cube
    data = data.copy()
    data[4, 40, 12] += 20 * err[4, 40, 12]
    data[7, 55, 50] -= 20 * err[7, 55, 50]
    found = badpix.find_spatial(data, err=err)
    assert found[4, 40, 12] and found[7, 55, 50]
    assert not found[:, 40, 12].sum() > 1


def test_find_spatial_clusters_and_column(cube):
    truth, err, data, star, comp = cube
    data = data.copy()
    defect = np.zeros(data.shape, bool)
    defect[:, 8:10, 8:10] = True  # 2x2
    defect[:, 55:58, 10:13] = True  # 3x3
    defect[:, 20:50, 64] = True  # partial column
    data[defect] += 200 * err[defect] * (1 + 0.1 * np.random.default_rng(0).random(defect.sum()))
    found = badpix.find_spatial(data, err=err)
    assert found[defect].all()
    assert found[~defect].mean() < 1e-3


def test_find_spatial_without_err(cube):
    truth, err, data, star, comp = cube
    rng = np.random.default_rng(6)
    data, where = inject_static(truth, data, err, rng, amps=(100, 1000))
    found = badpix.find_spatial(data)
    for (y, x) in where:
        assert found[:, y, x].all()
    assert found.mean() < 0.01


def test_find_spatial_is_bounded_on_the_psf_core():
    """A bright companion-like peak (FWHM ~2.9 px, 5000 sigma) alone on the sky: not flagged."""
    size = 31
    yy, xx = np.mgrid[:size, :size].astype(float)
    for cy, cx in ((15.0, 15.0), (15.5, 15.0), (15.3, 14.8)):
        truth = 5000 * 0.2 * airy(yy, xx, cy, cx)[None].repeat(5, axis=0) + 1.0
        err = np.sqrt(READ**2 + GAIN * truth)
        assert not badpix.find_spatial(noisy(truth, err), err=err).any()


# ----------------------------------------------------------------------------- repairs
def gradient_cube(nints=6, size=40, seed=0):
    yy, xx = np.mgrid[:size, :size]
    truth = (10 + 0.3 * yy + 0.2 * xx + 0.01 * (xx - 20) ** 2).astype(np.float32)
    truth = np.repeat(truth[None], nints, axis=0)
    err = np.full(truth.shape, 0.5, np.float32)
    return truth, err, noisy(truth, err, seed)


@pytest.mark.parametrize("method", sorted(badpix.REPAIR_METHODS))
def test_repair_known_answer(method):
    truth, err, data = gradient_cube()
    rng = np.random.default_rng(1)
    bad = np.zeros(data.shape, bool)
    for y, x in isolated_positions(data.shape[1:], 20, rng):
        k = rng.integers(data.shape[0]) if method == "temporal" else slice(None)
        bad[k, y, x] = True
    data = data.copy()
    data[bad] = 1e5  # garbage where bad
    res = badpix.repair(data, bad, err=err, method=method)
    assert res.repaired[bad].all() and not res.repaired[~bad].any()
    assert not res.remaining.any()
    z = (res.data[bad] - truth[bad]) / err[bad]
    assert np.sqrt(np.mean(z**2)) < 1.0 and np.abs(z).max() < 4
    assert (res.err[bad] >= err[bad]).all()  # the estimate is never claimed better than a pixel
    np.testing.assert_array_equal(res.data[~bad], data[~bad])
    np.testing.assert_array_equal(res.err[~bad], err[~bad])
    assert res.data.dtype == data.dtype


@pytest.mark.parametrize("method", sorted(badpix.REPAIR_METHODS))
def test_repair_err_is_honest(method):
    """(repaired - measured value) / ERR has unit scatter on a flat noisy frame."""
    truth, err, data = gradient_cube(nints=8, size=64, seed=2)
    truth2, _, data2 = gradient_cube(nints=8, size=64, seed=3)  # the values the pixels had
    rng = np.random.default_rng(2)
    bad = rng.random(data.shape) < 0.01
    if method != "temporal":
        bad[:] = bad[0]
    res = badpix.repair(data, bad, err=err, method=method)
    pull = (res.data[bad] - data2[bad]) / res.err[bad]
    assert 0.75 < pull.std() < 1.25


def test_repair_interp_fills_clusters_columns_and_holes():
    truth, err, data = gradient_cube(nints=3, size=48)
    bad = np.zeros(data.shape, bool)
    bad[:, :, 20] = True  # a full column
    bad[:, 5:8, 30:33] = True  # 3x3
    bad[1, 30:40, 5:15] = True  # a 10x10 hole
    bad[:, 0, 0] = True  # a corner
    data = np.where(bad, np.nan, data)
    res = badpix.repair_interp(data, bad, err=err)
    assert not res.remaining.any() and res.repaired[bad].all()
    assert np.isfinite(res.data).all() and np.isfinite(res.err).all()
    z = (res.data[bad] - truth[bad]) / err[bad]
    assert np.sqrt(np.mean(z**2)) < 1.5


def test_unrepairable_pixels_are_reported_and_left_alone():
    truth, err, data = gradient_cube(nints=4, size=20)
    data = data.copy()
    bad = np.zeros(data.shape, bool)
    bad[2] = True  # a whole integration
    data[2] = np.nan
    for method in ("local", "interp"):
        res = badpix.repair(data, bad, err=err, method=method)
        assert res.remaining[2].all() and not res.repaired.any()
        assert np.isnan(res.data[2]).all()
    res = badpix.repair_temporal(data, bad, err=err)
    assert res.repaired[2].all()  # 3 good integrations: temporal can
    few = bad.copy()
    few[:2] = True  # pixels with only one good integration left
    res = badpix.repair_temporal(data, few, err=err, min_good=2)
    assert res.remaining[:3].all() and not res.repaired.any()


def test_repair_without_err():
    truth, err, data = gradient_cube(nints=5, size=30)
    for method in badpix.REPAIR_METHODS:
        bad = np.zeros(data.shape, bool)
        bad[2 if method == "temporal" else slice(None), 10, 10] = True
        res = badpix.repair(data, bad, method=method)
        assert res.err is None and res.repaired[bad].all()
        assert np.abs(res.data[bad] - truth[bad]).max() < 2.5


def test_unknown_method_raises():
    truth, err, data = gradient_cube(nints=3, size=10)
    bad = np.zeros(data.shape, bool)
    with pytest.raises(ValueError, match="unknown repair method 'median'"):
        badpix.repair(data, bad, method="median")
    with pytest.raises(ValueError, match="unknown repair method"):
        badpix.find_and_repair(data, fix=["interp", "nope"])
    with pytest.raises(ValueError, match="unknown detection method"):
        badpix.find_and_repair(data, find=["sigclip"])


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (dict(data=np.zeros((4, 4))), ValueError, "3-D"),
        (dict(bad=np.zeros((2, 4, 4), int)), TypeError, "boolean"),
        (dict(err=np.zeros((2, 3, 4))), ValueError, "shape"),
    ],
)
def test_input_validation(args, exc, match):
    kwargs = dict(data=np.zeros((2, 4, 4), np.float32), bad=np.zeros((2, 4, 4), bool))
    kwargs.update(args)
    data, bad = kwargs.pop("data"), kwargs.pop("bad")
    with pytest.raises(exc, match=match):
        badpix.repair_interp(data, bad, **kwargs)
    with pytest.raises(exc, match=match):
        badpix.find_spatial(data, bad=bad, **kwargs)


@pytest.mark.parametrize(
    "call",
    [
        lambda d, e, b: badpix.find_temporal(d, err=e, bad=b),
        lambda d, e, b: badpix.find_spatial(d, err=e, bad=b),
        lambda d, e, b: badpix.find_nonfinite(d),
        lambda d, e, b: badpix.repair_temporal(d, b, err=e),
        lambda d, e, b: badpix.repair_local(d, b, err=e),
        lambda d, e, b: badpix.repair_interp(d, b, err=e),
        lambda d, e, b: badpix.find_and_repair(d, err=e, bad=b),
    ],
)
def test_inputs_not_mutated(call):
    truth, err, data = gradient_cube(nints=4, size=24)
    data = data.copy()
    data[1, 5, 5] = np.nan
    data[:, 12, 12] += 100
    bad = np.zeros(data.shape, bool)
    bad[:, 3, 7] = True
    copies = [a.copy() for a in (data, err, bad)]
    call(data, err, bad)
    for before, after in zip(copies, (data, err, bad), strict=True):
        np.testing.assert_array_equal(before, after)


# ----------------------------------------------------------------------------- driver
def test_find_and_repair_end_to_end(cube):
    truth, err, data, star, comp = cube
    rng = np.random.default_rng(9)
    bad = np.zeros(data.shape, bool)
    bad[:, 5:60, 62] = True  # a known bad column (NaN, as in calints), off the bright speckles
    bad[:, 25:50, 33] = True  # another one across the speckles, 3 px from the star
    data, where = inject_static(truth, data, err, rng, keep_off=bad[0])
    data[bad] = np.nan
    cr = (6, 20, 60)
    data[cr] += 500 * err[cr]
    res = badpix.find_and_repair(data, err=err, bad=bad)
    defect = bad.copy()
    for y, x in where:
        defect[:, y, x] = True
    defect[cr] = True
    cols = np.arange(data.shape[2])[None, None, :]
    assert (res.found | bad)[defect].all()
    assert res.found[~defect].mean() < 1e-3
    assert not res.remaining.any() and np.isfinite(res.data).all()
    assert res.repaired[defect].all()
    rms = {}
    for name, m in (("isolated", defect & ~bad), ("column", bad & (cols == 62)),
                    ("core column", bad & (cols == 33))):
        z = (res.data[m] - truth[m]) / err[m]  # in units of the pixels' noise
        pull = (res.data[m] - truth[m]) / res.err[m]  # in units of the repaired ERR
        rms[name] = np.sqrt(np.mean(z**2))
        # the repaired ERR follows the real error: within 1.6x, or 2.5x for a column through
        # the brightest speckles (where it is ~20 sigma off and its ERR ~10 sigma)
        limit = 2.5 if name == "core column" else 1.6
        assert np.sqrt(np.mean(pull**2)) < limit and np.abs(pull).max() < 4 * limit, name
    # a column is interpolated across the speckles from its two sides only: poorer
    assert rms["isolated"] < 1.5 and rms["column"] < 3
    untouched = ~(res.found | bad)
    np.testing.assert_array_equal(res.data[untouched], data[untouched])


def test_find_and_repair_unrepairable_become_nan():
    truth, err, data = gradient_cube(nints=3, size=16)
    bad = np.zeros(data.shape, bool)
    bad[0] = True
    res = badpix.find_and_repair(data, err=err, bad=bad, find=[], fix=["local"])
    assert np.isnan(res.data[0]).all() and res.remaining[0].all()
    assert np.isfinite(res.data[1:]).all()
