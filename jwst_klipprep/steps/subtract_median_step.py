"""Subtract each integration's background level, measured after masking bright sources."""

import logging

import numpy as np
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.background import estimate_level
from jwst_klipprep.base import InputError, KlipPrepStep
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.transmission import transmission_map
from jwst_klipprep.validation import dead_integrations

__all__ = ["SubtractMedianStep"]

log = logging.getLogger(__name__)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


class SubtractMedianStep(KlipPrepStep):
    """Subtract a per-integration background level measured on source-free pixels."""

    class_alias = "subtract_median"

    #: process_model only writes its own model: the exposures run in threads
    parallel_members = True

    spec = """
        method = option("masked", "border", "sigma_clip", default="masked")  # How the level is measured
        border_width = integer(default=32, min=1)  # Width in pixels of the frame border (method border)
        sigma = float(default=3.0, min=0.5)  # Clipping threshold in standard deviations
        maxiters = integer(default=5, min=0)  # Maximum number of clipping iterations
        threshold = float(default=4.0, min=0.5)  # Source detection threshold in noise sigma (method masked)
        dilate = integer(default=8, min=0)  # Growth in pixels of the source mask (method masked)
        smooth = float(default=1.0, min=0.0)  # Gaussian smoothing (pixels) before source detection (method masked)
        use_transmission = boolean(default=True)  # Exclude the low-transmission region of the coronagraph
        transmission_min = float(default=0.9, min=0.0, max=1.0)  # Pixels with lower transmission are excluded
        psfmask = string(default=None)  # Transmission map file (default: analytic mask model at the mask centre)
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of pixels excluded from the measurement
    """  # noqa: E501

    def process_model(self, model):
        """Measure and subtract the levels of one model (the step's own copy)."""
        arrays = FrameArrays.from_model(model)
        bad = (arrays.dq & dq_bits(self.bad_flags)) != 0
        transmission = None
        if self.use_transmission:
            transmission = transmission_map(model, arrays.shape[-2:], psfmask=self.psfmask)
        est = estimate_level(
            arrays.data, bad=bad, method=self.method, border_width=self.border_width,
            sigma=self.sigma, maxiters=self.maxiters, threshold=self.threshold,
            dilate=self.dilate, smooth=self.smooth, transmission=transmission,
            transmission_min=self.transmission_min,
        )
        dead = dead_integrations(arrays.data, bad)
        failed = ~np.isfinite(est.level) & ~dead
        if failed.any():
            raise InputError(
                f"{model.meta.filename}: no usable background pixel in integration(s) "
                f"{np.flatnonzero(failed).tolist()} with method {self.method}"
                f"{self._hint()}")
        if dead.all():
            raise InputError(f"{model.meta.filename}: every integration is dead (all NaN or "
                             f"flagged {self.bad_flags}): nothing to measure")
        if dead.any():
            # a dead integration (no finite, unflagged pixel) is flagged and left as it is
            log.warning("subtract_median: %s: integration(s) %s dead (all NaN or flagged %s): "
                        "not subtracted, flagged DO_NOT_USE", model.meta.filename,
                        np.flatnonzero(dead).tolist(), self.bad_flags)
            arrays.dq = np.where(dead[:, None, None], arrays.dq | np.uint32(DO_NOT_USE),
                                 arrays.dq)
        live = ~dead
        # float32 arithmetic (the products are float32): no float64 copies of the cubes
        level = np.where(live, est.level, 0.0).astype(np.float32)[:, None, None]
        level_var = np.where(live, est.error**2, 0.0).astype(np.float32)[:, None, None]
        arrays.data = arrays.data - level
        arrays.err = np.sqrt(np.square(arrays.err, dtype=np.float32) + level_var)
        if "var_rnoise" in arrays.var:
            arrays.var["var_rnoise"] = arrays.var["var_rnoise"] + level_var
        arrays.to_model(model)

        record(
            model, self.class_alias, method=self.method, level=est.level, level_error=est.error,
            npix=est.npix, noise_std=est.std, transmission=transmission is not None,
            dead_integrations=np.flatnonzero(dead),
        )
        set_status(model, self.class_alias)
        note = " (MIRI: dedicated backgrounds usually do better)" if (
            model.meta.instrument.name == "MIRI") else ""
        log.info(
            "subtract_median: %s: method %s, level mean %.4g (range %.4g..%.4g) +- %.2g over "
            "%d integration(s), %d pixels each (median)%s",
            model.meta.filename, self.method, np.mean(est.level[live]),
            np.min(est.level[live]), np.max(est.level[live]), float(np.median(est.error[live])),
            int(live.sum()), int(np.median(est.npix[live])), note,
        )

    def _hint(self):
        if self.method == "border":
            return (f": the {self.border_width}-px border has no unflagged finite pixel; use "
                    "--method=masked or a wider --border_width")
        if self.use_transmission:
            return (f": every unflagged pixel has coronagraph transmission < "
                    f"{self.transmission_min}; lower --transmission_min or set "
                    "--use_transmission=False")
        return ": every pixel is NaN or flagged; check --bad_flags"
