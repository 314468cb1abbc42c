"""Measuring shifts between frames: forward-model least squares and upsampled cross-correlation.

Convention
----------
A measured ``shift_yx = (dy, dx)`` is the displacement, in 0-indexed ``(y, x)`` pixels, that
`~jwst_klipprep.algorithms.shift.shift_frames` must apply to ``reference`` to reproduce
``image``: the content of ``image`` sits at ``+shift_yx`` from where it sits in ``reference``.
To align ``image`` onto ``reference`` shift it by ``-shift_yx``; to centre a star whose model
PSF ``reference`` is centred on the mask, the star is at mask centre ``+ shift_yx``.

Methods
-------
`measure_shift` fits, per integration, ``scale * S(shift)[reference] + offset`` to ``image`` in
weighted least squares, where ``S`` is the same separable interpolation kernel that
`shift_frames` applies (Kaiser-windowed sinc by default), so a fitted shift is exactly the shift
that `shift_frames` must undo. The Jacobian is analytic: the derivative of the shifted reference
with respect to the shift is the reference filtered with the derivative of the kernel taps, so
one model evaluation (five 1-D convolutions) gives the model and both derivatives. The solver
is Levenberg-Marquardt (Gauss-Newton steps, damped only after a rejected step); with
``robust`` the converged fit is re-weighted (Huber or Tukey weights of the residuals normalised
by ERR and their MAD scale) and resumed, twice at most. NaN and flagged pixels of ``image`` are
excluded, and so are model pixels whose kernel support has more than ``max_invalid_weight`` of
its weight on NaN, flagged or outside pixels of ``reference`` (no NaN replacement needed).
Typical cost: 2-4 model evaluations, about 20 ms for a 320 x 320 integration.

`cross_correlation_shift` is the seed's method made NaN-aware: the zero-padded (linear, no
wrap-around) cross-correlation of the weighted, median-subtracted frames with invalid pixels
set to zero (scikit-image's ``phase_cross_correlation`` with ``normalization=None``), its peak
refined to ``1 / upsample`` px by windowed-sinc interpolation of the correlation around it
(the values the upsampled DFT of Guizar-Sicairos et al. 2008 gives for band-limited frames,
without its large complex matrix products, which multi-threaded BLAS makes very slow on a
loaded machine). `measure_shift` starts from it when ``guess_yx`` is None.

Uncertainties
-------------
The covariance is the sandwich ``H^-1 B H^-1`` with ``H = J^T diag(w rho / var) J`` and
``B = J^T diag(w^2 rho^2 / var) J`` (``w`` the user weights, ``rho`` the robust weights,
``var = err^2``); with unit weights this is the usual ``H^-1``. ``scale_errors="auto"``
multiplies it by ``max(1, chi2_red)`` when ``err`` is given (model mismatch, e.g. speckle
changes, inflates the errors instead of hiding) and, without ``err``, uses the
heteroscedasticity-consistent ``B = J^T diag((w r)^2) J`` (White 1980), calibrated whatever the
noise. Checked on simulations: the spread of (fit - truth) / sigma is 1 within 10 %.

A noisy ``reference`` (e.g. the first science integration) matters: pass ``reference_err``.
Then ``var = err^2 + scale^2 V`` with ``V`` the reference variance resampled by the kernel, the
shift and scale gradients get the errors-in-variables terms of that parameter-dependent
variance (without them the scale is biased low and the shift is pulled towards the fractions
where the kernel averages noise most), and the reference-noise part of ``J^T W J`` is removed
from ``H`` (which restores quadratic convergence and calibrated errors). Without
``reference_err`` a noisy reference gives ``chi2_red`` > 1 and too small errors.

References
----------
Guizar-Sicairos, M., Thurman, S. T., & Fienup, J. R. (2008). Efficient subpixel image
registration algorithms. Optics Letters, 33(2), 156-158. doi:10.1364/OL.33.000156

Huber, P. J. (1964). Robust estimation of a location parameter. Ann. Math. Statist. 35(1),
73-101. doi:10.1214/aoms/1177703732

White, H. (1980). A heteroskedasticity-consistent covariance matrix estimator and a direct test
for heteroskedasticity. Econometrica 48(4), 817-838. doi:10.2307/1912934
"""

import logging
from typing import NamedTuple

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from .kernels import NeighbourFiller, check_method, kernel_value
from .shift_fit import FrameData, ReferenceModel, fit_frame

__all__ = ["ROBUST", "ShiftFit", "cross_correlation_shift", "measure_shift"]

log = logging.getLogger(__name__)

#: Valid ``robust`` options of `measure_shift` and their default thresholds (in sigma).
ROBUST = {None: None, "huber": 3.0, "tukey": 4.685}



class ShiftFit(NamedTuple):
    """Result of `measure_shift`; one row per integration."""

    #: Fitted displacement of ``image`` relative to ``reference`` ``(dy, dx)``, shape (nints, 2).
    shift_yx: np.ndarray
    #: 1-sigma uncertainty of `shift_yx`, shape (nints, 2).
    shift_err_yx: np.ndarray
    #: Flux scale of ``image`` relative to ``reference``, shape (nints,) (1 if not fitted).
    scale: np.ndarray
    #: 1-sigma uncertainty of `scale`, shape (nints,) (0 if not fitted).
    scale_err: np.ndarray
    #: Additive offset, shape (nints,) (0 if not fitted).
    offset: np.ndarray
    #: Reduced chi-square of the weighted residuals, shape (nints,).
    chi2_red: np.ndarray
    #: Model evaluations used, shape (nints,).
    niter: np.ndarray
    #: True where the shift step fell below ``tol`` within ``max_iter``, shape (nints,).
    converged: np.ndarray
    #: Number of pixels in the fit, shape (nints,).
    npix: np.ndarray


# --------------------------------------------------------------------------------------------
# input handling


def _frames(name, array):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (nints, ny, nx) or (ny, nx), got shape {array.shape}")
    return array


def _per_frame(name, array, shape):
    """Broadcast an optional (ny, nx) or (nints, ny, nx) array to ``shape``."""
    if array is None:
        return None
    array = np.asarray(array)
    if array.shape == shape[1:]:
        return np.broadcast_to(array, shape)
    if array.shape == shape:
        return array
    raise ValueError(f"{name} must have shape {shape[1:]} or {shape}, got {array.shape}")


def _reference(reference, shape, reference_bad):
    reference = np.asarray(reference)
    if reference.ndim == 3 and reference.shape[0] == 1:
        reference = reference[0]
    if reference.shape != shape[1:]:
        raise ValueError(f"reference must have the frame shape {shape[1:]}, got {reference.shape}")
    valid = np.isfinite(reference)
    if reference_bad is not None:
        reference_bad = np.asarray(reference_bad, dtype=bool)
        if reference_bad.shape != reference.shape:
            raise ValueError(f"reference_bad must have shape {reference.shape}")
        valid &= ~reference_bad
    if not valid.any():
        raise ValueError("reference has no valid pixel")
    return reference, valid


def _clean_weights(weights, shape):
    """User weights as float, NaN and negative values set to 0 (ones when None)."""
    if weights is None:
        return np.ones(shape[1:])
    weights = np.asarray(weights, dtype=float)
    return np.where(np.isfinite(weights), np.clip(weights, 0.0, None), 0.0)


def _image_weights(image, bad, err, weights, err_floor):
    """Validity, user weights and ``1 / err^2`` per frame (invalid where ``err`` <= 0 or NaN).

    ``err_floor="auto"`` raises each frame's ERR to at least a quarter of its median: real ERR
    never falls far below the read-noise floor, but ERR maps that were resampled before (e.g.
    Fourier-shifted by another tool) have ringing values near 0 that would get enormous weights.
    """
    shape = image.shape
    valid = np.isfinite(image)
    if bad is not None:
        valid &= ~np.asarray(_per_frame("bad", bad, shape), dtype=bool)
    user = _per_frame("weights", _clean_weights(weights, shape), shape)
    valid = valid & (user > 0)
    if err is None:
        return valid, user, np.ones(shape)
    err = np.asarray(_per_frame("err", err, shape), dtype=float)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(err) & (err > 0)
    valid &= good
    if err_floor is not None:
        if isinstance(err_floor, str):
            if err_floor != "auto":
                raise ValueError(f"err_floor must be 'auto', a number or None, got {err_floor!r}")
            floor = np.array([0.25 * np.median(e[v][::7]) if v.any() else 0.0
                              for e, v in zip(err, valid, strict=True)])[:, None, None]
        else:
            floor = float(err_floor)
        err = np.maximum(err, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_var = np.where(valid, 1.0 / err**2, 0.0)
    return valid, user, inv_var


# --------------------------------------------------------------------------------------------
# cross-correlation


def _centred(frame, valid, weights):
    level = np.median(frame[valid]) if valid.any() else 0.0
    return np.where(valid, (frame - level) * weights, 0.0)


_CC_ORDER = 8  # half-width of the windowed-sinc interpolation of the cross-correlation


def _upsampled_peak(cc, peak, upsample):
    """Refine the integer ``peak`` of a circular cross-correlation map to ``1 / upsample`` px.

    The correlation of two sampled band-limited frames is band-limited, so its values between
    the integer lags are the windowed-sinc interpolation of the lags around the peak: the
    interpolated map on a ``1 / upsample`` grid over +-1 px is ``K_y @ patch @ K_x^T`` with
    ``K`` the kernel sampled at the sub-pixel offsets (the same values as the upsampled DFT of
    Guizar-Sicairos et al., at O(order * upsample) cost and without large matrix products).
    """
    lags = np.arange(-_CC_ORDER - 1, _CC_ORDER + 2)
    rows = np.take(cc, peak[0] + lags, axis=0, mode="wrap")
    patch = np.take(rows, peak[1] + lags, axis=1, mode="wrap")
    steps = np.arange(-upsample, upsample + 1) / upsample
    kern = kernel_value(steps[:, None] - lags[None, :], "sinc", _CC_ORDER)[0]
    kern /= kern.sum(axis=1, keepdims=True)
    fine = kern @ patch @ kern.T
    index = np.unravel_index(np.argmax(fine), fine.shape)
    return peak + steps[list(index)]


def cross_correlation_shift(reference, image, *, upsample=20, weights=None, bad=None,
                            reference_bad=None):
    """Coarse shift of each integration relative to ``reference`` by upsampled cross-correlation.

    Parameters
    ----------
    reference : ndarray, shape (ny, nx)
        Reference frame; NaN pixels are ignored.
    image : ndarray, shape (nints, ny, nx) or (ny, nx)
        Frames to register; NaN pixels are ignored.
    upsample : int, optional
        Upsampling factor of the refinement: the result is quantised to ``1 / upsample`` px.
    weights : ndarray, shape (ny, nx) or (nints, ny, nx), optional
        Multiplies both frames before correlating (e.g. the coronagraph transmission).
    bad, reference_bad : ndarray of bool, optional
        True for pixels to ignore in ``image`` / ``reference``.

    Returns
    -------
    ndarray, shape (nints, 2)
        ``(dy, dx)`` such that ``image`` is ``reference`` shifted by it (module convention).

    Notes
    -----
    Frames are median-subtracted, weighted, invalid pixels set to 0 and zero-padded by a quarter
    of a frame, so shifts up to a quarter of the frame are found without wrap-around. The
    integer peak is refined over +-1 px by windowed-sinc interpolation of the correlation
    (module notes). Cost: two real FFTs of the padded frame per integration.
    """
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"upsample must be an integer >= 1, got {upsample}")
    upsample = int(upsample)
    image = _frames("image", image)
    shape = image.shape
    reference, ref_valid = _reference(reference, shape, reference_bad)
    user = _per_frame("weights", _clean_weights(weights, shape), shape)
    valid = np.isfinite(image)
    if bad is not None:
        valid &= ~np.asarray(_per_frame("bad", bad, shape), dtype=bool)
    size = (sp_fft.next_fast_len(shape[1] + shape[1] // 4, real=True),
            sp_fft.next_fast_len(shape[2] + shape[2] // 4, real=True))
    out = np.full((shape[0], 2), np.nan)
    ref_spectrum = None
    for i in range(shape[0]):
        if not valid[i].any():
            continue
        if ref_spectrum is None or weights is not None and np.ndim(weights) == 3:
            ref_spectrum = np.conj(sp_fft.rfft2(_centred(reference, ref_valid, user[i]), s=size))
        spectrum = sp_fft.rfft2(_centred(image[i], valid[i], user[i]), s=size) * ref_spectrum
        cc = sp_fft.irfft2(spectrum, s=size)
        peak = np.array(np.unravel_index(np.argmax(cc), size), dtype=float)
        peak = np.where(peak > np.array(size) // 2, peak - np.array(size), peak)
        if upsample > 1:
            peak = _upsampled_peak(cc, peak.astype(int), upsample)
        out[i] = peak
    return out


def measure_shift(reference, image, *, weights=None, bad=None, err=None, reference_bad=None,
                  reference_err=None, guess_yx=None, fit_scale=True, fit_offset=False,
                  method="sinc", order=None, max_iter=20, tol=1e-3, robust="huber",
                  robust_threshold=None, max_invalid_weight=0.05, scale_errors="auto",
                  err_floor="auto", upsample=20, weights_frame="image", smooth_err=None):
    """Fit the shift (and flux scale) of each integration of ``image`` relative to ``reference``.

    Minimises, per integration, ``sum w / err^2 * rho * (image - scale * S(shift)[reference] -
    offset)^2`` over the valid pixels, where ``S`` is the `shift_frames` kernel.

    Parameters
    ----------
    reference : ndarray, shape (ny, nx)
        Reference frame or model PSF (e.g. a model of the occulted star at the mask centre).
        NaN pixels are excluded (no replacement needed). Not modified.
    image : ndarray, shape (nints, ny, nx) or (ny, nx)
        Frames to measure. NaN pixels are excluded. Not modified.
    weights : ndarray, shape (ny, nx) or (nints, ny, nx), optional
        Non-negative per-pixel weights multiplying the squared residuals, e.g. the coronagraph
        transmission map (the prior art's residual ``W * (R - s T[D])`` weighs by ``W**2``).
    bad : ndarray of bool, shape (ny, nx) or (nints, ny, nx), optional
        True for image pixels to exclude (e.g. DO_NOT_USE).
    err : ndarray, shape (nints, ny, nx) or (ny, nx), optional
        1-sigma errors of ``image``; weights ``1 / err**2``. Without it all pixels weigh the same
        and the uncertainties come from the residuals (see ``scale_errors``). Pixels with a
        non-finite or non-positive ``err`` are excluded.
    reference_bad : ndarray of bool, shape (ny, nx), optional
        True for reference pixels to exclude.
    reference_err : ndarray, shape (ny, nx), optional
        1-sigma errors of a noisy ``reference`` (needs ``err``): their variance, resampled by the
        kernel and times ``scale**2``, is added to ``err**2``, with the errors-in-variables
        corrections of the module notes. Recommended when the reference is an integration.
    guess_yx : array_like, shape (2,) or (nints, 2), optional
        Starting shift (e.g. from the commanded dither offsets). None: `cross_correlation_shift`.
    fit_scale, fit_offset : bool, optional
        Fit a flux scale (default) and/or an additive offset.
    method : {"sinc", "lanczos"}, optional
        Interpolation kernel of the model (the `shift_frames` one, same ``order``).
    order : int, optional
        Kernel half-width; default as in `shift_frames`.
    max_iter : int, optional
        Maximum model evaluations per integration (each costs five 1-D convolutions).
    tol : float, optional
        Converged when the Gauss-Newton shift step is below ``tol`` px (the step is still
        applied, so the remaining error is far smaller than ``tol``).
    robust : {"huber", "tukey", None}, optional
        Robust re-weighting of residuals normalised by ``err`` and their MAD scale.
    robust_threshold : float, optional
        Threshold in sigma of the robust weights; default `ROBUST` ``[robust]``.
    max_invalid_weight : float, optional
        Model pixels with more than this kernel weight on invalid reference pixels are excluded.
    scale_errors : {"auto", True, False}, optional
        "auto": with ``err``, multiply the covariance by ``max(1, chi2_red)``; without, use the
        residual-based (heteroscedasticity-consistent) covariance. True: multiply by
        ``chi2_red``. False: trust ``err`` (or unit errors) as they are.
    err_floor : "auto", float or None, optional
        Lower bound applied to ``err`` (and ``reference_err``): "auto" is a quarter of the
        frame's median ERR (resampled ERR maps have ringing values near 0), a number is absolute,
        None disables it.
    upsample : int, optional
        Upsampling of `cross_correlation_shift` when ``guess_yx`` is None.
    weights_frame : {"image", "reference"}, optional
        Where ``weights`` are attached. "image" (default): to the detector pixels of ``image``.
        "reference": to the content of ``reference`` (e.g. a fit region and transmission
        defined around the reference star): when the median fitted shift exceeds
        ``_FOLLOW_PX``, the weights are moved by it (bilinear, 0 outside) and every integration
        is refitted from its first result, so that the same part of the PSF is compared
        whatever the shift and the estimate is shift-covariant.
    smooth_err : int, optional
        Box width (odd, px) of a local mean of ``err**2`` (and ``reference_err**2``) used for
        the weights instead of the per-pixel values. A pipeline's ERR is computed from the
        noisy data themselves, so per-pixel weights correlate with the noise they weigh
        (pixels that fluctuated low get more weight), which biases and de-stabilises the fit
        when the frames differ by more than noise; a local mean keeps the noise level and
        removes the correlation. None: per-pixel values.

    Returns
    -------
    ShiftFit
        Arrays with one row per integration (also for a 2-D ``image``). Integrations with too few
        valid pixels get NaN and ``converged=False``.

    Raises
    ------
    ValueError
        For mismatched shapes or invalid options.
    """
    if robust not in ROBUST:
        raise ValueError(f"unknown robust {robust!r}; valid values are {list(ROBUST)}")
    if method == "fourier":
        raise ValueError("measure_shift supports method 'sinc' or 'lanczos' (the fit needs a "
                         "local kernel); shift the frames with method='fourier' afterwards if "
                         "wanted")
    order = check_method(method, order)
    if weights_frame not in ("image", "reference"):
        raise ValueError(f"weights_frame must be 'image' or 'reference', got {weights_frame!r}")
    if smooth_err is not None and (int(smooth_err) != smooth_err or smooth_err < 1
                                   or smooth_err % 2 == 0):
        raise ValueError(f"smooth_err must be an odd integer >= 1 or None, got {smooth_err!r}")
    if scale_errors not in ("auto", True, False):
        raise ValueError(f"scale_errors must be 'auto', True or False, got {scale_errors!r}")
    if not max_iter >= 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    image = _frames("image", image)
    shape = image.shape
    reference, ref_valid = _reference(reference, shape, reference_bad)
    if smooth_err is not None and err is not None:
        err = _local_rms(_per_frame("err", err, shape), int(smooth_err))
        if reference_err is not None:
            reference_err = _local_rms(np.asarray(reference_err, float), int(smooth_err))
    valid, user, inv_var = _image_weights(image, bad, err, weights, err_floor)
    if guess_yx is None:
        guess = cross_correlation_shift(reference, image, upsample=upsample, weights=weights,
                                        bad=None if bad is None else ~valid,
                                        reference_bad=~ref_valid)
        guess = np.where(np.isfinite(guess), guess, 0.0)
    else:
        guess = np.asarray(guess_yx, dtype=float)
        guess = np.broadcast_to(guess, (shape[0], 2)) if guess.shape == (2,) else guess
        if guess.shape != (shape[0], 2) or not np.isfinite(guess).all():
            raise ValueError(f"guess_yx must be finite with shape (2,) or ({shape[0]}, 2)")
    ref_var_in = None
    if reference_err is not None:
        if err is None:
            raise ValueError("reference_err needs err (the image errors) as well")
        reference_err = np.asarray(reference_err, dtype=float)
        if reference_err.shape != shape[1:]:
            raise ValueError(f"reference_err must have shape {shape[1:]}")
        with np.errstate(invalid="ignore"):
            var_valid = ref_valid & np.isfinite(reference_err) & (reference_err > 0)
        if err_floor is not None and var_valid.any():
            floor = (0.25 * np.median(reference_err[var_valid]) if err_floor == "auto"
                     else float(err_floor))
            reference_err = np.maximum(reference_err, floor)
        ref_var_in = reference_err**2
        ref_var_in = NeighbourFiller(var_valid)(ref_var_in, np.float32)
    model = ReferenceModel(reference, ref_valid, method, order, max_invalid_weight, ref_var_in)
    opts = dict(fit_scale=fit_scale, fit_offset=fit_offset, robust=robust,
                threshold=ROBUST[robust] if robust_threshold is None else robust_threshold,
                max_iter=int(max_iter), tol=float(tol), scale_errors=scale_errors,
                has_err=err is not None)

    result = _fit_all(image, valid, user, inv_var, model, guess, opts)
    median = np.nanmedian(result.shift_yx, axis=0) if np.isfinite(result.shift_yx).any() else None
    if (weights_frame == "reference" and weights is not None and median is not None
            and np.hypot(*median) > _FOLLOW_PX):
        clean = _clean_weights(weights, shape)
        moved = ndimage.shift(clean, (0.0,) * (clean.ndim - 2) + tuple(median), order=1,
                              mode="constant", cval=0.0, prefilter=False)
        valid, user, inv_var = _image_weights(image, bad, err, moved, err_floor)
        start = np.where(np.isfinite(result.shift_yx), result.shift_yx, median)
        result = _fit_all(image, valid, user, inv_var, model, start, opts)
    log.debug("measured shifts %s", np.round(result.shift_yx[:5], 4).tolist())
    return result


#: Median shift (px) beyond which weights attached to the reference are moved and refitted.
_FOLLOW_PX = 0.02


def _local_rms(err, size):
    """sqrt of the NaN-aware local mean of ``err**2`` over ``size`` x ``size`` boxes."""
    err = np.asarray(err, dtype=float)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(err) & (err > 0)
    var = np.where(good, err**2, 0.0)
    box = (1,) * (err.ndim - 2) + (size, size)
    total = ndimage.uniform_filter(var, box, mode="nearest")
    count = ndimage.uniform_filter(good.astype(float), box, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(total / count)
    return np.where(good, out, err)


def _fit_all(image, valid, user, inv_var, model, guess, opts):
    """`fit_frame` on every integration; a `ShiftFit`."""
    nints = image.shape[0]
    out = {k: np.full(nints, np.nan) for k in ("scale", "scale_err", "offset", "chi2")}
    shift_out = np.full((nints, 2), np.nan)
    shift_err = np.full((nints, 2), np.nan)
    niter = np.zeros(nints, int)
    converged = np.zeros(nints, bool)
    npix = np.zeros(nints, int)
    for i in range(nints):
        frame = FrameData(image[i], valid[i], user[i], inv_var[i], opts["fit_scale"],
                          opts["fit_offset"], model, guess[i])
        res = fit_frame(model, frame, guess[i], opts)
        if res is None:
            log.warning("integration %d: too few valid pixels to measure a shift", i)
            continue
        shift_out[i], shift_err[i] = res["shift"], res["shift_err"]
        out["scale"][i], out["scale_err"][i] = res["scale"], res["scale_err"]
        out["offset"][i], out["chi2"][i] = res["offset"], res["chi2"]
        niter[i], converged[i], npix[i] = res["niter"], res["converged"], res["npix"]
        if not res["converged"]:
            log.warning("integration %d: shift fit did not converge in %d evaluations "
                        "(last shift %s)", i, res["niter"], np.round(res["shift"], 4).tolist())
    return ShiftFit(shift_out, shift_err, out["scale"], out["scale_err"], out["offset"],
                    out["chi2"], niter, converged, npix)
