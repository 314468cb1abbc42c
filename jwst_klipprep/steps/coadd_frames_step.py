"""Combine every N consecutive integrations (median or mean) with errors, flags and times."""

import logging

import numpy as np

from jwst_klipprep.algorithms.coadd import COADD_METHODS, coadd_frames
from jwst_klipprep.base import InputError, KlipPrepStep
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.geometry import pending_shift
from jwst_klipprep.provenance import record, set_status

__all__ = ["CoaddFramesStep"]

log = logging.getLogger(__name__)


def _coadd_int_times(table, slices, integration_start=None):
    """INT_TIMES rows of the blocks: first start, mean mid, last end, numbers 1..nblocks.

    The rows of this file's integrations are found by ``integration_number`` from INTSTART
    (segmented exposures carry the table of the whole exposure); None when they are not there.
    """
    if table is None or len(table) == 0:
        return None
    table = np.asarray(table)
    nints = slices[-1].stop
    names = {n.lower(): n for n in table.dtype.names}
    if "integration_number" in names:
        first = 1 if integration_start is None else int(integration_start)
        numbers = table[names["integration_number"]]
        rows = [np.flatnonzero(numbers == first + i) for i in range(nints)]
        if any(len(r) != 1 for r in rows):
            return None
        table = table[np.concatenate(rows)]
    elif len(table) != nints:
        return None
    out = np.zeros(len(slices), dtype=table.dtype)
    for name in table.dtype.names:
        column = table[name]
        lower = name.lower()
        if "number" in lower:
            out[name] = np.arange(1, len(slices) + 1)
        elif "start" in lower:
            out[name] = [column[sl.start] for sl in slices]
        elif "end" in lower:
            out[name] = [column[sl.stop - 1] for sl in slices]
        else:
            out[name] = [np.mean(column[sl]) for sl in slices]
    return out


class CoaddFramesStep(KlipPrepStep):
    """Combine every ``nframes`` consecutive integrations (a last partial block on its own)."""

    class_alias = "coadd_frames"

    spec = """
        skip = boolean(default=True)  # In the klipprep pipeline: skipped unless skip=False (a standalone run always runs)
        nframes = integer(default=None, min=1)  # Integrations per block; None combines all the integrations of an exposure
        method = string(default="median")  # median (error of a median) or mean
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of values left out of the combination
    """  # noqa: E501

    def process(self, step_input):
        """Check the method before anything is opened, then combine each member."""
        if self.method not in COADD_METHODS:
            raise ValueError(f"coadd_frames: unknown method {self.method!r}; "
                             f"use one of {', '.join(COADD_METHODS)}")
        return super().process(step_input)

    def process_model(self, model):
        """Combine the integrations of one model (the step's own copy)."""
        name = model.meta.filename
        if pending_shift(model) is not None:
            raise InputError(f"{name}: has a pending per-integration shift; run coadd_frames "
                             "after the shift is applied (the klipprep pipeline does)")
        arrays = FrameArrays.from_model(model)
        nints = arrays.shape[0]
        nframes = nints if self.nframes is None else int(self.nframes)
        if arrays.image or nints == 1:
            record(model, self.class_alias, nframes=nframes, nints_in=nints, nints_out=nints)
            set_status(model, self.class_alias, "SKIPPED")
            log.info("coadd_frames: %s: one integration, nothing to combine; skipped", name)
            return
        out = coadd_frames(
            arrays.data, nframes=nframes, method=self.method, err=arrays.err, var=arrays.var,
            dq=np.asarray(arrays.dq), bad=(arrays.dq & dq_bits(self.bad_flags)) != 0,
            empty_flag=dq_bits("DO_NOT_USE"),
        )
        nblocks = len(out.slices)
        arrays.data, arrays.err, arrays.dq, arrays.var = out.data, out.err, out.dq, out.var
        arrays.to_model(model)
        int_times = _coadd_int_times(getattr(model, "int_times", None), out.slices,
                                     model.meta.exposure.integration_start)
        if int_times is not None:
            model.int_times = int_times
        elif getattr(model, "int_times", None) is not None and len(model.int_times):
            log.warning("coadd_frames: %s: INT_TIMES does not list this file's integrations; "
                        "removed rather than left inconsistent", name)
            del model.instance["int_times"]
        exposure = model.meta.exposure
        old = {"nints": exposure.nints, "integration_start": exposure.integration_start,
               "integration_end": exposure.integration_end,
               "integration_time": exposure.integration_time}
        exposure.nints = nblocks
        exposure.integration_start = 1
        exposure.integration_end = nblocks
        sizes = [sl.stop - sl.start for sl in out.slices]
        if exposure.integration_time is not None:
            # EFFINTTM: time per output frame (full block); totals (EFFEXPTM...) are unchanged
            exposure.integration_time = float(exposure.integration_time) * sizes[0]
        record(
            model, self.class_alias, nframes=nframes, method=self.method, nints_in=nints,
            nints_out=nblocks, block_sizes=sizes,
            blocks=[[sl.start, sl.stop] for sl in out.slices], original=old,
            empty_pixels=int((out.nused == 0).sum()),
        )
        set_status(model, self.class_alias)
        log.info("coadd_frames: %s: %d integration(s) -> %d (%s of blocks of %s); "
                 "EFFINTTM x%d, %d pixel(s) without a usable value", name, nints, nblocks,
                 self.method, sorted(set(sizes), reverse=True), sizes[0],
                 int((out.nused == 0).sum()))
