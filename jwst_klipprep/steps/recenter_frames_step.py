"""Find the star behind the coronagraph mask with a model PSF and shift it to the array centre."""

import logging

import numpy as np
from astropy.io.fits import open as fits_open

from jwst_klipprep import __version__
from jwst_klipprep.algorithms.background_exposures import combine_background
from jwst_klipprep.algorithms.centering import extract_stamp, measure_star_offset
from jwst_klipprep.algorithms.registration import measure_shift
from jwst_klipprep.base import InputError, KlipPrepStep, ParameterError, members
from jwst_klipprep.datamodel_arrays import FrameArrays, dq_bits
from jwst_klipprep.geometry import apply_shift, array_center_yx, set_pending_shift
from jwst_klipprep.keywords import get_center_yx, set_center_yx, set_fits_keyword
from jwst_klipprep.provenance import record, set_status
from jwst_klipprep.psf import builtin
from jwst_klipprep.psf.models import (
    StpsfOptions,
    resolve_backend,
    si_wfe_available,
    stpsf_data_path,
    stpsf_version,
    systematic_floor_mas,
    unocculted_stpsf_psf,
)
from jwst_klipprep.psf.opd import OpdError, fetch_opd_for_date, pupil_file, read_opd
from jwst_klipprep.psf.stamps import make_model_callable
from jwst_klipprep.psf.visit import (
    MODE_SETS,
    VISIT_PRIORS_NM,
    fit_visit,
    mode_priors,
    stpsf_mode_factory,
    visit_floor_mas,
    wavefront_modes,
)
from jwst_klipprep.transmission import transmission_map

__all__ = ["RecenterFramesStep"]

log = logging.getLogger(__name__)

#: Linearisations of the visit fit at most (Levenberg-Marquardt, which stops earlier when chi2
#: stops decreasing; benchmarks/bench_recenter.py --visit-iterations)
_VISIT_ITERATIONS = 8
#: stpsf pupil grid of a visit fit without an OPD file when pupil_npix is not given (the 61-mode
#: fit makes ~700 propagations; 256 is ~6x faster than 1024 and is what the benchmark measured)
_VISIT_NPIX = 256
_MARGIN = 12  # stamp pixels beyond fit_radius, so the interpolation kernel has model support

#: What the recorded star position means (docs/conventions.rst, "Star position").
STAR_CONVENTION = {
    "stpsf": "stpsf source position: mask centre + the source_offset at which stpsf (instrument "
             "wavefront {si}) renders the data; stpsf array centre = recorded mask centre",
    "builtin": "apparent image centre of the built-in (no instrument wavefront) model",
    "file": "position of the user PSF image's array centre, moved with the star",
}


class RecenterFramesStep(KlipPrepStep):
    """Measure the star's position behind the mask with a model PSF; move it to the array centre."""

    class_alias = "recenter_frames"

    spec = """
        psf_model = option("auto", "stpsf", "builtin", "file", default="auto")  # PSF model: stpsf when STPSF_PATH holds valid data (auto), the data-free built-in optics, or a FITS file
        psf_file = string(default=None)  # psf_model=file: FITS image of the occulted PSF with the mask centre at the array centre; PIXELSCL (arcsec) and optional OVERSAMP keywords
        fit_radius = float(default=20.0, min=4.0, max=100.0)  # Fit pixels within this radius (px) of the mask centre
        iterations = integer(default=2, min=0, max=10)  # Model re-evaluations at the fitted offset (0 = plain fit to the centred model)
        weighting = option("none", "transmission", "transmission2", default="none")  # Extra pixel weights on top of 1/ERR^2
        psfmask = string(default=None)  # Transmission map file for the weights (default: analytic mask model)
        nlambda = integer(default=3, min=1, max=21)  # Wavelengths of the optics model
        oversample = integer(default=2, min=1, max=8)  # Detector oversampling of the optics model
        bad_flags = string(default="DO_NOT_USE")  # DQ flags of pixels not used
        method = option("sinc", "lanczos", "fourier", default="sinc")  # Interpolation kernel of the shift
        apply = boolean(default=True)  # Resample the frames (False: record the shift only; the klipprep pipeline composes it)
        opd = string(default=None)  # stpsf: telescope wavefront (OPD) file: 2-D FITS in metres on the pupil grid, an OPD cube (with opd_slice), or a MAST wavefront-sensing OPD file; 'auto' = the measured OPD nearest each exposure's date from MAST (network)
        opd_slice = integer(default=None, min=0)  # Slice of an OPD cube
        si_wfe = boolean(default=True)  # stpsf: include the instrument wavefront (when the stpsf data have it); defines the star position convention
        systematic_floor = float(default=None, min=0.0, max=1000.0)  # mas per axis (1 sigma) added in quadrature to the star uncertainty for model mismatch; default: the floor measured for the model configuration (stpsf with OPD 6, with OPD and fit_wavefront 3 low_order / 2 segments, without OPD 30, without OPD and fit_wavefront=segments_focus 7 / segments 10, builtin/file 30)
        pupil_npix = integer(default=None, min=64, max=4096)  # stpsf pupil grid (jwst_pupil_RevW_npix<N> must exist; 256 is ~6x faster); default: the OPD file's grid, else 256 with fit_wavefront, else 1024
        per_integration = boolean(default=False)  # Fit every integration and combine the offsets (False: one fit on the exposure's sigma-clipped integration median)
        fit_wavefront = option("none", "low_order", "segments", "segments_focus", default="none")  # stpsf, several exposures of a visit: fit the telescope wavefront they share jointly with their star offsets; low_order = global focus, astigmatism, coma, trefoil (the drift since an OPD file: needs --opd); segments = those + piston, tip and tilt of each of the 18 segments; segments_focus = also each segment's focus (both with or without an OPD; slower)
        wavefront_prior_nm = float(default=None, min=0.1, max=1000.0)  # fit_wavefront: rms of each global mode (Gaussian prior, nm): the drift since the OPD (default 15) or, without an OPD, the wavefront itself (default 12)
        segment_prior_nm = float(default=None, min=0.1, max=1000.0)  # fit_wavefront=segments or segments_focus: rms of each segment mode (piston, tip, tilt, focus; nm; default 1.5 with an OPD, 6 without)
    """  # noqa: E501

    def process(self, step_input):
        """Resolve the PSF model and its optics once, then centre each member."""
        if self.segment_prior_nm is not None and not self.fit_wavefront.startswith("segments"):
            raise ParameterError(
                f"recenter_frames: segment_prior_nm applies to fit_wavefront=segments or "
                f"segments_focus, not "
                f"{self.fit_wavefront}")
        if self.psf_model == "file" and not self.psf_file:
            raise ParameterError("recenter_frames: psf_model=file needs psf_file "
                                 "(--psf_file=<FITS file>)")
        self._backend = resolve_backend(self.psf_model, allow_file=True)
        self._opd_specs = {}
        self._options = None
        if self.opd and self._backend != "stpsf":
            raise InputError(
                f"recenter_frames: opd={self.opd!r} needs the stpsf model (psf_model=stpsf, or "
                f"auto with a valid $STPSF_PATH); the {self._backend} model has no wavefront input"
            )
        if self._backend == "stpsf":
            try:
                opd = None
                if self.opd and str(self.opd).lower() != "auto":
                    opd = read_opd(self.opd, npix=self.pupil_npix, slice=self.opd_slice)
                npix = opd.npix if opd is not None else int(
                    self.pupil_npix or (_VISIT_NPIX if self.fit_wavefront != "none" else 1024))
                pupil_file(stpsf_data_path(), npix)
            except OpdError as exc:
                raise InputError(f"recenter_frames: {exc}") from None
            si_wfe = bool(self.si_wfe) and si_wfe_available()
            if self.si_wfe and not si_wfe:
                log.warning("recenter_frames: the stpsf data have no instrument wavefront tables "
                            "(si_zernikes_coron_wfe.fits): modelled without it")
            self._options = StpsfOptions(opd=opd, si_wfe=si_wfe, pupil_npix=npix)
        if self._backend == "stpsf":
            self._version, self._fidelity = stpsf_version(), ""
        elif self._backend == "file":
            self._version, self._fidelity = f"file {self.psf_file}", ""
        else:
            self._version = f"jwst_klipprep {__version__} builtin"
            self._fidelity = builtin.FIDELITY_NOTE
        if self._fidelity:
            log.warning("recenter_frames: PSF model %s: %s", self._backend, self._fidelity)
        if self.fit_wavefront == "none":
            return super().process(step_input)
        self._check_wavefront_parameters()
        models = self.open_input(step_input)
        measured = [(model, self._measure(model)) for model in members(models)]
        fits = self._fit_wavefront([(m, r) for m, r in measured if r is not None])
        for model, result in measured:
            if result is not None:
                self._finish(model, result, fits.get(id(model)))
        return models

    def _check_wavefront_parameters(self):
        opd_given = bool(self.opd) and str(self.opd).lower() != "auto"
        if self._backend != "stpsf" or (str(self.opd or "").lower() == "auto"):
            raise ParameterError(
                f"recenter_frames: fit_wavefront={self.fit_wavefront} needs the stpsf model "
                "(psf_model=stpsf, or auto with a valid $STPSF_PATH) and one telescope wavefront "
                "for the visit: an OPD file (--opd=FILE) or none, not opd=auto")
        if self.fit_wavefront == "low_order" and not opd_given:
            raise ParameterError(
                "recenter_frames: fit_wavefront=low_order fits the drift of the telescope "
                "wavefront since a measured OPD: it needs --opd=FILE. Without an OPD the 7 "
                "global modes were not better than the per-exposure fit in the benchmark; use "
                "fit_wavefront=segments_focus (docs/steps/recenter_frames.rst)")
        self._visit_opd = opd_given
        try:  # before the fit: a configuration without a measured floor is refused up front
            visit_floor_mas(self.fit_wavefront, opd_given=opd_given)
        except ValueError as exc:
            raise ParameterError(f"recenter_frames: {exc}") from None
        default_global, default_segment = VISIT_PRIORS_NM[opd_given]
        self._visit_prior = (
            default_global if self.wavefront_prior_nm is None else float(self.wavefront_prior_nm),
            default_segment if self.segment_prior_nm is None else float(self.segment_prior_nm))

    def _fit_wavefront(self, measured):
        """Visit fit of the telescope wavefront (`jwst_klipprep.psf.visit.fit_visit`) over the
        exposures of each filter and mask, started from their per-exposure fits.

        Returns {id(model): dict(offset_yx, offset_err_yx, record)}.
        """
        groups = {}
        for model, result in measured:
            inst = model.meta.instrument
            key = (inst.filter, inst.coronagraph, result["median"][0].shape)
            groups.setdefault(key, []).append((model, result))
        out = {}
        names = MODE_SETS[self.fit_wavefront]
        prior = mode_priors(names, global_nm=self._visit_prior[0],
                            segment_nm=self._visit_prior[1])
        for (filt, coronagraph, shape), group in groups.items():
            files = [m.meta.filename for m, _ in group]
            if len(group) < 2:
                raise InputError(
                    f"{files[0]}: fit_wavefront={self.fit_wavefront} needs at least 2 exposures "
                    f"of {filt} / {coronagraph} (an association of the visit's science and "
                    "reference exposures); this one is alone")
            options = group[0][1]["options"]
            try:
                with fits_open(pupil_file(stpsf_data_path(), options.pupil_npix)) as hdul:
                    pupil = np.asarray(hdul[0].data, float)
                segments = None
                if self.fit_wavefront.startswith("segments"):
                    with fits_open(pupil_file(stpsf_data_path(), options.pupil_npix,
                                              "segments")) as hdul:
                        segments = np.asarray(hdul[0].data, int)
                modes = wavefront_modes(pupil, self.fit_wavefront, segments=segments)
            except (OpdError, ValueError) as exc:
                raise InputError(f"recenter_frames: fit_wavefront={self.fit_wavefront}: "
                                 f"{exc}") from None
            scale = builtin.default_pixel_scale("NIRCAM", filter=filt)
            canonical = builtin.resolve_coronagraph("NIRCAM", coronagraph).name
            centers = np.array([r["center"] for _, r in group], float)
            factory = stpsf_mode_factory(
                instrument="NIRCAM", filter_name=filt, canonical=canonical, shape=shape[-2:],
                center_yx=centers, pixel_scale=scale, nlambda=self.nlambda,
                oversample=self.oversample, options=options, modes=modes)
            data = np.concatenate([r["median"][0] for _, r in group])
            err = np.concatenate([r["median"][1] for _, r in group])
            bad = np.concatenate([r["median"][2] for _, r in group]).astype(bool)
            start = np.array([r["fit"].combined_yx for _, r in group], float)
            try:
                vis = fit_visit(data, factory, n_modes=len(modes), err=err, bad=bad,
                                offsets0=start, prior=prior,
                                iterations=_VISIT_ITERATIONS,
                                fit_radius=self.fit_radius,
                                center_yx=centers)
            except ValueError as exc:
                raise InputError(f"recenter_frames: the visit fit of {files} failed: "
                                 f"{exc}") from None
            record_ = {
                "modes": list(names), "mode_set": self.fit_wavefront,
                "coefficients_nm": vis.coefficients, "coefficient_err_nm": vis.coefficient_err,
                "prior_nm": float(self._visit_prior[0]),
                "segment_prior_nm": (float(self._visit_prior[1])
                                     if self.fit_wavefront.startswith("segments") else None),
                "opd_given": bool(self._visit_opd), "chi2_red": vis.chi2_red,
                "model_evaluations": int(vis.nmodel),
                "propagations": int(factory.propagations), "iterations": int(vis.iterations),
                "converged": bool(vis.converged), "members": files,
            }
            for e, (model, result) in enumerate(group):
                out[id(model)] = {
                    "offset_yx": vis.offset_yx[e], "offset_err_yx": vis.offset_err_yx[e],
                    "record": dict(record_, per_exposure_offset_yx=start[e],
                                   per_exposure_offset_err_yx=result["fit"].combined_err_yx)}
            log.info("recenter_frames: visit fit of the telescope wavefront (%s, %d modes, "
                     "prior %g nm%s, %s) over %d exposures of %s: global modes %s nm, chi2_red "
                     "%.1f, %d propagations, %d linearisations%s", self.fit_wavefront,
                     len(names), self._visit_prior[0],
                     f" global / {self._visit_prior[1]:g} nm segment"
                     if self.fit_wavefront.startswith("segments") else "",
                     "drift since the OPD" if self._visit_opd else "no OPD: the whole wavefront",
                     len(group), filt, np.round(vis.coefficients[:7], 1).tolist(), vis.chi2_red,
                     factory.propagations, vis.iterations,
                     "" if vis.converged else " (not converged)")
        return out

    def process_model(self, model):
        """Centre one exposure (the step's own copy)."""
        result = self._measure(model)
        if result is not None:
            self._finish(model, result)

    def _measure(self, model):
        """The per-exposure fit of one exposure (None when the exposure is skipped)."""
        name = model.meta.filename
        if model.meta.instrument.name != "NIRCAM":
            set_status(model, self.class_alias, "SKIPPED")
            log.info("recenter_frames: %s: %s data: no shift (the built-in 4QPM model is not "
                     "validated for centring); skipped", name, model.meta.instrument.name)
            return None
        if model.meta.observation.bkgdtarg or model.meta.asn.exptype == "background":
            set_status(model, self.class_alias, "SKIPPED")
            log.info("recenter_frames: %s: background exposure, no star: skipped", name)
            return None
        if self._backend != "file" and _is_bar_mask(model.meta.instrument.coronagraph):
            set_status(model, self.class_alias, "SKIPPED")
            log.warning("recenter_frames: %s: bar mask %s: the %s PSF model has no bar occulter, "
                        "so the star is not measured and the frame not shifted (the star stays "
                        "at the mask centre, update_nircam_centers); psf_model=file with a PSF of "
                        "this mask and filter centres it", name, model.meta.instrument.coronagraph,
                        self._backend)
            return None
        arrays = FrameArrays.from_model(model)
        mask_yx = get_center_yx(model, "mask")
        half = int(np.ceil(self.fit_radius)) + _MARGIN
        bad = (arrays.dq & dq_bits(self.bad_flags)) != 0
        data, origin, center = extract_stamp(arrays.data, mask_yx, half)
        err, _, _ = extract_stamp(arrays.err, mask_yx, half)
        bad_stamp, _, _ = extract_stamp(bad, mask_yx, half, fill=True)
        median = None
        if not self.per_integration or self.fit_wavefront != "none":
            median = _median_stamp(data, err, bad_stamp)
        if not self.per_integration:
            data, err, bad_stamp = median
        weights = self._weights(model, arrays.shape[-2:], mask_yx, half)
        options = self._model_options(model)
        psf = self._model(model, data.shape[-2:], center, options)
        try:
            fit = measure_star_offset(
                data, psf, err=err, bad=bad_stamp.astype(bool), weights=weights,
                iterations=self.iterations, center_yx=tuple(center),
                fit_radius=self.fit_radius,
            )
        except ValueError as exc:
            raise ValueError(f"{name}: recenter_frames could not fit the star: {exc}") from None
        self._check_fit(name, fit)
        return dict(fit=fit, median=median, center=center, options=options, mask_yx=mask_yx,
                    shape=arrays.shape)

    def _finish(self, model, measured, visit=None):
        """Record the star position of one exposure and shift it (per-exposure fit, or the
        visit fit's offset, its uncertainty and the fitted wavefront when ``visit`` is given)."""
        name = model.meta.filename
        fit, options, mask_yx = measured["fit"], measured["options"], measured["mask_yx"]
        arrays_shape = measured["shape"]
        scale = builtin.default_pixel_scale("NIRCAM", filter=model.meta.instrument.filter)
        floor_mas, star_err = self._uncertainty(fit, options, scale, visit=visit)
        offset_yx = fit.combined_yx if visit is None else visit["offset_yx"]
        stat_err = fit.combined_err_yx if visit is None else visit["offset_err_yx"]
        star_yx = np.add(mask_yx, offset_yx)
        target = array_center_yx(arrays_shape)
        shift = np.subtract(target, star_yx)
        set_center_yx(model, "star", tuple(star_yx))
        if self.apply:
            lost = apply_shift(model, shift, bad_bits=dq_bits(self.bad_flags),
                               method=self.method, star_yx=target)
        else:
            set_pending_shift(model, np.tile(shift, (arrays_shape[0], 1)), star_yx=target)
            lost = 0
        record(
            model, self.class_alias, psf_model=self._backend, psf_model_version=self._version,
            fidelity_warning=self._fidelity, mask_center_yx=list(mask_yx),
            star_offset_yx=offset_yx, star_offset_err_yx=star_err,
            star_offset_stat_err_yx=stat_err, systematic_floor_mas=floor_mas,
            per_integration=bool(self.per_integration),
            fitted_frames="integrations" if self.per_integration else "integration median",
            **({"star_offset_per_integration_yx": fit.offset_yx,
                "star_offset_err_per_integration_yx": fit.offset_err_yx}
               if self.per_integration else {}),
            scale=fit.scale,
            chi2_red=fit.chi2_red, used=fit.used, model_evaluations=int(fit.nmodel),
            converged=bool(fit.converged), star_center_yx=list(star_yx),
            target_center_yx=list(target), applied_shift_yx=np.tile(shift, (arrays_shape[0], 1)),
            applied=bool(self.apply), lost_pixels=lost,
            opd=None if options is None or options.opd is None else options.opd.record(),
            si_wfe=None if options is None else bool(options.si_wfe),
            pupil_npix=None if options is None else int(options.pupil_npix),
            star_position_convention=STAR_CONVENTION[self._backend].format(
                si="on" if options is not None and options.si_wfe else "off"),
            si_image_shift_yx=self._si_image_shift(model, options),
            wavefront_fit=None if visit is None else visit["record"],
        )
        set_fits_keyword(model, "STAROFFX", float(offset_yx[1]),
                         "recenter_frames star - mask centre x (px)")
        set_fits_keyword(model, "STAROFFY", float(offset_yx[0]),
                         "recenter_frames star - mask centre y (px)")
        set_fits_keyword(model, "STOFFERR", float(np.max(star_err)),
                         "recenter_frames offset uncertainty incl. floor (px)")
        set_fits_keyword(model, "PSFMODEL", str(self._backend), "recenter_frames PSF model")
        if options is not None:
            set_fits_keyword(model, "PSFSIWFE", bool(options.si_wfe),
                             "recenter_frames model has the instrument wavefront")
        if options is not None and options.opd is not None:
            set_fits_keyword(model, "PSFOPD", options.opd.record()["file"][:60],
                             "recenter_frames telescope OPD file")
            set_fits_keyword(model, "PSFOPDDT", options.opd.date, "date of that OPD")
        set_status(model, self.class_alias)
        log.info(
            "recenter_frames: %s: star - mask centre (dy, dx) = (%+.4f, %+.4f) +- (%.4f, %.4f) px"
            " = (%+.1f, %+.1f) mas (statistical %.2f, systematic floor %.1f mas per axis) "
            "[%s model%s%s]; shift to the array centre (%+.3f, %+.3f) px %s",
            name, *offset_yx, *star_err, *(np.multiply(offset_yx, 1000 * scale)),
            float(np.max(stat_err)) * 1000 * scale, floor_mas,
            self._backend, _optics_note(options),
            "" if visit is None else
            f", visit fit of the telescope wavefront ({self.fit_wavefront})",
            *shift,
            "applied" if self.apply else "recorded for the pipeline",
        )

    def _uncertainty(self, fit, options, scale, visit=None):
        """Systematic floor (mas per axis) and the total star uncertainty (px, (dy, dx)).

        The statistical error (ERR-weighted, Birge-scaled over the integrations) does not see a
        model mismatch that the data cannot distinguish from an offset (an unknown or old
        telescope wavefront, the built-in optics): the floor measured for the configuration
        (`~jwst_klipprep.psf.models.SYSTEMATIC_FLOOR_MAS`, or ``systematic_floor``) is added
        in quadrature.
        """
        if self.systematic_floor is not None:
            floor = float(self.systematic_floor)
        elif visit is not None:
            floor = visit_floor_mas(self.fit_wavefront, opd_given=self._visit_opd)
        else:
            floor = systematic_floor_mas(
                self._backend, opd_given=options is not None and (options.opd is not None))
        floor_px = floor / (1000.0 * scale)
        stat = fit.combined_err_yx if visit is None else visit["offset_err_yx"]
        return floor, np.hypot(np.asarray(stat, float), floor_px)

    def _check_fit(self, name, fit):
        """Refuse a fit that cannot be right instead of applying its shift."""
        offset = np.asarray(fit.combined_yx, float)
        hint = (f"; check that {self.psf_file} is an occulted PSF of this mask and filter with "
                "the mask centre at its array centre" if self._backend == "file" else "")
        if not np.all(np.isfinite(offset)) or np.hypot(*offset) > self.fit_radius:
            raise InputError(f"{name}: recenter_frames found the star {offset.round(2).tolist()} "
                             f"px from the mask centre, beyond fit_radius={self.fit_radius}: "
                             f"the fit failed{hint}")
        if not fit.converged and self._backend == "file":
            raise InputError(f"{name}: recenter_frames: the fit to the PSF file did not "
                             f"converge (last offset {offset.round(2).tolist()} px){hint}")

    def _weights(self, model, shape, mask_yx, half):
        if self.weighting == "none":
            return None
        t = transmission_map(model, shape, psfmask=self.psfmask)
        if t is None:
            return None
        if self.weighting == "transmission2":
            t = t**2
        return extract_stamp(t, mask_yx, half, fill=0.0)[0]

    def _si_image_shift(self, model, options):
        """Where the stpsf image of an on-axis source lies relative to stpsf's optical axis (px).

        Apparent image centre = recorded star position + this. None without the stpsf model or
        without the instrument wavefront (then 0 by symmetry).
        """
        if options is None or not options.si_wfe:
            return None
        inst = model.meta.instrument
        key = (inst.filter, options)
        cache = self.__dict__.setdefault("_si_shifts", {})
        if key not in cache:
            scale = builtin.default_pixel_scale(inst.name, filter=inst.filter)
            canonical = builtin.resolve_coronagraph(inst.name, inst.coronagraph).name
            kw = dict(instrument=inst.name, filter_name=inst.filter, canonical=canonical,
                      stamp=64, pixel_scale=scale, nlambda=self.nlambda,
                      oversample=self.oversample)
            with_si = unocculted_stpsf_psf(options=options, **kw)
            without = unocculted_stpsf_psf(
                options=StpsfOptions(opd=options.opd, si_wfe=False,
                                     pupil_npix=options.pupil_npix), **kw)
            outside = np.hypot(*(np.indices(without.shape) - 31.5)) > 12  # fit the core
            shift = measure_shift(without, with_si, bad=outside, guess_yx=(0.0, 0.0))
            cache[key] = [float(v) for v in np.ravel(shift.shift_yx)[:2]]
        return cache[key]

    def _model_options(self, model):
        """stpsf options for this exposure (None for other backends); resolves opd=auto."""
        if self._options is None or str(self.opd or "").lower() != "auto":
            return self._options
        date = model.meta.observation.date_beg or model.meta.observation.date
        if not date:
            raise InputError(f"{model.meta.filename}: opd=auto needs the exposure date "
                             "(DATE-BEG or DATE-OBS)")
        if date not in self._opd_specs:
            try:
                path = fetch_opd_for_date(str(date))
                self._opd_specs[date] = read_opd(path, npix=self._options.pupil_npix)
            except OpdError as exc:
                raise InputError(f"{model.meta.filename}: {exc}") from None
        return StpsfOptions(opd=self._opd_specs[date], si_wfe=self._options.si_wfe,
                            pupil_npix=self._options.pupil_npix)

    def _model(self, model, shape, center, options):
        inst = model.meta.instrument
        scale = builtin.default_pixel_scale(inst.name, filter=inst.filter)
        try:
            canonical = builtin.resolve_coronagraph(inst.name, inst.coronagraph).name
        except ValueError as exc:
            raise InputError(f"{model.meta.filename}: {exc}") from None
        try:
            return make_model_callable(
                self._backend, instrument=inst.name, filter_name=inst.filter,
                coronagraph=canonical, shape=shape, center_yx=tuple(center), pixel_scale=scale,
                nlambda=self.nlambda, oversample=self.oversample, options=options,
                psf_file=self.psf_file,
            )
        except ValueError as exc:
            raise InputError(f"recenter_frames: {exc}") from None


def _median_stamp(data, err, bad):
    """The exposure's integration median on the stamp, its error and its bad pixels.

    Sigma-clipped median over the integrations of the valid pixels (finite, not ``bad``);
    its error is the larger of the ERR-based and the scatter-based error of a median
    (`~jwst_klipprep.algorithms.background_exposures.combine_background`, ``error_method="max"``),
    so a star that moved during the exposure is not given a too-small error. Returns arrays of
    shape (1, ny, nx).
    """
    if data.shape[0] == 1:
        return data, err, bad
    med = combine_background(data, err=err, bad=bad, error_method="max")
    bad = ~med.valid | ~np.isfinite(med.err) | (med.err <= 0)
    return med.image, med.err, bad


def _optics_note(options):
    """Short log text of the stpsf optics (empty for the other backends)."""
    if options is None:
        return ""
    opd = "no OPD" if options.opd is None else f"OPD {options.opd.record()['file']}"
    return f", instrument wavefront {'on' if options.si_wfe else 'off'}, {opd}"


def _is_bar_mask(coronagraph):
    """True for the NIRCam wedge (bar) occulters, MASKLWB / MASKSWB in any module spelling."""
    name = str(coronagraph or "").upper()
    return name.endswith(("LWB", "SWB"))
