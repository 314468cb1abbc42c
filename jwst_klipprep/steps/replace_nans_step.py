"""Replace NaNs in SCI (and ERR / VAR_*) by a constant, flagging the pixels in DQ."""

import logging

import numpy as np

from jwst_klipprep.algorithms.nans import replace_nans
from jwst_klipprep.base import KlipPrepStep
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.provenance import record, set_status

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
        n_err = 0
        err_replaced = np.zeros(sci.replaced.shape, bool)
        for name in ("err", *arrays.var):
            array = arrays.err if name == "err" else arrays.var[name]
            fixed = replace_nans(array, fill_value=self.err_fill_value)
            n_err += int(fixed.replaced.sum())
            err_replaced |= fixed.replaced
            if name == "err":
                arrays.err = fixed.data
            else:
                arrays.var[name] = fixed.data
        # a finite SCI pixel whose ERR/VAR was NaN now has ERR = err_fill_value (0 = infinite
        # weight): flag it as well, so that no later fit trusts it
        err_only = err_replaced & ~sci.replaced
        arrays.dq = arrays.dq | np.where(sci.replaced | err_only, np.uint32(flags), np.uint32(0))
        arrays.to_model(model)

        per_int = sci.replaced.sum(axis=(1, 2))
        total = int(per_int.sum())
        record(
            model, self.class_alias,
            fill_value=self.fill_value, err_fill_value=self.err_fill_value,
            dq_flags=self.dq_flags, n_replaced=total, n_replaced_per_integration=per_int,
            n_replaced_err_var=n_err, n_flagged_for_err=int(err_only.sum()),
        )
        set_status(model, self.class_alias)
        log.info(
            "replace_nans: %s: replaced %d non-finite SCI pixel(s) (%.3f %%) with %g and %d "
            "ERR/VAR value(s) with %g; flagged %s (also %d finite SCI pixel(s) whose ERR/VAR "
            "was NaN)",
            model.meta.filename, total, 100.0 * total / sci.replaced.size, self.fill_value,
            n_err, self.err_fill_value, self.dq_flags, int(err_only.sum()),
        )
        if err_only.any():
            log.warning("replace_nans: %s: %d finite SCI pixel(s) had a NaN ERR/VAR: set to %g "
                        "and flagged %s", model.meta.filename, int(err_only.sum()),
                        self.err_fill_value, self.dq_flags)
