"""Where the star sits behind a coronagraph: a forward-model fit at the fitted offset.

Convention
----------
Offsets are ``(dy, dx)`` in detector pixels, 0-indexed array axis order: the star is at
``mask centre + offset_yx``. This is the `registration` convention with a model PSF centred on
the mask (``measure_shift`` returns where the image content sits relative to the reference).

The model is supplied by the caller as a callable ``model(offset_yx_px) -> ndarray (ny, nx)``:
the occulted PSF of a star at ``mask centre + offset_yx_px`` on the grid of the data stamp (the
mask centre at a position the callable knows; the same one as ``center_yx`` here). The
algorithm never sees the optics backend (see `jwst_klipprep.psf.stamps.make_model_callable`).

Method
------
The occulted PSF changes shape with the offset (the leak through the band-limited mask is not a
shifted copy of the PSF at the mask centre), so a fit against the model at zero offset is
biased: with the built-in MASK335R model the fitted shift overshoots the true offset by 12-13 %
(e.g. 33.7 mas for a 30 mas offset). Here the model is evaluated at the current estimate ``m``
of the offset and `~jwst_klipprep.algorithms.registration.measure_shift` fits, per
integration, a small residual shift ``r`` and a flux scale of that model to the data (weighted
least squares with ERR, robust re-weighting, NaN/flagged pixels excluded). The offset is then
updated by a Broyden (secant) step of the root finding ``r(m) = 0``::

    m_new = m - J^-1 r,     J ~ dr/dm, starting at -I,

with ``J`` updated from successive (m, r) pairs ("good" Broyden rank-one update) and the
model recomputed at the new offset. From ``J = -I`` the first step is the fixed-point update
``m + r``; the secant then measures the gain of the shift fit (1.13 above), so after the second
fit the estimate is within ~0.05 mas of the noiseless answer for offsets up to 40 mas. Where
the PSF changes much more than it moves (MIRI's four-quadrant masks: gains of 4-7 with cross
terms) ``jacobian_step`` measures ``J`` first by finite differences (two more model calls). At
``r = 0`` the data are the model *at the fitted offset*: only the model's own bias remains.
``iterations`` counts model re-evaluations after the first fit; ``converged`` is False when
the next update would still move the model by ``tol`` (2e-3 px) or more (with a poor model,
updates of 0.1-0.5 mas, far below its bias). Integrations share one model evaluation while
their offsets agree within ``model_tol``.

Where the model puts the mask
-----------------------------
``center_yx`` (e.g. CRPIX / MASKCEN) is a *detector* position: where a star at the mask centre
would land without the occulter. The model callable must put that point there; for stpsf with
the instrument wavefront on it is not the occulter centre (a -0.64 px image shift in y at F444W,
see `jwst_klipprep.psf.models`).

Fit region and weights
----------------------
Only pixels within ``fit_radius`` (default 20 px) of the mask centre are fitted; the model is
evaluated on the whole stamp (at least ``fit_radius + 9`` px from the mask centre, see
`extract_stamp`), so nothing wraps around. With exact stpsf optics 10, 20 and 30 px all give
<= 0.1 mas; against a wavefront error the radius moves the bias by a few mas either way. With
``err`` the fit is ERR-weighted; ``weights`` multiply that (e.g. the mask transmission ``T`` or
the prior art's ``T**2``): no bias with exact optics, 10-20 % less bias against an unknown
wavefront with stpsf models, more with the built-in one, so the caller chooses
(``benchmarks/bench_recenter.py``).

Combination and uncertainty
---------------------------
The per-integration offsets ``m + G^-1 r`` (``G = -J``; errors of `measure_shift` mapped by
``G^-1``, with ``err`` inflated by ``max(1, chi2_red)``) are combined by a sigma-clipped
inverse-variance weighted mean (median start); its uncertainty ``sqrt(1 / sum w) *
max(1, sqrt(chi2_red))`` per axis is statistical: a model mismatch that moves all integrations
alike is not in it (the caller adds a systematic floor, see ``recenter_frames``).

References
----------
Broyden, C. G. (1965). A class of methods for solving nonlinear simultaneous equations.
Math. Comp. 19(92), 577-593. doi:10.1090/S0025-5718-1965-0198670-6

Birge, R. T. (1932). The calculation of errors by the method of least squares. Phys. Rev.
40(2), 207-227. doi:10.1103/PhysRev.40.207
"""

import logging
import math
from typing import NamedTuple

import numpy as np

from .registration import _frames as _as_frames
from .registration import measure_shift

__all__ = [
    "StarOffset",
    "combine_offsets",
    "extract_stamp",
    "fit_region",
    "measure_star_offset",
]

log = logging.getLogger(__name__)

_GAIN_LIMITS = (0.3, 10.0)  # accepted range of the secant gain along a step
_MIN_SECANT_STEP = 2e-3  # px; smaller model moves do not update the secant


class StarOffset(NamedTuple):
    """Result of `measure_star_offset`; offsets are star minus mask centre, ``(dy, dx)`` px."""

    #: Offset of the star from the mask centre per integration, shape (nints, 2).
    offset_yx: np.ndarray
    #: 1-sigma uncertainty of `offset_yx`, shape (nints, 2).
    offset_err_yx: np.ndarray
    #: Robust combination over the integrations, shape (2,).
    combined_yx: np.ndarray
    #: 1-sigma uncertainty of `combined_yx` (formal and scatter, see module notes), shape (2,).
    combined_err_yx: np.ndarray
    #: Flux scale of the data relative to the model per integration, shape (nints,).
    scale: np.ndarray
    #: Reduced chi-square of the last fit per integration, shape (nints,).
    chi2_red: np.ndarray
    #: Fit rounds done (model offsets tried per integration): forward-model iterations + 1.
    niter: int
    #: Calls of the model callable (``niter`` when the integrations share one pointing).
    nmodel: int
    #: True when the next model update would be below ``tol`` and every used fit converged.
    converged: bool
    #: Integrations used in the combination (not clipped, fit succeeded), shape (nints,).
    used: np.ndarray


def fit_region(shape, center_yx, radius):
    """Pixels within ``radius`` of ``center_yx``.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (ny, nx).
    center_yx : (float, float)
        0-indexed (y, x) centre.
    radius : float or None
        Radius in pixels; None or inf selects every pixel.

    Returns
    -------
    ndarray of bool, shape ``shape``
    """
    if radius is None or not np.isfinite(radius):
        return np.ones(shape, bool)
    y = np.arange(shape[0]) - float(center_yx[0])
    x = np.arange(shape[1]) - float(center_yx[1])
    return (y[:, None] ** 2 + x[None, :] ** 2) <= float(radius) ** 2


def extract_stamp(frames, center_yx, half_size, fill=np.nan):
    """Cut a square stamp centred (to the nearest pixel) on ``center_yx``; no wrap-around.

    Parameters
    ----------
    frames : ndarray, shape (..., ny, nx)
        Frames (any leading axes). Not modified.
    center_yx : (float, float)
        0-indexed (y, x) position to centre on (e.g. the mask centre, ``CRPIX - 1``).
    half_size : int
        The stamp is ``2 * half_size + 1`` pixels on a side.
    fill : scalar, optional
        Value of stamp pixels that fall outside ``frames`` (NaN; use 0 / True for DQ or masks).

    Returns
    -------
    stamp : ndarray, shape (..., 2 * half_size + 1, 2 * half_size + 1)
        A copy, same dtype as ``frames`` (float when ``fill`` is NaN and ``frames`` is integer).
    origin_yx : ndarray of int, shape (2,)
        Frame index of stamp pixel (0, 0): frame position = stamp position + ``origin_yx``.
    center_in_stamp_yx : ndarray, shape (2,)
        ``center_yx - origin_yx``, the position of ``center_yx`` in the stamp.
    """
    frames = np.asarray(frames)
    half = int(half_size)
    if half < 0:
        raise ValueError(f"half_size must be >= 0, got {half_size}")
    center = np.asarray(center_yx, dtype=float)
    if center.shape != (2,) or not np.isfinite(center).all():
        raise ValueError(f"center_yx must be two finite numbers, got {center_yx!r}")
    origin = np.floor(center + 0.5).astype(int) - half
    size = 2 * half + 1
    dtype = frames.dtype
    if isinstance(fill, float) and math.isnan(fill) and not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    out = np.full(frames.shape[:-2] + (size, size), fill, dtype=dtype)
    ny, nx = frames.shape[-2:]
    y0, x0 = max(origin[0], 0), max(origin[1], 0)
    y1, x1 = min(origin[0] + size, ny), min(origin[1] + size, nx)
    if y1 > y0 and x1 > x0:
        out[..., y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]] = \
            frames[..., y0:y1, x0:x1]
    return out, origin, center - origin


def combine_offsets(offsets, errors, *, clip_sigma=3.0, max_iter=5):
    """Sigma-clipped inverse-variance weighted mean of per-integration offsets.

    Parameters
    ----------
    offsets : ndarray, shape (n, k)
        Per-integration values (e.g. ``(dy, dx)``); NaN rows are ignored.
    errors : ndarray, shape (n, k)
        Their 1-sigma errors (> 0; non-finite or non-positive rows are ignored).
    clip_sigma : float or None, optional
        Rejection threshold: a row is rejected when any component is further than
        ``clip_sigma * err * max(1, sqrt(chi2_red))`` from the mean. None: no clipping.
    max_iter : int, optional
        Maximum clipping passes.

    Returns
    -------
    mean : ndarray, shape (k,)
    mean_err : ndarray, shape (k,)
        ``sqrt(1 / sum w) * max(1, sqrt(chi2_red))`` per component, with
        ``chi2_red = sum w (x - mean)**2 / (n - 1)`` (the Birge ratio): the formal error when
        the values scatter as their errors say, else the scatter-based error.
    used : ndarray of bool, shape (n,)
        Rows kept.

    Notes
    -----
    The first pass is centred on the median, so one wild row cannot drag the mean before it is
    rejected. With one valid row the result is that row and its error; with none, NaN.
    """
    x = np.asarray(offsets, dtype=float)
    e = np.asarray(errors, dtype=float)
    if x.ndim != 2 or e.shape != x.shape:
        raise ValueError(f"offsets and errors must have the same (n, k) shape, got {x.shape} "
                         f"and {e.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(x).all(axis=1) & np.isfinite(e).all(axis=1) & (e > 0).all(axis=1)
    k = x.shape[1]
    if not valid.any():
        return np.full(k, np.nan), np.full(k, np.nan), valid
    used = valid.copy()
    if clip_sigma is not None:
        # first pass around the median with the MAD scale (robust), then around the weighted
        # mean with the errors inflated by the Birge ratio
        ref = np.median(x[used], axis=0)
        scale = np.maximum(e, 1.4826 * np.median(np.abs(x[used] - ref), axis=0))
        for _ in range(max(1, int(max_iter))):
            if used.sum() <= 2:
                break
            new_used = valid & ~(np.abs(x - ref) > clip_sigma * scale).any(axis=1)
            if not new_used.any() or np.array_equal(new_used, used):
                break
            used = new_used
            w = 1.0 / e[used] ** 2
            ref = np.sum(w * x[used], axis=0) / np.sum(w, axis=0)
            n = int(used.sum())
            chi2 = np.sum(w * (x[used] - ref) ** 2, axis=0) / max(n - 1, 1)
            scale = e * np.sqrt(np.maximum(1.0, chi2))
    w = 1.0 / e[used] ** 2
    mean = np.sum(w * x[used], axis=0) / np.sum(w, axis=0)
    n = int(used.sum())
    chi2 = np.sum(w * (x[used] - mean) ** 2, axis=0) / (n - 1) if n > 1 else np.zeros(k)
    mean_err = np.sqrt(1.0 / np.sum(w, axis=0)) * np.sqrt(np.maximum(1.0, chi2))
    return mean, mean_err, used


def _check_model(frame, shape):
    frame = np.asarray(frame, dtype=float)
    if frame.shape != shape:
        raise ValueError(f"model(offset) returned shape {frame.shape}, expected the data stamp "
                         f"shape {shape}")
    if not np.isfinite(frame).any():
        raise ValueError("model(offset) returned no finite pixel")
    return frame


def _groups(position):
    """Integrations sharing a model offset: {rounded offset: [indices]}."""
    groups = {}
    for i, (y, x) in enumerate(position):
        groups.setdefault((round(float(y), 6), round(float(x), 6)), []).append(i)
    return groups


class _CountedModel:
    """The model callable, shape-checked, with its calls counted (no cache: the caller's
    model backend caches frames, e.g. `jwst_klipprep.psf.models.MODEL_CACHE`)."""

    def __init__(self, model, shape):
        self.model, self.shape, self.calls = model, shape, 0

    def __call__(self, offset_yx):
        key = (round(float(offset_yx[0]), 6), round(float(offset_yx[1]), 6))
        self.calls += 1
        return _check_model(self.model(key), self.shape)


def _broyden(jac, step, dres):
    """Good-Broyden update of the 2x2 ``J ~ dr/dm`` from a model move and the residual change.

    Skipped for tiny moves, and when the gain it implies along the step is implausible (noise,
    or a fit that jumped to another minimum).
    """
    norm2 = float(step @ step)
    if not np.isfinite(norm2) or norm2 < _MIN_SECANT_STEP**2 or not np.isfinite(dres).all():
        return jac
    gain = -float(dres @ step) / norm2
    if not _GAIN_LIMITS[0] <= gain <= _GAIN_LIMITS[1]:
        return jac
    new = jac + np.outer(dres - jac @ step, step) / norm2
    try:
        if np.linalg.cond(new) > 1e3:
            return jac
    except np.linalg.LinAlgError:
        return jac
    return new


def _fd_jacobian(models, at, step, *, bad, robust, max_iter):
    """``J = dr/dm`` at ``at``: the shift of ``model(at + step e_k)`` fitted to ``model(at)``."""
    if not step > 0:
        raise ValueError(f"jacobian_step must be > 0, got {step!r}")
    base = models(tuple(at))
    jac = np.empty((2, 2))
    for k in range(2):
        moved = models(tuple(np.add(at, step * np.eye(2)[k])))
        fit = measure_shift(moved, base[None], bad=(bad | ~np.isfinite(base))[None],
                            reference_bad=~np.isfinite(moved), fit_scale=True, robust=robust,
                            max_iter=max_iter)
        jac[:, k] = np.ravel(fit.shift_yx)[:2] / step
    if np.isfinite(jac).all() and np.linalg.cond(jac) < 1e3:
        return jac
    log.warning("finite-difference Jacobian unusable (%s); starting from -I", jac.tolist())
    return -np.eye(2)


def measure_star_offset(data, model, *, err=None, bad=None, weights=None, iterations=2,
                        guess_yx=(0.0, 0.0), center_yx=None, fit_radius=20.0, tol=2e-3,
                        model_tol=0.05, robust="huber", clip_sigma=3.0, fit_offset=False,
                        max_iter=50, jacobian_step=None):
    """Offset of the star from the mask centre, per integration and combined, by a forward fit.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx) or (ny, nx)
        Data stamp around the mask centre (any flux unit); NaN pixels are ignored. Not modified.
    model : callable
        ``model(offset_yx_px) -> ndarray (ny, nx)``: the occulted PSF of a star at
        ``mask centre + offset_yx_px`` (pixels, (dy, dx)) on the grid of ``data``, any flux
        normalisation (a scale is fitted). Called ``iterations + 1`` times at most when all
        integrations share one pointing; NaN model pixels are excluded.
    err : ndarray, shape like ``data`` or (ny, nx), optional
        1-sigma errors of ``data``: weights ``1 / err**2`` and calibrated uncertainties (see
        `~jwst_klipprep.algorithms.registration.measure_shift`). Without it the uncertainties
        come from the residuals.
    bad : ndarray of bool, shape like ``data`` or (ny, nx), optional
        True for pixels to ignore (e.g. DO_NOT_USE).
    weights : ndarray, shape (ny, nx) or like ``data``, optional
        Extra non-negative weights multiplying ``1 / err**2`` (e.g. the mask transmission).
    iterations : int, optional
        Model re-evaluations at the updated offset after the first fit (0: one fit against the
        model at ``guess_yx``, i.e. the biased zero-offset fit when the guess is 0).
    guess_yx : array_like, shape (2,) or (nints, 2), optional
        Starting offset in pixels (e.g. from the commanded pointing); default the mask centre.
    center_yx : (float, float), optional
        Mask centre in ``data`` (0-indexed, (y, x)); centre of the fit region. Default: the
        stamp centre ``((ny - 1) / 2, (nx - 1) / 2)``. Must be the mask position the model
        callable uses.
    fit_radius : float or None, optional
        Only pixels within this radius (px) of ``center_yx`` are fitted; None: all pixels.
    tol : float, optional
        Stop when a model update moves the offset by less than this (px, both axes).
    model_tol : float, optional
        Integrations whose offsets agree within this (px) share one model evaluation.
    robust : {"huber", "tukey", None}, optional
        Robust re-weighting of the per-integration fits (`measure_shift`).
    clip_sigma : float or None, optional
        Sigma clipping of the combination over integrations (`combine_offsets`).
    fit_offset : bool, optional
        Also fit an additive background level per integration.
    max_iter : int, optional
        Maximum model evaluations of each `measure_shift` fit (its Levenberg-Marquardt loop;
        with robust re-weighting and a large model mismatch it may need more than its default
        20).
    jacobian_step : float, optional
        None: the secant starts from ``J = -I`` (NIRCam's round masks). A step (px): ``J`` is
        first measured by finite differences of the model at the first guess (two more model
        calls), for PSFs that change much more than they move (MIRI's four-quadrant masks).

    Returns
    -------
    StarOffset
        Per-integration offsets and errors (NaN for integrations whose fit failed, e.g. no
        valid pixel), their combination, the fitted flux scales, reduced chi-squares, model
        evaluations and convergence.

    Raises
    ------
    ValueError
        For mismatched shapes, invalid options, a model of the wrong shape, or when no
        integration could be fitted.

    Notes
    -----
    See the module docstring for the method, the fit region, the weights and the combination.
    """
    frames = _as_frames("data", data)
    nints, ny, nx = frames.shape
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if not callable(model):
        raise TypeError("model must be a callable model(offset_yx_px) -> 2-D array")
    if center_yx is None:
        center_yx = ((ny - 1) / 2.0, (nx - 1) / 2.0)
    center_yx = np.asarray(center_yx, dtype=float)
    if center_yx.shape != (2,) or not np.isfinite(center_yx).all():
        raise ValueError(f"center_yx must be two finite numbers, got {center_yx!r}")
    guess = np.asarray(guess_yx, dtype=float)
    if guess.shape == (2,):
        guess = np.broadcast_to(guess, (nints, 2))
    if guess.shape != (nints, 2) or not np.isfinite(guess).all():
        raise ValueError(f"guess_yx must be finite with shape (2,) or ({nints}, 2)")

    outside = ~fit_region((ny, nx), center_yx, fit_radius)
    if bad is None:
        bad_all = np.broadcast_to(outside, frames.shape)
    else:
        bad = np.asarray(bad, dtype=bool)
        if bad.shape not in ((ny, nx), frames.shape):
            raise ValueError(f"bad must have shape {(ny, nx)} or {frames.shape}, got {bad.shape}")
        bad_all = np.broadcast_to(bad | outside, frames.shape)
    if err is not None:
        err = np.asarray(err, dtype=float)
        if err.shape not in ((ny, nx), frames.shape):
            raise ValueError(f"err must have shape {(ny, nx)} or {frames.shape}, got {err.shape}")
        err = np.broadcast_to(err, frames.shape)
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape not in ((ny, nx), frames.shape):
            raise ValueError(f"weights must have shape {(ny, nx)} or {frames.shape}, got "
                             f"{weights.shape}")
        weights = np.broadcast_to(weights, frames.shape)

    models = _CountedModel(model, (ny, nx))
    position = guess.copy()  # model offset of each integration
    start_jac = -np.eye(2)
    if jacobian_step is not None:
        start_jac = _fd_jacobian(models, guess[0], float(jacobian_step),
                                 bad=bad_all[0], robust=robust, max_iter=max_iter)
    jac = np.broadcast_to(start_jac, (nints, 2, 2)).copy()
    last_res = last_pos = None
    offset = np.full((nints, 2), np.nan)
    offset_err = np.full((nints, 2), np.nan)
    scale = np.full(nints, np.nan)
    chi2 = np.full(nints, np.nan)
    fit_ok = np.zeros(nints, bool)
    rounds = 0
    for rounds in range(1, int(iterations) + 2):
        residual = np.full((nints, 2), np.nan)
        residual_err = np.full((nints, 2), np.nan)
        for key, members in _groups(position).items():
            reference = models(key)
            start = np.zeros((len(members), 2))
            for j, i in enumerate(members):  # expected residual from the previous offsets
                if np.isfinite(offset[i]).all():
                    start[j] = -jac[i] @ (offset[i] - position[i])
            fit = measure_shift(reference, frames[members],
                                weights=None if weights is None else weights[members],
                                bad=bad_all[members],
                                err=None if err is None else err[members],
                                reference_bad=~np.isfinite(reference), guess_yx=start,
                                fit_scale=True, fit_offset=fit_offset, robust=robust,
                                max_iter=max_iter)
            residual[members] = fit.shift_yx
            residual_err[members] = fit.shift_err_yx
            scale[members] = fit.scale
            chi2[members] = fit.chi2_red
            fit_ok[members] = fit.converged
        good = np.isfinite(residual).all(axis=1)
        if not good.any():
            raise ValueError("no integration could be fitted (too few valid pixels?)")
        for i in np.flatnonzero(good):
            # secant update of dr/dm from the previous evaluation, then the Newton proposal
            if last_res is not None and np.isfinite(last_res[i]).all():
                jac[i] = _broyden(jac[i], position[i] - last_pos[i], residual[i] - last_res[i])
            inv_gain = np.linalg.inv(-jac[i])
            offset[i] = position[i] + inv_gain @ residual[i]
            cov = inv_gain @ np.diag(residual_err[i] ** 2) @ inv_gain.T
            offset_err[i] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        offset[~good] = np.nan
        offset_err[~good] = np.nan
        last_res, last_pos = residual, position.copy()
        # next model offsets: the combined offset for the integrations that agree with it
        combined, _, _ = combine_offsets(offset, offset_err, clip_sigma=clip_sigma)
        new_position = position.copy()
        close = good & np.all(np.abs(offset - combined) <= model_tol, axis=1)
        new_position[close] = combined
        new_position[good & ~close] = offset[good & ~close]
        step = float(np.max(np.abs(new_position - position)[good]))
        if step < tol or rounds == int(iterations) + 1:
            break
        position = new_position
    combined, combined_err, used = combine_offsets(offset, offset_err, clip_sigma=clip_sigma)
    # converged: the next model update would move the offset by less than tol, and the fits
    # of the integrations used converged
    converged = bool(step < tol and fit_ok[used].all())
    if not converged:
        log.warning("star offset not converged after %d model evaluation rounds (next update "
                    "%.4f px, tol %.4f px)", rounds, step, tol)
    rejected = np.flatnonzero(~used & np.isfinite(offset).all(axis=1))
    if rejected.size:
        log.info("integrations %s rejected from the combined star offset", rejected.tolist())
    log.debug("star offset %s +- %s px (%d model evaluations)", np.round(combined, 4).tolist(),
              np.round(combined_err, 4).tolist(), models.calls)
    return StarOffset(offset, offset_err, combined, combined_err, scale, chi2, rounds,
                      models.calls, converged, used)
