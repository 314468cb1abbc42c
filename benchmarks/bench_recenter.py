"""Accuracy of the star-behind-the-mask measurement (`measure_star_offset`), issue 5.

Run from the repository root::

    .venv/bin/python benchmarks/bench_recenter.py            # full: about 8-10 min on 2 cores
    .venv/bin/python benchmarks/bench_recenter.py --quick    # F444W only, 3 offsets: ~1-2 min

stpsf PSFs are cached on disk (``--cache``, default ``/tmp/jwst_klipprep_bench_recenter``),
with the seconds they took to compute, so a second run is much faster and still reports the
cold cost per exposure; ``--no-cache`` recomputes everything.

Frames
------
NIRCam MASK335R + MASKRND, F444W and F335M, a 61 x 61 stamp of 0.0629" pixels with the mask
centre at its centre pixel (30, 30). Truth PSFs are computed with stpsf on
``../shared/data/stpsf-data-mini`` (``STPSF_PATH`` is set here), 1024-pixel pupil, instrument
(coronagraph SI) wavefront error on (``include_si_wfe=True``), ``pupilopd=None`` (the mini data
has no OTE OPD maps), no distortion, nlambda 5, detector oversampling 2, at star offsets drawn
uniformly in +-30 mas per axis. Each exposure has 5 integrations in electrons with Poisson and
read noise (12 e-), peak SNR of the occulted PSF per integration drawn log-uniformly in
100-1000; ERR = sqrt(max(data, 0) + read**2) as a pipeline computes it from the noisy data.

Cases (radial error |fitted - true| of the combined offset of an exposure, in mas):

1. "same optics": fitted with stpsf with the same optics (SI WFE on); the fitter's stpsf uses a
   256-pixel pupil (0.6 s per PSF instead of 4 s; it differs from the 1024-pixel truth by
   < 0.1 mas in centring), ``--repeats`` noise realisations per offset;
2. "builtin": fitted with the data-free built-in model (`jwst_klipprep.psf.builtin`: no SI WFE,
   approximate Lyot stop) -- its bias;
3. "OTE WFE": truth with an added telescope wavefront error unknown to the fitter: stpsf's OTE
   linear optical model (``enable_adjustable_ote``, runs offline) with random segment piston,
   tip/tilt and radius of curvature (70 % of the variance) plus global Zernike focus, astigmatism,
   coma and trefoil (30 %), scaled to ``--wfe-nm`` rms (default 65 nm) and with the pupil
   least-squares piston/tip/tilt removed, so that the star position is the commanded one (the
   mean wavefront *gradient*, i.e. the PSF centroid, differs by a few mas: printed as a caveat);
   fitted with the same model as case 1; two WFE realisations (``--wfe-seeds``) in the full
   run, one in ``--quick``.

Methods: "forward" = `measure_star_offset` (model at the fitted offset, ``iterations=2``,
ERR weights, fit radius 20 px, Huber); "zero-offset LSQ" = the same fit with ``iterations=0``
(model at the mask centre only); "seed cc" = the prior art's plain cross-correlation with the
zero-offset model, `cross_correlation_shift` with ``upsample=100`` and the analytic mask
transmission as weights on the whole stamp, median over integrations. The full run also tries
transmission weights (T and T**2) and fit radii 10 / 30 px on cases 1 and 3.

Also reported: calibration of the quoted uncertainties (standard deviation of error / sigma over
both axes, for the combined offsets and per integration; 1 = calibrated), seconds per exposure
(model computation, cold, + fit), and, on the real AU Mic frames in
``../shared/data/real/nircam_aumic_f444w`` (skipped when absent), where the star is found
relative to CRPIX (the mask centre assumed at CRPIX), with the built-in model and with stpsf,
next to the MASKOFFS recorded by the earlier tool.
"""

import argparse
import glob
import hashlib
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STPSF = REPO.parent / "shared" / "data" / "stpsf-data-mini"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real" / "nircam_aumic_f444w"
DEFAULT_CACHE = Path("/tmp/jwst_klipprep_bench_recenter")

FOV = 61
CENTER = (FOV - 1) / 2.0
PIXEL_SCALE = 0.0629
NLAMBDA = 5
OVERSAMPLE = 2
READ_NOISE = 12.0
NINTS = 5
MAS = 1000.0

log = logging.getLogger("bench_recenter")


# --------------------------------------------------------------------------------------------
# stpsf optics, cached


def _quiet():
    """Import stpsf (STPSF_PATH must be set) and silence its, poppy's and pysiaf's chatter."""
    from jwst_klipprep.psf.models import quiet_pysiaf

    warnings.filterwarnings("ignore")
    with quiet_pysiaf():
        import stpsf  # noqa: F401  (imports astropy first: its logger must exist before this)

    for name in ("poppy", "stpsf", "pysiaf"):
        logging.getLogger(name).setLevel(logging.ERROR)


class StpsfOptics:
    """stpsf NIRCam MASK335R PSFs on the stamp, one optical system built once, disk-cached.

    ``psf(offset_yx_px)`` returns (psf, seconds it took to compute, cold).
    """

    def __init__(self, filter_name, *, npix=1024, opd=None, opd_tag="none", pixel_scale=PIXEL_SCALE,
                 si_wfe=True, occulted=True, cache=None):
        self.filter_name, self.npix, self.opd, self.opd_tag = filter_name, npix, opd, opd_tag
        self.pixel_scale, self.si_wfe, self.occulted = pixel_scale, si_wfe, occulted
        self.cache = cache
        self._osys = None
        self.build_seconds = 0.0
        self.tag = json.dumps([filter_name, npix, opd_tag, pixel_scale, NLAMBDA, OVERSAMPLE, FOV,
                               si_wfe, "MASK335R" if occulted else "none", _stpsf_version()])

    def _build(self):
        import stpsf

        t0 = time.perf_counter()
        nc = stpsf.NIRCam()
        nc.filter = self.filter_name
        nc.image_mask = "MASK335R" if self.occulted else None
        nc.pupil_mask = "MASKRND"
        nc.pixelscale = self.pixel_scale
        nc.include_si_wfe = self.si_wfe
        nc.include_ote_field_dependence = False
        nc.pupilopd = self.opd
        if self.npix != 1024:
            nc.pupil = f"jwst_pupil_RevW_npix{self.npix}.fits.gz"
        self._osys = nc.get_optical_system(fft_oversample=OVERSAMPLE,
                                           detector_oversample=OVERSAMPLE, fov_pixels=FOV)
        self._wl, self._w = nc._get_weights(source=None, nlambda=NLAMBDA)
        self.build_seconds = time.perf_counter() - t0

    def psf(self, offset_yx_px):
        oy, ox = (round(float(v), 9) for v in offset_yx_px)
        path = None
        if self.cache is not None:
            key = hashlib.sha1(f"{self.tag}|{oy!r}|{ox!r}".encode()).hexdigest()[:24]
            path = self.cache / f"{key}.npz"
            if path.exists():
                with np.load(path) as f:
                    return f["psf"], float(f["seconds"])
        if self._osys is None:
            self._build()
        t0 = time.perf_counter()
        y_as, x_as = oy * self.pixel_scale, ox * self.pixel_scale
        self._osys.source_offset_r = math.hypot(y_as, x_as)
        self._osys.source_offset_theta = math.degrees(math.atan2(-x_as, y_as))
        hdul = self._osys.calc_psf(wavelength=self._wl, weight=self._w, normalize="first")
        psf = hdul[0].data.reshape(FOV, OVERSAMPLE, FOV, OVERSAMPLE).sum(axis=(1, 3))
        seconds = time.perf_counter() - t0
        if path is not None:
            np.savez(path, psf=psf, seconds=seconds)
        return psf, seconds


def detector_mask_shift(filter_name, *, npix, pixel_scale=PIXEL_SCALE, cache=None):
    """Where the mask centre appears on the detector in stpsf's frame, relative to the array
    centre (px, (dy, dx)): the position of the unocculted PSF of a star at the mask centre.

    stpsf's array centre is the occulter centre in the focal plane; the instrument wavefront
    error after the Lyot stop (its tilt, incl. the wedge dispersion) moves the image of the
    whole focal plane, mask and star alike, on the detector. A real mask centre (SIAF,
    `update_nircam_centers`, CRPIX) is a detector position, so a model must be placed with this
    point, not its array centre, on it (spaceKLIP does the same: it re-centres its models on
    the off-axis PSF). Measured by fitting the unocculted PSF without SI WFE (centro-symmetric,
    so centred on the array centre) to the one with it.
    """
    from jwst_klipprep.algorithms.registration import measure_shift

    with_wfe = StpsfOptics(filter_name, npix=npix, pixel_scale=pixel_scale, occulted=False,
                           cache=cache).psf((0.0, 0.0))[0]
    without = StpsfOptics(filter_name, npix=npix, pixel_scale=pixel_scale, occulted=False,
                          si_wfe=False, cache=cache).psf((0.0, 0.0))[0]
    core = np.hypot(*(np.indices(without.shape) - CENTER)) > 12  # fit the core
    return measure_shift(without, with_wfe, bad=core, guess_yx=(0.0, 0.0)).shift_yx[0]


def _stpsf_version():
    from importlib.metadata import version

    return version("stpsf")


def ote_wfe_opd(rms_nm, seed, cache):
    """Random OTE OPD (1024 px, metres) from stpsf's linear optical model; PTT removed.

    Returns (HDUList, info dict). 70 % of the variance in per-segment piston, tip/tilt and
    radius of curvature, 30 % in global focus, astigmatism, coma and trefoil.
    """
    from astropy.io import fits

    path = None if cache is None else cache / f"ote_opd_{rms_nm:g}nm_seed{seed}.fits"
    if path is not None and path.exists():
        hdul = fits.open(path)
        return hdul, json.loads(hdul[0].header["BENCHINF"])
    import stpsf

    nc = stpsf.NIRCam()
    nc.pupilopd = None
    _, ote = stpsf.enable_adjustable_ote(nc)
    rng = np.random.default_rng(seed)
    inside = ote.amplitude > 0.5

    def rms(a):
        return float(np.std(a[inside]))

    ote.zero()
    for seg in list(ote.segnames[:18]):
        ote.move_seg_local(seg, piston=0.02 * rng.normal(), xtilt=0.02 * rng.normal(),
                           ytilt=0.02 * rng.normal(), roc=0.05 * rng.normal(), delay_update=True)
    ote.update_opd()
    segments = ote.opd.copy()
    ote.zero()
    coeffs = 0.01 * rng.normal(size=9)
    coeffs[:3] = 0.0  # no global piston / tip / tilt
    ote.move_global_zernikes(coeffs, unit="micron")
    glob_opd = ote.opd.copy()
    total = (segments * math.sqrt(0.7) / rms(segments)
             + glob_opd * math.sqrt(0.3) / rms(glob_opd)) * rms_nm * 1e-9
    scale_m = float(ote.opd_header["PUPLSCAL"])
    n = total.shape[0]
    yy, xx = (np.indices(total.shape) - (n - 1) / 2.0) * scale_m
    design = np.stack([np.ones(inside.sum()), xx[inside], yy[inside]], axis=1)
    coef = np.linalg.lstsq(design, total[inside], rcond=None)[0]
    total[inside] -= design @ coef
    total[~inside] = 0.0
    # mean wavefront gradient over segment interiors (= PSF centroid shift) after PTT removal
    from scipy.ndimage import binary_erosion

    interior = binary_erosion(inside, iterations=2)
    gy, gx = np.gradient(total, scale_m)
    rad_to_mas = 180 / math.pi * 3600 * MAS
    info = {"rms_nm": rms(total) * 1e9,
            "segment_rms_nm": rms(segments) / rms(segments) * math.sqrt(0.7) * rms_nm,
            "gtilt_mas_yx": [float(gy[interior].mean() * rad_to_mas),
                             float(gx[interior].mean() * rad_to_mas)]}
    header = fits.Header()
    header["BUNIT"] = "meter"
    header["PUPLSCAL"] = scale_m
    header["BENCHINF"] = json.dumps(info)
    hdul = fits.HDUList([fits.PrimaryHDU(total.astype(np.float64), header=header)])
    if path is not None:
        hdul.writeto(path, overwrite=True)
    return hdul, info


# --------------------------------------------------------------------------------------------
# frames and fits


def noisy_frames(psf, snr, rng, nints=NINTS):
    """Integrations of ``flux * psf`` in electrons with Poisson + read noise; peak SNR ``snr``."""
    peak = float(psf.max())
    b = snr**2
    s_peak = 0.5 * (b + math.sqrt(b * b + 4 * b * READ_NOISE**2))
    clean = psf * (s_peak / peak)
    data = clean + rng.normal(size=(nints,) + psf.shape) * np.sqrt(clean + READ_NOISE**2)
    err = np.sqrt(np.clip(data, 0.0, None) + READ_NOISE**2)
    return data, err


class TimedModel:
    """Model callable that records the (cold) seconds spent computing models."""

    def __init__(self, function):
        self.function = function
        self.seconds = 0.0  # recorded (cold) compute time of the models
        self.wall = 0.0  # time actually spent in ``function`` (cache reads included)
        self.calls = 0
        self._cache = {}

    def __call__(self, offset_yx_px):
        key = (round(float(offset_yx_px[0]), 6), round(float(offset_yx_px[1]), 6))
        if key not in self._cache:
            t0 = time.perf_counter()
            frame, seconds = self.function(key)
            self.wall += time.perf_counter() - t0
            self.seconds += seconds
            self.calls += 1
            self._cache[key] = frame
        return self._cache[key]


def builtin_function(filter_name, pixel_scale=PIXEL_SCALE, shape=(FOV, FOV), center=None):
    from jwst_klipprep.psf.builtin import coronagraphic_psf

    def function(offset_yx_px):
        t0 = time.perf_counter()
        frame = coronagraphic_psf(
            instrument="NIRCAM", filter=filter_name, coronagraph="MASK335R",
            offset_yx_arcsec=(offset_yx_px[0] * pixel_scale, offset_yx_px[1] * pixel_scale),
            shape=shape, center_yx=center, pixel_scale=pixel_scale, oversample=OVERSAMPLE,
            nlambda=NLAMBDA)
        return frame, time.perf_counter() - t0

    return function


def shifted_function(function, shift_yx):
    """``function`` with its output moved by ``shift_yx`` px (sinc kernel; lost edges NaN)."""
    from jwst_klipprep.algorithms.shift import shift_frames

    def moved(offset_yx_px):
        frame, seconds = function(offset_yx_px)
        t0 = time.perf_counter()
        out = shift_frames(frame, shift_yx).data
        return np.asarray(out).reshape(frame.shape), seconds + time.perf_counter() - t0

    return moved


def transmission(pixel_scale=PIXEL_SCALE, shape=(FOV, FOV), center=(CENTER, CENTER)):
    from jwst_klipprep.psf.builtin import mask_transmission

    return mask_transmission(instrument="NIRCAM", coronagraph="MASK335R", shape=shape,
                             center_yx=center, pixel_scale=pixel_scale)


def fit_forward(data, err, function, *, weights=None, radius=20.0, iterations=2, bad=None,
                center=None, robust="huber", **kw):
    from jwst_klipprep.algorithms.centering import measure_star_offset

    model = TimedModel(function)
    t0 = time.perf_counter()
    res = measure_star_offset(data, model, err=err, bad=bad, weights=weights,
                              iterations=iterations, fit_radius=radius, center_yx=center,
                              robust=robust, **kw)
    fit_seconds = time.perf_counter() - t0 - model.wall
    return res, model.seconds + fit_seconds


def fit_seed(data, function, weights, bad=None):
    """Seed method: cross-correlation with the zero-offset model, median over integrations."""
    from jwst_klipprep.algorithms.registration import cross_correlation_shift

    model0, seconds = function((0.0, 0.0))
    t0 = time.perf_counter()
    shifts = cross_correlation_shift(model0, np.where(bad, np.nan, data) if bad is not None
                                     else data, upsample=100, weights=weights)
    return np.nanmedian(shifts, axis=0), shifts, seconds + time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# statistics and tables


def radial_mas(est, truth, pixel_scale=PIXEL_SCALE):
    return np.hypot(*((np.asarray(est) - np.asarray(truth)) * pixel_scale * MAS).T)


def summarise(rows):
    """rows: dicts with truth, est, err (px, (2,)), ints/ints_err (nints, 2), seconds."""
    truth = np.array([r["truth"] for r in rows])
    est = np.array([r["est"] for r in rows])
    rad = radial_mas(est, truth)
    bias = np.mean((est - truth) * PIXEL_SCALE * MAS, axis=0)
    out = {"n": len(rows), "median": np.median(rad), "max": np.max(rad),
           "rms": math.sqrt(np.mean(rad**2)), "bias_y": bias[0], "bias_x": bias[1],
           "seconds": np.mean([r["seconds"] for r in rows])}
    if rows[0].get("err") is not None:
        err = np.array([r["err"] for r in rows])
        z = ((est - truth) / err).ravel()
        out["z_comb"] = float(np.sqrt(np.mean(z**2)))
        zi = np.concatenate([((r["ints"] - r["truth"]) / r["ints_err"]).ravel() for r in rows])
        zi = zi[np.isfinite(zi)]
        out["z_int"] = float(np.sqrt(np.mean(zi**2)))
        out["sigma_mas"] = float(np.median(err) * PIXEL_SCALE * MAS)
    return out


def fmt(value, spec=".2f"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def print_table(title, entries):
    print(f"\n### {title}\n")
    print("| case | filter | method | N | radial err median / max / rms (mas) | mean bias "
          "(dy, dx) mas | median sigma (mas) | err/sigma rms: combined / per int | "
          "s / exposure |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, filt, method, s in entries:
        z = (f"{fmt(s.get('z_comb'))} / {fmt(s.get('z_int'))}" if "z_comb" in s else "-")
        print(f"| {case} | {filt} | {method} | {s['n']} | {s['median']:.2f} / {s['max']:.2f} / "
              f"{s['rms']:.2f} | ({s['bias_y']:+.2f}, {s['bias_x']:+.2f}) | "
              f"{fmt(s.get('sigma_mas'), '.3f')} | {z} | {s['seconds']:.2f} |")


# --------------------------------------------------------------------------------------------
# synthetic benchmark


CASES = {
    "1": "1 same optics",
    "1b": "1b same optics, 1024-px truth pupil",
    "2": "2 builtin model",
    "3": "3 OTE WFE unknown",
}
METHOD_ORDER = ["forward (this)", "zero-offset LSQ", "seed cc"]


def run_synthetic(args, cache):
    rng = np.random.default_rng(args.seed)
    filters = ["F444W"] if args.quick else ["F444W", "F335M"]
    wfes = []
    for wfe_seed in args.wfe_seeds:
        opd, info = ote_wfe_opd(args.wfe_nm, wfe_seed, cache)
        wfes.append((opd, f"ote{args.wfe_nm:g}nm_s{wfe_seed}"))
        print(f"OTE WFE of case 3 (seed {wfe_seed}): {info['rms_nm']:.1f} nm rms after "
              f"piston/tip/tilt removal (70 % of the variance per segment); its mean wavefront "
              f"gradient (PSF centroid shift) is (dy, dx) = ({info['gtilt_mas_yx'][0]:+.1f}, "
              f"{info['gtilt_mas_yx'][1]:+.1f}) mas: the truth is the least-squares tilt.")
    print()
    entries, variants = [], []
    t_start = time.perf_counter()
    for filt in filters:
        truth_256 = StpsfOptics(filt, npix=256, cache=cache)  # = the fitter's optics
        truth_1024 = StpsfOptics(filt, cache=cache)
        truth_wfes = [StpsfOptics(filt, opd=opd, opd_tag=tag, cache=cache) for opd, tag in wfes]
        model = StpsfOptics(filt, npix=256, cache=cache)
        # the mask centre on the detector (fit-region centre, built-in model centre)
        shift = detector_mask_shift(filt, npix=1024, cache=cache)
        shift_256 = detector_mask_shift(filt, npix=256, cache=cache)
        print(f"{filt}: mask centre on the detector = array centre + ({shift[0]:+.3f}, "
              f"{shift[1]:+.3f}) px in stpsf's frame (1024-px pupil; "
              f"({shift_256[0]:+.3f}, {shift_256[1]:+.3f}) with 256 px)")
        mask_yx = (CENTER + shift[0], CENTER + shift[1])
        builtin = builtin_function(filt, center=mask_yx)
        weight_t = transmission(center=mask_yx)
        offsets = rng.uniform(-30, 30, size=(args.offsets, 2)) / MAS / PIXEL_SCALE
        results = {}

        def run(case, data, err, off, fitters, seeds, mask_yx=mask_yx, weight_t=weight_t,
                results=results):
            for method, function, kw in fitters:
                res, seconds = fit_forward(data, err, function, center=mask_yx, **kw)
                results.setdefault((case, method), []).append(
                    dict(truth=off, est=res.combined_yx, err=res.combined_err_yx,
                         ints=res.offset_yx, ints_err=res.offset_err_yx, seconds=seconds,
                         converged=res.converged))
            for method, function in seeds:
                est, _, seconds = fit_seed(data, function, weight_t)
                results.setdefault((case, method), []).append(
                    dict(truth=off, est=est, err=None, seconds=seconds))

        def snr():
            return float(np.exp(rng.uniform(np.log(100), np.log(1000))))

        forward = [("forward (this)", model.psf, {}),
                   ("zero-offset LSQ", model.psf, {"iterations": 0})]
        extra = []
        if args.variants:
            extra = [("forward, weights T", model.psf, {"weights": weight_t}),
                     ("forward, weights T^2", model.psf, {"weights": weight_t**2}),
                     ("forward, radius 10 px", model.psf, {"radius": 10.0}),
                     ("forward, radius 30 px", model.psf, {"radius": 30.0}),
                     ("forward, no robust weights", model.psf, {"robust": None}),
                     ("forward, weights T^2, no robust", model.psf,
                      {"weights": weight_t**2, "robust": None})]
        for k, off in enumerate(offsets):
            # case 1: exactly the fitter's optics; several noise realisations
            psf = truth_256.psf(off)[0]
            for rep in range(args.repeats):
                data, err = noisy_frames(psf, snr(), rng)
                run(CASES["1"], data, err, off, forward + (extra if rep == 0 else []),
                    [("seed cc", model.psf)])
            # cases 1b and 2: realistic 1024-px truth, fitted with stpsf (256) and builtin
            data, err = noisy_frames(truth_1024.psf(off)[0], snr(), rng)
            run(CASES["1b"], data, err, off, forward[:1], [("seed cc", model.psf)])
            run(CASES["2"], data, err, off, [("forward (this)", builtin, {})] + (
                [("forward, weights T^2", builtin, {"weights": weight_t**2}),
                 ("forward, no robust weights", builtin, {"robust": None})]
                if args.variants else []), [("seed cc", builtin)])
            # case 3: unknown OTE wavefront error (each realisation)
            for truth_wfe, seed in zip(truth_wfes, args.wfe_seeds, strict=True):
                data, err = noisy_frames(truth_wfe.psf(off)[0], snr(), rng)
                run(f"{CASES['3']} (WFE seed {seed})", data, err, off, forward + extra,
                    [("seed cc", model.psf)])
            log.info("%s offset %d/%d done (%.0f s)", filt, k + 1, args.offsets,
                     time.perf_counter() - t_start)
        for (case, method), rows in sorted(results.items(), key=lambda kv: (
                kv[0][0], _rank(kv[0][1], METHOD_ORDER), kv[0][1])):
            bad_conv = sum(1 for r in rows if r.get("converged") is False)
            name = method + (f" ({bad_conv} not converged)" if bad_conv and
                             method != "zero-offset LSQ" else "")
            target = variants if method.startswith("forward,") else entries
            target.append((case, filt, name, summarise(rows)))
    return entries, variants


def _rank(method, order):
    return order.index(method) if method in order else len(order)


# --------------------------------------------------------------------------------------------
# real frames


def run_real(args, cache):
    from astropy.io import fits

    from jwst_klipprep.algorithms.centering import extract_stamp

    files = sorted(glob.glob(str(Path(args.data) / "*_calints.fits")))
    if not files:
        print(f"\n(no real frames in {args.data}: skipped)")
        return
    half = (FOV - 1) // 2
    stpsf_models, builtin_models = {}, {}
    print("\n### Real AU Mic program frames (NIRCam MASK335R F444W): star - CRPIX, in mas "
          "(dx, dy), the mask centre assumed at CRPIX\n")
    print("| file | target | builtin forward | stpsf forward | chi2 (builtin / stpsf) | "
          "stpsf forward, weights T^2 | seed cc (stpsf model) | stpsf forward, array centre "
          "on CRPIX | MASKOFFS of the earlier tool |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in files:
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data.astype(float)
            err = hdul["ERR"].data.astype(float)
            dq = hdul["DQ"].data
            crpix = (hdul["SCI"].header["CRPIX2"] - 1.0, hdul["SCI"].header["CRPIX1"] - 1.0)
            scale = math.sqrt(hdul["SCI"].header["PIXAR_A2"])
            target = hdul[0].header.get("TARGPROP", "?")
            filt = hdul[0].header["FILTER"]
            maskoffs = hdul["MASKOFFS"].data[0] if "MASKOFFS" in hdul else None
        mask_path = path.replace("_calints.fits", "_calints_psfmask.fits")
        with fits.open(mask_path) as hdul:  # DATAMODL of these files is wrong: plain FITS
            tmap = np.squeeze(hdul["SCI"].data).astype(float)
        data, _, center = extract_stamp(sci, crpix, half)
        err_s, _, _ = extract_stamp(err, crpix, half)
        dq_s, _, _ = extract_stamp(dq, crpix, half, fill=1)
        weights, _, _ = extract_stamp(tmap, crpix, half)
        bad = (dq_s & 1).astype(bool) | ~np.isfinite(data)
        key = (filt, round(scale, 6))
        if key not in stpsf_models:
            raw = StpsfOptics(filt, npix=256, pixel_scale=scale, cache=cache)
            shift = detector_mask_shift(filt, npix=256, pixel_scale=scale, cache=cache)
            stpsf_models[key] = (shifted_function(raw.psf, -shift), raw.psf)
            builtin_models[key] = builtin_function(filt, pixel_scale=scale)
        if not np.allclose(center, CENTER):
            raise RuntimeError("stamp centre is not the model centre")
        cells, chis = [], []
        fits_to_do = [(builtin_models[key], None), (stpsf_models[key][0], None),
                      (stpsf_models[key][0], weights**2), (stpsf_models[key][1], None)]
        for function, wmap in fits_to_do:
            res, _ = fit_forward(data, err_s, function, bad=bad, weights=wmap)
            dy, dx = res.combined_yx * scale * MAS
            ey, ex = res.combined_err_yx * scale * MAS
            cells.append(f"({dx:+.1f}, {dy:+.1f}) +- ({ex:.1f}, {ey:.1f})")
            chis.append(f"{res.chi2_red[0]:.0f}")
        est, _, _ = fit_seed(data, stpsf_models[key][0], weights, bad=bad)
        seed = f"({est[1] * scale * MAS:+.1f}, {est[0] * scale * MAS:+.1f})"
        moffs = ("-" if maskoffs is None else
                 f"({maskoffs[0] * scale * MAS:+.1f}, {maskoffs[1] * scale * MAS:+.1f})")
        print(f"| {Path(path).name[:25]} | {target} | {cells[0]} | {cells[1]} | "
              f"{' / '.join(chis[:2])} | {cells[2]} | {seed} | {cells[3]} | {moffs} |")


# --------------------------------------------------------------------------------------------
# issue 9: the package's own stpsf backend (recenter_frames' code path), OPD input, convention

ISSUE9_NPIX = 256
ISSUE9_SNR = 400.0
ISSUE9_NINTS = 3


def _package_function(options, filter_name="F444W", nlambda=3, oversample=OVERSAMPLE):
    """``f(offset_yx_px) -> (frame, seconds)``: `psf_frame` (stpsf) on the FOV stamp."""
    from jwst_klipprep.psf.models import psf_frame

    def function(offset_yx_px):
        t0 = time.perf_counter()
        frame = psf_frame("stpsf", instrument="NIRCAM", filter_name=filter_name,
                          canonical="MASK335R", shape=(FOV, FOV), center_yx=(CENTER, CENTER),
                          offset_yx_arcsec=(offset_yx_px[0] * PIXEL_SCALE,
                                            offset_yx_px[1] * PIXEL_SCALE),
                          pixel_scale=PIXEL_SCALE, nlambda=nlambda, oversample=oversample,
                          options=options)
        return np.asarray(frame), time.perf_counter() - t0

    return function


def _around(function, guess_yx):
    """``function`` re-based on ``guess_yx`` (px): offsets relative to the guess."""

    def moved(offset_yx_px):
        return function((guess_yx[0] + offset_yx_px[0], guess_yx[1] + offset_yx_px[1]))

    return moved


def _visit_rows(args, frames, offsets, starts, true_map, opd_maps):
    """Visit-level fit rows (`jwst_klipprep.psf.visit.fit_visit`): wavefront modes shared by
    the six exposures, fitted jointly with their offsets, started from the per-exposure fits.

    ``starts``: {"no OPD": (options, est), "OPD older": (options, est)}; ``opd_maps``: the
    base map (metres) of each start (None = no OPD). Returns {(start, mode set, derivatives):
    (fit, seconds per exposure, CPU seconds per exposure)}.
    """
    from astropy.io import fits

    from jwst_klipprep.psf.opd import pupil_file
    from jwst_klipprep.psf.visit import (
        MODE_SETS,
        VISIT_FLOORS_MAS,
        fit_visit,
        stpsf_mode_factory,
        wavefront_modes,
    )

    pupil = fits.getdata(pupil_file(os.environ["STPSF_PATH"], ISSUE9_NPIX))
    segments = fits.getdata(pupil_file(os.environ["STPSF_PATH"], ISSUE9_NPIX, "segments"))
    segments = np.asarray(segments, int)
    inside = pupil > 0.5
    data = np.array([np.nanmean(d, axis=0) for d, _ in frames])
    err = np.array([np.sqrt(np.nanmean(e**2, axis=0) / len(e)) for _, e in frames])
    kw = dict(instrument="NIRCAM", filter_name="F444W", canonical="MASK335R", shape=(FOV, FOV),
              center_yx=(CENTER, CENTER), pixel_scale=PIXEL_SCALE, nlambda=3,
              oversample=OVERSAMPLE)
    out = {}
    if "each" in args.visit_derivatives:  # how much the mode response changes over the visit
        start = next(iter(starts))
        modes = wavefront_modes(pupil, args.visit_modes[0], segments=segments)
        factory = stpsf_mode_factory(options=starts[start][0], modes=modes, **kw)
        est0 = starts[start][1]
        mean = est0.mean(axis=0)
        far = est0[np.argmax(np.hypot(*(est0 - mean).T))]
        yy, xx = np.indices((FOV, FOV)) - CENTER
        region = np.hypot(yy, xx) <= 20.0
        base = factory(np.zeros(len(modes)))
        rel = []
        for k in range(len(modes)):
            step = factory(5.0 * np.eye(len(modes))[k])
            d_mean = (step(mean) - base(mean))[region]
            d_far = (step(far) - base(far))[region]
            rel.append(np.sqrt(np.sum((d_far - d_mean) ** 2) / np.sum(d_mean**2)))
        print(f"\nMode derivatives (5 nm steps, {start} start) at the visit's mean offset vs at "
              f"the exposure farthest from it ({np.hypot(*(far - mean)) * PIXEL_SCALE * MAS:.0f}"
              f" mas away): relative rms difference per mode within 20 px "
              f"{np.array2string(np.array(rel), precision=2)}")
    for start, (options, est0) in starts.items():
        prior0 = args.visit_drift_nm if options.opd is not None else args.visit_prior_nm
        base_map = opd_maps[start]
        for mode_set in args.visit_modes:
            modes = wavefront_modes(pupil, mode_set, segments=segments)
            wanted = (true_map if base_map is None else true_map - base_map)
            if wanted.shape != pupil.shape:  # a truth on a finer grid: block means, to report
                f = wanted.shape[0] // pupil.shape[0]
                wanted = wanted.reshape(pupil.shape[0], f, pupil.shape[1], f).mean(axis=(1, 3))
            n_seg = len(MODE_SETS[mode_set]) - 7
            if n_seg > 0:  # per-segment modes: not orthogonal, joint least squares
                design = modes[:, inside].T
                truth_c = np.linalg.lstsq(design, wanted[inside], rcond=None)[0]
                left = wanted[inside] - design @ truth_c
                print(f"\n{start}, {mode_set}: the true map - start map is "
                      f"{np.std(wanted[inside]) * 1e9:.1f} nm rms, "
                      f"{np.std(left) * 1e9:.1f} nm rms of it outside the modes' span")
                seg_prior = args.visit_segment_prior_nm
                if options.opd is not None:  # drift: the same split of its variance
                    seg_prior = seg_prior * args.visit_drift_nm / args.wfe_nm
                prior = np.array([prior0] * 7 + [seg_prior] * n_seg)
            else:
                truth_c = np.array([np.sum(wanted[inside] * m[inside]) / np.sum(m[inside] ** 2)
                                    for m in modes])
                prior = prior0
            for derivatives in args.visit_derivatives:
                t0, c0 = time.perf_counter(), time.process_time()
                factory = stpsf_mode_factory(options=options, modes=modes, **kw)
                fit = fit_visit(data, factory, n_modes=len(modes), err=err, offsets0=est0,
                                prior=prior, iterations=args.visit_iterations,
                                center_yx=(CENTER, CENTER), mode_derivatives=derivatives)
                secs = (time.perf_counter() - t0) / len(offsets)
                cpu = (time.process_time() - c0) / len(offsets)
                out[(start, mode_set, derivatives)] = (fit, secs, cpu, truth_c, prior)
    # uncertainty candidates: statistical (GN covariance x chi2_red); + the spread between the
    # mode sets (half the difference of the two sets' offsets, per axis); + a floor
    print(f"\nVisit-level fit (`fit_visit`, stpsf, {args.visit_iterations} linearisations "
          "at most; starts: the per-exposure fits; prior = rms of each mode coefficient):\n")
    print("| start | modes | derivatives | prior (nm) | error median / max (mas) | rms per axis "
          "(mas) | spread (mas) | "
          "mean error (dy, dx) mas | median sigma stat (mas) | error/sigma rms: stat / stat + "
          "mode-set spread / stat + the step's floor (mas) | chi2_red | model evals | "
          "steps | s / exposure (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (start, mode_set, derivatives), (fit, secs, cpu, _, prior) in out.items():
        diff = (fit.offset_yx - offsets) * PIXEL_SCALE * MAS
        rad = np.hypot(*diff.T)
        spread = float(np.sqrt(np.mean(np.sum((diff - diff.mean(axis=0)) ** 2, axis=1))))
        sig = fit.offset_err_yx * PIXEL_SCALE * MAS
        others = [v[0].offset_yx for (s2, m2, d2), v in out.items()
                  if s2 == start and d2 == derivatives and m2 != mode_set]
        if others:
            alt = np.abs(fit.offset_yx - others[0]) * PIXEL_SCALE * MAS
            sig2 = np.hypot(sig, alt)
            cover2 = f"{np.sqrt(np.mean((diff / sig2) ** 2)):.2f}"
        else:
            cover2 = "-"
        cover = float(np.sqrt(np.mean((diff / sig) ** 2)))
        floor = VISIT_FLOORS_MAS.get((mode_set, start != "no OPD"))
        cover3 = "-" if floor is None else (
            f"{np.sqrt(np.mean((diff / np.hypot(sig, floor)) ** 2)):.2f} ({floor:g})")
        prior_txt = (f"{prior:g}" if np.ndim(prior) == 0
                     else f"{prior[0]:g} global, {prior[-1]:g} segment")
        print(f"| {start} | {mode_set} ({len(MODE_SETS[mode_set])}) | {derivatives} | "
              f"{prior_txt} | {np.median(rad):.2f} / {rad.max():.2f} | "
              f"{np.sqrt(np.mean(diff**2)):.2f} | {spread:.2f} | "
              f"({diff[:, 0].mean():+.2f}, {diff[:, 1].mean():+.2f}) | {np.median(sig):.3f} | "
              f"{cover:.1f} / {cover2} / {cover3} | {fit.chi2_red:.1f} | {fit.nmodel} | "
              f"{fit.iterations}{'' if fit.converged else ' (not converged)'} | "
              f"{secs:.1f} ({cpu:.1f}) |", flush=True)
    pairs = [(k, v[0].offset_yx) for k, v in out.items() if k[2] == "mean"]
    for (start, mode_set, _), off_mean in pairs:
        each = out.get((start, mode_set, "each"))
        if each is not None:
            d = np.hypot(*((each[0].offset_yx - off_mean) * PIXEL_SCALE * MAS).T)
            print(f"\n{start}, {mode_set}: offsets with mode derivatives per exposure minus at "
                  f"the mean offset: median / max {np.median(d):.2f} / {d.max():.2f} mas")
    print("\nFitted mode coefficients (nm rms; focus, astig x2[, coma x2, trefoil x2]) vs the "
          "projection of the true (map - start map) on the modes:\n")
    for (start, mode_set, derivatives), (fit, _, _, truth_c, _) in out.items():
        if len(truth_c) > 7:  # per-segment modes: the global ones, then a summary
            seg = fit.coefficients[7:] - truth_c[7:]
            print(f"- {start}, {mode_set}, {derivatives}: global "
                  f"{np.array2string(fit.coefficients[:7], precision=1)} +- "
                  f"{np.array2string(fit.coefficient_err[:7], precision=1)}; true "
                  f"{np.array2string(truth_c[:7], precision=1)}; per-segment modes: true rms "
                  f"{np.sqrt(np.mean(truth_c[7:] ** 2)):.1f}, fitted - true rms "
                  f"{np.sqrt(np.mean(seg**2)):.1f}, median error "
                  f"{np.median(fit.coefficient_err[7:]):.1f} nm (the modes are degenerate: the "
                  "coefficients are defined only up to the prior)")
            continue
        print(f"- {start}, {mode_set}, {derivatives}: "
              f"{np.array2string(fit.coefficients, precision=1)} +- "
              f"{np.array2string(fit.coefficient_err, precision=1)}; true "
              f"{np.array2string(truth_c, precision=1)}")
    return out


def _off_basis_map(rms_nm, seed):
    """A map (metres, ISSUE9_NPIX grid) outside the span of the segment modes: per-segment
    astigmatism x2 and trefoil x2 + global spherical and secondary astigmatism x2, random
    coefficients (half the variance each), pupil piston / tip / tilt removed, ``rms_nm`` rms."""
    from astropy.io import fits

    from jwst_klipprep.psf.opd import pupil_file

    pupil = fits.getdata(pupil_file(os.environ["STPSF_PATH"], ISSUE9_NPIX)) > 0.5
    segments = np.asarray(fits.getdata(pupil_file(os.environ["STPSF_PATH"], ISSUE9_NPIX,
                                                  "segments")), int)
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(pupil.shape) - (ISSUE9_NPIX - 1) / 2.0
    radius = max(np.abs(xx[pupil]).max(), np.abs(yy[pupil]).max())
    x, y = xx / radius, yy / radius
    seg = np.zeros(pupil.shape)
    for label in range(1, int(segments.max()) + 1):
        sel = pupil & (segments == label)
        sx, sy = x[sel] - x[sel].mean(), y[sel] - y[sel].mean()
        half = max(np.abs(sx).max(), np.abs(sy).max())
        sx, sy = sx / half, sy / half
        c = rng.normal(size=4)
        seg[sel] = (c[0] * (sx * sx - sy * sy) + c[1] * 2 * sx * sy
                    + c[2] * (sx**3 - 3 * sx * sy * sy) + c[3] * (3 * sx * sx * sy - sy**3))
    r2 = x * x + y * y
    c = rng.normal(size=3)
    glob = (c[0] * (6 * r2 * r2 - 6 * r2 + 1) + c[1] * (4 * r2 - 3) * (x * x - y * y)
            + c[2] * (4 * r2 - 3) * 2 * x * y)
    design = np.stack([np.ones(pupil.sum()), x[pupil], y[pupil]], axis=1)
    total = np.zeros(pupil.shape)
    for part in (seg, glob):
        part = np.where(pupil, part, 0.0)
        part[pupil] -= design @ np.linalg.lstsq(design, part[pupil], rcond=None)[0]
        total += part / np.std(part[pupil])
    total[pupil] *= rms_nm * 1e-9 / np.std(total[pupil])
    return np.where(pupil, total, 0.0)


def run_issue9(args):
    """The issue-9 target table, with recenter_frames' own stpsf model (`psf_frame`)."""
    from jwst_klipprep.psf.models import StpsfOptions, systematic_floor_mas
    from jwst_klipprep.psf.opd import make_test_opd, read_opd

    rng = np.random.default_rng(args.seed)
    tmp = Path(args.cache) / "issue9"
    tmp.mkdir(parents=True, exist_ok=True)
    extra = f"_x{args.truth_extra_nm:g}" if args.truth_extra_nm else ""
    extra += f"_ote{args.truth_ote_npix}" if args.truth_ote else ""
    opd_now = tmp / f"opd_{args.wfe_nm:g}nm{extra}.fits"
    opd_old = tmp / f"opd_{args.wfe_nm:g}nm{extra}_older15.fits"
    base = make_test_opd(opd_now, rms_nm=args.wfe_nm, seed=args.seed, npix=ISSUE9_NPIX)
    if args.truth_extra_nm:  # structure outside the visit fit's segment modes
        from astropy.io import fits as _fits

        with _fits.open(opd_now) as hdul:
            base = base + _off_basis_map(args.truth_extra_nm, args.seed + 200)
            hdul[0].data = base
            hdul[0].header["OPDEXTRA"] = (args.truth_extra_nm, "nm rms off-basis added")
            hdul.writeto(opd_now, overwrite=True)
    npix_truth = ISSUE9_NPIX
    if args.truth_ote:  # stpsf's OTE linear model on its 1024 grid: independent of the modes
        from astropy.io import fits as _fits

        npix_truth = args.truth_ote_npix
        ote, info = ote_wfe_opd(args.wfe_nm, args.seed, tmp)
        base = make_test_opd(opd_now, rms_nm=args.wfe_nm, seed=args.seed, npix=npix_truth)
        with _fits.open(opd_now) as hdul:
            base = np.array(ote[0].data, dtype=float)
            if npix_truth != base.shape[0]:  # pupil-weighted block means, PTT removed again
                from jwst_klipprep.psf.opd import pupil_file

                f = base.shape[0] // npix_truth
                fine = _fits.getdata(pupil_file(os.environ["STPSF_PATH"], base.shape[0])) > 0.5
                inside = _fits.getdata(pupil_file(os.environ["STPSF_PATH"], npix_truth)) > 0.5

                def blocks(a):
                    return a.reshape(npix_truth, f, npix_truth, f).sum(axis=(1, 3))

                weight = blocks(fine.astype(float))
                base = np.where(inside & (weight > 0),
                                blocks(base * fine) / np.maximum(weight, 1), 0.0)
                yy, xx = np.indices(base.shape)
                design = np.stack([np.ones(inside.sum()), xx[inside], yy[inside]], axis=1)
                base[inside] -= design @ np.linalg.lstsq(design, base[inside], rcond=None)[0]
            hdul[0].data = base
            hdul[0].header["OPDORIG"] = ("stpsf OTE linear model", "benchmark truth map")
            hdul.writeto(opd_now, overwrite=True)
        print(f"# truth map: stpsf OTE linear model (seed {args.seed}; segment piston, tilts, "
              f"RoC + global Zernikes), {info['rms_nm']:.1f} nm rms on the 1024 grid, "
              f"rendered on the {npix_truth} grid; the fitter's models use the {ISSUE9_NPIX} "
              "grid")
    make_test_opd(opd_old, base=base, drift_nm=15.0, seed=args.seed + 100, npix=npix_truth)
    now, old = read_opd(opd_now), read_opd(opd_old)
    exact = StpsfOptions(si_wfe=True, pupil_npix=ISSUE9_NPIX)
    no_si = StpsfOptions(si_wfe=False, pupil_npix=ISSUE9_NPIX)
    with_opd = StpsfOptions(opd=now, si_wfe=True, pupil_npix=npix_truth)
    older = StpsfOptions(opd=old, si_wfe=True, pupil_npix=npix_truth)
    print(f"# issue 9 table: F444W MASK335R, stpsf pupil {ISSUE9_NPIX} px, nlambda 3, "
          f"oversample {OVERSAMPLE}, {args.offsets} offsets within +-30 mas, {ISSUE9_NINTS} "
          f"integrations, peak S/N {ISSUE9_SNR:g}; OPD {now.rms_nm:.1f} nm rms "
          f"(make_test_opd seed {args.seed}); the older OPD is it + a 15 nm rms drift "
          f"({old.rms_nm:.1f} nm rms in all)")
    cases = [
        ("exact optics (SI WFE on, no OTE WFE)", exact, exact),
        ("old convention: fitter without SI WFE", exact, no_si),
        (f"{args.wfe_nm:g} nm OTE WFE, OPD given exactly", with_opd, with_opd),
        (f"{args.wfe_nm:g} nm OTE WFE, OPD 15 nm rms older", with_opd, older),
        (f"{args.wfe_nm:g} nm OTE WFE, no OPD (per-exposure fit)", with_opd, exact),
    ]
    offsets = rng.uniform(-30, 30, size=(args.offsets, 2)) / (PIXEL_SCALE * MAS)
    snr_rng = np.random.default_rng(args.seed + 1)
    frames = {}
    print("\n| case | N | error median / max (mas) | spread of errors, rms about the mean "
          "(mas) | mean error (dy, dx) mas | median sigma (mas) | error/sigma rms: statistical / "
          "with the step's floor (floor, mas per axis) | s / exposure |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name, truth_opt, fit_opt in cases:
        if args.visit_only and not (
                (name == cases[3][0] and "OPD older" in args.visit_starts)
                or (name == cases[4][0] and "no OPD" in args.visit_starts)
                or (name == cases[2][0] and "OPD exact" in args.visit_starts)):
            continue
        truth_fn = _package_function(truth_opt)
        fit_fn = _package_function(fit_opt)
        rows = []
        for k, off in enumerate(offsets):
            key = (truth_opt, k)
            if key not in frames:
                frames[key] = noisy_frames(truth_fn(off)[0], ISSUE9_SNR, snr_rng,
                                           nints=ISSUE9_NINTS)
            data, err = frames[key]
            res, seconds = fit_forward(data, err, fit_fn, center=(CENTER, CENTER))
            rows.append({"truth": off, "est": res.combined_yx, "err": res.combined_err_yx,
                         "seconds": seconds})
        est = np.array([r["est"] for r in rows])
        diff = (est - offsets) * PIXEL_SCALE * MAS
        rad = np.hypot(*diff.T)
        spread = float(np.sqrt(np.mean(np.sum((diff - diff.mean(axis=0)) ** 2, axis=1))))
        sig = np.array([r["err"] for r in rows]) * PIXEL_SCALE * MAS  # statistical, mas
        sigma = float(np.median(sig))
        # the step's recorded uncertainty: statistical (+) the floor of its configuration
        floor = systematic_floor_mas("stpsf", opd_given=fit_opt.opd is not None)
        cover_stat = float(np.sqrt(np.mean((diff / sig) ** 2)))
        cover = float(np.sqrt(np.mean((diff / np.hypot(sig, floor)) ** 2)))
        secs = float(np.mean([r["seconds"] for r in rows]))
        results[name] = {"est": est, "diff": diff}
        print(f"| {name} | {len(rows)} | {np.median(rad):.2f} / {rad.max():.2f} | {spread:.2f} | "
              f"({diff[:, 0].mean():+.2f}, {diff[:, 1].mean():+.2f}) | {sigma:.3f} | "
              f"{cover_stat:.1f} / {cover:.2f} ({floor:g}) | {secs:.1f} |", flush=True)

    # what limits the "OPD older" case: the fit region and the weights (same frames)
    if args.older_variants:
        name = cases[3][0]
        fit_fn = _package_function(older)
        t2 = transmission() ** 2
        print(f"\nVariants of the fit, case '{name}' (same frames):\n")
        print("| variant | error median / max (mas) | mean error (dy, dx) mas |")
        print("|---|---|---|")
        for label, kw in (("fit_radius 20 (default)", {}), ("fit_radius 10", {"radius": 10.0}),
                          ("fit_radius 30", {"radius": 30.0}),
                          ("weights T^2", {"weights": t2}),
                          ("fit_radius 10, weights T^2", {"radius": 10.0, "weights": t2})):
            est = np.array([fit_forward(*frames[(with_opd, k)], fit_fn, center=(CENTER, CENTER),
                                        **kw)[0].combined_yx for k in range(len(offsets))])
            diff = (est - offsets) * PIXEL_SCALE * MAS
            rad = np.hypot(*diff.T)
            print(f"| {label} | {np.median(rad):.2f} / {rad.max():.2f} | "
                  f"({diff[:, 0].mean():+.2f}, {diff[:, 1].mean():+.2f}) |", flush=True)

    # visit-level fit: the frames of the "OPD older" and "no OPD" cases, wavefront modes shared
    if args.visit_fit:
        from astropy.io import fits as _fits

        vis = [frames[(with_opd, k)] for k in range(len(offsets))]
        starts = {"no OPD": (exact, cases[4][0]), "OPD older": (older, cases[3][0]),
                  "OPD exact": (with_opd, cases[2][0])}
        starts = {k: (opt, results[name]["est"]) for k, (opt, name) in starts.items()
                  if k in args.visit_starts}
        _visit_rows(args, vis, offsets, starts, _fits.getdata(opd_now),
                    {"no OPD": None, "OPD older": _fits.getdata(opd_old),
                     "OPD exact": _fits.getdata(opd_now)})
    if args.visit_only:
        return

    # companion: same frames + an off-axis companion, fitted with stpsf at default options
    # (instrument wavefront on; the occulter is in the model, as KLIP-FM codes do for JWST)
    sep_yx = np.array([0.62, -0.55]) / PIXEL_SCALE  # px, 0.83 arcsec
    truth_fn = _package_function(exact)
    print(f"\nCompanion at (dy, dx) = ({sep_yx[0] * PIXEL_SCALE:+.2f}, "
          f"{sep_yx[1] * PIXEL_SCALE:+.2f}) arcsec from the star, peak S/N 200, fitted with "
          "stpsf (instrument wavefront on) within 6 px; separation = companion - recorded star:")
    print("\n| star recorded with | N | separation error median / max (mas) | mean (dy, dx) mas |")
    print("|---|---|---|---|")
    comp = []
    for off in offsets:
        true_c = off + sep_yx
        frame = truth_fn(true_c)[0]
        data, err = noisy_frames(frame, 200.0, snr_rng, nints=ISSUE9_NINTS)
        guess = np.round(true_c + snr_rng.normal(0, 0.3, 2), 1)
        res, _ = fit_forward(data, err, _around(truth_fn, guess), radius=6.0,
                             center=(CENTER + guess[0], CENTER + guess[1]))
        comp.append(guess + res.combined_yx)
    comp = np.array(comp)
    for label, name in (("stpsf, instrument wavefront on (this convention)", cases[0][0]),
                        ("model without instrument wavefront (before)", cases[1][0])):
        sep = (comp - results[name]["est"] - sep_yx) * PIXEL_SCALE * MAS
        rad = np.hypot(*sep.T)
        print(f"| {label} | {len(rad)} | {np.median(rad):.2f} / {rad.max():.2f} | "
              f"({sep[:, 0].mean():+.2f}, {sep[:, 1].mean():+.2f}) |")


# --------------------------------------------------------------------------------------------
# issue 9, item 4: MIRI 4QPM (measured, not shipped)

MIRI_FOV = 41  # px at 0.11"/px: 4.5"
MIRI_SNR = 400.0


def _miri_function(backend, options=None, filter_name="F1065C", coronagraph="4QPM_1065",
                   nlambda=3, oversample=OVERSAMPLE):
    """``f(offset_yx_px) -> (frame, seconds)``: `psf_frame` for MIRI on the MIRI FOV stamp."""
    from jwst_klipprep.psf import builtin
    from jwst_klipprep.psf.models import psf_frame

    canonical = builtin.resolve_coronagraph("MIRI", coronagraph).name
    scale = builtin.default_pixel_scale("MIRI", filter=filter_name)
    center = ((MIRI_FOV - 1) / 2.0,) * 2

    def function(offset_yx_px):
        t0 = time.perf_counter()
        frame = psf_frame(backend, instrument="MIRI", filter_name=filter_name,
                          canonical=canonical, shape=(MIRI_FOV, MIRI_FOV), center_yx=center,
                          offset_yx_arcsec=(offset_yx_px[0] * scale, offset_yx_px[1] * scale),
                          pixel_scale=scale, nlambda=nlambda, oversample=oversample,
                          options=options)
        return np.asarray(frame), time.perf_counter() - t0

    return function, scale


def run_miri(args):
    """MIRI 4QPM: stpsf truth frames fitted with the same stpsf optics and with the built-in
    model (the step skips MIRI; this measures whether it could centre it)."""
    from jwst_klipprep.psf.models import StpsfOptions

    # stpsf's instrument wavefront for MIRI needs its 1024-pixel pupil (the 256 grid fails
    # inside stpsf): exact optics here = no instrument wavefront, 256-pixel pupil
    optics = StpsfOptions(si_wfe=False, pupil_npix=ISSUE9_NPIX)
    rng = np.random.default_rng(args.seed)
    truth_fn, scale = _miri_function("stpsf", optics)
    same = _miri_function("stpsf", optics)[0]
    built = _miri_function("builtin")[0]
    fitters = [("stpsf, same optics", same, {}), ("built-in 4QPM model", built, {}),
               ("stpsf, same optics, FD Jacobian, 5 iterations", same,
                {"jacobian_step": 0.1, "iterations": 5}),
               ("built-in, FD Jacobian, 5 iterations", built,
                {"jacobian_step": 0.1, "iterations": 5})]
    offsets = rng.uniform(-30, 30, size=(args.offsets, 2)) / (scale * MAS)
    snr_rng = np.random.default_rng(args.seed + 1)
    center = ((MIRI_FOV - 1) / 2.0,) * 2
    print(f"# MIRI F1065C 4QPM_1065, stpsf pupil {ISSUE9_NPIX} px (instrument wavefront off), "
          f"nlambda 3, {args.offsets} offsets within +-30 mas, {ISSUE9_NINTS} integrations, "
          f"peak S/N {MIRI_SNR:g}, fit radius 8 px (0.9 arcsec)")
    print("\n| fitted with | N | error median / max (mas) | mean error (dy, dx) mas | "
          "median sigma (mas) | not converged | s / exposure |")
    print("|---|---|---|---|---|---|---|")
    frames = [noisy_frames(truth_fn(off)[0], MIRI_SNR, snr_rng, nints=ISSUE9_NINTS)
              for off in offsets]
    for label, fn, kw in fitters:
        est, sig, secs, bad = [], [], [], 0
        for data, err in frames:
            res, seconds = fit_forward(data, err, fn, center=center, radius=8.0, **kw)
            est.append(res.combined_yx)
            sig.append(res.combined_err_yx)
            secs.append(seconds)
            bad += not res.converged
        diff = (np.array(est) - offsets) * scale * MAS
        rad = np.hypot(*diff.T)
        print(f"| {label} | {len(rad)} | {np.median(rad):.2f} / {rad.max():.2f} | "
              f"({diff[:, 0].mean():+.2f}, {diff[:, 1].mean():+.2f}) | "
              f"{np.median(sig) * scale * MAS:.3f} | {bad} | {np.mean(secs):.1f} |", flush=True)


# --------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="F444W only, 3 offsets, 1 noise realisation, no variants")
    parser.add_argument("--offsets", type=int, default=None,
                        help="star offsets per filter (default 6, quick 3)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="noise realisations per offset in case 1 (default 3, quick 1)")
    parser.add_argument("--wfe-nm", type=float, default=65.0,
                        help="OTE wavefront error of case 3, nm rms (default 65)")
    parser.add_argument("--seed", type=int, default=5, help="random seed")
    parser.add_argument("--wfe-seeds", type=int, nargs="+", default=None,
                        help="seeds of the OTE WFE realisations of case 3 (default 5 6, quick 5)")
    parser.add_argument("--stpsf-path", default=str(DEFAULT_STPSF), help="stpsf data folder")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="real AU Mic calints folder")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="disk cache of stpsf PSFs")
    parser.add_argument("--no-cache", action="store_true", help="recompute every stpsf PSF")
    parser.add_argument("--no-real", action="store_true", help="skip the real frames")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress log")
    parser.add_argument("--visit-fit", action="store_true",
                        help="--issue9: add the visit-level wavefront-mode fit row (slow)")
    parser.add_argument("--visit-iterations", type=int, default=8,
                        help="linearisations of the visit fit at most (default 8, as the step)")
    parser.add_argument("--visit-prior-nm", type=float, default=12.0,
                        help="visit fit without an OPD: prior (nm rms) on each global mode "
                        "(default 12, the step's)")
    parser.add_argument("--visit-drift-nm", type=float, default=15.0,
                        help="visit fit from the older OPD: prior (nm rms) on each drift mode "
                        "(default 15, the drift of the benchmark's older map)")
    parser.add_argument("--visit-modes", nargs="+", default=["low_order", "segments"],
                        choices=["low_order", "focus_astig", "segments", "segments_focus"],
                        help="mode sets of the visit fit (default low_order, segments; "
                        "segments: + per-segment piston/tip/tilt, 61 modes; segments_focus: + "
                        "per-segment focus, 79 modes)")
    parser.add_argument("--visit-segment-prior-nm", type=float, default=6.0,
                        help="visit fit, segment mode sets: prior (nm rms over the pupil) on "
                        "each per-segment mode without an OPD (default 6: 70 %% of 60 nm over "
                        "54-72 modes); --visit-prior-nm is the global modes' prior; from an "
                        "older OPD both are scaled by --visit-drift-nm / --wfe-nm")
    parser.add_argument("--truth-extra-nm", type=float, default=0.0,
                        help="--issue9: add this rms (nm) of structure outside the segment "
                        "modes' span to the truth map (per-segment astigmatism and trefoil, "
                        "global spherical and secondary astigmatism; default 0)")
    parser.add_argument("--truth-ote", action="store_true",
                        help="--issue9: the truth map from stpsf's OTE linear model (segment "
                        "piston, tilts and radius of curvature + global Zernikes, "
                        "ote_wfe_opd) on the 1024 grid instead of make_test_opd's")
    parser.add_argument("--truth-ote-npix", type=int, default=1024, choices=[256, 1024],
                        help="--truth-ote: pupil grid the truth frames are rendered on (256: "
                        "the map block-averaged to the fitter's grid; default 1024)")
    parser.add_argument("--visit-derivatives", nargs="+", default=["mean"],
                        choices=["mean", "each"],
                        help="mode derivatives at the visit's mean offset and/or per exposure")
    parser.add_argument("--visit-starts", nargs="+", default=["OPD older", "no OPD"],
                        choices=["OPD older", "no OPD", "OPD exact"],
                        help="which visit-fit cases (default: OPD older, no OPD; 'OPD exact' "
                        "checks that the fit does no harm when the OPD is right)")
    parser.add_argument("--visit-only", action="store_true",
                        help="--issue9 --visit-fit: only the cases the visit fit starts from, "
                        "then the visit rows (no companion)")
    parser.add_argument("--issue9", action="store_true",
                        help="only the issue-9 table (recenter_frames' stpsf model, OPD input, "
                        "companion separation); --offsets default 6, --wfe-nm default 60")
    parser.add_argument("--older-variants", action="store_true",
                        help="--issue9: fit-region and weight variants of the 'OPD older' case")
    parser.add_argument("--miri", action="store_true",
                        help="only the MIRI 4QPM table (stpsf truth; --offsets default 4)")
    args = parser.parse_args(argv)
    if args.miri:
        args.offsets = args.offsets or 4
    if args.issue9:
        args.offsets = args.offsets or 6
        if "--wfe-nm" not in (argv or __import__("sys").argv):
            args.wfe_nm = 60.0
    args.offsets = args.offsets or (3 if args.quick else 6)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.variants = not args.quick
    args.wfe_seeds = args.wfe_seeds or ([5] if args.quick else [5, 6])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(message)s")
    # the zero-offset rows warn "not converged" by design; the tables count non-convergence
    logging.getLogger("jwst_klipprep.algorithms.centering").setLevel(logging.ERROR)
    os.environ["STPSF_PATH"] = str(Path(args.stpsf_path).resolve())
    os.environ.pop("WEBBPSF_PATH", None)
    _quiet()
    cache = None
    if not args.no_cache:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.miri:
        run_miri(args)
        print(f"\n(total {time.perf_counter() - t0:.0f} s, machine load included)")
        return
    if args.issue9:
        run_issue9(args)
        print(f"\n(total {time.perf_counter() - t0:.0f} s; s / exposure = model computation "
              "+ fit, machine load included)")
        return
    print(f"# bench_recenter ({'quick' if args.quick else 'full'}): stpsf "
          f"{_stpsf_version()}, data {Path(args.stpsf_path).name}, {args.offsets} offsets per "
          f"filter, {args.repeats} noise realisation(s) per offset in case 1, {NINTS} "
          f"integrations per exposure, peak SNR 100-1000 per integration\n")
    entries, variants = run_synthetic(args, cache)
    print_table("Radial error of the combined star offset per exposure", entries)
    if variants:
        print_table("Variants of the forward fit (one noise realisation per offset)", variants)
    if not args.no_real:
        run_real(args, cache)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; s / exposure = cold model computation "
          f"+ fit, from the recorded compute times even when the PSFs came from the cache)")


if __name__ == "__main__":
    main()
