"""CPU cost of the issue-12 second-round changes, each measured alone on one real exposure.

Run::

    python benchmarks/bench_pipeline_changes.py [--real ../shared/data/real] [--nints 35]

Builds one exposure of ``bench_pipeline.py``'s workload (the first AU Mic F444W frame, ``--nints``
noisy integrations) and prints the process CPU seconds (``time.process_time``, so that other
processes on a shared machine matter less) of:

1. ``recenter_frames`` (built-in model, ``apply=False``) with ``per_integration=True`` (the old
   behaviour) and with the default integration-median fit; the second call of each, so the PSF
   model cache is warm and the fitting is what is compared; also the offsets and errors found;
2. the median over the integrations in ``subtract_median`` (``np.nanmedian(axis=0)``, which
   numpy runs as a masked-array sort, against ``robust_stats.nanmedian_axis0``; equal values);
3. the SIAF reference point of ``update_nircam_centers`` in a fresh process: through
   ``pysiaf.Siaf`` (before) and through ``reference_data.siaf_reference_xy`` (now).
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")


def _cpu(func, repeat=1):
    func()  # warm (imports, caches)
    c0 = time.process_time()
    for _ in range(repeat):
        out = func()
    return (time.process_time() - c0) / repeat, out


def _fresh(code):
    """CPU seconds (user + sys) of ``python -c code`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
    parser.add_argument("--real", type=Path, default=default)
    parser.add_argument("--nints", type=int, default=35)
    args = parser.parse_args(argv)
    real = args.real / "nircam_aumic_f444w"
    if not real.is_dir():
        print(f"real frames not found in {real}: nothing to do")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import logging

    import bench_pipeline
    from stdatamodels.jwst import datamodels

    from jwst_klipprep.algorithms.robust_stats import nanmedian_axis0
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep

    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="klipprep_changes_"))
    sub = work / "one"
    sub.mkdir()
    bench_pipeline.FILES = bench_pipeline.FILES[:1]  # one exposure only
    bench_pipeline.build_workload(real, sub, args.nints, inject=False)
    model = datamodels.open(sub / bench_pipeline.FILES[0])
    print(f"\n## One exposure ({args.nints} x 320 x 320), process CPU seconds\n")
    print("| change | before s | now s | note |\n|---|---:|---:|---|")
    rows = {}
    for per in (True, False):
        cpu, res = _cpu(lambda per=per: RecenterFramesStep.call(
            model, psf_model="builtin", apply=False, per_integration=per))
        rec = res.meta.instance["klipprep"]["recenter_frames"]
        rows[per] = (cpu, np.round(rec["star_offset_yx"], 4).tolist(),
                     np.round(rec["star_offset_err_yx"], 4).tolist())
    print(f"| recenter_frames: integration-median fit (per_integration=False) | "
          f"{rows[True][0]:.2f} | {rows[False][0]:.2f} | offset (dy, dx) px "
          f"{rows[True][1]} +- {rows[True][2]} -> {rows[False][1]} +- {rows[False][2]} |")
    data = np.asarray(model.data, dtype=np.float32)
    x = np.where((np.asarray(model.dq) & 1) == 0, data, np.nan)
    old, a = _cpu(lambda: np.nanmedian(x, axis=0), repeat=3)
    new, b = _cpu(lambda: nanmedian_axis0(x), repeat=3)
    print(f"| subtract_median: NaN median over the integrations | {old:.3f} | {new:.3f} | "
          f"equal values: {np.array_equal(a, b, equal_nan=True)} |")
    siaf_old = _fresh("import pysiaf; a = pysiaf.Siaf('NIRCam')['NRCA5_MASK335R']; "
                      "print(a.XSciRef, a.YSciRef)")
    siaf_new = _fresh("from jwst_klipprep.reference_data import siaf_reference_xy as f; "
                      "print(f('NIRCam', 'NRCA5_MASK335R'))")
    base = _fresh("import numpy")
    print(f"| update_nircam_centers: SIAF reference point, fresh process | {siaf_old:.2f} | "
          f"{siaf_new:.2f} | `python -c 'import numpy'` alone: {base:.2f} |")
    print(f"\n(workload in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
