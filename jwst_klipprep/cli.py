"""``klipprep`` command line: ``demo``, ``simulate``, ``associate`` and ``batch``."""

import argparse
import logging
import sys

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="klipprep",
        description="Prepare JWST coronagraphic calints for KLIP (jwst_klipprep). "
        "The steps themselves run with `strun <alias> file_or_asn`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="simulate a synthetic dataset, run every step on it and report vs the truth"
    )
    demo.add_argument("outdir", nargs="?", default="klipprep_demo", help="output folder")
    demo.add_argument("--instrument", choices=("NIRCAM", "MIRI"), default="NIRCAM")
    demo.add_argument("--nints", type=int, default=10, help="integrations per exposure")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--opd", default=None, metavar="FILE",
        help="telescope wavefront (OPD) file: simulate and centre with stpsf and this wavefront "
        "(needs STPSF_PATH)",
    )

    sim = sub.add_parser("simulate", help="write the synthetic dataset (calints, ASN, truth.json)")
    sim.add_argument("outdir", help="output folder")
    sim.add_argument("--instrument", choices=("NIRCAM", "MIRI"), default="NIRCAM")
    sim.add_argument("--nints", type=int, default=10, help="integrations per exposure")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--psf-backend", choices=("builtin", "stpsf", "auto"), default=None,
        help="optics model for the PSFs (stpsf needs STPSF_PATH); default builtin, stpsf with "
        "--opd",
    )
    sim.add_argument(
        "--opd", default=None, metavar="FILE",
        help="telescope wavefront (OPD) file for the stpsf PSFs: 2-D FITS in metres on the pupil "
        "grid, an OPD cube (--opd-slice) or a MAST wavefront-sensing OPD file",
    )
    sim.add_argument("--opd-slice", type=int, default=None, help="slice of an OPD cube")
    sim.add_argument("--no-background", action="store_true", help="no SCI_BG/REF_BG exposures")
    _add_batch_parsers(sub)
    return parser


def _add_batch_parsers(sub):
    """The ``associate`` and ``batch`` subcommands (jwst_klipprep.batch)."""
    asn = sub.add_parser(
        "associate", help="write one level-3 ASN per group of stage-2 coronagraphic files",
        description="Read the headers of stage-2 coronagraphic files (calints/cal) and write one "
        "association per program, instrument, detector, subarray, filter, mask and pupil.",
    )
    asn.add_argument("paths", nargs="+", help="files and/or folders of *_calints.fits / *_cal.fits")
    asn.add_argument("-o", "--output-dir", "--output_dir", dest="asn_dir", default=None,
                     help="folder for the *_asn.json files (default: next to the data)")
    asn.add_argument("--dry-run", action="store_true", help="print the groups, write nothing")
    asn.add_argument("--across-programs", "--across_programs", dest="across_programs",
                     action="store_true",
                     help="group exposures of different programs (e.g. a science program and "
                     "its reference-star program) into one association")

    batch = sub.add_parser(
        "batch", help="run the klipprep pipeline on many ASNs as Dask tasks",
        description="Run `strun klipprep` on every association, one dask.distributed task each. "
        "Unknown --options pass through to the pipeline (use the --name=value form), and a "
        "positional .asdf/.cfg file is a parameter file, as with strun.",
        allow_abbrev=False,  # never swallow a pipeline option as an abbreviation of ours
    )
    batch.add_argument("asns", nargs="+", metavar="ASN_OR_DIR",
                       help="association files, or folders of *_asn.json")
    batch.add_argument("--output_dir", "--output-dir", dest="output_dir", required=True,
                       help="folder of the products, logs and the summary table")
    batch.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: one per usable core)")
    batch.add_argument("--scheduler", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://host:8786")
    batch.add_argument("--memory-limit", "--memory_limit", dest="memory_limit", default=None,
                       help="memory limit per local worker, e.g. 4GB (default: auto)")
    batch.add_argument("--parameters", default=None,
                       help="pipeline parameter file (as `strun pars.asdf asn.json`)")
    batch.add_argument("--force", action="store_true",
                       help="rerun associations whose products are already complete")
    batch.add_argument("--summary", default=None,
                       help="summary table (default: OUTPUT_DIR/klipprep_batch_summary.ecsv)")


def _batch_main(args, extra):
    """Run ``klipprep associate`` / ``klipprep batch``; return the exit status."""
    logger = logging.getLogger("jwst_klipprep.batch")
    if args.command == "associate":
        if extra:
            print(f"klipprep associate: unrecognized arguments: {' '.join(extra)}",
                  file=sys.stderr)
            return 2
        from jwst_klipprep.batch import associate, format_groups

        logger.setLevel(logging.INFO)  # the notes on skipped files
        note = logging.StreamHandler(sys.stdout)
        note.setFormatter(logging.Formatter("%(message)s"))
        note.addFilter(lambda record: record.levelno < logging.WARNING)
        logger.addHandler(note)
        try:
            groups = associate(args.paths, args.asn_dir, write=not args.dry_run,
                               across_programs=args.across_programs)
        finally:
            logger.removeHandler(note)
        if not groups:
            print("klipprep associate: no group with a science exposure", file=sys.stderr)
            return 1
        print(format_groups(groups))
        if not args.dry_run:
            folders = sorted({str(g.asn_path.parent) for g in groups})
            print(f"wrote {len(groups)} association(s) to {', '.join(folders)}")
        return 0

    from jwst_klipprep.batch import run_batch

    parameters = args.parameters
    asns = []
    for item in args.asns:
        if item.endswith((".asdf", ".cfg")) and parameters is None:
            parameters = item
        else:
            asns.append(item)
    try:
        table = run_batch(asns, args.output_dir, scheduler=args.scheduler,
                          n_workers=args.workers, memory_limit=args.memory_limit, args=extra,
                          config=parameters, force=args.force, summary=args.summary)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"klipprep batch: {exc}", file=sys.stderr)
        return 2
    return 1 if (table["status"] == "failed").any() else 0


def main(argv=None):
    """Entry point of the ``klipprep`` command."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command not in ("associate", "batch") and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("jwst_klipprep").addHandler(console)
    if args.command in ("associate", "batch"):
        return _batch_main(args, extra)
    if args.nints < 1:
        print("klipprep: --nints must be >= 1", file=sys.stderr)
        return 2
    if args.command == "simulate":
        from jwst_klipprep.simulate import simulate_dataset

        backend = args.psf_backend or ("stpsf" if args.opd else "builtin")
        try:
            result = simulate_dataset(
                args.outdir, instrument=args.instrument, nints=args.nints, seed=args.seed,
                psf_backend=backend, with_background=not args.no_background, opd=args.opd,
                opd_slice=args.opd_slice,
            )
        except ValueError as exc:
            print(f"klipprep simulate: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(result.paths)} exposures, {result.asn_path} and {result.truth_path}")
        return 0
    from jwst_klipprep.demo import run_demo

    try:
        return run_demo(args.outdir, instrument=args.instrument, nints=args.nints,
                        seed=args.seed, opd=args.opd)
    except ValueError as exc:
        print(f"klipprep demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
