"""Realistic synthetic JWST coronagraphy datasets (stage-2 ``calints`` + level-3 ASN + truth).

:func:`simulate_dataset` writes, for NIRCam (MASKA335R / MASKRND / SUB320A335R, F444W by
default) or MIRI (4QPM, MASK1140 / F1140C by default):

* two science exposures of a star with a faint companion, at two telescope rolls;
* one reference star (brighter by a known factor, no companion) observed with a small-grid
  dither (1, 5 or 9 positions, one exposure each, XOFFSET/YOFFSET of 10-15 mas);
* optionally one science background (SCI_BG) and one reference background (REF_BG) exposure
  (sky only, TARGPROP ``<target>-BACKGROUND``, BKGDTARG = T, IS_PSF = F, as in real MIRI files);
* ``asn.json`` (level-3 ``coron3`` association: science / psf / background members) and
  ``truth.json`` with every injected quantity.

Each file is an stdatamodels ``CubeModel`` of ``nints`` integrations in MJy/sr with SCI, ERR,
DQ, VAR_POISSON, VAR_RNOISE, VAR_FLAT, INT_TIMES (and AREA for NIRCam), validated against the
schema with validation warnings turned into errors. The images contain, per integration:
the occulted star (and companion) from the chosen PSF backend, a fixed flat-field error pattern,
a sky pedestal that varies between integrations and exposures (MIRI: ~14-18 MJy/sr with a
"glowstick" along the vertical 4QPM transition), photon and read noise consistent with the
variance arrays (ERR**2 = VAR_POISSON + VAR_RNOISE + VAR_FLAT), detector defects that are flagged
DO_NOT_USE with NaN data (hot and dead pixels, 2x2 and 3x3 clusters, a bad column, edge pixels),
informational flags on valid data (WARM, JUMP_DET) and unflagged cosmic-ray-like outliers.

Geometry and sky orientation (also in ``truth["conventions"]``)
--------------------------------------------------------------
Arrays are (y, x), 0-indexed. CRPIX1/2 = mask centre + 1 (x, y). The star sits at the mask
centre plus a target-acquisition error (3-25 mas, one per visit) plus the dither offset
(+XOFFSET / pixel_scale along x, +YOFFSET / pixel_scale along y, as pyKLIP reads them) plus a
1.5 mas pointing jitter per exposure. The detector +y axis points to position angle
PA_APER = ROLL_REF + V3I_YANG (east of north, VPARITY = -1) and east is to the left when north is
up (the sign pattern of real NIRCam CD matrices). A sky-fixed companion at (separation, PA) is at
``dx = -sep * sin(PA - PA_APER)``, ``dy = +sep * cos(PA - PA_APER)`` from the star, so raising
ROLL_REF by d rotates it by -d (clockwise) on the detector; rotating a frame counter-clockwise by
PA_APER puts north up and east left (pyKLIP uses PA = ROLL_REF - V3I_YANG * VPARITY).

PSF backends
------------
``"builtin"`` (default, fast, data-free: :mod:`jwst_klipprep.psf.builtin`), ``"stpsf"`` (needs
stpsf and a valid ``$STPSF_PATH`` whose ``version.txt`` is >= 2.1.0; checked before stpsf is
imported; computed with ``pupilopd=None``, ``include_si_wfe=False``, ``add_distortion=False`` on
a stamp of at most 256 pixels, placed by a Fourier shift and normalised by the unocculted PSF of
the same stamp), or ``"auto"`` (stpsf when valid, else builtin).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.time import Time, TimeDelta
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags
from stdatamodels.validate import ValidationWarning

from jwst_klipprep.psf import builtin
from jwst_klipprep.psf.models import (
    StpsfOptions,
    psf_frame,
    quiet_pysiaf,
    resolve_backend,
    si_wfe_available,
    stpsf_data_path,
)
from jwst_klipprep.psf.opd import read_opd

__all__ = ["SimulatedDataset", "simulate_dataset", "stpsf_data_path", "SETUPS"]

log = logging.getLogger(__name__)

_DNU = dqflags.pixel["DO_NOT_USE"]
_HOT = dqflags.pixel["HOT"]
_DEAD = dqflags.pixel["DEAD"]
_WARM = dqflags.pixel["WARM"]
_JUMP = dqflags.pixel["JUMP_DET"]
_NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
_REFPIX = dqflags.pixel["REFERENCE_PIXEL"]
_OTHER_BAD = dqflags.pixel["OTHER_BAD_PIXEL"]

_ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
_TARGET_RADEC = (150.0, -45.0)  # sky position of every (fictitious) star, degrees

# Detector, readout and noise model shared by all masks of an instrument. Noise units: MJy/sr;
# gain = electrons per MJy/sr per integration (VAR_POISSON = signal / gain).
_NIRCAM_COMMON = dict(
    filter="F444W", pupil="MASKRND", shape=(320, 320), detector="NRCALONG", channel="LONG",
    module="A", exp_type="NRC_CORON", readpatt="MEDIUM8", ngroups=10, nframes=8, groupgap=2,
    tframe=1.06904, fastaxis=-1, slowaxis=2, template="NIRCam Coronagraphic Imaging",
    gain=200.0, read_noise=0.035, pedestal_range=(0.1, 0.3), pedestal_jitter=0.01,
    flat_error=0.0005, glowstick=0.0,
)  # fmt: skip
_MIRI_COMMON = dict(
    pupil=None, shape=(224, 288), detector="MIRIMAGE", channel=None, module=None,
    exp_type="MIR_4QPM", readpatt="FASTR1", ngroups=100, nframes=1, groupgap=0, tframe=0.23968,
    fastaxis=1, slowaxis=2, template="MIRI Coronagraphic Imaging", gain=160.0,
    read_noise=0.016, pedestal_range=(14.0, 18.0), pedestal_jitter=0.03, flat_error=0.0005,
    glowstick=0.10,
)  # fmt: skip


def _setup(common, coronmsk, subarray, aperture, substrt, crpix, v3yangle, v2v3, **extra):
    return {**common, **extra, "coronmsk": coronmsk, "subarray": subarray, "aperture": aperture,
            "substrt": substrt, "crpix_fallback": crpix, "v3yangle_fallback": v3yangle,
            "v2v3_fallback": v2v3}  # fmt: skip


#: Supported (instrument, canonical coronagraph) setups: header values, geometry, detector model.
#: ``crpix_fallback``, ``v3yangle_fallback`` and ``v2v3_fallback`` are the SIAF XSciRef/YSciRef
#: (1-indexed x, y), V3IdlYAngle and V2Ref/V3Ref (pysiaf 0.29) used when pysiaf is unavailable;
#: ``substrt`` = SUBSTRT1/2 as in real files.
SETUPS = {
    ("NIRCAM", "MASK335R"): _setup(
        _NIRCAM_COMMON, "MASKA335R", "SUB320A335R", "NRCA5_MASK335R", (492, 1502),
        (150.2, 174.6), 0.07757957, (107.370063, -405.069029),
    ),
    ("NIRCAM", "MASK430R"): _setup(
        _NIRCAM_COMMON, "MASKA430R", "SUB320A430R", "NRCA5_MASK430R", (814, 1502),
        (151.3, 175.2), 0.17713808, (87.328239, -405.045573),
    ),
    ("MIRI", "FQPM1065"): _setup(
        _MIRI_COMMON, "4QPM_1065", "MASK1065", "MIRIM_MASK1065", (1, 21),
        (121.18, 113.12), 4.83544897, (-393.831254, -420.626198), filter="F1065C",
    ),
    ("MIRI", "FQPM1140"): _setup(
        _MIRI_COMMON, "4QPM_1140", "MASK1140", "MIRIM_MASK1140", (1, 243),
        (120.75, 113.24), 4.83544897, (-391.75259, -396.280919), filter="F1140C",
    ),
    ("MIRI", "FQPM1550"): _setup(
        _MIRI_COMMON, "4QPM_1550", "MASK1550", "MIRIM_MASK1550", (1, 463),
        (120.75, 114.29), 4.83544897, (-389.7919, -371.846167), filter="F1550C",
    ),
}  # fmt: skip

# Small-grid dither patterns: (PATTTYPE, SMGRDPAT, offsets (x, y) in arcsec).
_BOX5 = ((0.0, 0.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0), (1.0, -1.0))
_GRID9 = (
    (0, 0),
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
)  # MIRI order

CONVENTIONS = (
    "Arrays are (y, x), 0-indexed, pixel centres on integer coordinates. FITS CRPIX1/2 hold the "
    "SIAF reference pixel, as the jwst pipeline writes them; mask_center_yx is where the occulter "
    "really is: for NIRCam the SIAF value plus the commissioning correction of "
    "update_nircam_centers (mask-centre table + filter shift), for MIRI CRPIX - 1. "
    "Offsets and shifts are star position minus mask centre, in pixels unless named *_arcsec. "
    "The star is at mask centre + TA error + (YOFFSET, XOFFSET) / "
    "pixel_scale + pointing jitter. Sky PA is east of north; the detector +y axis points to "
    "PA_APER = ROLL_REF + V3I_YANG (VPARITY = -1; east left when north is up), so a sky-fixed "
    "source at (sep, PA) lies at dx = -sep*sin(PA - PA_APER), dy = +sep*cos(PA - PA_APER) from "
    "the star: increasing ROLL_REF by d rotates it by -d (clockwise) on the detector, and "
    "rotating a frame counter-clockwise by PA_APER gives north up, east left. Images are in "
    "MJy/sr; a star's image is flux_scale * PSF, the PSF in contrast units (the unocculted PSF "
    "sums to 1). Cosmic-ray amplitudes are in units of that pixel's ERR."
)


@dataclass(frozen=True)
class SimulatedDataset:
    """What :func:`simulate_dataset` wrote.

    Attributes
    ----------
    outdir : pathlib.Path
        Output folder.
    asn_path : pathlib.Path
        Level-3 association (``asn.json``), member names relative to ``outdir``.
    truth_path : pathlib.Path
        ``truth.json``.
    paths : dict of str to str
        File name -> kind (``"SCI"``, ``"REF"``, ``"SCI_BG"``, ``"REF_BG"``), in writing order.
    truth : dict
        The content of ``truth.json``.
    """

    outdir: Path
    asn_path: Path
    truth_path: Path
    paths: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)


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
        from jwst_klipprep.algorithms.centers import mask_center_correction
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


# ------------------------------------------------------------------------------------------------
# Detector model
# ------------------------------------------------------------------------------------------------


def _free_pixels(rng, n, shape, forbidden, exclude_centers=(), exclude_radius=0.0):
    """``n`` distinct random (y, x) pixels not in ``forbidden`` and not near ``exclude_centers``."""
    ny, nx = shape
    out = []
    taken = set(forbidden)
    while len(out) < n:
        y = int(rng.integers(0, ny))
        x = int(rng.integers(0, nx))
        if (y, x) in taken:
            continue
        if any(math.hypot(y - cy, x - cx) < exclude_radius for cy, cx in exclude_centers):
            continue
        taken.add((y, x))
        out.append((y, x))
    return out


def _detector_defects(rng, shape, mask_center_yx, keep_clear, instrument):
    """Detector-fixed defects, the same in every exposure.

    Returns
    -------
    dict
        ``truth`` (lists for truth.json), ``flags`` (uint32 DQ map, shape ``shape``), ``bad``
        (bool map of DO_NOT_USE pixels) and ``taken`` (set of flagged (y, x) pixels).
    """
    ny, nx = shape
    cy, cx = mask_center_yx
    clear = [tuple(mask_center_yx)] + [tuple(p) for p in keep_clear]
    flags = np.zeros(shape, dtype=np.uint32)
    bad = np.zeros(shape, dtype=bool)
    taken = set()

    def claim(pixels, flag):
        for y, x in pixels:
            flags[y, x] |= flag
            bad[y, x] = True
            taken.add((y, x))

    # bad column away from the star and the companion
    while True:
        col = int(rng.integers(8, nx - 8))
        if abs(col - cx) > 30 and all(abs(col - p[1]) > 4 for p in clear[1:]):
            break
    claim([(y, col) for y in range(ny)], _DNU | _OTHER_BAD)
    # clusters: one 3x3 in the bright halo of the star (12-25 px), the others anywhere clear
    clusters = []
    for size, near in ((3, True), (2, False), (2, False), (3, False)):
        while True:
            if near:
                r = rng.uniform(12, 25)
                phi = rng.uniform(0, 2 * math.pi)
                y0 = int(round(cy + r * math.sin(phi))) - 1
                x0 = int(round(cx + r * math.cos(phi))) - 1
            else:
                y0 = int(rng.integers(2, ny - size - 2))
                x0 = int(rng.integers(2, nx - size - 2))
            block = [(y0 + i, x0 + j) for i in range(size) for j in range(size)]
            if any(p in taken for p in block):
                continue
            if any(
                math.hypot(y - py, x - px) < (6 if k == 0 else 4)
                for y, x in block
                for k, (py, px) in enumerate(clear)
            ):
                continue
            break
        claim(block, _DNU | (_HOT if size == 2 else _DEAD))
        clusters.append([y0, x0, size])
    hot = _free_pixels(rng, 20, shape, taken, clear, 4.0)
    claim(hot, _DNU | _HOT)
    dead = _free_pixels(rng, 10, shape, taken, clear, 4.0)
    claim(dead, _DNU | _DEAD)
    # frame-edge pixels: MIRI reference-pixel columns, NIRCam a short NON_SCIENCE run
    non_science = []
    refcols = []
    if instrument == "MIRI":
        refcols = [0, 1, 2, 3]
        for c in refcols:
            flags[:, c] |= _DNU | _REFPIX
            bad[:, c] = True
            taken.update((y, c) for y in range(ny))
    else:
        non_science = [(ny - 1, x) for x in range(nx - 12, nx)]
        claim(non_science, _DNU | _NON_SCIENCE)
    warm = _free_pixels(rng, 15, shape, taken, clear, 4.0)
    for y, x in warm:
        flags[y, x] |= _WARM
    truth = {
        "hot": [list(p) for p in hot],
        "dead": [list(p) for p in dead],
        "clusters": clusters,
        "bad_column": col,
        "non_science": [list(p) for p in non_science],
        "reference_pixel_columns": refcols,
        "warm": [list(p) for p in warm],
    }
    return {"truth": truth, "flags": flags, "bad": bad, "taken": taken}


def _glowstick(shape, mask_center_yx, rotation_deg, amplitude, width_px=2.0):
    """Multiplicative background pattern 1 + amplitude * ridge along the vertical 4QPM line."""
    if amplitude == 0:
        return np.ones(shape)
    ny, nx = shape
    y = (np.arange(ny) - mask_center_yx[0])[:, None]
    x = (np.arange(nx) - mask_center_yx[1])[None, :]
    rot = math.radians(rotation_deg)
    u = x * math.cos(rot) + y * math.sin(rot)  # distance from the (rotated) vertical line
    return 1.0 + amplitude * np.exp(-(u**2) / (2 * width_px**2))


def _flux_for_peak_snr(peak_psf, snr, gain, read_noise, pedestal):
    """Star flux scale giving ``snr`` at the occulted peak: S / sqrt(S/g + rn^2 + ped/g) = snr."""
    b = snr**2 / gain
    c = snr**2 * (read_noise**2 + pedestal / gain)
    s_peak = 0.5 * (b + math.sqrt(b * b + 4 * c))
    return s_peak / peak_psf


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _int_times(start_mjd, nints, tint_s, tgap_s):
    dtype = [
        ("integration_number", ">i4"),
        ("int_start_MJD_UTC", ">f8"),
        ("int_mid_MJD_UTC", ">f8"),
        ("int_end_MJD_UTC", ">f8"),
        ("int_start_BJD_TDB", ">f8"),
        ("int_mid_BJD_TDB", ">f8"),
        ("int_end_BJD_TDB", ">f8"),
    ]
    table = np.zeros(nints, dtype=dtype)
    day = 86400.0
    bjd_offset = 0.00418  # ~361 s barycentric correction, constant over the visit
    for i in range(nints):
        t0 = start_mjd + i * (tint_s + tgap_s) / day
        t1 = t0 + tint_s / day
        table[i] = (
            i + 1,
            t0,
            0.5 * (t0 + t1),
            t1,
            t0 + bjd_offset,
            0.5 * (t0 + t1) + bjd_offset,
            t1 + bjd_offset,
        )
    return table


def _set_meta(
    model,
    *,
    exp,
    setup,
    instrument,
    filter_name,
    program,
    start,
    nints,
    tint,
    tgap,
    crpix,
    v3yangle,
    v2v3,
    pixel_scale,
):
    """Fill the metadata of one exposure (keywords as in real stage-2 calints)."""
    meta = model.meta
    meta.filename = exp["filename"]
    meta.telescope = "JWST"
    meta.origin = "jwst_klipprep.simulate"
    meta.instrument.name = instrument
    meta.instrument.detector = setup["detector"]
    if setup["channel"]:
        meta.instrument.channel = setup["channel"]
    if setup["module"]:
        meta.instrument.module = setup["module"]
    meta.instrument.filter = filter_name
    if setup["pupil"]:
        meta.instrument.pupil = setup["pupil"]
    meta.instrument.coronagraph = setup["coronmsk"]

    end = start + TimeDelta(nints * (tint + tgap), format="sec")
    meta.observation.date = start.strftime("%Y-%m-%d")
    meta.observation.time = start.strftime("%H:%M:%S.%f")[:12]
    meta.observation.date_beg = start.isot
    meta.observation.date_end = end.isot
    meta.observation.program_number = program
    meta.observation.observation_number = f"{exp['obs']:03d}"
    meta.observation.visit_number = "001"
    meta.observation.visit_group = exp["vg"][:2]
    meta.observation.sequence_id = exp["vg"][2]
    meta.observation.activity_id = exp["vg"][3:]
    meta.observation.exposure_number = str(exp["expnum"])
    meta.observation.visit_id = f"{program}{exp['obs']:03d}001"
    meta.observation.obs_id = f"V{program}{exp['obs']:03d}001P00000000{exp['vg']}"
    meta.observation.template = setup["template"]
    meta.observation.observation_label = exp["obslabel"]
    meta.observation.bkgdtarg = exp["bkgdtarg"]
    meta.program.title = "jwst_klipprep synthetic coronagraphy"
    meta.program.pi_name = "Synthetic, Data"
    meta.program.category = "CAL"

    meta.target.proposer_name = exp["targprop"]
    meta.target.catalog_name = exp["targname"]
    meta.target.type = "FIXED"
    meta.target.ra, meta.target.dec = _TARGET_RADEC

    meta.exposure.type = setup["exp_type"]
    meta.exposure.nints = nints
    meta.exposure.ngroups = setup["ngroups"]
    meta.exposure.nframes = setup["nframes"]
    meta.exposure.groupgap = setup["groupgap"]
    meta.exposure.frame_divisor = setup["nframes"]
    meta.exposure.readpatt = setup["readpatt"]
    meta.exposure.frame_time = setup["tframe"]
    meta.exposure.group_time = setup["tframe"] * (setup["nframes"] + setup["groupgap"])
    meta.exposure.integration_time = tint
    meta.exposure.exposure_time = tint * nints
    meta.exposure.effective_exposure_time = tint * nints
    meta.exposure.duration = nints * (tint + tgap)
    meta.exposure.elapsed_exposure_time = nints * (tint + tgap)
    meta.exposure.start_time = start.mjd
    meta.exposure.end_time = end.mjd
    meta.exposure.mid_time = 0.5 * (start.mjd + end.mjd)
    meta.exposure.start_time_mjd = start.mjd
    meta.exposure.end_time_mjd = end.mjd
    meta.exposure.mid_time_mjd = 0.5 * (start.mjd + end.mjd)
    meta.exposure.psf_reference = exp["is_psf"]
    meta.exposure.prime_parallel = "PRIME"
    meta.exposure.count = exp["expnum"]

    ny, nx = setup["shape"]
    meta.subarray.name = setup["subarray"]
    meta.subarray.xstart, meta.subarray.ystart = setup["substrt"]
    meta.subarray.xsize, meta.subarray.ysize = nx, ny
    meta.subarray.fastaxis = setup["fastaxis"]
    meta.subarray.slowaxis = setup["slowaxis"]
    meta.aperture.name = setup["aperture"]
    meta.aperture.pps_name = setup["aperture"]

    meta.dither.primary_type = exp["patttype"]
    if exp["smgrdpat"]:
        meta.dither.small_grid_pattern = exp["smgrdpat"]
    meta.dither.position_number = exp["patt_num"]
    meta.dither.total_points = exp["numdthpt"]
    meta.dither.x_offset = float(exp["offset_xy"][0])
    meta.dither.y_offset = float(exp["offset_xy"][1])

    pa_aper = (exp["roll_ref"] + v3yangle) % 360.0
    rho = math.radians(pa_aper)
    cdelt = pixel_scale / 3600.0
    w = meta.wcsinfo
    w.crpix1, w.crpix2 = crpix
    w.ctype1, w.ctype2 = "RA---TAN", "DEC--TAN"
    w.cunit1, w.cunit2 = "deg", "deg"
    w.cdelt1 = w.cdelt2 = cdelt
    w.pc1_1, w.pc1_2 = -math.cos(rho), math.sin(rho)
    w.pc2_1, w.pc2_2 = math.sin(rho), math.cos(rho)
    # sky position of the reference pixel (mask centre): target minus the star's offset
    sdy, sdx = exp["star_offset_yx_px"] if exp["star_offset_yx_px"] is not None else (0.0, 0.0)
    xi = cdelt * (w.pc1_1 * -sdx + w.pc1_2 * -sdy)
    eta = cdelt * (w.pc2_1 * -sdx + w.pc2_2 * -sdy)
    ra0, dec0 = _TARGET_RADEC
    w.crval1 = ra0 + xi / math.cos(math.radians(dec0))
    w.crval2 = dec0 + eta
    w.ra_ref, w.dec_ref = w.crval1, w.crval2
    w.roll_ref = exp["roll_ref"]
    w.v3yangle = v3yangle
    w.vparity = -1
    w.v2_ref, w.v3_ref = v2v3
    meta.aperture.position_angle = pa_aper
    meta.pointing.pa_v3 = exp["roll_ref"]

    meta.photometry.pixelarea_arcsecsq = pixel_scale**2
    meta.photometry.pixelarea_steradians = (pixel_scale / _ARCSEC_PER_RAD) ** 2
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    for step in (
        "assign_wcs",
        "dq_init",
        "saturation",
        "linearity",
        "dark_sub",
        "jump",
        "ramp_fit",
        "gain_scale",
        "flat_field",
        "photom",
    ):
        setattr(meta.cal_step, step, "COMPLETE")
    meta.cal_step.bkg_subtract = "SKIPPED"
    model.int_times = _int_times(start.mjd, nints, tint, tgap)


def _write_asn(outdir, plan, *, program, instrument, filter_name, setup):
    product = f"jw{program}-c1000_t001_{instrument.lower()}_{filter_name.lower()}-" + (
        f"{setup['pupil'].lower()}-{setup['subarray'].lower()}"
        if instrument == "NIRCAM"
        else setup["subarray"].lower()
    )
    asn = {
        "asn_type": "coron3",
        "asn_rule": "candidate_Asn_Lv3Coron",
        "version_id": None,
        "code_version": "jwst_klipprep.simulate",
        "degraded_status": "No known degraded exposures in association.",
        "program": program,
        "constraints": "synthetic dataset written by jwst_klipprep.simulate",
        "asn_id": "c1000",
        "target": "t001",
        "asn_pool": f"jw{program}_synthetic_pool",
        "products": [
            {
                "name": product,
                "members": [{"expname": e["filename"], "exptype": e["exptype"]} for e in plan],
            }
        ],
    }
    path = Path(outdir) / "asn.json"
    path.write_text(json.dumps(asn, indent=2) + "\n")
    return path


def _exposure_arrays(exp, setup, detector, rng, *, nints, flux, contrast, clear, cosmic_rays):
    """SCI/ERR/DQ/VAR cubes of one exposure, and what was injected.

    The noiseless model per integration i is ``(flux * psf + flux * contrast * companion_psf
    + pedestal[i] * background) * flat``; the noise is Gaussian with the Poisson + read-noise
    variance of that model. Returns (arrays dict, record dict).
    """
    shape = detector["flags"].shape
    ny, nx = shape
    gain, read_noise, flat_error = setup["gain"], setup["read_noise"], setup["flat_error"]
    lo, hi = setup["pedestal_range"]
    pedestal = rng.uniform(lo, hi) + setup["pedestal_jitter"] * rng.standard_normal(nints)
    signal = np.zeros(shape)
    if exp["psf"] is not None and flux > 0:
        signal += flux * exp["psf"]
    if exp["companion_psf"] is not None:
        signal += flux * contrast * exp["companion_psf"]
    model = signal[None] + pedestal[:, None, None] * detector["background"][None]
    model *= detector["flat"][None]
    var_p = np.clip(model, 0.0, None) / gain
    var_r = np.full(model.shape, read_noise**2)
    var_f = (flat_error * model) ** 2
    data = model + np.sqrt(var_p + var_r) * rng.standard_normal(model.shape, dtype=np.float32)
    err = np.sqrt(var_p + var_r + var_f)

    # two hot pixels that appeared in this exposure only
    extra_hot = _free_pixels(rng, 2, shape, detector["taken"], clear, 6.0)
    dq2d = detector["flags"].copy()
    bad2d = detector["bad"].copy()
    for y, x in extra_hot:
        dq2d[y, x] |= _DNU | _HOT
        bad2d[y, x] = True
    dq = np.repeat(dq2d[None], nints, axis=0)
    # JUMP_DET flags on valid data (0.05 % of the pixels per integration), and unflagged
    # cosmic-ray-like outliers (one integration each, away from the star core and companion)
    forbidden = detector["taken"] | set(extra_hot)
    jumps, crs = [], []
    for i in range(nints):
        jump_pixels = _free_pixels(rng, max(1, int(5e-4 * ny * nx)), shape, forbidden)
        for y, x in jump_pixels:
            dq[i, y, x] |= _JUMP
            jumps.append([i, y, x])
        for y, x in _free_pixels(rng, cosmic_rays, shape, forbidden | set(jump_pixels), clear, 8.0):
            amp = round(float(10 ** rng.uniform(1.0, 3.0)), 3)
            data[i, y, x] += amp * err[i, y, x]
            crs.append([i, y, x, amp])
    nan = np.repeat(bad2d[None], nints, axis=0)
    for arr in (data, err, var_p, var_r, var_f):
        arr[nan] = np.nan
    arrays = {
        "data": data.astype(np.float32),
        "err": err.astype(np.float32),
        "dq": dq,
        "var_poisson": var_p.astype(np.float32),
        "var_rnoise": var_r.astype(np.float32),
        "var_flat": var_f.astype(np.float32),
    }
    record = {
        "pedestal": [float(p) for p in pedestal],
        "noise_sigma_sky": math.sqrt(float(np.mean(pedestal)) / gain + read_noise**2),
        "extra_hot": [list(p) for p in extra_hot],
        "nan_pixels": int(bad2d.sum()),
        "jumps": jumps,
        "cosmic_rays": crs,
        "defects": detector["truth"],
    }
    return arrays, record


def _build_model(arrays, **meta_kw):
    """A CubeModel validated once against its schema; any invalid value raises.

    Validation on each assignment costs ~3 ms per attribute, so the metadata are set without it
    and the whole model is validated strictly at the end.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=ValidationWarning)
        model = datamodels.CubeModel(**arrays, validate_on_assignment=False, strict_validation=True)
        if meta_kw["instrument"] == "NIRCAM":
            model.area = np.ones(arrays["data"].shape[1:], dtype=np.float32)
        _set_meta(model, **meta_kw)
        model.validate()
    return model


def _as_list(value):
    return None if value is None else [float(v) for v in value]


def _truth_exposure(exp, record, *, nints, tint, flux, contrast, setup):
    defects = dict(record["defects"])
    defects["hot"] = defects["hot"] + record["extra_hot"]
    defects["hot_exposure_only"] = record["extra_hot"]
    return {
        "filename": exp["filename"],
        "exptype": exp["exptype"],
        "kind": exp["kind"],
        "targprop": exp["targprop"],
        "is_psf": exp["is_psf"],
        "nints": nints,
        "integration_time_s": tint,
        "roll_ref": exp["roll_ref"],
        "pa_aper": exp["pa_aper"],
        "dither_position": exp["patt_num"],
        "xoffset_arcsec": exp["offset_xy"][0],
        "yoffset_arcsec": exp["offset_xy"][1],
        "ta_error_yx_arcsec": _as_list(exp["ta_yx"]),
        "star_offset_yx_arcsec": _as_list(exp["star_offset_yx_arcsec"]),
        "star_offset_yx_px": _as_list(exp["star_offset_yx_px"]),
        "star_center_yx": _as_list(exp["star_center_yx"]),
        "flux_scale": flux,
        "companion_yx": _as_list(exp["companion_yx"]),
        "companion_flux_scale": flux * contrast if exp["companion_yx"] is not None else 0.0,
        "pedestal": record["pedestal"],
        "noise_sigma_sky": record["noise_sigma_sky"],
        "dq_defects": defects,
        "nan_pixels_per_integration": record["nan_pixels"],
        "jump_det": record["jumps"],
        "cosmic_rays": record["cosmic_rays"],
    }


def _truth(*, seed, inst, setup, spec, pixel_scale, mask_yx, crpix, v3yangle, backend,
           psf_nlambda, psf_oversample, companion, flux_sci, reference_flux_ratio, peak_snr,
           defects, exposures, options=None):  # fmt: skip
    if backend == "builtin":
        fidelity = builtin.FIDELITY_NOTE
    else:
        opd = "None" if options.opd is None else repr(options.opd.record()["file"])
        fidelity = (f"stpsf with pupilopd={opd}, include_si_wfe={options.si_wfe}, "
                    f"pupil npix {options.pupil_npix}, add_distortion=False, no jitter")
    return {
        "generator": "jwst_klipprep.simulate.simulate_dataset",
        "seed": int(seed),
        "instrument": inst,
        "filter": setup["filter"],
        "coronagraph": setup["coronmsk"],
        "coronagraph_model": spec.name,
        "pupil": setup["pupil"],
        "subarray": setup["subarray"],
        "aperture": setup["aperture"],
        "detector": setup["detector"],
        "pixel_scale_arcsec": pixel_scale,
        "shape": list(setup["shape"]),
        "mask_center_yx": list(mask_yx),
        "crpix": list(crpix),
        "v3i_yang_deg": v3yangle,
        "vparity": -1,
        "target_radec_deg": list(_TARGET_RADEC),
        "conventions": CONVENTIONS,
        "psf_backend": backend,
        "psf": {
            "nlambda": int(psf_nlambda),
            "oversample": int(psf_oversample),
            "fidelity": fidelity,
            "opd": None if options is None or options.opd is None else options.opd.record(),
            "si_wfe": None if options is None else bool(options.si_wfe),
            "pupil_npix": None if options is None else int(options.pupil_npix),
        },  # fmt: skip
        "companion": {
            "separation_arcsec": companion[0],
            "pa_deg": companion[1],
            "contrast": companion[2],
        },
        "star": {
            "flux_scale_science": flux_sci,
            "reference_flux_ratio": float(reference_flux_ratio),
            "peak_snr_target": float(peak_snr),
        },
        "noise_model": {
            "units": "MJy/sr",
            "gain_e_per_unit_per_integration": setup["gain"],
            "read_noise": setup["read_noise"],
            "flat_error_rms": setup["flat_error"],
            "var_poisson": "max(model, 0) / gain (noiseless model)",
            "var_rnoise": "read_noise**2",
            "var_flat": "(flat_error_rms * model)**2; the flat error is a fixed realised pattern",
        },
        "background_model": {
            "description": "pedestal[i] * (1 + glowstick) * flat; no starlight in BG exposures",
            "glowstick_amplitude": setup["glowstick"],
            "glowstick_width_px": 2.0,
            "glowstick_rotation_deg": spec.rotation_deg,
        },
        "detector_defects": defects,
        "dq_flag_values": {
            "hot": int(_DNU | _HOT),
            "dead": int(_DNU | _DEAD),
            "cluster_2x2": int(_DNU | _HOT),
            "cluster_3x3": int(_DNU | _DEAD),
            "bad_column": int(_DNU | _OTHER_BAD),
            "non_science": int(_DNU | _NON_SCIENCE),
            "reference_pixel": int(_DNU | _REFPIX),
            "warm": int(_WARM),
            "jump_det": int(_JUMP),
        },
        "exposures": exposures,
    }


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------


def simulate_dataset(
    outdir,
    *,
    instrument="NIRCAM",
    coronagraph=None,
    nints=10,
    seed=0,
    psf_backend="builtin",
    with_background=True,
    companion_contrast=1e-4,
    companion_separation_arcsec=1.5,
    companion_pa_deg=60.0,
    n_science_rolls=2,
    roll_ref_deg=65.0,
    roll_step_deg=10.0,
    n_reference=5,
    reference_flux_ratio=2.0,
    peak_snr=300.0,
    cosmic_rays_per_integration=3,
    psf_nlambda=3,
    psf_oversample=2,
    program="09999",
    opd=None,
    opd_slice=None,
    si_wfe=True,
    pupil_npix=None,
):
    """Write a synthetic coronagraphic dataset (calints files, ASN, truth) to ``outdir``.

    Parameters
    ----------
    outdir : str or os.PathLike
        Output folder (created if needed; existing files of the same names are overwritten).
    instrument : {"NIRCAM", "MIRI"}
        Instrument (case-insensitive).
    coronagraph : str, optional
        Occulter in any accepted spelling. NIRCam: MASKA335R (default) or MASKA430R; MIRI:
        4QPM_1140 / MASK1140 (default), 4QPM_1550 / MASK1550 or 4QPM_1065 / MASK1065. The filter,
        subarray and aperture follow (F444W / SUB320A335R / NRCA5_MASK335R, F1140C / MASK1140 /
        MIRIM_MASK1140, ...).
    nints : int
        Integrations per exposure.
    seed : int
        Seed of every random choice; the same arguments and seed write identical data.
    psf_backend : {"builtin", "stpsf", "auto"}
        PSF model (see the module docstring).
    with_background : bool
        Also write one SCI_BG and one REF_BG exposure (sky only).
    companion_contrast : float
        Companion flux / star flux (both unocculted totals); 0 for no companion.
    companion_separation_arcsec, companion_pa_deg : float
        Companion separation and sky position angle (east of north).
    n_science_rolls : int
        Number of science exposures, at ROLL_REF = ``roll_ref_deg + k * roll_step_deg``.
    roll_ref_deg, roll_step_deg : float
        First science roll and the roll step, degrees.
    n_reference : {1, 5, 9}
        Reference-star dither positions (5: 5-POINT-BOX, 15 mas steps for NIRCam / 10 mas for
        MIRI; 9: 9-point small grid), one exposure each.
    reference_flux_ratio : float
        Reference star flux / science star flux.
    peak_snr : float
        Per-integration signal-to-noise ratio at the peak of the occulted science star.
    cosmic_rays_per_integration : int
        Unflagged outliers (10-1000 sigma, log-uniform, single pixels) per integration.
    psf_nlambda, psf_oversample : int
        PSF wavelength sampling and detector oversampling.
    program : str
        Five-digit program number used in file names and headers.
    opd : str or path-like, optional
        stpsf only: telescope wavefront (OPD) file in a form of `jwst_klipprep.psf.opd`
        (2-D FITS in metres on the pupil grid, a cube with ``opd_slice``, a MAST
        wavefront-sensing file): the data get a known wavefront. None: no telescope wavefront.
    opd_slice : int, optional
        Slice of an OPD cube.
    si_wfe : bool
        stpsf only: include the instrument wavefront (when the stpsf data have it).
    pupil_npix : int, optional
        stpsf pupil grid; default the OPD's grid, else 1024.

    Returns
    -------
    SimulatedDataset
        Paths written and the truth dictionary (also in ``truth.json``).

    Raises
    ------
    ValueError
        For an unsupported instrument / coronagraph / dither, an invalid argument, or
        ``psf_backend="stpsf"`` without valid stpsf data.
    """
    t_start = time.perf_counter()
    inst = str(instrument).strip().upper()
    if inst not in ("NIRCAM", "MIRI"):
        raise ValueError(f"instrument must be 'NIRCAM' or 'MIRI', got {instrument!r}")
    if coronagraph is None:
        coronagraph = "MASKA335R" if inst == "NIRCAM" else "4QPM_1140"
    spec = builtin.resolve_coronagraph(inst, coronagraph)
    if (inst, spec.name) not in SETUPS:
        valid = ", ".join(SETUPS[k]["coronmsk"] for k in SETUPS if k[0] == inst)
        raise ValueError(f"coronagraph {coronagraph!r} is not simulated; valid: {valid}")
    nints = int(nints)
    if nints < 1 or int(n_science_rolls) < 1:
        raise ValueError("nints and n_science_rolls must be >= 1")
    if not (companion_contrast >= 0 and reference_flux_ratio > 0 and peak_snr > 0):
        raise ValueError("companion_contrast must be >= 0, reference_flux_ratio and peak_snr > 0")
    _dither_pattern(inst, n_reference)  # validates n_reference before anything is written
    program = f"{int(program):05d}"
    setup = SETUPS[(inst, spec.name)]
    backend = resolve_backend(psf_backend)
    options = None
    if backend == "stpsf":
        opd_spec = None if opd is None else read_opd(opd, npix=pupil_npix, slice=opd_slice)
        options = StpsfOptions(
            opd=opd_spec, si_wfe=bool(si_wfe) and si_wfe_available(),
            pupil_npix=opd_spec.npix if opd_spec is not None else int(pupil_npix or 1024),
        )  # fmt: skip
    elif opd is not None:
        raise ValueError(f"opd={opd!r} needs psf_backend='stpsf' (the {backend} optics have no "
                         "wavefront input)")
    filter_name = setup["filter"]
    shape = setup["shape"]
    pixel_scale = builtin.default_pixel_scale(inst, filter=filter_name)
    fallback = (*setup["crpix_fallback"], setup["v3yangle_fallback"], *setup["v2v3_fallback"])
    xref, yref, v3yangle, v2ref, v3ref = _siaf_values(inst, setup["aperture"], fallback)
    mask_yx = _true_mask_center_yx(inst, setup["aperture"], filter_name, (xref, yref))
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    plan = _plan(
        inst, setup, rng, n_science_rolls=int(n_science_rolls), roll_ref_deg=float(roll_ref_deg),
        roll_step_deg=float(roll_step_deg), n_reference=int(n_reference),
        with_background=bool(with_background), program=program,
    )  # fmt: skip
    companion = (float(companion_separation_arcsec), float(companion_pa_deg),
                 float(companion_contrast))  # fmt: skip
    _add_geometry(plan, mask_yx=mask_yx, pixel_scale=pixel_scale, v3yangle=v3yangle,
                  companion=companion, rng=rng)  # fmt: skip
    keep_clear = [e["companion_yx"] for e in plan if e["companion_yx"] is not None]
    detector = _detector_defects(rng, shape, mask_yx, keep_clear, inst)
    detector["flat"] = 1.0 + setup["flat_error"] * rng.standard_normal(shape)
    detector["background"] = _glowstick(shape, mask_yx, spec.rotation_deg, setup["glowstick"])

    # every distinct PSF once: the star in each exposure, the companion in each science roll
    t_psf = time.perf_counter()
    psf_kw = dict(instrument=inst, filter_name=filter_name, canonical=spec.name, shape=shape,
                  center_yx=mask_yx, pixel_scale=pixel_scale, nlambda=int(psf_nlambda),
                  oversample=int(psf_oversample), options=options)  # fmt: skip
    for e in plan:
        e["psf"] = e["companion_psf"] = None
        if e["star_offset_yx_arcsec"] is not None:
            e["psf"] = psf_frame(backend, offset_yx_arcsec=e["star_offset_yx_arcsec"], **psf_kw)
        if e["companion_yx"] is not None:
            e["companion_psf"] = psf_frame(
                backend, offset_yx_arcsec=e["companion_offset_yx_arcsec"], **psf_kw
            )
    t_psf = time.perf_counter() - t_psf
    # star brightness: the requested S/N at the occulted peak of the first science exposure
    flux_sci = _flux_for_peak_snr(
        float(plan[0]["psf"].max()), float(peak_snr), setup["gain"], setup["read_noise"],
        float(np.mean(setup["pedestal_range"])),
    )  # fmt: skip
    fluxes = {"SCI": flux_sci, "REF": flux_sci * float(reference_flux_ratio)}

    tint = setup["tframe"] * (setup["nframes"] + setup["groupgap"]) * (setup["ngroups"] - 1)
    tgap = setup["tframe"] * (setup["nframes"] + setup["groupgap"])
    start = Time("2025-06-01T04:00:00.000", scale="utc")
    paths = {}
    truth_exposures = []
    for e in plan:
        flux = fluxes.get(e["kind"], 0.0)
        arrays, record = _exposure_arrays(
            e, setup, detector, rng, nints=nints, flux=flux, contrast=companion[2],
            clear=[mask_yx, *keep_clear], cosmic_rays=int(cosmic_rays_per_integration),
        )  # fmt: skip
        model = _build_model(
            arrays, exp=e, setup=setup, instrument=inst, filter_name=filter_name,
            program=program, start=start, nints=nints, tint=tint, tgap=tgap,
            crpix=(xref, yref), v3yangle=v3yangle, v2v3=(v2ref, v3ref), pixel_scale=pixel_scale,
        )  # fmt: skip
        model.save(outdir / e["filename"])
        model.close()
        start = start + TimeDelta(nints * (tint + tgap) + 600.0, format="sec")
        paths[e["filename"]] = e["kind"]
        truth_exposures.append(_truth_exposure(e, record, nints=nints, tint=tint, flux=flux,
                                               contrast=companion[2], setup=setup))  # fmt: skip

    asn_path = _write_asn(outdir, plan, program=program, instrument=inst,
                          filter_name=filter_name, setup=setup)  # fmt: skip
    truth = _truth(
        seed=seed, inst=inst, setup=setup, spec=spec, pixel_scale=pixel_scale, mask_yx=mask_yx,
        crpix=(xref, yref), v3yangle=v3yangle, backend=backend, psf_nlambda=psf_nlambda,
        psf_oversample=psf_oversample, companion=companion, flux_sci=flux_sci,
        reference_flux_ratio=reference_flux_ratio, peak_snr=peak_snr, defects=detector["truth"],
        exposures=truth_exposures, options=options,
    )  # fmt: skip
    truth_path = outdir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    log.info(
        "wrote %d %s exposures (%d integrations each, %s PSF) to %s in %.1f s (PSFs %.1f s)",
        len(plan), inst, nints, backend, outdir, time.perf_counter() - t_start, t_psf,
    )  # fmt: skip
    return SimulatedDataset(
        outdir=outdir, asn_path=asn_path, truth_path=truth_path, paths=paths, truth=truth
    )
