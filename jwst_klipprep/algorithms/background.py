"""Background estimation and subtraction for coronagraphic integration cubes (public API).

This module gathers the public names of three modules split along their seams:
`jwst_klipprep.algorithms.robust_stats` (sigma-clipped medians and their errors),
`jwst_klipprep.algorithms.background_exposures` (combining and subtracting dedicated
background exposures), `jwst_klipprep.algorithms.background_scale` (the per-integration scale
of such a background) and `jwst_klipprep.algorithms.background_level` (per-integration levels,
source masks).

Two families of operations on ``(nints, ny, nx)`` arrays, with no datamodels:

* **Dedicated background exposures** (mainly MIRI): `combine_background` makes a robust,
  NaN- and mask-aware median of the background integrations, optionally in time chunks
  (`chunk_slices`, `assign_background_chunks`); `subtract_combined_background` subtracts it
  and propagates its uncertainty; `fit_background_scale` fits a per-integration scale (and
  offset) of the background on background-dominated pixels chosen by
  `select_background_pixels`.
* **Per-integration scalar levels** (mainly NIRCam): `estimate_level` with the methods in
  `LEVEL_METHODS`.

Conventions shared by every function:

* ``data`` and ``err`` have shape ``(nints, ny, nx)`` and any unit (MJy/sr in calints);
  outputs keep that unit.  Inputs are never modified.
* ``bad`` (and ``mask``-like arguments) are boolean, **True = excluded pixel**; callers derive
  them from DQ (e.g. ``DO_NOT_USE``).  Non-finite values are always excluded as well.
  ``good`` (only in `fit_background_scale`) has the opposite polarity, True = use.
* Coordinates are 0-indexed ``(y, x)``.

Robust statistics are sigma-clipped medians in the `astropy.stats.sigma_clip` sense (centre =
median, scale = standard deviation, iterate until nothing changes or ``maxiters``), computed in
a vectorised way: the values of each row are sorted once, after which every clipping iteration
only moves two indices per row (the kept values are always a contiguous run of the sorted row).

The uncertainty of a median of ``n`` values with Gaussian scatter ``sigma`` is
``median_error_factor(n) * sigma / sqrt(n)``; the factor tends to ``sqrt(pi/2) = 1.2533``
for large ``n`` and is 1 for ``n <= 2`` (see `median_error_factor`).
"""
from jwst_klipprep.algorithms.background_exposures import (
    CombinedBackground,
    SubtractedBackground,
    assign_background_chunks,
    chunk_slices,
    combine_background,
    subtract_combined_background,
)
from jwst_klipprep.algorithms.background_level import (
    LEVEL_METHODS,
    LevelEstimate,
    estimate_level,
    select_background_pixels,
)
from jwst_klipprep.algorithms.background_scale import ScaleFit, fit_background_scale
from jwst_klipprep.algorithms.robust_stats import median_error_factor

__all__ = [
    "LEVEL_METHODS",
    "CombinedBackground",
    "LevelEstimate",
    "ScaleFit",
    "SubtractedBackground",
    "assign_background_chunks",
    "chunk_slices",
    "combine_background",
    "estimate_level",
    "fit_background_scale",
    "median_error_factor",
    "select_background_pixels",
    "subtract_combined_background",
]
