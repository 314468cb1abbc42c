"""Per-integration scale (and offset) of a background image, fitted on background pixels.

`fit_background_scale` fits ``data ~ scale * background + offset`` on background-dominated
pixels (chosen e.g. by `jwst_klipprep.algorithms.background_level.select_background_pixels`);
`jwst_klipprep.algorithms.background_exposures.subtract_combined_background` applies the result.

Conventions: see `jwst_klipprep.algorithms.background`.
"""

import operator
from typing import NamedTuple

import numpy as np

from jwst_klipprep.algorithms.robust_stats import (
    as_float_array,
    as_mask,
    check_sigma,
    clip_correction,
    clipped_stats,
    subsample,
)

__all__ = ["ScaleFit", "fit_background_scale"]


class ScaleFit(NamedTuple):
    """Result of `fit_background_scale`; arrays have shape ``(nints,)``."""

    #: Fitted multiplicative factor of the background image.
    scale: np.ndarray
    #: Fitted additive offset (0 when ``fit_offset=False``), data units.
    offset: np.ndarray
    #: 1-sigma uncertainty of ``scale`` from the residual scatter.
    scale_err: np.ndarray
    #: 1-sigma uncertainty of ``offset`` (0 when ``fit_offset=False``).
    offset_err: np.ndarray
    #: Number of pixels used in the final iteration.
    npix: np.ndarray


def fit_background_scale(data, background, *, good, fit_offset=True, sigma=3.0, maxiters=5):
    """Per-integration least-squares fit ``data ~ scale * background + offset``.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Target integrations.  Not modified.
    background : ndarray, shape (ny, nx) or (nints, ny, nx)
        Background image (e.g. `CombinedBackground.image` indexed by chunk).
    good : ndarray of bool, shape (ny, nx) or (nints, ny, nx)
        **True = use**: background-dominated pixels (see `select_background_pixels`).
        Non-finite data or background are dropped as well.
    fit_offset : bool, optional
        Also fit an additive offset (default).  Needs structure in ``background``: for a flat
        background scale and offset are degenerate and NaN is returned.
    sigma : float or None, optional
        Pixels with ``|residual| > sigma * std`` are dropped and the fit repeated (the first
        scale estimate is ``1.4826 * MAD``, later ones the standard deviation).  None: no
        clipping.
    maxiters : int or None, optional
        Maximum number of clipping iterations (None: until convergence, at most 100).

    Returns
    -------
    ScaleFit
        ``scale``, ``offset``, ``scale_err``, ``offset_err`` (float64) and ``npix`` (intp),
        each ``(nints,)``.  NaN where fewer pixels than parameters + 1 remain.

    Notes
    -----
    Unweighted least squares; the errors come from the residual scatter, assuming independent
    pixels.  Noise in ``background`` biases ``scale`` low by ``var(noise) / var(background)``
    (errors in variables), which is why a median-combined background should be used.
    """
    data = as_float_array(data, "data", ndim=3)
    nints = data.shape[0]
    background = as_float_array(background, "background")
    try:
        b = np.broadcast_to(background, data.shape).reshape(nints, -1).astype(np.float64)
    except ValueError:
        raise ValueError(f"background shape {background.shape} does not match data "
                         f"{data.shape}") from None
    good = as_mask(good, data.shape, "good")
    if good is None:
        raise ValueError("good is required (True = background-dominated pixel)")
    check_sigma(sigma, maxiters)
    d = data.reshape(nints, -1).astype(np.float64)
    w0 = good.reshape(nints, -1) & np.isfinite(d) & np.isfinite(b)
    # Centre both on their means over the usable pixels (per integration): keeps the normal
    # equations, built from running sums, free of cancellation.  Converted back at the end.
    with np.errstate(invalid="ignore", divide="ignore"):
        n0 = np.count_nonzero(w0, axis=1)
        cb = np.where(w0, b, 0.0).sum(1) / n0
        cd = np.where(w0, d, 0.0).sum(1) / n0
    cb, cd = np.nan_to_num(cb), np.nan_to_num(cd)
    b -= cb[:, None]
    d -= cd[:, None]
    b[~w0] = 0.0
    d[~w0] = 0.0

    def sums(rows, cols, sign=None):
        # n, Sb, Sd, Sbb, Sbd, Sdd of the given pixels, per integration.
        bv, dv = b[rows, cols], d[rows, cols]
        weights = (None, bv, dv, bv * bv, bv * dv, dv * dv)
        out = []
        for wgt in weights:
            if sign is not None:
                wgt = sign if wgt is None else wgt * sign
            out.append(np.bincount(rows, weights=wgt, minlength=nints).astype(np.float64))
        return np.array(out)

    # Full sums once (b and d are zero outside w0), then only the pixels that change.
    tot = np.array([n0, b.sum(1), d.sum(1), np.einsum("ij,ij->i", b, b),
                    np.einsum("ij,ij->i", b, d), np.einsum("ij,ij->i", d, d)], dtype=np.float64)
    npar = 2 if fit_offset else 1
    w = w0
    niter = 100 if maxiters is None else operator.index(maxiters)
    resid = np.empty_like(d)
    with np.errstate(invalid="ignore", divide="ignore"):
        for it in range(niter + 1):
            n, sb, sd, sbb, sbd, sdd = tot
            sbb_raw = sbb + 2.0 * cb * sb + cb**2 * n  # sums of the uncentred background
            sbd_raw = sbd + cb * sd + cd * sb + cb * cd * n
            if fit_offset:  # d_c = scale * b_c + o_c
                det = n * sbb - sb * sb
                det = np.where(det > 1e-12 * n * sbb, det, np.nan)
                scale = (n * sbd - sb * sd) / det
                o_c = (sd - scale * sb) / n
            else:  # d = scale * b
                scale = sbd_raw / np.where(sbb_raw > 0, sbb_raw, np.nan)
                o_c = scale * cb - cd
            chi2 = (sdd - 2 * scale * sbd - 2 * o_c * sd + scale**2 * sbb
                    + 2 * scale * o_c * sb + o_c**2 * n)
            rms = np.sqrt(np.maximum(chi2, 0.0) / (n - npar))
            if sigma is None or it == niter:
                break
            np.multiply(b, scale[:, None], out=resid)
            np.subtract(d, resid, out=resid)
            resid -= o_c[:, None]
            if it == 0:  # robust start: 1.4826 * MAD, on a subsample
                sub = subsample(np.where(w, resid, np.nan), data.shape[-1])
                med = clipped_stats(sub, sigma=None, maxiters=0).median
                mad = clipped_stats(np.abs(sub - med[:, None]), sigma=None, maxiters=0).median
                spread = 1.4826 * mad
            else:
                spread = rms
            np.abs(resid, out=resid)
            new_w = (resid <= sigma * spread[:, None]) & w0
            changed = new_w ^ w
            if not changed.any():
                break
            rows, cols = np.nonzero(changed)
            tot = tot + sums(rows, cols, np.where(new_w[rows, cols], 1.0, -1.0))
            w = new_w
        rms = rms / clip_correction(sigma)
        offset = o_c + cd - scale * cb
        if fit_offset:
            scale_err = rms * np.sqrt(n / det)
            offset_err = rms * np.sqrt(sbb_raw / det)
        else:
            scale_err = rms / np.sqrt(sbb_raw)
            offset_err = np.zeros(nints)
    npix = np.count_nonzero(w, axis=1)
    bad_fit = npix < npar + 1
    for a in (scale, offset, scale_err, offset_err):
        a[bad_fit] = np.nan
    return ScaleFit(scale, offset, scale_err, offset_err, npix)
