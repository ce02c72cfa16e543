"""``dryrun=True``: run one call in the caller's process and report its time and memory.

Nothing is written into the run directory. At a terminal the user is then asked whether to
start the parallel run.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> report = dry_run(distribute(lambda x: [x] * 1000, ([1, 2],), {}), index=0)
>>> report.seconds >= 0 and report.peak_bytes > 0
True
"""

from __future__ import annotations

import logging
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.utils import format_bytes, format_time

from .inputs import CallPlan
from .storage.values import NotStorable, to_variables

__all__ = ["DryRunReport", "dry_run", "confirm"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DryRunReport:
    """What one trial call cost."""

    index: int
    seconds: float
    peak_bytes: int
    result_bytes: int | None

    def describe(self, n_inputs: int) -> str:
        text = (
            f"dry run of call {self.index}: {format_time(self.seconds)}, peak memory "
            f"{format_bytes(self.peak_bytes)}"
        )
        if self.result_bytes is not None:
            text += (
                f", result {format_bytes(self.result_bytes)} (about "
                f"{format_bytes(self.result_bytes * n_inputs)} for all {n_inputs} calls)"
            )
        return text


def _result_size(result: Any) -> int | None:
    try:
        return sum(int(v.data.nbytes) for v in to_variables(result))
    except NotStorable:
        return None


def dry_run(plan: CallPlan, index: int | None = None) -> DryRunReport:
    """Run call ``index`` (random by default) of ``plan`` here; measure time and memory.

    Exceptions of the user function propagate unchanged.
    """
    if index is None:
        index = int(np.random.default_rng().integers(plan.n_inputs))
    args, kwargs = plan.call(index)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        result = plan.func(*args, **kwargs)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return DryRunReport(index, seconds, max(0, peak), _result_size(result))


def confirm(interactive: bool) -> bool:
    """Ask whether to go on after a dry run (only at a terminal); True to go on."""
    if not interactive or sys.stdin is None or not sys.stdin.isatty():
        return True
    try:
        answer = input("Start the parallel run? [Y/n] ")
    except EOFError:
        return True
    return answer.strip().lower() not in ("n", "no")
