"""``recenter_frames --fit_wavefront`` end to end on a simulated association (issue 9).

Run from the repository root::

    .venv/bin/python benchmarks/bench_visit_step.py            # seed 5: about 1-2 min
    .venv/bin/python benchmarks/bench_visit_step.py --seed 6
    .venv/bin/python benchmarks/bench_visit_step.py --no-opd   # about 10 min
    .venv/bin/python benchmarks/bench_visit_step.py --modes low_order segments_focus

`klipprep simulate` writes an association (2 science rolls + 5 references, NIRCam MASK335R
F444W, 320 x 320, stpsf PSFs on ``../shared/data/stpsf-data-mini``, 256-pixel pupil) made with a
60 nm rms ``make_test_opd`` telescope wavefront ("now"); the step is given the same map plus a
15 nm rms drift ("older", as in ``bench_recenter.py --issue9``). The table compares the star
offsets recorded by ``update_nircam_centers`` + ``recenter_frames --opd=older`` with and without
``--fit_wavefront`` (``--modes``) to the simulation's truth, with the recorded
uncertainties and the step's time (wall and CPU; the machine's load is included). With
``--no-opd`` the step is given no OPD at all: per-exposure fit against
``--fit_wavefront=segments_focus`` (or ``--modes``).
"""

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STPSF = REPO.parent / "shared" / "data" / "stpsf-data-mini"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=5, help="seed of the wavefront map")
    parser.add_argument("--nints", type=int, default=2, help="integrations per exposure")
    parser.add_argument("--stpsf-path", default=str(DEFAULT_STPSF), help="stpsf data folder")
    parser.add_argument("--no-opd", action="store_true",
                        help="give the step no OPD: per-exposure fit vs fit_wavefront=segments")
    parser.add_argument("--modes", nargs="+", default=None,
                        choices=["low_order", "segments", "segments_focus"],
                        help="fit_wavefront values of the visit rows (default low_order with "
                        "the older OPD, segments_focus with --no-opd)")
    args = parser.parse_args(argv)
    os.environ["STPSF_PATH"] = str(Path(args.stpsf_path).resolve())
    os.environ.pop("WEBBPSF_PATH", None)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    from jwst.datamodels import ModelContainer

    from jwst_klipprep.psf.opd import make_test_opd
    from jwst_klipprep.simulate import simulate_dataset
    from jwst_klipprep.steps.recenter_frames_step import RecenterFramesStep
    from jwst_klipprep.steps.update_nircam_centers_step import UpdateNircamCentersStep

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        now = make_test_opd(tmp / "now.fits", rms_nm=60.0, seed=args.seed, npix=256)
        make_test_opd(tmp / "older.fits", base=now, drift_nm=15.0, seed=args.seed + 100,
                      npix=256)
        simulate_dataset(tmp / "sim", psf_backend="stpsf", opd=str(tmp / "now.fits"),
                         nints=args.nints, with_background=False, seed=args.seed)
        truth = {e["filename"]: e for e in json.loads((tmp / "sim" / "truth.json").read_text())[
            "exposures"]}
        scale = 62.9  # mas per px (F444W)
        given = "no OPD" if args.no_opd else "it + 15 nm rms drift"
        print(f"# recenter_frames on a simulated association (seed {args.seed}): 60 nm rms "
              f"wavefront, the step given {given}; errors = recorded - true star offset "
              "(mas)\n")
        print("| fit | N | error median / max (mas) | mean error (dy, dx) mas | recorded sigma "
              "(mas per axis) | error/sigma rms | fitted global modes (nm) | s (CPU s) |")
        print("|---|---|---|---|---|---|---|---|")
        with ModelContainer(str(tmp / "sim" / "asn.json")) as models:
            centred = UpdateNircamCentersStep.call(models)
            if args.no_opd:
                modes = args.modes or ["segments_focus"]
                runs = (("per exposure, no OPD", {}),) + tuple(
                    (f"visit, {m}, no OPD", {"fit_wavefront": m}) for m in modes)
                given = {"pupil_npix": 256}
            else:
                modes = args.modes or ["low_order"]
                runs = (("per exposure", {}),) + tuple(
                    (f"visit, {m}", {"fit_wavefront": m}) for m in modes)
                given = {"opd": str(tmp / "older.fits")}
            for label, kw in runs:
                t0, c0 = time.perf_counter(), time.process_time()
                out = RecenterFramesStep.call(centred, apply=False, **given, **kw)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                err, sig, modes = [], [], "-"
                for model in out:
                    rec = model.meta.instance["klipprep"]["recenter_frames"]
                    true = truth[model.meta.filename]["star_offset_yx_px"]
                    err.append(np.subtract(rec["star_offset_yx"], true) * scale)
                    sig.append(np.multiply(rec["star_offset_err_yx"], scale))
                    if rec.get("wavefront_fit"):
                        modes = np.array2string(np.array(rec["wavefront_fit"][
                            "coefficients_nm"][:7]), precision=1)
                err, sig = np.array(err), np.array(sig)
                rad = np.hypot(*err.T)
                print(f"| {label} | {len(rad)} | {np.median(rad):.2f} / {rad.max():.2f} | "
                      f"({err[:, 0].mean():+.2f}, {err[:, 1].mean():+.2f}) | "
                      f"{np.median(sig):.2f} | {np.sqrt(np.mean((err / sig) ** 2)):.2f} | "
                      f"{modes} | {wall:.0f} ({cpu:.0f}) |", flush=True)


if __name__ == "__main__":
    main()
