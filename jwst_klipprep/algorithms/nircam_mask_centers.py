"""Coronagraph mask-centre corrections (NIRCam commissioning tables)."""

from typing import NamedTuple

__all__ = ["CenterCorrection", "mask_center_correction"]


class CenterCorrection(NamedTuple):
    """Result of `mask_center_correction`; positions are 1-indexed (x, y) pixels."""

    #: Correction to add to CRPIX1/CRPIX2 (x, y), pixels.
    delta_xy: tuple
    #: Measured mask centre of the aperture (or the SIAF value when the table lacks it).
    table_center_xy: tuple
    #: Filter-dependent shift (0, 0 when the table lacks the filter).
    filter_shift_xy: tuple
    #: SIAF XSciRef/YSciRef of the aperture.
    siaf_ref_xy: tuple
    #: Human-readable warnings (unknown aperture or filter).
    warnings: tuple


def mask_center_correction(aperture, filter_name, *, centers, shifts, siaf_ref_xy):
    """Correction of the mask centre: ``table(aperture) + shift(filter) - SIAF(aperture)``.

    Parameters
    ----------
    aperture : str
        APERNAME, e.g. ``"NRCA5_MASK335R"``.
    filter_name : str
        FILTER, e.g. ``"F444W"``.
    centers : dict
        APERNAME -> measured mask centre ``(x, y)``, 1-indexed science pixels.
    shifts : dict
        FILTER -> image shift ``(dx, dy)`` in pixels.
    siaf_ref_xy : tuple of float or None
        SIAF ``(XSciRef, YSciRef)`` of the aperture, or None when SIAF does not know it.

    Returns
    -------
    CenterCorrection
        An unknown aperture uses the SIAF value (no centre correction) and an unknown filter a
        zero shift; each case adds a warning instead of raising.
    """
    notes = []
    if siaf_ref_xy is None:
        notes.append(f"aperture {aperture!r} unknown to SIAF: no mask-centre correction")
    if aperture in centers and siaf_ref_xy is not None:
        table_xy = tuple(float(v) for v in centers[aperture])
    else:
        if siaf_ref_xy is not None:
            notes.append(f"aperture {aperture!r} not in the mask-centre table: SIAF value used")
        table_xy = tuple(siaf_ref_xy) if siaf_ref_xy is not None else (0.0, 0.0)
    if filter_name in shifts:
        shift_xy = tuple(float(v) for v in shifts[filter_name])
    else:
        notes.append(f"filter {filter_name!r} not in the filter-shift table: zero shift used")
        shift_xy = (0.0, 0.0)
    base_xy = tuple(siaf_ref_xy) if siaf_ref_xy is not None else table_xy
    delta = tuple(t + s - b for t, s, b in zip(table_xy, shift_xy, base_xy, strict=True))
    return CenterCorrection(delta, table_xy, shift_xy, siaf_ref_xy, tuple(notes))
