"""Coronagraph transmission map of an exposure: a user psfmask file or the analytic mask model."""

import functools
import logging

import numpy as np
from astropy.io import fits

from jwst_klipprep.keywords import get_center_yx

__all__ = ["load_psfmask", "transmission_map"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _read_psfmask(path):
    # Real psfmask files are often labelled DATAMODL=CubeModel, which datamodels.open rejects;
    # read the SCI array directly.
    try:
        with fits.open(path) as hdul:
            name = "SCI" if "SCI" in hdul else 0
            data = np.asarray(hdul[name].data, dtype=np.float64)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the psfmask file: {exc}") from None
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f"{path}: psfmask SCI must be 2-D, got shape {data.shape}")
    data.setflags(write=False)
    return data


def load_psfmask(path, shape):
    """Read a psfmask (transmission) file and check it matches the frame shape ``(ny, nx)``."""
    data = _read_psfmask(str(path))
    if data.shape != tuple(shape):
        raise ValueError(
            f"{path}: psfmask has shape {data.shape} but the frames are {tuple(shape)}"
        )
    return data


def transmission_map(model, shape, *, psfmask=None):
    """Transmission (0..1) on the frame grid, or None when no model exists for the mask.

    Parameters
    ----------
    model : DataModel
        Supplies the instrument, the coronagraph and the mask centre.
    shape : tuple of int
        ``(ny, nx)`` of the frames.
    psfmask : str, optional
        Path to a psfmask file; when None the analytic model of `jwst_klipprep.psf.builtin` is
        centred on the recorded mask centre.
    """
    if psfmask:
        return load_psfmask(psfmask, shape)
    from jwst_klipprep.psf.builtin import mask_transmission

    try:
        return mask_transmission(
            instrument=model.meta.instrument.name, coronagraph=model.meta.instrument.coronagraph,
            shape=tuple(shape), center_yx=get_center_yx(model, "mask"),
        )
    except ValueError as exc:
        log.warning("%s: no transmission model (%s); the coronagraph region is not excluded",
                    model.meta.filename, exc)
        return None
