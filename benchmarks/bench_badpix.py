"""Benchmark of bad-pixel detection and repair: jwst_klipprep vs the prior art's default chain.

Run from the repository root::

    .venv/bin/python benchmarks/bench_badpix.py          # 8 x 35 x 320 x 320, both workloads
    .venv/bin/python benchmarks/bench_badpix.py --quick    # 2 x 12 x 160 x 160, about 15 s
    .venv/bin/python benchmarks/bench_badpix.py --no-prior-art --workload synthetic

Workloads
---------
synthetic
    ``n_exp`` exposures x ``nints`` x ``size`` x ``size`` float32: a coronagraphic PSF from a
    Fourier-optics model (Lyot pupil with random phase aberrations, on-axis field removed to 99.5 %
    in amplitude, 2x oversampled then binned), a companion, a background, per-integration pointing
    jitter (0.02 px rms) and Gaussian noise with ERR = sqrt(read^2 + gain * signal) scaled like the
    real F444W frames.
real
    The frames in ``../shared/data/real/nircam_aumic_f444w/*_calints.fits`` (SCI, ERR, one
    integration each) with a companion added, replicated to ``nints`` integrations with Gaussian
    noise at the ERR level.  Row 0 and column 0 are NaN there: they get NON_SCIENCE.  Skipped when
    the folder is absent.

Injected defects, with the true value of each pixel known
    isolated static hot and cold pixels of 3, 5, 10, 30, 100 and 1000 ERR (unflagged), 2x2 and
    3x3 hot clusters (unflagged, 20 to 1000 ERR), a bad column and scattered NaN pixels (NaN and
    DO_NOT_USE, as in calints), cosmic-ray-like hits in one integration (1 or 2 pixels, 10 to
    1000 ERR, unflagged).  Hot defects get their ERR inflated by the Poisson term.

Metrics (per workload, ours and the prior art side by side)
    recall by amplitude and kind (a defect pixel counts once per integration); false-flag rate on
    clean pixels overall, within 20 px of the star and within 3 px of the companion; RMS of
    (output - true) / ERR over the defect pixels, with true = the noiseless value, for all
    defects and for the repaired ones; the RMS change of clean pixels; the pull
    (output - pre-injection value) / output ERR of repaired pixels (1 = honest ERR); pixels left
    NaN outside NON_SCIENCE; seconds for the whole workload (detection + repair) and the peak
    memory (tracemalloc) of one exposure.
"""

import argparse
import glob
import os
import sys
import time
import tracemalloc

import numpy as np
from scipy import ndimage

try:
    from jwst_klipprep.algorithms import badpix
except ImportError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    from jwst_klipprep.algorithms import badpix
try:
    from benchmarks import prior_art_badpix
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import prior_art_badpix

DO_NOT_USE, NON_SCIENCE = 1, 512  # jwst dqflags.pixel values, used to build the test DQ
REAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                        "shared", "data", "real", "nircam_aumic_f444w")
AMPLITUDES = (3, 5, 10, 30, 100, 1000)
CORE_RADIUS, COMP_RADIUS = 20.0, 3.0
READ_ERR, GAIN = 0.18, 0.0024  # ERR^2 = READ_ERR^2 + GAIN * signal (fit to the F444W frames)

# Our chain, defaults of the step (the benchmark is where they were chosen).
OURS_FIND = ("temporal", "spatial")
OURS_FIX = ("temporal", "interp")


# ----------------------------------------------------------------------------- scenes
def _optics(n_pix, seed, oversample=2, lam_over_d=2.8):
    """Coronagraphic and off-axis PSFs (peak-normalised to the off-axis PSF), n_pix square."""
    rng = np.random.default_rng(seed)
    n = n_pix * oversample
    u = (np.arange(n) - n // 2)[:, None], (np.arange(n) - n // 2)[None, :]
    radius = n / (lam_over_d * oversample) / 2.0
    r = np.hypot(*u)
    pupil = (r < radius) & (r > 0.3 * radius)
    for ang in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        along = u[1] * np.cos(ang) + u[0] * np.sin(ang)
        across = -u[1] * np.sin(ang) + u[0] * np.cos(ang)
        pupil &= ~((np.abs(across) < 1.0) & (along > 0))
    freq = np.fft.fftfreq(n)
    fr = np.hypot(freq[:, None], freq[None, :])
    fr[0, 0] = 1.0
    screen = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * fr**-1.4).real
    screen *= 0.08 / screen[pupil].std()
    field = pupil * np.exp(1j * screen)
    coron = field - 0.995 * pupil * field[pupil].mean()

    def image(f):
        amp = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(f)))
        img = np.abs(amp) ** 2
        return img.reshape(n_pix, oversample, n_pix, oversample).sum(axis=(1, 3))

    off = image(field)
    peak = off.max()
    return image(coron) / peak, off / peak


def _fourier_shift(img, dy, dx):
    ky = np.fft.fftfreq(img.shape[-2])[:, None]
    kx = np.fft.rfftfreq(img.shape[-1])[None, :]
    dy, dx = np.asarray(dy)[..., None, None], np.asarray(dx)[..., None, None]
    ph = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return np.fft.irfft2(np.fft.rfft2(img) * ph, s=img.shape[-2:])


def synthetic_exposures(n_exp, nints, size, seed=0):
    """Yield (truth, err, dq, star_yx, comp_yx, name) for the synthetic workload."""
    rng = np.random.default_rng(seed)
    for e in range(n_exp):
        coron, off = _optics(size, seed=1000 + e)
        c = size // 2
        ang = np.deg2rad(10.0 * e)
        sep = 0.11 * size
        comp = (c + sep * np.cos(ang), c + sep * np.sin(ang))
        star = 1.5e5 * coron + 0.1
        comp_img = 300.0 * _fourier_shift(off, comp[0] - c, comp[1] - c)
        scene = star + comp_img
        jit = rng.normal(scale=0.02, size=(2, nints))
        truth = _fourier_shift(scene, jit[0], jit[1]).astype(np.float32)
        err = np.sqrt(READ_ERR**2 + GAIN * np.maximum(truth, 0)).astype(np.float32)
        dq = np.zeros(truth.shape, np.uint32)
        yield truth, err, dq, (float(c), float(c)), comp, f"synthetic-{e}"


def real_exposures(n_exp, nints, size, seed=0):
    """Yield the real frames (with a companion added) as noiseless truth; see module doc."""
    files = sorted(glob.glob(os.path.join(REAL_DIR, "*_calints.fits")))
    if not files:
        return
    from astropy.io import fits

    _, off = _optics(64, seed=5)
    for path in files[:n_exp]:
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data[0].astype(np.float32)
            err = hdul["ERR"].data[0].astype(np.float32)
            star = (hdul["SCI"].header["CRPIX2"] - 1.0, hdul["SCI"].header["CRPIX1"] - 1.0)
        y0 = int(np.clip(round(star[0]) - size // 2, 0, sci.shape[0] - size))
        x0 = int(np.clip(round(star[1]) - size // 2, 0, sci.shape[1] - size))
        sci, err = sci[y0:y0 + size, x0:x0 + size], err[y0:y0 + size, x0:x0 + size]
        star = (star[0] - y0, star[1] - x0)
        comp = (star[0] - 0.09 * size, star[1] + 0.07 * size)
        sky = np.nanmedian(err)
        stamp = _fourier_shift(off, comp[0] % 1, comp[1] % 1) * 300.0 * sky
        iy, ix = int(comp[0]) - 32, int(comp[1]) - 32
        add = np.zeros_like(sci)
        add[iy:iy + 64, ix:ix + 64] = stamp  # the companion is well inside the frame
        sci = sci + add
        # the frame's own ERR already holds its signal; add the companion's Poisson term
        err = np.sqrt(err**2 + GAIN * np.maximum(add, 0))
        truth = np.repeat(sci[None], nints, axis=0)
        errc = np.repeat(err[None], nints, axis=0).astype(np.float32)
        dq = np.zeros(truth.shape, np.uint32)
        dq[~np.isfinite(truth) | ~np.isfinite(errc)] |= NON_SCIENCE
        yield truth, errc, dq, star, comp, os.path.basename(path)[:25]


# ----------------------------------------------------------------------------- defects
def inject(truth, err, dq, rng, star_yx):
    """Noisy cube with defects; returns (data, err, dq, noisy, kinds) where ``kinds`` maps a
    label to a boolean (nints, ny, nx) mask of defect pixels."""
    nints, ny, nx = truth.shape
    noisy = (truth + rng.normal(size=truth.shape).astype(np.float32) * err).astype(np.float32)
    noisy[dq & NON_SCIENCE != 0] = np.nan
    data, err_out, dq = noisy.copy(), err.copy(), dq.copy()
    kinds = {}
    taken = np.zeros((ny, nx), bool)
    taken[:2, :] = taken[-2:, :] = taken[:, :2] = taken[:, -2:] = True
    taken |= (dq[0] & NON_SCIENCE) != 0

    def spot(h, w):
        while True:
            y, x = rng.integers(2, ny - 2 - h), rng.integers(2, nx - 2 - w)
            if not taken[y - 2:y + h + 2, x - 2:x + w + 2].any():
                taken[y - 2:y + h + 2, x - 2:x + w + 2] = True
                return y, x

    def hot(mask, amp):  # add amp ERR (per pixel) and the Poisson ERR of the excess
        excess = amp * err[mask]
        data[mask] += excess
        err_out[mask] = np.sqrt(err[mask] ** 2 + GAIN * np.maximum(excess, 0))

    n_iso = max(4, (ny * nx) // 2500)
    for amp in AMPLITUDES:
        for sign, label in ((1, "hot"), (-1, "cold")):
            m = np.zeros(truth.shape, bool)
            for _ in range(n_iso):
                y, x = spot(1, 1)
                m[:, y, x] = True
            hot(m, sign * amp)
            kinds[f"{label} {amp}"] = m
    m = np.zeros(truth.shape, bool)
    for side in (2, 3):
        for _ in range(max(2, n_iso // 4)):
            y, x = spot(side, side)
            amp = np.exp(rng.uniform(np.log(20), np.log(1000)))
            mm = np.zeros(truth.shape, bool)
            mm[:, y:y + side, x:x + side] = True
            hot(mm, amp)
            m |= mm
    kinds["clusters"] = m
    m = np.zeros(truth.shape, bool)
    for _ in range(n_iso * 2):
        y, x = spot(1, 2)
        k = rng.integers(nints)
        amp = np.exp(rng.uniform(np.log(10), np.log(1000)))
        mm = np.zeros(truth.shape, bool)
        mm[k, y, x] = True
        if rng.random() < 0.5:
            mm[k, y, x + 1] = True
        hot(mm, amp)
        m |= mm
    kinds["cosmic rays"] = m
    m = np.zeros(truth.shape, bool)
    x = int(rng.integers(nx // 8, nx - nx // 8))
    m[:, 2:ny - 2, x] = True
    for _ in range(n_iso):
        y, xx = spot(1, 1)
        m[:, y, xx] = True
    m &= (dq & NON_SCIENCE) == 0
    data[m] = np.nan
    dq[m] |= DO_NOT_USE
    kinds["column + NaN (DQ)"] = m
    return data, err_out, dq, noisy, kinds


# ----------------------------------------------------------------------------- chains
def run_ours(data, err, dq):
    t0 = time.perf_counter()
    nonsci = badpix.find_dq(dq, bad_bits=NON_SCIENCE)
    bad = badpix.find_dq(dq, bad_bits=DO_NOT_USE, ignore_bits=NON_SCIENCE)
    bad |= badpix.find_nonfinite(data, ignore=nonsci)
    res = badpix.find_and_repair(data, err=err, bad=bad, find=OURS_FIND, fix=OURS_FIX)
    return res.data, res.err, bad | res.found, time.perf_counter() - t0


def run_prior(data, err, dq):
    t0 = time.perf_counter()
    res = prior_art_badpix.prior_art_chain(data, err, dq, do_not_use=DO_NOT_USE,
                                           non_science=NON_SCIENCE)
    return res.data, res.err, res.flagged, time.perf_counter() - t0


CHAINS = {"ours": run_ours, "prior art": run_prior}


def repair_only(name, data, err, mask):
    """The repair methods alone, given the true defect mask (detection taken out)."""
    if name == "ours":
        out, out_err = data, err
        for method in OURS_FIX:
            res = badpix.repair(out, mask, err=out_err, method=method)
            out, out_err, mask = res.data, res.err, res.remaining
        return out, out_err
    d, e, b = prior_art_badpix.timemed(data, err, mask)
    d, e, b = prior_art_badpix.localmed(d, e, b)
    d, e, _ = prior_art_badpix.medfilt(d, e, b)
    return d, e


def peak_memory(func, *args):
    tracemalloc.start()
    try:
        func(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- metrics
class Tally:
    """Accumulates counts over exposures for one chain."""

    def __init__(self):
        self.c = {}

    def add(self, key, num, den=1):
        a, b = self.c.get(key, (0, 0))
        self.c[key] = (a + num, b + den)

    def ratio(self, key):
        a, b = self.c.get(key, (0, 0))
        return a / b if b else float("nan")

    def total(self, key):
        return self.c.get(key, (0, 0))[0]


def score(t, out, out_err, flagged, truth, err, noisy, dq, kinds, star, comp, contrast, alone):
    nints, ny, nx = truth.shape
    yy, xx = np.mgrid[:ny, :nx]
    core = np.hypot(yy - star[0], xx - star[1]) <= CORE_RADIUS
    compm = np.hypot(yy - comp[0], xx - comp[1]) <= COMP_RADIUS
    nonsci = (dq & NON_SCIENCE) != 0
    defect = np.zeros(truth.shape, bool)
    for label, m in kinds.items():
        defect |= m
        if "DQ" not in label:
            t.add(f"recall {label}", int(flagged[m].sum()), int(m.sum()))
            out_core = m & ~core
            t.add(f"recall {label} out of core", int(flagged[out_core].sum()), int(out_core.sum()))
        amp = label.split()[-1]
        if amp.isdigit():  # defects that stand out of the local PSF structure
            dist = m & (contrast < 0.5 * int(amp) * err)
            t.add(f"recall {label} distinct", int(flagged[dist].sum()), int(dist.sum()))
        good = m & np.isfinite(out)
        z = (out[good] - truth[good]) / err[good]
        t.add(f"sq {label}", float(np.sum(z**2)), int(good.sum()))
    clean = ~defect & ~nonsci
    t.add("ff all", int((flagged & clean).sum()), int(clean.sum()))
    t.add("ff core", int((flagged & clean & core).sum()), int((clean & core).sum()))
    t.add("ff comp", int((flagged & clean & compm).sum()), int((clean & compm).sum()))
    ok = defect & np.isfinite(out)
    z = (out[ok] - truth[ok]) / err[ok]
    t.add("sq defects", float(np.sum(z**2)), int(ok.sum()))
    rep = ok & flagged
    z = (out[rep] - truth[rep]) / err[rep]
    t.add("sq repaired", float(np.sum(z**2)), int(rep.sum()))
    pull_ok = rep & np.isfinite(noisy) & (out_err > 0)
    z = (out[pull_ok] - noisy[pull_ok]) / out_err[pull_ok]
    t.add("sq pull", float(np.sum(z**2)), int(pull_ok.sum()))
    z = (out[clean] - noisy[clean]) / err[clean]
    t.add("sq clean change", float(np.nansum(z**2)), int(clean.sum()))
    t.add("left NaN", int((~np.isfinite(out) & ~nonsci).sum()), 0)
    rep_out, rep_err = alone
    z = (rep_out[defect] - truth[defect]) / err[defect]
    t.add("sq repair only", float(np.nansum(z**2)), int(np.isfinite(z).sum()))
    z = (rep_out[defect] - noisy[defect]) / rep_err[defect]
    t.add("sq repair only pull", float(np.nansum(z**2)), int(np.isfinite(z).sum()))


def run_workload(name, exposures, chains, seed, quiet=False):
    tallies = {c: Tally() for c in chains}
    seconds = {c: 0.0 for c in chains}
    memory = {}
    rng = np.random.default_rng(seed)
    n_exp = 0
    for truth, err, dq, star, comp, label in exposures:
        data, err_in, dq_in, noisy, kinds = inject(truth, err, dq, rng, star)
        snapshot = data.copy()
        contrast = (ndimage.maximum_filter(truth, size=(1, 3, 3))
                    - ndimage.minimum_filter(truth, size=(1, 3, 3)))
        defect = np.zeros(truth.shape, bool)
        for m in kinds.values():
            defect |= m
        for c in chains:
            out, out_err, flagged, sec = CHAINS[c](data, err_in, dq_in)
            assert np.array_equal(data, snapshot, equal_nan=True), f"{c} modified its input"
            seconds[c] += sec
            rep = repair_only(c, data, err_in, defect)
            score(tallies[c], out, out_err, flagged, truth, err, noisy, dq_in, kinds, star, comp,
                  contrast, rep)
            if c not in memory:
                memory[c] = peak_memory(CHAINS[c], data, err_in, dq_in)
        n_exp += 1
        if not quiet:
            print(f"  {name}: {label} done", file=sys.stderr, flush=True)
    if n_exp == 0:
        return None
    return dict(tallies=tallies, seconds=seconds, memory=memory, n_exp=n_exp, shape=truth.shape,
                kinds=list(kinds))


def fmt_pct(x):
    return "n/a" if x != x else f"{100 * x:.2f} %"


def table(name, res, chains):
    n_exp, shape = res["n_exp"], res["shape"]
    lines = [f"\n### {name}: {n_exp} x {shape[0]} x {shape[1]} x {shape[2]}\n",
             "| metric | " + " | ".join(chains) + " |",
             "|---|" + "---|" * len(chains)]
    tl = res["tallies"]

    def row(label, f):
        lines.append(f"| {label} | " + " | ".join(f(tl[c]) for c in chains) + " |")

    for kind in res["kinds"]:
        if "DQ" in kind:
            continue
        row(f"recall {kind}", lambda t, k=kind: fmt_pct(t.ratio(f"recall {k}")))
    for kind in res["kinds"]:
        if kind.split()[-1].isdigit():
            row(f"recall {kind}, where it exceeds 2x the local PSF contrast",
                lambda t, k=kind: fmt_pct(t.ratio(f"recall {k} distinct")))
    for kind in ("hot 10", "cold 10", "hot 30", "cold 30"):
        row(f"recall {kind}, outside core",
            lambda t, k=kind: fmt_pct(t.ratio(f"recall {k} out of core")))
    row("false flags, clean pixels", lambda t: f"{100 * t.ratio('ff all'):.4f} %")
    row(f"false flags, core r <= {CORE_RADIUS:g} px",
        lambda t: f"{100 * t.ratio('ff core'):.4f} %")
    row(f"false flags, companion r <= {COMP_RADIUS:g} px",
        lambda t: f"{100 * t.ratio('ff comp'):.4f} %")
    row("RMS (out - true)/ERR, all defects", lambda t: f"{np.sqrt(t.ratio('sq defects')):.3g}")
    row("RMS (out - true)/ERR, the defects this chain flagged (a different set per chain)",
        lambda t: f"{np.sqrt(t.ratio('sq repaired')):.3g}")
    for kind in res["kinds"]:
        row(f"RMS {kind}", lambda t, k=kind: f"{np.sqrt(t.ratio(f'sq {k}')):.3g}")
    row("RMS change of clean pixels / ERR", lambda t: f"{np.sqrt(t.ratio('sq clean change')):.3g}")
    row("repair only (true mask): RMS (out - true)/ERR",
        lambda t: f"{np.sqrt(t.ratio('sq repair only')):.3g}")
    row("repair only (true mask): pull std",
        lambda t: f"{np.sqrt(t.ratio('sq repair only pull')):.3g}")
    row("pull std (out - pre-injection)/ERR_out, flagged defects",
        lambda t: f"{np.sqrt(t.ratio('sq pull')):.3g}")
    row("pixels left NaN (not NON_SCIENCE)", lambda t: f"{t.total('left NaN'):d}")
    seconds = " | ".join(f"{res['seconds'][c]:.2f}" for c in chains)
    memory = " | ".join(f"{res['memory'][c]:.0f}" for c in chains)
    lines.append(f"| seconds, whole workload (detection + repair) | {seconds} |")
    lines.append(f"| peak memory, one exposure (MiB, tracemalloc) | {memory} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 x 12 x 160 x 160 instead of 8 x 35 x 320 x 320")
    p.add_argument("--n-exp", type=int, default=None)
    p.add_argument("--nints", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--workload", choices=("synthetic", "real", "both"), default="both")
    p.add_argument("--no-prior-art", action="store_true", help="only run ours")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    a = p.parse_args(argv)
    n_exp = a.n_exp or (2 if a.quick else 8)
    nints = a.nints or (12 if a.quick else 35)
    size = a.size or (160 if a.quick else 320)
    chains = ["ours"] if a.no_prior_art else ["ours", "prior art"]
    print(f"# Bad-pixel benchmark (numpy {np.__version__}, {os.cpu_count()} CPU)\n")
    print(f"ours: find={list(OURS_FIND)}, fix={list(OURS_FIX)}, default options; "
          "prior art: sigclip(5, neg 1, +-1, 10 it)+timemed+localmed+medfilt(4)")
    if a.workload in ("synthetic", "both"):
        exposures = synthetic_exposures(n_exp, nints, size, a.seed)
        res = run_workload("synthetic", exposures, chains, a.seed, a.quiet)
        print(table("synthetic", res, chains))
    if a.workload in ("real", "both"):
        exposures = real_exposures(n_exp, nints, size, a.seed)
        res = run_workload("real", exposures, chains, a.seed + 1, a.quiet)
        if res is None:
            print(f"\n(real workload skipped: no *_calints.fits in {os.path.normpath(REAL_DIR)})")
        else:
            print(table("real F444W frames", res, chains))


if __name__ == "__main__":
    main()
