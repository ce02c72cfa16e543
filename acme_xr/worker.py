"""What runs on a dask worker: call the user function for a batch of calls, write each
call's payload atomically, and hand back a small columnar :class:`BatchResult`.

In disk mode the arrays never travel back to the client: only status, shapes, dtypes,
durations and error texts do. A call whose payload already exists (the batch ran before on
a worker that died, or the run is resumed) is not run again.

A call that raises is run again up to ``retries`` times. With ``call_timeout`` the calls run
in a child process that is killed when a call takes too long (see :mod:`acme_xr.callhost`).
A payload that cannot be written because the disk is full or read-only stops the batch: the
calls after it stay pending and the client ends the run with a :class:`StorageError`.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> plan = distribute(lambda x: 2 * x, ([1, 2, 3],), {})
>>> runner = Runner.from_plan(plan, WriteSpec(mode="memory"))
>>> runner.run([0, 2], split_values_for(plan, [0, 2])).values
[2, 6]
"""

from __future__ import annotations

import errno
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .capture import CallOutput, Output, installed
from .errors import StorageError
from .inputs import CallPlan, call_arguments
from .manifest import DONE, PENDING
from .manifest import FAILED as FAILED
from .storage.base import StorageBackend, Written, storage_error
from .storage.checksums import Sums
from .storage.memory import detached
from .storage.registry import backend_class

__all__ = ["WriteSpec", "Runner", "BatchResult", "Attempt", "run_batch", "split_values_for",
           "storage_error", "NOT_RUN", "OK", "FAILED"]

_MAX_TRACEBACK = 16_000

# a call's status in a BatchResult: the manifest's codes (one place, acme_xr.manifest);
# NOT_RUN: the batch stopped before the call
NOT_RUN, OK = PENDING, DONE

# errno values after which no other payload can be written either: stop the run
_DISK_FULL = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class WriteSpec:
    """Where and how a call's results are kept: the run's storage backend, shipped to the
    workers (see :mod:`acme_xr.storage.base`).

    Parameters
    ----------
    mode : str
        The backend's name (:func:`acme_xr.storage.registry.names`): ``"hdf5"``,
        ``"pickle"``, ``"zarr"``, ``"memory"``, ...; ignored when ``backend`` is given.
    directory : str, optional
        Absolute directory of the payload files.
    stem : str
        File name stem, the function's name: payload ``i`` is ``<stem>_<i>.h5``.
    result_shape : tuple, optional
        ACME's ``result_shape`` (``None`` marks the stacking axis, ``np.inf`` any length);
        ``result_0`` of every call must fit it.
    checksums : bool
        Record each payload's size and CRC-32C sums (:class:`~acme_xr.storage.checksums.Sums`).
    backend : StorageBackend, optional
        The backend itself (a run's, from :attr:`acme_xr.layout.RunLayout.backend`).
    """

    mode: str
    directory: str | None = None
    stem: str = "result"
    result_shape: tuple[float | None, ...] | None = None
    # record each payload's size and checksums (acme_xr.payload.checksums; decided on the
    # client, so that every worker of a run does the same)
    checksums: bool = True
    backend: StorageBackend = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.backend is None:
            backend = backend_class(self.mode)(
                output_dir=self.directory or "", stem=self.stem,
                result_shape=self.result_shape, checksums=self.checksums)
            object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "mode", self.backend.name)

    @classmethod
    def of(cls, backend: StorageBackend) -> WriteSpec:
        """The spec of a run's backend."""
        return cls(backend.name, directory=backend.payload_dir, stem=backend.stem,
                   result_shape=backend.result_shape, checksums=backend.checksums,
                   backend=backend)

    def payload(self, i: int, ext: str = "h5") -> str:
        return self.backend.payload(i, ext)


@dataclass
class BatchResult:
    """Outcome of a batch, column-wise (one entry per call in ``indices``).

    ``status`` is :data:`OK`, :data:`FAILED` or :data:`NOT_RUN` (the batch stopped before
    the call, see ``stopped``). ``attempts`` is 0 for a call whose payload was found on disk.
    """

    indices: list[int]
    status: list[int] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    # UNIX time (s) at which the call's last attempt started (NaN: not run here)
    start: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    fmt: list[str | None] = field(default_factory=list)
    meta: list[Any] = field(default_factory=list)
    # Sums of each call's payload file (None: not recorded, or not a file of its own)
    sums: list[Sums | None] = field(default_factory=list)
    values: list[Any] | None = None
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # call -> "type: message" of each failed attempt before the last one
    retried: dict[int, list[str]] = field(default_factory=dict)
    # error record (with "path") of a write that makes every further write fail
    stopped: dict[str, Any] | None = None
    host: str = ""
    elapsed: float = 0.0
    # a batch-writing backend's staged values, (call, values), written at the batch's end
    # (never sent back: emptied before the batch returns)
    rows: list[tuple[int, Any]] | None = None
    # call -> what its attempts printed and warned (acme_xr.capture), for the run's log
    output: dict[int, Output] = field(default_factory=dict)

    def add(self, status: int, duration: float, attempts: int, fmt: str | None = None,
            meta: Any = None, value: Any = None, sums: Sums | None = None,
            start: float = float("nan")) -> None:
        self.status.append(status)
        self.duration.append(duration)
        self.start.append(start)
        self.attempts.append(attempts)
        self.fmt.append(fmt)
        self.meta.append(meta)
        self.sums.append(sums)
        if self.values is not None:
            self.values.append(value)


@dataclass
class Attempt:
    """One attempt at one call: what came out, or the error record of what went wrong."""

    ok: bool
    seconds: float
    fmt: str | None = None
    meta: Any = None
    value: Any = None
    error: dict[str, Any] | None = None
    # the run cannot go on (no payload can be written any more)
    fatal: bool = False
    sums: Sums | None = None
    # what the function printed and warned (None: nothing)
    output: Output | None = None

    @classmethod
    def failed(cls, exc: BaseException, seconds: float, fatal: bool = False,
               output: Output | None = None) -> Attempt:
        return cls(False, seconds, error=error_record(exc), fatal=fatal, output=output)


def error_record(exc: BaseException, attempts: int = 1) -> dict[str, Any]:
    """``{"type", "message", "traceback", "attempts"}`` of an exception, as JSON types."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > _MAX_TRACEBACK:
        tb = tb[: _MAX_TRACEBACK // 2] + "\n[...]\n" + tb[-_MAX_TRACEBACK // 2 :]
    record = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": str(exc),
        "traceback": tb,
        "attempts": attempts,
    }
    if isinstance(exc, StorageError) and exc.filename:
        record["path"] = exc.filename
        record["errno"] = exc.errno
    return record


@dataclass
class Runner:
    """The user function plus everything every call shares; shipped once per worker.

    ``positional``/``keyword`` hold ``(True, k)`` for the ``k``-th split argument and
    ``(False, value)`` for a value that every call gets whole; they keep the user's call
    form (given by position stays positional, given by name stays a keyword).
    """

    func: Callable[..., Any]
    positional: list[tuple[bool, Any]]
    keyword: dict[str, tuple[bool, Any]]
    task_id: bool
    spec: WriteSpec
    retries: int = 0
    # seed= of the run: the ``rng`` parameter gets call i's own Generator
    seed: np.random.SeedSequence | None = None
    call_timeout: float | None = None
    # debug mode: let the user's exception propagate instead of recording it
    reraise: bool = False
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    # the child processes of call_timeout on this worker (never pickled)
    _pool: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    @classmethod
    def from_plan(cls, plan: CallPlan, spec: WriteSpec, retries: int = 0,
                  call_timeout: float | None = None) -> Runner:
        positional, keyword = plan.slots()
        return cls(
            func=plan.func,
            positional=positional,
            keyword=keyword,
            task_id=plan.task_id,
            spec=spec,
            retries=retries,
            seed=plan.seed,
            call_timeout=call_timeout,
        )

    def arguments(self, i: int, split: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of call ``i`` in the form the user gave them
        (``split``: the call's values of the split arguments).

        Called once per attempt: with a seed, every attempt of call ``i`` gets a new
        Generator at the start of the call's stream, so a retry draws what the first
        attempt drew.
        """
        return call_arguments(self.positional, self.keyword, split, i, self.task_id,
                              self.seed)

    def store(self, i: int, result: Any, out: BatchResult) -> Written:
        """Hand call ``i``'s result to the run's backend; return what it wrote.

        Raises
        ------
        StorageError
            The payload could not be written (the message names its path).
        """
        backend = self.spec.backend
        if out.rows is not None:  # the backend writes the batch at its end (write_rows)
            written, items = backend.stage(i, result, out.templates, out.warnings)
            if items is not None:
                out.rows.append((i, items))
            return written
        return backend.write_call(i, result, out.templates, out.warnings)

    def attempt(self, i: int, split: Sequence[Any], out: BatchResult) -> Attempt:
        """Run call ``i`` once, here, and store its result."""
        args, kwargs = self.arguments(i, split)
        captured = CallOutput()
        t0 = time.perf_counter()
        try:
            with captured:
                result = self.func(*args, **kwargs)
            fmt, meta, sums = self.store(i, result, out)
        except StorageError as exc:
            if self.reraise:
                raise
            return Attempt.failed(exc, time.perf_counter() - t0,
                                  fatal=exc.errno in _DISK_FULL, output=captured.output)
        except Exception as exc:  # the user's error is data, recorded per call
            if self.reraise:
                raise
            return Attempt.failed(exc, time.perf_counter() - t0, output=captured.output)
        value = None if self.spec.backend.on_disk else detached(result)
        return Attempt(True, time.perf_counter() - t0, fmt, meta, value, sums=sums,
                       output=captured.output)

    def _call_pool(self) -> Any:
        if self._pool is None:
            from .callhost import HostPool

            self._pool = HostPool.for_runner(self)
        return self._pool

    def close_children(self) -> None:
        """End the child processes that ran this runner's calls here (``call_timeout``)."""
        if self._pool is not None:
            self._pool.close()

    def run(self, indices: Sequence[int], split_values: Sequence[Sequence[Any]],
            first: str | None = None) -> BatchResult:
        """Run the calls ``indices`` (with their split argument values).

        ``first``: the batch's dask task key when the client knows that none of its calls
        can have a result stored yet (a new run, calls submitted for the first time); the
        resume check is then skipped unless the task is found to have started before.
        """
        with installed():  # each call's prints and warnings, for the run's log
            return self._run(indices, split_values, first)

    def _run(self, indices: Sequence[int], split_values: Sequence[Sequence[Any]],
             first: str | None) -> BatchResult:
        t_batch = time.perf_counter()
        out = BatchResult(indices=list(indices), host=_host())
        memory = not self.spec.backend.on_disk
        if memory:
            out.values = []
        isolated = self.call_timeout is not None and not self.reraise
        # a backend writing whole chunks gets the batch's values at its end (a call run in
        # a call_timeout child writes its own, call by call)
        batched = self.spec.backend.batched and not isolated
        if batched:
            out.rows = []
        # what the batch's calls have on disk already, in one look (a directory listing
        # rather than a stat per call, where that is cheaper); nothing to look for in a
        # new run's batch that runs for the first time (two stat() calls of missing files
        # per call, 7-22 us each here, ~10% of a small call's cost)
        stored: list[Written | None]
        if memory or (first is not None and not batched
                      and self.spec.backend.claim_batch(first)):
            stored = [None] * len(indices)
        else:
            stored = self.spec.backend.stored_batch(indices, out.templates)
        cancelled = _cancel_check()
        for k, (i, split) in enumerate(zip(indices, split_values, strict=True)):
            if out.stopped is not None or cancelled():
                out.add(NOT_RUN, float("nan"), 0)
                continue
            found = stored[k]
            if found is not None:
                out.add(OK, float("nan"), 0, *found)
                continue
            n = 0
            while True:
                n += 1
                t_start = time.time()
                if isolated:
                    a = self._call_pool().call(i, split, n, out)
                else:
                    a = self.attempt(i, split, out)
                if a.output:
                    out.output.setdefault(i, []).extend(a.output)
                if a.ok or a.fatal or n > self.retries:
                    break
                assert a.error is not None
                out.retried.setdefault(i, []).append(f"{a.error['type']}: {a.error['message']}")
            if a.ok:
                out.add(OK, a.seconds, n, a.fmt, a.meta, a.value, a.sums, t_start)
                continue
            assert a.error is not None
            a.error["attempts"] = n
            if i in out.retried:
                a.error["earlier"] = out.retried[i]
            out.errors[i] = a.error
            out.add(FAILED, a.seconds, n, start=t_start)
            if a.fatal:
                out.stopped = a.error
        if batched:
            self._write_rows(out)
        out.elapsed = time.perf_counter() - t_batch
        return out

    def _write_rows(self, out: BatchResult) -> None:
        """Write a batch's staged values; if that fails, its calls fail with the error."""
        rows, out.rows = out.rows or [], None
        if not rows:
            return
        # only the calls run here: a chunk is written whole (not read first) only when they
        # cover it, so calls found done in it, or not run (cancelled), keep their rows
        ran = [i for i, n in zip(out.indices, out.attempts, strict=True) if n > 0]
        try:
            self.spec.backend.write_rows(ran, rows)
        except StorageError as exc:
            if self.reraise:
                raise
            error = error_record(exc)
            position = {i: k for k, i in enumerate(out.indices)}
            for i, _ in rows:
                k = position[i]
                out.status[k], out.fmt[k], out.meta[k] = FAILED, None, None
                out.errors[i] = dict(error, attempts=out.attempts[k])
            if exc.errno in _DISK_FULL:
                out.stopped = error


def _cancel_check() -> Callable[[], bool]:
    """Whether the dask task running this batch was cancelled (the client was interrupted):
    the rest of the batch is then skipped. dask cannot stop a running task itself; a worker
    plugin tells (:mod:`acme_xr.cancel`)."""
    from .cancel import current_check

    return current_check()


def _host() -> str:
    name = socket.gethostname()
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return f"{name}/{get_worker().name}"
        except ValueError:
            pass
    return name


def run_batch(runner: Runner, indices: list[int],
              split_values: list[tuple[Any, ...]]) -> BatchResult:
    """The dask task: run a batch on this worker (module-level, so it pickles by name)."""
    return runner.run(indices, split_values)


def split_values_for(plan: CallPlan, indices: Sequence[int]) -> list[tuple[Any, ...]]:
    """Per-call values of the split arguments, in ``plan.split_arguments`` order."""
    split = plan.split_arguments
    return [tuple(a.at(i) for a in split) for i in indices]
