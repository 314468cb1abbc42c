"""The least-squares core of `jwst_klipprep.algorithms.registration.measure_shift`.

One integration is fitted as ``scale * S(shift)[reference] + offset`` (see the `registration`
module notes for the method, the robust re-weighting and the uncertainties):

* `ReferenceModel` - the reference shifted by the kernel of `jwst_klipprep.algorithms.kernels`,
  with its analytic derivatives with respect to the shift (and the resampled reference variance);
* `FrameData` - one integration's data, validity, weights and errors, as the fit uses them;
* `fit_frame` - the Levenberg-Marquardt fit of one integration, with robust re-weighting and the
  sandwich covariance.

`measure_shift` prepares the inputs, seeds the fit and collects the results; only it should call
these.
"""

import functools

import numpy as np

from .kernels import NeighbourFiller, ShiftPlan, apply_taps, integer_shift, kernel_taps, split_shift

__all__ = ["FrameData", "ReferenceModel", "fit_frame"]

_MAX_STEP = 1.0  # px, largest shift change per iteration
_MAD_SAMPLE = 20000  # pixels used for the robust scale
_ROBUST_UPDATES = 2  # robust re-weightings, each after the fit has converged

def _robust_weights(z, kind, threshold):
    a = np.abs(z)
    if kind == "huber":
        return np.where(a <= threshold, 1.0, threshold / np.maximum(a, threshold))
    return np.where(a < threshold, (1.0 - (z / threshold) ** 2) ** 2, 0.0)


class ReferenceModel:
    """The reference resampled by a shift, with analytic derivatives and a validity mask."""

    def __init__(self, reference, valid, method, order, max_invalid_weight, ref_var=None):
        self.method, self.order, self.limit = method, order, max_invalid_weight
        self.ref = NeighbourFiller(valid)(reference, np.float32)
        self.invalid = ~valid
        self.complete = bool(valid.all())
        self.ref_var = ref_var
        self._mask_cache = {}
        self._var_cache = {}

    def ref_var_moved(self, shift_yx):
        """Reference variance moved by the integer part of ``shift_yx`` (cached), 0 outside."""
        key = tuple(int(np.floor(c + 0.5)) for c in shift_yx)
        if key not in self._var_cache:
            moved = integer_shift(integer_shift(self.ref_var, key[0], 0, 0.0), key[1], 1, 0.0)
            if len(self._var_cache) > 16:
                self._var_cache.clear()
            self._var_cache[key] = moved
        return self._var_cache[key]

    def mask(self, shift_yx):
        """Model pixels with at most ``limit`` kernel weight on invalid reference pixels.

        The weight is the largest over the half-pixel shifts bracketing the nearest integer
        shift (the widest kernels), so the pixel set is the same for every shift within
        +-0.5 px of it and does not jump while the fit iterates.
        """
        key = tuple(int(k) for k in np.round(np.asarray(shift_yx, dtype=float)))
        if key not in self._mask_cache:
            weight = None
            for dy in (-0.5, 0.5):
                for dx in (-0.5, 0.5):
                    plan = ShiftPlan.make((key[0] + dy, key[1] + dx), self.method, self.order)
                    if self.complete:
                        this = plan.edge_weight(self.ref.shape)
                    else:
                        this = plan.invalid_weight(self.invalid)
                    weight = this if weight is None else np.maximum(weight, this)
            if len(self._mask_cache) > 64:
                self._mask_cache.clear()
            self._mask_cache[key] = weight <= self.limit
        return self._mask_cache[key]

    def __call__(self, shift_yx):
        ny, fy = split_shift(float(shift_yx[0]))
        nx, fx = split_shift(float(shift_yx[1]))
        ky, dky = kernel_taps(fy, self.method, self.order, derivative=True)
        kx, dkx = kernel_taps(fx, self.method, self.order, derivative=True)
        a = apply_taps(self.ref, ky, ny, 0, fill=0.0, exact=fy == 0.0)
        ad = apply_taps(self.ref, dky, ny, 0, fill=0.0)
        model = apply_taps(a, kx, nx, 1, fill=0.0, exact=fx == 0.0)
        d_y = apply_taps(ad, kx, nx, 1, fill=0.0, exact=fx == 0.0)
        d_x = apply_taps(a, dkx, nx, 1, fill=0.0)
        if model is self.ref:  # zero shift: callers may modify the model in place
            model = model.copy()
        return model, d_y, d_x, self.mask(shift_yx)


def _normal(columns, weight, residual):
    """``J^T W J``, ``J^T W r`` (float64) and ``J`` (k, npix) for columns (k, ny, nx)."""
    jac = np.stack([np.asarray(c, dtype=np.float32).ravel() for c in columns])
    return _normal_jac(jac, weight, residual) + (jac,)


def _normal_jac(jac, weight, residual):
    wj = jac * weight.ravel().astype(np.float32)
    return (wj @ jac.T).astype(float), (wj @ residual.ravel().astype(np.float32)).astype(float)


@functools.lru_cache(maxsize=256)
def _tap_sums(frac, method, order):
    """Sums over the taps of a fractional shift: ``(S2, S2', S'2)`` = ``sum k^2``,
    ``d S2 / d frac = 2 sum k k'`` and ``sum k'^2``."""
    taps, dtaps = kernel_taps(frac, method, order, derivative=True)
    return float(np.sum(taps**2)), 2.0 * float(np.sum(taps * dtaps)), float(np.sum(dtaps**2))


class FrameData:
    """One integration: data, weights and the reference-noise model.

    With a reference variance the variance of a residual is ``err^2 + scale^2 V(shift)``, where
    ``V`` is the reference variance resampled with the squared kernel taps. It is approximated
    by the reference variance moved by the integer part of the starting shift times the sums of
    squared taps ``S2_y S2_x`` of the current fraction (the variance taken as smooth over the
    kernel). ``V`` must follow the fraction: left fixed, the variation of ``S2`` would bias the
    fit towards the fractions where the kernel averages the reference noise most.
    """

    def __init__(self, image, valid, user, inv_var, fit_scale, fit_offset, model, guess):
        self.image = np.where(valid, image, 0.0).astype(np.float32)
        self.valid = valid
        self.user = np.where(valid, user, 0.0).astype(np.float32)
        self.inv_var = np.where(valid, inv_var, 0.0).astype(np.float32)
        self.fit_scale, self.fit_offset = fit_scale, fit_offset
        self.nparam = 2 + int(fit_scale) + int(fit_offset)
        self.spec = (model.method, model.order)
        self.ref_var = None
        if model.ref_var is not None:
            with np.errstate(divide="ignore"):
                self.var_img = (1.0 / self.inv_var).astype(np.float32)  # inf where excluded
            self.ref_var = model.ref_var_moved(guess)

    def sums(self, shift):
        return [_tap_sums(split_shift(float(c))[1], *self.spec) for c in shift]

    def state(self, ev, shift, scale, offset):
        """Residuals and statistical weights ``w / (err^2 + scale^2 V)`` at the parameters.

        When ``shift`` differs from the shift of the model evaluation ``ev`` (a converged step
        taken without a new evaluation) the model is moved to first order with its derivatives.
        """
        model = ev.model
        delta = np.asarray(shift, dtype=float) - ev.shift
        if delta.any():
            model = model + np.float32(delta[0]) * ev.d_y + np.float32(delta[1]) * ev.d_x
        resid = self.image - scale * model - offset
        resid[~ev.use] = 0.0
        out = {"resid": resid}
        if self.ref_var is None:
            stat = self.user * self.inv_var
        else:
            (sy, dsy, _), (sx, dsx, _) = self.sums(shift)
            var = self.ref_var * np.float32(sy * sx)
            inv = 1.0 / (self.var_img + np.float32(scale**2) * var)
            out.update(var=var, dlog=(dsy / sy, dsx / sx), inv=inv)
            stat = self.user * inv
        stat[~ev.use] = 0.0
        out["stat"] = stat
        return out

    def jacobian(self, ev):
        """Unscaled Jacobian rows ``(dM/dy, dM/dx[, M][, 1])``, (k, npix), cached per evaluation."""
        if ev.jac is None:
            cols = [ev.d_y, ev.d_x]
            if self.fit_scale:
                cols.append(ev.model)
            if self.fit_offset:
                cols.append(ev.use)
            ev.jac = np.stack([np.asarray(c, dtype=np.float32).ravel() for c in cols])
        return ev.jac

    def normal(self, ev, st, rho, shift, scale):
        """Normal equations, with the errors-in-variables gradient terms of a noisy reference:
        ``1/2 sum w r^2 d(scale^2 V)/dp / (err^2 + scale^2 V)`` for the shift and the scale.

        The shift columns of the Jacobian are ``scale * dM/d(y, x)``; the scale is applied to the
        small matrices rather than to the images.
        """
        weight = st["stat"] if rho is None else st["stat"] * rho
        jac = self.jacobian(ev)
        a_mat, g_vec = _normal_jac(jac, weight, st["resid"])
        factor = np.ones(len(g_vec))
        factor[:2] = scale
        a_mat *= np.outer(factor, factor)
        g_vec *= factor
        if self.ref_var is not None:
            total = float(np.sum(weight * st["var"] * st["inv"] * st["resid"] ** 2))
            g_vec[0] += 0.5 * scale**2 * st["dlog"][0] * total
            g_vec[1] += 0.5 * scale**2 * st["dlog"][1] * total
            if self.fit_scale:
                g_vec[2] += scale * total
            a_mat = self._without_jacobian_noise(a_mat, weight, st, shift, scale)
        return a_mat, g_vec, jac * factor[:, None].astype(np.float32), weight

    def _without_jacobian_noise(self, a_mat, weight, st, shift, scale):
        """``J^T W J`` minus its expected part from the reference noise in ``J``.

        A noisy reference makes the Jacobian noisy, and ``E[J^T W J]`` gains ``sum w Cov(J)``,
        which is not curvature (errors in variables): left in, Gauss-Newton undershoots and the
        covariance is too small. ``Cov(J)`` is ``V`` times ratios of tap sums (the reference
        variance taken as smooth over the kernel).
        """
        (sy, dsy, d2y), (sx, dsx, d2x) = self.sums(shift)
        total = float(np.sum(weight * st["var"]))
        ratio_y, ratio_x = 0.5 * dsy / sy, 0.5 * dsx / sx
        noise = np.zeros_like(a_mat)
        noise[0, 0] = scale**2 * d2y / sy * total
        noise[1, 1] = scale**2 * d2x / sx * total
        noise[0, 1] = noise[1, 0] = scale**2 * ratio_y * ratio_x * total
        if self.fit_scale:
            noise[2, 2] = total
            noise[0, 2] = noise[2, 0] = scale * ratio_y * total
            noise[1, 2] = noise[2, 1] = scale * ratio_x * total
        corrected = a_mat - noise
        if np.all(np.linalg.eigvalsh(corrected) > 0):
            return corrected
        return a_mat


class _Eval:
    """The model at one shift: image, derivatives, used pixels, and the stacked Jacobian."""

    __slots__ = ("shift", "model", "d_y", "d_x", "use", "jac")

    def __init__(self, shift, model, d_y, d_x, use):
        self.shift = np.array(shift, dtype=float)
        self.model, self.d_y, self.d_x, self.use, self.jac = model, d_y, d_x, use, None


def _robust_update(frame, st, use, kind, threshold):
    """Robust weights of the residuals normalised by their total error (image and reference)
    and by the MAD scale of those normalised residuals."""
    if kind is None:
        return None
    z = st["resid"] * np.sqrt(st.get("inv", frame.inv_var))
    sample = z[use]
    if sample.size > _MAD_SAMPLE:
        sample = sample[:: sample.size // _MAD_SAMPLE]
    sigma = 1.4826 * np.median(np.abs(sample)) if sample.size else 0.0
    if not sigma > 0:
        return None
    return _robust_weights(z / sigma, kind, threshold).astype(np.float32)


def fit_frame(model, frame, guess, opts):
    """Levenberg-Marquardt fit of one integration; returns a dict, or None if too few pixels.

    Robust weights are computed from the residuals of the converged fit (far from the solution
    the residuals of the bright core would be down-weighted for the wrong reason) and the fit
    is resumed, ``_ROBUST_UPDATES`` times at most.
    """
    fit_scale, fit_offset = opts["fit_scale"], opts["fit_offset"]
    shift = np.array(guess, dtype=float)
    scale, offset = 1.0, 0.0

    def evaluate(shift):
        m, d_y, d_x, mask = model(shift)
        use = frame.valid & mask
        m[~use] = 0.0
        return _Eval(shift, m, d_y, d_x, use)

    ev = evaluate(shift)
    niter = 1
    if ev.use.sum() <= frame.nparam:
        return None
    if fit_scale or fit_offset:  # linear start for scale / offset at the guessed shift
        st = frame.state(ev, shift, 0.0, 0.0)
        cols = ([ev.model] if fit_scale else []) + ([ev.use] if fit_offset else [])
        a_lin, g_lin, _ = _normal(cols, st["stat"], st["resid"] if fit_scale else
                                  st["resid"] - ev.model)
        try:
            sol = np.linalg.solve(a_lin, g_lin)
        except np.linalg.LinAlgError:
            sol = np.zeros(len(cols))
        if fit_scale and sol[0] > 0:
            scale = float(sol[0])
        if fit_offset:
            offset = float(sol[-1])
    st = frame.state(ev, shift, scale, offset)
    rho, updates = None, 0
    lam, converged, a_mat = 0.0, False, None
    while True:
        if a_mat is None:
            a_mat, g_vec, _, weight = frame.normal(ev, st, rho, shift, scale)
        damped = a_mat + lam * np.diag(np.diag(a_mat))
        try:
            step = np.linalg.solve(damped, g_vec)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(damped, g_vec, rcond=None)[0]
        size = float(np.abs(step[:2]).max())
        if size > _MAX_STEP:
            step = step * (_MAX_STEP / size)
        new = (shift + step[:2], scale + (step[2] if fit_scale else 0.0),
               offset + (step[-1] if fit_offset else 0.0))
        if size < opts["tol"]:
            # converged: take the (tiny) step without a new model evaluation
            shift, scale, offset = new
            st = frame.state(ev, shift, scale, offset)
            if opts["robust"] is not None and updates < _ROBUST_UPDATES:
                # robust weights from the residuals of the converged fit, then refit (the
                # normal equations at the same model evaluation first: often no new one)
                updates += 1
                new_rho = _robust_update(frame, st, ev.use, opts["robust"],
                                         opts["threshold"])
                if new_rho is not None:
                    rho, a_mat, lam = new_rho, None, 0.0
                    continue
            converged = True
            break
        if niter >= opts["max_iter"]:
            break
        ev_new = evaluate(new[0])
        niter += 1
        st_new = frame.state(ev_new, *new)
        w_new = st_new["stat"] if rho is None else st_new["stat"] * rho
        # compare the costs on the pixels used at both points (the set changes with the shift)
        common = ev.use & ev_new.use
        old_cost = float(np.sum(np.where(common, weight * st["resid"] ** 2, 0.0)))
        new_cost = float(np.sum(np.where(common, w_new * st_new["resid"] ** 2, 0.0)))
        if new_cost <= old_cost * (1 + 1e-7):
            (shift, scale, offset), ev, st = new, ev_new, st_new
            lam = lam / 10.0 if lam > 1e-5 else 0.0
            a_mat = None
        else:
            lam = max(lam * 10.0, 1e-3)
    if ev.use.sum() <= frame.nparam:
        return None
    cov, chi2 = _covariance(frame, ev, st, rho, shift, scale, opts)
    sig = np.sqrt(np.clip(np.diag(cov), 0, None))
    return dict(shift=shift, shift_err=sig[:2], scale=scale,
                scale_err=float(sig[2]) if fit_scale else 0.0, offset=offset, chi2=chi2,
                npix=int(ev.use.sum()), niter=niter, converged=converged)


def _covariance(frame, ev, st, rho, shift, scale, opts):
    """Parameter covariance (sandwich ``H^-1 B H^-1``) and reduced chi-square at the solution."""
    a_mat, _, jac, weight = frame.normal(ev, st, rho, shift, scale)
    resid = st["resid"]
    nparam = frame.nparam
    rho_use = np.where(ev.use, np.float32(1.0) if rho is None else rho, np.float32(0.0))
    npix = int(ev.use.sum())
    dof = float(np.sum(frame.user * rho_use)) * max(npix - nparam, 1) / npix
    chi2 = float(np.sum(weight * resid**2)) / dof if dof > 0 else np.nan
    mode = opts["scale_errors"]
    if mode == "auto" and not opts["has_err"]:
        # heteroscedasticity-consistent (White 1980): the residuals measure the noise
        b_w = (weight * resid) ** 2 * np.float32(npix / max(npix - nparam, 1))
    else:
        # w^2 rho^2 / var: the statistical part of the weights appears once
        b_w = frame.user * rho_use * weight
    b_mat = ((jac * b_w.ravel()) @ jac.T).astype(float)
    hessian = a_mat  # without the reference-noise part (see FrameData.normal); B keeps it
    try:
        h_inv = np.linalg.inv(hessian)
        cov = h_inv @ b_mat @ h_inv
    except np.linalg.LinAlgError:
        cov = np.full((nparam, nparam), np.nan)
    if mode is True:
        cov = cov * chi2
    elif mode == "auto" and opts["has_err"]:
        cov = cov * max(1.0, chi2)
    return cov, chi2


