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
    ("jwst_klipprep.steps.subtract_background_step", "SubtractBackgroundStep", {}),
    ("jwst_klipprep.steps.subtract_median_step", "SubtractMedianStep", {}),
    ("jwst_klipprep.steps.replace_nans_step", "ReplaceNansStep", {}),
    ("jwst_klipprep.steps.update_nircam_centers_step", "UpdateNircamCentersStep", {}),
    ("jwst_klipprep.steps.pad_frames_step", "PadFramesStep", {"npix": [20]}),
)

#: Loggers whose INFO lines go to the demo's log file.
_LOGGERS = ("jwst_klipprep", "stpipe", "jwst")


def _records(model, alias):
    return model.meta.instance.get("klipprep", {}).get(alias, {})


def _targets(models, truth):
    for model in models:
        exposure = truth["by_name"].get(model.meta.filename)
        if exposure is not None and exposure["kind"] in ("SCI", "REF"):
            yield model, exposure


def _bkg_truth(truth, kind):
    levels = [p for e in truth["exposures"] if e["kind"] == kind for p in e["pedestal"]]
    return float(np.median(levels)) if levels else None


def _report_subtract_background(models, truth):
    lines = []
    for model, exposure in _targets(models, truth):
        got = _records(model, "subtract_background")
        if not got or "median_level_subtracted" not in got:
            continue
        true = _bkg_truth(truth, got["background_kind"])
        level = float(np.median(got["median_level_subtracted"]))
        lines.append(f"  {model.meta.filename} ({exposure['kind']}): subtracted "
                     f"{got['background_kind']} level {level:.4f} (true median background "
                     f"pedestal {true:.4f}, x flat)")
    return lines


def _report_subtract_median(models, truth):
    lines = []
    for model, exposure in _targets(models, truth):
        got = _records(model, "subtract_median")
        if not got:
            continue
        bkg = _records(model, "subtract_background")
        true = np.array(exposure["pedestal"])
        if bkg.get("background_kind"):
            true = true - _bkg_truth(truth, bkg["background_kind"])
        diff = np.array(got["level"]) - true
        lines.append(f"  {model.meta.filename}: measured - injected pedestal: mean "
                     f"{diff.mean():+.4f}, std {diff.std():.4f} (quoted error "
                     f"{np.median(got['level_error']):.1e}; the mean is the stellar halo)")
    return lines


def _report_update_nircam_centers(models, truth):
    lines = []
    for model in models:
        got = _records(model, "update_nircam_centers")
        if not got:
            continue
        before = np.subtract(got["siaf_ref_xy"][::-1], 1) - truth["mask_center_yx"]
        after = np.subtract(get_center_yx(model, "mask"), truth["mask_center_yx"])
        lines.append(f"  {model.meta.filename}: mask centre error vs truth (dy, dx) px "
                     f"({before[0]:+.3f}, {before[1]:+.3f}) -> ({after[0]:+.3f}, {after[1]:+.3f})")
    return lines[:3] + ([f"  ... and {len(lines) - 3} more"] if len(lines) > 3 else [])


def _report_replace_nans(models, truth):
    lines = []
    for model in models:
        exposure = truth["by_name"].get(model.meta.filename)
        got = _records(model, "replace_nans")
        if exposure is None or not got:
            continue
        expected = int(exposure["nan_pixels_per_integration"]) * int(exposure["nints"])
        no_bkg = _records(model, "subtract_background").get("n_no_background", 0)
        lines.append(
            f"  {model.meta.filename}: replaced {got['n_replaced']} NaN pixels (injected NaN "
            f"pixels: {expected}, + {no_bkg} without background)"
        )
    return lines


def _report_pad_frames(models, truth):
    lines = []
    for model in models:
        got = _records(model, "pad_frames")
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


_REPORTS = {
    "subtract_background": _report_subtract_background,
    "subtract_median": _report_subtract_median,
    "replace_nans": _report_replace_nans,
    "update_nircam_centers": _report_update_nircam_centers,
    "pad_frames": _report_pad_frames,
}


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

    log_path = outdir / "klipprep_demo.log"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    before = ModelContainer(str(sim.asn_path))
    current = str(sim.asn_path)
    timings = []
    report = []
    for module_name, class_name, params in DEMO_CHAIN:
        step_class = getattr(importlib.import_module(module_name), class_name)
        t1 = time.perf_counter()
        current = step_class.call(current, configure_log=False, **params)
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
    for name in _LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
    print(f"products in {products}/, figure {png}, log {log_path}, "
          f"report {outdir / 'demo_report.json'}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0
