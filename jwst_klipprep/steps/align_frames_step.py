"""Align every frame (second roll, references) to the first science integration."""

import logging

import numpy as np

from jwst_klipprep.algorithms.background import combine_background
from jwst_klipprep.algorithms.registration import measure_shift
from jwst_klipprep.base import InputError, KlipPrepStep, ParameterError, for_each_member, members
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.geometry import apply_shift, pending_shift, set_pending_shift
from jwst_klipprep.keywords import get_center_yx, set_fits_keyword
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.psf.builtin import default_pixel_scale
from jwst_klipprep.roles import classify_members
from jwst_klipprep.transmission import transmission_map
from jwst_klipprep.validation import check_same_setup, dead_integrations

__all__ = ["AlignFramesStep"]

log = logging.getLogger(__name__)


class AlignFramesStep(KlipPrepStep):
    """Measure and apply the sub-pixel shift of every integration onto the first science one."""

    class_alias = "align_frames"

    spec = """
        reference = option("first_integration", "median", default="first_integration")  # Reference: integration 0 of the first science exposure, or the median of that exposure
        use_dither_offsets = boolean(default=True)  # Start the fit from the commanded XOFFSET/YOFFSET differences
        weighting = option("transmission", "transmission2", "none", default="transmission")  # Pixel weights: coronagraph transmission, its square, or none
        psfmask = string(default=None)  # Transmission map file (default: analytic mask model)
        fit_radius = float(default=64.0, min=4.0)  # Fit only pixels within this radius (px) of the mask centre; None = whole frame
        fit_offset = boolean(default=True)  # Fit an additive offset per integration (residual background differences)
        robust = option("huber", "tukey", "none", default="huber")  # Outlier-robust re-weighting of the fit
        robust_threshold = float(default=6.0, min=1.0)  # Threshold of the robust weights, in units of the residuals' MAD scale
        smooth_err = integer(default=5, min=0)  # Weights from the local mean of ERR^2 over this box (odd px; 0: per-pixel ERR)
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of pixels not used
        method = option("sinc", "lanczos", "fourier", default="sinc")  # Interpolation kernel of the shift
        use_recenter = boolean(default=False)  # Place each exposure by the star position recenter_frames measured (the alignment fit then only corrects integration-to-integration jitter)
        apply = boolean(default=True)  # Resample the frames (False: record the shifts only; the klipprep pipeline composes them)
    """  # noqa: E501

    def process(self, step_input):
        """Align all science and reference exposures of an ASN or list to one reference."""
        if self.smooth_err and self.smooth_err % 2 == 0:
            raise ParameterError(f"align_frames: smooth_err must be odd (or 0), got "
                                 f"{self.smooth_err}")
        models = self.open_input(step_input)
        group = members(models)
        roles = classify_members(group)
        targets = [(m, r.kind) for m, r in zip(group, roles, strict=True)
                   if r.kind in ("SCI", "REF")]
        science = [m for m, kind in targets if kind == "SCI"]
        if not science:
            raise InputError(f"{', '.join(str(m.meta.filename) for m in group)}: align_frames "
                             "needs at least one science "
                             "exposure (ASN exptype 'science')")
        bad_bits = dq_bits(self.bad_flags)
        ref_model = science[0]
        check_same_setup([m for m, _ in targets], ref_model, step="align_frames",
                         keys=("instrument", "filter", "coronagraph"))
        ref_arrays = FrameArrays.from_model(ref_model)
        reference, reference_err, reference_bad = self._reference(ref_arrays, bad_bits)
        shape = ref_arrays.shape[-2:]
        weights = self._weights(ref_model, shape)
        box = self._box(ref_model, shape)
        reference, reference_err, reference_bad = (
            a[box] for a in (reference, reference_err, reference_bad))
        # the fit is invariant to a common flux unit; work near unity so that absurd but finite
        # units (SCI x 1e30) do not overflow the normal equations
        unit = _flux_unit(reference, reference_bad, ref_model.meta.filename, self.fit_radius)
        reference, reference_err = reference / unit, reference_err / unit
        weights = None if weights is None else weights[box]
        ref_pending = pending_shift(ref_model)
        ref_pending = np.zeros(2) if ref_pending is None else ref_pending[0]
        ref_star = np.add(get_center_yx(ref_model, "star"), ref_pending)
        scale = default_pixel_scale(ref_model.meta.instrument.name,
                                    filter=ref_model.meta.instrument.filter)
        kinds = {id(m): kind for m, kind in targets}

        def align(model):
            kind = kinds[id(model)]
            arrays = FrameArrays.from_model(model)
            if arrays.shape[-2:] != shape:
                raise InputError(f"{model.meta.filename}: frame shape {arrays.shape[-2:]} differs "
                                 f"from the reference {ref_model.meta.filename} ({shape})")
            guess = self._guess(model, ref_model, scale)
            cut = (slice(None), *box)
            try:
                fit = measure_shift(
                    reference, arrays.data[cut] / unit, weights=weights,
                    bad=(arrays.dq[cut] & bad_bits) != 0, err=arrays.err[cut] / unit,
                    reference_bad=reference_bad, reference_err=reference_err,
                    guess_yx=guess, robust=None if self.robust == "none" else self.robust,
                    robust_threshold=self.robust_threshold,
                    fit_offset=self.fit_offset,
                    method="sinc" if self.method == "fourier" else self.method,
                    weights_frame="reference", smooth_err=self.smooth_err or None,
                )
            except ValueError as exc:  # e.g. "reference has no valid pixel"
                raise InputError(f"{model.meta.filename} against the reference "
                                 f"{ref_model.meta.filename}: {exc} (within fit_radius="
                                 f"{self.fit_radius} px of the mask centre)") from None
            failed = ~np.all(np.isfinite(fit.shift_yx), axis=1)
            if failed.all():
                raise InputError(f"{model.meta.filename}: alignment fit failed for every "
                                 "integration (no usable overlap with the reference)")
            measured = np.where(failed[:, None], np.nanmedian(fit.shift_yx, axis=0), fit.shift_yx)
            applied = ref_pending - measured
            own = pending_shift(model)
            if self.use_recenter and own is not None:
                # exposure placed by its measured star position, jitter from the fit
                applied = own - (measured - np.median(measured, axis=0))
            self._record(model, kind, fit, measured, applied, guess, failed, ref_model)
            if self.apply:
                lost = apply_shift(model, applied, bad_bits=bad_bits, method=self.method,
                                   star_yx=tuple(ref_star))
            else:
                set_pending_shift(model, applied, star_yx=ref_star)
                lost = 0
            log.info(
                "align_frames: %s (%s): shift to the reference (dy, dx) median (%+.4f, %+.4f) "
                "+- (%.4f, %.4f) px, flux scale %.4f, %s%s",
                model.meta.filename, kind, *np.median(measured, axis=0),
                *np.nanmedian(fit.shift_err_yx, axis=0), float(np.nanmedian(fit.scale)),
                "applied" if self.apply else "recorded for the pipeline",
                f"; {int((~fit.converged).sum())} integration(s) not converged (kept), "
                f"{int(failed.sum())} failed (median used)" if (~fit.converged).any() else "",
            )
            if lost:
                log.info("align_frames: %s: %d pixel(s) lost their support (NaN, DO_NOT_USE)",
                         model.meta.filename, lost)

        # exposures in threads: each fit and resampling touches only its own model
        for_each_member(align, [m for m, _ in targets])
        for model, role in zip(group, roles, strict=True):
            if role.kind not in ("SCI", "REF"):
                set_status(model, self.class_alias, "SKIPPED")
        return models

    def _reference(self, arrays, bad_bits):
        bad = (arrays.dq & bad_bits) != 0
        if self.reference == "first_integration":
            live = np.flatnonzero(~dead_integrations(arrays.data, bad))
            i = int(live[0]) if live.size else 0  # check_model refused all-dead exposures
            return arrays.data[i], arrays.err[i], bad[i]
        # the NaN/DQ-aware median of the exposure and the error of a median
        comb = combine_background(arrays.data, err=arrays.err, bad=bad, sigma=None)
        return comb.image[0], comb.err[0], ~comb.valid[0]

    def _weights(self, model, shape):
        weights = None
        if self.weighting != "none":
            weights = transmission_map(model, shape, psfmask=self.psfmask)
            if weights is not None and self.weighting == "transmission2":
                weights = weights**2
        if self.fit_radius:
            cy, cx = get_center_yx(model, "mask")
            yy, xx = np.mgrid[: shape[0], : shape[1]]
            inside = np.hypot(yy - cy, xx - cx) <= self.fit_radius
            weights = inside.astype(float) if weights is None else weights * inside
        return weights

    def _box(self, model, shape):
        """Slices of the square that holds the fit circle (the whole frame without a radius)."""
        if not self.fit_radius:
            return (slice(None), slice(None))
        cy, cx = get_center_yx(model, "mask")
        r = int(np.ceil(self.fit_radius)) + 1
        return tuple(slice(max(0, int(round(c)) - r), min(n, int(round(c)) + r + 1))
                     for c, n in ((cy, shape[0]), (cx, shape[1])))

    def _guess(self, model, ref_model, scale):
        if not self.use_dither_offsets:
            return None
        offsets = []
        for m in (model, ref_model):
            x, y = m.meta.dither.x_offset, m.meta.dither.y_offset
            if x is None or y is None:
                return None
            offsets.append((float(y), float(x)))
        return ((offsets[0][0] - offsets[1][0]) / scale, (offsets[0][1] - offsets[1][1]) / scale)

    def _record(self, model, kind, fit, measured, applied, guess, failed, ref_model):
        record(
            model, self.class_alias, role=kind, reference=ref_model.meta.filename,
            reference_mode=self.reference, guess_yx=guess, shift_yx=measured,
            shift_err_yx=fit.shift_err_yx, scale=fit.scale, scale_err=fit.scale_err,
            chi2_red=fit.chi2_red, converged=fit.converged, failed=failed,
            applied_shift_yx=applied,
            applied=bool(self.apply),
        )
        # header keywords: medians over the integrations whose fit succeeded (never NaN)
        ok = ~np.asarray(failed, bool)
        med = np.median(applied, axis=0)
        ok = ok & np.all(np.isfinite(fit.shift_err_yx), axis=1)
        err = np.median(np.asarray(fit.shift_err_yx, float)[ok], axis=0) if ok.any() else (
            np.nan, np.nan)
        for key, value, comment in (
            ("ALGSHFTX", med[1], "align_frames applied x shift (px)"),
            ("ALGSHFTY", med[0], "align_frames applied y shift (px)"),
            ("ALGERRX", err[1], "align_frames x shift error (px)"),
            ("ALGERRY", err[0], "align_frames y shift error (px)"),
        ):
            if np.isfinite(value):  # never a NaN in a header
                set_fits_keyword(model, key, float(value), comment)
        set_status(model, self.class_alias)


def _flux_unit(reference, bad, name, fit_radius):
    """A robust flux scale of the reference (its largest valid absolute value), for rescaling."""
    values = np.abs(reference[~bad & np.isfinite(reference)])
    if values.size == 0:
        raise InputError(f"{name}: the alignment reference has no valid pixel inside the fit "
                         f"region (fit_radius={fit_radius} px around the mask centre: all NaN or "
                         "flagged)")
    unit = float(values.max())
    if not np.isfinite(unit) or unit == 0.0:
        return 1.0
    return unit
