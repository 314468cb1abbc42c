"""Subtract dedicated background exposures (SCI_BG from science, REF_BG from references)."""

import logging
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.background import (
    assign_background_chunks,
    combine_background,
    fit_background_scale,
    select_background_pixels,
    subtract_combined_background,
)
from jwst_klipprep.base import InputError, KlipPrepStep, check_model, members
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.roles import classify_members
from jwst_klipprep.transmission import transmission_map

__all__ = ["SubtractBackgroundStep"]

log = logging.getLogger(__name__)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


class SubtractBackgroundStep(KlipPrepStep):
    """Subtract the median-combined dedicated background exposures from each target exposure."""

    class_alias = "subtract_background"

    spec = """
        bkg_list = force_list(default=None)  # Background files, when the input has no background members
        nints_per_median = integer(default=None, min=1)  # Integrations per background median (time chunks); None = all
        chunk_mapping = option("index", "proportional", default="index")  # Target integration -> background chunk
        sigma = float(default=3.0, min=0.5)  # Clipping threshold (standard deviations) across integrations
        maxiters = integer(default=5, min=0)  # Maximum number of clipping iterations
        scale = boolean(default=False)  # Fit a scale and offset of the background per integration (MIRI drifts)
        transmission_min = float(default=0.9, min=0.0, max=1.0)  # Scale fit: pixels with lower transmission are excluded
        psfmask = string(default=None)  # Scale fit: transmission map file (default: analytic mask model)
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of pixels not used in the backgrounds
        save_combined_background = boolean(default=False)  # Save the combined background(s) as _bkgcomb products
    """  # noqa: E501

    def process(self, step_input):
        """Split targets from backgrounds, combine each kind once, subtract."""
        models = self.open_input(step_input)
        given = members(models)
        extra = [self._open_background(path) for path in (self.bkg_list or [])]
        roles = classify_members(given + extra)
        targets, groups = [], {"SCI_BG": [], "REF_BG": []}
        for model, role in zip(given + extra, roles, strict=True):
            if role.kind in groups:
                groups[role.kind].append(model)
                log.info("subtract_background: %s is %s (%s)", model.meta.filename, role.kind,
                         role.reason)
            else:
                targets.append((model, role.kind))
        for model in extra:  # opened here: not part of the output
            model.meta.asn.exptype = "background"
        if not groups["SCI_BG"] and not groups["REF_BG"]:
            log.warning("subtract_background: no background exposure (ASN member with exptype "
                        "'background' or bkg_list): step skipped")
            for model in given:
                set_status(model, self.class_alias, "SKIPPED")
            return models
        for missing, other in (("SCI_BG", "REF_BG"), ("REF_BG", "SCI_BG")):
            needed = any(kind == missing[:3] for _, kind in targets)
            if needed and not groups[missing]:
                log.warning("subtract_background: no %s exposure; using the %s exposure(s) "
                            "for the %s targets", missing, other, missing[:3])
                groups[missing] = groups[other]
        bad_bits = dq_bits(self.bad_flags)
        combined = {}
        for model, kind in targets:
            bkg_kind = f"{kind}_BG"
            self._check_compatible(model, groups[bkg_kind])
            if bkg_kind not in combined:
                combined[bkg_kind] = self._combine(groups[bkg_kind], bad_bits, bkg_kind)
            self._subtract(model, kind, combined[bkg_kind], groups[bkg_kind], bad_bits)
        target_ids = {id(model) for model, _ in targets}
        for model in given:
            if id(model) not in target_ids:
                set_status(model, self.class_alias, "SKIPPED")
                record(model, self.class_alias, role="background exposure: used, not subtracted")
        return models

    # ----------------------------------------------------------------------------------------

    def _open_background(self, path):
        path = Path(self.make_input_path(str(path)))
        if not path.exists():
            raise InputError(f"{path}: background file (bkg_list) not found")
        try:
            model = datamodels.open(path)
        except Exception as exc:
            raise InputError(f"{path}: cannot be opened as a JWST datamodel: {exc}") from None
        check_model(model)
        return model

    @staticmethod
    def _check_compatible(target, backgrounds):
        for bkg in backgrounds:
            for label, get in (
                ("FILTER", lambda m: m.meta.instrument.filter),
                ("SUBARRAY", lambda m: m.meta.subarray.name),
                ("frame shape", lambda m: tuple(np.shape(m.data)[-2:])),
            ):
                if get(target) != get(bkg):
                    raise InputError(
                        f"{target.meta.filename}: {label} {get(target)} differs from that of its "
                        f"background {bkg.meta.filename} ({get(bkg)})"
                    )

    def _combine(self, backgrounds, bad_bits, kind):
        arrays = [FrameArrays.from_model(m) for m in backgrounds]
        comb = combine_background(
            [a.data for a in arrays], err=[a.err for a in arrays],
            bad=[(a.dq & bad_bits) != 0 for a in arrays],
            nints_per_median=self.nints_per_median, sigma=self.sigma, maxiters=self.maxiters,
        )
        log.info(
            "subtract_background: %s: %d exposure(s), %d integration(s) -> %d chunk(s); median "
            "level %s; %d pixel(s) without background",
            kind, len(arrays), sum(a.shape[0] for a in arrays), comb.image.shape[0],
            np.round(np.nanmedian(comb.image, axis=(1, 2)), 4).tolist(),
            int((~comb.valid).sum()),
        )
        if self.save_combined_background:
            self._save_combined(comb, backgrounds[0], kind)
        return comb

    def _save_combined(self, comb, template, kind):
        out = datamodels.CubeModel(
            data=comb.image.astype(np.float32), err=comb.err.astype(np.float32),
            dq=np.where(comb.valid, 0, DO_NOT_USE).astype(np.uint32),
        )
        out.update(template)
        out.meta.filename = template.meta.filename
        path = self.make_output_path(basepath=template.meta.filename,
                                     suffix=f"{kind.lower()}_bkgcomb")
        out.save(path)
        log.info("subtract_background: saved combined %s background %s", kind, path)

    def _subtract(self, model, kind, comb, backgrounds, bad_bits):
        arrays = FrameArrays.from_model(model)
        nints = arrays.shape[0]
        chunk_index = assign_background_chunks(
            nints, [FrameArrays.from_model(b).shape[0] for b in backgrounds],
            nints_per_median=self.nints_per_median, mapping=self.chunk_mapping,
        )
        self._check_not_subtracted(model, kind, arrays, comb)
        scale = offset = None
        fit = None
        if self.scale:
            fit = self._fit_scale(model, arrays, comb, chunk_index, bad_bits)
            scale, offset = fit.scale, fit.offset
        sub = subtract_combined_background(
            arrays.data, arrays.err, comb.image, comb.err, chunk_index=chunk_index,
            scale=scale, offset=offset,
        )
        arrays.data, arrays.err = sub.data, sub.err
        if "var_rnoise" in arrays.var:
            arrays.var["var_rnoise"] = arrays.var["var_rnoise"] + sub.var_added
        arrays.dq = arrays.dq | np.where(sub.no_background, np.uint32(DO_NOT_USE), np.uint32(0))
        arrays.to_model(model)
        levels = np.nanmedian(comb.image, axis=(1, 2))[chunk_index]
        if scale is not None:
            levels = levels * scale + offset
        values = dict(
            background_kind=f"{kind}_BG",
            background_files=[b.meta.filename for b in backgrounds],
            nints_per_median=self.nints_per_median, chunk_index=chunk_index,
            median_level_subtracted=levels,
            n_no_background=int(sub.no_background.sum()),
        )
        if fit is not None:
            values.update(scale=fit.scale, scale_err=fit.scale_err, offset=fit.offset,
                          offset_err=fit.offset_err, scale_fit_npix=fit.npix)
        record(model, self.class_alias, **values)
        set_status(model, self.class_alias)
        log.info(
            "subtract_background: %s (%s): subtracted %s background from %d integration(s), "
            "median level %.4g%s; %d pixel(s) without background flagged DO_NOT_USE",
            model.meta.filename, kind, f"{kind}_BG", nints, float(np.median(levels)),
            "" if fit is None else f", scale {np.round(fit.scale, 4).tolist()}",
            int(sub.no_background.sum()),
        )

    @staticmethod
    def _check_not_subtracted(model, kind, arrays, comb):
        """Warn when the target's sky is far below the background's: already subtracted?

        A frame whose background was removed before (e.g. by another tool) would be pushed to
        minus the background level. The medians over the pixels valid in both are compared
        (the star covers a small part of a coronagraphic frame).
        """
        both = np.isfinite(arrays.data) & np.isfinite(comb.image[0])[None]
        if both.sum() < 100:
            return
        background = float(np.median(comb.image[0][both.any(axis=0)]))
        target = float(np.median(arrays.data[both]))
        if background > 0 and target < 0.25 * background:
            log.warning(
                "subtract_background: %s (%s): its sky level before subtraction (median %.4g) "
                "is far below the %s_BG level (%.4g): was its background already subtracted "
                "(by another tool)? Subtracting it again leaves about %.4g; skip "
                "subtract_background if so (in klipprep: --steps.subtract_background.skip=True)",
                model.meta.filename, kind, target, kind, background, target - background)

    def _fit_scale(self, model, arrays, comb, chunk_index, bad_bits):
        bad = (arrays.dq & bad_bits) != 0
        median = combine_background(arrays.data, bad=bad, sigma=None).image[0]
        transmission = transmission_map(model, arrays.shape[-2:], psfmask=self.psfmask)
        good = select_background_pixels(
            median, transmission=transmission, transmission_min=self.transmission_min,
            bad=bad.all(axis=0), background=comb.image[0],
        )
        fit = fit_background_scale(arrays.data, comb.image[chunk_index], good=good,
                                   sigma=self.sigma, maxiters=self.maxiters)
        failed = ~np.isfinite(fit.scale)
        if failed.any():
            log.warning("subtract_background: %s: scale fit failed for integration(s) %s; "
                        "scale 1, offset 0 used", model.meta.filename,
                        np.flatnonzero(failed).tolist())
            fit = fit._replace(scale=np.where(failed, 1.0, fit.scale),
                               offset=np.where(failed, 0.0, fit.offset))
        return fit
