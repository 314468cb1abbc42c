"""Instrument tables of the coronagraph models: filters, occulters, pixel scales, name resolution.

Pure data and name handling (no optics): the top-hat filter bandpasses (``FILTERS``), the
analytic occulter descriptions (``CORONAGRAPHS``) with every accepted spelling of their names,
the default pixel scales, and the functions that validate and resolve FILTER / CORONMSK header
values. The optics that use them are in :mod:`jwst_klipprep.psf.builtin` (which re-exports
these names).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

import numpy as np

__all__ = [
    "CORONAGRAPHS",
    "DEFAULT_PIXEL_SCALES",
    "FILTERS",
    "CoronagraphSpec",
    "FilterSpec",
    "default_pixel_scale",
    "filter_wavelengths",
    "resolve_coronagraph",
    "resolve_filter",
]


class FilterSpec(NamedTuple):
    """Top-hat approximation of one filter bandpass."""

    instrument: str
    channel: str
    center_um: float
    width_um: float


# Central (pivot) wavelength and bandwidth in micron, public JDox values, rounded.
_FILTER_TABLE = {
    # NIRCam short-wavelength channel (used with MASK210R)
    "F182M": ("NIRCAM", "SHORT", 1.845, 0.238),
    "F187N": ("NIRCAM", "SHORT", 1.874, 0.024),
    "F200W": ("NIRCAM", "SHORT", 1.990, 0.461),
    "F210M": ("NIRCAM", "SHORT", 2.093, 0.205),
    "F212N": ("NIRCAM", "SHORT", 2.120, 0.027),
    # NIRCam long-wavelength channel (MASK335R, MASK430R)
    "F250M": ("NIRCAM", "LONG", 2.503, 0.181),
    "F277W": ("NIRCAM", "LONG", 2.786, 0.672),
    "F300M": ("NIRCAM", "LONG", 2.996, 0.318),
    "F335M": ("NIRCAM", "LONG", 3.365, 0.347),
    "F356W": ("NIRCAM", "LONG", 3.563, 0.787),
    "F360M": ("NIRCAM", "LONG", 3.621, 0.372),
    "F410M": ("NIRCAM", "LONG", 4.092, 0.436),
    "F430M": ("NIRCAM", "LONG", 4.280, 0.228),
    "F444W": ("NIRCAM", "LONG", 4.421, 1.024),
    "F460M": ("NIRCAM", "LONG", 4.624, 0.228),
    "F480M": ("NIRCAM", "LONG", 4.834, 0.303),
    # MIRI coronagraphic filters
    "F1065C": ("MIRI", "MIRIMAGE", 10.575, 0.750),
    "F1140C": ("MIRI", "MIRIMAGE", 11.300, 0.800),
    "F1550C": ("MIRI", "MIRIMAGE", 15.500, 0.900),
}

#: Filter name -> :class:`FilterSpec` (instrument, channel, centre and width in micron).
FILTERS = MappingProxyType({k: FilterSpec(*v) for k, v in _FILTER_TABLE.items()})

#: Default detector pixel scales in arcsec/pixel, keyed by (instrument, channel).
DEFAULT_PIXEL_SCALES = MappingProxyType(
    {("NIRCAM", "LONG"): 0.0629, ("NIRCAM", "SHORT"): 0.0311, ("MIRI", "MIRIMAGE"): 0.11}
)


class CoronagraphSpec(NamedTuple):
    """Analytic description of one occulter and its Lyot stop."""

    name: str  # canonical name (stpsf spelling)
    instrument: str
    kind: str  # "blc" (band-limited circular) or "fqpm" (four-quadrant phase mask)
    channel: str  # NIRCam channel, or "MIRIMAGE"
    sigma_per_arcsec: float  # BLC only (0.0 otherwise)
    design_wavelength_um: float  # 4QPM phase-step wavelength (0.0 otherwise)
    rotation_deg: float  # counter-clockwise rotation of the 4QPM transition lines on the detector
    lyot_erosion_m: float  # Lyot stop = pupil eroded by this distance


#: Canonical coronagraph name -> :class:`CoronagraphSpec`.
CORONAGRAPHS = MappingProxyType(
    {
        "MASK210R": CoronagraphSpec("MASK210R", "NIRCAM", "blc", "SHORT", 5.253, 0.0, 0.0, 0.34),
        "MASK335R": CoronagraphSpec("MASK335R", "NIRCAM", "blc", "LONG", 3.2927866, 0.0, 0.0, 0.34),
        "MASK430R": CoronagraphSpec("MASK430R", "NIRCAM", "blc", "LONG", 2.58832, 0.0, 0.0, 0.34),
        "FQPM1065": CoronagraphSpec("FQPM1065", "MIRI", "fqpm", "MIRIMAGE", 0.0, 10.65, -4.6, 0.13),
        "FQPM1140": CoronagraphSpec("FQPM1140", "MIRI", "fqpm", "MIRIMAGE", 0.0, 11.40, -4.6, 0.13),
        "FQPM1550": CoronagraphSpec("FQPM1550", "MIRI", "fqpm", "MIRIMAGE", 0.0, 15.50, -4.6, 0.13),
    }
)

# Spellings accepted for each canonical mask (CORONMSK header values, SUBARRAY/stpsf names).
_CORON_ALIASES = {}
for _size in ("210R", "335R", "430R"):
    for _alias in (f"MASK{_size}", f"MASKA{_size}", f"MASKB{_size}"):
        _CORON_ALIASES[_alias] = f"MASK{_size}"
for _wave in ("1065", "1140", "1550"):
    for _alias in (
        f"MASK{_wave}",
        f"4QPM_{_wave}",
        f"FQPM{_wave}",
        f"FQPM_{_wave}",
        f"4QPM{_wave}",
    ):
        _CORON_ALIASES[_alias] = f"FQPM{_wave}"

_INSTRUMENTS = ("NIRCAM", "MIRI")

# ------------------------------------------------------------------------------------------------
# Name resolution
# ------------------------------------------------------------------------------------------------


def _norm(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    return name.strip().upper()


def _check_instrument(instrument):
    inst = _norm(instrument, "instrument")
    if inst not in _INSTRUMENTS:
        raise ValueError(
            f"unknown instrument {instrument!r}; valid choices: {', '.join(_INSTRUMENTS)}"
        )
    return inst


def resolve_filter(instrument, filter):  # noqa: A002 (the FITS keyword name)
    """Validate a filter name for an instrument.

    Parameters
    ----------
    instrument : str
        ``"NIRCAM"`` or ``"MIRI"`` (case-insensitive).
    filter : str
        Filter name as in the FILTER header keyword, e.g. ``"F444W"``.

    Returns
    -------
    name : str
        Upper-case filter name.
    spec : FilterSpec
        Its top-hat bandpass.

    Raises
    ------
    ValueError
        If the instrument or filter is unknown, or the filter belongs to another instrument.
    """
    inst = _check_instrument(instrument)
    name = _norm(filter, "filter")
    valid = sorted(k for k, v in FILTERS.items() if v.instrument == inst)
    if name not in FILTERS or FILTERS[name].instrument != inst:
        raise ValueError(f"unknown {inst} filter {filter!r}; valid choices: {', '.join(valid)}")
    return name, FILTERS[name]


def resolve_coronagraph(instrument, coronagraph):
    """Map any accepted spelling of a coronagraph to its :class:`CoronagraphSpec`.

    Parameters
    ----------
    instrument : str
        ``"NIRCAM"`` or ``"MIRI"`` (case-insensitive).
    coronagraph : str
        CORONMSK header value or stpsf name: ``MASKA335R``, ``MASK335R``, ``MASKB430R``,
        ``4QPM_1140``, ``MASK1140``, ``FQPM1140``, ...

    Returns
    -------
    CoronagraphSpec
        The analytic description (``spec.name`` is the canonical stpsf-style name).

    Raises
    ------
    ValueError
        If the instrument or mask is unknown or belongs to another instrument. Bar masks
        (MASKLWB/MASKSWB) and the MIRI Lyot spot are not modelled.
    """
    inst = _check_instrument(instrument)
    name = _norm(coronagraph, "coronagraph")
    canonical = _CORON_ALIASES.get(name)
    valid = sorted(k for k, v in _CORON_ALIASES.items() if CORONAGRAPHS[v].instrument == inst)
    if canonical is None or CORONAGRAPHS[canonical].instrument != inst:
        raise ValueError(
            f"unknown or unsupported {inst} coronagraph {coronagraph!r}; valid choices: "
            f"{', '.join(valid)}"
        )
    return CORONAGRAPHS[canonical]


def default_pixel_scale(instrument, *, filter=None, coronagraph=None):  # noqa: A002
    """Default detector pixel scale in arcsec for an instrument (and NIRCam channel).

    Parameters
    ----------
    instrument : str
        ``"NIRCAM"`` or ``"MIRI"``.
    filter, coronagraph : str, optional
        Used to pick the NIRCam channel (short-wavelength filters and MASK210R use the SW scale);
        the filter wins when both are given.

    Returns
    -------
    float
        0.0629 (NIRCam LW), 0.0311 (NIRCam SW) or 0.11 (MIRI) arcsec per pixel.
    """
    inst = _check_instrument(instrument)
    if filter is not None:
        channel = resolve_filter(inst, filter)[1].channel
    elif coronagraph is not None:
        channel = resolve_coronagraph(inst, coronagraph).channel
    else:
        channel = "LONG" if inst == "NIRCAM" else "MIRIMAGE"
    return DEFAULT_PIXEL_SCALES[(inst, channel)]


def filter_wavelengths(filter, nlambda):  # noqa: A002
    """Wavelengths (metres) and weights sampling a top-hat filter.

    Parameters
    ----------
    filter : str
        A key of ``FILTERS``.
    nlambda : int
        Number of wavelengths, >= 1; they sit at the centres of ``nlambda`` equal sub-bands.

    Returns
    -------
    wavelengths_m : ndarray, shape (nlambda,)
        Wavelengths in metres.
    weights : ndarray, shape (nlambda,)
        Equal weights summing to 1 (flat photon spectrum).
    """
    spec = FILTERS[_norm(filter, "filter")]
    n = int(nlambda)
    if n < 1:
        raise ValueError(f"nlambda must be >= 1, got {nlambda!r}")
    frac = (np.arange(n) + 0.5) / n - 0.5
    wavelengths = (spec.center_um + spec.width_um * frac) * 1e-6
    return wavelengths, np.full(n, 1.0 / n)
