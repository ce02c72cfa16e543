"""Ctrl-C: workers that stay quiet, and one message that says what was kept and how to go on.

A terminal sends Ctrl-C's SIGINT to every process of its foreground group: the worker
processes of a local cluster acme_xr started get it too, and each used to die with a
traceback. :func:`quiet_workers_plugin` makes them ignore SIGINT (the run closes them
itself); :func:`interrupted_message` is what the run says instead.

Examples
--------
>>> from acme_xr.manifest import Manifest
>>> m = Manifest.new(24, {"func": {"name": "slow"}})
>>> m.status[:12] = 1
>>> print(interrupted_message(m, "slow", "/data/run 1"))  # doctest: +NORMALIZE_WHITESPACE
interrupted: 12 of 24 calls finished and are kept in /data/run 1. To finish the run, call
ParallelMap(slow, ..., output_dir='/data/run 1', resume=True) with the same arguments again,
or run: acme-xr resume '/data/run 1'
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .manifest import DONE, FAILED, Manifest

__all__ = ["interrupted_message", "quiet_workers_plugin", "redelivered", "PLUGIN_NAME"]

PLUGIN_NAME = "acme_xr-quiet-interrupts"


class _IgnoreInterrupts:
    """Worker plugin (mixed with distributed's WorkerPlugin by :func:`quiet_workers_plugin`)."""

    name = PLUGIN_NAME
    idempotent = True

    def setup(self, worker: Any) -> None:
        # the worker's event loop runs in its process's main thread, the only one that
        # may set a signal handler
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the run's tasks cancelled by the Ctrl-C are no news either
        logging.getLogger("distributed.worker.state_machine").addFilter(_not_cancelled)


def _not_cancelled(record: logging.LogRecord) -> bool:
    return "ended with CancelledError" not in record.getMessage()


def quiet_workers_plugin() -> Any:
    """A worker plugin that makes each worker process ignore SIGINT (a Ctrl-C at the
    terminal): register it on a cluster that acme_xr started, before its workers start."""
    from distributed.diagnostics.plugin import WorkerPlugin

    return type("IgnoreInterrupts", (_IgnoreInterrupts, WorkerPlugin), {})()


@contextlib.contextmanager
def redelivered() -> Iterator[None]:
    """Do not let a Ctrl-C be lost while the block runs.

    Python drops an exception raised where it cannot propagate (a weakref callback, a
    ``__del__``): a Ctrl-C that arrives while importlib runs such a callback -- during an
    import, as when a cluster starts -- is printed as "Exception ignored" and the run goes
    on. Here such a KeyboardInterrupt raises SIGINT again, to be delivered where it can
    propagate.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # a moment later, from another thread: raised now, in the main thread, it
            # would be raised inside this hook and dropped again
            timer = threading.Timer(0.05, _thread.interrupt_main, (signal.SIGINT,))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def interrupted_message(manifest: Manifest, stem: str, output_dir: str | None) -> str:
    """What a run interrupted by Ctrl-C says: calls finished, where, how to finish it."""
    done = int((manifest.status == DONE).sum())
    failed = int((manifest.status == FAILED).sum())
    finished = f"{done + failed} of {manifest.n_inputs} calls finished" + (
        f" ({failed} failed)" if failed else "")
    if output_dir is None:
        return (f"interrupted: {finished}; their values are in the ParallelMap's .results "
                "(None for the calls not run). A run kept in memory cannot be resumed: with "
                "write_worker_results=True every call's results go to disk as they finish")
    return (f"interrupted: {finished} and are kept in {output_dir}. To finish the run, call "
            f"ParallelMap({stem}, ..., output_dir={output_dir!r}, resume=True) with the same "
            f"arguments again, or run: acme-xr resume {shlex.quote(output_dir)}")
