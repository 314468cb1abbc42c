"""``klipprep``: run the jwst_klipprep steps in order on an association."""

import logging
import time
from pathlib import Path

import numpy as np
from jwst.datamodels import ModelContainer

from jwst_klipprep._base import KlipPrepPipelineBase, members
from jwst_klipprep._consumers import prepare_for_consumers
from jwst_klipprep._geometry import apply_pending_shift
from jwst_klipprep._members import classify_members
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

#: Steps whose shifts the pipeline composes and applies once (they run with apply=False).
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
    "pad_frames": PadFramesStep,
    "coadd_frames": CoaddFramesStep,  # skipped by default; after the shifts (per integration)
    "blur_frames": BlurFramesStep,  # skipped by default; after the shifts (damps their ringing)
}


class KlipPrepPipeline(KlipPrepPipelineBase):
    """Prepare coronagraphic calints for KLIP: backgrounds, bad pixels, centres, alignment."""

    class_alias = "klipprep"

    spec = """
        save_summary = boolean(default=True)  # Write <product>_klipprep_summary.ecsv (centres, shifts, levels, pixels) when products are saved
        save_diagnostics = boolean(default=True)  # Write <product>_klipprep.png (frames before/after, shifts) when products are saved
        shift_method = option("sinc", "lanczos", "fourier", default="sinc")  # Kernel of the single resampling
        keep_backgrounds = boolean(default=False)  # Also return (and save) the background exposures
        fill_nans = boolean(default=True)  # Last: NaN SCI pixels set to 0 and flagged DO_NOT_USE (pyKLIP ADI+RDI and jwst klip need finite pixels)
    """  # noqa: E501

    step_defs = dict(STEP_ORDER)

    def process(self, step_input):
        """Run every step in order, resampling each frame once; return the prepared products."""
        models = self.open_input(step_input)
        if not isinstance(models, ModelContainer):
            models = ModelContainer([models])
        self.output_use_model = True
        before = {m.meta.filename: np.array(m.data[0] if m.data.ndim == 3 else m.data)
                  for m in members(models)}
        timings = {}
        for alias in self.step_defs:
            step = getattr(self, alias)
            if alias == "pad_frames":
                t0 = time.perf_counter()
                for model in members(models):
                    apply_pending_shift(model, method=self.shift_method)
                timings["apply_shifts"] = time.perf_counter() - t0
            if alias in _SHIFTING:
                step.apply = False
            t0 = time.perf_counter()
            models = step.run(models)
            timings[alias] = time.perf_counter() - t0
        for model in members(models):  # consumers: star keywords, uncertainties, NaN policy
            prepare_for_consumers(model, nan_fill=self.fill_nans)
        roles = classify_members(members(models))
        kept = [(m, r.kind) for m, r in zip(members(models), roles, strict=True)
                if self.keep_backgrounds or r.kind in ("SCI", "REF")]
        keep = [m for m, _ in kept]
        products = ModelContainer(keep)
        log.info("klipprep: %d product(s); seconds per step: %s", len(keep),
                 ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        name = self._product_name(step_input, keep)
        # side products only when products are saved (strun, save_results) or a folder is given
        if (self.save_summary or self.save_diagnostics) and (self.save_results
                                                              or self.output_dir):
            from jwst_klipprep.diagnostics import summary_table, write_diagnostic_plot

            outdir = Path(self.output_dir or ".")
            outdir.mkdir(parents=True, exist_ok=True)
            if self.save_summary:
                table = summary_table(keep, roles=[kind for _, kind in kept], timings=timings)
                path = outdir / f"{name}_klipprep_summary.ecsv"
                table.write(path, overwrite=True)
                log.info("klipprep: wrote %s", path)
            if self.save_diagnostics:
                path = outdir / f"{name}_klipprep.png"
                write_diagnostic_plot(keep, before, path)
                log.info("klipprep: wrote %s", path)
        return products

    @staticmethod
    def _product_name(step_input, keep):
        if isinstance(step_input, (str, Path)) and str(step_input).endswith(".json"):
            import json

            try:
                return json.loads(Path(step_input).read_text())["products"][0]["name"]
            except (KeyError, IndexError, ValueError):
                return Path(step_input).stem
        return Path(keep[0].meta.filename or "klipprep").stem.rsplit("_", 1)[0]
