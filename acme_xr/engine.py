"""The client side of a run: submit batches of calls, collect their outcomes.

* Calls are grouped into batches (:class:`~acme_xr.batching.Batcher`), one dask task each;
  the Runner (the function and every argument that goes whole to every call) is shipped
  once per worker, each batch's split values with its task. Both travel the way dask
  ships data: what cloudpickle cannot pickle goes through dask's serializers
  (:mod:`acme_xr.shipping`).
* A few tasks per worker are kept in flight; each outcome is fetched by dask's own gather
  in the client's event loop as soon as its task ends, with no client-side timeout.
* A batch lost with its worker is run again by dask. If workers die repeatedly under it
  (dask's ``KilledWorker``), its calls become suspects: each then runs alone, with nothing
  else of the run in flight, because dask blames every task assigned to a dying worker,
  also those only queued there. A suspect that kills its worker while alone fails (it is
  the culprit); every other call completes.
* A cluster without workers, or a client without its scheduler, for ``setup_timeout``
  ends the run with :class:`~acme_xr.errors.ClusterError`.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> plan = distribute(abs, ([-1, -2],), {})
>>> chunk = Chunk([0, 1], ship_values(plan, [0, 1]))
>>> import pickle
>>> pickle.loads(pickle.dumps(chunk)).values
[(-1,), (-2,)]
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import queue
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import config
from .batching import Batcher
from .cancel import PLUGIN_NAME, active, running, watch_plugin
from .errors import InputTypeError
from .inputs import CallPlan
from .shipping import Shipped, dumps, ship_runner, ship_values
from .worker import BatchResult, Runner

__all__ = ["Batcher", "Chunk", "execute"]

log = logging.getLogger(__name__)

_MAX_RESUBMITS = 3


class Chunk:
    """The calls of one batch and their values of the split arguments.

    The values are pickled when the Chunk is made (:class:`~acme_xr.shipping.Shipped`:
    what cloudpickle cannot pickle goes through dask's serializers), so that a value that
    cannot travel fails here, where its argument can be named.
    """

    __slots__ = ("indices", "values", "key", "check")

    def __init__(self, indices: list[int], values: Any, key: str | None = None,
                 check: bool = True) -> None:
        self.indices = indices
        self.values = values
        self.key = key  # its dask task's, so that the batch can tell it was cancelled
        # False: no call of the batch can have a result stored yet (see Runner.run)
        self.check = check

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunk, (self.indices, self.values, self.key, self.check))


class _Parcel:
    """The Runner as a worker holds it: dask moves it to the other workers by pickling it,
    and that pickling must also go through dask's serializers where cloudpickle fails."""

    __slots__ = ("runner",)

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_runner, (dumps(self.runner),))


def _load_runner(blob: bytes) -> _Parcel:
    return _Parcel(pickle.loads(blob))


def _run_chunk(parcel: _Parcel, chunk: Chunk) -> BatchResult:
    with running(chunk.key):
        result = parcel.runner.run(chunk.indices, chunk.values,
                                   first=None if chunk.check else chunk.key)
    if result.values is not None and any(map(_foreign_byte_order, result.values)):
        # dask's own fallback pickling of an object like BatchResult (protocol 4) makes a
        # big-endian array native: such values travel as cloudpickle pickles them
        # (protocol 5). Only then: the extra pickling costs ~30% of a run of tiny calls.
        result.values = Shipped(result.values)  # type: ignore[assignment]
    return result


def _foreign_byte_order(value: Any) -> bool:
    """Whether a return value (or one of a tuple's or list's) has a non-native dtype."""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        dtype = getattr(item, "dtype", None)
        if isinstance(dtype, np.dtype) and not dtype.isnative:
            return True
        data_vars = getattr(item, "data_vars", None)  # an xarray.Dataset
        if data_vars is not None and any(not v.dtype.isnative for v in data_vars.values()):
            return True
    return False


class _SysPath:
    """Worker plugin: make the client's import path available on every worker."""

    name = "acme_xr-syspath"

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def setup(self, worker: Any) -> None:
        for p in self.paths:
            if p not in sys.path:
                sys.path.append(p)


def _is_lost_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


class _Arrivals:
    """Each submitted task's outcome -- its BatchResult or the exception that ended it --
    as soon as dask has it on the client.

    The fetch runs in the client's event loop and awaits dask's own gather with no
    client-side timeout: a result that takes long to arrive (a large array on a loaded
    machine) is never abandoned half-way and asked for again, and a result lost with its
    worker is recomputed by dask before it is handed over. The caller's thread only waits
    on a queue, so no blocking dask call of it can end in a cancelled coroutine (which
    ``distributed.utils.sync`` reports as an ``UnboundLocalError``).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.queue: queue.SimpleQueue[tuple[Any, Any, BaseException | None]] = \
            queue.SimpleQueue()

    def watch(self, fut: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._fetch(fut), self.client.loop.asyncio_loop)

    async def _fetch(self, fut: Any) -> None:
        try:
            (value,) = await self.client.gather([fut], asynchronous=True)
        except (Exception, asyncio.CancelledError) as exc:  # erred, cancelled, lost
            self.queue.put((fut, None, exc))
        else:
            self.queue.put((fut, value, None))

    def next(self, timeout: float) -> tuple[Any, Any, BaseException | None] | None:
        """The next outcome, or None if none arrives within ``timeout`` seconds."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


def execute(
    client: Any,
    plan: CallPlan,
    runner: Runner,
    todo: Sequence[int],
    on_result: Callable[[BatchResult], None],
    on_batch_error: Callable[[list[int], BaseException], None],
    *,
    slots: int,
    batch_size: int | None = None,
    tick: Callable[[], None] | None = None,
    no_worker_timeout: float | None = None,
    share_sys_path: bool = True,
    settle: bool = False,
    runner_blob: bytes | None = None,
    batcher: Batcher | None = None,
) -> None:
    """Run the calls ``todo`` on ``client``; report each finished batch to ``on_result``.

    ``runner_blob`` is ``runner`` as :func:`~acme_xr.shipping.ship_runner` pickled it, when
    the caller did that already (to refuse what cannot travel before any I/O).
    ``batcher`` hands out the batches of ``todo`` when the storage decides them (zarr's
    chunks, :class:`~acme_xr.storage.zarr_batch.ChunkBatcher`); by default they are sized
    by the measured time per call.

    ``on_batch_error`` receives the calls of a batch that failed as a whole (not because
    a call raised: those are in the BatchResult) after every resubmission was used up.
    ``share_sys_path`` makes the client's import path available on every worker (a
    running client's workers or SLURM jobs may lack the directory of the user's module).
    ``tick`` is called after each batch (manifest flushes, progress). On any exception,
    including KeyboardInterrupt, every pending task is cancelled before it propagates;
    with ``settle`` (the cluster outlives the run), also waited for (at most
    ``acme_xr.cancel-timeout``), so that no task of the run still writes into its
    directory when the run's files are finished.

    Raises
    ------
    ClusterError
        The cluster had no worker, or its scheduler did not answer, for
        ``no_worker_timeout`` seconds: waiting longer could mean waiting forever.
    InputTypeError
        An argument (or the function) can be serialized neither by pickle nor by dask.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    run_id = uuid.uuid4().hex[:10]
    if runner_blob is None:
        runner_blob = ship_runner(plan, runner)
    if share_sys_path:  # workers of a LocalCluster we spawned inherited it already
        plugin = type("SysPathPlugin", (_SysPath, WorkerPlugin), {})(list(sys.path))
        client.register_plugin(plugin, name=_SysPath.name)
    # lets a running batch see that its task was cancelled (see acme_xr.cancel)
    client.register_plugin(watch_plugin(), name=PLUGIN_NAME)

    stem = getattr(plan.func, "__name__", "call")
    runner_futures: list[Any] = []
    if batcher is None:
        batcher = Batcher(todo, slots=slots, batch_size=batch_size)
    in_flight = max(2, int(config.get("batch.in-flight-per-worker")) * slots)
    # future -> (calls, times resubmitted, runs alone)
    pending: dict[Any, tuple[list[int], int, bool]] = {}
    arrivals = _Arrivals(client)

    def runner_future() -> Any:
        # submitted again if it went with the scheduler's state (a reconnected client)
        if not runner_futures or runner_futures[-1].status in ("cancelled", "lost"):
            runner_futures.append(client.submit(
                _load_runner, runner_blob, pure=False,
                key=f"acme_xr-runner-{run_id}-{len(runner_futures)}"))
        return runner_futures[-1]

    # a new run's storage holds no result: a batch of calls submitted for the first time
    # needs no resume check on its worker (dask running it again is told there)
    backend = runner.spec.backend
    fresh = backend.on_disk and not backend.batched and backend.holds_no_results()
    resubmitted: set[int] = set()

    def submit(indices: list[int], tries: int = 0, alone: bool = False) -> None:
        key = f"acme_xr-{stem}-{indices[0]}-{run_id}-{uuid.uuid4().hex[:6]}"
        check = not fresh or alone or tries > 0 or not resubmitted.isdisjoint(indices)
        try:
            chunk = Chunk(indices, ship_values(plan, indices), key, check)
        except InputTypeError as exc:  # these calls cannot run; the others can
            on_batch_error(indices, exc)
            return
        fut = client.submit(_run_chunk, runner_future(), chunk, pure=False, key=key)
        log.debug("submitted %d call(s) from %d as task %s%s", len(indices), indices[0], key,
                  f" (attempt {tries + 1})" if tries else "")
        pending[fut] = (indices, tries, alone)
        arrivals.watch(fut)

    def fill() -> None:
        if client.status != "running":  # the scheduler is gone (for now): nothing to submit to
            return
        if any(alone for _, _, alone in pending.values()):
            return
        if batcher.has_suspects:
            if not pending:  # the run's other tasks are done: the suspect runs alone
                submit([batcher.take_suspect()], alone=True)  # type: ignore[list-item]
            return
        while len(pending) < in_flight:
            batch = batcher.take()
            if batch is None:
                return
            submit(*batch)

    log.debug("scheduling %d calls on %d worker thread(s), up to %d tasks in flight, %s",
              len(todo), slots, in_flight,
              f"{batch_size} calls per task" if batch_size else
              f"calls per task sized to run ~{config.get_seconds('batch.target-duration'):g} s"
              " each (acme_xr.batch.target-duration)")
    current: list[Any] = []  # the future being handled (no longer in pending)
    watch = _WorkerWatch(client, no_worker_timeout)
    try:
        fill()
        while pending or len(batcher):
            arrived = arrivals.next(timeout=1.0)
            if arrived is None:
                watch.check()
                fill()
                continue
            fut, result, exc = arrived
            if fut not in pending:
                continue
            current[:] = [fut]
            indices, tries, alone = pending.pop(fut)
            if exc is None:
                ran = sum(1 for a in result.attempts if a > 0)
                if ran:
                    batcher.observe(ran, result.elapsed)
                on_result(result)
            else:
                resubmitted.update(indices)
                _without_result(batcher, indices, tries, alone, fut, exc, client, on_batch_error)
            batcher.settled(indices)
            fut.release()
            current.clear()
            fill()
            if tick is not None:
                tick()
    except BaseException:
        # the traceback keeps these futures alive: cancel them, or a user's own cluster
        # would keep running (and holding the results of) this run's tasks
        futures = list(pending) + current
        if futures and client.status == "running":
            try:
                client.cancel(futures, force=True)
            except Exception as exc:  # a failing cluster must not hide the run's outcome
                log.warning("could not cancel the run's pending tasks: %s", exc)
        if settle:
            _release(runner_futures)
            if runner.call_timeout is not None:  # a call stuck in a child ends now
                _close_call_hosts(client, runner.token)
            _wait_until_gone(client, run_id, config.get_seconds("cancel-timeout"))
        raise
    finally:
        _release(runner_futures)
        if runner.call_timeout is not None and client.status == "running":
            _close_call_hosts(client, runner.token)


def _release(futures: list[Any]) -> None:
    while futures:
        futures.pop().release()


def _without_result(batcher: Batcher, indices: list[int], tries: int, alone: bool, fut: Any,
                  exc: BaseException, client: Any,
                  on_batch_error: Callable[[list[int], BaseException], None]) -> None:
    """Decide what becomes of the calls of a task that ended without a result."""
    killed = _is_lost_worker(exc)
    if client.status != "running":
        # the connection to the scheduler was lost, and every future with it: not the
        # batch's fault. The watch ends the run unless the scheduler comes back.
        batcher.put_back(indices, tries)
    elif killed and alone:
        on_batch_error(indices, exc)  # nothing else ran: this call kills workers
    elif killed:
        # dask already re-ran it on fresh workers: the culprit is one of these calls, or
        # another one on the same worker
        log.warning("workers died while calls %s%s were assigned to them; running each of "
                    "them alone", indices[:5], "..." if len(indices) > 5 else "")
        batcher.suspect(indices)
    elif tries < _MAX_RESUBMITS and fut.status != "error":
        log.warning("batch of calls %s... was %s (%s); running it again", indices[:5],
                    fut.status, type(exc).__name__)
        batcher.put_back(indices, tries + 1)
    else:
        on_batch_error(indices, exc)


def _run_tasks(run_id: str) -> list[str]:
    """The batches of run ``run_id`` this worker still runs (runs on a worker)."""
    return active(run_id)


def _wait_until_gone(client: Any, run_id: str, timeout: float) -> None:
    """Wait until no worker has a task of run ``run_id`` any more, at most ``timeout`` s.

    A cancelled task that is running goes on until its current call ends (dask cannot
    stop a thread; the batch skips its other calls): until then it may write a payload.
    """
    if client.status != "running":
        return
    t0 = time.monotonic()
    told = False
    while True:
        try:
            left = client.run(_run_tasks, run_id, on_error="return",
                              callback_timeout=max(1.0, timeout))
        except Exception as exc:  # noqa: BLE001 - the cluster does not answer: no wait
            log.debug("cannot ask the workers about run %s: %s", run_id, exc)
            return
        busy = sorted({k for keys in left.values() if isinstance(keys, list) for k in keys})
        waited = time.monotonic() - t0
        if not busy:
            return
        if waited >= timeout:
            log.warning("%d task(s) of this run still run on the cluster after %.0f s "
                        "(acme_xr.cancel-timeout): their calls may still write payloads, "
                        "which a resume adopts", len(busy), waited)
            return
        if not told and waited > 1.0:
            log.warning("waiting up to %.0f s for the calls still running on the cluster "
                        "to end", timeout)
            told = True
        time.sleep(0.05)


class _WorkerWatch:
    """Notices a cluster whose workers, or whose scheduler, are gone and do not come back."""

    def __init__(self, client: Any, timeout: float | None) -> None:
        self.client = client
        self.timeout = timeout
        self.since: float | None = None
        self.unreachable: float | None = None

    def check(self) -> None:
        from .errors import ClusterError

        if self.timeout is None:
            return
        now = time.monotonic()
        status = self.client.status
        if status == "running":
            self.unreachable = None
        else:
            self.unreachable = self.unreachable or now
            if status in ("closing", "closed") or now - self.unreachable >= self.timeout:
                raise ClusterError(
                    f"lost the connection to the dask scheduler {self._address()} (client "
                    f"{status}) for {now - self.unreachable:.0f} s: the scheduler died or "
                    "cannot be reached. The calls that finished are kept; start the cluster "
                    "again and finish the run with resume=True"
                )
            return
        try:
            n = len(self.client.nthreads(callback_timeout=self.timeout))
        except Exception:  # noqa: BLE001 - the scheduler did not answer: no news
            return
        if n:
            self.since = None
            return
        self.since = self.since or now
        if now - self.since >= self.timeout:
            raise ClusterError(
                f"the dask cluster has had no worker for {now - self.since:.0f} s: all of "
                "them died or were stopped. The calls that finished are kept; start workers "
                "(or let acme_xr start a cluster) and finish the run with resume=True"
            )

    def _address(self) -> str:
        try:
            return str(self.client.scheduler.address)
        except Exception:  # noqa: BLE001 - only for the message
            return "?"


def _close_call_hosts(client: Any, token: str) -> None:
    """End the call_timeout child processes of this run on every worker (a user's own
    cluster lives on; workers that were killed took theirs with them)."""
    from .callhost import close_pools_soon

    try:
        client.run(close_pools_soon, token, wait=False)
    except Exception as exc:  # a closing cluster must not hide the run's outcome
        log.debug("could not close the call processes of run %s: %s", token, exc)
