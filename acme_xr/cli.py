"""The ``acme-xr`` command (also ``python -m acme_xr``).

Examples
--------
>>> _parser().parse_args(["demo"]).channels
32
>>> _parser().parse_args(["export", "run", "run.json"]).format is None
True
>>> _parser().parse_args(["clean", "--older-than", "7"]).run_dir
'.'
"""

from __future__ import annotations

import argparse
import os
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
    _add_runs(sub)
    return parser


def _add_runs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run_help = "the run directory (or its <func>.h5)"
    status = sub.add_parser(
        "status", help="calls done, failed and pending, durations and failures of a run",
        description="Summarise the run in DIR from its manifest (no payload is opened): calls "
                    "done / failed / pending, per-call duration statistics and every failure "
                    "with its message. Works on a run that is still going.")
    status.add_argument("run_dir", metavar="DIR", help=run_help)
    status.add_argument("--json", action="store_true", help="print it as JSON")
    show = sub.add_parser("show", help="print the Dataset open_results gives for a run",
                          description="Print acme_xr.open_results(DIR): the run as one lazy "
                                      "xarray.Dataset (nothing is loaded).")
    show.add_argument("run_dir", metavar="DIR", help=run_help)
    report = sub.add_parser(
        "report", help="write a run's HTML report (durations, timeline, failures)",
        description="Write one self-contained HTML file on the run in DIR: metadata, "
                    "per-call duration histogram, timeline of calls per worker, failures "
                    "with tracebacks. The figures need matplotlib "
                    '(pip install "acme_xr[report]"). Prints the file\'s path.')
    report.add_argument("run_dir", metavar="DIR", help=run_help)
    report.add_argument("-o", "--output", metavar="OUT", default=None,
                        help="the HTML file to write (default: DIR/report.html)")
    resume = sub.add_parser(
        "resume", help="run a run's failed and pending calls again",
        description="Finish the run in DIR: run its recorded function and inputs (stored "
                    "with the run when it started) with resume=True, so only the calls "
                    "without a valid result run. Exit status 1 when calls fail again. The "
                    "record is a pickle, and unpickling runs code: resume only runs you "
                    "trust.")
    resume.add_argument("run_dir", metavar="DIR", help=run_help)
    resume.add_argument("--workers", type=int, default=None,
                        help="local workers (default: as the run was started)")
    resume.add_argument("--force", action="store_true",
                        help="resume even when the function's code (e.g. a module it "
                             "lives in) or the inputs changed since (resume='force')")
    clean = sub.add_parser(
        "clean", help="remove run directories (shows them and asks first)",
        description="Remove DIR if it is a run, else the run directories in DIR (default: "
                    "the current directory): those with an acme_xr manifest or ACME's "
                    "ACME_YYYYMMDD-hhmmss-ffffff name. A run that is running is never "
                    "removed. Lists them and asks unless --yes.")
    clean.add_argument("run_dir", metavar="DIR", nargs="?", default=".",
                       help="a run directory or a directory holding runs")
    clean.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="only runs last written more than DAYS days ago")
    clean.add_argument("--yes", "-y", action="store_true", help="do not ask")


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
    """Entry point of the ``acme-xr`` command; returns the exit status.

    A user's mistake (no such run, a damaged manifest, a run still running, a file that
    cannot be written) is one line on stderr and exit status 1, never a traceback.
    """
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(args.output_dir, n_channels=args.channels, n_trials=args.trials,
                     n_workers=args.workers or "auto")
        except KeyboardInterrupt:  # the run said what it kept and how to resume
            return 130
        return 0
    if args.command == "export":
        return _export(args)
    from . import commands
    from .errors import AcmeXrError, ManifestCorruptError

    try:
        code: int = getattr(commands, args.command)(args)
    except KeyboardInterrupt:  # `acme-xr resume`: the run said what it kept, how to go on
        return 130
    except BrokenPipeError:  # `acme-xr show DIR | head`: the reader is done, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (AcmeXrError, OSError) as exc:
        hint = ""
        if isinstance(exc, ManifestCorruptError) and args.command != "show":
            hint = f"; `acme-xr show {args.run_dir}` rebuilds it from the payloads, if any"
        print(f"acme-xr {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
