"""``klipprep demo``: simulate a dataset, run the steps on its ASN, report against the truth."""

import json
import logging
import time
from pathlib import Path

import numpy as np

from jwst_klipprep._arrays import get_center_yx

__all__ = ["DEMO_CHAIN", "run_demo"]

log = logging.getLogger(__name__)

#: The steps the demo runs, in pipeline order, with the parameters it uses.
DEMO_CHAIN = (
    ("jwst_klipprep.steps.replace_nans_step", "ReplaceNansStep", {}),
    ("jwst_klipprep.steps.pad_frames_step", "PadFramesStep", {"npix": [20]}),
)


def _defect_pixels(exposure, shape):
    """Set of (y, x) pixels the simulator flagged DO_NOT_USE with NaN data."""
    defects = exposure.get("dq_defects", {}) or {}
    pixels = {tuple(p) for key in ("hot", "dead") for p in defects.get(key, [])}
    for y0, x0, size in defects.get("clusters", []):
        pixels |= {(y0 + i, x0 + j) for i in range(size) for j in range(size)}
    column = defects.get("bad_column")
    if column is not None:
        pixels |= {(y, column) for y in range(shape[0])}
    return pixels


def _report_replace_nans(models, truth):
    lines = []
    for model in models:
        exposure = truth["by_name"].get(model.meta.filename)
        got = model.meta.instance.get("klipprep", {}).get("replace_nans", {})
        if exposure is None or not got:
            continue
        ny, nx = truth["shape"]
        expected = len(_defect_pixels(exposure, (ny, nx))) * len(got["n_replaced_per_integration"])
        lines.append(
            f"  {model.meta.filename}: replaced {got['n_replaced']} NaN pixels "
            f"(injected DO_NOT_USE defects: {expected})"
        )
    return lines


def _report_pad_frames(models, truth):
    lines = []
    for model in models:
        got = model.meta.instance.get("klipprep", {}).get("pad_frames", {})
        if not got:
            continue
        left, _, bottom, _ = got["npix_left_right_bottom_top"]
        true_yx = np.add(truth["mask_center_yx"], (bottom, left))
        err = np.subtract(get_center_yx(model, "mask"), true_yx)
        lines.append(
            f"  {model.meta.filename}: shape {got['old_shape']} -> {got['new_shape']}, "
            f"mask centre error after padding (dy, dx) = ({err[0]:+.3f}, {err[1]:+.3f}) px"
        )
    return lines


_REPORTS = {"replace_nans": _report_replace_nans, "pad_frames": _report_pad_frames}


def _plot(before, after, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), constrained_layout=True)
    for ax, (label, model) in zip(axes, (("input", before), ("prepared", after)), strict=True):
        frame = np.asarray(model.data)
        frame = frame[0] if frame.ndim == 3 else frame
        finite = frame[np.isfinite(frame)]
        vmin, vmax = np.percentile(finite, [1, 99.8]) if finite.size else (0, 1)
        ax.imshow(frame, origin="lower", vmin=vmin, vmax=vmax, cmap="magma")
        y, x = get_center_yx(model, "mask")
        ax.plot(x, y, "c+", ms=14, mew=1.5, label="mask centre")
        ax.set_title(f"{label}: {model.meta.filename}\nshape {frame.shape}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_demo(outdir="klipprep_demo", *, instrument="NIRCAM", nints=10, seed=0):
    """Simulate the default dataset into ``outdir``, run the steps, print a report.

    Returns 0 on success (the CLI exit status).
    """
    import importlib

    from jwst.datamodels import ModelContainer

    from jwst_klipprep.simulate import simulate_dataset

    outdir = Path(outdir)
    t0 = time.perf_counter()
    sim = simulate_dataset(outdir / "input", instrument=instrument, nints=nints, seed=seed)
    t_sim = time.perf_counter() - t0
    truth = dict(sim.truth)
    truth["by_name"] = {e["filename"]: e for e in truth["exposures"]}
    print(f"klipprep demo: simulated {len(truth['exposures'])} {instrument} exposures "
          f"({nints} integrations, {truth['shape'][0]}x{truth['shape'][1]}) in {t_sim:.1f} s")
    print(f"  association: {sim.asn_path}")

    before = ModelContainer(str(sim.asn_path))
    current = str(sim.asn_path)
    timings = []
    report = []
    for module_name, class_name, params in DEMO_CHAIN:
        step_class = getattr(importlib.import_module(module_name), class_name)
        t1 = time.perf_counter()
        current = step_class.call(current, **params)
        timings.append((step_class.class_alias, time.perf_counter() - t1))
        report.append(f"{step_class.class_alias}:")
        report.extend(_REPORTS[step_class.class_alias](list(current), truth))
    products = outdir / "output"
    products.mkdir(parents=True, exist_ok=True)
    for model in current:
        model.save(products / model.meta.filename.replace("_calints", "_klipprep"))

    print("steps run (seconds): " + ", ".join(f"{a} {t:.2f}" for a, t in timings))
    print("\n".join(report))
    first_sci = next(i for i, m in enumerate(before) if m.meta.asn.exptype == "science")
    png = outdir / "klipprep_demo.png"
    _plot(before[first_sci], current[first_sci], png,
          "klipprep demo: first science integration before / after")
    summary = {"timings_s": dict(timings), "simulate_s": t_sim, "report": report}
    (outdir / "demo_report.json").write_text(json.dumps(summary, indent=2))
    print(f"products in {products}/, figure {png}, report {outdir / 'demo_report.json'}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0
