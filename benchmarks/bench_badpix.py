"""Benchmark of bad-pixel detection and repair: jwst_klipprep vs the prior art's default chain.

Run from the repository root::

    .venv/bin/python benchmarks/bench_badpix.py          # 8 x 35 x 320 x 320, both workloads
    .venv/bin/python benchmarks/bench_badpix.py --quick    # 2 x 12 x 160 x 160, about 15 s
    .venv/bin/python benchmarks/bench_badpix.py --no-prior-art --workload synthetic
    .venv/bin/python benchmarks/bench_badpix.py --workload association   # issue 10's workload
    .venv/bin/python benchmarks/bench_badpix.py --workload association --association miri \
        --n-exp 10                                   # the real MIRI F1140C frames

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

association (``--workload association``, both frame sets)
    The ``n_exp`` exposures of a workload form one detector group.  Defects are fixed on the
    detector (the same pixels in every exposure, >= 40 px from the star): isolated hot and cold
    pixels of 10, 30, 100 and 1000 ERR, 2x2 and 3x3 clusters (10-1000 ERR), two 30-px column
    segments (10 and 100 ERR), NaN pixels with DO_NOT_USE; each exposure also gets 30 cosmic rays
    (1-2 px, 10-1000 ERR, one integration) and three sky point sources (off-axis PSF, peak
    20-500 ERR) at places of its own.  Ours: `exposure_evidence` of each exposure,
    `find_persistent` over the group, then `find_and_repair` per exposure (``--assoc-find``).
    The table gives recall per kind, false flags on clean pixels (>= and < 40 px from the star),
    sky-source pixels flagged and flux change (r <= 3 px), the repair RMS over every injected
    pixel, and the wall and CPU seconds of the whole workload.

Injected defects of the per-file workloads, with the true value of each pixel known
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
MIRI_DIR = os.path.join(os.path.dirname(REAL_DIR), "miri_hd106906_f1140c")
# fix_bad_pixels' default band limit for MIRI F1140C (0.11"/px): 0.36 * 4.4 / 11.3 * 0.11 / 0.063
MIRI_LAM_OVER_D = 1.0 / (0.36 * 4.4 / 11.3 * 0.11 / 0.063)
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


def _real_cube(path, size, nints, off, comp_frac, bad_err=False):
    """A real frame cropped to at most ``size`` around CRPIX, a companion (``off`` at 300x the
    sky ERR, ``comp_frac`` x the side up and right of the star) added, replicated to ``nints``
    noiseless integrations; NaN (and with ``bad_err`` non-positive ERR) pixels NON_SCIENCE.
    Returns (truth, err, dq, star_yx, companion_yx)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        sci = hdul["SCI"].data[0].astype(np.float32)
        err = hdul["ERR"].data[0].astype(np.float32)
        star = (hdul["SCI"].header["CRPIX2"] - 1.0, hdul["SCI"].header["CRPIX1"] - 1.0)
    side = min(size, *sci.shape)
    y0 = int(np.clip(round(star[0]) - side // 2, 0, sci.shape[0] - side))
    x0 = int(np.clip(round(star[1]) - side // 2, 0, sci.shape[1] - side))
    sci, err = sci[y0:y0 + side, x0:x0 + side], err[y0:y0 + side, x0:x0 + side]
    star = (star[0] - y0, star[1] - x0)
    comp = (star[0] - comp_frac[0] * side, star[1] + comp_frac[1] * side)
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
    invalid = ~np.isfinite(truth) | ~np.isfinite(errc)
    if bad_err:
        invalid |= errc <= 0
    dq[invalid] |= NON_SCIENCE
    return truth, errc, dq, star, comp


def real_exposures(n_exp, nints, size, seed=0):
    """Yield the real frames (with a companion added) as noiseless truth; see module doc."""
    files = sorted(glob.glob(os.path.join(REAL_DIR, "*_calints.fits")))
    if not files:
        return
    _, off = _optics(64, seed=5)
    for path in files[:n_exp]:
        truth, errc, dq, star, comp = _real_cube(path, size, nints, off, (0.09, 0.07))
        yield truth, errc, dq, star, comp, os.path.basename(path)[:25]


def miri_exposures(n_exp, nints, size, seed=0):
    """The real MIRI F1140C target frames (science and the nine reference dithers; not the
    backgrounds), a companion added, replicated like `real_exposures`, cropped to at most
    ``size`` around CRPIX."""
    from astropy.io import fits

    files = []
    for path in sorted(glob.glob(os.path.join(MIRI_DIR, "*_calints.fits"))):
        with fits.open(path) as hdul:
            if not hdul[0].header.get("BKGDTARG", False):
                files.append(path)
    if not files:
        return
    _, off = _optics(64, seed=5, lam_over_d=MIRI_LAM_OVER_D)
    for path in files[:n_exp]:
        truth, errc, dq, star, comp = _real_cube(path, size, nints, off, (0.2, 0.15),
                                                 bad_err=True)
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


# ----------------------------------------------------------------------------- association
ASSOC_AMPLITUDES = (10, 30, 100, 1000)
STAR_MARGIN = 40.0  # defects, cosmic rays and sky sources are at least this far from the star
SOURCE_RADIUS = 3.0  # aperture of a sky source for the flag count and the flux change


def detector_defects(shape, star, rng):
    """Defects fixed on the detector (the same pixels in every exposure): a dict of label ->
    (2-D mask, amplitude in ERR per pixel, signed; NaN for DQ-flagged NaN pixels)."""
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    taken = np.hypot(yy - star[0], xx - star[1]) < STAR_MARGIN
    taken[:3, :] = taken[-3:, :] = taken[:, :3] = taken[:, -3:] = True

    def spot(h, w):
        for _ in range(10000):
            y, x = rng.integers(3, ny - 3 - h), rng.integers(3, nx - 3 - w)
            if not taken[y - 3:y + h + 3, x - 3:x + w + 3].any():
                taken[y - 3:y + h + 3, x - 3:x + w + 3] = True
                return y, x
        raise RuntimeError("no room left for a defect")

    n_iso = max(4, (ny * nx) // 2500)
    out = {}
    for amp in ASSOC_AMPLITUDES:
        for sign, label in ((1, "hot"), (-1, "cold")):
            items = []
            for _ in range(n_iso):
                m = np.zeros(shape, bool)
                m[spot(1, 1)] = True
                items.append((m, sign * amp))
            out[f"{label} {amp}"] = items
    for side in (2, 3):
        items = []
        for _ in range(max(2, n_iso // 4)):
            y, x = spot(side, side)
            m = np.zeros(shape, bool)
            m[y:y + side, x:x + side] = True
            items.append((m, float(np.exp(rng.uniform(np.log(10), np.log(1000))))))
        out[f"clusters {side}x{side}"] = items
    items = []
    for length, amp in ((30, 10.0), (30, 100.0)):
        y, x = spot(length, 1)
        m = np.zeros(shape, bool)
        m[y:y + length, x] = True
        items.append((m, amp))
    out["column segments"] = items
    items = []
    for _ in range(n_iso):
        m = np.zeros(shape, bool)
        m[spot(1, 1)] = True
        items.append((m, np.nan))
    out["NaN (DQ)"] = items
    return out, taken


def inject_association(truth, err, dq, rng, star, defects, taken, off_psf):
    """Noisy cube with the detector's defects, 30 cosmic rays and three sky point sources
    (an off-axis PSF, peak 20-500 ERR, at places of their own in this exposure).  Returns
    (data, err, dq, noisy, kinds, sources) with ``kinds`` label -> 3-D mask and ``sources`` a
    list of (y, x, 3-D aperture mask, injected flux image)."""
    nints, ny, nx = truth.shape
    taken = taken.copy()
    truth = truth.copy()
    err = err.copy()
    sources = []
    half = off_psf.shape[0] // 2
    for _ in range(3):
        for _ in range(10000):
            y, x = rng.uniform(12, ny - 12), rng.uniform(12, nx - 12)
            iy, ix = int(round(y)), int(round(x))
            if not taken[iy - 8:iy + 9, ix - 8:ix + 9].any():
                taken[iy - 8:iy + 9, ix - 8:ix + 9] = True
                break
        peak = np.exp(rng.uniform(np.log(20), np.log(500)))
        stamp = _fourier_shift(off_psf, y - iy, x - ix)
        img = np.zeros((ny, nx), np.float32)
        y0, x0 = iy - half, ix - half
        sy, sx = slice(max(y0, 0), min(y0 + off_psf.shape[0], ny)), \
            slice(max(x0, 0), min(x0 + off_psf.shape[1], nx))
        img[sy, sx] = stamp[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
        img *= peak * float(err[0, iy, ix]) / img[iy, ix]
        truth += img[None]
        err = np.sqrt(err**2 + GAIN * np.maximum(img, 0)[None]).astype(np.float32)
        yy, xx = np.mgrid[:ny, :nx]
        aper = np.hypot(yy - y, xx - x) <= SOURCE_RADIUS
        sources.append((y, x, np.broadcast_to(aper, truth.shape), img))
    noisy = (truth + rng.normal(size=truth.shape).astype(np.float32) * err).astype(np.float32)
    noisy[dq & NON_SCIENCE != 0] = np.nan
    data, err_out, dq = noisy.copy(), err.copy(), dq.copy()
    kinds = {}
    for label, items in defects.items():
        m3 = np.zeros(truth.shape, bool)
        for m, amp in items:
            mm = np.broadcast_to(m, truth.shape) & ((dq & NON_SCIENCE) == 0)
            if amp != amp:  # NaN + DO_NOT_USE
                data[mm] = np.nan
                dq[mm] |= DO_NOT_USE
            else:
                excess = amp * err[mm]
                data[mm] += excess
                err_out[mm] = np.sqrt(err[mm] ** 2 + GAIN * np.maximum(excess, 0))
            m3 |= mm
        kinds[label] = m3
    m3 = np.zeros(truth.shape, bool)
    for _ in range(30):
        for _ in range(10000):
            y, x = rng.integers(3, ny - 3), rng.integers(3, nx - 4)
            if not taken[y - 2:y + 3, x - 2:x + 4].any():
                taken[y - 2:y + 3, x - 2:x + 4] = True
                break
        k = rng.integers(nints)
        mm = np.zeros(truth.shape, bool)
        mm[k, y, x] = True
        if rng.random() < 0.5:
            mm[k, y, x + 1] = True
        excess = np.exp(rng.uniform(np.log(10), np.log(1000))) * err[mm]
        data[mm] += excess
        err_out[mm] = np.sqrt(err[mm] ** 2 + GAIN * np.maximum(excess, 0))
        m3 |= mm
    kinds["cosmic rays"] = m3
    return data, err_out, dq, noisy, truth, kinds, sources


def run_ours_association(cubes, lam_over_d=2.8, find=None):
    """Our chain on a group of exposures: association evidence, then each exposure."""
    t0, c0 = time.perf_counter(), time.process_time()
    evidence, bads, nonscis = [], [], []
    for data, err, dq in cubes:
        nonsci = badpix.find_dq(dq, bad_bits=NON_SCIENCE)
        bad = badpix.find_dq(dq, bad_bits=DO_NOT_USE, ignore_bits=NON_SCIENCE)
        bad |= badpix.find_nonfinite(data, ignore=nonsci)
        evidence.append(badpix.exposure_evidence(data, err=err, bad=bad | nonsci))
        bads.append(bad)
        nonscis.append(nonsci)
    persistent = badpix.find_persistent(evidence, lam_over_d=lam_over_d)
    outs = []
    for (data, err, _), bad, nonsci in zip(cubes, bads, nonscis, strict=True):
        res = badpix.find_and_repair(
            data, err=err, bad=bad, ignore=nonsci, find=find or ASSOC_FIND, fix=OURS_FIX,
            masks={"persistent": persistent.mask},
            fix_options={"interp": {"cutoff": 1.0 / lam_over_d}})
        outs.append((res.data, res.err, bad | res.found))
    return outs, persistent, time.perf_counter() - t0, time.process_time() - c0


ASSOC_FIND = ("persistent", "temporal")  # the step's default, less dq (no DQ flags here)
ASSOC_WORKLOADS = {  # label -> (name, frames, lambda / D in px of the band limit)
    "both": (("synthetic", synthetic_exposures, 2.8), ("real F444W", real_exposures, 2.8)),
    "synthetic": (("synthetic", synthetic_exposures, 2.8),),
    "real": (("real F444W", real_exposures, 2.8),),
    "miri": (("real MIRI F1140C", miri_exposures, MIRI_LAM_OVER_D),),
}


def run_association(name, exposures, seed, quiet=False, find=None, lam_over_d=2.8):
    rng = np.random.default_rng(seed)
    exposures = list(exposures)
    if not exposures:
        return None
    shape = exposures[0][0].shape
    star = exposures[0][3]
    defects, taken = detector_defects(shape[1:], star, rng)
    _, off = _optics(64, seed=5, lam_over_d=lam_over_d)
    cubes, extra = [], []
    for truth, err, dq, star_e, comp, _ in exposures:
        data, err_in, dq_in, noisy, truth_s, kinds, sources = inject_association(
            truth, err, dq, rng, star_e, defects, taken, off)
        cubes.append((data, err_in, dq_in))
        extra.append((truth_s, err, noisy, kinds, sources, star_e, comp))
    snapshots = [c[0].copy() for c in cubes]
    outs, persistent, wall, cpu = run_ours_association(cubes, find=find, lam_over_d=lam_over_d)
    for c, snap in zip(cubes, snapshots, strict=True):
        assert np.array_equal(c[0], snap, equal_nan=True), "ours modified its input"
    t = Tally()
    for (out, _, flagged), (_, _, dq_in), (truth, err0, noisy, kinds, sources,
                                                          star_e, comp) in zip(
            outs, cubes, extra, strict=True):
        nints, ny, nx = truth.shape
        yy, xx = np.mgrid[:ny, :nx]
        near_star = np.hypot(yy - star_e[0], xx - star_e[1]) < STAR_MARGIN
        nonsci = (dq_in & NON_SCIENCE) != 0
        defect = np.zeros(truth.shape, bool)
        for label, m in kinds.items():
            defect |= m
            t.add(f"recall {label}", int(flagged[m].sum()), int(m.sum()))
            ok = m & np.isfinite(out)
            z = (out[ok] - truth[ok]) / err0[ok]
            t.add(f"sq {label}", float(np.sum(z**2)), int(ok.sum()))
            t.add(f"nan {label}", int((m & ~np.isfinite(out)).sum()), 0)
        src_any = np.zeros(truth.shape, bool)
        for _, _, aper, img in sources:
            src_any |= aper
            t.add("source px flagged", int((flagged & aper).sum()), int(aper.sum()))
            flux = float(img[aper[0]].sum()) * nints
            change = float(np.nansum((out - noisy)[aper]))
            t.add("source flux change", abs(change) / flux, 1)
            t.add("source max flux change", 0, 0)
            t.c["source max flux change"] = (max(t.c["source max flux change"][0],
                                                 abs(change) / flux), 1)
        compm = np.broadcast_to(np.hypot(yy - comp[0], xx - comp[1]) <= SOURCE_RADIUS,
                                truth.shape)
        clean = ~defect & ~nonsci & ~src_any
        far = clean & ~near_star[None]
        t.add("ff far", int((flagged & far).sum()), int(far.sum()))
        t.add("ff near", int((flagged & clean & near_star[None]).sum()),
              int((clean & near_star[None]).sum()))
        t.add("ff comp", int((flagged & compm & clean).sum()), int((compm & clean).sum()))
        ok = defect & np.isfinite(out)
        z = (out[ok] - truth[ok]) / err0[ok]
        t.add("sq defects", float(np.sum(z**2)), int(ok.sum()))
        t.add("left NaN", int((~np.isfinite(out) & ~nonsci).sum()), 0)
        z = (out[clean] - noisy[clean]) / err0[clean]
        t.add("sq clean change", float(np.nansum(z**2)), int(clean.sum()))
    if not quiet:
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return dict(tally=t, wall=wall, cpu=cpu, n_exp=len(cubes), shape=shape, find=find or ASSOC_FIND,
                kinds=list(extra[0][3]), persistent=persistent)


def association_table(name, res):
    n_exp, shape, t = res["n_exp"], res["shape"], res["tally"]
    lines = [f"\n### association, {name}: {n_exp} x {shape[0]} x {shape[1]} x {shape[2]} "
             f"(defects fixed on the detector, 30 cosmic rays and 3 sky sources per exposure, "
             f"all >= {STAR_MARGIN:g} px from the star)\n",
             "| metric | ours | target |", "|---|---|---|"]
    for kind in res["kinds"]:
        target = ">= 99.5 %"
        lines.append(f"| recall {kind} | {fmt_pct(t.ratio(f'recall {kind}'))} | {target} |")
    lines.append(f"| false flags, clean pixels >= {STAR_MARGIN:g} px from the star | "
                 f"{100 * t.ratio('ff far'):.4f} % | <= 0.02 % |")
    lines.append(f"| false flags, clean pixels < {STAR_MARGIN:g} px (PSF; no target) | "
                 f"{100 * t.ratio('ff near'):.4f} % | |")
    lines.append(f"| false flags, star-fixed companion r <= {SOURCE_RADIUS:g} px | "
                 f"{100 * t.ratio('ff comp'):.4f} % | |")
    lines.append(f"| sky sources: pixels flagged (r <= {SOURCE_RADIUS:g} px) | "
                 f"{t.total('source px flagged'):d} of {t.c['source px flagged'][1]} | 0 |")
    lines.append(f"| sky sources: mean / max abs flux change | "
                 f"{100 * t.ratio('source flux change'):.3f} % / "
                 f"{100 * t.total('source max flux change'):.3f} % | <= 0.5 % |")
    lines.append(f"| repair RMS (out - true)/ERR, all injected pixels | "
                 f"{np.sqrt(t.ratio('sq defects')):.3g} | <= 1.5 |")
    for kind in res["kinds"]:
        lines.append(f"| repair RMS {kind} | {np.sqrt(t.ratio(f'sq {kind}')):.3g} | |")
    lines.append(f"| RMS change of clean pixels / ERR | "
                 f"{np.sqrt(t.ratio('sq clean change')):.3g} | |")
    lines.append(f"| pixels left NaN (not NON_SCIENCE) | {t.total('left NaN'):d} | 0 |")
    p = res["persistent"]
    lines.append(f"| persistent map: pixels / votes needed / PSF-like candidates kept out | "
                 f"{int(p.mask.sum())} / {p.min_votes} of {n_exp} / {p.n_psf_like} | |")
    lines.append(f"| detection methods | {', '.join(res['find'])} | |")
    lines.append(f"| seconds, whole workload: wall / CPU (box shared, see CPU) | "
                 f"{res['wall']:.2f} / {res['cpu']:.2f} | <= 4 |")
    return "\n".join(lines)


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
    p.add_argument("--workload", choices=("synthetic", "real", "both", "association", "all"),
                   default="all", help="both = the per-file workloads; association = the "
                   "association workloads (synthetic and real); all = every one")
    p.add_argument("--association", choices=tuple(ASSOC_WORKLOADS), default="both",
                   help="which association workloads to run")
    p.add_argument("--assoc-find", default=",".join(ASSOC_FIND),
                   help="detection methods of the association workloads (default: the step's, "
                   "less dq: %(default)s)")
    p.add_argument("--no-prior-art", action="store_true", help="only run ours")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    a = p.parse_args(argv)
    n_exp = a.n_exp or (2 if a.quick else 8)
    nints = a.nints or (12 if a.quick else 35)
    size = a.size or (160 if a.quick else 320)
    chains = ["ours"] if a.no_prior_art else ["ours", "prior art"]
    print(f"# Bad-pixel benchmark (numpy {np.__version__}, {os.cpu_count()} CPU)\n")
    print(f"per-file workloads: ours: find={list(OURS_FIND)}, fix={list(OURS_FIX)}, default "
          "options; prior art: sigclip(5, neg 1, +-1, 10 it)+timemed+localmed+medfilt(4)")
    print(f"association workloads: ours: exposure_evidence + find_persistent over the group, "
          f"then find={a.assoc_find.split(',')}, fix={list(OURS_FIX)} per exposure")
    if a.workload in ("association", "all"):
        for wl, gen, lam_over_d in ASSOC_WORKLOADS[a.association]:
            res = run_association(wl, gen(n_exp, nints, size, a.seed), a.seed + 7, a.quiet,
                                  find=a.assoc_find.split(","), lam_over_d=lam_over_d)
            if res is None:
                print(f"\n(association {wl} skipped: no frames)")
            else:
                print(association_table(wl, res))
    if a.workload in ("synthetic", "both", "all"):
        exposures = synthetic_exposures(n_exp, nints, size, a.seed)
        res = run_workload("synthetic", exposures, chains, a.seed, a.quiet)
        print(table("synthetic", res, chains))
    if a.workload in ("real", "both", "all"):
        exposures = real_exposures(n_exp, nints, size, a.seed)
        res = run_workload("real", exposures, chains, a.seed + 1, a.quiet)
        if res is None:
            print(f"\n(real workload skipped: no *_calints.fits in {os.path.normpath(REAL_DIR)})")
        else:
            print(table("real F444W frames", res, chains))


if __name__ == "__main__":
    main()
