"""Simulator tables: instrument setups, DQ flags, dither patterns, conventions, result type."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from stdatamodels.jwst.datamodels import dqflags

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
