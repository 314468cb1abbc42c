"""Pad frames on their four sides."""

import numpy as np

__all__ = ["MAX_PAD", "pad_frames", "padded_nbytes", "parse_pad"]

#: Widest pad accepted on one side, in pixels (twice a full NIRCam detector).
MAX_PAD = 4096


def parse_pad(npix):
    """Normalise a pad specification to ``(left, right, bottom, top)`` non-negative ints.

    Parameters
    ----------
    npix : int or sequence of 4 ints
        One width for every side, or ``(left, right, bottom, top)`` in pixels (x then y, as in
        the prior art and in DS9: "bottom" is the low-y side, row 0).

    Returns
    -------
    tuple of int
        ``(left, right, bottom, top)``.
    """
    values = [npix] if np.isscalar(npix) else list(npix)
    if len(values) == 1:
        values = values * 4
    if len(values) != 4:
        raise ValueError(f"npix must be one int or 4 ints (left, right, bottom, top), got {npix}")
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"npix must be integers, got {npix}") from None
        if not number.is_integer():
            raise ValueError(f"npix must be whole pixels, got {npix}")
        value = int(number)
        if value < 0:
            raise ValueError(f"npix must be >= 0, got {npix}")
        if value > MAX_PAD:
            raise ValueError(f"npix must be <= {MAX_PAD} pixels per side, got {npix}")
        out.append(value)
    return tuple(out)


def padded_nbytes(shape, pad, *, narrays=1, itemsize=4):
    """Bytes of ``narrays`` arrays of ``shape`` (..., ny, nx) once padded by ``pad``."""
    left, right, bottom, top = pad
    *lead, ny, nx = shape
    return int(np.prod(lead, dtype=np.int64)) * (ny + bottom + top) * (nx + left + right) * (
        narrays * itemsize)


def pad_frames(array, pad, *, fill_value=np.nan):
    """Pad the last two axes of ``array``.

    Parameters
    ----------
    array : ndarray, shape (..., ny, nx)
        Not modified.
    pad : tuple of 4 int
        ``(left, right, bottom, top)`` as returned by `parse_pad`.
    fill_value : scalar, optional
        Value of the new pixels (NaN by default; give an int for integer arrays such as DQ).

    Returns
    -------
    ndarray, shape (..., ny + bottom + top, nx + left + right)
        Same dtype as ``array``.
    """
    left, right, bottom, top = pad
    array = np.asarray(array)
    ny, nx = array.shape[-2:]
    out = np.full((*array.shape[:-2], ny + bottom + top, nx + left + right), fill_value,
                  dtype=array.dtype)  # faster than np.pad, same result
    out[..., bottom:bottom + ny, left:left + nx] = array
    return out
