"""Sub-pixel shifting of image cubes: no wrap-around, NaN/bad-pixel aware, DATA/ERR/VAR/DQ together.

This is the one shifting component of the package; `recenter_frames` and `align_frames` both use
it, and the pipeline adds their shifts (`compose_shifts`) so that a frame is resampled once.

Convention
----------
``shift_yx = (dy, dx)`` is the displacement applied to the image *content*, in pixels, in
0-indexed array axis order ``(y, x)``: ``+dx`` moves the content towards larger column index
(axis -1), and a source at ``(y, x)`` ends at ``(y + dy, x + dx)`` (`shift_positions`).

How a frame is resampled
------------------------
The shift is split into an integer part ``n = floor(s)`` and a fraction ``f = s - n`` on each
axis. The integer part is an exact slice; the fraction is a separable FIR kernel of ``2 * order``
taps per axis, normalised to unit sum (``method="sinc"`` or ``"lanczos"``), or an exact
band-limited Fourier phase ramp on a padded copy (``method="fourier"``). Integer shifts are exact
for every method. Content that leaves the frame is gone; pixels that come from outside are NaN.

Invalid inputs (NaN in ``data``, ``bad``, and everything outside the frame) never enter the
kernel sums as NaN. Their value is first *filled* from valid neighbours (Gaussian-weighted mean of
the valid pixels within 2 px, sigma 1 px, else the nearest valid pixel; the outside of the frame
is the edge-extended filled frame), the kernel is applied, and every output pixel gets an
``invalid_weight`` = sum over invalid inputs of ``|k_y k_x|`` (the 2-D kernel normalised to unit
sum, so an integer shift of an invalid pixel gives 1). Output pixels with ``invalid_weight >
max_invalid_weight`` (default 0.25: a pixel is lost when the nearest input(s) behind it are
invalid) are *lost*: NaN in DATA/ERR/VAR, ``lost_flag`` in DQ. The other outputs are computed
from valid inputs only, with at most ``max_invalid_weight`` of their value coming from filled
values; `ShiftedFrames.invalid_weight` reports that fraction. Besides the pixels that came from
outside the frame, a fractional shift loses 1-3 px along each edge or NaN border with ``"sinc"``
(its tails reach further) and 0-1 px with ``"lanczos"`` 3; one NaN pixel loses 1 to 4 output
pixels. Filling was measured against normalised convolution (``sum w k d / sum w k``) on
sampled Airy PSFs with 3 % bad pixels and gave 2-10x smaller errors at the same lost fraction
(normalised convolution extrapolates the local weighted mean through the negative lobes of the
kernel).

Kernels (measured on a 2-D sampled Airy PSF with lambda/D = 2.24 px, i.e. NIRCam F444W, shifted by
sub-pixel amounts, max error / peak; and on a linear ramp, max position error):

============  =================  ===========  ==============================
method        Airy F444W error   ramp error   note
============  =================  ===========  ==============================
lanczos 3     1.1e-2             0.020 px     prior art's usual kernel; smooth
lanczos 6     1.7e-3             0.010 px
sinc 8        4e-4               0.001 px     default: Kaiser-windowed sinc
fourier       exact (band-lim.)  exact        padded; edges re-masked
============  =================  ===========  ==============================

Lanczos kernels do not reproduce a linear ramp (their first moment is off by up to 0.02 px at
order 3), which biases registration; the Kaiser-windowed sinc (``beta = clip(0.875 * order, 4,
8)``) does not have that defect to 1e-3 px. Any band-limited interpolator rings around features
that are not band-limited (hot pixels, undersampled short-wavelength PSFs); use ``"lanczos"`` with
a small ``order`` there. ``"fourier"`` pads each axis by ``|shift| + 2 * order`` px with a smooth
blend between opposite edges, so nothing wraps; it is exact (1e-9) inside the frame for content
that is band-limited and faint at the edges, and content cut by a frame edge rings at ~1e-4 of
its edge value 30 px away.

Cost: a (35, 320, 320) float32 cube with per-integration shifts takes ~0.07 s (data only),
~0.14 s with ERR and DQ, ~0.3 s with three VAR arrays more (sinc, order 8; lanczos 3 is ~1.5x
faster, fourier ~2x slower), on one core.

Uncertainties
-------------
Each variance array is propagated through the same linear kernel, ``var_out = sum k_i**2 var_i``
(covariance between pixels, before and after, is ignored); ``err_out = sqrt(sum k_i**2
err_i**2)``. Invalid inputs' variances are filled like the data. For ``"fourier"`` the variance,
the DQ support and the lost pixels use the ``"sinc"`` kernel of the same ``order``.

DQ
--
Output DQ is the bitwise OR of the DQ of the input pixels whose 2-D kernel weight ``|k_y k_x|``
is at least ``dq_weight`` (default 0.25; the nearest input always counts), plus ``lost_flag`` on
lost pixels. An integer shift moves DQ exactly.
"""

import logging
from typing import NamedTuple

import numpy as np
from scipy import fft as sp_fft

from .kernels import DEFAULT_ORDER, METHODS, ShiftPlan, check_method, fill_invalid

__all__ = [
    "DEFAULT_ORDER",
    "METHODS",
    "ShiftedFrames",
    "compose_shifts",
    "shift_frames",
    "shift_positions",
]

log = logging.getLogger(__name__)



class ShiftedFrames(NamedTuple):
    """Result of `shift_frames`; every array has the shape of the input ``data``."""

    #: Shifted data (float, the input's float dtype); NaN where `lost`.
    data: np.ndarray
    #: Propagated ERR, or None when no ``err`` was given; NaN where `lost`.
    err: np.ndarray | None
    #: Propagated variance arrays, same keys as the ``var`` argument (empty dict if none).
    var: dict
    #: Moved DQ (input's dtype) with ``lost_flag`` OR'ed on lost pixels, or None if no ``dq``.
    dq: np.ndarray | None
    #: True where the output pixel lost its support (NaN).
    lost: np.ndarray
    #: Kernel weight ``sum |k_y k_x|`` of the invalid or outside inputs of each output pixel
    #: (kernel normalised to unit sum: 1 for an invalid pixel moved by an integer shift); at
    #: most this fraction of a kept value comes from filled inputs.
    invalid_weight: np.ndarray


# --------------------------------------------------------------------------------------------
# public API


def _as_shifts(shift_yx, nints):
    shifts = np.asarray(shift_yx, dtype=float)
    if shifts.shape == (2,):
        shifts = np.broadcast_to(shifts, (nints, 2))
    if shifts.shape != (nints, 2):
        raise ValueError(
            f"shift_yx must have shape (2,) or (nints, 2) = ({nints}, 2), got {shifts.shape}"
        )
    if not np.isfinite(shifts).all():
        raise ValueError("shift_yx must be finite")
    return shifts


def _as_cube(name, array, shape3, allow_2d=True):
    array = np.asarray(array)
    if allow_2d and array.shape == shape3[1:]:
        array = np.broadcast_to(array, shape3)
    if array.shape != shape3:
        raise ValueError(f"{name} must have the shape of data {shape3}"
                         f"{' or of one frame' if allow_2d else ''}, got {array.shape}")
    return array


def shift_frames(data, shift_yx, *, err=None, var=None, dq=None, bad=None, method="sinc",
                 order=None, max_invalid_weight=0.25, dq_weight=0.25, lost_flag=1):
    """Shift every integration of a cube by a sub-pixel amount, without wrap-around.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx) or (ny, nx)
        Frames to shift. NaN pixels are invalid. Not modified.
    shift_yx : array_like, shape (2,) or (nints, 2)
        Displacement of the content ``(dy, dx)`` in pixels, one for all integrations or one per
        integration (+dx moves the content towards +x).
    err : ndarray, optional
        ERR array, same shape as ``data``; propagated as ``sqrt(sum k**2 err**2)``.
    var : dict of str to ndarray, optional
        Variance arrays (e.g. ``{"var_poisson": ..., "var_rnoise": ...}``), same shape as
        ``data``; each propagated as ``sum k**2 var``.
    dq : ndarray of int, optional
        DQ array, same shape as ``data``; moved with the content (see the module notes).
    bad : ndarray of bool, optional
        True for pixels to exclude (e.g. DO_NOT_USE), shape of ``data`` or of one frame.
    method : {"sinc", "lanczos", "fourier"}, optional
        Interpolation kernel (see the module notes); default a Kaiser-windowed sinc.
    order : int, optional
        Kernel half-width in pixels (``2 * order`` taps per axis); default `DEFAULT_ORDER`.
    max_invalid_weight : float, optional
        Output pixels whose kernel weight on invalid or outside inputs exceeds this are lost.
    dq_weight : float, optional
        Minimum 2-D kernel weight of an input pixel for its DQ to be OR'ed into the output.
    lost_flag : int, optional
        DQ bits set on lost pixels (default 1, JWST DO_NOT_USE).

    Returns
    -------
    ShiftedFrames
        New arrays, same shapes as the inputs (float data in the input's float dtype).

    Raises
    ------
    ValueError
        For an unknown ``method``, a bad ``order`` or mismatched shapes.

    Notes
    -----
    A source at ``(y, x)`` ends at ``(y + dy, x + dx)``. Cost: O(order) per pixel per array.
    """
    order = check_method(method, order)
    if not 0.0 < max_invalid_weight < 1.0:
        raise ValueError(f"max_invalid_weight must be in (0, 1), got {max_invalid_weight}")
    if not 0.0 < dq_weight <= 1.0:
        raise ValueError(f"dq_weight must be in (0, 1], got {dq_weight}")
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise ValueError(f"data must be (nints, ny, nx) or (ny, nx), got shape {data.shape}")
    squeeze = data.ndim == 2
    cube = data[None] if squeeze else data
    shape = cube.shape
    dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float64
    shifts = _as_shifts(shift_yx, shape[0])

    def as3(name, array, allow_2d=False):
        if array is None:
            return None
        array = np.asarray(array)
        return _as_cube(name, array[None] if squeeze and array.ndim == 2 else array, shape,
                        allow_2d)

    err3 = as3("err", err)
    dq3 = as3("dq", dq)
    var3 = {name: as3(f"var[{name!r}]", value) for name, value in (var or {}).items()}
    bad3 = as3("bad", bad, allow_2d=True)
    if dq3 is not None and not np.issubdtype(dq3.dtype, np.integer):
        raise ValueError(f"dq must be an integer array, got {dq3.dtype}")

    aux_method = "sinc" if method == "fourier" else method
    out = np.empty(shape, dtype)
    weight = np.empty(shape, np.float32)
    var_in = ({"\0err": err3} if err3 is not None else {}) | var3
    var_out = {key: np.empty(shape, dtype) for key in var_in}
    dq_out = None if dq3 is None else np.empty_like(dq3)
    filler = None
    fourier = []
    for i in range(shape[0]):
        plan = ShiftPlan.make(shifts[i], aux_method, order)
        valid = np.isfinite(cube[i])
        if bad3 is not None:
            valid &= ~bad3[i].astype(bool)
        filled, filler = fill_invalid(cube[i], valid, dtype, filler)
        if method == "fourier" and (plan.fy or plan.fx):
            out[i] = filled  # shifted below, all such frames at once
            fourier.append(i)
        else:
            out[i] = plan.apply(filled)
        if valid.all():
            weight[i] = plan.edge_weight(shape[1:])
        else:
            weight[i] = plan.invalid_weight(~valid)
        for key, value in var_in.items():
            value = value[i].astype(dtype) ** 2 if key == "\0err" else value[i]
            filled_var, _ = fill_invalid(value, valid & np.isfinite(value), dtype, filler)
            var_out[key][i] = plan.apply(filled_var, squared=True)
        if dq3 is not None:
            dq_out[i] = plan.dq_or(dq3[i], dq_weight)
    if fourier:
        out[fourier] = _fourier_shift(out[fourier], shifts[fourier], order)

    lost = weight > max_invalid_weight
    out[lost] = np.nan
    for value in var_out.values():
        value[lost] = np.nan
        np.maximum(value, 0.0, out=value, where=~lost)
    err_out = None
    if "\0err" in var_out:
        err_out = np.sqrt(var_out.pop("\0err"))
    if dq_out is not None:
        dq_out[lost] |= np.asarray(lost_flag).astype(dq_out.dtype)
    n_lost = int(lost.sum())
    log.debug("shifted %d frame(s) by %s (method %s, order %d): %d pixel(s) lost",
              shape[0], np.round(shifts[:3], 4).tolist(), method, order, n_lost)

    def back(array):
        return None if array is None else (array[0] if squeeze else array)

    return ShiftedFrames(back(out), back(err_out), {k: back(v) for k, v in var_out.items()},
                         back(dq_out), back(lost), back(weight))


def _periodic_pad(frames, size, axis):
    """Extend ``frames`` along ``axis`` to ``size`` with a smooth blend from the last row back to
    the first, so that the periodic extension an FFT sees has no jump."""
    extra = size - frames.shape[axis]
    first = np.take(frames, [0], axis=axis)
    last = np.take(frames, [-1], axis=axis)
    t = np.arange(1, extra + 1) / (extra + 1)
    blend = (0.5 - 0.5 * np.cos(np.pi * t)).reshape([-1 if a == axis else 1 for a in
                                                       range(frames.ndim)])
    return np.concatenate([frames, last + (first - last) * blend], axis=axis)


def _fourier_shift(filled, shifts, guard):
    """Band-limited shift of filled frames on a padded copy; no content wraps back.

    The pad (at least ``|shift| + 2 * guard`` px per axis) blends smoothly from one edge of the
    frame to the other, so the circular FFT sees neither wrapped content nor an edge jump.
    """
    nints, ny, nx = filled.shape
    need_y = ny + int(np.ceil(np.abs(shifts[:, 0]).max())) + 2 * guard
    need_x = nx + int(np.ceil(np.abs(shifts[:, 1]).max())) + 2 * guard
    size_y = sp_fft.next_fast_len(need_y, real=True)
    size_x = sp_fft.next_fast_len(need_x, real=True)
    padded = _periodic_pad(_periodic_pad(filled, size_y, 1), size_x, 2)
    spectrum = sp_fft.rfft2(padded, workers=-1)
    uy = sp_fft.fftfreq(size_y)[None, :, None]
    ux = sp_fft.rfftfreq(size_x)[None, None, :]
    ramp = np.exp(-2j * np.pi * (uy * shifts[:, 0, None, None] + ux * shifts[:, 1, None, None]))
    spectrum *= ramp
    shifted = sp_fft.irfft2(spectrum, s=(size_y, size_x), workers=-1)
    return shifted[:, :ny, :nx]


def compose_shifts(*shifts_yx):
    """Total displacement of several successive shifts (their sum).

    Parameters
    ----------
    *shifts_yx : array_like, each shape (2,) or (nints, 2)
        Displacements ``(dy, dx)`` applied one after the other.

    Returns
    -------
    ndarray, shape (2,) or (nints, 2)
        The single shift that gives the same result, to be applied with `shift_frames` once.
    """
    if not shifts_yx:
        return np.zeros(2)
    arrays = [np.asarray(s, dtype=float) for s in shifts_yx]
    for s in arrays:
        if s.shape[-1:] != (2,) or s.ndim > 2:
            raise ValueError(f"each shift must have shape (2,) or (nints, 2), got {s.shape}")
    return np.sum(np.broadcast_arrays(*arrays), axis=0)


def shift_positions(points_yx, shift_yx):
    """Positions after a shift: ``(y, x) + (dy, dx)``.

    Parameters
    ----------
    points_yx : array_like, shape (..., 2)
        0-indexed ``(y, x)`` positions.
    shift_yx : array_like, shape (2,) or broadcastable to ``points_yx``
        Displacement applied by `shift_frames`.

    Returns
    -------
    ndarray
        New positions, float.
    """
    return np.asarray(points_yx, dtype=float) + np.asarray(shift_yx, dtype=float)
