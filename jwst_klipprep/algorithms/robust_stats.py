"""Robust statistics of the background algorithms: sigma-clipped medians and their errors.

Sigma-clipped medians in the `astropy.stats.sigma_clip` sense (centre = median, scale = standard
deviation, iterate until nothing changes or ``maxiters``), computed in a vectorised way: the
values of each row are sorted once, after which every clipping iteration only moves two indices
per row (the kept values are always a contiguous run of the sorted row).

The uncertainty of a median of ``n`` values with Gaussian scatter ``sigma`` is
``median_error_factor(n) * sigma / sqrt(n)``; the factor tends to ``sqrt(pi/2) = 1.2533``
for large ``n`` and is 1 for ``n <= 2`` (see `median_error_factor`).  Also the input checks
shared by `jwst_klipprep.algorithms.background_exposures` and
`jwst_klipprep.algorithms.background_level`.
"""

import logging
import math
import operator
from typing import NamedTuple

import numpy as np
from scipy import special

__all__ = [
    "Clipped",
    "as_float_array",
    "as_mask",
    "check_sigma",
    "clip_correction",
    "clipped_stats",
    "median_error_factor",
    "nanmedian_axis0",
    "scatter_sigma",
    "subsample",
]

log = logging.getLogger(__name__)

_NSAMPLE = 16384  # pixels per frame used to measure the noise of a detection image

# --------------------------------------------------------------------------------------------
# Statistics helpers
# --------------------------------------------------------------------------------------------


def median_error_factor(n):
    """Ratio of the standard error of a median to ``sigma / sqrt(n)`` for Gaussian data.

    Parameters
    ----------
    n : int or array_like of int
        Number of values in the median.

    Returns
    -------
    ndarray of float
        Same shape as ``n``; NaN where ``n < 1``.

    Notes
    -----
    For large ``n`` the variance of the sample median is ``(pi/2) sigma**2 / n``.  For finite
    ``n`` we use ``(pi/2) n / (n + a)`` for the squared factor, with ``a = 0.46`` (odd ``n``)
    and ``a = 1.40`` (even ``n``, where the median averages two values), and exactly 1 for
    ``n <= 2`` (one value, or the mean of two).  The constants were fitted to 4e6-draw Monte
    Carlo simulations for ``n = 1..121``; the formula is within 1 % of them for ``n >= 3``.
    """
    n = np.asarray(n, dtype=np.float64)
    a = np.where(np.mod(n, 2) == 1, 0.46, 1.40)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.sqrt(0.5 * np.pi * n / (n + a))
    f = np.where(n <= 2, 1.0, f)
    return np.where(n >= 1, f, np.nan)


def clip_correction(sigma):
    """Std of a unit Gaussian truncated at +-sigma (1 when no clipping)."""
    if sigma is None:
        return 1.0
    k = float(sigma)
    inside = math.erf(k / math.sqrt(2.0))
    return math.sqrt(1.0 - 2.0 * k * math.exp(-0.5 * k * k) / math.sqrt(2.0 * np.pi) / inside)


class Clipped(NamedTuple):
    median: np.ndarray  # (m,) float64
    std: np.ndarray  # (m,) float64, ddof=0 of the kept values
    nused: np.ndarray  # (m,) intp
    vmin: np.ndarray  # (m,) smallest kept value (NaN if none)
    vmax: np.ndarray  # (m,) largest kept value (NaN if none)


def _range_median(s, lo, hi):
    """Median of ``s[i, lo[i]:hi[i]]`` for every row of a row-sorted array."""
    cnt = hi - lo
    last = s.shape[-1] - 1
    i1 = np.clip(lo + (cnt - 1) // 2, 0, last)[:, None]
    i2 = np.clip(lo + cnt // 2, 0, last)[:, None]
    med = 0.5 * (np.take_along_axis(s, i1, -1)[:, 0].astype(np.float64)
                 + np.take_along_axis(s, i2, -1)[:, 0])
    med[cnt <= 0] = np.nan
    return med


def clipped_stats(values, *, sigma, maxiters):
    """Sigma-clipped median/std along the last axis of a 2-D array (NaN = excluded)."""
    s = np.sort(values, axis=-1)  # NaNs sort to the end
    m, n = s.shape
    rows = np.arange(m)
    hi = n - np.count_nonzero(np.isnan(s), axis=-1)
    lo = np.zeros_like(hi)
    med = _range_median(s, lo, hi)
    # Running sums relative to a per-row reference (avoids cancellation in the variance).
    d = s - np.where(np.isfinite(med), med, 0.0)[:, None]
    d[np.isnan(d)] = 0.0
    c1 = np.zeros((m, n + 1))
    np.cumsum(d, axis=-1, out=c1[:, 1:])
    np.multiply(d, d, out=d)
    c2 = np.zeros((m, n + 1))
    np.cumsum(d, axis=-1, out=c2[:, 1:])
    del d
    it = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        while True:
            cnt = hi - lo
            mean = (c1[rows, hi] - c1[rows, lo]) / cnt
            std = np.sqrt(np.maximum((c2[rows, hi] - c2[rows, lo]) / cnt - mean * mean, 0.0))
            if sigma is None or (maxiters is not None and it >= maxiters):
                break
            lower = (med - sigma * std)[:, None]
            upper = (med + sigma * std)[:, None]
            new_lo = np.maximum(lo, np.count_nonzero(s < lower, axis=-1))
            new_hi = np.minimum(hi, np.count_nonzero(s <= upper, axis=-1))
            keep = new_hi > new_lo  # never clip a row down to nothing
            new_lo = np.where(keep, new_lo, lo)
            new_hi = np.where(keep, new_hi, hi)
            if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
                break
            lo, hi = new_lo, new_hi
            med = _range_median(s, lo, hi)
            it += 1
    cnt = hi - lo
    empty = cnt <= 0
    vmin = s[rows, np.clip(lo, 0, n - 1)].astype(np.float64)
    vmax = s[rows, np.clip(hi - 1, 0, n - 1)].astype(np.float64)
    vmin[empty] = np.nan
    vmax[empty] = np.nan
    std[empty] = np.nan
    return Clipped(med, std, cnt, vmin, vmax)


def nanmedian_axis0(x):
    """``np.nanmedian(x, axis=0)`` (same values, same dtype), ~6x faster for a short axis 0.

    numpy falls back to a masked-array sort along a strided axis for fewer than 600 values per
    median; here the (n, ...) stack is transposed to contiguous rows of ``n`` values, sorted
    once (NaN last) and the middle value(s) of the finite ones taken. All-NaN columns give NaN
    (without numpy's warning).
    """
    x = np.asarray(x)
    nf = x.shape[0]
    rows = np.sort(x.reshape(nf, -1).T, axis=-1)
    n = nf - np.count_nonzero(np.isnan(rows), axis=-1)
    a = np.take_along_axis(rows, np.clip((n - 1) // 2, 0, nf - 1)[:, None], -1)[:, 0]
    b = np.take_along_axis(rows, np.clip(n // 2, 0, nf - 1)[:, None], -1)[:, 0]
    med = np.where(n % 2 == 1, a, (a + b) / 2)
    return np.where(n > 0, med, np.nan).astype(x.dtype, copy=False).reshape(x.shape[1:])


def subsample(values, nx):
    """Regular subsample of about ``_NSAMPLE`` values per row (enough for a noise level).

    The stride is chosen not to divide the frame width ``nx``, so that the sample does not
    pick the same columns in every image row.
    """
    step = max(values.shape[-1] // _NSAMPLE, 1)
    if step > 1 and nx % step == 0:
        step += 1
    return values[:, ::step]


def scatter_sigma(std, nused, sigma):
    """Per-value Gaussian sigma from the clipped std (ddof=0) of ``nused`` values.

    Corrected for the degrees of freedom and the small-sample bias of a standard deviation
    (``s / c4(n)`` is unbiased for Gaussian data) and for the truncation by the clipping.
    """
    n = np.asarray(nused, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_c4 = 0.5 * np.log(2.0 / (n - 1.0)) + special.gammaln(n / 2) - special.gammaln(
            (n - 1.0) / 2)
        out = std * np.sqrt(n / (n - 1.0)) / np.exp(log_c4) / clip_correction(sigma)
    return np.where(n >= 2, out, np.nan)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def as_float_array(a, name, ndim=None):
    a = np.asarray(a)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def as_mask(mask, shape, name):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"{name} must be a boolean array (True = excluded), got {mask.dtype}")
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(f"{name} shape {mask.shape} cannot broadcast to {shape}") from None


def check_sigma(sigma, maxiters):
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be > 0 or None (no clipping), got {sigma}")
    if maxiters is not None and operator.index(maxiters) < 0:
        raise ValueError(f"maxiters must be >= 0 or None (until convergence), got {maxiters}")
