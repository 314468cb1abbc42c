"""Bad-pixel detection and repair on ``(nints, ny, nx)`` arrays: the public API and its driver.

The work is split by job:

* `badpix_detect`: detectors from DQ, non-finite values, a user mask, and across integrations
  (`find_dq`, `find_nonfinite`, `find_custom`, `find_temporal`);
* `badpix_spatial`: the neighbourhood detector `find_spatial`;
* `badpix_persistent`: detector defects found with the evidence of several exposures of one
  detector (`exposure_evidence`, `find_persistent`), with a PSF-shape test;
* `badpix_repair` and `badpix_interp`: the repairs (`repair_temporal`, `repair_local`,
  `repair_interp`);
* this module: the method tables and the one driver, `find_and_repair`, which the
  ``fix_bad_pixels`` step, the tests and the benchmark call.

Detectors return boolean masks of shape ``(nints, ny, nx)``, True = bad pixel, holding only the
pixels they newly found (pixels already in ``bad`` are not repeated), so that several can be
OR-ed.  Repairs take the data, a ``bad`` mask (True = pixel to repair) and optionally ERR, and
return a `Repair` with new arrays; chained, each is given the pixels still bad after the
previous one.  No function modifies its inputs.

NaN semantics: a pixel whose data (or, when given, ERR) is not finite, or that is True in
``bad``, never serves as a donor or in a statistic.  Detectors never flag a non-finite pixel
(that is `find_nonfinite`'s job) and repairs only touch pixels that are True in ``bad``; a
pixel no method could repair keeps its value (`find_and_repair` sets it to NaN).

DQ bit values are passed in by the caller as ints (see `find_dq`); nothing here knows the jwst
flag values.

The defaults (thresholds of 5 sigma, the structure tolerances of `find_spatial`, the
candidate fits of `repair_interp`) were chosen with ``benchmarks/bench_badpix.py`` on
coronagraphic NIRCam F444W-like data (lambda/D ~ 2.8 px); data sampled more coarsely (short
wavelengths) have sharper speckles and may need larger tolerances.
"""

import logging
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from jwst_klipprep.algorithms.badpix_common import check_cube, check_like
from jwst_klipprep.algorithms.badpix_detect import (
    find_custom,
    find_dq,
    find_nonfinite,
    find_temporal,
)
from jwst_klipprep.algorithms.badpix_interp import INTERP_MODELS, repair_interp
from jwst_klipprep.algorithms.badpix_persistent import (
    KIND_NAMES,
    Evidence,
    PersistentDefects,
    default_min_votes,
    exposure_evidence,
    find_persistent,
)
from jwst_klipprep.algorithms.badpix_repair import Repair, repair_local, repair_temporal
from jwst_klipprep.algorithms.badpix_spatial import find_spatial

__all__ = [
    "FIND_METHODS",
    "FIND_NAMES",
    "INTERP_MODELS",
    "KIND_NAMES",
    "MASK_METHODS",
    "REPAIR_METHODS",
    "BadPixelResult",
    "Evidence",
    "PersistentDefects",
    "Repair",
    "check_methods",
    "default_min_votes",
    "exposure_evidence",
    "find_and_repair",
    "find_custom",
    "find_dq",
    "find_nonfinite",
    "find_persistent",
    "find_spatial",
    "find_temporal",
    "repair",
    "repair_interp",
    "repair_local",
    "repair_temporal",
]

log = logging.getLogger(__name__)

FIND_METHODS = {"temporal": find_temporal, "spatial": find_spatial}
"""Detectors that work on the data alone, by name: ``f(data, *, err, bad, **options)``."""

MASK_METHODS = ("dq", "persistent", "custom")
"""Detectors whose mask the caller computes and passes to `find_and_repair` (``masks``):
``dq`` (`find_dq`), ``persistent`` (`badpix_persistent.find_persistent`, which needs every
exposure of the detector) and ``custom`` (`find_custom`)."""

FIND_NAMES = ("dq", "persistent", "temporal", "spatial", "custom")
"""Every detection method name, in the recommended order."""

REPAIR_METHODS = {"temporal": repair_temporal, "local": repair_local, "interp": repair_interp}
"""Repair methods by name; each has the signature ``f(data, bad, *, err=None, **options)``."""


def repair(data, bad, *, err=None, method="interp", **options):
    """Run the repair method called ``method`` (a key of `REPAIR_METHODS`).

    Raises
    ------
    ValueError
        If ``method`` is not a known name.
    """
    try:
        func = REPAIR_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown repair method {method!r}; choose from {sorted(REPAIR_METHODS)}"
        ) from None
    return func(data, bad, err=err, **options)


class BadPixelResult(NamedTuple):
    """Result of `find_and_repair`."""

    #: Repaired data (new array); pixels still bad are NaN.
    data: np.ndarray
    #: Repaired ERR (new array), or None.
    err: np.ndarray | None
    #: Pixels found by the detectors (not including the input ``bad``).
    found: np.ndarray
    #: Pixels given a value by a repair.
    repaired: np.ndarray
    #: Pixels still bad after every repair (NaN in ``data``).
    remaining: np.ndarray
    #: Pixels found by a method other than ``dq`` (candidates for an OUTLIER flag), and by
    #: ``dilate``.
    outliers: np.ndarray | None = None
    #: Number of pixels newly found by each method, in the order run (``dilate`` last).
    found_by: dict | None = None
    #: Number of pixels repaired by each repair method.
    repaired_by: dict | None = None
    #: Which method found each pixel: 0 = none (or in the input ``bad``), i = the i-th key of
    #: ``found_by`` (int8, shape of ``data``).
    found_map: np.ndarray | None = None


def check_methods(find, fix):
    """Return ``(find, fix)`` as lists of names, or raise ValueError naming every unknown one."""
    out = []
    for kind, names, table in (("detection", find, FIND_NAMES), ("repair", fix, REPAIR_METHODS)):
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(f"unknown {kind} method(s) {unknown}; choose from {sorted(table)}")
        out.append(names)
    return out[0], out[1]


def find_and_repair(
    data,
    *,
    err=None,
    bad=None,
    ignore=None,
    find=("temporal", "spatial"),
    fix=("temporal", "interp"),
    masks=None,
    dilate=0,
    find_options=None,
    fix_options=None,
):
    """Detect with ``find`` (OR-ed into ``bad``), then repair with ``fix`` in the given order.

    Each repair only touches pixels still bad after the previous ones; pixels that no method
    could repair are set to NaN (jwst's convention for DO_NOT_USE pixels).

    Parameters
    ----------
    data, err : ndarray, shape (nints, ny, nx)
        Not modified.
    bad : ndarray of bool, shape (nints, ny, nx), optional
        Already known bad pixels (e.g. from `find_nonfinite`).
    ignore : ndarray of bool, shape (nints, ny, nx), optional
        Pixels to leave alone (e.g. NON_SCIENCE): never found, repaired or used as donors; their
        value is returned unchanged.
    find, fix : sequence of str
        Names from `FIND_NAMES` and `REPAIR_METHODS`; all are checked before any work.
    masks : dict of ndarray, optional
        The mask of each name of `MASK_METHODS` used in ``find`` (2-D masks apply to every
        integration).
    dilate : int, optional
        Grow every found and known bad pixel by this many pixels (8-connected), within each
        integration, before the repair.
    find_options, fix_options : dict of dict, optional
        Keyword options per method name, e.g. ``{"spatial": {"sigma": 6}}``.  With
        ``persistent`` in ``find``, ``spatial`` defaults to ``stack=False`` (static defects are
        the persistent map's; the spatial detector then looks for transients).

    Returns
    -------
    BadPixelResult
    """
    find, fix = check_methods(find, fix)
    masks, find_options, fix_options = masks or {}, find_options or {}, fix_options or {}
    missing = [n for n in find if n in MASK_METHODS and masks.get(n) is None]
    if missing:
        raise ValueError(f"detection method(s) {missing} need their mask in ``masks``")
    if int(dilate) < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    data = check_cube("data", data)
    bad = np.zeros(data.shape, bool) if bad is None else check_like("bad", bad, data.shape, bool)
    ignore = None if ignore is None else check_like("ignore", ignore, data.shape, bool)
    if "persistent" in find and "spatial" in find:
        # the static defects are the persistent map's: the spatial detector's pass on the
        # median image (``stack``) would only repeat it, with less evidence
        find_options = {**find_options,
                        "spatial": {"stack": False, **find_options.get("spatial", {})}}
    skip = bad if ignore is None else bad | ignore
    # an ERR <= 0 is no measurement: unknown for detection, not infinitely precise
    det_err = None if err is None else np.where(np.asarray(err) > 0, err, np.nan)
    found = np.zeros(data.shape, bool)
    outliers = np.zeros(data.shape, bool)
    found_by = {}
    found_map = np.zeros(data.shape, np.int8)
    for name in find:
        if name in MASK_METHODS:
            new = np.broadcast_to(np.asarray(masks[name], bool), data.shape) & ~(skip | found)
        else:
            new = FIND_METHODS[name](data, err=det_err, bad=skip | found,
                                     **find_options.get(name, {}))
            if ignore is not None:
                new &= ~ignore
        if name != "dq":
            outliers |= new
        found_by[name] = int(new.sum())
        found_map[new] = len(found_by)
        log.debug("detection %s: %d pixel(s)", name, found_by[name])
        found |= new
    if dilate:
        grown = ndimage.binary_dilation(found | bad, np.ones((1, 3, 3), bool),
                                        iterations=int(dilate)) & ~(skip | found)
        outliers |= grown
        found |= grown
        found_by["dilate"] = int(grown.sum())
        found_map[grown] = len(found_by)
    remaining = bad | found
    repaired = np.zeros(data.shape, bool)
    repaired_by = {}
    work = data if ignore is None else np.where(ignore, np.nan, data).astype(data.dtype)
    for name in fix:
        if not remaining.any():
            break
        result = REPAIR_METHODS[name](work, remaining, err=err, **fix_options.get(name, {}))
        work, remaining = result.data, result.remaining
        err = result.err if result.err is not None else err
        repaired |= result.repaired
        repaired_by[name] = int(result.repaired.sum())
        log.debug("repair %s: %d pixel(s)", name, repaired_by[name])
    out = work.copy() if work is data else work  # the repairs return new arrays
    if ignore is not None:
        out[ignore] = data[ignore]
    out[remaining] = np.nan
    return BadPixelResult(out, err, found, repaired, remaining, outliers, found_by, repaired_by,
                          found_map)
