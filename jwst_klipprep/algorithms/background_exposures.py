"""Dedicated background exposures (mainly MIRI): combine, subtract, scale.

`combine_background` makes a robust, NaN- and mask-aware median of the background
integrations, optionally in time chunks (`chunk_slices`, `assign_background_chunks`);
`subtract_combined_background` subtracts it (times a scale and plus an offset per integration,
fitted by `jwst_klipprep.algorithms.background_scale.fit_background_scale`) and propagates its
uncertainty.

Conventions: see `jwst_klipprep.algorithms.background`.
"""

import logging
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jwst_klipprep.algorithms.robust_stats import (
    as_float_array,
    check_sigma,
    clipped_stats,
    median_error_factor,
    scatter_sigma,
)

__all__ = [
    "CombinedBackground",
    "SubtractedBackground",
    "assign_background_chunks",
    "chunk_slices",
    "combine_background",
    "subtract_combined_background",
]

log = logging.getLogger(__name__)

_ERROR_METHODS = ("err", "scatter", "max")
_CHUNK_MAPPINGS = ("index", "proportional")
_BLOCK = 8192  # pixels per block in combine_background (bounds the temporary memory)


class CombinedBackground(NamedTuple):
    """Result of `combine_background`; arrays have shape ``(nchunks, ny, nx)``."""

    #: Robust (sigma-clipped) median background per chunk; NaN where ``valid`` is False.
    image: np.ndarray
    #: 1-sigma uncertainty of ``image`` (error of a median); NaN where it cannot be computed.
    err: np.ndarray
    #: Number of integrations that entered each median (after masking and clipping).
    nused: np.ndarray
    #: True where at least one integration was usable.
    valid: np.ndarray
    #: ``slices[j][k]``: integrations of input stack ``j`` that make chunk ``k``.
    slices: tuple


class SubtractedBackground(NamedTuple):
    """Result of `subtract_combined_background`; arrays have shape ``(nints, ny, nx)``."""

    #: Background-subtracted data (NaN where no valid background).
    data: np.ndarray
    #: Updated uncertainty, ``sqrt(err**2 + var_added)``.
    err: np.ndarray
    #: Variance added by the subtraction, ``(scale * background_err)**2``.
    var_added: np.ndarray
    #: True where the background (or its error) was not finite; flag these pixels DO_NOT_USE.
    no_background: np.ndarray


# --------------------------------------------------------------------------------------------
# Time chunks
# --------------------------------------------------------------------------------------------


def chunk_slices(nints, *, nints_per_median=None):
    """Split ``nints`` integrations into consecutive time chunks.

    Parameters
    ----------
    nints : int
        Number of integrations of **one** exposure (stack); chunks are always computed per
        stack, never on a concatenation of several exposures.
    nints_per_median : int or None, optional
        Chunk length.  None (default), or a value ``>= nints``, gives a single chunk.

    Returns
    -------
    list of slice
        ``max(nints // nints_per_median, 1)`` slices covering ``range(nints)`` in order.  All
        chunks have ``nints_per_median`` integrations except the last, which also takes the
        remainder (it holds ``nints_per_median`` to ``2 * nints_per_median - 1``).

    Examples
    --------
    >>> chunk_slices(7, nints_per_median=3)
    [slice(0, 3, None), slice(3, 7, None)]
    """
    nints = operator.index(nints)
    if nints < 1:
        raise ValueError(f"nints must be >= 1, got {nints}")
    if nints_per_median is None:
        return [slice(0, nints)]
    n = operator.index(nints_per_median)
    if n < 1:
        raise ValueError(f"nints_per_median must be >= 1 or None, got {n}")
    nchunks = max(nints // n, 1)
    return [slice(k * n, (k + 1) * n if k < nchunks - 1 else nints) for k in range(nchunks)]


def assign_background_chunks(target_nints, background_nints, *, nints_per_median=None,
                             mapping="index"):
    """Background chunk to subtract from each target integration.

    Parameters
    ----------
    target_nints : int
        Number of integrations of the target (science or reference) exposure.
    background_nints : int or sequence of int
        Number of integrations of each background stack passed to `combine_background`.
    nints_per_median : int or None, optional
        The value given to `combine_background`.
    mapping : {"index", "proportional"}, optional
        ``"index"`` (default): the target is split with `chunk_slices` and its chunk ``k`` uses
        background chunk ``k``; the two must have the same number of chunks, otherwise a
        ValueError says so.  ``"proportional"``: target integration ``i`` uses the background
        chunk that contains the same fraction of the exposure, i.e. the chunk of background
        integration ``floor((i + 0.5) * nb / target_nints)`` of the first stack (``nb`` its
        nints); always possible, assumes exposures of similar duration.  When the background
        has a single chunk every integration gets 0 whatever ``mapping``.

    Returns
    -------
    ndarray of intp, shape (target_nints,)
        Index into the ``nchunks`` axis of `CombinedBackground`.
    """
    if mapping not in _CHUNK_MAPPINGS:
        raise ValueError(f"mapping must be one of {_CHUNK_MAPPINGS}, got {mapping!r}")
    target_nints = operator.index(target_nints)
    bnints = [background_nints] if np.ndim(background_nints) == 0 else list(background_nints)
    if not bnints:
        raise ValueError("background_nints is empty")
    bchunks = [chunk_slices(nb, nints_per_median=nints_per_median) for nb in bnints]
    counts = sorted({len(c) for c in bchunks})
    if len(counts) > 1:
        raise ValueError(f"background stacks with nints {bnints} give different numbers of "
                         f"chunks for nints_per_median={nints_per_median}; use "
                         "nints_per_median=None or background exposures with equal NINTS")
    nb_chunks = counts[0]
    tchunks = chunk_slices(target_nints, nints_per_median=nints_per_median)
    out = np.zeros(target_nints, dtype=np.intp)
    if nb_chunks == 1:
        return out
    if mapping == "index":
        if len(tchunks) != nb_chunks:
            raise ValueError(
                f"target with {target_nints} integrations has {len(tchunks)} chunk(s) of "
                f"nints_per_median={nints_per_median} but the background ({bnints} integrations) "
                f"has {nb_chunks}; use mapping='proportional', a nints_per_median giving equal "
                "counts, or nints_per_median=None")
        for k, sl in enumerate(tchunks):
            out[sl] = k
        return out
    chunk_of = np.empty(bnints[0], dtype=np.intp)
    for k, sl in enumerate(bchunks[0]):
        chunk_of[sl] = k
    pos = np.floor((np.arange(target_nints) + 0.5) * bnints[0] / target_nints).astype(np.intp)
    return chunk_of[np.clip(pos, 0, bnints[0] - 1)]


# --------------------------------------------------------------------------------------------
# Dedicated background exposures
# --------------------------------------------------------------------------------------------


def _as_stacks(arrays, name, *, like=None, boolean=False):
    if arrays is None:
        return None
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        arrays = [arrays]
    out = []
    for j, a in enumerate(arrays):
        if boolean:
            a = np.asarray(a)
            if a.dtype != bool:
                raise TypeError(f"{name} must be boolean (True = excluded), got {a.dtype}")
            if a.ndim != 3:
                raise ValueError(f"{name}[{j}] must be (nints, ny, nx), got shape {a.shape}")
        else:
            a = as_float_array(a, f"{name}[{j}]", ndim=3)
        out.append(a)
    if like is not None:
        shapes, like_shapes = [a.shape for a in out], [b.shape for b in like]
        if shapes != like_shapes:
            raise ValueError(f"{name} must match data stack by stack: shapes {shapes} vs "
                             f"{like_shapes}")
    return out


def combine_background(data, *, err=None, bad=None, nints_per_median=None, sigma=3.0,
                       maxiters=5, error_method=None):
    """Robust median of background integrations, optionally per time chunk.

    Parameters
    ----------
    data : ndarray or sequence of ndarray, each shape (nints_j, ny, nx)
        Background integrations, one array per background exposure (stack).  Not modified.
    err : ndarray or sequence of ndarray, optional
        1-sigma uncertainties, same structure and shapes as ``data``.
    bad : ndarray or sequence of ndarray of bool, optional
        True = excluded (e.g. DO_NOT_USE), same structure as ``data``.  Non-finite ``data``
        (and non-finite ``err`` when given) are excluded too.
    nints_per_median : int or None, optional
        Chunk length, applied to **each stack separately** with `chunk_slices`; chunk ``k`` of
        the result pools chunk ``k`` of every stack.  All stacks must give the same number of
        chunks.  None: one chunk with every integration.
    sigma : float or None, optional
        Clipping threshold in standard deviations about the median along the integration axis
        (None: no clipping, plain median of the valid values).
    maxiters : int or None, optional
        Maximum number of clipping iterations (None: until convergence).
    error_method : {"err", "scatter", "max"} or None, optional
        Per-integration sigma used for the error of the median: ``"err"`` = root mean square
        of ``err`` over the integrations used; ``"scatter"`` = their clipped standard deviation
        (made unbiased for Gaussian data: ``ddof``, ``c4(n)`` and clipping-truncation
        corrections; NaN for fewer than 2 values);
        ``"max"`` = the larger of the two.  None (default): ``"err"`` when ``err`` is given,
        else ``"scatter"``.

    Returns
    -------
    CombinedBackground
        ``image``, ``err`` (float, dtype of ``data``), ``nused`` (intp) and ``valid`` (bool),
        each ``(nchunks, ny, nx)``, and ``slices``.

    Notes
    -----
    The error of the median is ``median_error_factor(n) * sigma_pix / sqrt(n)`` with ``n`` the
    number of integrations used (``sqrt(pi/2) sigma / sqrt(n)`` for large ``n``), not the error
    of a mean.  ``"err"`` is the default because the pipeline ERR is a per-pixel model without
    sampling noise; ``"scatter"`` also captures excess noise (e.g. background drifts) but
    fluctuates by ``1/sqrt(2n)``.  Both are calibrated to a few per cent for ``n >= 3`` (tested
    by simulation).

    With a single stack this is also a fast NaN-aware robust median of any cube, e.g. the
    science median image for `select_background_pixels`.
    """
    stacks = _as_stacks(data, "data")
    errs = _as_stacks(err, "err", like=stacks)
    bads = _as_stacks(bad, "bad", like=stacks, boolean=True)
    check_sigma(sigma, maxiters)
    if error_method is None:
        error_method = "err" if errs is not None else "scatter"
    if error_method not in _ERROR_METHODS:
        raise ValueError(f"error_method must be one of {_ERROR_METHODS} or None, "
                         f"got {error_method!r}")
    if error_method in ("err", "max") and errs is None:
        raise ValueError(f"error_method={error_method!r} needs err")
    frame = stacks[0].shape[1:]
    if any(s.shape[1:] != frame for s in stacks):
        raise ValueError(f"background stacks differ in frame shape: {[s.shape for s in stacks]}")
    slices = [chunk_slices(s.shape[0], nints_per_median=nints_per_median) for s in stacks]
    if len({len(s) for s in slices}) > 1:
        raise ValueError(f"background stacks with nints {[s.shape[0] for s in stacks]} give "
                         f"different numbers of chunks for nints_per_median={nints_per_median}; "
                         "use nints_per_median=None or stacks with equal nints")
    nchunks = len(slices[0])
    dtype = np.result_type(*stacks, np.float32)
    npix = frame[0] * frame[1]
    image = np.empty((nchunks, npix), dtype)
    out_err = np.empty((nchunks, npix), dtype)
    nused = np.empty((nchunks, npix), np.intp)
    for k in range(nchunks):
        vals, e2 = [], []
        for j, s in enumerate(stacks):
            sl = slices[j][k]
            valid = np.isfinite(s[sl])
            if bads is not None:
                valid &= ~bads[j][sl]
            if errs is not None:
                valid &= np.isfinite(errs[j][sl])
                e2.append(np.square(errs[j][sl], dtype=dtype).reshape(-1, npix))
            vals.append(np.where(valid, s[sl], np.nan).reshape(-1, npix))
        vals = np.concatenate(vals)
        e2 = np.concatenate(e2) if e2 else None
        for p0 in range(0, npix, _BLOCK):
            p1 = min(p0 + _BLOCK, npix)
            block = vals[:, p0:p1]
            st = clipped_stats(np.ascontiguousarray(block.T), sigma=sigma, maxiters=maxiters)
            n = st.nused
            sig = None
            if error_method in ("scatter", "max"):
                sig = scatter_sigma(st.std, n, sigma)
            if error_method in ("err", "max"):
                used = (block >= st.vmin) & (block <= st.vmax)  # NaN compares False
                with np.errstate(invalid="ignore", divide="ignore"):
                    sig_err = np.sqrt(np.where(used, e2[:, p0:p1], 0.0).sum(0) / n)
                sig = sig_err if sig is None else np.fmax(sig, sig_err)
            with np.errstate(invalid="ignore", divide="ignore"):
                out_err[k, p0:p1] = median_error_factor(n) * sig / np.sqrt(n)
            image[k, p0:p1] = st.median
            nused[k, p0:p1] = n
    shape = (nchunks, *frame)
    valid = nused.reshape(shape) > 0
    log.debug("combined %d background stack(s) into %d chunk(s); %d pixel(s) without data",
              len(stacks), nchunks, int(np.count_nonzero(~valid)))
    return CombinedBackground(image.reshape(shape), out_err.reshape(shape), nused.reshape(shape),
                              valid, tuple(tuple(s) for s in slices))


def subtract_combined_background(data, err, background, background_err, *, chunk_index=None,
                                 scale=None, offset=None):
    """Subtract a (chunked, optionally scaled) background image from every integration.

    Parameters
    ----------
    data, err : ndarray, shape (nints, ny, nx)
        Target integrations and their 1-sigma uncertainties.  Not modified.
    background, background_err : ndarray, shape (nchunks, ny, nx) or (ny, nx)
        Combined background and its uncertainty (`CombinedBackground.image` / ``.err``).
    chunk_index : array_like of int, shape (nints,), optional
        Background chunk for each integration (`assign_background_chunks`).  Required when
        ``nchunks > 1``; None means chunk 0.
    scale : array_like, shape (nints,), optional
        Multiplicative factor per integration (`ScaleFit.scale`); default 1.  A NaN (failed
        fit) makes the whole integration ``no_background``: replace it first if that is not
        wanted.
    offset : array_like, shape (nints,), optional
        Additive offset per integration (`ScaleFit.offset`), subtracted too; default 0.

    Returns
    -------
    SubtractedBackground
        ``data - scale * background[chunk_index] - offset``, ``err`` with the background
        variance added in quadrature, the added variance ``(scale * background_err)**2`` and
        the ``no_background`` mask (data, err and var_added are NaN there).

    Notes
    -----
    The uncertainty of ``scale`` and ``offset`` (correlated over the whole frame) is not added
    per pixel; record `ScaleFit.scale_err` instead.  ``var_added`` does not depend on the
    target's flux, so ``VAR_RNOISE`` (the source-independent variance term) is its natural
    home; adding it to any single ``VAR_*`` array keeps ``ERR**2 = sum(VAR_*)``.
    """
    data = as_float_array(data, "data", ndim=3)
    err = as_float_array(err, "err", ndim=3)
    if err.shape != data.shape:
        raise ValueError(f"err shape {err.shape} differs from data shape {data.shape}")
    background = as_float_array(background, "background")
    background_err = as_float_array(background_err, "background_err")
    if background.ndim == 2:
        background, background_err = background[None], background_err[None]
    if background.ndim != 3 or background.shape[1:] != data.shape[1:]:
        raise ValueError(f"background shape {background.shape} does not match the data frame "
                         f"{data.shape[1:]} (different subarray or crop?)")
    if background_err.shape != background.shape:
        raise ValueError(f"background_err shape {background_err.shape} differs from background "
                         f"shape {background.shape}")
    nints, nchunks = data.shape[0], background.shape[0]
    if chunk_index is None:
        if nchunks != 1:
            raise ValueError(f"background has {nchunks} chunks: pass chunk_index "
                             "(see assign_background_chunks)")
        chunk_index = np.zeros(nints, np.intp)
    chunk_index = np.asarray(chunk_index)
    if (chunk_index.shape != (nints,) or not np.issubdtype(chunk_index.dtype, np.integer)
            or chunk_index.min() < 0 or chunk_index.max() >= nchunks):
        raise ValueError(f"chunk_index must be {nints} integers in [0, {nchunks})")
    dtype = data.dtype
    scale = np.ones(nints, dtype) if scale is None else np.asarray(scale, dtype)
    offset = np.zeros(nints, dtype) if offset is None else np.asarray(offset, dtype)
    if scale.shape != (nints,) or offset.shape != (nints,):
        raise ValueError(f"scale and offset must have shape ({nints},)")
    s3 = scale[:, None, None]
    model = background.astype(dtype, copy=False)[chunk_index] * s3
    model += offset[:, None, None]
    var_added = np.square(background_err.astype(dtype, copy=False)[chunk_index] * s3)
    no_background = ~(np.isfinite(model) & np.isfinite(var_added))
    out = data - model
    with np.errstate(invalid="ignore"):
        out_err = np.sqrt(np.square(err) + var_added)
    out[no_background] = np.nan
    out_err[no_background] = np.nan
    var_added[no_background] = np.nan
    return SubtractedBackground(out, out_err, var_added, no_background)
