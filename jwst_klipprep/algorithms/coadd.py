"""Combine consecutive integrations in blocks (median or mean), with errors and flags."""

from typing import NamedTuple

import numpy as np

from jwst_klipprep.algorithms.background import combine_background, median_error_factor

__all__ = ["COADD_METHODS", "CoaddResult", "block_slices", "coadd_frames"]

#: Names accepted by ``coadd_frames(method=...)``; the first is the default.
COADD_METHODS = ("median", "mean")


class CoaddResult(NamedTuple):
    """Result of `coadd_frames`; image arrays have shape ``(nblocks, ny, nx)``."""

    #: Combined data; NaN where no integration of the block was usable.
    data: np.ndarray
    #: 1-sigma uncertainty (error of the median or of the mean).
    err: np.ndarray
    #: Combined variances (same keys as the input ``var``), consistent with ``err``.
    var: dict
    #: DQ: OR of the flags of the integrations used; where none was usable, OR of all flags
    #: plus ``empty_flag``.
    dq: np.ndarray
    #: Number of integrations used per pixel.
    nused: np.ndarray
    #: ``slices[k]``: the integrations of block ``k``.
    slices: tuple


def block_slices(nints, nframes):
    """Consecutive blocks of ``nframes`` integrations; the last, partial block on its own.

    >>> block_slices(7, 3)
    [slice(0, 3, None), slice(3, 6, None), slice(6, 7, None)]
    """
    nints, nframes = int(nints), int(nframes)
    if nints < 1:
        raise ValueError(f"nints must be >= 1, got {nints}")
    if nframes < 1:
        raise ValueError(f"nframes must be >= 1, got {nframes}")
    return [slice(k, min(k + nframes, nints)) for k in range(0, nints, nframes)]


def coadd_frames(data, *, nframes, method="median", err=None, var=None, dq=None, bad=None,
                 empty_flag=1):
    """Combine every ``nframes`` consecutive integrations.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Not modified.
    nframes : int
        Integrations per block (>= 1); a last partial block is combined on its own.
    method : {"median", "mean"}
        ``median`` (NaN-aware, no clipping) with the error of a median
        (`~jwst_klipprep.algorithms.background.median_error_factor`, finite-``n`` factor), or
        ``mean`` with the error of a mean.
    err : ndarray, optional
        1-sigma uncertainties (same shape); NaN = that value is not used.  Default: zeros.
    var : dict of ndarray, optional
        Variance arrays (same shape), each combined like ``err**2``.
    dq : ndarray of uint32, optional
        DQ flags (same shape).
    bad : ndarray of bool, optional
        True = excluded from the combination (e.g. DO_NOT_USE).  Non-finite data are excluded.
    empty_flag : int
        Flag OR-ed into pixels of a block where no integration was usable.

    Returns
    -------
    CoaddResult

    Notes
    -----
    With ``n`` usable values ``x_i`` of uncertainties ``e_i``: mean = ``sum x_i / n``, its
    variance ``sum e_i**2 / n**2``; median variance ``f(n)**2 sum e_i**2 / n**2`` with
    ``f(n) = median_error_factor(n)`` (``sqrt(pi / 2)`` for large ``n``, 1 for ``n <= 2``).  Each
    VAR_* array gets the same formula, so that ``ERR**2 = sum(VAR_*)`` is kept when it held.
    """
    if method not in COADD_METHODS:
        raise ValueError(f"unknown coadd method {method!r}; use one of {COADD_METHODS}")
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be (nints, ny, nx), got shape {data.shape}")
    shape = data.shape
    err = np.zeros(shape, np.float32) if err is None else np.asarray(err)
    var = {} if var is None else {k: np.asarray(v) for k, v in var.items()}
    dq = np.zeros(shape, np.uint32) if dq is None else np.asarray(dq, np.uint32)
    for name, array in (("err", err), ("dq", dq), *var.items()):
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape} but data has {shape}")
    usable = np.isfinite(data) & np.isfinite(err)
    if bad is not None:
        usable &= ~np.asarray(bad, bool)
    slices = block_slices(shape[0], nframes)
    nb = len(slices)
    out = np.empty((nb, *shape[1:]), np.float32)
    out_err = np.empty_like(out)
    out_var = {k: np.empty_like(out) for k in var}
    out_dq = np.empty((nb, *shape[1:]), np.uint32)
    nused = np.empty((nb, *shape[1:]), np.intp)
    for k, sl in enumerate(slices):  # a few blocks; every pixel and integration vectorised
        use = usable[sl]
        n = use.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            if method == "median":
                combined = combine_background(data[sl], err=err[sl], bad=~use, sigma=None)
                out[k] = combined.image[0]
                factor2 = median_error_factor(n) ** 2
            else:
                out[k] = np.where(use, data[sl], 0.0).sum(axis=0) / n
                factor2 = np.ones(n.shape)
            scale = np.where(n > 0, factor2 / np.maximum(n, 1) ** 2, np.nan)
            out_err[k] = np.sqrt(scale * np.where(use, err[sl] ** 2, 0.0).sum(axis=0))
            for name, array in var.items():
                out_var[name][k] = scale * np.where(use, array[sl], 0.0).sum(axis=0)
        empty = n == 0
        out[k][empty] = np.nan
        used_flags = np.bitwise_or.reduce(np.where(use, dq[sl], 0), axis=0)
        all_flags = np.bitwise_or.reduce(dq[sl], axis=0) | np.uint32(empty_flag)
        out_dq[k] = np.where(empty, all_flags, used_flags)
        nused[k] = n
    return CoaddResult(out, out_err, out_var, out_dq, nused, tuple(slices))
