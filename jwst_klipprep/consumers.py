"""What the ``klipprep`` pipeline does last, so that KLIP codes read its products right.

* `finalize_star_keywords`: STARCENX/Y is the star and XOFFSET/YOFFSET are 0 (originals in
  XOFFORIG/YOFFORIG), so pyKLIP's ``JWSTData`` with its default ``center_include_offset=True``
  and a reader of STARCENX/Y alone find the same position;
* the star uncertainty (STARERRX/Y) from what ``recenter_frames`` and ``align_frames`` measured;
* the NaN policy (`fill_nans`): pyKLIP's ADI+RDI covariances turn NaN when any pixel of a zone
  is NaN (and its reader sets every NON_SCIENCE pixel to NaN), jwst's ``klip`` needs finite
  pixels everywhere; the filled pixels are flagged DO_NOT_USE so that no information is lost.
"""

import logging

import numpy as np
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.nans import replace_nans
from jwst_klipprep.datamodel_arrays import FrameArrays
from jwst_klipprep.keywords import finalize_star_keywords, get_center_err_yx, set_center_err_yx
from jwst_klipprep.provenance import record

__all__ = ["fill_nans", "prepare_for_consumers", "star_uncertainty_from_records"]

log = logging.getLogger(__name__)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]


def star_uncertainty_from_records(model):
    """1-sigma uncertainty ``(y, x)`` (px) of the final star position, or None if not measured.

    The ``recenter_frames`` fit uncertainty (star - mask centre) combined in quadrature with the
    median ``align_frames`` shift uncertainty when that step moved the frame.
    """
    node = model.meta.instance.get("klipprep", {})
    recenter = node.get("recenter_frames") or {}
    err = recenter.get("star_offset_err_yx")
    if err is None:
        return None
    total = np.asarray(err, float) ** 2
    align = node.get("align_frames") or {}
    if align.get("shift_err_yx") is not None:
        shift_err = np.asarray(align["shift_err_yx"], float).reshape(-1, 2)
        if np.isfinite(shift_err).any():
            total = total + np.nanmedian(shift_err, axis=0) ** 2
    total = np.sqrt(total)
    return tuple(float(v) for v in total) if np.all(np.isfinite(total)) else None


def fill_nans(model, *, value=0.0):
    """Replace non-finite SCI pixels by ``value``, flag them DO_NOT_USE; return their number.

    NON_SCIENCE is cleared on the filled pixels (pyKLIP's reader would turn them back into NaN);
    ERR and VAR_* keep their NaN there (no measurement), consumers do not read them.
    """
    arrays = FrameArrays.from_model(model)
    out = replace_nans(arrays.data, fill_value=value)
    if not out.replaced.any():
        return 0
    dq = np.asarray(arrays.dq, np.uint32)
    arrays.data = out.data
    arrays.dq = np.where(out.replaced, (dq | DO_NOT_USE) & ~np.uint32(NON_SCIENCE), dq)
    arrays.to_model(model)
    return int(out.replaced.sum())


def prepare_for_consumers(model, *, nan_fill=True, fill_value=0.0):
    """Last touch of a product: consistent star keywords, uncertainties, NaN policy."""
    finalize_star_keywords(model)
    err = star_uncertainty_from_records(model)
    if err is not None and get_center_err_yx(model, "star") is None:
        set_center_err_yx(model, "star", err)
    filled = fill_nans(model, value=fill_value) if nan_fill else 0
    record(model, "finalize", star_err_yx=err, nan_filled=filled, nan_fill=bool(nan_fill),
           fill_value=fill_value)
    log.info("klipprep: %s: star keywords final (XOFFSET/YOFFSET -> XOFFORIG/YOFFORIG), star "
             "uncertainty %s px, %d NaN pixel(s) %s", model.meta.filename,
             "unknown" if err is None else "(%.4f, %.4f)" % err, filled,
             f"filled with {fill_value:g} (DO_NOT_USE)" if nan_fill else "kept")
    return filled
