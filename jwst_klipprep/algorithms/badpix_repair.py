"""Simple bad-pixel repairs: temporal and local medians, and the `Repair` result they share.

A repair takes the data, a ``bad`` mask (True = pixel to repair) and optionally ERR, and returns a
`Repair` with new arrays; pixels it could not repair keep their value and stay in ``remaining``.
Bad or non-finite pixels never serve as donors.  The interpolating repair is in `badpix_interp`.
"""

from typing import NamedTuple

import numpy as np

from jwst_klipprep.algorithms.badpix_common import (
    CHUNK,
    VAR_MEDIAN,
    Gather,
    check_cube,
    check_like,
    footprint_offsets,
    nanmad_sigma,
    nanmedian,
    prepare,
)

__all__ = ["Repair", "repair_local", "repair_temporal"]


class Repair(NamedTuple):
    """Result of a repair method."""

    #: Copy of the data with the repaired pixels replaced, same shape and dtype.
    data: np.ndarray
    #: Copy of ERR with the repaired pixels' uncertainty, or None when no ERR was given.
    err: np.ndarray | None
    #: True where a value was produced.
    repaired: np.ndarray
    #: True where a pixel was bad and could not be repaired (value left as it was).
    remaining: np.ndarray


def finish_repair(data, err, bad, idx, value, value_err):
    """Build the `Repair` for flat indices ``idx`` (finite ``value`` only)."""
    ok = np.isfinite(value)
    if value_err is not None:
        ok &= np.isfinite(value_err)
    idx = idx[ok]
    out = data.copy()
    out.reshape(-1)[idx] = value[ok]
    out_err = None
    if err is not None:
        out_err = err.copy()
        out_err.reshape(-1)[idx] = value_err[ok]
    repaired = np.zeros(data.shape, bool)
    repaired.reshape(-1)[idx] = True
    return Repair(out, out_err, repaired, bad & ~repaired)


def start_repair(data, bad, err):
    data = check_cube("data", data)
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"data must be a floating-point array, got dtype {data.dtype}")
    bad = check_like("bad", bad, data.shape)
    if bad.dtype != bool:
        raise TypeError(f"bad must be a boolean array (True = bad pixel), got dtype {bad.dtype}")
    _, err, _, good = prepare(data, err, bad)
    return data, bad, err, good


def _combine_err(expected, scatter, n):
    """ERR of an estimate: expected pixel noise (+) the median's error (pi/2) scatter^2 / n."""
    return np.sqrt(expected**2 + VAR_MEDIAN * scatter**2 / n)


def repair_temporal(data, bad, *, err=None, min_good=3):
    """Replace each bad pixel by the median of the same pixel in its good integrations.

    Parameters
    ----------
    data : ndarray of float, shape (nints, ny, nx)
        Not modified.
    bad : ndarray of bool, shape (nints, ny, nx)
        True = pixel to repair; bad pixels never serve as donors.
    err : ndarray, shape (nints, ny, nx), optional
        1-sigma uncertainties; repaired pixels get
        ``sqrt(e**2 + (pi/2) s**2 / n)`` where ``e`` is the median ERR of the ``n`` donors and
        ``s`` the larger of ``e`` and the donors' MAD-sigma (the noise the pixel would have had,
        plus the error of the median).
    min_good : int, optional
        Fewest good integrations needed (>= 1).

    Returns
    -------
    Repair
        Pixels with fewer than ``min_good`` good integrations are left in ``remaining``.
    """
    data, bad, err, good = start_repair(data, bad, err)
    if min_good < 1:
        raise ValueError("min_good must be >= 1")
    nints = data.shape[0]
    cols = np.flatnonzero(bad.reshape(nints, -1).any(axis=0))
    g = good.reshape(nints, -1)[:, cols]
    v = np.where(g, data.reshape(nints, -1)[:, cols], np.nan).astype(np.float64)
    med, n = nanmedian(v, axis=0)
    med = np.where(n >= min_good, med, np.nan)
    value_err = None
    if err is not None:
        e = nanmedian(np.where(g, err.reshape(nints, -1)[:, cols], np.nan), axis=0)[0]
        scatter = np.fmax(e, nanmad_sigma(v, med, axis=0)) if nints > 1 else e
        value_err = _combine_err(e, scatter, np.maximum(n, 1))
    kk, cc = np.nonzero(bad.reshape(nints, -1)[:, cols])
    idx = kk * (data.shape[1] * data.shape[2]) + cols[cc]
    return finish_repair(data, err, bad, idx, med[cc], None if err is None else value_err[cc])


def repair_local(data, bad, *, err=None, footprint=3, min_good=3):
    """Replace each bad pixel by the median of its good spatial neighbours.

    Parameters
    ----------
    data : ndarray of float, shape (nints, ny, nx)
        Not modified.
    bad : ndarray of bool, shape (nints, ny, nx)
        True = pixel to repair; bad pixels never serve as donors.
    err : ndarray, shape (nints, ny, nx), optional
        1-sigma uncertainties; repaired pixels get ``sqrt(e**2 + (pi/2) s**2 / n)`` with ``e``
        the median ERR of the ``n`` donors and ``s`` the larger of ``e`` and their MAD-sigma
        (which includes the local structure).
    footprint : int or 2-D array of bool, optional
        Odd box size or explicit odd-sided footprint (centre excluded).
    min_good : int, optional
        Fewest good neighbours needed (>= 1).

    Returns
    -------
    Repair
    """
    data, bad, err, good = start_repair(data, bad, err)
    if min_good < 1:
        raise ValueError("min_good must be >= 1")
    inner, _ = footprint_offsets(footprint)
    pad = int(np.abs(inner).max())
    vals = Gather(np.where(good, data, np.nan), pad)
    errs = Gather(np.where(good, err, np.nan), pad) if err is not None else None
    offs = vals.offsets(inner)
    idx = np.flatnonzero(bad)
    value = np.full(idx.size, np.nan)
    value_err = np.full(idx.size, np.nan) if err is not None else None
    for start in range(0, idx.size, CHUNK):
        sl = slice(start, start + CHUNK)
        base = vals.base(*np.unravel_index(idx[sl], data.shape))
        v = vals(base, offs)
        med, n = nanmedian(v)
        value[sl] = np.where(n >= min_good, med, np.nan)
        if errs is not None:
            e = nanmedian(errs(base, offs))[0]
            scatter = np.fmax(e, nanmad_sigma(v, med))
            value_err[sl] = _combine_err(e, scatter, np.maximum(n, 1))
    return finish_repair(data, err, bad, idx, value, value_err)
