"""Simulator scene: SIAF look-ups, the observation plan (rolls, references, dithers), geometry."""

from __future__ import annotations

import functools
import logging
import math

from jwst_klipprep.psf.models import (
    quiet_pysiaf,
)

from ._setups import (
    _BOX5,
    _GRID9,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# SIAF look-ups (pysiaf is optional at run time; its offline PRD warning is suppressed here)
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _true_mask_center_yx(instrument, aperture, filter_name, crpix_xy):
    """Where the occulter really is (0-indexed y, x).

    The jwst pipeline writes the SIAF reference pixel into CRPIX; for NIRCam the true mask centre
    differs from it by the measured commissioning correction (mask-centre table + filter shift,
    the tables shipped for ``update_nircam_centers``), so that step brings CRPIX onto the truth.
    """
    x, y = crpix_xy
    if instrument == "NIRCAM":
        from jwst_klipprep.algorithms.nircam_mask_centers import mask_center_correction
        from jwst_klipprep.reference_data import load_table

        corr = mask_center_correction(
            aperture, filter_name, centers=load_table("nircam_mask_centers")["centers_xy"],
            shifts=load_table("nircam_filter_shifts")["shifts_xy"], siaf_ref_xy=crpix_xy,
        )
        x, y = x + corr.delta_xy[0], y + corr.delta_xy[1]
    return (y - 1.0, x - 1.0)


def _siaf_values(instrument, aperture, fallback):
    """(XSciRef, YSciRef, V3IdlYAngle, V2Ref, V3Ref) of an aperture, or ``fallback``."""
    try:
        with quiet_pysiaf():
            import pysiaf

            ap = pysiaf.Siaf(instrument)[aperture]
            values = (ap.XSciRef, ap.YSciRef, ap.V3IdlYAngle, ap.V2Ref, ap.V3Ref)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError("non-finite SIAF value")
        return tuple(float(v) for v in values)
    except Exception as exc:  # noqa: BLE001 - any pysiaf problem falls back to the table
        log.info("pysiaf lookup of %s failed (%s); using built-in SIAF values", aperture, exc)
        return fallback


# ------------------------------------------------------------------------------------------------
# Observation plan
# ------------------------------------------------------------------------------------------------


def _dither_pattern(instrument, n_reference):
    if n_reference == 1:
        return "NONE", None, ((0.0, 0.0),)
    step = 0.015 if instrument == "NIRCAM" else 0.010
    if n_reference == 5:
        return "5-POINT-SMALL-GRID", "5-POINT-BOX", tuple((step * x, step * y) for x, y in _BOX5)
    if n_reference == 9:
        name = "9-POINT-CIRCLE" if instrument == "NIRCAM" else "9-POINT-SMALL-GRID"
        return "9-POINT-SMALL-GRID", name, tuple((step * x, step * y) for x, y in _GRID9)
    raise ValueError(f"n_reference must be 1, 5 or 9, got {n_reference!r}")


def _random_ta_error_arcsec(rng):
    r = rng.uniform(0.003, 0.025)
    phi = rng.uniform(0, 2 * math.pi)
    return (r * math.sin(phi), r * math.cos(phi))  # (y, x)


_EXPOSURE_DEFAULTS = dict(
    expnum=1, is_psf=False, bkgdtarg=False, offset_xy=(0.0, 0.0), patttype="NONE",
    smgrdpat=None, patt_num=1, numdthpt=1, ta_yx=None,
)  # fmt: skip


def _plan(instrument, setup, rng, *, n_science_rolls, roll_ref_deg, roll_step_deg, n_reference,
          with_background, program):  # fmt: skip
    """Exposure descriptions (dicts) in observing order, with file names."""
    vg_sci = "03106" if instrument == "NIRCAM" else "04101"
    plan = []
    for roll in range(n_science_rolls):
        plan.append(dict(
            _EXPOSURE_DEFAULTS, kind="SCI", exptype="science", obs=len(plan) + 1, vg=vg_sci,
            targprop="SYNTH-STAR", targname="Synthetic star",
            roll_ref=roll_ref_deg + roll * roll_step_deg, obslabel=f"SYNTH-STAR roll {roll + 1}",
            ta_yx=_random_ta_error_arcsec(rng),
        ))  # fmt: skip
    patttype, smgrdpat, offsets = _dither_pattern(instrument, n_reference)
    ref_obs = n_science_rolls + 1
    ta_ref = _random_ta_error_arcsec(rng)  # one target acquisition for the whole dither
    ref_roll = (roll_ref_deg + 205.0) % 360.0
    for i, off in enumerate(offsets):
        plan.append(dict(
            _EXPOSURE_DEFAULTS, kind="REF", exptype="psf", obs=ref_obs, vg=vg_sci, expnum=i + 1,
            targprop="SYNTH-REF", targname="Synthetic reference star", is_psf=True,
            roll_ref=ref_roll, offset_xy=off, patttype=patttype, smgrdpat=smgrdpat,
            patt_num=i + 1, numdthpt=len(offsets), obslabel="SYNTH-REF small-grid dither",
            ta_yx=ta_ref,
        ))  # fmt: skip
    if with_background:
        for i, (kind, base, roll) in enumerate(
            (("SCI_BG", "SYNTH-STAR", roll_ref_deg), ("REF_BG", "SYNTH-REF", ref_roll))
        ):
            plan.append(dict(
                _EXPOSURE_DEFAULTS, kind=kind, exptype="background", obs=ref_obs + 1 + i,
                vg="02101", targprop=f"{base}-BACKGROUND", targname=f"{base} background",
                bkgdtarg=True, roll_ref=roll + 0.2, offset_xy=(6.0, 6.2),
                patttype="BACKGROUND", obslabel=f"{base} background",
            ))  # fmt: skip
    det = setup["detector"].lower()
    for e in plan:
        e["filename"] = (
            f"jw{program}{e['obs']:03d}001_{e['vg']}_{e['expnum']:05d}_{det}_calints.fits"
        )
    return plan


def _add_geometry(plan, *, mask_yx, pixel_scale, v3yangle, companion, rng):
    """Star and companion positions of every exposure (in place)."""
    sep, pa, contrast = companion
    for e in plan:
        e["pa_aper"] = (e["roll_ref"] + v3yangle) % 360.0
        e["star_offset_yx_arcsec"] = e["star_offset_yx_px"] = e["star_center_yx"] = None
        e["companion_yx"] = e["companion_offset_yx_arcsec"] = None
        if e["ta_yx"] is None:  # background: no star
            continue
        jitter = rng.normal(0.0, 0.0015, 2)  # per-exposure pointing jitter, arcsec
        off_y = e["ta_yx"][0] + e["offset_xy"][1] + jitter[0]
        off_x = e["ta_yx"][1] + e["offset_xy"][0] + jitter[1]
        e["star_offset_yx_arcsec"] = (off_y, off_x)
        e["star_offset_yx_px"] = (off_y / pixel_scale, off_x / pixel_scale)
        e["star_center_yx"] = (mask_yx[0] + off_y / pixel_scale, mask_yx[1] + off_x / pixel_scale)
        if e["kind"] == "SCI" and contrast > 0:
            # sky-fixed source: detector angle (counter-clockwise from +y) = PA - PA_APER
            ang = math.radians(pa - e["pa_aper"])
            cy, cx = off_y + sep * math.cos(ang), off_x - sep * math.sin(ang)
            e["companion_offset_yx_arcsec"] = (cy, cx)
            e["companion_yx"] = (mask_yx[0] + cy / pixel_scale, mask_yx[1] + cx / pixel_scale)
