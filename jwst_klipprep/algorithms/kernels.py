"""Interpolation kernels and their separable application, shared by `shift` and `registration`.

`jwst_klipprep.algorithms.shift` (resampling whole cubes) and
`jwst_klipprep.algorithms.registration` (fitting shifts, with analytic derivatives) share these
building blocks; the conventions (content displacement ``(dy, dx)``, kernel normalisation, how
invalid pixels are filled) are described in the `jwst_klipprep.algorithms.shift` docstring.

* `kernel_value` - the Kaiser-windowed sinc or Lanczos kernel and its derivative;
* `split_shift`, `kernel_taps` - integer part / fraction of a shift, and the normalised taps
  (optionally with their derivative with respect to the fraction);
* `integer_shift`, `apply_taps` - exact integer moves and one separable FIR pass along an axis;
* `ShiftPlan` - the per-axis taps of one 2-D shift, applied to data, variances, validity and DQ;
* `NeighbourFiller`, `fill_invalid` - filling invalid pixels from valid neighbours;
* `check_method` - validation of a method name and kernel order.
"""

from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.special import i0, i1

__all__ = [
    "DEFAULT_ORDER", "METHODS", "NeighbourFiller", "ShiftPlan", "apply_taps", "check_method",
    "fill_invalid", "integer_shift", "kaiser_beta", "kernel_taps", "kernel_value", "split_shift",
]

#: Valid ``method`` names of `jwst_klipprep.algorithms.shift.shift_frames`.
METHODS = ("sinc", "lanczos", "fourier")
#: Kernel half-width (taps per axis = 2 * order) used when ``order`` is None.
DEFAULT_ORDER = {"sinc": 8, "lanczos": 3, "fourier": 8}

_FILL_SIGMA = 1.0
_EXACT = 1e-9  # a fractional shift below this is treated as an integer shift


# --------------------------------------------------------------------------------------------
# kernels


def kaiser_beta(order):
    return float(np.clip(0.875 * order, 4.0, 8.0))


def kernel_value(t, method, order):
    """Kernel value K(t) and derivative dK/dt on an array of offsets ``t`` (support |t| < order)."""
    t = np.asarray(t, dtype=float)
    inside = np.abs(t) < order
    pit = np.pi * t
    small = np.abs(t) < 1e-8
    safe = np.where(small, 1.0, t)
    sinc = np.where(small, 1.0, np.sin(np.pi * safe) / (np.pi * safe))
    dsinc = np.where(small, 0.0, (np.cos(pit) - sinc) / safe)
    if method == "lanczos":
        u = t / order
        win = np.sinc(u)
        safe_u = np.where(np.abs(u) < 1e-8, 1.0, u)
        dwin = np.where(np.abs(u) < 1e-8, 0.0, (np.cos(np.pi * u) - win) / safe_u) / order
    else:  # Kaiser-windowed sinc
        beta = kaiser_beta(order)
        u2 = np.clip(1.0 - (t / order) ** 2, 0.0, None)
        root = np.sqrt(u2)
        norm = i0(beta)
        win = i0(beta * root) / norm
        # d/dt I0(beta*root) = I1(beta*root) * beta * d(root)/dt, d(root)/dt = -t/(order**2 root);
        # I1(x)/x -> 1/2 as x -> 0, so use the ratio form.
        x = beta * root
        ratio = np.where(x > 1e-8, i1(np.where(x > 1e-8, x, 1.0)) / np.where(x > 1e-8, x, 1.0), 0.5)
        dwin = -ratio * beta**2 * t / order**2 / norm
    value = np.where(inside, sinc * win, 0.0)
    deriv = np.where(inside, dsinc * win + sinc * dwin, 0.0)
    return value, deriv


def split_shift(shift):
    """Integer part ``n`` and fraction ``f`` in [0, 1) of one shift component."""
    n = np.floor(shift)
    f = shift - n
    if f > 1.0 - _EXACT:
        n, f = n + 1.0, 0.0
    elif f < _EXACT:
        f = 0.0
    return int(n), float(f)


def kernel_taps(frac, method, order, *, derivative=False):
    """Kernel taps for a fractional shift ``frac`` in [0, 1).

    Output ``out[i] = sum_j k[j] in[i + j - order]`` (then moved by the integer part) is the input
    resampled at ``i - frac``. Taps are normalised to unit sum. With ``derivative`` also returns
    ``dk/dfrac`` (the derivative of the normalised taps), for analytic Jacobians.
    """
    j = np.arange(2 * order)
    t = order - j - frac
    value, deriv = kernel_value(t, method, order)
    total = value.sum()
    taps = value / total
    if frac == 0.0:
        taps = np.zeros(2 * order)
        taps[order] = 1.0
    if not derivative:
        return taps
    # d/dfrac of value_j = -K'(t_j); d/dfrac of total = -sum K'.
    dvalue = -deriv
    dtaps = (dvalue - taps * dvalue.sum()) / total
    return taps, dtaps


# --------------------------------------------------------------------------------------------
# separable application


def integer_shift(arr, n, axis, fill):
    """Move the content of ``arr`` by the integer ``n`` along ``axis``; new pixels get ``fill``."""
    if n == 0:
        return arr
    size = arr.shape[axis]
    out = np.empty_like(arr)
    if abs(n) >= size:
        out.fill(fill)
        return out
    src = [slice(None)] * arr.ndim
    dst = [slice(None)] * arr.ndim
    gap = [slice(None)] * arr.ndim
    if n > 0:
        src[axis], dst[axis], gap[axis] = slice(0, size - n), slice(n, size), slice(0, n)
    else:
        src[axis], dst[axis], gap[axis] = slice(-n, size), slice(0, size + n), slice(size + n, size)
    out[tuple(dst)] = arr[tuple(src)]
    out[tuple(gap)] = fill
    return out


def apply_taps(arr, taps, n, axis, *, mode="nearest", cval=0.0, fill=np.nan, exact=False):
    """Fractional FIR ``taps`` then integer shift ``n`` along ``axis`` of a 2-D array."""
    if not exact:
        arr = ndimage.correlate1d(arr, taps, axis=axis, mode=mode, cval=cval, output=arr.dtype)
    return integer_shift(arr, n, axis, fill)


class ShiftPlan(NamedTuple):
    """Per-frame, per-axis taps of a shift."""

    ny: int
    fy: float
    nx: int
    fx: float
    ky: np.ndarray
    kx: np.ndarray

    @classmethod
    def make(cls, shift_yx, method, order):
        ny, fy = split_shift(float(shift_yx[0]))
        nx, fx = split_shift(float(shift_yx[1]))
        return cls(ny, fy, nx, fx, kernel_taps(fy, method, order), kernel_taps(fx, method, order))

    def apply(self, arr, *, squared=False, mode="nearest", fill=np.nan):
        ky, kx = (self.ky**2, self.kx**2) if squared else (self.ky, self.kx)
        out = apply_taps(arr, ky, self.ny, 0, mode=mode, fill=fill, exact=self.fy == 0.0)
        return apply_taps(out, kx, self.nx, 1, mode=mode, fill=fill, exact=self.fx == 0.0)

    def invalid_weight(self, invalid):
        """Sum of ``|k_y k_x|`` over invalid inputs; outside the frame counts as invalid.

        Fully invalid border rows and columns (e.g. JWST's NaN reference pixels) are treated
        like the outside of the frame, with 1-D sums; only other invalid pixels need the 2-D
        filter.
        """
        rows = np.nonzero(~invalid.all(axis=1))[0]
        cols = np.nonzero(~invalid.all(axis=0))[0]
        if rows.size == 0:
            total = np.abs(self.ky).sum() * np.abs(self.kx).sum()
            return np.full(invalid.shape, total, np.float32)
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        if not invalid[box].any():
            return self.edge_weight(invalid.shape, box)
        ay, ax = np.abs(self.ky), np.abs(self.kx)
        sy, sx = ay.sum(), ax.sum()
        arr = invalid.astype(np.float32)
        out = apply_taps(arr, ay, self.ny, 0, mode="constant", cval=1.0, fill=sy,
                         exact=self.fy == 0.0)
        return apply_taps(out, ax, self.nx, 1, mode="constant", cval=sy, fill=sy * sx,
                          exact=self.fx == 0.0)

    def edge_weight(self, shape, box=None):
        """`invalid_weight` when the valid pixels are the rectangle ``box`` (default: all)."""
        ay, ax = np.abs(self.ky), np.abs(self.kx)
        vy = np.zeros(shape[0], np.float32)
        vx = np.zeros(shape[1], np.float32)
        box = box or (slice(None), slice(None))
        vy[box[0]] = 1.0
        vx[box[1]] = 1.0
        iy = apply_taps(vy, ay, self.ny, 0, mode="constant", fill=0.0, exact=self.fy == 0.0)
        ix = apply_taps(vx, ax, self.nx, 0, mode="constant", fill=0.0, exact=self.fx == 0.0)
        return (ay.sum() * ax.sum() - np.outer(iy, ix)).astype(np.float32)

    def dq_or(self, dq, threshold):
        """OR of ``dq`` over the inputs with ``|k_y k_x| >= threshold`` (nearest input always)."""
        ay, ax = np.abs(self.ky), np.abs(self.kx)
        threshold = min(threshold, ay.max() * ax.max())
        order = len(ay) // 2
        ysort = np.argsort(-ay, kind="stable")
        out = np.zeros_like(dq)
        cumulative = []
        for jx in np.nonzero(ax * ay.max() >= threshold * (1 - 1e-12))[0]:
            need = int(np.count_nonzero(ay * ax[jx] >= threshold * (1 - 1e-12)))
            while len(cumulative) < need:
                jy = ysort[len(cumulative)]
                moved = integer_shift(dq, self.ny + order - jy, 0, 0)
                cumulative.append(moved if not cumulative else cumulative[-1] | moved)
            out |= integer_shift(cumulative[need - 1], self.nx + order - jx, 1, 0)
        return out


# --------------------------------------------------------------------------------------------
# filling


_FILL_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx]


class NeighbourFiller:
    """Fills the invalid pixels of frames that share one validity mask (ny, nx).

    An invalid pixel gets the Gaussian-weighted (sigma 1 px) mean of the valid pixels within
    2 px; one with none gets the value of the nearest filled or valid pixel. The neighbour
    indices and weights are computed once per mask; the cost is proportional to the number of
    invalid pixels.
    """

    def __init__(self, valid):
        self.valid = valid
        self.complete = bool(valid.all())
        if self.complete:
            return
        ny, nx = valid.shape
        yy, xx = np.nonzero(~valid)
        dy, dx = np.array(_FILL_OFFSETS).T
        y, x = yy[:, None] + dy, xx[:, None] + dx
        inside = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
        self.y, self.x = np.where(inside, y, 0), np.where(inside, x, 0)
        gauss = np.exp(-0.5 * (dy * dy + dx * dx) / _FILL_SIGMA**2)
        self.g = np.where(inside & valid[self.y, self.x], gauss, 0.0)
        den = self.g.sum(axis=1)
        reached = den > 0
        self.g[reached] /= den[reached, None]
        self.yy, self.xx = yy, xx
        self.nearest = None
        if not reached.all():
            known = valid.copy()
            known[yy[reached], xx[reached]] = True
            if known.any():
                self.nearest = ndimage.distance_transform_edt(
                    ~known, return_distances=False, return_indices=True)
            else:
                self.nearest = False

    def __call__(self, frame, dtype):
        out = np.array(frame, dtype=dtype)
        if self.complete:
            return out
        out[self.yy, self.xx] = 0.0
        out[self.yy, self.xx] = (self.g * out[self.y, self.x]).sum(axis=1)
        if self.nearest is False:
            out[...] = 0.0
        elif self.nearest is not None:
            out = out[self.nearest[0], self.nearest[1]]
        return out


def fill_invalid(frame, valid, dtype, filler=None):
    """Copy of one frame with invalid pixels filled (reusing ``filler`` when its mask matches)."""
    if filler is None or not np.array_equal(filler.valid, valid):
        filler = NeighbourFiller(valid)
    return filler(frame, dtype), filler


def check_method(method, order):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    if order is None:
        order = DEFAULT_ORDER[method]
    if int(order) != order or order < (1 if method == "lanczos" else 2):
        raise ValueError(f"order must be an integer >= {1 if method == 'lanczos' else 2}, "
                         f"got {order}")
    return int(order)
