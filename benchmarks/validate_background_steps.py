"""Validation of ``subtract_background`` / ``subtract_median`` on real MIRI frames, and step speed.

Run::

    python benchmarks/validate_background_steps.py [--real ../shared/data/real] [--quick]

Prints markdown tables:

1. real MIRI HD 106906 backgrounds (``miri_hd106906_f1140c``): one SCI_BG dither minus the other
   through ``SubtractBackgroundStep`` (residual median and spread against the frames' own noise),
   and the REF_BG exposure (another visit) minus the SCI_BG median without and with the scale fit;
2. the step on the science and reference exposures with their own backgrounds (the files given
   here were already background-subtracted by an earlier tool, so the interesting numbers are
   which background each target got and the levels);
3. speed and peak memory of ``SubtractBackgroundStep`` on a MIRI-sized workload (science
   60 x 224 x 288, two 60-integration backgrounds) and of ``SubtractMedianStep`` on
   8 x 35 x 320 x 320 NIRCam-sized frames.
"""

import argparse
import logging
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels

from jwst_klipprep.steps.subtract_background_step import SubtractBackgroundStep
from jwst_klipprep.steps.subtract_median_step import SubtractMedianStep

logging.disable(logging.WARNING)
warnings.simplefilter("ignore")

SCI = "jw01277019001_04101_00001_mirimage_calints.fits"
SCI_BG = ("jw01277022001_02101_00001_mirimage_calints.fits",
          "jw01277022001_02101_00002_mirimage_calints.fits")
REF = tuple(f"jw01194015001_04101_0000{i}_mirimage_calints.fits" for i in range(1, 10))
REF_BG = "jw01194019001_02101_00002_mirimage_calints.fits"


def _far_from_star(model, radius_px=25):
    ny, nx = model.data.shape[-2:]
    yy, xx = np.mgrid[:ny, :nx]
    cy, cx = model.meta.wcsinfo.crpix2 - 1, model.meta.wcsinfo.crpix1 - 1
    return np.hypot(yy - cy, xx - cx) > radius_px


def _stats(model, region=None):
    data = np.asarray(model.data, float)
    if region is not None:
        data = data[..., region]
    finite = data[np.isfinite(data)]
    med = np.median(finite)
    robust = 1.4826 * np.median(np.abs(finite - med))
    return med, np.std(finite), robust


def real_backgrounds(folder):
    rows = []
    b1, b2, rb = (datamodels.open(folder / n) for n in (*SCI_BG, REF_BG))
    target = b1.copy()
    target.meta.target.proposer_name = "HD-106906"
    target.meta.observation.bkgdtarg = False
    out = SubtractBackgroundStep.call([target, b2], configure_log=False)[0]
    med, std, robust = _stats(out)
    noise = np.sqrt(2) * np.nanmedian(b1.err)
    rows.append(("SCI_BG dither 1 - dither 2", med, std, robust, noise, "-"))
    rtarget = rb.copy()
    rtarget.meta.target.proposer_name = "HD-106906"
    rtarget.meta.observation.bkgdtarg = False
    for scale in (False, True):
        res = SubtractBackgroundStep.call([rtarget, b1, b2], scale=scale, configure_log=False)[0]
        med, std, robust = _stats(res)
        rec = res.meta.instance["klipprep"]["subtract_background"]
        fitted = f"{rec['scale'][0]:.4f} +- {rec['scale_err'][0]:.4f}" if scale else "-"
        rows.append((f"REF_BG - median(SCI_BG), scale={scale}", med, std, robust,
                     np.nanmedian(rb.err) * np.sqrt(1 + 1 / 2), fitted))
    print("\n### Real MIRI backgrounds (HD 106906 / HD 218261, F1140C), MJy/sr\n")
    print("| case | residual median | std | robust std | expected noise | fitted scale |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, med, std, robust, noise, fitted in rows:
        print(f"| {name} | {med:+.3f} | {std:.3f} | {robust:.3f} | {noise:.3f} | {fitted} |")

    names = [SCI, *REF, *SCI_BG, REF_BG]
    models = [datamodels.open(folder / n) for n in names]
    for model, name in zip(models, names, strict=True):
        model.meta.asn.exptype = ("background" if "02101" in name
                                  else "psf" if name in REF else "science")
    result = SubtractBackgroundStep.call(models, configure_log=False)
    print("\n### Science and references with their own backgrounds\n")
    print("(inputs already background-subtracted by the earlier tool: 'input far' ~ 0)\n")
    print("| exposure | background used | level subtracted | input far from star | "
          "output far from star |")
    print("|---|---|---:|---:|---:|")
    for before, after in zip(models, result, strict=True):
        rec = after.meta.instance["klipprep"]["subtract_background"]
        if "background_kind" not in rec:
            continue
        far = _far_from_star(before)
        print(f"| {after.meta.filename[:25]} | {rec['background_kind']} "
              f"({len(rec['background_files'])} file) | "
              f"{np.median(rec['median_level_subtracted']):.3f} | "
              f"{_stats(before, far)[0]:+.3f} | {_stats(after, far)[0]:+.3f} |")


def _cube(nints, ny, nx, seed, level, name):
    rng = np.random.default_rng(seed)
    data = (level + rng.normal(0, 0.3, (nints, ny, nx))).astype(np.float32)
    model = datamodels.CubeModel(data=data, err=np.full_like(data, 0.3),
                                 dq=np.zeros(data.shape, np.uint32))
    model.var_rnoise = np.full_like(data, 0.09)
    model.meta.filename = name
    model.meta.telescope = "JWST"
    model.meta.instrument.name = "MIRI"
    model.meta.instrument.filter = "F1140C"
    model.meta.instrument.coronagraph = "4QPM_1140"
    model.meta.exposure.type = "MIR_4QPM"
    model.meta.subarray.name = "MASK1140"
    model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = 120.75, 113.24
    return model


def _timed(func, repeat):
    best, peak = np.inf, 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak / 2**20


def speed(quick):
    nints = 10 if quick else 60
    sci = _cube(nints, 224, 288, 0, 15.0, "sci_calints.fits")
    sci.meta.target.proposer_name = "T"
    bkgs = [_cube(nints, 224, 288, s, 15.0, f"bg{s}_calints.fits") for s in (1, 2)]
    for b in bkgs:
        b.meta.target.proposer_name = "T-BACKGROUND"
        b.meta.observation.bkgdtarg = True
    inputs = [sci, *bkgs]
    in_mb = sum(m.data.nbytes * 4 for m in inputs) / 2**20  # data, err, var, dq
    print("\n### Speed (in-memory models, best of 3; the step copies its input)\n")
    print("| workload | seconds | peak traced MiB | input MiB |")
    print("|---|---:|---:|---:|")
    t, peak = _timed(lambda: SubtractBackgroundStep.call(inputs, configure_log=False), 3)
    print(f"| subtract_background: science {nints}x224x288 + 2 backgrounds of {nints} | "
          f"{t:.2f} | {peak:.0f} | {in_mb:.0f} |")
    nexp, nints2 = (2, 10) if quick else (8, 35)
    nrc = []
    for i in range(nexp):
        m = _cube(nints2, 320, 320, 10 + i, 0.2, f"n{i}_calints.fits")
        m.meta.instrument.name = "NIRCAM"
        m.meta.instrument.filter = "F444W"
        m.meta.instrument.coronagraph = "MASKA335R"
        m.meta.exposure.type = "NRC_CORON"
        m.meta.wcsinfo.crpix1, m.meta.wcsinfo.crpix2 = 150.2, 174.6
        nrc.append(m)
    t, peak = _timed(lambda: SubtractMedianStep.call(nrc, configure_log=False), 1)
    print(f"| subtract_median (masked): {nexp} x {nints2} x 320 x 320 | {t:.2f} | {peak:.0f} | "
          f"{sum(m.data.nbytes * 4 for m in nrc) / 2**20:.0f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
    parser.add_argument("--real", type=Path, default=default)
    parser.add_argument("--quick", action="store_true", help="smaller speed workload")
    args = parser.parse_args(argv)
    folder = args.real / "miri_hd106906_f1140c"
    if folder.is_dir():
        real_backgrounds(folder)
    else:
        print(f"(real data not found at {folder}: skipped)")
    speed(args.quick)


if __name__ == "__main__":
    main()
