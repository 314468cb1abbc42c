"""Figure of the detector defects that ``fix_bad_pixels`` found across an association.

After ``FixBadPixelsStep`` has run with ``find`` including ``persistent``, its attribute
``defect_maps`` maps each group (``instrument/detector/subarray/NYxNX``) to the 2-D defect map and
its summary; `write_defect_map` draws one panel per group::

    step = FixBadPixelsStep()
    result = step.run(models)
    if step.defect_maps:
        write_defect_map(step.defect_maps, "klipprep_defects.png")
"""

import numpy as np

__all__ = ["write_defect_map"]

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
