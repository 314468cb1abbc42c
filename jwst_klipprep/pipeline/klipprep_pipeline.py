"""``klipprep``: run the jwst_klipprep steps in order on an association."""

import gc
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from jwst.datamodels import ModelContainer

from jwst_klipprep import outputs
from jwst_klipprep.base import KlipPrepPipelineBase, for_each_member, members
from jwst_klipprep.consumers import prepare_for_consumers
from jwst_klipprep.geometry import apply_pending_shift
from jwst_klipprep.roles import classify_members
from jwst_klipprep.steps.align_frames_step import AlignFramesStep
from jwst_klipprep.steps.blur_frames_step import BlurFramesStep
from jwst_klipprep.steps.coadd_frames_step import CoaddFramesStep
from jwst_klipprep.steps.crop_frames_step import CropFramesStep
from jwst_klipprep.steps.fix_bad_pixels_step import FixBadPixelsStep
from jwst_klipprep.steps.pad_frames_step import PadFramesStep
from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep
from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep
from jwst_klipprep.steps.subtract_background_step import SubtractBackgroundStep
from jwst_klipprep.steps.subtract_median_step import SubtractMedianStep
from jwst_klipprep.steps.update_nircam_centers_step import UpdateNircamCentersStep

__all__ = ["STEP_ORDER", "KlipPrepPipeline"]

log = logging.getLogger(__name__)

#: Steps whose shifts the pipeline composes and applies once (they run with apply=False); the
#: composed shift is applied right after the last of them.
_SHIFTING = ("recenter_frames", "align_frames")


#: The steps, in the order they run.
STEP_ORDER = {
    "crop_frames": CropFramesStep,  # skipped by default
    "subtract_background": SubtractBackgroundStep,
    "subtract_median": SubtractMedianStep,
    "fix_bad_pixels": FixBadPixelsStep,
    "replace_nans": ReplaceNansStep,
    "update_nircam_centers": UpdateNircamCentersStep,
    "recenter_frames": RecenterFramesStep,
    "align_frames": AlignFramesStep,
    "pad_frames": PadFramesStep,  # skipped by default (KLIP codes need no padding)
    "coadd_frames": CoaddFramesStep,  # skipped by default; after the shifts (per integration)
    "blur_frames": BlurFramesStep,  # skipped by default; after the shifts (damps their ringing)
}


class KlipPrepPipeline(KlipPrepPipelineBase):
    """Prepare coronagraphic calints for KLIP: backgrounds, bad pixels, centres, alignment."""

    class_alias = "klipprep"

    spec = """
        save_summary = boolean(default=True)  # Write <product>_klipprep_summary.ecsv (centres, shifts, levels, pixels) after the products are saved
        save_diagnostics = boolean(default=True)  # Write <product>_klipprep.png (frames before/after, shifts) after the products are saved
        shift_method = option("sinc", "lanczos", "fourier", default="sinc")  # Kernel of the single resampling
        keep_backgrounds = boolean(default=False)  # Also return (and save) the background exposures
        fill_nans = boolean(default=True)  # Last: NaN SCI pixels set to 0 and flagged DO_NOT_USE (pyKLIP ADI+RDI and jwst klip need finite pixels)
    """  # noqa: E501

    step_defs = dict(STEP_ORDER)

    def process(self, step_input):
        """Run every step in order, resampling each frame once; return the prepared products."""
        # stpipe runs gc.collect() before every step; with the ~10^6 long-lived objects of the
        # jwst/astropy imports each full collection costs ~0.15 s. Freezing them (they live as
        # long as the process) makes those collections cheap; nothing else changes.
        gc.freeze()
        try:
            return self._process(step_input)
        finally:
            gc.unfreeze()

    def _process(self, step_input):
        t0, c0 = time.perf_counter(), time.process_time()
        models = self.open_input(step_input)
        if not isinstance(models, ModelContainer):
            models = ModelContainer([models])
        self.output_use_model = True
        before = {m.meta.filename: np.array(m.data[0] if m.data.ndim == 3 else m.data)
                  for m in members(models)}
        timings = {"open": time.perf_counter() - t0}
        for model in members(models):
            done = [a for a in self.step_defs
                    if model.meta.cal_step.instance.get(a) == "COMPLETE"]
            if done:
                log.warning("%s: already processed by %s; klipprep runs every step again "
                            "(re-subtracts, re-centres, re-aligns)", model.meta.filename,
                            ", ".join(done))
        cpu = {"open": time.process_time() - c0}
        last_shifting = [a for a in self.step_defs if a in _SHIFTING][-1]
        for alias in self.step_defs:
            step = getattr(self, alias)
            if alias in _SHIFTING:
                step.apply = False
            t0, c0 = time.perf_counter(), time.process_time()
            models = step.run(models)
            timings[alias] = time.perf_counter() - t0
            cpu[alias] = time.process_time() - c0
            if alias == last_shifting:
                t0, c0 = time.perf_counter(), time.process_time()
                # exposures in threads (the kernels release the GIL); the results are written
                # into each model's own buffers, so only the temporaries of the exposures in
                # flight add to the peak memory
                for_each_member(partial(apply_pending_shift, method=self.shift_method), models)
                timings["apply_shifts"] = time.perf_counter() - t0
                cpu["apply_shifts"] = time.process_time() - c0
        for model in members(models):  # consumers: star keywords, uncertainties, NaN policy
            prepare_for_consumers(model, nan_fill=self.fill_nans)
        roles = classify_members(members(models))
        kept = [(m, r.kind) for m, r in zip(members(models), roles, strict=True)
                if self.keep_backgrounds or r.kind in ("SCI", "REF")]
        keep = [m for m, _ in kept]
        products = ModelContainer(keep)
        log.info("klipprep: %d product(s); seconds per step: %s", len(keep),
                 ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        # the summary and the figure are written after the products (see save_model)
        self._side_products = dict(
            name=self._product_name(step_input, keep), models=keep,
            roles=[kind for _, kind in kept], before=before, timings=timings, cpu=cpu)
        return products

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False,
                   **components):
        """Save each product atomically, then the summary table and the figure (last)."""
        if not isinstance(model, Sequence):
            return super().save_model(model, suffix=suffix, idx=idx, output_file=output_file,
                                      force=force, **components)
        paths = []
        t0, c0 = time.perf_counter(), time.process_time()
        for i, member in enumerate(model):
            paths.append(super().save_model(member, suffix=suffix, idx=i,
                                            output_file=output_file, force=force, **components))
            if paths[-1]:
                log.info("klipprep: [%d/%d] saved %s", i + 1, len(model), paths[-1])
        side = getattr(self, "_side_products", None)
        if side is not None and any(paths):
            side["timings"]["save"] = time.perf_counter() - t0
            side["cpu"]["save"] = time.process_time() - c0
            self._write_side_products(Path(paths[0]).parent, **side)
            self._side_products = None
        return paths

    def _write_side_products(self, outdir, *, name, models, roles, before, timings, cpu):
        if not (self.save_summary or self.save_diagnostics):
            return
        from jwst_klipprep.diagnostics import summary_table, write_diagnostic_plot

        if self.save_diagnostics:  # the figure first, so that the summary has its timing
            t0, c0 = time.perf_counter(), time.process_time()
            path = outdir / f"{name}_klipprep.png"
            outputs.warn_if_replacing(path)
            with outputs.atomic_path(path) as tmp:
                write_diagnostic_plot(models, before, tmp)
            log.info("klipprep: wrote %s", path)
            timings["figure"] = time.perf_counter() - t0
            cpu["figure"] = time.process_time() - c0
        if self.save_summary:
            table = summary_table(models, roles=roles, timings=timings, cpu=cpu)
            path = outdir / f"{name}_klipprep_summary.ecsv"
            outputs.warn_if_replacing(path)
            with outputs.atomic_path(path) as tmp:
                table.write(tmp, format="ascii.ecsv")
            log.info("klipprep: wrote %s", path)

    @staticmethod
    def _product_name(step_input, keep):
        if isinstance(step_input, (str, Path)) and str(step_input).endswith(".json"):
            import json

            try:
                return json.loads(Path(step_input).read_text())["products"][0]["name"]
            except (KeyError, IndexError, ValueError):
                return Path(step_input).stem
        return Path(keep[0].meta.filename or "klipprep").stem.rsplit("_", 1)[0]
