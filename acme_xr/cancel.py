"""Which of a run's dask tasks a worker still runs, and which of them dask cancelled.

dask cannot stop a task that runs: after a Ctrl-C the client cancels the run's tasks, and a
running batch skips its remaining calls when it sees that its task was cancelled. This module
knows that with public distributed APIs only: a worker plugin's ``transition`` hook sees the
task leave ``executing`` for ``released`` (the worker keeps running it as "cancelled"), and
each batch knows its own task key, which acme_xr chooses (``acme_xr-...``). The set of
batches that run here answers the client's question whether a cancelled run still writes.

Examples
--------
>>> with running("acme_xr-f-0-run1"):
...     check = current_check()
...     check(), active("run1")
(False, ['acme_xr-f-0-run1'])
>>> active("run1")
[]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["running", "current_check", "active", "watch_plugin", "PLUGIN_NAME"]

PLUGIN_NAME = "acme_xr-cancel-watch"
_PREFIX = "acme_xr-"
_EXECUTING = ("executing", "long-running", "cancelled")

# keys of this process's acme_xr tasks that dask released while they ran, and of those
# that run now (plain sets: the worker's event loop adds, task threads read)
_CANCELLED: set[str] = set()
_ACTIVE: set[str] = set()
_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("acme_xr_task", default=None)


class _Watch:
    """Worker plugin (mixed with distributed's WorkerPlugin by :func:`watch_plugin`)."""

    name = PLUGIN_NAME
    idempotent = True  # registered by every run; once per worker is enough

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        k = str(key)
        if not k.startswith(_PREFIX):
            return
        if finish in ("released", "forgotten") and start in _EXECUTING:
            _CANCELLED.add(k)
        elif finish not in ("released", "forgotten", "cancelled"):
            _CANCELLED.discard(k)  # asked for again while it still ran: not cancelled


def watch_plugin() -> Any:
    """The plugin to register on the workers (``client.register_plugin``)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    return type("CancelWatch", (_Watch, WorkerPlugin), {})()


@contextlib.contextmanager
def running(key: str | None) -> Iterator[None]:
    """Mark the batch with task ``key`` as running in this thread while the block runs."""
    if key is None:
        yield
        return
    token = _KEY.set(key)
    _ACTIVE.add(key)
    try:
        yield
    finally:
        _ACTIVE.discard(key)
        _CANCELLED.discard(key)
        _KEY.reset(token)


def current_check() -> Callable[[], bool]:
    """Whether the task of the batch running in this thread was cancelled."""
    key = _KEY.get()
    if key is None:
        return lambda: False
    return lambda: key in _CANCELLED


def active(run_id: str) -> list[str]:
    """Keys of the batches of run ``run_id`` that run in this process now."""
    return sorted(k for k in list(_ACTIVE) if run_id in k)
