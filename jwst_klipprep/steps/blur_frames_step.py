"""Gaussian blur against the ringing of undersampled data (NaN-aware, variances propagated)."""

import logging

import numpy as np

from jwst_klipprep.algorithms.blur import auto_fwhm, blur_frames
from jwst_klipprep.base import InputError, KlipPrepStep
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.keywords import set_fits_keyword
from jwst_klipprep.provenance import record, set_status

__all__ = ["DIAMETER_M", "BlurFramesStep"]

log = logging.getLogger(__name__)

#: Effective aperture diameter (m) behind each coronagraph: the NIRCam Lyot stops pass about
#: 5.2 m of the pupil (as in the prior art); MIRI: the telescope's 6.5 m.
DIAMETER_M = {"NIRCAM": 5.2, "MIRI": 6.5}

DO_NOT_USE = dq_bits("DO_NOT_USE")


def _parse_fwhm(value):
    if str(value).strip().lower() == "auto":
        return "auto"
    message = f"blur_frames: invalid fwhm={value!r}: give pixels > 0 or 'auto'"
    try:
        fwhm = float(value)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not np.isfinite(fwhm) or fwhm <= 0:
        raise ValueError(message)
    return fwhm


def _auto_fwhm(model, target):
    """FWHM (px) that brings the shortest wavelength of the band to ``target`` px per lambda/D."""
    from jwst_klipprep.psf import builtin

    inst = model.meta.instrument
    name = model.meta.filename
    try:
        _, spec = builtin.resolve_filter(inst.name, inst.filter)
    except ValueError as exc:
        raise InputError(f"{name}: blur_frames --fwhm=auto: {exc}") from None
    area = model.meta.photometry.pixelarea_arcsecsq
    scale = (float(np.sqrt(area)) if area else
             builtin.default_pixel_scale(inst.name, filter=inst.filter))
    wavelength_min = spec.center_um - spec.width_um / 2
    diameter = DIAMETER_M[str(inst.name).upper()]
    return auto_fwhm(wavelength_min_um=wavelength_min, diameter_m=diameter,
                     pixel_scale_arcsec=scale, target_fwhm_px=target), wavelength_min, diameter


class BlurFramesStep(KlipPrepStep):
    """Convolve every integration with a Gaussian (flux-conserving, NaN-aware)."""

    class_alias = "blur_frames"

    spec = """
        skip = boolean(default=True)  # In the klipprep pipeline: skipped unless skip=False (a standalone run always runs)
        fwhm = string(default="auto")  # Gaussian FWHM in pixels, or auto (brings lambda_min/D up to target_fwhm)
        target_fwhm = float(default=3.45, min=0)  # auto: wanted lambda_min/D in pixels (3.45 = prior art, 2 = Nyquist)
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of pixels neither used nor changed
    """  # noqa: E501

    def process(self, step_input):
        """Check the FWHM before anything is opened, then blur each member."""
        self._fwhm = _parse_fwhm(self.fwhm)
        return super().process(step_input)

    def process_model(self, model):
        """Blur one model (the step's own copy)."""
        name = model.meta.filename
        details = {}
        fwhm = self._fwhm
        if fwhm == "auto":
            fwhm, wavelength_min, diameter = _auto_fwhm(model, self.target_fwhm)
            details = {"wavelength_min_um": wavelength_min, "diameter_m": diameter,
                       "target_fwhm": self.target_fwhm}
        if fwhm == 0:
            record(model, self.class_alias, fwhm=0.0, requested=str(self.fwhm), **details)
            set_fits_keyword(model, "BLURFWHM", 0.0, "blur_frames Gaussian FWHM (px)")
            set_status(model, self.class_alias, "SKIPPED")
            log.info("blur_frames: %s: already sampled at >= %g px per lambda_min/D; not "
                     "blurred", name, self.target_fwhm)
            return
        arrays = FrameArrays.from_model(model)
        out = blur_frames(arrays.data, fwhm=fwhm, err=arrays.err, var=arrays.var,
                          bad=(arrays.dq & dq_bits(self.bad_flags)) != 0)
        arrays.data, arrays.err, arrays.var = out.data, out.err, out.var
        arrays.dq = np.where(out.lost, arrays.dq | DO_NOT_USE, arrays.dq)
        arrays.to_model(model)
        set_fits_keyword(model, "BLURFWHM", float(fwhm), "blur_frames Gaussian FWHM (px)")
        record(model, self.class_alias, fwhm=float(fwhm), sigma=out.sigma,
               requested=str(self.fwhm), lost_pixels=int(out.lost.sum()), **details)
        set_status(model, self.class_alias)
        log.info("blur_frames: %s: Gaussian blur FWHM %.3f px (sigma %.3f px%s); %d pixel(s) "
                 "without support flagged DO_NOT_USE", name, fwhm, out.sigma,
                 ", auto" if details else "", int(out.lost.sum()))
