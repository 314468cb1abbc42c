"""Bad-pixel detectors from other inputs (DQ, non-finite values, a user mask) and across time.

Each returns a boolean mask of shape ``(nints, ny, nx)``, True = bad pixel, holding only the pixels
it newly found, so that several can be OR-ed; no function modifies its inputs.  The spatial
detector is in `badpix_spatial`, the association-wide one in `badpix_persistent`.
"""

import logging

import numpy as np
from scipy import ndimage

from jwst_klipprep.algorithms.badpix_common import (
    VAR_MEDIAN,
    check_like,
    median_sorted,
    nanmad_sigma,
    nanmedian,
    prepare,
)

__all__ = ["find_custom", "find_dq", "find_nonfinite", "find_temporal"]

log = logging.getLogger(__name__)


def find_dq(dq, *, bad_bits, ignore_bits=0):
    """Pixels whose DQ has any of ``bad_bits`` and none of ``ignore_bits``.

    Parameters
    ----------
    dq : ndarray of int, shape (nints, ny, nx) or any
        Data-quality array.  Not modified.
    bad_bits : int
        OR of the flag values that make a pixel bad (e.g. the value of DO_NOT_USE).
    ignore_bits : int, optional
        OR of the flag values of pixels to leave alone (e.g. NON_SCIENCE): never bad.

    Returns
    -------
    ndarray of bool, shape of ``dq``
        True = bad pixel.
    """
    dq = np.asarray(dq)
    if not np.issubdtype(dq.dtype, np.integer):
        raise TypeError(f"dq must be an integer array, got dtype {dq.dtype}")
    bad_bits, ignore_bits = int(bad_bits), int(ignore_bits)
    if bad_bits < 0 or ignore_bits < 0:
        raise ValueError("bad_bits and ignore_bits must be non-negative ints")
    found = (dq & bad_bits) != 0
    if ignore_bits:
        found &= (dq & ignore_bits) == 0
    return found


def find_nonfinite(data, *, ignore=None):
    """Pixels whose value is NaN or infinite, except where ``ignore`` is True.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx) or any
        Not modified.
    ignore : ndarray of bool, optional
        Same shape as ``data``; True = leave alone (e.g. NON_SCIENCE pixels).

    Returns
    -------
    ndarray of bool, shape of ``data``
        True = bad pixel.
    """
    data = np.asarray(data)
    found = ~np.isfinite(data)
    if ignore is not None:
        found &= ~check_like("ignore", ignore, data.shape, bool)
    return found


def find_custom(shape, *, mask=None, pixels=None):
    """Bad pixels given by the user: a 2-D or 3-D mask and/or a list of pixel positions.

    Parameters
    ----------
    shape : tuple of int
        ``(nints, ny, nx)`` of the data.
    mask : array_like of bool, shape (ny, nx) or (nints, ny, nx), optional
        True (non-zero) = bad.  A 2-D mask applies to every integration.
    pixels : sequence of (y, x) or (int, y, x), optional
        0-indexed positions; a pair marks the pixel in every integration.

    Returns
    -------
    ndarray of bool, shape ``shape``
        True = bad pixel.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (nints, ny, nx), got {shape}")
    found = np.zeros(shape, bool)
    if mask is not None:
        mask = np.asarray(mask) != 0
        if mask.shape not in (shape, shape[1:]):
            raise ValueError(f"mask must have shape {shape[1:]} or {shape}, got {mask.shape}")
        found |= np.broadcast_to(mask, shape)
    for pixel in pixels if pixels is not None else ():
        pos = tuple(int(p) for p in pixel)
        if len(pos) not in (2, 3):
            raise ValueError(f"a pixel must be (y, x) or (int, y, x), got {pixel!r}")
        lims = shape[-len(pos):]
        if not all(0 <= p < n for p, n in zip(pos, lims, strict=True)):
            raise ValueError(f"pixel {pos} is outside the array of shape {shape}")
        found[(slice(None),) + pos if len(pos) == 2 else pos] = True
    return found


def find_temporal(data, *, err=None, bad=None, sigma=5.0, neg_sigma=None, min_nints=3):
    """Outliers of each pixel's time series across integrations.

    A pixel is flagged in integration k when ``|data[k] - med| > sigma * s * sqrt(1 + pi/(2 n))``
    where ``med`` is the median of its ``n`` usable integrations and ``s`` the larger of the
    median ERR of those integrations and the second largest MAD-sigma of the time series of
    the pixel and its 8 neighbours: pixels of a steep PSF region vary together under pointing
    jitter, more than ERR says, and are not flagged for it.  The median and MAD ignore up to
    half of the integrations, so a pixel hit in a few integrations is found in each.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Not modified.
    err : ndarray, shape (nints, ny, nx), optional
        1-sigma uncertainties.  Strongly recommended; without it the scale is the MAD alone.
    bad : ndarray of bool, shape (nints, ny, nx), optional
        Known bad pixels (True): excluded from the statistics and never returned.
    sigma, neg_sigma : float, optional
        Thresholds for positive and negative outliers (``neg_sigma`` defaults to ``sigma``).
    min_nints : int, optional
        Pixels with fewer usable integrations are not tested.  When ``err`` is None at least
        5 are required whatever this value, since the MAD of fewer values is unreliable.

    Returns
    -------
    ndarray of bool, shape (nints, ny, nx)
        True = newly found bad pixel.  **All False when nints < min_nints** (nothing can be told
        apart); an INFO message is logged.  Test ``data.shape[0] < min_nints`` to know beforehand.
    """
    data, err, bad, good = prepare(data, err, bad)
    neg_sigma = sigma if neg_sigma is None else neg_sigma
    if sigma <= 0 or neg_sigma <= 0:
        raise ValueError("sigma and neg_sigma must be positive")
    min_nints = max(int(min_nints), 3 if err is not None else 5)
    found = np.zeros(data.shape, bool)
    nints = data.shape[0]
    if nints < min_nints:
        log.info("temporal detection skipped: %d integration(s) < min_nints = %d", nints, min_nints)
        return found
    flat = data.reshape(nints, -1)
    gflat = good.reshape(nints, -1)
    x = np.where(gflat, flat, np.nan).astype(np.float32, copy=False)
    s = np.sort(x, axis=0)
    n = gflat.sum(axis=0)
    med = median_sorted(s, n, 0)
    resid = x - med
    testable = n >= min_nints
    if err is not None:  # a cheap lower bound of the final threshold selects the candidates
        e_lo = np.where(gflat, err.reshape(nints, -1), np.inf).min(axis=0)
        cand = (np.abs(resid) > min(sigma, neg_sigma) * e_lo).any(axis=0) & testable
    else:
        cand = testable
    if not cand.any():
        return found
    # The MAD-sigma of the candidates and of their neighbours: pointing jitter makes the pixels
    # of a steep PSF region vary together, more than ERR says; the second largest of the 3x3
    # neighbourhood is used, which a single odd neighbour does not set.
    cand = cand.reshape(data.shape[1:])
    need = np.flatnonzero(ndimage.binary_dilation(cand, np.ones((3, 3), bool)))
    mad = np.full(cand.size, -np.inf)
    mad[need] = np.nan_to_num(nanmad_sigma(x[:, need], med[need], axis=0), nan=-np.inf)
    mad = ndimage.rank_filter(mad.reshape(cand.shape), rank=-2, size=3, mode="nearest")
    cols = np.flatnonzero(cand)
    ns = n[cols]
    scale = mad.reshape(-1)[cols]
    if err is not None:
        e = np.where(gflat[:, cols], err.reshape(nints, -1)[:, cols], np.nan)
        scale = np.fmax(scale, nanmedian(e, axis=0)[0])
    scale = np.where(scale > 0, scale, np.nan) * np.sqrt(1.0 + VAR_MEDIAN / np.maximum(ns, 1))
    with np.errstate(invalid="ignore"):
        r = resid[:, cols] / scale
        hit = ((r > sigma) | (r < -neg_sigma)) & testable[cols]
    found.reshape(nints, -1)[:, cols] = hit
    log.debug("temporal detection: %d pixel(s)", int(hit.sum()))
    return found

