"""The one adapter between jwst datamodels and the arrays the algorithms work on.

Conventions (the only place they are converted):

* arrays are 3-D ``(nints, ny, nx)``; an ImageModel is one integration ``(1, ny, nx)`` and is
  written back 2-D;
* positions inside the package are 0-indexed ``(y, x)`` (names end in ``_yx``); the FITS
  keywords CRPIX1/2, MASKCENX/Y and STARCENX/Y are 1-indexed ``(x, y)``;
* the mask centre and the star position live in the SCI header keywords MASKCENX/MASKCENY and
  STARCENX/STARCENY (1-indexed, as the prior art and pyKLIP readers use them), their 1-sigma
  uncertainties in MASKERRX/MASKERRY and STARERRX/STARERRY (pixels); when absent the mask centre
  defaults to CRPIX and the star to the mask centre plus the commanded dither offset
  (XOFFSET/YOFFSET over the pixel scale, as pyKLIP reads them);
* once the star position is final (the frames were moved, or the pipeline finished), the
  primary XOFFSET/YOFFSET are set to 0 and their original values kept in XOFFORIG/YOFFORIG, so
  that a reader adding the offsets to STARCENX/Y (pyKLIP's default) gets the same position
  (`finalize_star_keywords`);
* what a step measured is recorded under ``model.meta.klipprep.<alias>`` (ASDF tree) and its
  status under ``model.meta.cal_step.<alias>``.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

__all__ = [
    "VAR_NAMES",
    "FrameArrays",
    "dither_offset_yx",
    "dq_bits",
    "finalize_star_keywords",
    "get_center_err_yx",
    "get_center_yx",
    "record",
    "set_center_err_yx",
    "set_center_yx",
    "set_fits_keyword",
    "set_status",
    "shift_geometry",
]

log = logging.getLogger(__name__)

#: Variance arrays kept consistent with SCI when present.
VAR_NAMES = ("var_poisson", "var_rnoise", "var_flat")

_CENTER_KEYS = {"mask": ("MASKCENX", "MASKCENY"), "star": ("STARCENX", "STARCENY")}
_CENTER_COMMENTS = {
    "mask": "coronagraph mask centre, 1-indexed pixels",
    "star": "star position, 1-indexed pixels",
}
#: 1-sigma uncertainties of the centres, pixels (FITS keywords of at most 8 characters).
_ERR_KEYS = {"mask": ("MASKERRX", "MASKERRY"), "star": ("STARERRX", "STARERRY")}
_ERR_COMMENTS = {
    "mask": "1-sigma statistical error of MASKCEN (px)",
    "star": "1-sigma statistical error of STARCEN (px)",
}
#: Primary keywords that keep the commanded dither offsets once XOFFSET/YOFFSET are zeroed.
ORIGINAL_OFFSET_KEYS = ("XOFFORIG", "YOFFORIG")


def dq_bits(names):
    """Return the integer OR of DQ flags given by name or value (``"DO_NOT_USE,OUTLIER"``,
    ``"1,2048"`` or a list of either)."""
    if names is None:
        return 0
    if isinstance(names, str):
        names = [n for n in names.replace("+", ",").split(",") if n.strip()]
    value = 0
    for name in names:
        key = str(name).strip().upper()
        if key.lstrip("-").isdigit():
            number = int(key)
            if number <= 0 or number & (number - 1) or number >= 2**32:
                raise ValueError(f"DQ flag value {name!r} is not a single flag (a power of 2 "
                                 "below 2**32)")
            value |= number
            continue
        if key not in dqflags.pixel:
            raise ValueError(f"unknown DQ flag {name!r}; valid names are {sorted(dqflags.pixel)}")
        value |= dqflags.pixel[key]
    return value


def _model_name(model):
    return model.meta.filename or f"<in-memory {type(model).__name__}>"


def _present(array):
    return array is not None and np.size(array) > 0


@dataclass
class FrameArrays:
    """DATA, ERR, DQ and VAR_* of one exposure as 3-D ``(nints, ny, nx)`` arrays.

    The arrays are views of the model's arrays where possible; algorithms return new arrays and
    the step assigns them here before `to_model`.
    """

    data: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    var: dict = field(default_factory=dict)
    image: bool = False
    dropped: tuple = ()

    @classmethod
    def from_model(cls, model):
        """Read the arrays of a CubeModel or ImageModel, checking their shapes.

        ERR or DQ of a different shape than SCI is an error; a VAR_* array of a different shape
        (seen in real files cropped by other tools) is dropped with a warning, so that the output
        stays internally consistent.
        """
        name = _model_name(model)
        image = isinstance(model, datamodels.ImageModel)
        data = np.asarray(model.data)
        if image:
            data = data[np.newaxis]
        shape = data.shape

        def as3d(array):
            array = np.asarray(array)
            return array[np.newaxis] if image and array.ndim == 2 else array

        if _present(model.err):
            err = as3d(model.err)
            if err.shape != shape:
                raise ValueError(f"{name}: ERR has shape {err.shape} but SCI has {shape}")
        else:
            log.warning("%s: no ERR array; using zeros", name)
            err = np.zeros(shape, dtype=np.float32)
        if _present(model.dq):
            dq = as3d(model.dq)
            if dq.shape[-2:] != shape[-2:] or dq.ndim != 3 or dq.shape[0] not in (1, shape[0]):
                raise ValueError(f"{name}: DQ has shape {dq.shape} but SCI has {shape}")
            dq = np.broadcast_to(dq, shape)
        else:
            dq = np.zeros(shape, dtype=np.uint32)
        var, dropped = {}, []
        for var_name in VAR_NAMES:
            array = getattr(model, var_name, None)
            if not _present(array):
                continue
            array = as3d(array)
            if array.shape != shape:
                log.warning(
                    "%s: %s has shape %s but SCI has %s; dropping it from the output "
                    "(the file is internally inconsistent)",
                    name, var_name.upper(), array.shape, shape,
                )
                dropped.append(var_name)
                continue
            var[var_name] = array
        return cls(data=data, err=err, dq=dq, var=var, image=image, dropped=tuple(dropped))

    @property
    def shape(self):
        """``(nints, ny, nx)``."""
        return self.data.shape

    def to_model(self, model):
        """Write the arrays back (2-D for an ImageModel); drop inconsistent VAR_* arrays."""

        def as_model(array, dtype):
            array = np.asarray(array, dtype=dtype)
            return array[0] if self.image else array

        # Written through ``model.instance``: the dtypes and shapes are fixed here, and the
        # datamodel's per-assignment schema validation cost ~70 ms per exposure (the whole
        # tree is validated again when the product is saved).
        arrays = {"data": (self.data, np.float32), "err": (self.err, np.float32),
                  "dq": (self.dq, np.uint32)}
        arrays.update({name: (array, np.float32) for name, array in self.var.items()})
        for name, (array, dtype) in arrays.items():
            array = as_model(array, dtype)
            if array.shape != (self.shape[1:] if self.image else self.shape):
                raise ValueError(f"{_model_name(model)}: {name.upper()} has shape {array.shape}, "
                                 f"expected {self.shape}")
            model.instance[name] = np.ascontiguousarray(array)
        for var_name in self.dropped:
            if var_name in model.instance:
                del model.instance[var_name]


# --------------------------------------------------------------------------------------------
# Centres (0-indexed (y, x) inside, 1-indexed FITS keywords outside)


def _sci_header(model):
    """The list of extra SCI header cards ([key, value, comment]) of the model."""
    extra = model.instance.setdefault("extra_fits", {})
    sci = extra.setdefault("SCI", {})
    return sci.setdefault("header", [])


def _get_sci_keyword(model, key):
    for card in model.instance.get("extra_fits", {}).get("SCI", {}).get("header", []):
        if card[0] == key:
            return card[1]
    return None


def _set_sci_keyword(model, key, value, comment=""):
    header = _sci_header(model)
    for card in header:
        if card[0] == key:
            card[1] = value
            return
    header.append([key, value, comment])


def set_fits_keyword(model, key, value, comment=""):
    """Write a keyword into the SCI header of the saved file (a FITS-visible summary)."""
    _set_sci_keyword(model, key, value, comment)


def _pixel_scale_arcsec(model):
    """Pixel scale (arcsec) as pyKLIP computes it: sqrt(PIXAR_A2), else |CDELT1| in arcsec."""
    area = model.meta.photometry.pixelarea_arcsecsq
    if area is not None and np.isfinite(area) and area > 0:
        return float(np.sqrt(area))
    cdelt = model.meta.wcsinfo.cdelt1
    if cdelt is not None and np.isfinite(cdelt) and cdelt != 0:
        return abs(float(cdelt)) * 3600.0
    return None


def _get_primary_keyword(model, key):
    for card in model.instance.get("extra_fits", {}).get("PRIMARY", {}).get("header", []):
        if card[0] == key:
            return card[1]
    return None


def _set_primary_keyword(model, key, value, comment=""):
    extra = model.instance.setdefault("extra_fits", {})
    header = extra.setdefault("PRIMARY", {}).setdefault("header", [])
    for card in header:
        if card[0] == key:
            card[1] = value
            return
    header.append([key, value, comment])


def dither_offset_yx(model, *, original=False):
    """The commanded dither offset in pixels, 0-indexed ``(dy, dx)``.

    ``XOFFSET / pixel scale`` along x and ``YOFFSET / pixel scale`` along y, the convention of
    pyKLIP's ``JWSTData`` (pixel scale ``sqrt(PIXAR_A2)``).  ``original=True`` returns the
    commanded offsets even after `finalize_star_keywords` zeroed XOFFSET/YOFFSET (read back from
    XOFFORIG/YOFFORIG).  Missing offsets or pixel scale give ``(0, 0)``.
    """
    x, y = model.meta.dither.x_offset, model.meta.dither.y_offset
    if original:
        ox, oy = (_get_primary_keyword(model, k) for k in ORIGINAL_OFFSET_KEYS)
        if ox is not None and oy is not None:
            x, y = ox, oy
    scale = _pixel_scale_arcsec(model)
    if x is None or y is None or scale is None:
        return (0.0, 0.0)
    return (float(y) / scale, float(x) / scale)


def get_center_yx(model, which="crpix"):
    """Return a recorded centre as 0-indexed ``(y, x)`` floats.

    Parameters
    ----------
    model : DataModel
    which : {"crpix", "mask", "star"}
        ``crpix``: the WCS reference pixel; ``mask``: the coronagraph mask centre (defaults to
        CRPIX); ``star``: the star position (defaults to the mask centre plus the commanded
        dither offset, `dither_offset_yx`, the position pyKLIP assumes).
    """
    if which == "crpix":
        crpix1, crpix2 = model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2
        if crpix1 is None or crpix2 is None:
            raise ValueError(f"{_model_name(model)}: CRPIX1/CRPIX2 missing from the metadata")
        return (float(crpix2) - 1.0, float(crpix1) - 1.0)
    if which not in _CENTER_KEYS:
        raise ValueError(f"unknown centre {which!r}; use 'crpix', 'mask' or 'star'")
    key_x, key_y = _CENTER_KEYS[which]
    x, y = _get_sci_keyword(model, key_x), _get_sci_keyword(model, key_y)
    if x is None or y is None:
        if which == "mask":
            return get_center_yx(model, "crpix")
        mask_y, mask_x = get_center_yx(model, "mask")
        dy, dx = dither_offset_yx(model)
        return (mask_y + dy, mask_x + dx)
    return (float(y) - 1.0, float(x) - 1.0)


def set_center_yx(model, which, center_yx, err_yx=None):
    """Record a centre given as 0-indexed ``(y, x)`` (written as 1-indexed keywords).

    ``err_yx``, when given, is its 1-sigma uncertainty ``(y, x)`` in pixels (`set_center_err_yx`).
    """
    y, x = (float(v) for v in center_yx)
    if which == "crpix":
        model.meta.wcsinfo.crpix1 = x + 1.0
        model.meta.wcsinfo.crpix2 = y + 1.0
        return
    key_x, key_y = _CENTER_KEYS[which]
    _set_sci_keyword(model, key_x, x + 1.0, _CENTER_COMMENTS[which])
    _set_sci_keyword(model, key_y, y + 1.0, _CENTER_COMMENTS[which])
    if err_yx is not None:
        set_center_err_yx(model, which, err_yx)


def get_center_err_yx(model, which):
    """The recorded 1-sigma uncertainty ``(y, x)`` in pixels of the mask or star, or None."""
    if which not in _ERR_KEYS:
        raise ValueError(f"unknown centre {which!r}; use 'mask' or 'star'")
    x, y = (_get_sci_keyword(model, k) for k in _ERR_KEYS[which])
    if x is None or y is None:
        return None
    return (float(y), float(x))


def set_center_err_yx(model, which, err_yx):
    """Record the 1-sigma uncertainty ``(y, x)`` (pixels) of the mask centre or the star.

    Written next to the centre as MASKERRX/MASKERRY or STARERRX/STARERRY (SCI header).
    """
    if which not in _ERR_KEYS:
        raise ValueError(f"unknown centre {which!r}; use 'mask' or 'star'")
    ey, ex = (float(v) for v in err_yx)
    if not (np.isfinite(ex) and np.isfinite(ey) and ex >= 0 and ey >= 0):
        raise ValueError(f"{_model_name(model)}: invalid {which} uncertainty {err_yx!r}")
    key_x, key_y = _ERR_KEYS[which]
    _set_sci_keyword(model, key_x, ex, _ERR_COMMENTS[which])
    _set_sci_keyword(model, key_y, ey, _ERR_COMMENTS[which])


def finalize_star_keywords(model):
    """Make the header describe one star position for every reader; return True if changed.

    Writes the star position explicitly (STARCENX/Y, including the dither when it was never
    measured), keeps the commanded offsets in the primary keywords XOFFORIG/YOFFORIG (arcsec)
    and sets XOFFSET/YOFFSET to 0, so that pyKLIP's default reading (STARCENX + XOFFSET / pixel
    scale) and a plain STARCENX reading agree.  Idempotent.
    """
    x, y = model.meta.dither.x_offset, model.meta.dither.y_offset
    set_center_yx(model, "star", get_center_yx(model, "star"))
    if _get_primary_keyword(model, ORIGINAL_OFFSET_KEYS[0]) is None:
        _set_primary_keyword(model, ORIGINAL_OFFSET_KEYS[0], float(x or 0.0),
                             "commanded XOFFSET (arcsec); included in STARCENX")
        _set_primary_keyword(model, ORIGINAL_OFFSET_KEYS[1], float(y or 0.0),
                             "commanded YOFFSET (arcsec); included in STARCENY")
    elif not x and not y:
        return False
    if x is not None or y is not None:
        model.meta.dither.x_offset = 0.0
        model.meta.dither.y_offset = 0.0
    return True


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
            log.warning("%s: could not shift the gWCS (%s); CRPIX updated", _model_name(model), exc)


# --------------------------------------------------------------------------------------------
# Provenance


def _plain(value):
    """Convert numpy values to plain Python for the ASDF tree."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def record(model, alias, **values):
    """Record what a step measured or applied under ``meta.klipprep.<alias>``."""
    node = model.meta.instance.setdefault("klipprep", {})
    node[alias] = _plain(values)


def set_status(model, alias, status="COMPLETE"):
    """Set ``meta.cal_step.<alias>`` (COMPLETE, SKIPPED or FAILED)."""
    if status not in ("COMPLETE", "SKIPPED", "FAILED"):
        raise ValueError(f"bad step status {status!r}")
    model.meta.cal_step.instance[alias] = status
