"""Crop frames on their four sides, keeping CRPIX, the centres and the WCS consistent."""

import logging

import numpy as np

from jwst_klipprep.algorithms.cropping import crop_frames, parse_crop
from jwst_klipprep.algorithms.padding import parse_pad
from jwst_klipprep.base import InputError, KlipPrepStep
from jwst_klipprep.datamodel_arrays import FrameArrays
from jwst_klipprep.geometry import shift_geometry
from jwst_klipprep.provenance import record, set_status

__all__ = ["CropFramesStep"]

log = logging.getLogger(__name__)


class CropFramesStep(KlipPrepStep):
    """Cut ``left, right, bottom, top`` pixels off every frame; positions move with the pixels."""

    class_alias = "crop_frames"

    spec = """
        skip = boolean(default=True)  # In the klipprep pipeline: skipped unless skip=False (a standalone run always runs)
        npix = force_list(default=list(1))  # Crop width in pixels: one value, or left,right,bottom,top
    """  # noqa: E501

    def process(self, step_input):
        """Check the crop widths before anything is opened, then crop each member."""
        try:
            self._crop = parse_pad(self.npix)
        except ValueError as exc:
            raise ValueError(f"crop_frames: invalid npix={self.npix}: {exc}") from None
        return super().process(step_input)

    def process_model(self, model):
        """Crop one model (the step's own copy)."""
        arrays = FrameArrays.from_model(model)
        old_shape = arrays.shape
        try:
            crop = parse_crop(self._crop, old_shape)
        except ValueError as exc:
            raise InputError(f"{model.meta.filename}: crop_frames: {exc}") from None
        left, right, bottom, top = crop
        arrays.data = crop_frames(arrays.data, crop)
        arrays.err = crop_frames(arrays.err, crop)
        arrays.dq = crop_frames(np.asarray(arrays.dq, np.uint32), crop)
        arrays.var = {k: crop_frames(v, crop) for k, v in arrays.var.items()}
        arrays.to_model(model)
        if model.hasattr("area") and model.area is not None and np.size(model.area) > 0:
            if model.area.shape == old_shape[-2:]:
                model.area = crop_frames(np.asarray(model.area), crop)
            else:
                del model.instance["area"]
        shift_geometry(model, (-bottom, -left))
        sub = model.meta.subarray
        if sub.xsize is not None:
            sub.xsize, sub.ysize = arrays.shape[-1], arrays.shape[-2]
        if sub.xstart is not None and sub.ystart is not None:  # detector pixel of column 0
            sub.xstart, sub.ystart = sub.xstart + left, sub.ystart + bottom
        record(
            model, self.class_alias, npix_left_right_bottom_top=list(crop),
            old_shape=list(old_shape[-2:]), new_shape=list(arrays.shape[-2:]),
        )
        set_status(model, self.class_alias)
        log.info(
            "crop_frames: %s: cropped (left, right, bottom, top) = %s, shape %s -> %s; CRPIX, "
            "centres and WCS moved by (x, y) = (%d, %d)",
            model.meta.filename, crop, old_shape[-2:], arrays.shape[-2:], -left, -bottom,
        )
