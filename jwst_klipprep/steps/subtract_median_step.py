"""Subtract each integration's background level, measured after masking bright sources."""

import logging

import numpy as np

from jwst_klipprep._arrays import FrameArrays, dq_bits, record, set_status
from jwst_klipprep._base import KlipPrepStep
from jwst_klipprep._transmission import transmission_map
from jwst_klipprep.algorithms.background import estimate_level

__all__ = ["SubtractMedianStep"]

log = logging.getLogger(__name__)


class SubtractMedianStep(KlipPrepStep):
    """Subtract a per-integration background level measured on source-free pixels."""

    class_alias = "subtract_median"

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
        failed = ~np.isfinite(est.level)
        if failed.any():
            raise ValueError(
                f"{model.meta.filename}: no usable background pixel in integration(s) "
                f"{np.flatnonzero(failed).tolist()} (method {self.method}); try another method"
            )
        level = est.level[:, None, None]
        level_var = (est.error**2)[:, None, None]
        arrays.data = arrays.data - level
        arrays.err = np.sqrt(arrays.err.astype(np.float64) ** 2 + level_var)
        if "var_rnoise" in arrays.var:
            arrays.var["var_rnoise"] = arrays.var["var_rnoise"] + level_var
        arrays.to_model(model)

        record(
            model, self.class_alias, method=self.method, level=est.level, level_error=est.error,
            npix=est.npix, noise_std=est.std, transmission=transmission is not None,
        )
        set_status(model, self.class_alias)
        note = " (MIRI: dedicated backgrounds usually do better)" if (
            model.meta.instrument.name == "MIRI") else ""
        log.info(
            "subtract_median: %s: method %s, level mean %.4g (range %.4g..%.4g) +- %.2g over "
            "%d integration(s), %d pixels each (median)%s",
            model.meta.filename, self.method, est.level.mean(), est.level.min(), est.level.max(),
            float(np.median(est.error)), len(est.level), int(np.median(est.npix)), note,
        )
