"""Shared helpers of the bad-pixel modules: input checks, NaN-aware medians, footprints.

Private to the ``badpix*`` modules; the public API is `jwst_klipprep.algorithms.badpix`.
"""

import math

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.482602218505602  # sigma of a Gaussian / median absolute deviation
VAR_MEDIAN = math.pi / 2.0  # variance of the median of n Gaussian samples = (pi/2) sigma^2 / n
CHUNK = 65536  # pixels per batch in the gathered (batch, footprint) arrays


def check_cube(name, array):
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be 3-D (nints, ny, nx), got shape {array.shape}")
    return array


def check_like(name, array, shape, dtype=None):
    if array is None:
        return None
    array = np.asarray(array, dtype=dtype)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of data {tuple(shape)}, got {array.shape}")
    return array


def prepare(data, err, bad):
    """Validate inputs and return (data, err, bad, good) with good = usable pixel."""
    data = check_cube("data", data)
    err = check_like("err", err, data.shape)
    bad = check_like("bad", bad, data.shape)
    if bad is not None and bad.dtype != bool:
        raise TypeError(f"bad must be a boolean array (True = bad pixel), got dtype {bad.dtype}")
    good = np.isfinite(data)
    if err is not None:
        good &= np.isfinite(err)
    if bad is not None:
        good &= ~bad
    return data, err, bad, good


def median_sorted(s, n, axis):
    """Median along ``axis`` of ``s`` sorted with NaN last, ``n`` finite values (NaN if n=0)."""
    lo = np.take_along_axis(s, np.expand_dims(np.maximum((n - 1) // 2, 0), axis), axis)
    hi = np.take_along_axis(s, np.expand_dims(np.maximum(n // 2, 0), axis), axis)
    return (0.5 * (lo + hi)).squeeze(axis)


def nanmedian(v, axis=-1):
    """(median, count) of the finite values along ``axis``, without warnings; NaN if none."""
    s = np.sort(v, axis=axis)
    n = np.sum(np.isfinite(s), axis=axis)
    return median_sorted(s, n, axis), n


def robust_stats(v):
    """(median, count, sorted values with NaN last) along the last axis of a 2-D array."""
    s = np.sort(v, axis=-1)
    n = np.sum(np.isfinite(s), axis=-1)
    return median_sorted(s, n, -1), n, s


def nanmad_sigma(v, med, axis=-1):
    """Gaussian sigma from the median absolute deviation of the finite values around ``med``."""
    return MAD_TO_SIGMA * nanmedian(np.abs(v - np.expand_dims(med, axis)), axis)[0]


def footprint_offsets(footprint):
    """Offsets (dy, dx) of a footprint without its centre, and of the ring just outside it."""
    if np.isscalar(footprint):
        size = int(footprint)
        if size < 3 or size % 2 == 0:
            raise ValueError(f"footprint size must be an odd integer >= 3, got {footprint}")
        fp = np.ones((size, size), bool)
    else:
        fp = np.asarray(footprint, dtype=bool)
        if fp.ndim != 2 or fp.shape[0] % 2 == 0 or fp.shape[1] % 2 == 0:
            raise ValueError(f"footprint must be a 2-D array with odd sides, got shape {fp.shape}")
    cy, cx = fp.shape[0] // 2, fp.shape[1] // 2
    fp = np.pad(fp, 1)
    fp[cy + 1, cx + 1] = True
    outer = ndimage.binary_dilation(fp, np.ones((3, 3), bool)) & ~fp
    fp[cy + 1, cx + 1] = False
    inner = np.argwhere(fp) - (cy + 1, cx + 1)
    if len(inner) == 0:
        raise ValueError("footprint selects no neighbour")
    return inner, np.argwhere(outer) - (cy + 1, cx + 1)


class Gather:
    """Fetch footprint values around scattered pixels of a cube from a NaN-padded copy."""

    def __init__(self, cube, pad):
        self.pad = pad
        self.shape = cube.shape
        self.padded = np.pad(cube, ((0, 0), (pad, pad), (pad, pad)), constant_values=np.nan)
        self.flat = self.padded.reshape(-1)

    def offsets(self, dyx):
        return dyx[:, 0] * self.padded.shape[2] + dyx[:, 1]

    def base(self, k, y, x):
        return (k * self.padded.shape[1] + y + self.pad) * self.padded.shape[2] + x + self.pad

    def __call__(self, base, offsets):
        return self.flat[base[:, None] + offsets[None, :]].astype(np.float64)

    def set_nan(self, k, y, x):
        self.flat[self.base(k, y, x)] = np.nan



def robust_mad(values):
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan
    return MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))

