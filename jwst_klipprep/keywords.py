"""FITS keywords of positions: the only place where coordinates are converted.

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
  (`finalize_star_keywords`).

See ``docs/conventions.rst`` for the meaning of every keyword.
"""

import logging

import numpy as np

from jwst_klipprep.datamodel_arrays import model_name

__all__ = [
    "ORIGINAL_OFFSET_KEYS",
    "dither_offset_yx",
    "finalize_star_keywords",
    "get_center_err_yx",
    "get_center_yx",
    "set_center_err_yx",
    "set_center_yx",
    "set_fits_keyword",
]

log = logging.getLogger(__name__)

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


def _extra_header(model, extension):
    """The list of extra header cards ([key, value, comment]) of ``extension`` (SCI, PRIMARY)."""
    extra = model.instance.setdefault("extra_fits", {})
    return extra.setdefault(extension, {}).setdefault("header", [])


def _get_keyword(model, key, extension="SCI"):
    for card in model.instance.get("extra_fits", {}).get(extension, {}).get("header", []):
        if card[0] == key:
            return card[1]
    return None


def _set_keyword(model, key, value, comment="", extension="SCI"):
    header = _extra_header(model, extension)
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        # FITS headers cannot hold NaN/inf (the save would fail): a value that could not be
        # measured is left out, and an earlier value of the keyword removed
        log.warning("%s: %s = %s not written to the %s header (not finite)", model_name(model),
                    key, value, extension)
        header[:] = [card for card in header if card[0] != key]
        return
    for card in header:
        if card[0] == key:
            card[1] = value
            return
    header.append([key, value, comment])


def set_fits_keyword(model, key, value, comment=""):
    """Write a keyword into the SCI header of the saved file (a FITS-visible summary)."""
    _set_keyword(model, key, value, comment)


def _pixel_scale_arcsec(model):
    """Pixel scale (arcsec) as pyKLIP computes it: sqrt(PIXAR_A2), else |CDELT1| in arcsec."""
    area = model.meta.photometry.pixelarea_arcsecsq
    if area is not None and np.isfinite(area) and area > 0:
        return float(np.sqrt(area))
    cdelt = model.meta.wcsinfo.cdelt1
    if cdelt is not None and np.isfinite(cdelt) and cdelt != 0:
        return abs(float(cdelt)) * 3600.0
    return None


def dither_offset_yx(model, *, original=False):
    """The commanded dither offset in pixels, 0-indexed ``(dy, dx)``.

    ``XOFFSET / pixel scale`` along x and ``YOFFSET / pixel scale`` along y, the convention of
    pyKLIP's ``JWSTData`` (pixel scale ``sqrt(PIXAR_A2)``).  ``original=True`` returns the
    commanded offsets even after `finalize_star_keywords` zeroed XOFFSET/YOFFSET (read back from
    XOFFORIG/YOFFORIG).  Missing offsets or pixel scale give ``(0, 0)``.
    """
    x, y = model.meta.dither.x_offset, model.meta.dither.y_offset
    if original:
        ox, oy = (_get_keyword(model, k, "PRIMARY") for k in ORIGINAL_OFFSET_KEYS)
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
            raise ValueError(f"{model_name(model)}: CRPIX1/CRPIX2 missing from the metadata")
        return (float(crpix2) - 1.0, float(crpix1) - 1.0)
    if which not in _CENTER_KEYS:
        raise ValueError(f"unknown centre {which!r}; use 'crpix', 'mask' or 'star'")
    key_x, key_y = _CENTER_KEYS[which]
    x, y = _get_keyword(model, key_x), _get_keyword(model, key_y)
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
    _set_keyword(model, key_x, x + 1.0, _CENTER_COMMENTS[which])
    _set_keyword(model, key_y, y + 1.0, _CENTER_COMMENTS[which])
    if err_yx is not None:
        set_center_err_yx(model, which, err_yx)


def get_center_err_yx(model, which):
    """The recorded 1-sigma uncertainty ``(y, x)`` in pixels of the mask or star, or None."""
    if which not in _ERR_KEYS:
        raise ValueError(f"unknown centre {which!r}; use 'mask' or 'star'")
    x, y = (_get_keyword(model, k) for k in _ERR_KEYS[which])
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
        raise ValueError(f"{model_name(model)}: invalid {which} uncertainty {err_yx!r}")
    key_x, key_y = _ERR_KEYS[which]
    _set_keyword(model, key_x, ex, _ERR_COMMENTS[which])
    _set_keyword(model, key_y, ey, _ERR_COMMENTS[which])


def finalize_star_keywords(model):
    """Make the header describe one star position for every reader; return True if changed.

    Writes the star position explicitly (STARCENX/Y, including the dither when it was never
    measured), keeps the commanded offsets in the primary keywords XOFFORIG/YOFFORIG (arcsec)
    and sets XOFFSET/YOFFSET to 0, so that pyKLIP's default reading (STARCENX + XOFFSET / pixel
    scale) and a plain STARCENX reading agree.  Idempotent.
    """
    x, y = model.meta.dither.x_offset, model.meta.dither.y_offset
    set_center_yx(model, "star", get_center_yx(model, "star"))
    if _get_keyword(model, ORIGINAL_OFFSET_KEYS[0], "PRIMARY") is None:
        _set_keyword(model, ORIGINAL_OFFSET_KEYS[0], float(x or 0.0),
                     "commanded XOFFSET (arcsec); included in STARCENX", "PRIMARY")
        _set_keyword(model, ORIGINAL_OFFSET_KEYS[1], float(y or 0.0),
                     "commanded YOFFSET (arcsec); included in STARCENY", "PRIMARY")
    elif not x and not y:
        return False
    if x is not None or y is not None:
        model.meta.dither.x_offset = 0.0
        model.meta.dither.y_offset = 0.0
    return True
