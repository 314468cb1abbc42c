"""Crop frames on their four sides."""

from jwst_klipprep.algorithms.padding import parse_pad

__all__ = ["crop_frames", "crop_slices", "parse_crop"]


def parse_crop(npix, shape):
    """Normalise a crop specification and check it leaves pixels in a frame of ``shape``.

    Parameters
    ----------
    npix : int or sequence of 4 ints
        One width for every side, or ``(left, right, bottom, top)`` (x then y; "bottom" is the
        row-0 side), non-negative whole pixels.
    shape : tuple of int
        ``(..., ny, nx)`` of the frames.

    Returns
    -------
    tuple of int
        ``(left, right, bottom, top)``.
    """
    crop = parse_pad(npix)
    left, right, bottom, top = crop
    ny, nx = shape[-2:]
    if left + right >= nx or bottom + top >= ny:
        raise ValueError(f"cropping (left, right, bottom, top) = {crop} leaves no pixel of a "
                         f"{ny} x {nx} frame")
    return crop


def crop_slices(shape, crop):
    """The ``(y, x)`` slices that keep the frame after cropping (a 0 width keeps that side)."""
    left, right, bottom, top = crop
    ny, nx = shape[-2:]
    return (slice(bottom, ny - top), slice(left, nx - right))


def crop_frames(array, crop):
    """Crop the last two axes of ``array``; return a copy.

    Parameters
    ----------
    array : ndarray, shape (..., ny, nx)
        Not modified.
    crop : tuple of 4 int
        ``(left, right, bottom, top)`` as returned by `parse_crop`.

    Returns
    -------
    ndarray, shape (..., ny - bottom - top, nx - left - right)
    """
    ys, xs = crop_slices(array.shape, crop)
    return array[..., ys, xs].copy()
