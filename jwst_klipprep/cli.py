"""``klipprep`` command line: ``klipprep demo [OUTDIR]`` and ``klipprep simulate OUTDIR``."""

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
    return parser


def main(argv=None):
    """Entry point of the ``klipprep`` command."""
    args = _parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("jwst_klipprep").addHandler(console)
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
