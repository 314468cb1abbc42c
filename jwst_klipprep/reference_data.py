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


def siaf_reference_xy(instrument, aperture):
    """SIAF ``(XSciRef, YSciRef)`` (1-indexed) of an aperture, or None if SIAF lacks it."""
    siaf = _siaf(instrument)
    if aperture not in siaf.apernames:
        return None
    ap = siaf[aperture]
    return (float(ap.XSciRef), float(ap.YSciRef))


def siaf_version():
    """The PRD version of the installed pysiaf."""
    import pysiaf

    return str(getattr(pysiaf, "JWST_PRD_VERSION", "unknown"))
