"""Spatial bad-pixel detector: outliers against their neighbourhood, robust to PSF structure.

See `find_spatial`.  Returns a boolean ``(nints, ny, nx)`` mask of the newly found pixels.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

from jwst_klipprep.algorithms.badpix_common import (
    CHUNK,
    VAR_MEDIAN,
    Gather,
    footprint_offsets,
    nanmedian,
    prepare,
    robust_mad,
    robust_stats,
)

__all__ = ["find_spatial"]

log = logging.getLogger(__name__)

_LINE_FRACTION = 0.45  # a spike stands out from every pair of opposite neighbours by this x d


@dataclass(frozen=True)
class _SpatialOptions:
    """Thresholds and tolerances of one `find_spatial` run (see its docstring)."""

    sigma: float
    neg_sigma: float
    structure_factor: float
    spread_factor: float
    contrast: float
    neg_contrast: float
    min_good: int
    maxiters: int


def _footprint_sum(values, offsets):
    """Sum of ``values`` (nints, ny, nx) over the footprint offsets, zero outside the frame."""
    r = int(np.abs(offsets).max())
    nints, ny, nx = values.shape
    padded = np.pad(values.astype(np.float32, copy=False), ((0, 0), (r, r), (r, r)))
    side = 2 * r + 1
    if len(offsets) == side * side - 1:  # a full box: separable sums, minus the centre
        rows = padded[:, :, 0:nx].copy()
        for dx in range(1, side):
            rows += padded[:, :, dx:dx + nx]
        total = rows[:, 0:ny].copy()
        for dy in range(1, side):
            total += rows[:, dy:dy + ny]
        total -= values
        return total
    total = np.zeros(values.shape, np.float32)
    for dy, dx in offsets:
        total += padded[:, r + dy:r + dy + ny, r + dx:r + dx + nx]
    return total



def _spatial_pass(data, err, good, inner, outer, opts):
    """Iterative neighbourhood test of every frame of ``data`` (see `find_spatial`)."""
    sigma, neg_sigma, min_good, maxiters = opts.sigma, opts.neg_sigma, opts.min_good, opts.maxiters
    f_struct, f_spread = opts.structure_factor, opts.spread_factor
    f_con, f_negcon = opts.contrast, opts.neg_contrast
    nints, ny, nx = data.shape
    found = np.zeros(data.shape, bool)
    # Stage A, whole cube: cheap screen with the footprint mean and a generous threshold.
    count = _footprint_sum(good.astype(np.float32), inner)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = data - _footprint_sum(np.where(good, data, 0), inner) / count
    if err is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            noise = _footprint_sum(np.where(good, err, 0), inner) / count
            z = resid / noise
    else:
        noise, z = np.ones(1, np.float32), resid
    # The scatter of the residuals, measured per frame on a subsample of the usable pixels:
    # without ERR it is the noise level; with ERR it rescales ERR where ERR is too small
    # (correlated or static noise, e.g. 1/f stripes or the median image of a cube), measured
    # on the quarter of the pixels with the lowest ERR, where PSF structure matters least.
    scale = np.empty(nints)
    for k in range(nints):
        zk = z[k][good[k]][::7]
        if err is not None and zk.size:
            ek = noise[k][good[k]][::7]
            zk = zk[ek <= np.quantile(ek, 0.25)]
        scale[k] = robust_mad(zk)
    scale /= math.sqrt(1.0 + 1.0 / len(inner))
    if err is not None:
        scale = np.fmax(scale, 1.0)
    noise_scale = np.where(np.isfinite(scale), scale, 1.0)
    noise = noise * noise_scale[:, None, None].astype(np.float32)
    with np.errstate(invalid="ignore"):
        screen = np.abs(resid) > 0.6 * min(sigma, neg_sigma) * noise
    cand = good & (screen | (count < min_good) | ~np.isfinite(noise))
    del count, screen, resid, z, noise

    # Stage B, candidates only: exact robust statistics, iterated to peel clusters.
    pad = int(np.abs(outer).max())
    vals = Gather(np.where(good, data, np.nan), pad)
    errs = Gather(err, pad) if err is not None else None
    o_in, o_out = vals.offsets(inner), vals.offsets(outer)
    o_all = np.concatenate([o_in, o_out])
    opp_in, opp_out = _opposite(inner), _opposite(outer)
    # the pairs of opposite nearest neighbours: the 4 directions of the line test
    pairs = [(i, opp_in[i]) for i, o in enumerate(inner)
             if tuple(o) in {(0, 1), (1, 0), (1, 1), (1, -1)} and opp_in[i] != i]
    pair_a, pair_b = np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)
    opp_all = _opposite(np.concatenate([inner, outer]))
    usable = good.copy()
    near = np.unique(np.concatenate([inner, -inner, outer, -outer]), axis=0)
    box = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])

    def test(kk, yy, xx, complete):
        base = vals.base(kk, yy, xx)
        v_in = _symmetric(vals(base, o_in), opp_in)
        if errs is not None:
            e = nanmedian(np.where(np.isfinite(v_in), errs(base, o_in), np.nan))[0]
            e = np.where(np.isfinite(e), e, errs.flat[base]) * noise_scale[kk]
        else:
            e = noise_scale[kk]
        m_in, n_in, sorted_in = robust_stats(v_in)
        if complete:  # next to found pixels: the whole footprint + ring, no structure term
            ref, nref, srt = robust_stats(_symmetric(vals(base, o_all), opp_all))
            struct = np.zeros(len(kk))
        else:
            m_out = robust_stats(_symmetric(vals(base, o_out), opp_out))[0]
            ref, nref, srt = m_in, n_in, sorted_in
            struct = np.where(np.isfinite(m_out), m_in - m_out, 0.0) * f_struct
        lo, hi, spread_hot, spread_cold = _order_terms(srt, nref)
        contrast = np.where(nref > 0, hi - lo, 0.0)
        s = e * np.sqrt(1.0 + VAR_MEDIAN / np.maximum(nref, 1))
        v = data[kk, yy, xx]
        d = v - ref
        with np.errstate(invalid="ignore"):
            thr_hot = np.sqrt((sigma * s) ** 2 + np.maximum(struct, 0) ** 2
                              + (f_spread * spread_hot) ** 2 + (f_con * contrast) ** 2)
            thr_cold = np.sqrt((neg_sigma * s) ** 2 + np.maximum(-struct, 0) ** 2
                               + (f_spread * spread_cold) ** 2 + (f_negcon * contrast) ** 2)
            hot = (d > thr_hot) & (v > hi - sigma * s)
            cold = (-d > thr_cold) & (v < lo + neg_sigma * s)
            if not complete and pair_a.size:
                # above (below) the mean of each pair of opposite neighbours by a good part of
                # d: not on a ridge (valley) of the PSF, along which it would not stand out
                line = v[:, None] - 0.5 * (v_in[:, pair_a] + v_in[:, pair_b])
                line_min = np.min(np.where(np.isnan(line), np.inf, line), axis=1)
                line_max = np.max(np.where(np.isnan(line), -np.inf, line), axis=1)
                hot &= line_min > np.maximum(0.5 * sigma * s, _LINE_FRACTION * d)
                cold &= line_max < np.minimum(-0.5 * neg_sigma * s, _LINE_FRACTION * d)
            enough = nref >= min_good
            hit = (hot | cold) & enough
            # clear detections (twice the threshold) seed the search around them
            strong = hit & ((d > 2 * thr_hot) | (-d > 2 * thr_cold))
        return hit, strong

    def neighbours(nk, ny_, nx_, offsets):
        kk = np.repeat(nk, len(offsets))
        yy = (ny_[:, None] + offsets[None, :, 0]).ravel()
        xx = (nx_[:, None] + offsets[None, :, 1]).ravel()
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        return np.ravel_multi_index((kk[inside], yy[inside], xx[inside]), data.shape)

    k, y, x = np.nonzero(cand)
    seed = np.zeros(data.shape, bool)  # the clear detections, around which to search further
    complete = False
    for it in range(2 * maxiters):
        new, new_seed = [], []
        for i in range(0, k.size, CHUNK):
            hit, strong = test(k[i:i + CHUNK], y[i:i + CHUNK], x[i:i + CHUNK], complete)
            new.append(np.flatnonzero(hit) + i)
            new_seed.append(np.flatnonzero(strong) + i)
        new = np.concatenate(new) if new else np.zeros(0, int)
        new_seed = np.concatenate(new_seed) if new_seed else np.zeros(0, int)
        found[k[new], y[new], x[new]] = True
        usable[k[new], y[new], x[new]] = False
        vals.set_nan(k[new], y[new], x[new])
        sk, sy, sx = k[new_seed], y[new_seed], x[new_seed]
        seed[sk, sy, sx] = True
        log.debug("spatial detection pass %d: %d pixel(s)", it + 1, new.size)
        if not complete and (new.size == 0 or it + 1 >= maxiters):
            # cluster completion: usable pixels with >= 2 clear detections among their
            # 8 neighbours
            complete = True
            idx, counts = np.unique(neighbours(*np.nonzero(seed), box), return_counts=True)
        elif complete and new.size == 0:
            break
        elif complete:
            idx = np.unique(neighbours(sk, sy, sx, box))
            counts = _count_found(seed, idx, box, data.shape)
        else:  # next pass: the usable pixels whose footprint or ring holds a new clear flag
            idx = np.unique(neighbours(sk, sy, sx, near))
            counts = np.full(idx.size, 2)
        idx = idx[usable.reshape(-1)[idx] & (counts >= 2)]
        k, y, x = np.unravel_index(idx, data.shape)
    return found


def _count_found(found, idx, box, shape):
    """Number of True pixels of ``found`` among the 8 neighbours of the flat indices ``idx``."""
    k, y, x = np.unravel_index(idx, shape)
    yy, xx = y[:, None] + box[None, :, 0], x[:, None] + box[None, :, 1]
    inside = (yy >= 0) & (yy < shape[1]) & (xx >= 0) & (xx < shape[2])
    hits = found[k[:, None], np.clip(yy, 0, shape[1] - 1), np.clip(xx, 0, shape[2] - 1)]
    return (hits & inside).sum(axis=1)


def _opposite(offsets):
    """Index of the opposite offset of each offset (itself when the footprint lacks it)."""
    where = {tuple(o): i for i, o in enumerate(offsets)}
    return np.array([where.get((-dy, -dx), i) for i, (dy, dx) in enumerate(offsets)])


def _symmetric(values, opposite):
    """Drop (NaN) each value whose opposite neighbour is missing, so that the set stays
    symmetric about the centre and a gradient cancels in its median (e.g. next to a bad
    column)."""
    return np.where(np.isfinite(values[:, opposite]), values, np.nan)


def _order_terms(srt, n):
    """min, max and the one-sided spreads q(1/2)-q(1/8) and q(7/8)-q(1/2) of sorted rows."""
    def at(i):
        return np.take_along_axis(srt, np.clip(i, 0, srt.shape[1] - 1)[:, None], 1)[:, 0]

    lo, hi = srt[:, 0], at(n - 1)
    spread_hot = at(n // 2) - at(n // 8)
    spread_cold = at(n - 1 - n // 8) - at(n - 1 - n // 2)
    return lo, hi, spread_hot, spread_cold


def find_spatial(
    data,
    *,
    err=None,
    bad=None,
    sigma=5.0,
    neg_sigma=None,
    footprint=3,
    structure_factor=4.0,
    spread_factor=2.0,
    contrast=0.3,
    neg_contrast=0.6,
    min_good=2,
    maxiters=10,
    stack=True,
):
    """Outliers against their spatial neighbourhood (hot and cold pixels, clusters, columns).

    Each pixel ``v`` is compared with the usable pixels of its footprint (centre excluded),
    kept only in opposite pairs so that the set is symmetric about the centre and a gradient
    cancels (e.g. next to a bad column).  With ``m_in`` their median, ``m_out`` the median of
    the ring just outside the footprint, ``s`` their median ERR times ``sqrt(1 + pi/(2 n))``,
    ``w`` the spread ``q(1/2) - q(1/8)`` of their values and ``r`` their range, ``v`` is a
    positive outlier when all of

    * ``v - m_in > sqrt((sigma s)^2 + (structure_factor max(m_in - m_out, 0))^2
      + (spread_factor w)^2 + (contrast r)^2)``;
    * ``v > max(footprint) - sigma s`` (a local maximum, within the noise);
    * ``v`` exceeds the mean of each pair of opposite nearest neighbours by ``sigma s / 2``
      (it is not on a ridge of the PSF);

    negative outliers mirror this with ``neg_sigma``, ``m_out - m_in``, ``q(7/8) - q(1/2)``,
    ``neg_contrast``, a local minimum and no valley.

    Why: a true PSF peak, speckle or companion is smooth over ~2 px at NIRCam LW sampling, so
    the step from its peak to the first ring of neighbours is at most about the step from the
    first to the second ring (the structure term), a pixel on the flank of a speckle has
    neighbours on both sides of its value (spread, range and extremum tests) and a pixel on a
    diffraction ridge does not stand out along the ridge (pair test); speckle nulls go to zero
    intensity, hence the larger ``neg_contrast``.  A hot pixel is a one-pixel spike on a
    neighbourhood that is flat compared with it.  These tolerances were tuned on the benchmark
    (``benchmarks/bench_badpix.py``): false flags within 20 px of a coronagraphic PSF about
    0.1-0.2 %, elsewhere about 0.01 %.  In bright, structured regions (hundreds of sigma of
    speckle contrast per pixel) only defects comparable to the local contrast can be found.

    Clusters: the one-sided spreads ignore up to 1/8 of the footprint on the outlier's side,
    so the members of a 2x2 cluster are found at once; passes are iterated (each excluding
    what was found, up to ``maxiters``), then usable pixels with at least 2 found neighbours
    are tested against the footprint and its ring together (no structure or pair term), which
    completes 3x3 clusters and partly found columns.

    With ``stack=True`` (and at least 3 integrations) the test is first run on the per-pixel
    median over the integrations, whose noise is ``sqrt(2 nints / pi)`` times lower, and what
    it finds is flagged in every integration, so that static defects of a few sigma (per
    integration) are found.  Then each integration is tested on its own (transients).  In every
    frame the noise is ERR scaled up by the measured robust scatter of ``v - mean(footprint)``
    in ERR units when that exceeds 1 (static structure, correlated noise, ERR too small).

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Not modified.
    err : ndarray, shape (nints, ny, nx), optional
        1-sigma uncertainties (strongly recommended: the threshold then follows the real noise,
        e.g. the Poisson noise of the PSF).  Without it one robust noise level per frame is
        estimated from the data.
    bad : ndarray of bool, shape (nints, ny, nx), optional
        Known bad pixels (True): excluded from the statistics and never returned.
    sigma, neg_sigma : float, optional
        Thresholds for positive and negative outliers (``neg_sigma`` defaults to ``sigma``).
    footprint : int or 2-D array of bool, optional
        Neighbourhood: an odd box size (3 = the 8 nearest neighbours) or an explicit odd-sided
        boolean footprint; its centre is always excluded.  Larger footprints find bigger
        clusters in one pass but flag more PSF structure.
    structure_factor, spread_factor, contrast, neg_contrast : float, optional
        Tolerances for smooth structure (see above; 0 disables one; expect false flags on
        PSFs when they are lowered).
    min_good : int, optional
        Fewest usable (symmetric) footprint neighbours for a pixel to be tested.
    maxiters : int, optional
        Largest number of passes, and of cluster-completion passes.
    stack : bool, optional
        Also test the median over integrations (see above).

    Returns
    -------
    ndarray of bool, shape (nints, ny, nx)
        True = newly found bad pixel.
    """
    data, err, bad, good = prepare(data, err, bad)
    neg_sigma = sigma if neg_sigma is None else neg_sigma
    if sigma <= 0 or neg_sigma <= 0 or min(structure_factor, spread_factor, contrast,
                                           neg_contrast) < 0:
        raise ValueError("sigma and neg_sigma must be positive, the factors >= 0")
    inner, outer = footprint_offsets(footprint)
    opts = _SpatialOptions(sigma, neg_sigma, structure_factor, spread_factor, contrast,
                           neg_contrast, min_good, maxiters)
    nints = data.shape[0]
    found = np.zeros(data.shape, bool)
    if stack and nints >= 3:
        flat_good = good.reshape(nints, -1)
        med, n = nanmedian(np.where(flat_good, data.reshape(nints, -1), np.nan), axis=0)
        med_err = None
        if err is not None:  # RMS ERR over the usable integrations x the median's factor
            e2 = np.where(flat_good, err.reshape(nints, -1), 0).astype(np.float64) ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                e = np.sqrt(e2.sum(axis=0) / n)
            med_err = (e * np.sqrt(VAR_MEDIAN / np.maximum(n, 1))).reshape(1, *data.shape[1:])
        med_good = (n >= 3) & np.isfinite(med)
        if med_err is not None:
            med_good &= np.isfinite(med_err.ravel())
        static = _spatial_pass(med.reshape(1, *data.shape[1:]), med_err,
                               med_good.reshape(1, *data.shape[1:]), inner, outer, opts)
        found |= static & good
        log.debug("spatial detection, median image: %d pixel(s)", int(static.sum()))
    found |= _spatial_pass(data, err, good & ~found, inner, outer, opts)
    return found


