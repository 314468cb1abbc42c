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

    sim = sub.add_parser("simulate", help="write the synthetic dataset (calints, ASN, truth.json)")
    sim.add_argument("outdir", help="output folder")
    sim.add_argument("--instrument", choices=("NIRCAM", "MIRI"), default="NIRCAM")
    sim.add_argument("--nints", type=int, default=10, help="integrations per exposure")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--psf-backend", choices=("builtin", "stpsf", "auto"), default="builtin",
        help="optics model for the PSFs (stpsf needs STPSF_PATH)",
    )
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

        result = simulate_dataset(
            args.outdir, instrument=args.instrument, nints=args.nints, seed=args.seed,
            psf_backend=args.psf_backend, with_background=not args.no_background,
        )
        print(f"wrote {len(result.paths)} exposures, {result.asn_path} and {result.truth_path}")
        return 0
    from jwst_klipprep.demo import run_demo

    return run_demo(args.outdir, instrument=args.instrument, nints=args.nints, seed=args.seed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
