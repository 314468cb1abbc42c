"""Re-implementation of the prior art's default bad-pixel chain, for the benchmark only.

Written from the prose of ``../shared/reference/spaceklip-imagetools-spec.md`` section 3 (no
code copied): the ``sigclip`` detector with its defaults (sigma 5, neg_sigma 1, shifts +-1, up to
10 iterations, background clip at 10 MAD-sigma), then the repairs ``timemed``, ``localmed`` and
``medfilt`` (size 4, bad pixels included in the median), with the working map of section 3.1:
bad = (NaN or DQ & do_not_use) and not (DQ & non_science).  Its defects are kept on purpose
(1-sigma negative cut on the global background, neighbour std of 8 samples, medfilt including the
bad pixels and zeros, every flag cleared at the end), per integration, in Python loops as the
original.  Not part of the package.
"""

import warnings
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["PriorArtResult", "prior_art_chain", "sigclip", "timemed", "localmed", "medfilt"]

_MAD = 1.482602218505602


def _medabsdev(values):
    values = values[np.isfinite(values)]
    return _MAD * np.median(np.abs(values - np.median(values)))


def _neighbour_stack(image, shift_x, shift_y):
    """Rolled copies of an edge-padded image for every (ix, iy) != (0, 0) in the shift grid."""
    shift_x = sorted(set(shift_x) | {0})
    shift_y = sorted(set(shift_y) | {0})
    pad = max(max(abs(s) for s in shift_x), max(abs(s) for s in shift_y))
    padded = np.pad(image, pad, mode="edge")
    ny, nx = image.shape
    out = [
        padded[pad + iy:pad + iy + ny, pad + ix:pad + ix + nx]
        for ix in shift_x for iy in shift_y if (ix, iy) != (0, 0)
    ]
    return np.array(out)


def sigclip(data, bad, nonsci, *, sigma=5.0, neg_sigma=1.0, shift_x=(-1, 0, 1),
            shift_y=(-1, 0, 1), maxiter=10):
    """The prior art's iterative neighbour sigma clipping; returns the updated map (copy)."""
    out = bad.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(data.shape[0]):
            work = data[k].astype(float)
            work[bad[k]] = np.nan
            m0, s0 = np.nanmedian(work), _medabsdev(work)
            with np.errstate(invalid="ignore"):
                keep = work < m0 + 10.0 * s0
            m, s = np.nanmedian(work[keep]), _medabsdev(work[keep])
            with np.errstate(invalid="ignore"):
                flag = bad[k] | (work < m - neg_sigma * s)
            flag &= ~nonsci[k]
            work[flag] = np.nan
            for it in range(maxiter):
                stack = _neighbour_stack(work, shift_x, shift_y)
                nmed = np.nanmedian(stack, axis=0)
                nstd = np.nanstd(stack, axis=0)
                with np.errstate(invalid="ignore"):
                    add = ((work - nmed) > sigma * nstd) & ~flag
                flag |= add
                work[add] = np.nan
                if it > 0 and not add.any():
                    break
            out[k] |= flag & ~nonsci[k]
    return out


def timemed(data, err, bad):
    """Median of the good integrations for pixels bad in some but not all integrations."""
    data, err, bad = data.copy(), err.copy(), bad.copy()
    some = bad.any(axis=0) & ~bad.all(axis=0)
    ys, xs = np.nonzero(some)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        col = np.where(bad[:, ys, xs], np.nan, data[:, ys, xs])
        ecol = np.where(bad[:, ys, xs], np.nan, err[:, ys, xs])
        med, emed = np.nanmedian(col, axis=0), np.nanmedian(ecol, axis=0)
    for k in range(data.shape[0]):
        sel = bad[k, ys, xs]
        data[k, ys[sel], xs[sel]] = med[sel]
        err[k, ys[sel], xs[sel]] = emed[sel]
        bad[k, ys[sel], xs[sel]] = False
    return data, err, bad


def localmed(data, err, bad, *, shift_x=(-1, 0, 1), shift_y=(-1, 0, 1)):
    """Median of the good neighbours (shift grid); stays bad if none is good."""
    data, err, bad = data.copy(), err.copy(), bad.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(data.shape[0]):
            if not bad[k].any():
                continue
            d, e = data[k].astype(float), err[k].astype(float)
            d[bad[k]] = np.nan
            e[bad[k]] = np.nan
            med = np.nanmedian(_neighbour_stack(d, shift_x, shift_y), axis=0)
            emed = np.nanmedian(_neighbour_stack(e, shift_x, shift_y), axis=0)
            fix = bad[k] & np.isfinite(med)
            data[k][fix] = med[fix]
            err[k][fix] = emed[fix]
            bad[k][fix] = False
    return data, err, bad


def medfilt(data, err, bad, *, size=4):
    """scipy median filter of the NaN->0 frame (bad pixels included); all flags cleared."""
    data, err = data.copy(), err.copy()
    for k in range(data.shape[0]):
        if not bad[k].any():
            continue
        fd = ndimage.median_filter(np.nan_to_num(data[k], nan=0.0), size=size)
        fe = ndimage.median_filter(np.nan_to_num(err[k], nan=0.0), size=size)
        data[k][bad[k]] = fd[bad[k]]
        err[k][bad[k]] = fe[bad[k]]
    return data, err, np.zeros_like(bad)


class PriorArtResult(NamedTuple):
    data: np.ndarray
    err: np.ndarray
    flagged: np.ndarray  # working map after detection (what the chain considered bad)
    remaining: np.ndarray  # map after the repairs (always empty after medfilt)


def prior_art_chain(data, err, dq, *, do_not_use, non_science,
                    methods=("sigclip", "timemed", "localmed", "medfilt")):
    """The prior art's ``fix_bad_pixels`` with ``method='sigclip+timemed+localmed+medfilt'``."""
    nonsci = (dq & non_science) != 0
    bad = (np.isnan(data) | ((dq & do_not_use) != 0)) & ~nonsci
    flagged = bad
    for name in methods:
        if name == "sigclip":
            bad = sigclip(data, bad, nonsci)
            flagged = bad.copy()
        elif name == "timemed":
            data, err, bad = timemed(data, err, bad)
        elif name == "localmed":
            data, err, bad = localmed(data, err, bad)
        elif name == "medfilt":
            data, err, bad = medfilt(data, err, bad)
        else:
            raise ValueError(name)
    return PriorArtResult(data, err, flagged, bad)
