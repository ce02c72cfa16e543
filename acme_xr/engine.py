"""The client side of a run: group calls into batches, submit them, collect outcomes.

* Batches are sized from measured call durations (as joblib does): a task should run for
  about ``acme_xr.batch.target-duration`` so that dask's ~2 ms per task stays small, while
  the end of the run is split finely enough to keep every worker busy.
* A few tasks per worker are kept in flight; outcomes are collected with
  :class:`distributed.as_completed` as they finish (no polling of every future).
* A batch lost with its worker is run again by dask. If workers die repeatedly under it
  (dask's ``KilledWorker``), its calls become suspects: each then runs alone, with nothing
  else of the run in flight, because dask blames every task assigned to a dying worker,
  also those only queued there. A suspect that kills its worker while alone fails (it is
  the culprit); every other call completes.

Examples
--------
>>> b = Batcher(range(100), slots=2)
>>> len(b.take()[0])   # the first batches have one call: nothing is measured yet
1
>>> b.observe(n_calls=1, seconds=0.001)
>>> len(b.take()[0])   # 0.2 s of 1 ms calls, but no more than a quarter of what is left
25
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cloudpickle

from . import config
from .inputs import CallPlan
from .worker import BatchResult, Runner

__all__ = ["Batcher", "Chunk", "execute"]

log = logging.getLogger(__name__)

_MAX_RESUBMITS = 3


class Batcher:
    """Hands out batches of call indices, sized by the measured time per call.

    Parameters
    ----------
    todo : iterable of int
        Call indices to run, in order.
    slots : int
        Worker threads; the tail of the run is split so that each gets work.
    batch_size : int, optional
        Fixed number of calls per batch (no automatic sizing).
    """

    def __init__(self, todo: Iterable[int], slots: int, batch_size: int | None = None) -> None:
        self._todo = deque(todo)
        self._retry: deque[tuple[list[int], int]] = deque()
        self._suspects: deque[int] = deque()
        self.slots = max(1, slots)
        self.fixed = batch_size
        self.target = config.get_seconds("batch.target-duration")
        self.max_size = int(config.get("batch.max-size"))
        self.per_call: float | None = None

    def __len__(self) -> int:
        return len(self._todo) + sum(len(b) for b, _ in self._retry) + len(self._suspects)

    def observe(self, n_calls: int, seconds: float) -> None:
        """Feed back how long a finished batch of ``n_calls`` took on its worker."""
        if n_calls <= 0 or not math.isfinite(seconds):
            return
        x = max(seconds / n_calls, 1e-7)
        self.per_call = x if self.per_call is None else 0.5 * self.per_call + 0.5 * x

    def put_back(self, indices: Sequence[int], tries: int, one_by_one: bool = False) -> None:
        """Queue calls again (their batch was lost) before any new ones; ``tries`` counts
        how often they were lost already."""
        if one_by_one:
            self._retry.extend(([i], tries) for i in indices)
        else:
            self._retry.append((list(indices), tries))

    def suspect(self, indices: Sequence[int]) -> None:
        """Queue calls that were on workers that died, to be run one at a time, alone."""
        self._suspects.extend(indices)

    def take_suspect(self) -> int | None:
        """The next suspect call, or None."""
        return self._suspects.popleft() if self._suspects else None

    @property
    def has_suspects(self) -> bool:
        return bool(self._suspects)

    def take(self) -> tuple[list[int], int] | None:
        """The next batch and how often it was lost before, or None when all is handed out."""
        if self._retry:
            return self._retry.popleft()
        if not self._todo:
            return None
        if self.fixed is not None:
            size = self.fixed
        elif self.per_call is None:
            size = 1
        else:
            tail = math.ceil(len(self._todo) / (2 * self.slots))
            size = min(int(self.target / self.per_call), tail, self.max_size)
        size = max(1, min(size, len(self._todo)))
        return [self._todo.popleft() for _ in range(size)], 0


class Chunk:
    """The per-call arguments of one batch, in an object dask does not look into."""

    __slots__ = ("indices", "values")

    def __init__(self, indices: list[int], values: list[tuple[Any, ...]]) -> None:
        self.indices = indices
        self.values = values

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunk, (self.indices, self.values))


def _load_runner(blob: bytes) -> Runner:
    return cloudpickle.loads(blob)


def _run_chunk(runner: Runner, chunk: Chunk) -> BatchResult:
    return runner.run(chunk.indices, chunk.values)


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
) -> None:
    """Run the calls ``todo`` on ``client``; report each finished batch to ``on_result``.

    ``on_batch_error`` receives the calls of a batch that failed as a whole (not because
    a call raised: those are in the BatchResult) after every resubmission was used up.
    ``share_sys_path`` makes the client's import path available on every worker (a
    running client's workers or SLURM jobs may lack the directory of the user's module).
    ``tick`` is called after each batch (manifest flushes, progress). On any exception,
    including KeyboardInterrupt, every pending task is cancelled before it propagates.

    Raises
    ------
    ClusterError
        The cluster had no worker for ``no_worker_timeout`` seconds (all died or were
        stopped): waiting longer could mean waiting forever.
    """
    from distributed import as_completed
    from distributed.diagnostics.plugin import WorkerPlugin

    if share_sys_path:  # workers of a LocalCluster we spawned inherited it already
        plugin = type("SysPathPlugin", (_SysPath, WorkerPlugin), {})(list(sys.path))
        client.register_plugin(plugin, name=_SysPath.name)

    run_id = uuid.uuid4().hex[:10]
    stem = getattr(plan.func, "__name__", "call")
    runner_future = client.submit(
        _load_runner, cloudpickle.dumps(runner), pure=False, key=f"acme_xr-runner-{run_id}"
    )
    split = plan.split_arguments
    batcher = Batcher(todo, slots=slots, batch_size=batch_size)
    in_flight = max(2, int(config.get("batch.in-flight-per-worker")) * slots)
    # future -> (calls, times resubmitted, runs alone)
    pending: dict[Any, tuple[list[int], int, bool]] = {}
    ac = as_completed()

    def submit(indices: list[int], tries: int = 0, alone: bool = False) -> None:
        chunk = Chunk(indices, [tuple(a.at(i) for a in split) for i in indices])
        fut = client.submit(
            _run_chunk, runner_future, chunk, pure=False,
            key=f"acme_xr-{stem}-{indices[0]}-{run_id}-{uuid.uuid4().hex[:6]}",
        )
        pending[fut] = (indices, tries, alone)
        ac.add(fut)

    def fill() -> None:
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

    current: list[Any] = []  # the future being handled (no longer in pending)
    watch = _WorkerWatch(client, no_worker_timeout)
    try:
        fill()
        for fut in _completed(ac, watch.check):
            current[:] = [fut]
            indices, tries, alone = pending.pop(fut)
            result, exc = _fetch(fut, watch)
            if result is not None:
                ran = sum(1 for a in result.attempts if a > 0)
                if ran:
                    batcher.observe(ran, result.elapsed)
                on_result(result)
            else:
                assert exc is not None
                killed = _is_lost_worker(exc)
                if killed and alone:
                    on_batch_error(indices, exc)  # nothing else ran: this call kills workers
                elif killed:
                    # dask already re-ran it on fresh workers: the culprit is one of these
                    # calls, or another one on the same worker
                    log.warning("workers died while calls %s%s were assigned to them; running "
                                "each of them alone", indices[:5], "..." if len(indices) > 5
                                else "")
                    batcher.suspect(indices)
                elif not killed and tries < _MAX_RESUBMITS and fut.status != "error":
                    log.warning("batch of calls %s... was %s; running it again",
                                indices[:5], fut.status)
                    batcher.put_back(indices, tries + 1)
                else:
                    on_batch_error(indices, exc)
            fut.release()
            current.clear()
            fill()
            if tick is not None:
                tick()
    except BaseException:
        # the traceback keeps these futures alive: cancel them, or a user's own cluster
        # would keep running (and holding the results of) this run's tasks
        futures = list(pending) + current
        ac.clear()
        if futures:
            client.cancel(futures, force=True)
        raise
    finally:
        runner_future.release()
        if runner.call_timeout is not None:
            _close_call_hosts(client, runner.token)


def _fetch(fut: Any, watch: _WorkerWatch) -> tuple[BatchResult | None, BaseException | None]:
    """The BatchResult of a completed future, or the exception that ended it.

    A result can be lost with its worker after the future completed: dask then computes
    it again, and the wait goes on only while the cluster has workers.
    """
    while True:
        try:
            return fut.result(timeout=2), None
        except TimeoutError:
            if fut.status == "error":  # the task itself raised a TimeoutError
                return None, fut.exception()
            watch.check()
        except (Exception, asyncio.CancelledError) as exc:  # erred or cancelled
            return None, exc


def _completed(ac: Any, idle: Callable[[], None]) -> Iterator[Any]:
    """Iterate over ``ac`` (``distributed.as_completed``) as a for loop would, calling
    ``idle`` about once a second while no future completes."""
    last = time.monotonic()
    while True:
        batch = ac.next_batch(block=False)
        if batch:
            yield from batch
            last = time.monotonic()
            continue
        if ac.is_empty():
            return
        with ac.thread_condition:
            ac.thread_condition.wait(timeout=0.1)
        if time.monotonic() - last >= 1.0:
            idle()
            last = time.monotonic()


class _WorkerWatch:
    """Notices a cluster whose workers are all gone and do not come back."""

    def __init__(self, client: Any, timeout: float | None) -> None:
        self.client = client
        self.timeout = timeout
        self.since: float | None = None

    def check(self) -> None:
        if self.timeout is None:
            return
        try:
            n = len(self.client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler did not answer: no news
            return
        if n:
            self.since = None
            return
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since >= self.timeout:
            from .errors import ClusterError

            raise ClusterError(
                f"the dask cluster has had no worker for {now - self.since:.0f} s: all of "
                "them died or were stopped. The calls that finished are kept; start workers "
                "(or let acme_xr start a cluster) and finish the run with resume=True"
            )


def _close_call_hosts(client: Any, token: str) -> None:
    """End the call_timeout child processes of this run on every worker (a user's own
    cluster lives on; workers that were killed took theirs with them)."""
    from .callhost import close_pools_soon

    try:
        client.run(close_pools_soon, token, wait=False)
    except Exception as exc:  # a closing cluster must not hide the run's outcome
        log.debug("could not close the call processes of run %s: %s", token, exc)
