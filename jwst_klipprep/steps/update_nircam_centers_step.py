"""Correct the NIRCam coronagraph mask centre (CRPIX) from measured tables; metadata only."""

import logging

from jwst_klipprep.algorithms.nircam_mask_centers import mask_center_correction
from jwst_klipprep.base import KlipPrepStep
from jwst_klipprep.keywords import get_center_yx, set_center_yx
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.reference_data import load_table, siaf_reference_xy, siaf_version

__all__ = ["UpdateNircamCentersStep"]

log = logging.getLogger(__name__)


class UpdateNircamCentersStep(KlipPrepStep):
    """Move CRPIX and the mask centre to the measured NIRCam mask centre plus the filter shift."""

    class_alias = "update_nircam_centers"

    spec = """
        centers_file = string(default=None)  # JSON table of mask centres per APERNAME (default: the packaged table)
        filter_shifts_file = string(default=None)  # JSON table of shifts per FILTER (default: the packaged table)
    """  # noqa: E501

    def process_model(self, model):
        """Update the centre metadata of one model (pixel data untouched)."""
        name = model.meta.filename
        if model.meta.instrument.name != "NIRCAM":
            set_status(model, self.class_alias, "SKIPPED")
            log.info("update_nircam_centers: %s: %s data, not NIRCam: skipped", name,
                     model.meta.instrument.name)
            return
        done = model.meta.instance.get("klipprep", {}).get(self.class_alias)
        if done:
            log.info("update_nircam_centers: %s: already applied (delta x, y = %s); not applied "
                     "again", name, done["delta_xy"])
            return
        centers = load_table(self.centers_file or "nircam_mask_centers")
        shifts = load_table(self.filter_shifts_file or "nircam_filter_shifts")
        aperture = model.meta.aperture.name
        filter_name = model.meta.instrument.filter
        siaf_xy = siaf_reference_xy("NIRCam", aperture) if aperture else None
        corr = mask_center_correction(
            aperture, filter_name, centers=centers["centers_xy"], shifts=shifts["shifts_xy"],
            siaf_ref_xy=siaf_xy,
        )
        for note in corr.warnings:
            log.warning("update_nircam_centers: %s: %s", name, note)
        dx, dy = corr.delta_xy
        crpix_yx = get_center_yx(model, "crpix")
        mask_yx = get_center_yx(model, "mask")
        set_center_yx(model, "crpix", (crpix_yx[0] + dy, crpix_yx[1] + dx))
        set_center_yx(model, "mask", (mask_yx[0] + dy, mask_yx[1] + dx))
        record(
            model, self.class_alias, aperture=aperture, filter=filter_name,
            delta_xy=list(corr.delta_xy), table_center_xy=list(corr.table_center_xy),
            filter_shift_xy=list(corr.filter_shift_xy),
            siaf_ref_xy=None if siaf_xy is None else list(siaf_xy), siaf_prd=siaf_version(),
            centers_table=f"{centers['name']} {centers['version']}",
            filter_shifts_table=f"{shifts['name']} {shifts['version']}",
            warnings=list(corr.warnings),
        )
        set_status(model, self.class_alias)
        log.info(
            "update_nircam_centers: %s: %s %s: CRPIX (%.3f, %.3f) -> (%.3f, %.3f) "
            "(table %s + filter shift %s - SIAF %s)",
            name, aperture, filter_name, crpix_yx[1] + 1, crpix_yx[0] + 1, crpix_yx[1] + 1 + dx,
            crpix_yx[0] + 1 + dy, corr.table_center_xy, corr.filter_shift_xy, siaf_xy,
        )
