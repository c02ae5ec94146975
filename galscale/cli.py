"""The `galscale` command: one entry point, one sub-command per task.

Each sub-command is a thin wrapper over a library function; `jobs/*.py` call the same
functions so that `ray job submit` and the command line behave identically.
Add a sub-command by writing `_add_<name>(sub)` and listing it in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a simulated JWST survey (Zarr mosaics in 7 NIRCam bands) and its truth catalog",
        description="Simulate a JWST NIRCam survey field with GalSim: 7-band mosaics with a TAN "
        "WCS, PSFs, sky and Poisson noise, error maps, and a Parquet truth catalog.",
    )
    p.add_argument("--out", required=True, help="output folder (local path)")

    def run(args: argparse.Namespace) -> int:
        raise SystemExit("galscale simulate: not implemented yet")

    p.set_defaults(func=run)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_simulate,
]


def build_parser() -> argparse.ArgumentParser:
    """The full `galscale` argument parser (used by `main` and by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="galscale",
        description="Survey-scale denoising, morphology, redshift class and spectral embedding "
        "of JWST galaxies, on one laptop or a Ray cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `galscale` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
