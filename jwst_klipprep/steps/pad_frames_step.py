"""Pad frames with NaN to leave room for rotation in KLIP."""

import logging

import numpy as np

from jwst_klipprep.algorithms.padding import pad_frames, padded_nbytes, parse_pad
from jwst_klipprep.base import InputError, KlipPrepStep, ParameterError
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.geometry import shift_geometry
from jwst_klipprep.provenance import record, set_status

__all__ = ["PadFramesStep"]

log = logging.getLogger(__name__)

#: Largest padded product (all arrays of one exposure) the step builds, in bytes.
MAX_OUTPUT_BYTES = 16 * 2**30


class PadFramesStep(KlipPrepStep):
    """Pad every frame with NaN pixels flagged DO_NOT_USE, keeping CRPIX and the WCS consistent."""

    class_alias = "pad_frames"

    spec = """
        skip = boolean(default=True)  # In the klipprep pipeline: skipped unless skip=False (a standalone run always runs)
        npix = force_list(default=list(80))  # Pad width in pixels (0 to 4096): one value, or left,right,bottom,top
        fill_value = float(default=nan)  # Value of the padded SCI pixels (ERR and VAR_* get NaN)
        dq_flags = string(default="DO_NOT_USE,NON_SCIENCE")  # DQ flags of the padded pixels
    """  # noqa: E501

    def check_parameters(self):
        """Check the pad widths before anything is opened."""
        try:
            self._pad = parse_pad(self.npix)
        except ValueError as exc:
            raise ParameterError(f"pad_frames: invalid npix={self.npix}: {exc}") from None

    def process(self, step_input):
        """Check the pad widths, then pad each member."""
        self.check_parameters()
        return super().process(step_input)

    def process_model(self, model):
        """Pad one model (the step's own copy)."""
        pad = self._pad
        left, right, bottom, top = pad
        flags = dq_bits(self.dq_flags)
        arrays = FrameArrays.from_model(model)
        old_shape = arrays.shape
        nbytes = padded_nbytes(old_shape, pad, narrays=3 + len(arrays.var))
        if nbytes > MAX_OUTPUT_BYTES:
            raise InputError(
                f"{model.meta.filename}: npix={list(pad)} would make a {nbytes / 2**30:.1f} GiB "
                f"product from shape {old_shape} (limit {MAX_OUTPUT_BYTES / 2**30:.0f} GiB); "
                "use a smaller --npix")
        arrays.data = pad_frames(arrays.data, pad, fill_value=self.fill_value)
        arrays.err = pad_frames(arrays.err, pad, fill_value=np.nan)
        arrays.dq = pad_frames(np.asarray(arrays.dq, np.uint32), pad, fill_value=flags)
        arrays.var = {k: pad_frames(v, pad, fill_value=np.nan) for k, v in arrays.var.items()}
        arrays.to_model(model)
        if model.hasattr("area") and model.area is not None and np.size(model.area) > 0:
            if model.area.shape == old_shape[-2:]:
                model.area = pad_frames(model.area, pad, fill_value=np.nan)
            else:
                del model.instance["area"]
        shift_geometry(model, (bottom, left))
        if model.meta.subarray.xsize is not None:
            model.meta.subarray.xsize = arrays.shape[-1]
            model.meta.subarray.ysize = arrays.shape[-2]

        record(
            model, self.class_alias, npix_left_right_bottom_top=list(pad),
            fill_value=self.fill_value, old_shape=list(old_shape[-2:]),
            new_shape=list(arrays.shape[-2:]),
        )
        set_status(model, self.class_alias)
        log.info(
            "pad_frames: %s: padded (left, right, bottom, top) = %s, shape %s -> %s, fill %g, "
            "padded pixels flagged %s; CRPIX and centres moved by (x, y) = (%d, %d)",
            model.meta.filename, pad, old_shape[-2:], arrays.shape[-2:], self.fill_value,
            self.dq_flags, left, bottom,
        )
