"""The ``acme-xr`` command (also ``python -m acme_xr``).

Examples
--------
>>> _parser().parse_args(["demo"]).channels
32
>>> _parser().parse_args(["export", "run", "run.json"]).format is None
True
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acme-xr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"acme_xr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="low-pass filter a synthetic 32-channel recording")
    demo.add_argument("--output-dir", default="acme_xr_demo",
                      help="run directory (a previous demo run there is replaced)")
    demo.add_argument("--channels", type=int, default=32, help="channels (one call each)")
    demo.add_argument("--trials", type=int, default=8, help="trials per channel")
    demo.add_argument("--workers", type=int, default=None, help="local workers (default: cores)")
    _add_export(sub)
    return parser


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser(
        "export", help="write a run as references that plain xarray opens (kerchunk, icechunk)",
        description="Write the run in DIR as a virtual dataset at OUT: kerchunk JSON (.json), "
                    "kerchunk parquet (.parq, .parquet) or an icechunk repository (.icechunk).")
    export.add_argument("run_dir", metavar="DIR", help="the run directory (acme_xr or ACME)")
    export.add_argument("out", metavar="OUT", help="where to write (must not exist)")
    # checked by write_references, so that a bad one is the same one-line error as the rest
    export.add_argument("--format", default=None, metavar="{json,parquet,icechunk}",
                        help="the format (default: from the suffix of OUT)")


def _export(args: argparse.Namespace) -> int:
    from .errors import AcmeXrError
    from .references import write_references

    try:
        out = write_references(args.run_dir, args.out, format=args.format)
    except (AcmeXrError, OSError) as exc:  # bad input, unwritable OUT: one line, no traceback
        print(f"acme-xr export: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``acme-xr`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(args.output_dir, n_channels=args.channels, n_trials=args.trials,
                     n_workers=args.workers or "auto")
        except KeyboardInterrupt:  # the run said what it kept and how to resume
            return 130
    elif args.command == "export":
        return _export(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
