"""Replace non-finite values by a constant."""

from typing import NamedTuple

import numpy as np

__all__ = ["NanReplacement", "replace_nans"]


class NanReplacement(NamedTuple):
    """Result of `replace_nans`."""

    #: Copy of the input with NaN (and +-inf) replaced, same shape and dtype.
    data: np.ndarray
    #: True where a value was replaced.
    replaced: np.ndarray


def replace_nans(data, *, fill_value=0.0):
    """Replace NaN and infinite values of ``data`` by ``fill_value``.

    Parameters
    ----------
    data : ndarray
        Any shape, usually ``(nints, ny, nx)``.  Not modified.
    fill_value : float, optional
        Value written where ``data`` is not finite.

    Returns
    -------
    NanReplacement
        ``data`` (a new array) and the boolean ``replaced`` mask.
    """
    data = np.asarray(data)
    if not np.isfinite(fill_value):
        raise ValueError(f"fill_value must be finite, got {fill_value}")
    replaced = ~np.isfinite(data)
    out = data.copy()
    out[replaced] = fill_value
    return NanReplacement(out, replaced)
