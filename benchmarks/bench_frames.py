"""Benchmark of coadd_frames and blur_frames (speed, error calibration).

Run from the repository root::

    .venv/bin/python benchmarks/bench_frames.py           # about 30 s
    .venv/bin/python benchmarks/bench_frames.py --quick   # smaller cube

Speed
    A ``nints x ny x nx`` float32 cube (default 60 x 320 x 320, a NIRCam SUB320 exposure) with
    ERR, three VAR_* arrays and 1 % flagged pixels: `coadd_frames` (median and mean, blocks of
    10) and `blur_frames` (FWHM 2 px).  Wall and CPU seconds of one run (the machine may be
    shared: CPU time is the steadier number).

Error calibration
    Pure Gaussian noise of known sigma: the ratio of the actual scatter of the output to the
    propagated ERR (1.00 = calibrated), for the median of n = 2, 3, 4, 5, 10 and 60 values, the
    mean, and the blur (which correlates neighbouring pixels, so the scatter is per pixel).
"""

import argparse
import time

import numpy as np

from jwst_klipprep.algorithms.blur import blur_frames
from jwst_klipprep.algorithms.coadd import coadd_frames


def _timed(function):
    t0, c0 = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - t0, time.process_time() - c0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    nints, ny, nx = (20, 160, 160) if args.quick else (60, 320, 320)
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (nints, ny, nx)).astype(np.float32)
    err = np.ones_like(data)
    var = {k: np.full_like(data, f) for k, f in (("var_poisson", 0.6), ("var_rnoise", 0.35),
                                                  ("var_flat", 0.05))}
    bad = rng.random(data.shape) < 0.01
    print(f"## Speed ({nints} x {ny} x {nx}, ERR + 3 VAR_*, 1 % flagged)\n")
    print("| operation | wall s | CPU s |\n|---|---|---|")
    for label, fn in (
        ("coadd median, nframes=10", lambda: coadd_frames(data, nframes=10, err=err, var=var,
                                                          bad=bad)),
        ("coadd mean, nframes=10", lambda: coadd_frames(data, nframes=10, method="mean",
                                                        err=err, var=var, bad=bad)),
        ("blur FWHM 2 px", lambda: blur_frames(data, fwhm=2.0, err=err, var=var, bad=bad)),
    ):
        wall, cpu = _timed(fn)
        print(f"| {label} | {wall:.2f} | {cpu:.2f} |")

    print("\n## Error calibration (actual scatter / propagated ERR)\n")
    print("| case | ratio |\n|---|---|")
    sigma = 1.7
    for n in (2, 3, 4, 5, 10, 60):
        cube = rng.normal(0, sigma, (n, 300, 300))
        out = coadd_frames(cube, nframes=n, err=np.full(cube.shape, sigma))
        print(f"| median of {n} | {np.std(out.data) / np.median(out.err):.3f} |")
    cube = rng.normal(0, sigma, (5, 300, 300))
    out = coadd_frames(cube, nframes=5, method="mean", err=np.full(cube.shape, sigma))
    print(f"| mean of 5 | {np.std(out.data) / np.median(out.err):.3f} |")
    for fwhm in (1.0, 2.0, 4.0):
        cube = rng.normal(0, sigma, (2, 300, 300))
        out = blur_frames(cube, fwhm=fwhm, err=np.full(cube.shape, sigma))
        inner = (slice(None), slice(20, -20), slice(20, -20))
        print(f"| blur FWHM {fwhm:g} px | "
              f"{np.std(out.data[inner]) / np.median(out.err[inner]):.3f} |")


if __name__ == "__main__":
    main()
