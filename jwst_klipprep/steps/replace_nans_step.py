"""Replace NaNs in SCI (and ERR / VAR_*) by a constant, flagging the pixels in DQ."""

import logging

import numpy as np

from jwst_klipprep._arrays import FrameArrays, dq_bits, record, set_status
from jwst_klipprep._base import KlipPrepStep
from jwst_klipprep.algorithms.nans import replace_nans

__all__ = ["ReplaceNansStep"]

log = logging.getLogger(__name__)


class ReplaceNansStep(KlipPrepStep):
    """Replace NaN pixels by a constant and flag them in DQ."""

    class_alias = "replace_nans"

    spec = """
        fill_value = float(default=0.0)  # Value written into SCI where it is NaN or infinite
        err_fill_value = float(default=0.0, min=0.0)  # Value written into ERR and VAR_* where they are NaN
        dq_flags = string(default="DO_NOT_USE")  # DQ flag(s) OR-ed into the replaced pixels (comma-separated names)
    """  # noqa: E501

    def process_model(self, model):
        """Replace the NaNs of one model (the step's own copy)."""
        flags = dq_bits(self.dq_flags)
        arrays = FrameArrays.from_model(model)
        sci = replace_nans(arrays.data, fill_value=self.fill_value)
        arrays.data = sci.data
        arrays.dq = arrays.dq | np.where(sci.replaced, np.uint32(flags), np.uint32(0))
        n_err = 0
        for name in ("err", *arrays.var):
            array = arrays.err if name == "err" else arrays.var[name]
            fixed = replace_nans(array, fill_value=self.err_fill_value)
            n_err += int(fixed.replaced.sum())
            if name == "err":
                arrays.err = fixed.data
            else:
                arrays.var[name] = fixed.data
        arrays.to_model(model)

        per_int = sci.replaced.sum(axis=(1, 2))
        total = int(per_int.sum())
        record(
            model, self.class_alias,
            fill_value=self.fill_value, err_fill_value=self.err_fill_value,
            dq_flags=self.dq_flags, n_replaced=total, n_replaced_per_integration=per_int,
            n_replaced_err_var=n_err,
        )
        set_status(model, self.class_alias)
        log.info(
            "replace_nans: %s: replaced %d non-finite SCI pixel(s) (%.3f %%) with %g and %d "
            "ERR/VAR value(s) with %g; flagged %s",
            model.meta.filename, total, 100.0 * total / sci.replaced.size, self.fill_value,
            n_err, self.err_fill_value, self.dq_flags,
        )
