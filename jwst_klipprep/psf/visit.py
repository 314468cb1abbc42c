"""Visit-level fit: telescope wavefront modes shared by the exposures of a visit, fitted jointly
with each exposure's star offset.

The exposures of a visit (both rolls, references taken close in time) see the same telescope
wavefront. When it is not known (no OPD) or known only from an older measurement, an error in it
biases every exposure's star position alike, and a per-exposure fit cannot see that: the model
mismatch looks like an offset. `fit_visit` fits K wavefront mode coefficients common to all
exposures together with a star offset (dy, dx) and a flux scale per exposure, by Levenberg-Marquardt
(Gauss-Newton steps, damped when one does not lower chi2) with finite-difference derivatives
of a forward model.

The forward model is passed in as a factory (so the fit is testable without stpsf)::

    model_factory(coefficients) -> model(offset_yx_px) -> ndarray (ny, nx)

``coefficients`` (K,) in the factory's units (nm rms per mode for `stpsf_mode_factory`), the
model the occulted PSF of a star at mask centre + offset on the data stamp (as for
`~jwst_klipprep.algorithms.centering.measure_star_offset`). Mode derivatives are computed once
per iteration at the visit's mean offset and used for every exposure (the mode response hardly
changes over the +-30 mas of a visit; ``mode_derivatives="each"`` computes them per exposure),
offset derivatives per exposure. One iteration costs K + 1 + 3 n model evaluations (n
exposures), and each tried step n more (the chi2 at the new point).

`wavefront_modes` gives global low-order modes (and per-segment piston / tip / tilt / focus,
from stpsf's segment map) on stpsf's pupil grid and `stpsf_mode_factory`
an stpsf factory that adds them to the model's telescope wavefront (the given OPD, or none) in
one optical system built once (a model evaluation is one stpsf propagation, no rebuild).
"""

import dataclasses
import math
import threading
from types import MappingProxyType

import numpy as np

from jwst_klipprep.psf.opd import _zernike_terms

__all__ = ["MODE_SETS", "SEGMENT_TERMS", "VISIT_FLOORS_MAS", "VISIT_FLOOR_MAS",
           "VISIT_PRIORS_NM", "VisitFit", "fit_visit", "mode_priors", "stpsf_mode_factory",
           "visit_floor_mas", "wavefront_modes"]

_GLOBAL = ("focus", "astig_0", "astig_45", "coma_x", "coma_y", "trefoil_0", "trefoil_30")
#: Per-segment terms on the segment's own centred coordinates (sx, sy): 1, sx, sy, sx^2 + sy^2.
SEGMENT_TERMS = ("piston", "tip", "tilt", "focus")
_N_SEGMENTS = 18  # JWST primary mirror segments (labels 1-18 of stpsf's JWpupil_segments map)


def _segment_names(terms):
    return tuple(f"seg{label:02d}_{t}" for label in range(1, _N_SEGMENTS + 1) for t in terms)


#: Named sets of wavefront modes (`wavefront_modes`): their mode names. Global modes first (order
#: of opd._zernike_terms); "segments" adds piston, tip and tilt of each of the 18 segments,
#: "segments_focus" also each segment's focus (these need the segment map).
MODE_SETS = {
    "focus_astig": _GLOBAL[:3],
    "low_order": _GLOBAL,
    "segments": _GLOBAL + _segment_names(SEGMENT_TERMS[:3]),
    "segments_focus": _GLOBAL + _segment_names(SEGMENT_TERMS),
}

#: Systematic floor (mas per axis, 1 sigma) of a star position from the visit fit started from an
#: OPD older than the frames (``recenter_frames --fit_wavefront``): what the fitted modes cannot
#: represent (per-segment drift) still biases the exposures alike. Measured with
#: ``benchmarks/bench_recenter.py --issue9 --visit-fit`` (15 nm rms drift, low_order modes, prior
#: 15 nm): 1.8 and 2.7 mas radial on two maps (up to 2.5 per axis).
VISIT_FLOOR_MAS = 3.0

#: Systematic floor (mas per axis, 1 sigma) of the visit fit per configuration: (mode set, an OPD
#: given). ``("low_order", True)`` is `VISIT_FLOOR_MAS`; the others are measured with
#: ``benchmarks/bench_recenter.py --issue9 --visit-fit --visit-modes segments`` (see
#: docs/steps/recenter_frames.rst, "Visit fit"): the error left is common to the exposures, so
#: the floor, not the statistical error, carries it.
VISIT_FLOORS_MAS = MappingProxyType({
    ("low_order", True): VISIT_FLOOR_MAS,
    ("segments", True): 2.0,
    ("segments_focus", True): 2.0,
    ("segments", False): 10.0,
    ("segments_focus", False): 7.0,
})

#: Default Gaussian priors (nm rms per mode): (global mode, per-segment mode), with an OPD (the
#: drift since it) and without (the telescope wavefront itself, a ~60 nm rms budget: 7 global
#: modes x 12 nm and 54 segment modes x 6 nm).
VISIT_PRIORS_NM = MappingProxyType({True: (15.0, 1.5), False: (12.0, 6.0)})


def visit_floor_mas(mode_set, *, opd_given):
    """Systematic floor (mas per axis) of the visit fit with ``mode_set`` (`VISIT_FLOORS_MAS`).

    Raises
    ------
    ValueError
        A configuration without a measured floor (e.g. ``low_order`` without an OPD, which the
        benchmark showed no better than the per-exposure fit).
    """
    key = (mode_set, bool(opd_given))
    if key not in VISIT_FLOORS_MAS:
        raise ValueError(f"no measured floor for the visit fit with {mode_set!r} "
                         f"{'with' if opd_given else 'without'} an OPD; measured: "
                         f"{sorted(VISIT_FLOORS_MAS)}")
    return VISIT_FLOORS_MAS[key]


def mode_priors(names, *, global_nm, segment_nm):
    """Prior rms (nm) of each mode in ``names``: ``segment_nm`` for a per-segment mode
    (``seg<NN>_<term>``), ``global_nm`` for a global one."""
    return np.array([segment_nm if _parse_segment_mode(m) else global_nm for m in names],
                    dtype=float)


@dataclasses.dataclass(frozen=True)
class VisitFit:
    """Result of `fit_visit` (offsets in px, (dy, dx); coefficients in the factory's units).

    Attributes
    ----------
    offset_yx, offset_err_yx : ndarray (n, 2)
        Star offset of each exposure from the mask centre and its statistical error
        (linearised covariance x max(1, chi2_red), mode correlations included).
    coefficients, coefficient_err : ndarray (K,)
        Fitted wavefront mode coefficients (on top of the factory's base wavefront) and errors.
    scale : ndarray (n,)
        Flux scale of each exposure's model.
    chi2_red : float
        Reduced chi2 of the joint fit at the last linearisation point.
    covariance : ndarray (K + 3n, K + 3n)
        Parameter covariance (already x max(1, chi2_red)); order: modes, then (dy, dx, scale)
        of each exposure.
    nmodel : int
        Model evaluations.
    iterations : int
        Linearisations (derivative evaluations) made.
    converged : bool
        The last step moved every offset by less than ``tol``, or chi2 (with the prior)
        stopped decreasing (no damped step lowers it, or by less than 1e-4 of itself).
    """

    offset_yx: np.ndarray
    offset_err_yx: np.ndarray
    coefficients: np.ndarray
    coefficient_err: np.ndarray
    scale: np.ndarray
    chi2_red: float
    covariance: np.ndarray
    nmodel: int
    iterations: int
    converged: bool


class _Models:
    """The factory's models per exposure (one shared model or one per exposure), counted."""

    def __init__(self, factory, shape, n):
        self.factory, self.shape, self.n, self.calls = factory, shape, n, 0

    def at(self, coefficients):
        made = self.factory(np.array(coefficients, float))
        if callable(made):
            return [made] * self.n
        made = list(made)
        if len(made) != self.n or not all(callable(m) for m in made):
            raise ValueError(f"the model factory must return a model or {self.n} models (one "
                             "per exposure)")
        return made

    def __call__(self, model, offset_yx):
        frame = np.asarray(model((float(offset_yx[0]), float(offset_yx[1]))), dtype=float)
        self.calls += 1
        if frame.shape != self.shape:
            raise ValueError(f"the model returned shape {frame.shape}, expected {self.shape}")
        return frame


def _check_inputs(data, err, bad, n_modes, offsets0, prior, iterations, fit_radius, center_yx):
    data = np.asarray(data, dtype=float)
    if data.ndim != 3 or data.shape[0] < 2:
        raise ValueError(f"data must be (n_exposures >= 2, ny, nx), got shape {data.shape}: a "
                         "visit fit needs several exposures")
    err = np.asarray(err, dtype=float)
    if err.shape != data.shape:
        raise ValueError(f"err shape {err.shape} differs from data shape {data.shape}")
    bad = np.zeros(data.shape, bool) if bad is None else np.broadcast_to(
        np.asarray(bad, bool), data.shape)
    if int(n_modes) != n_modes or n_modes < 1:
        raise ValueError(f"n_modes must be an integer >= 1, got {n_modes!r}")
    n = data.shape[0]
    offsets = np.zeros((n, 2)) if offsets0 is None else np.array(offsets0, float)
    if offsets.shape != (n, 2) or not np.all(np.isfinite(offsets)):
        raise ValueError(f"offsets0 must be finite (n_exposures, 2) = ({n}, 2), got "
                         f"{offsets.shape}")
    if prior is not None:
        prior = np.broadcast_to(np.asarray(prior, float), (int(n_modes),)).copy()
        if not np.all(prior > 0) or not np.all(np.isfinite(prior)):
            raise ValueError(f"prior must be > 0 and finite (or None), got {prior}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if not fit_radius > 0:
        raise ValueError(f"fit_radius must be > 0, got {fit_radius!r}")
    ny, nx = data.shape[1:]
    center = np.array(((ny - 1) / 2.0, (nx - 1) / 2.0) if center_yx is None else center_yx,
                      dtype=float)
    center = np.broadcast_to(center, (n, 2)) if center.shape in ((2,), (n, 2)) else None
    if center is None or not np.all(np.isfinite(center)):
        raise ValueError(f"center_yx must be (y, x) or (n_exposures, 2), got {center_yx!r}")
    yy, xx = np.indices((ny, nx))
    region = np.hypot(yy - center[:, :1, None], xx - center[:, 1:, None]) <= fit_radius
    use = region & ~bad & np.isfinite(data) & np.isfinite(err) & (err > 0)
    if np.any(use.sum(axis=(1, 2)) < 10):
        raise ValueError("an exposure has fewer than 10 valid pixels within fit_radius")
    return data, err, use, offsets, prior


def fit_visit(data, model_factory, *, n_modes, err, bad=None, offsets0=None, prior=None,
              iterations=3, fit_radius=20.0, center_yx=None, mode_step=5.0, offset_step=0.05,
              mode_derivatives="mean", tol=2e-3, damping=1e-3):
    """Joint fit of K wavefront mode coefficients shared by the exposures of a visit, and of
    each exposure's star offset and flux scale (Levenberg-Marquardt, finite differences).

    Parameters
    ----------
    data : array (n, ny, nx)
        One frame per exposure (e.g. its integration median) on the stamp, n >= 2.
    model_factory : callable
        ``model_factory(coefficients (K,)) -> model``, ``model(offset_yx_px) -> (ny, nx)``:
        the occulted PSF with the base wavefront + the modes, star at mask centre + offset; or
        a list of n such models, one per exposure (e.g. when the mask centre sits at different
        stamp positions). ``nmodel`` counts model calls.
    n_modes : int
        K.
    err : array (n, ny, nx)
        1-sigma errors (weights 1 / err**2).
    bad : array of bool, optional
        Pixels not used (NaN data and err <= 0 are not used either).
    offsets0 : array (n, 2), optional
        Starting offsets (px; e.g. the per-exposure fits); default 0.
    prior : float or array (K,), optional
        Gaussian prior (rms, the factory's units) on each coefficient, centred on 0 (= the
        factory's base wavefront): e.g. the expected drift since the OPD measurement. Its weight
        is scaled by max(1, chi2_red), like the data's, so it keeps its meaning when model
        errors dominate the noise. None: no prior.
    iterations : int, optional
        Linearisations at most (each one K + 1 + 3 n model evaluations, plus n per tried step).
    fit_radius : float, optional
        Pixels within this radius of ``center_yx`` are fitted.
    center_yx : (float, float) or array (n, 2), optional
        Mask centre in the stamp (default the array centre), or one per exposure: the centre
        of the fit region.
    mode_step, offset_step : float, optional
        Finite-difference steps (factory units; px).
    mode_derivatives : {"mean", "each"}, optional
        Mode derivatives at the mean offset of the visit (K evaluations per step) or at each
        exposure's offset (K n).
    tol : float, optional
        Convergence: every offset step below this (px), or chi2 (with the prior) lowered by
        less than 1e-4 of itself; the fit stops early then.
    damping : float, optional
        Levenberg-Marquardt: the starting damping (x the normal matrix's diagonal). A step
        that does not lower chi2 (with the prior) is not taken: the damping grows x10 and the
        step is solved again on the same derivatives (n model evaluations per try, 6 tries);
        a step taken lowers it x10. 0: plain Gauss-Newton, every step taken.

    Returns
    -------
    VisitFit

    Raises
    ------
    ValueError
        Bad shapes, fewer than 2 exposures, unknown ``mode_derivatives``, a model of the wrong
        shape or with non-finite values on the fitted pixels, a singular system.
    """
    if mode_derivatives not in ("mean", "each"):
        raise ValueError(f"mode_derivatives must be 'mean' or 'each', got {mode_derivatives!r}")
    if not (np.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    data, err, use, offsets, prior = _check_inputs(data, err, bad, n_modes, offsets0, prior,
                                                   iterations, fit_radius, center_yx)
    n, k_modes = data.shape[0], int(n_modes)
    evaluate = _Models(model_factory, data.shape[1:], n)
    ivar = [1.0 / err[e][use[e]] ** 2 for e in range(n)]
    obs = [data[e][use[e]] for e in range(n)]
    n_par = k_modes + 3 * n
    n_data = sum(o.size for o in obs)
    eye = np.eye(k_modes) * mode_step

    def profiled(e, m0):
        """Best flux scale of exposure e's model m0 (fitted pixels) and the chi2 with it."""
        if not np.all(np.isfinite(m0)):
            raise ValueError(f"exposure {e}: the model has non-finite values on fitted pixels")
        denom = np.sum(ivar[e] * m0 * m0)
        if not denom > 0:
            raise ValueError(f"exposure {e}: the model is zero on the fitted pixels")
        scale = np.sum(ivar[e] * obs[e] * m0) / denom
        return scale, float(np.sum(ivar[e] * (obs[e] - scale * m0) ** 2))

    def chi2_at(coeffs, offsets):
        models = evaluate.at(coeffs)
        return sum(profiled(e, evaluate(models[e], offsets[e])[use[e]])[1] for e in range(n))

    def penalty_of(coeffs, inflate):
        return 0.0 if prior is None else float(inflate * np.sum((coeffs / prior) ** 2))

    def linearise(coeffs, offsets):
        base = evaluate.at(coeffs)
        stepped = [evaluate.at(coeffs + eye[k]) for k in range(k_modes)]
        if mode_derivatives == "mean":
            at = offsets.mean(axis=0)
            shared = {}  # per distinct model object: derivatives at the mean offset
            for e in range(n):
                if id(base[e]) not in shared:
                    m_at = evaluate(base[e], at)
                    shared[id(base[e])] = [(evaluate(stepped[k][e], at) - m_at) / mode_step
                                           for k in range(k_modes)]
        blocks, rhs = [], []
        scales, chi2 = np.ones(n), 0.0
        for e in range(n):
            m0 = evaluate(base[e], offsets[e])
            my = evaluate(base[e], offsets[e] + (offset_step, 0.0))
            mx = evaluate(base[e], offsets[e] + (0.0, offset_step))
            if mode_derivatives == "each":
                dmodes = [(evaluate(stepped[k][e], offsets[e]) - m0)[use[e]] / mode_step
                          for k in range(k_modes)]
            else:
                dmodes = [d[use[e]] for d in shared[id(base[e])]]
            m0 = m0[use[e]]
            scales[e], chi2_e = profiled(e, m0)
            jac = np.zeros((m0.size, n_par))
            for k in range(k_modes):
                jac[:, k] = scales[e] * dmodes[k]
            col = k_modes + 3 * e
            jac[:, col] = scales[e] * (my[use[e]] - m0) / offset_step
            jac[:, col + 1] = scales[e] * (mx[use[e]] - m0) / offset_step
            jac[:, col + 2] = m0
            blocks.append(jac)
            rhs.append(obs[e] - scales[e] * m0)
            chi2 += chi2_e
        jac, resid, w = np.concatenate(blocks), np.concatenate(rhs), np.concatenate(ivar)
        return jac.T @ (jac * w[:, None]), jac.T @ (w * resid), scales, chi2

    coeffs = np.zeros(k_modes)
    lam, converged, settled = float(damping), False, False
    normal, gradient, scales, chi2 = linearise(coeffs, offsets)
    steps = 1  # linearisations
    while True:
        chi2_red = chi2 / max(n_data - n_par, 1)
        inflate = max(chi2_red, 1.0)
        if prior is not None:
            penalty = inflate / prior**2
            normal[np.arange(k_modes), np.arange(k_modes)] += penalty
            gradient[:k_modes] -= penalty * coeffs
        try:
            cov = np.linalg.inv(normal) * inflate
        except np.linalg.LinAlgError:
            raise ValueError("the visit fit is singular: the modes cannot be told apart from "
                             "the offsets and scales (use a prior or fewer modes)") from None
        if settled:  # chi2 no longer decreases: the covariance at this point, no more steps
            converged = True
            break
        objective = chi2 + penalty_of(coeffs, inflate)
        taken = None
        for _ in range(6 if damping > 0 else 1):
            damped = normal + lam * np.diag(np.diag(normal))
            delta = np.linalg.solve(damped, gradient)
            trial_c = coeffs + delta[:k_modes]
            trial_o = offsets + delta[k_modes:].reshape(n, 3)[:, :2]
            if damping == 0 or chi2_at(trial_c, trial_o) + penalty_of(trial_c, inflate) < (
                    objective):
                taken = (trial_c, trial_o, delta)
                lam = max(lam / 10.0, 1e-7) if damping > 0 else 0.0
                break
            lam = max(lam, 1e-6) * 10.0
        if taken is None:  # no step lowers chi2: at the minimum, to the derivatives' accuracy
            converged = True
            break
        coeffs, offsets, delta = taken
        scales = scales + delta[k_modes:].reshape(n, 3)[:, 2]
        if np.max(np.abs(delta[k_modes:].reshape(n, 3)[:, :2])) < tol:
            converged = True
            break
        if steps >= int(iterations):
            break
        normal, gradient, scales, chi2 = linearise(coeffs, offsets)
        steps += 1
        settled = damping > 0 and objective - (chi2 + penalty_of(coeffs, inflate)) < (
            1e-4 * objective)
    errors = np.sqrt(np.diag(cov))
    return VisitFit(offset_yx=offsets, offset_err_yx=errors[k_modes:].reshape(n, 3)[:, :2],
                    coefficients=coeffs, coefficient_err=errors[:k_modes], scale=scales,
                    chi2_red=float(chi2_red), covariance=cov, nmodel=evaluate.calls,
                    iterations=steps, converged=converged)


def _parse_segment_mode(name):
    """``"seg07_tip"`` -> (7, "tip"); None for a global mode name or anything else."""
    head, _, term = name.partition("_")
    if head.startswith("seg") and head[3:].isdigit() and term in SEGMENT_TERMS:
        return int(head[3:]), term
    return None


def wavefront_modes(pupil, mode_set="low_order", *, segments=None):
    """Wavefront modes on a pupil (metres per unit coefficient = 1 nm rms over the pupil).

    Parameters
    ----------
    pupil : array (npix, npix)
        Pupil transmission on the OPD grid (e.g. stpsf's ``jwst_pupil_RevW_npix<npix>``).
    mode_set : str or sequence of str, optional
        A `MODE_SETS` name, or mode names: global ones from ``MODE_SETS["low_order"]``,
        per-segment ones ``"seg<NN>_<term>"`` (NN = segment label 01-18, term in
        `SEGMENT_TERMS`).
    segments : array of int (npix, npix), optional
        Segment label map on the same grid (stpsf's ``JWpupil_segments_RevW_npix<npix>``; 0
        outside); required for per-segment modes.

    Returns
    -------
    ndarray (K, npix, npix)
        Each mode with the pupil's least-squares piston and tip/tilt removed, 1e-9 m rms inside
        the pupil (transmission > 0.5), 0 outside. A per-segment mode is its term (1, sx, sy or
        sx^2 + sy^2 on the segment's centred coordinates, in units of the pupil radius) on its
        segment, 0 elsewhere, before that removal; the per-segment modes of all segments are
        not independent of each other or of the global ones (global piston / tip / tilt are
        removed, global focus is close to a combination): fit them with a prior.
    """
    names = MODE_SETS[mode_set] if isinstance(mode_set, str) and mode_set in MODE_SETS else (
        (mode_set,) if isinstance(mode_set, str) else tuple(mode_set))
    known = MODE_SETS["low_order"]
    unknown = [m for m in names if m not in known and _parse_segment_mode(m) is None]
    if unknown or not names:
        raise ValueError(f"unknown wavefront modes {unknown or mode_set!r}: use one of "
                         f"{sorted(MODE_SETS)}, names from {known} or 'seg<NN>_<term>' with "
                         f"a term in {SEGMENT_TERMS}")
    inside = np.asarray(pupil, float) > 0.5
    if inside.ndim != 2 or inside.sum() < 10:
        raise ValueError("pupil must be a 2-D transmission map with an illuminated area")
    wanted = {p[0] for p in map(_parse_segment_mode, names) if p is not None}
    if wanted:
        if segments is None:
            raise ValueError("per-segment wavefront modes need the segment map (segments=)")
        segments = np.asarray(segments)
        if segments.shape != inside.shape:
            raise ValueError(f"segments shape {segments.shape} differs from the pupil's "
                             f"{inside.shape}")
        missing = sorted(lab for lab in wanted if not np.any(inside & (segments == lab)))
        if missing:
            raise ValueError(f"segments {missing} are not in the segment map inside the pupil")
    npix = inside.shape[0]
    yy, xx = np.indices(inside.shape) - (npix - 1) / 2.0
    radius = max(np.abs(xx[inside]).max(), np.abs(yy[inside]).max())
    x, y = xx / radius, yy / radius
    design = np.stack([np.ones(inside.sum()), x[inside], y[inside]], axis=1)
    terms = _zernike_terms(x, y)
    modes = []
    for name in names:
        parsed = _parse_segment_mode(name)
        if parsed is None:
            t = np.where(inside, terms[known.index(name)], 0.0)
        else:
            sel = inside & (segments == parsed[0])
            sx, sy = x[sel] - x[sel].mean(), y[sel] - y[sel].mean()
            value = {"piston": np.ones(sx.shape), "tip": sx, "tilt": sy,
                     "focus": sx * sx + sy * sy}[parsed[1]]
            t = np.zeros(inside.shape)
            t[sel] = value
        t[inside] -= design @ np.linalg.lstsq(design, t[inside], rcond=None)[0]
        t[inside] /= np.std(t[inside])
        modes.append(t * 1e-9)
    return np.array(modes)


def stpsf_mode_factory(*, instrument, filter_name, canonical, shape, center_yx, pixel_scale,
                       nlambda, oversample, options, modes):
    """stpsf model factory for `fit_visit`: the model's telescope wavefront + sum c_k modes_k.

    One stpsf optical system (the options of `jwst_klipprep.psf.models.psf_frame`: OPD,
    instrument wavefront, pupil grid) is built once; each evaluation sets its entrance-pupil OPD
    to the base OPD (as stpsf loaded it) + the modes and propagates. Frames are normalised by
    the base wavefront's unocculted PSF (as `psf_frame` does; a mode's change of the total flux
    is left to the fit's free scale) and placed like `psf_frame`'s.

    Parameters
    ----------
    modes : array (K, npix, npix)
        Metres per unit coefficient on the pupil grid (`wavefront_modes`).
    center_yx : (float, float) or array (n, 2)
        Mask centre on the stamp; n centres give n models (one per exposure), which share
        the propagations.
    Others
        As `jwst_klipprep.psf.models.psf_frame` (``offset`` in px here).

    Returns
    -------
    callable
        ``factory(coefficients) -> model(offset_yx_px) -> ndarray shape`` (a list of n models
        for n centres; thread-safe); ``factory.propagations`` counts the stpsf propagations.
    """
    from jwst_klipprep.psf import models

    ny, nx = (int(v) for v in shape)
    centers = np.array(center_yx, dtype=float)
    single = centers.ndim == 1
    centers = np.atleast_2d(centers)
    if centers.shape[1:] != (2,) or not np.all(np.isfinite(centers)):
        raise ValueError(f"center_yx must be (y, x) or (n, 2), got {np.shape(center_yx)}")
    half = max(np.max(centers[:, 0]), ny - 1 - np.min(centers[:, 0]), np.max(centers[:, 1]),
               nx - 1 - np.min(centers[:, 1]))
    stamp = min(models._STPSF_MAX_STAMP, 2 * int(math.ceil(half)) + 4)
    stamp += stamp % 2
    common = (instrument, filter_name, canonical)
    # a private system (not the cached one psf_frame uses): its OPD is changed below
    osys, wavelengths, weights = models._stpsf_system.__wrapped__(
        *common, stamp, pixel_scale, oversample, nlambda, True, options)
    plane = osys.planes[0]
    base = np.array(plane.opd, dtype=float)
    modes = np.asarray(modes, dtype=float)
    if modes.ndim != 3 or modes.shape[1:] != base.shape:
        raise ValueError(f"modes must be (K, {base.shape[0]}, {base.shape[1]}) on the stpsf "
                         f"pupil grid, got {modes.shape}")
    norm = float(models._stpsf_stamp(*common, 0.0, 0.0, stamp, pixel_scale, oversample, nlambda,
                                     False, options).sum())
    lock = threading.Lock()
    # the last propagations, shared by the exposures' placements: room for one linearisation
    # of fit_visit (K + 1 mode settings at the mean offset, 3 offsets and tried steps per
    # exposure), else every exposure would recompute the mode derivatives
    stamps, keep = {}, 2 * (len(modes) + 1) + 8 * len(centers) + 16

    def propagate(coefficients, opd, offset_yx_px):
        key = (coefficients.tobytes(), round(float(offset_yx_px[0]), 9),
               round(float(offset_yx_px[1]), 9))
        with lock:
            if key in stamps:
                return stamps[key]
            y_as = key[1] * pixel_scale
            x_as = key[2] * pixel_scale
            with models._quiet_stpsf():
                plane.opd = opd
                osys.source_offset_r = math.hypot(y_as, x_as)
                osys.source_offset_theta = math.degrees(math.atan2(-x_as, y_as))
                hdul = osys.calc_psf(wavelength=wavelengths, weight=weights,
                                     normalize="first")
            frame = np.asarray(hdul[0].data, dtype=np.float64).reshape(
                stamp, oversample, stamp, oversample).sum(axis=(1, 3)) / norm
            if len(stamps) >= keep:
                del stamps[next(iter(stamps))]  # the oldest
            stamps[key] = frame
            factory.propagations += 1
            return frame

    def factory(coefficients):
        coefficients = np.array(coefficients, dtype=float)
        if coefficients.shape != (len(modes),):
            raise ValueError(f"expected {len(modes)} coefficients, got {coefficients.shape}")
        opd = base + np.tensordot(coefficients, modes, axes=1)

        def placed(center):
            def model(offset_yx_px):
                return models.place_stamp(propagate(coefficients, opd, offset_yx_px),
                                          tuple(center), (ny, nx))
            return model

        made = [placed(c) for c in centers]
        return made[0] if single else made

    factory.propagations = 0
    return factory
