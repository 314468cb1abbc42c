"""Summary table and figures of a ``klipprep`` run (no processing here).

`summary_table` and `write_diagnostic_plot` describe a pipeline run (the pipeline writes them with
``save_diagnostics``).  `write_defect_map` draws the detector defects that ``fix_bad_pixels``
found across an association: after ``FixBadPixelsStep`` has run with ``find`` including
``persistent``, its attribute ``defect_maps`` maps each group
(``instrument/detector/subarray/NYxNX``) to the 2-D defect map and its summary::

    step = FixBadPixelsStep()
    result = step.run(models)
    if step.defect_maps:
        write_defect_map(step.defect_maps, "klipprep_defects.png")
"""

import numpy as np
from astropy.table import Table

from jwst_klipprep.keywords import get_center_yx

__all__ = ["summary_table", "write_defect_map", "write_diagnostic_plot"]


def _rec(model, alias):
    return model.meta.instance.get("klipprep", {}).get(alias, {}) or {}


def _median(values, axis=None):
    if values is None or len(values) == 0:
        return np.nan
    return float(np.nanmedian(np.asarray(values, float), axis=axis)) if axis is None else \
        np.nanmedian(np.asarray(values, float), axis=axis)


def summary_table(models, *, roles, timings=None, cpu=None):
    """One row per exposure: levels, flagged pixels, centres and shifts (1-indexed centres).

    ``timings`` and ``cpu`` (seconds per part of the run, wall and CPU of this process) go to the
    table's metadata (``timings_s``, ``cpu_s``).
    """
    rows = []
    for model, role in zip(models, roles, strict=True):
        bkg = _rec(model, "subtract_background")
        med = _rec(model, "subtract_median")
        bp = _rec(model, "fix_bad_pixels")
        nan = _rec(model, "replace_nans")
        rc = _rec(model, "recenter_frames")
        al = _rec(model, "align_frames")
        mask_y, mask_x = get_center_yx(model, "mask")
        star_y, star_x = get_center_yx(model, "star")
        shift = np.asarray(al.get("shift_yx", [[np.nan, np.nan]]), float)
        shift_err = np.asarray(al.get("shift_err_yx", [[np.nan, np.nan]]), float)
        applied = np.asarray(al.get("applied_shift_yx", rc.get("applied_shift_yx",
                                                                 [[np.nan, np.nan]])), float)
        offset = rc.get("star_offset_yx", [np.nan, np.nan])
        rows.append(dict(
            filename=model.meta.filename, role=role,
            nints=int(np.shape(model.data)[0]) if np.ndim(model.data) == 3 else 1,
            bkg_level=_median(bkg.get("median_level_subtracted")),
            median_level=_median(med.get("level")),
            median_level_err=_median(med.get("level_error")),
            badpix_found=int(sum(v for k, v in bp.get("found", {}).items() if k != "nonfinite")),
            badpix_repaired=int(bp.get("n_repaired", 0)),
            badpix_unrepaired=int(bp.get("n_unrepaired", 0)),
            nan_replaced=int(nan.get("n_replaced", 0)),
            star_offset_y=float(offset[0]), star_offset_x=float(offset[1]),
            align_dy=float(np.nanmedian(shift[:, 0])), align_dx=float(np.nanmedian(shift[:, 1])),
            align_err_dy=float(np.nanmedian(shift_err[:, 0])),
            align_err_dx=float(np.nanmedian(shift_err[:, 1])),
            applied_dy=float(np.nanmean(applied[:, 0])),
            applied_dx=float(np.nanmean(applied[:, 1])),
            mask_x=mask_x + 1, mask_y=mask_y + 1, star_x=star_x + 1, star_y=star_y + 1,
            crpix1=model.meta.wcsinfo.crpix1, crpix2=model.meta.wcsinfo.crpix2,
            shape=f"{np.shape(model.data)[-2]}x{np.shape(model.data)[-1]}",
        ))
    table = Table(rows=rows)
    table.meta["comments"] = [
        "jwst_klipprep klipprep summary; centres 1-indexed (FITS); shifts in pixels (dy, dx);",
        "align_* = measured shift to the reference, applied_* = shift applied to the frames",
    ]
    if timings:
        table.meta["timings_s"] = {k: round(float(v), 3) for k, v in timings.items()}
    if cpu:
        table.meta["cpu_s"] = {k: round(float(v), 3) for k, v in cpu.items()}
    return table


def write_diagnostic_plot(models, before, path):
    """Frames before/after for the first science and reference exposure, shifts per exposure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 3)
    shown = models[:2]
    for row, model in enumerate(shown):
        after = np.asarray(model.data)
        after = after[0] if after.ndim == 3 else after
        raw = before.get(model.meta.filename)
        for col, (label, frame) in enumerate((("input", raw), ("prepared", after))):
            if frame is None:
                continue
            ax = fig.add_subplot(grid[row, col])
            finite = frame[np.isfinite(frame)]
            lo, hi = np.percentile(finite, [5, 99.7]) if finite.size else (0, 1)
            ax.imshow(np.arcsinh((frame - lo) / max(hi - lo, 1e-12) * 20), origin="lower",
                      cmap="magma")
            if label == "prepared":
                y, x = get_center_yx(model, "star")
                ax.plot(x, y, "c+", ms=12, mew=1.2)
            ax.set_title(f"{label}: {model.meta.filename}", fontsize=8)
    ax = fig.add_subplot(grid[:, 2])
    for model in models:
        al = _rec(model, "align_frames")
        if "applied_shift_yx" in al:
            shifts = np.asarray(al["applied_shift_yx"], float)
        else:
            continue
        ax.plot(shifts[:, 1], shifts[:, 0], "o", ms=4, label=model.meta.filename[:25])
    ax.set_xlabel("applied dx (px)")
    ax.set_ylabel("applied dy (px)")
    ax.set_title("shift applied to each integration", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)

#: Colour of each defect kind (the values of the kind map).
_COLOURS = {1: ("isolated", "#1f77b4"), 2: ("cluster", "#d62728"), 3: ("line", "#2ca02c")}


def write_defect_map(defect_maps, path, *, dpi=80):
    """Write a PNG with one panel per detector group: each defect pixel coloured by its kind.

    Parameters
    ----------
    defect_maps : dict
        Group label -> object with ``kind`` (2-D int array: 0 none, 1 isolated, 2 cluster,
        3 line) and ``summary`` (dict with ``n_exposures``, ``n_scenes``, ``evidence``,
        ``min_votes``), as in ``FixBadPixelsStep.defect_maps``.
    path : str or path-like
        Output PNG file.
    dpi : int, optional
        Resolution.

    Returns
    -------
    str
        ``path``.
    """
    if not defect_maps:
        raise ValueError("write_defect_map: no defect map (did fix_bad_pixels run with "
                         "find=persistent?)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = len(defect_maps)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 5.4), squeeze=False,
                             constrained_layout=True)
    cmap = ListedColormap(["white"] + [c for _, c in _COLOURS.values()])
    for ax, (label, defects) in zip(axes[0], defect_maps.items(), strict=True):
        kind = np.asarray(defects.kind)
        # grow each defect pixel for visibility on large frames (the display only)
        shown = kind.copy()
        if max(kind.shape) > 256:
            from scipy import ndimage

            shown = ndimage.maximum_filter(kind, size=3)
        ax.imshow(shown, origin="lower", cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        s = defects.summary
        counts = ", ".join(f"{name} {int((kind == k).sum())}"
                           for k, (name, _) in _COLOURS.items())
        ax.set_title(f"{label}\n{s.get('n_exposures')} exposure(s), {s.get('n_scenes')} "
                     f"scene(s), {s.get('evidence')} evidence, >= {s.get('min_votes')} vote(s)"
                     f"\n{counts} px", fontsize=8)
        ax.set_xlabel("x (px, 0-indexed)")
        ax.set_ylabel("y (px, 0-indexed)")
    axes[0][-1].legend(handles=[Patch(color=c, label=name) for name, c in _COLOURS.values()],
                       fontsize=7, loc="upper right")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)
