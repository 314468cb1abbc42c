"""Moving frames and what they record: the one place where frames are resampled.

* `shift_geometry` moves CRPIX, the mask centre, the star position and the gWCS with the pixels
  (every shift, crop and pad goes through it);
* `apply_shift` resamples DATA/ERR/VAR_*/DQ with the shared shifting component and moves the
  geometry; ``recenter_frames`` and ``align_frames`` call it when they run standalone;
* in the ``klipprep`` pipeline they only record their shifts (`set_pending_shift`) and the
  pipeline calls `apply_pending_shift` once, so each frame is resampled at most once.
"""


import logging

import numpy as np
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.shift import shift_frames
from jwst_klipprep.datamodel_arrays import FrameArrays, model_name
from jwst_klipprep.keywords import finalize_star_keywords, get_center_yx, set_center_yx

__all__ = [
    "apply_pending_shift", "apply_shift", "array_center_yx", "pending_shift",
    "set_pending_shift", "shift_geometry",
]

log = logging.getLogger(__name__)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


def apply_shift(model, shift_yx, *, bad_bits=DO_NOT_USE, method="sinc", star_yx=None):
    """Shift DATA/ERR/VAR_*/DQ of ``model`` (in place) and move its recorded positions.

    Parameters
    ----------
    model : CubeModel or ImageModel
    shift_yx : array_like, shape (2,) or (nints, 2)
        Content displacement per integration, pixels (0-indexed (y, x)).
    bad_bits : int
        DQ bits of input pixels that are not used.
    method : str
        Interpolation kernel of `jwst_klipprep.algorithms.shift.shift_frames`.
    star_yx : tuple of float, optional
        Star position after the shift (0-indexed); default: the recorded star moved by the mean
        shift.

    Returns
    -------
    int
        Number of pixels that lost their support (NaN, flagged DO_NOT_USE).
    """
    arrays = FrameArrays.from_model(model)
    shifts = np.broadcast_to(np.asarray(shift_yx, float), (arrays.shape[0], 2))
    if not np.any(shifts):
        return 0
    out = shift_frames(
        arrays.data, shifts, err=arrays.err, var=arrays.var, dq=np.asarray(arrays.dq),
        bad=(arrays.dq & bad_bits) != 0, method=method, lost_flag=DO_NOT_USE,
    )
    arrays.data, arrays.err, arrays.dq, arrays.var = out.data, out.err, out.dq, out.var
    arrays.to_model(model)
    shift_geometry(model, shifts.mean(axis=0))
    if star_yx is not None:
        set_center_yx(model, "star", star_yx)
    return int(out.lost.sum())


def pending_shift(model):
    """The shift (nints, 2) a step measured but did not apply, or None."""
    value = model.meta.instance.get("klipprep", {}).get("pending_shift_yx")
    return None if value is None else np.asarray(value, float)


def set_pending_shift(model, shift_yx, *, star_yx=None):
    """Record a shift to apply later (pipeline mode), with the star position it will give."""
    node = model.meta.instance.setdefault("klipprep", {})
    node["pending_shift_yx"] = np.asarray(shift_yx, float).tolist()
    node["pending_star_yx"] = None if star_yx is None else [float(v) for v in star_yx]


def apply_pending_shift(model, *, method="sinc"):
    """Apply and clear the pending shift of ``model``; return the number of lost pixels."""
    shift = pending_shift(model)
    if shift is None:
        return 0
    node = model.meta.instance["klipprep"]
    star = node.pop("pending_star_yx", None)
    node.pop("pending_shift_yx")
    lost = apply_shift(model, shift, method=method, star_yx=star)
    log.info("%s: applied the composed shift (dy, dx) = (%.3f, %.3f) px (mean over %d "
             "integration(s)); %d pixel(s) lost their support", model.meta.filename,
             *shift.mean(axis=0), len(shift), lost)
    return lost


def array_center_yx(shape):
    """The target position of the star: the array centre ((ny - 1) / 2, (nx - 1) / 2)."""
    ny, nx = shape[-2:]
    return ((ny - 1) / 2.0, (nx - 1) / 2.0)


def shift_geometry(model, shift_yx):
    """Move every recorded position by ``shift_yx`` pixels, as the image content moved.

    Updates CRPIX, the mask centre and the star position (each made explicit; the star then
    includes the dither offset, which `finalize_star_keywords` moves out of XOFFSET/YOFFSET),
    and the gWCS (a shift is prepended to its detector transform), so that a sky position keeps
    its pixel.  Uncertainties of the centres are unchanged by a shift.
    """
    dy, dx = (float(v) for v in shift_yx)
    centers = {which: get_center_yx(model, which) for which in ("crpix", "mask", "star")}
    for which, (y, x) in centers.items():
        set_center_yx(model, which, (y + dy, x + dx))
    finalize_star_keywords(model)
    wcs = model.meta.wcs if "wcs" in model.meta.instance else None
    if wcs is not None and (dx or dy):
        from astropy.modeling.models import Shift

        bbox = getattr(wcs, "bounding_box", None)
        try:
            wcs.insert_transform(wcs.input_frame, Shift(-dx) & Shift(-dy), after=True)
            if bbox is not None:
                (x0, x1), (y0, y1) = bbox
                wcs.bounding_box = ((x0 + dx, x1 + dx), (y0 + dy, y1 + dy))
        except Exception as exc:  # a WCS we cannot edit: say so rather than leave it silently
            log.warning("%s: could not shift the gWCS (%s); CRPIX updated", model_name(model), exc)
