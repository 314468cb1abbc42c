"""Lookup data: the package's versioned tables and the SIAF, loaded lazily and cached."""

import contextlib
import functools
import io
import json
import logging
import warnings
from importlib import resources
from pathlib import Path

__all__ = ["load_table", "siaf_reference_xy"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def load_table(name_or_path):
    """Load a JSON lookup table from the package data (by name) or from a path.

    Parameters
    ----------
    name_or_path : str
        ``"nircam_mask_centers"`` / ``"nircam_filter_shifts"`` for the packaged tables, or a path
        to a user file with the same layout.

    Returns
    -------
    dict
        The parsed table (``name``, ``version``, ``provenance`` and the data).
    """
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text()
    elif path.suffix:
        raise FileNotFoundError(f"{name_or_path}: lookup table not found")
    else:
        text = resources.files("jwst_klipprep").joinpath("data", f"{name_or_path}.json").read_text()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name_or_path}: not a valid JSON table: {exc}") from None


@functools.lru_cache(maxsize=4)
def _siaf(instrument):
    import pysiaf

    # pysiaf checks its PRD version online at import; offline it only prints a notice.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return pysiaf.Siaf(instrument)


@functools.lru_cache(maxsize=1)
def _prd_root():
    """(PRD version, SIAF XML folder) of the installed pysiaf, found without importing it.

    Importing pysiaf and building a ``Siaf`` costs ~1 s of CPU (its imports and every aperture
    of the instrument); reading the reference point of one aperture from the same XML file
    costs ~0.1 s. The version is chosen as pysiaf chooses it (``pysiaf.constants``: the last of
    the sorted ``prd_data/JWST/*`` folders, the old ``PRDOPSSOC-<letter>-###`` names excluded).
    None when pysiaf or its data cannot be found this way (the caller then uses pysiaf).
    """
    import importlib.util
    import re

    spec = importlib.util.find_spec("pysiaf")
    if spec is None or not spec.submodule_search_locations:
        return None
    jwst = Path(next(iter(spec.submodule_search_locations))) / "prd_data" / "JWST"
    versions = sorted(p.name for p in jwst.glob("*"))
    versions = [v for v in versions if not re.match(r"^[A-Z]-\d+", v.split("PRDOPSSOC-")[1])]
    if not versions:
        return None
    root = jwst / versions[-1] / "SIAFXML" / "SIAFXML"
    return (versions[-1], root) if root.is_dir() else None


@functools.lru_cache(maxsize=4)
def _siaf_xml_reference(instrument):
    """``{AperName: (XSciRef, YSciRef)}`` from the installed pysiaf's SIAF XML, or None."""
    import xml.etree.ElementTree as ET

    found = _prd_root()
    if found is None:
        return None
    path = found[1] / f"{instrument}_SIAF.xml"
    try:
        root = ET.parse(path).getroot()
        out = {}
        for ap in root:
            x, y = ap.findtext("XSciRef"), ap.findtext("YSciRef")
            if x not in (None, "", "None") and y not in (None, "", "None"):
                out[ap.findtext("AperName")] = (float(x), float(y))
        return out
    except (OSError, ET.ParseError, ValueError):
        return None


def siaf_reference_xy(instrument, aperture):
    """SIAF ``(XSciRef, YSciRef)`` (1-indexed) of an aperture, or None if SIAF lacks it."""
    table = _siaf_xml_reference(instrument)
    if table is not None and aperture in table:
        return table[aperture]
    siaf = _siaf(instrument)
    if aperture not in siaf.apernames:
        return None
    ap = siaf[aperture]
    return (float(ap.XSciRef), float(ap.YSciRef))


def siaf_version():
    """The PRD version of the installed pysiaf."""
    found = _prd_root()
    if found is not None:
        return found[0]
    import pysiaf

    return str(getattr(pysiaf, "JWST_PRD_VERSION", "unknown"))
