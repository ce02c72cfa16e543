"""The ``acme-xr`` command (also ``python -m acme_xr``).

Examples
--------
>>> _parser().parse_args(["demo"]).channels
32
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``acme-xr`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.output_dir, n_channels=args.channels, n_trials=args.trials,
                 n_workers=args.workers or "auto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
