"""Detect bad pixels several ways and repair them several ways, flagging every change in DQ.

With ``find=persistent`` the step first groups the exposures of its input by detector, subarray
and frame shape, gathers the evidence of every exposure of a group (science, references and
backgrounds alike) and finds the detector defects from all of it together
(`badpix_persistent.find_persistent`); then each exposure is detected further and repaired on its
own.  A single file is its own group (per-file evidence, with the PSF-shape test).
"""

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.badpix import (
    FIND_NAMES,
    KIND_NAMES,
    REPAIR_METHODS,
    exposure_evidence,
    find_and_repair,
    find_custom,
    find_dq,
    find_nonfinite,
    find_persistent,
)
from jwst_klipprep.base import (
    InputError,
    KlipPrepStep,
    ParameterError,
    for_each_member,
    members,
)
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.psf.builtin import FILTERS

__all__ = ["FixBadPixelsStep"]

log = logging.getLogger(__name__)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
FLUX_ESTIMATED = dqflags.pixel["FLUX_ESTIMATED"]
OUTLIER = dqflags.pixel["OUTLIER"]


class FixBadPixelsStep(KlipPrepStep):
    """Find bad pixels (DQ, association-wide persistent, temporal, spatial, custom); repair them."""

    class_alias = "fix_bad_pixels"

    spec = """
        find = force_list(default=list("dq", "persistent", "temporal"))  # Detection methods, in order: dq, persistent, temporal, spatial, custom
        fix = force_list(default=list("temporal", "interp"))  # Repair methods, in order: temporal, local, interp
        dq_flags = string(default="DO_NOT_USE")  # DQ flags that mark a pixel bad (find=dq): names or integer flag values, comma-separated; NON_SCIENCE pixels are left alone
        sigma = float(default=5.0, min=2.0, max=100.0)  # Detection threshold (noise sigma) for bright outliers
        neg_sigma = float(default=None, min=2.0, max=100.0)  # Threshold for dark outliers (default: sigma)
        min_nints = integer(default=3, min=3)  # find=temporal is skipped (with a log line) below this many integrations
        footprint = integer(default=3, min=3, max=9)  # Neighbourhood size (odd) of find=spatial and fix=local
        custom_mask = string(default=None)  # find=custom: FITS file, 2-D or 3-D, non-zero = bad (first image HDU, or DQ/SCI)
        custom_pixels = int_list(default=None)  # find=custom: y1,x1,y2,x2,... pixels (0-indexed) bad in every integration
        min_good = integer(default=3, min=1)  # Fewest good donors for a temporal or local repair
        cutoff = float(default=None, min=0.01, max=0.5)  # fix=interp band limit (cycles/px); default from the filter wavelength
        min_votes = integer(default=None, min=1)  # find=persistent: exposures of a group in which a pixel must stand out (default 1 of 1, 2 of 2-5, 3/8 of more)
        dilate = integer(default=0, min=0, max=5)  # Grow the bad pixels found by this many pixels (8-connected) before the repair
        flag_outliers = boolean(default=True)  # OR the OUTLIER flag into pixels found by persistent, temporal, spatial, custom or dilate
    """  # noqa: E501

    def check_parameters(self):
        """Check the method names before anything is opened (also run by the pipeline)."""
        self._find = [str(n).strip().lower() for n in self.find or [] if str(n).strip()]
        self._fix = [str(n).strip().lower() for n in self.fix or [] if str(n).strip()]
        valid_names = (("find", self._find, FIND_NAMES), ("fix", self._fix, tuple(REPAIR_METHODS)))
        for kind, names, valid in valid_names:
            unknown = [n for n in names if n not in valid]
            if unknown:
                raise ParameterError(f"fix_bad_pixels: unknown {kind} method(s) {unknown}; valid: "
                                 f"{', '.join(valid)}")
        if "custom" in self._find and not (self.custom_mask or self.custom_pixels):
            raise ParameterError("fix_bad_pixels: find=custom needs custom_mask or custom_pixels")
        if self.custom_pixels and len(self.custom_pixels) % 2:
            raise ParameterError("fix_bad_pixels: custom_pixels must be pairs y,x")
        if self.footprint % 2 == 0:
            raise ParameterError(f"fix_bad_pixels: footprint must be odd, got {self.footprint}")
        self._bad_bits = dq_bits(self.dq_flags)

    def process(self, step_input):
        """Check the parameters, find the association's persistent defects, repair each member."""
        self.check_parameters()
        models = self.open_input(step_input)
        group = list(members(models))
        self._defects = {}
        self.defect_maps = {}
        if "persistent" in self._find:
            self._find_persistent(group)
        # exposures in threads: each writes only its own model (sorts and filters release the GIL)
        for_each_member(self.process_model, models)
        return models

    def process_model(self, model):
        """Detect and repair the bad pixels of one model (the step's own copy)."""
        arrays = FrameArrays.from_model(model)
        data, err, dq = arrays.data, arrays.err, np.asarray(arrays.dq)
        nonsci = (dq & NON_SCIENCE) != 0
        bad = find_nonfinite(data, ignore=nonsci)
        masks = self._input_masks(data, dq)
        defects = self._defects.get(id(model))
        if defects is None and "persistent" in self._find:  # called on one model directly
            self._find_persistent([model])
            defects = self._defects[id(model)]
        if defects is not None:
            masks["persistent"] = defects.mask
        if "temporal" in self._find and data.shape[0] < self.min_nints:
            log.info("fix_bad_pixels: %s: find=temporal skipped (%d integration(s) < "
                     "min_nints %d)", model.meta.filename, data.shape[0], self.min_nints)
        sigmas = {"sigma": self.sigma, "neg_sigma": self.neg_sigma}
        res = find_and_repair(
            data, err=err, bad=bad, ignore=nonsci, find=self._find, fix=self._fix, masks=masks,
            dilate=self.dilate,
            find_options={"temporal": {**sigmas, "min_nints": self.min_nints},
                          "spatial": {**sigmas, "footprint": self.footprint}},
            fix_options={name: self._fix_options(name, model) for name in self._fix},
        )
        found = {"nonfinite": int(bad.sum()), **res.found_by}
        repaired_kind = self._repaired_by_kind(res, bad, defects)
        found_kind = {}
        if defects is not None:
            persistent = res.found_map == list(res.found_by).index("persistent") + 1
            for k, kind_name in KIND_NAMES.items():
                found_kind[f"persistent_{kind_name}"] = int(
                    (persistent & (defects.kind == k)[None]).sum())
        outliers = res.outliers if self.flag_outliers else np.zeros(data.shape, bool)
        out_err = res.err if res.err is not None else err
        self._write_back(arrays, res.data, out_err, dq, res.repaired, res.remaining, outliers,
                         err)
        arrays.to_model(model)
        n_repaired, n_left = int(res.repaired.sum()), int(res.remaining.sum())
        record(
            model, self.class_alias, find=self._find, fix=self._fix, found=found,
            found_kind=found_kind, repaired=res.repaired_by, repaired_kind=repaired_kind,
            n_repaired=n_repaired,
            n_unrepaired=n_left, n_detected_new=int(res.outliers.sum()), sigma=self.sigma,
            neg_sigma=self.neg_sigma, dilate=self.dilate,
            **({} if defects is None else {"persistent": defects.summary}),
        )
        set_status(model, self.class_alias)
        log.info(
            "fix_bad_pixels: %s: found %s; repaired %d pixel(s) (%s; flagged FLUX_ESTIMATED), %d "
            "left NaN and DO_NOT_USE",
            model.meta.filename, ", ".join(f"{k} {v}" for k, v in found.items()),
            n_repaired, ", ".join(f"{k} {v}" for k, v in repaired_kind.items()), n_left,
        )

    # ----------------------------------------------------------------------------------------

    def _input_masks(self, data, dq):
        masks = {}
        if "dq" in self._find:
            masks["dq"] = find_dq(dq, bad_bits=self._bad_bits, ignore_bits=NON_SCIENCE)
        if "custom" in self._find:
            masks["custom"] = self._custom(data.shape)
        return masks

    def _evidence(self, model):
        """One exposure's evidence for the association vote (`exposure_evidence`)."""
        arrays = FrameArrays.from_model(model)
        dq = np.asarray(arrays.dq)
        known = ~np.isfinite(arrays.data) | ((dq & NON_SCIENCE) != 0)
        for mask in self._input_masks(arrays.data, dq).values():
            known |= mask
        return exposure_evidence(arrays.data, err=arrays.err, bad=known)

    def _find_persistent(self, models):
        """Group the exposures by detector, subarray and shape; find each group's defects."""
        groups = {}
        for model in models:
            shape = np.shape(model.data)[-2:]
            key = (str(model.meta.instrument.name), str(model.meta.instrument.detector),
                   str(model.meta.subarray.name), tuple(int(n) for n in shape))
            groups.setdefault(key, []).append(model)
        for key, group in groups.items():
            evidence = for_each_member(self._evidence, group)
            scenes = [_scene(model) for model in group]
            min_votes = None
            if self.min_votes is not None:
                min_votes = min(int(self.min_votes), len(group))
            defects = find_persistent(
                evidence, scenes=scenes, sigma=self.sigma, neg_sigma=self.neg_sigma,
                min_votes=min_votes, lam_over_d=1.0 / self._cutoff(group[0]))
            n_scenes = len(set(scenes))
            counts = {name: int((defects.kind == k).sum()) for k, name in KIND_NAMES.items()}
            summary = {
                "group": "/".join(str(k) for k in key[:3]), "n_exposures": len(group),
                "n_scenes": n_scenes, "min_votes": defects.min_votes,
                "evidence": "association" if len(group) > 1 else "per-file",
                "n_pixels": int(defects.mask.sum()), "kinds": counts,
                "n_psf_like_rejected": defects.n_psf_like,
            }
            defects = _GroupDefects(defects.mask, defects.kind, summary)
            self.defect_maps[summary["group"] + f"/{key[3][0]}x{key[3][1]}"] = defects
            for model in group:
                self._defects[id(model)] = defects
            log.info(
                "fix_bad_pixels: %s: %d exposure(s), %d scene(s), %s evidence: %d detector "
                "defect pixel(s) (%s; >= %d vote(s)), %d PSF-like candidate(s) left alone",
                summary["group"], len(group), n_scenes, summary["evidence"],
                summary["n_pixels"], ", ".join(f"{k} {v}" for k, v in counts.items()),
                defects.summary["min_votes"], summary["n_psf_like_rejected"])

    @staticmethod
    def _repaired_by_kind(res, bad, defects):
        """Repaired pixels per kind: input NaN, each detection method, each defect kind."""
        out = {"nonfinite": int((res.repaired & bad).sum())}
        method = res.found_map
        for i, name in enumerate(res.found_by, start=1):
            if name == "persistent" and defects is not None:
                for k, kind_name in KIND_NAMES.items():
                    out[f"persistent_{kind_name}"] = int(
                        (res.repaired & (method == i) & (defects.kind == k)[None]).sum())
            else:
                out[name] = int((res.repaired & (method == i)).sum())
        return out

    def _custom(self, shape):
        mask = self._load_mask(shape) if self.custom_mask else None
        pixels = None
        if self.custom_pixels:
            values = list(self.custom_pixels)
            pixels = list(zip(values[::2], values[1::2], strict=True))
        return find_custom(shape, mask=mask, pixels=pixels)

    def _load_mask(self, shape):
        path = Path(self.custom_mask)
        if not path.exists():
            raise InputError(f"{path}: custom bad-pixel mask not found")
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.name in ("DQ", "SCI") and h.data is not None), None)
            hdu = hdu or next((h for h in hdul if getattr(h, "data", None) is not None), None)
            if hdu is None:
                raise InputError(f"{path}: no image in the custom mask file")
            mask = np.asarray(hdu.data) != 0
        if mask.shape not in (shape[-2:], shape):
            raise InputError(f"{path}: custom mask shape {mask.shape} does not match the frames "
                             f"{shape}")
        return mask

    def _fix_options(self, name, model):
        if name == "temporal":
            return {"min_good": self.min_good}
        if name == "local":
            return {"footprint": self.footprint, "min_good": self.min_good}
        return {"cutoff": self._cutoff(model)}

    def _cutoff(self, model):
        """Band limit in cycles per pixel: the parameter, else D/lambda of the filter.

        0.36 cycles/px at 4.4 um on NIRCam LW pixels (measured best on F444W), scaled by the
        wavelength and by the pixel scale of the detector (NIRCam SW, MIRI).
        """
        if self.cutoff is not None:
            return self.cutoff
        spec = FILTERS.get(str(model.meta.instrument.filter).upper())
        wavelength = spec.center_um if spec is not None else 4.4
        return min(0.5, 0.36 * 4.4 / wavelength * _pixel_scale(model) / _PIXEL_SCALE["LONG"])

    @staticmethod
    def _write_back(arrays, out, out_err, dq, repaired, remaining, detected, err_in):
        """Data, ERR, DQ and VAR_* of the repaired pixels only (sparse: few pixels change)."""
        arrays.data = out
        idx = np.nonzero(repaired)
        new_err = np.array(err_in, dtype=np.float32, copy=True)
        new_err[idx] = out_err[idx]
        dq = np.array(dq, dtype=np.uint32, copy=True)
        dq[detected] |= np.uint32(OUTLIER)
        dq[idx] = (dq[idx] | np.uint32(FLUX_ESTIMATED)) & ~np.uint32(DO_NOT_USE)
        dq[remaining] |= np.uint32(DO_NOT_USE)
        arrays.dq = dq
        # VAR_* of repaired pixels: keep their proportions, scaled to the new ERR^2
        if arrays.var:
            err2 = new_err[idx].astype(np.float64) ** 2
            total = sum(v[idx].astype(np.float64) for v in arrays.var.values())
            with np.errstate(invalid="ignore", divide="ignore"):
                factor = np.where(total > 0, err2 / total, np.nan)
            for key, var in arrays.var.items():
                fallback = err2 if key == "var_rnoise" else 0.0
                var = np.array(var, dtype=np.float32, copy=True)
                var[idx] = np.where(np.isfinite(factor), var[idx] * factor, fallback)
                arrays.var[key] = var
        arrays.err = new_err


class _GroupDefects(NamedTuple):
    mask: np.ndarray
    kind: np.ndarray
    summary: dict


_PIXEL_SCALE = {"LONG": 0.063, "SHORT": 0.031, "MIRI": 0.11}  # arcsec per pixel


def _pixel_scale(model):
    """Nominal pixel scale of the model's detector (NIRCam LW when unknown)."""
    if str(model.meta.instrument.name).upper() == "MIRI":
        return _PIXEL_SCALE["MIRI"]
    detector = str(model.meta.instrument.detector or "").upper()
    channel = str(model.meta.instrument.channel or "").upper()
    if channel == "SHORT" or (detector.startswith("NRC") and not detector.endswith("LONG")
                              and detector not in ("", "NONE")):
        return _PIXEL_SCALE["SHORT"]
    return _PIXEL_SCALE["LONG"]


def _scene(model):
    """What the sky looks like on the detector: target and roll (rounded)."""
    target = model.meta.target
    name = target.catalog_name or target.proposer_name
    roll = model.meta.wcsinfo.roll_ref
    if roll is None:
        roll = model.meta.aperture.position_angle
    coords = tuple(None if v is None else round(float(v), 3) for v in (target.ra, target.dec))
    return (str(name), *coords, None if roll is None else round(float(roll)))
