"""Accuracy and speed of `measure_shift` and `shift_frames` (jwst_klipprep.algorithms).

Run from the repository root (takes about a minute; ``--quick`` for a smoke run)::

    .venv/bin/python benchmarks/bench_registration.py
    .venv/bin/python benchmarks/bench_registration.py --nints 35 --repeat 5 --order 8

It prints markdown tables:

1. synthetic coronagraph-like frames (320 x 320, an attenuated core and a speckle halo made of
   F444W-like Airy patterns, evaluated analytically at the shifted position, so the truth needs
   no interpolation), peak SNR ~300, NaN reference row/column, 0.5 % flagged pixels in the image
   and in the reference, weights = a round-mask transmission; sub-pixel and multi-pixel shifts;
2. the real NIRCam F444W frames in ``../shared/data/real/nircam_aumic_f444w`` (skipped when
   absent) with known shifts injected: (a) "as is": the frame itself is shifted (Fourier, exact
   for band-limited content) and noise at the ERR level added; its own noise is then shifted
   too, which no local kernel reproduces exactly (a floor for the test, not for real data);
   (b) "band-limited": the frame low-passed at the optical cut-off (0.40-0.50 cycles/px) as the
   truth, fresh ERR-level noise on both the reference and the image (``reference_err`` given) --
   what two real integrations look like; NaN edges and 0.5 % flagged pixels in both cases;
3. the real frames as given (already aligned by an earlier tool) re-registered to the first
   science frame;
4. seconds per integration of `measure_shift` (with and without a starting guess) and of
   `shift_frames` on a (35, 320, 320) float32 cube with per-integration shifts.

Timings are the best of ``--repeat`` runs, wall clock and CPU time of this process (the
machine may be shared: the CPU time is the more stable number).
"""

import argparse
import glob
import time
from pathlib import Path

import numpy as np
from scipy import fft as sp_fft
from scipy.special import j1

from jwst_klipprep.algorithms.registration import measure_shift
from jwst_klipprep.algorithms.shift import shift_frames

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real" / "nircam_aumic_f444w"


# --------------------------------------------------------------------------------------------
# synthetic frames


def airy(shape, center_yx, lam_d=2.24):
    y, x = np.indices(shape, dtype=float)
    r = np.hypot(y - center_yx[0], x - center_yx[1]) * np.pi / lam_d
    r = np.where(r == 0, 1e-12, r)
    return (2 * j1(r) / r) ** 2


def scene(shape, shift_yx, rng_seed=0, n_speckles=60):
    """Coronagraph-like scene (attenuated core + speckle halo + faint background)."""
    rng = np.random.default_rng(rng_seed)
    center = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2]) + np.asarray(shift_yx)
    image = 200 * airy(shape, center) + 0.2
    radius = rng.uniform(2.0, 40.0, n_speckles)
    angle = rng.uniform(0, 2 * np.pi, n_speckles)
    amplitude = rng.uniform(5, 100, n_speckles) * np.exp(-radius / 20)
    for r, a, amp in zip(radius, angle, amplitude, strict=True):
        image += amp * airy(shape, center + r * np.array([np.sin(a), np.cos(a)]))
    return image


def round_mask(shape, width=6.0):
    y, x = np.indices(shape, dtype=float)
    r2 = (y - (shape[0] - 1) / 2) ** 2 + (x - (shape[1] - 1) / 2) ** 2
    return 1 - 0.999 * np.exp(-r2 / (2 * width**2))


def add_defects(frames, rng, fraction=0.005):
    """NaN row/column 0 (as JWST calints) and flagged garbage pixels; returns frames, bad."""
    frames = np.array(frames, dtype=float)
    frames[..., 0, :] = np.nan
    frames[..., :, 0] = np.nan
    bad = rng.random(frames.shape) < fraction
    frames[bad] = 1e4
    return frames, bad


def errors(fit, truth):
    diff = fit.shift_yx - truth
    pull = diff / fit.shift_err_yx
    return (np.nanmax(np.abs(diff)), np.sqrt(np.nanmean(diff**2)), np.nanstd(pull),
            np.abs(np.nanmean(diff, axis=0)).max(), np.nanmax(np.abs(pull)))


def timed(func, repeat):
    """Best wall-clock and best CPU (process) time over ``repeat`` runs, and the result."""
    best, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = func()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return (best, best_cpu), result


def bench_synthetic(args, rng):
    shape, n = (320, 320), args.nints
    rows = []
    weights = round_mask(shape)
    reference_clean = scene(shape, (0, 0))
    for label, amplitude in (("sub-pixel", 0.5), ("multi-pixel", 5.0)):
        truth = rng.uniform(-amplitude, amplitude, (n, 2))
        clean = np.array([scene(shape, t) for t in truth])
        err = np.sqrt(0.05**2 + 0.002 * clean)  # peak SNR ~ 300
        image, bad = add_defects(clean + rng.normal(size=clean.shape) * err, rng)
        ref_err = np.sqrt(0.05**2 + 0.002 * reference_clean)
        reference = reference_clean + rng.normal(size=shape) * ref_err
        reference, ref_bad = add_defects(reference, rng)
        kwargs = dict(err=err, bad=bad, reference_bad=ref_bad, weights=weights,
                      reference_err=ref_err, order=args.order)
        t_cc, fit = timed(lambda r=reference, i=image, k=kwargs: measure_shift(r, i, **k),
                          args.repeat)
        guess = truth + rng.normal(0, 0.1, truth.shape)  # a commanded offset, good to ~0.1 px
        t_guess, fit_g = timed(lambda r=reference, i=image, k=kwargs, g=guess:
                               measure_shift(r, i, guess_yx=g, **k), args.repeat)
        mx, rms, pull, mean, worst = errors(fit, truth)
        rows.append((f"synthetic, {label} (+-{amplitude} px)", n, mx, rms, mean, pull, worst,
                     np.median(fit.shift_err_yx), np.divide(t_cc, n), np.divide(t_guess, n)))
    return rows


# --------------------------------------------------------------------------------------------
# real frames


def load(path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        sci = hdul["SCI"].data[0].astype(float)
        err = hdul["ERR"].data[0].astype(float)
    # the psfmask DATAMODL header is wrong: read its SCI extension directly
    with fits.open(str(path).replace("_calints.fits", "_calints_psfmask.fits")) as hdul:
        mask = hdul["SCI"].data.astype(float)
    return sci, err, mask


def low_pass(frame, cut_on=0.40, cut_off=0.50):
    """Keep spatial frequencies below the optical cut-off (cosine taper, cycles/px)."""
    valid = np.isfinite(frame)
    filled = np.where(valid, frame, np.nanmedian(frame))
    fy = sp_fft.fftfreq(frame.shape[0])[:, None]
    fx = sp_fft.rfftfreq(frame.shape[1])[None, :]
    rho = np.hypot(fy, fx)
    taper = np.clip((cut_off - rho) / (cut_off - cut_on), 0, 1)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    out = sp_fft.irfft2(sp_fft.rfft2(filled) * taper, s=frame.shape)
    return np.where(valid, out, np.nan)


def bench_real(args, rng, files):
    rows = []
    n = max(2, args.nints // 4)
    results = {}
    for path in files:
        sci, err, mask = load(path)
        err = np.where(np.isfinite(err), err, np.nan)
        for label, amplitude in (("sub-pixel", 0.5), ("multi-pixel", 5.0)):
            truth = rng.uniform(-amplitude, amplitude, (n, 2))
            for variant in ("as is", "band-limited"):
                base = sci if variant == "as is" else low_pass(sci)
                shifted = shift_frames(np.broadcast_to(base, (n,) + base.shape), truth,
                                       method="fourier").data
                image = shifted + rng.normal(size=shifted.shape) * np.nan_to_num(err)
                image, bad = add_defects(image, rng)
                reference, ref_err = base, None
                if variant == "band-limited":
                    reference = base + rng.normal(size=base.shape) * np.nan_to_num(err)
                    ref_err = err
                reference, ref_bad = add_defects(reference, rng)
                start, start_cpu = time.perf_counter(), time.process_time()
                fit = measure_shift(reference, image, err=np.broadcast_to(err, image.shape),
                                    bad=bad, reference_bad=ref_bad, weights=mask,
                                    reference_err=ref_err, order=args.order)
                elapsed = np.array([time.perf_counter() - start, time.process_time() - start_cpu])
                key = (variant, label, amplitude)
                results.setdefault(key, []).append((fit, truth, elapsed))
    for (variant, label, amplitude), items in results.items():
        diff = np.concatenate([f.shift_yx - t for f, t, _ in items])
        sig = np.concatenate([f.shift_err_yx for f, _, _ in items])
        count = diff.shape[0]
        seconds = sum(e for _, _, e in items) / count  # (wall, cpu)
        mean = max(np.abs(np.nanmean(f.shift_yx - t, axis=0)).max() for f, t, _ in items)
        rows.append((f"real F444W, {variant}, {label} (+-{amplitude} px)", count,
                     np.nanmax(np.abs(diff)), np.sqrt(np.nanmean(diff**2)), mean,
                     np.nanstd(diff / sig), np.nanmax(np.abs(diff / sig)), np.median(sig),
                     seconds, None))
    return rows


def bench_real_as_given(args, files):
    sci0, err0, mask = load(files[0])
    rows = []
    for path in files:
        sci, err, _ = load(path)
        out = []
        for weights in (mask, None):
            fit = measure_shift(sci0, sci, err=err, reference_err=err0, weights=weights,
                                order=args.order)
            out.append(fit)
        rows.append((Path(path).name[:13], out[0], out[1]))
    return rows


# --------------------------------------------------------------------------------------------
# speed of shift_frames


def bench_shift_speed(args, rng):
    shape = (35, 320, 320)
    data = rng.normal(size=shape).astype(np.float32)
    data[:, 0], data[:, :, 0] = np.nan, np.nan
    err = np.abs(rng.normal(size=shape)).astype(np.float32)
    dq = rng.integers(0, 4, size=shape).astype(np.uint32)
    var = {k: err**2 for k in ("var_poisson", "var_rnoise", "var_flat")}
    shifts = rng.uniform(-3, 3, (shape[0], 2))
    rows = []
    for method in ("sinc", "lanczos", "fourier"):
        t_data, _ = timed(lambda m=method: shift_frames(data, shifts, method=m), args.repeat)
        t_all, _ = timed(lambda m=method: shift_frames(data, shifts, err=err, dq=dq, method=m),
                         args.repeat)
        t_var, _ = timed(lambda m=method: shift_frames(data, shifts, err=err, dq=dq, var=var,
                                                       method=m), args.repeat)
        rows.append((method, t_data, t_all, t_var))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with the real *_calints.fits and *_psfmask.fits")
    parser.add_argument("--nints", type=int, default=35,
                        help="integrations per synthetic case (real: nints/4 per file and case)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--order", type=int, default=None, help="kernel order of the fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="few integrations, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.nints, args.repeat = 6, 1
    rng = np.random.default_rng(args.seed)

    header = ("| case | n | max error (px) | rms error (px) | common error (px) | pull std "
              "| max pull | median sigma (px) | s / int., CC start: wall (cpu) "
              "| s / int., guess: wall (cpu) |")
    print("## measure_shift: injected shifts\n")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = bench_synthetic(args, rng)
    files = sorted(glob.glob(str(args.data_dir / "*_calints.fits")))
    if files:
        rows += bench_real(args, rng, files)
    def fmt(t):
        return "" if t is None else f"{t[0]:.3f} ({t[1]:.3f})"

    for name, n, mx, rms, mean, pull, worst, sig, t1, t2 in rows:
        print(f"| {name} | {n} | {mx:.4f} | {rms:.4f} | {mean:.4f} | {pull:.2f} | {worst:.1f} "
              f"| {sig:.4f} | {fmt(t1)} | {fmt(t2)} |")
    print("\ncommon error: largest mean error over the integrations that share one reference "
          "(its noise is common to them). pull: error / sigma; the 'as is' rows shift the "
          "frame's own noise (not reproducible by any local kernel), so their sigma misses that "
          "part.")
    if not files:
        print(f"\n(real frames skipped: no *_calints.fits in {args.data_dir})")
    else:
        print("\n## measure_shift: real frames as given, registered to the first science "
              "frame\n")
        print("| file | dy, dx (px), transmission-weighted | sigma (px) | dy, dx (px), "
              "unweighted | scale | chi2_red |")
        print("|---|---|---|---|---|---|")
        for name, fit_w, fit_u in bench_real_as_given(args, files):
            print(f"| {name} | {fit_w.shift_yx[0, 0]:+.4f}, {fit_w.shift_yx[0, 1]:+.4f} "
                  f"| {fit_w.shift_err_yx[0, 0]:.4f}, {fit_w.shift_err_yx[0, 1]:.4f} "
                  f"| {fit_u.shift_yx[0, 0]:+.4f}, {fit_u.shift_yx[0, 1]:+.4f} "
                  f"| {fit_w.scale[0]:.3f} | {fit_w.chi2_red[0]:.2f} |")

    print("\n## shift_frames: (35, 320, 320) float32, per-integration shifts, NaN edges "
          "(seconds, best of %d)\n" % args.repeat)
    print("wall (cpu) seconds; fourier uses the FFT's threads\n")
    print("| method | data | data + err + dq | data + err + dq + 3 var |")
    print("|---|---|---|---|")
    for method, t_data, t_all, t_var in bench_shift_speed(args, rng):
        print(f"| {method} | {fmt(t_data)} | {fmt(t_all)} | {fmt(t_var)} |")
    per_int = [r[9] for r in rows if r[9] is not None]
    if per_int:
        wall = 280 * min(t[0] for t in per_int)
        cpu = 280 * min(t[1] for t in per_int)
        print(f"\nmeasure_shift workload estimate, 8 exposures x 35 integrations of 320 x 320 "
              f"from a starting guess: {wall:.1f} s wall, {cpu:.1f} s cpu")


if __name__ == "__main__":
    main()
