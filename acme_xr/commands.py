"""The ``acme-xr`` subcommands that look at runs: status, show, report, resume, clean.

Each takes the parsed arguments and returns the exit status; a user's mistake (no such
directory, not a run, a damaged manifest, a run still running) raises an
:class:`~acme_xr.errors.AcmeXrError` or ``OSError``, which :func:`acme_xr.cli.main` prints as
one line. See ``acme-xr COMMAND --help``.

Examples
--------
>>> print(_status_text({"run_dir": "r", "function": "f", "state": "complete",
...     "created": "", "n_inputs": 1, "counts": {"done": 1, "failed": 0, "pending": 0},
...     "duration": {"min": 0.5, "median": 0.5, "mean": 0.5, "max": 0.5, "total": 0.5},
...     "failures": []}).splitlines()[2])
calls     1: 1 done, 0 failed, 0 pending
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from typing import Any

from .errors import ComputeError, InputError
from .manifest import FAILED, MANIFEST_NAME, Manifest

__all__ = ["status", "show", "report", "resume", "clean", "status_record"]

# ACME's (and acme_xr's) default run directory name: ACME_YYYYMMDD-hhmmss-ffffff
_RUN_NAME = re.compile(r"^ACME_\d{8}-\d{6}-\d{6}$")
# failures listed by `status` (all of them with --json)
_MAX_LISTED = 50


def status_record(path: str) -> dict[str, Any]:
    """What ``acme-xr status --json`` prints for the run in ``path``."""
    from .report import duration_stats, run_manifest

    run_dir, m = run_manifest(path)
    failures = []
    for i in m.indices(FAILED):
        err = m.errors.get(int(i), {})
        failures.append({"call": int(i), "type": err.get("type"),
                         "message": err.get("message"), "attempts": int(m.attempts[i]),
                         "host": m.host[int(i)]})
    return {"run_dir": run_dir, "function": m.header.get("func", {}).get("name"),
            "state": m.state, "created": getattr(m, "created", None), "n_inputs": m.n_inputs,
            "counts": m.counts, "duration": duration_stats(m), "failures": failures}


def _status_text(rec: dict[str, Any]) -> str:
    c, d = rec["counts"], rec["duration"]
    lines = [f"run       {rec['run_dir']}",
             f"function  {rec['function']}   state {rec['state']}   created {rec['created']}",
             f"calls     {rec['n_inputs']}: {c['done']} done, {c['failed']} failed, "
             f"{c['pending']} pending"]
    if d["min"] is None:
        lines.append("duration  none recorded")
    else:
        lines.append("duration  " + "  ".join(f"{k} {v:.3g} s" for k, v in d.items()))
    if rec["failures"]:
        lines += ["", f"{'call':>6}  {'attempts':>8}  error"]
        for f in rec["failures"][:_MAX_LISTED]:
            msg = (f["message"] or "").strip().splitlines()
            text = f"{f['type']}: {msg[0] if msg else ''}"
            lines.append(f"{f['call']:>6}  {f['attempts']:>8}  "
                         f"{text if len(text) <= 100 else text[:97] + '...'}")
    if len(rec["failures"]) > _MAX_LISTED:
        lines.append(f"... and {len(rec['failures']) - _MAX_LISTED} more (--json lists all)")
    if c["failed"] or c["pending"]:
        lines += ["", f"to run the failed and pending calls: acme-xr resume {rec['run_dir']}"]
    return "\n".join(lines)


def status(args: argparse.Namespace) -> int:
    rec = status_record(args.run_dir)
    print(json.dumps(rec, indent=1) if args.json else _status_text(rec))
    return 0


def show(args: argparse.Namespace) -> int:
    from .results import open_results
    from .scan import locate_run

    print(open_results(locate_run(args.run_dir)))
    return 0


def report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(args.run_dir, args.output))
    return 0


def resume(args: argparse.Namespace) -> int:
    from .map import ParallelMap
    from .report import run_manifest
    from .rerun import load_call

    run_dir, manifest = run_manifest(args.run_dir)
    left = manifest.counts["failed"] + manifest.counts["pending"]
    if not left and manifest.state != "running":
        print(f"{run_dir}: all {manifest.n_inputs} calls are done; nothing to resume")
        return 0
    call = load_call(run_dir)
    options = dict(call.options)
    if args.workers is not None:
        options["n_workers"] = args.workers
    print(f"resuming {run_dir}: {left} of {manifest.n_inputs} calls to run", flush=True)
    with ParallelMap(call.func, *call.args, **call.kwargs, **options, output_dir=run_dir,
                     resume="force" if args.force else True,
                     setup_interactive=False) as pmap:
        try:
            pmap.compute()
        except ComputeError:  # the user function's failures: listed by status and report
            c = Manifest.read(run_dir).counts
            print(f"acme-xr resume: {c['failed']} of {manifest.n_inputs} calls failed again "
                  f"({c['done']} done): `acme-xr status {run_dir}` lists them, `acme-xr "
                  f"report {run_dir}` shows their tracebacks", file=sys.stderr)
            return 1
    print(f"{run_dir}: all {manifest.n_inputs} calls done")
    return 0


def _age_days(path: str) -> float:
    probe = os.path.join(path, MANIFEST_NAME)
    stamp = os.path.getmtime(probe if os.path.exists(probe) else path)
    return (time.time() - stamp) / 86400


def _is_run(path: str) -> bool:
    """An acme_xr run (its manifest) or a directory with the default run name that holds a
    run. A directory that merely holds a payload-named file is never taken for one."""
    from .scan import holds_run

    if os.path.exists(os.path.join(path, MANIFEST_NAME)):
        return True
    return bool(_RUN_NAME.match(os.path.basename(path))) and holds_run(path)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def clean(args: argparse.Namespace) -> int:
    from .runlock import is_locked

    top = os.path.abspath(args.run_dir)
    if not os.path.isdir(top):
        raise InputError(f"{args.run_dir} is no directory: give a run directory or one that "
                         "holds runs")
    if args.older_than is not None and args.older_than < 0:
        raise InputError(f"--older-than {args.older_than} must be >= 0 (days)")
    found = [top] if _is_run(top) else sorted(
        e.path for e in os.scandir(top) if e.is_dir(follow_symlinks=False) and _is_run(e.path))
    chosen = []
    for path in found:
        if is_locked(path):
            print(f"skipped (running): {path}")
        elif args.older_than is None or _age_days(path) >= args.older_than:
            chosen.append(path)
    if not chosen:
        print("no run directories to remove")
        return 0
    sizes = [_size(p) for p in chosen]
    for path, size in zip(chosen, sizes, strict=True):
        print(f"{size / 1e6:10.1f} MB  {_age_days(path):6.1f} days  {path}")
    what = f"{len(chosen)} run directories ({sum(sizes) / 1e6:.1f} MB)"
    if not args.yes:
        try:
            answer = input(f"remove {what}? [y/N] ")
        except EOFError:  # no one to ask (CI, a closed stdin)
            raise InputError(f"would remove {what}: pass --yes to remove them without "
                             "asking") from None
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 0
    for path in chosen:
        shutil.rmtree(path)
    print(f"removed {what}")
    return 0
