"""The client side of a run's outcomes: manifest updates, progress, and the failure report.

* :class:`Collector` receives each finished batch, records it in the manifest, keeps the
  return values (memory mode) and flushes the manifest now and then.
* :class:`ManifestWriter` writes the manifest atomically and keeps some disk space in
  reserve, so that the last manifest of a run that filled its disk is still written.
* :func:`adopt_payloads` records calls whose payload reached the disk but whose outcome
  never reached the client (the run was interrupted in between).
* :func:`compute_error` builds the :class:`~acme_xr.errors.ComputeError` of failed calls.

Examples
--------
>>> import os, tempfile
>>> from acme_xr.manifest import Manifest
>>> d = tempfile.mkdtemp()
>>> writer = ManifestWriter(Manifest.new(3, {"func": {"name": "f"}}), d)
>>> writer.write()
>>> sorted(os.listdir(d))          # the manifest and the space kept in reserve
['.acme_xr-reserve', 'manifest.calls', 'manifest.json']
>>> writer.close()
>>> sorted(os.listdir(d))
['manifest.calls', 'manifest.json']
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import warnings
from typing import Any

import numpy as np

from . import config
from .errors import ComputeError, StorageError
from .layout import RunLayout
from .manifest import DONE, FAILED, LOG_NAME, MANIFEST_NAME, PENDING, Manifest
from .progress import Progress
from .shipping import unshipped
from .storage.atomic import SpaceReserve
from .storage.base import StorageBackend, Written
from .storage.memory import StackedResults
from .worker import FAILED as CALL_FAILED
from .worker import OK, BatchResult, WriteSpec

__all__ = ["Collector", "ManifestWriter", "adopt_payloads", "compute_error"]

log = logging.getLogger(__name__)

RESERVE_NAME = ".acme_xr-reserve"


class ManifestWriter:
    """Write ``manifest`` into ``directory``; survive a full disk.

    While the run goes on (state ``"running"``) each :meth:`write` appends the calls changed
    since the last one to the calls log; once it has ended, :meth:`write` compacts the log
    into one block (write-and-rename). Writes never interleave (a lock).

    After each write, a reserve file (twice the manifest's size) is kept next to it. When a
    write fails (disk full, quota), the reserve is given up and the write tried once more:
    the old manifest stays valid until the new one is complete, and the new one has room.
    :meth:`close` removes the reserve.
    """

    def __init__(self, manifest: Manifest, directory: str) -> None:
        self.manifest = manifest
        self.directory = directory
        self.reserve = SpaceReserve(os.path.join(directory, RESERVE_NAME))
        self.lock = threading.Lock()

    def write(self) -> None:
        """Write the manifest (append while running, compact once the run has ended).

        Raises
        ------
        StorageError
            The manifest cannot be written even with the reserve freed (the previous
            manifest is still in place).
        """
        with self.lock:
            try:
                self._write()
            except StorageError:
                if not self.reserve.size:
                    raise
                log.warning("no space left for the manifest in %s: using the space kept in "
                            "reserve", self.directory)
                self.reserve.release()
                self._write()
                return
            size = sum(os.path.getsize(os.path.join(self.directory, name))
                       for name in (MANIFEST_NAME, LOG_NAME))
            self.reserve.ensure(2 * size + 65536)

    def _write(self) -> None:
        m = self.manifest
        if m.state == "running":
            m.flush(self.directory)
        else:
            m.write(self.directory)

    def close(self) -> None:
        self.reserve.release()


class Collector:
    """Receives batch outcomes on the client: manifest, values, progress, periodic flush."""

    def __init__(self, manifest: Manifest, values: list[Any] | StackedResults | None,
                 writer: ManifestWriter | None, total: int, verbose: bool | None,
                 backend: StorageBackend | None = None) -> None:
        self.backend = backend
        self.manifest = manifest
        self.values = values
        self.writer = writer
        self.pickled: list[str] = []
        self.flush_every = config.get_seconds("manifest.flush-interval")
        self.last_flush = time.monotonic()
        self.flush_failed = False
        self.bar = Progress(total, verbose)

    def add(self, result: BatchResult) -> None:
        """Record a finished batch.

        Raises
        ------
        StorageError
            A payload could not be written because the disk is full or read-only: no
            further call could be kept, so the run stops.
        """
        m = self.manifest
        values = unshipped(result.values)
        idx = np.asarray(result.indices, np.int64)
        status = np.asarray(result.status, np.int8)
        ok = np.flatnonzero(status == OK)
        if len(ok) == len(status) and len(result.sums) == len(status):  # the usual batch
            m.record_batch(idx, result.fmt, result.meta, result.host, result.sums)
        elif len(ok):
            at = ok.tolist()
            m.record_batch(idx[ok], [result.fmt[k] for k in at], [result.meta[k] for k in at],
                           result.host, [result.sums[k] if k < len(result.sums) else None
                                         for k in at])
        if self.values is not None and values is not None:
            for k in ok.tolist():
                self.values[int(idx[k])] = values[k]
        for i, before in result.retried.items():
            k = result.indices.index(i) if i in result.indices else -1
            if k >= 0 and status[k] == OK:
                log.warning("call %d succeeded on attempt %d; before: %s", i,
                            result.attempts[k], "; ".join(before))
        for k in np.flatnonzero(status == CALL_FAILED).tolist():
            i, err = int(idx[k]), result.errors[int(idx[k])]
            m.record_failed(i, err, result.host)
            log.error("call %d failed after %d attempt(s): %s: %s", i, err["attempts"],
                      err["type"], err["message"])
        attempts = np.asarray(result.attempts, np.int32)
        here = np.flatnonzero(((status == OK) | (status == CALL_FAILED)) & (attempts > 0))
        if len(here):  # attempts 0: found on disk, not run here
            start = np.asarray(result.start, float)
            m.record_times(idx[here], np.asarray(result.duration, float)[here],
                           start[here] if len(start) == len(status) else None, attempts[here])
        m.coord_templates.update(result.templates)
        # the base class's collected does nothing: no record per call built for it
        if self.backend is not None and type(self.backend).collected is not \
                StorageBackend.collected:
            shown = self.backend.collected_formats
            self.backend.collected(
                [] if shown == () else
                [Written(f, meta, sums) for f, meta, sums, st in
                 zip(result.fmt, result.meta, result.sums, result.status, strict=True)
                 if st == OK and (shown is None or f in shown)], m)
        if result.warnings:
            self.pickled.extend(result.warnings)
        self.bar.batch(result)
        if result.stopped is not None:
            path = result.stopped.get("path", "?")
            where = self.writer.directory if self.writer is not None else os.path.dirname(path)
            raise StorageError(
                f"{result.stopped['message']}. The run stopped: no further result could be "
                f"written. The calls that finished are kept in {where} and recorded in its "
                "manifest; free some space (or make it writable) and finish the run with "
                "resume=True",
                errno=result.stopped.get("errno"), filename=path,
            )

    def batch_failed(self, indices: list[int], exc: BaseException) -> None:
        """A whole batch failed outside the user function (worker crash, unpicklable func)."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        self.manifest.record_failed(
            indices, {"type": kind, "message": str(exc), "traceback": tb, "attempts": 1}, None)
        log.error("calls %s failed as a whole: %s: %s", indices[:10], kind, exc)
        self.bar.update(0, failed=len(indices))

    def tick(self) -> None:
        """Flush the manifest if it is due; a failed flush is reported once, not fatal."""
        if self.writer is None or time.monotonic() - self.last_flush < self.flush_every:
            return
        t0 = time.monotonic()
        try:
            self.writer.write()
        except StorageError as exc:
            if not self.flush_failed:
                log.warning("could not bring the manifest up to date (the previous one stays "
                            "valid): %s", exc)
            self.flush_failed = True
        # never spend more than ~10% of the client's time on flushing
        self.flush_every = max(self.flush_every, 10 * (time.monotonic() - t0))
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.bar.close()
        if self.pickled:
            for reason in self.pickled:  # each call and its reason, in the run's log
                log.warning("pickled instead of stored: %s", reason)
            # the warning names every such call (up to 20) with its reason
            shown = "; ".join(self.pickled[:20])
            more = len(self.pickled) - 20
            warnings.warn(
                f"{len(self.pickled)} call(s) returned values HDF5 cannot hold exactly and were "
                f"pickled instead (<func>_<i>.pickle): {shown}"
                + (f"; and {more} more (listed in the run's log)" if more > 0 else ""),
                UserWarning,
                stacklevel=5,
            )


def adopt_payloads(manifest: Manifest, spec: WriteSpec) -> int:
    """Record as done the pending calls that have a valid payload on disk; return how many.

    After an interruption, calls may have finished on a worker without their outcome
    reaching the client; their payloads are kept and the manifest says so.
    """
    backend = spec.backend
    if not backend.on_disk or not os.path.isdir(backend.payload_dir):
        return 0
    names = set(os.listdir(backend.payload_dir))
    adopted = 0
    for i in manifest.indices(PENDING):
        i = int(i)
        if not any(os.path.basename(backend.payload(i, ext)) in names
                   for ext in ("h5", "pickle")):
            continue
        found = backend.stored(i, manifest.coord_templates)
        if found is not None:
            manifest.record_done(i, found[0], found[1], None, found[2])
            adopted += 1
    return adopted


def compute_error(manifest: Manifest, layout: RunLayout | None, results: list[Any],
                  logfile: str | None) -> ComputeError:
    """The error of a run with failed calls: count, listing, first traceback, where to look."""
    failed = [int(i) for i in manifest.indices(FAILED)]
    errors = {i: manifest.errors.get(i, {}) for i in failed}
    listing = "\n".join(
        f"  call {i}: {e.get('type')}: {e.get('message')}" for i, e in list(errors.items())[:20]
    )
    if len(failed) > 20:
        listing += f"\n  ... and {len(failed) - 20} more"
    first = errors[failed[0]].get("traceback", "")
    where = []
    if layout is not None:
        where.append(f"manifest {layout.manifest}")
    if logfile:
        where.append(f"log {logfile}")
    kept = int((manifest.status == DONE).sum())
    message = (
        f"{len(failed)} of {manifest.n_inputs} calls failed ({kept} succeeded and were kept):\n"
        f"{listing}\nFirst remote traceback (call {failed[0]}):\n{first}"
        + (f"All errors are recorded in the {' and the '.join(where)}. " if where else "")
        + "The successful results are in this error's .results attribute (None at the "
        "failed calls) and in the ParallelMap's .results."
    )
    if len(results) == manifest.n_inputs:  # one entry per call (not single_file's [<func>.h5])
        results = [None if manifest.status[i] != DONE else r for i, r in enumerate(results)]
    return ComputeError(message, failed=errors, results=results,
                        manifest=layout.manifest if layout else None, logfile=logfile)

