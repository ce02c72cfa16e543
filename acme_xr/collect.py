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
['.acme_xr-reserve', 'manifest.json']
>>> writer.close()
>>> sorted(os.listdir(d))
['manifest.json']
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import warnings
from typing import Any

from . import config
from .errors import ComputeError, StorageError
from .layout import RunLayout
from .manifest import DONE, FAILED, PENDING, Manifest
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
    """Write ``manifest`` into ``directory`` atomically; survive a full disk.

    After each write, a reserve file (twice the manifest's size) is kept next to it. When a
    write fails (disk full, quota), the reserve is given up and the write tried once more:
    the old manifest stays in place until the new one is complete, and the new one has
    room. :meth:`close` removes the reserve.
    """

    def __init__(self, manifest: Manifest, directory: str) -> None:
        self.manifest = manifest
        self.directory = directory
        self.reserve = SpaceReserve(os.path.join(directory, RESERVE_NAME))

    def write(self) -> None:
        """Write the manifest.

        Raises
        ------
        StorageError
            The manifest cannot be written even with the reserve freed (the previous
            manifest is still in place).
        """
        try:
            path = self.manifest.write(self.directory)
        except StorageError:
            if not self.reserve.size:
                raise
            log.warning("no space left for the manifest in %s: using the space kept in "
                        "reserve", self.directory)
            self.reserve.release()
            self.manifest.write(self.directory)
            return
        self.reserve.ensure(2 * os.path.getsize(path) + 65536)

    def close(self) -> None:
        self.reserve.release()


class _Progress:
    """A progress bar that appears once the run has taken ``acme_xr.progress.delay``.

    tqdm is imported only then: importing it costs ~0.1 s, a tenth of a short run.
    """

    def __init__(self, total: int, show: bool) -> None:
        self.total = total
        self.show = show
        self.done = 0
        self.started = time.monotonic()
        self.delay = config.get_seconds("progress.delay")
        self.bar: Any = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.show and time.monotonic() - self.started >= self.delay:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, unit="call", leave=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
        self.bar = _Progress(total, show=verbose is not False)

    def add(self, result: BatchResult) -> None:
        """Record a finished batch.

        Raises
        ------
        StorageError
            A payload could not be written because the disk is full or read-only: no
            further call could be kept, so the run stops.
        """
        m = self.manifest
        ran = 0
        values = unshipped(result.values)
        for k, i in enumerate(result.indices):
            status = result.status[k]
            if status == OK:
                m.record_done(i, result.fmt[k], result.meta[k], result.host,
                              result.sums[k] if k < len(result.sums) else None)
                if self.values is not None and values is not None:
                    self.values[i] = values[k]
                if i in result.retried:
                    log.warning("call %d succeeded on attempt %d; before: %s", i,
                                result.attempts[k], "; ".join(result.retried[i]))
            elif status == CALL_FAILED:
                err = result.errors[i]
                m.record_failed(i, err, result.host)
                log.error("call %d failed after %d attempt(s): %s: %s", i, err["attempts"],
                          err["type"], err["message"])
            else:
                continue  # not run: the batch stopped before it
            ran += 1
            if result.attempts[k] > 0:  # 0: found on disk, not run here
                m.duration[i] = result.duration[k]
                m.attempts[i] = result.attempts[k]
                if k < len(result.start):
                    m.start[i] = result.start[k]
        m.coord_templates.update(result.templates)
        if self.backend is not None:
            self.backend.collected(
                [Written(f, meta, sums) for f, meta, sums, st in
                 zip(result.fmt, result.meta, result.sums, result.status, strict=True)
                 if st == OK], m)
        if result.warnings:
            self.pickled.extend(result.warnings)
        self.bar.update(ran)
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
        for i in indices:
            self.manifest.record_failed(
                i, {"type": kind, "message": str(exc), "traceback": tb, "attempts": 1}, None)
        log.error("calls %s failed as a whole: %s: %s", indices[:10], kind, exc)
        self.bar.update(len(indices))

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

