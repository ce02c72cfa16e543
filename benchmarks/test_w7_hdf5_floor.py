"""W7: HDF5 payloads at the floor (issue 12, point 3).

``f(x) = np.full(4, x)`` (:func:`workloads.full4`) over 20,000 and 200,000 inputs with
per-call HDF5 payloads (the default) on one shared 2-worker LocalCluster, side by side with
the write-and-rename floor: 2 warm plain processes each writing its share of 2 KB files to
a temporary name and renaming them into place (:func:`workloads.write_rename_range`). Both
write into a fresh directory under the same parent (one file system, the same conditions:
an empty directory growing to N files); their rounds alternate. The 200,000-call rows are
marked ``big``.

Per row: wall time (time per call); the CPU seconds per call of the writing processes
(acme_xr's two dask workers, the floor's two plain processes) and, for acme_xr, of the
client process (which also hosts the scheduler); acme_xr's payload size.

The group "W7 one process" takes dask and the client away: acme_xr's worker code path
(``Runner.run`` over batches of 500 calls, as a worker runs a new run's batches) against
the same floor in this one process, rounds alternating; the CPU time per call is what
the worker path costs beyond writing the files.

Goal (issue 12): acme_xr at most 2x the floor's time per call.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time
from typing import Any

import pytest
import report
import workloads

FLOOR = "write+rename floor, 2 processes"
ACME_XR = "acme_xr HDF5 payloads"
SIZES = (20_000,)
BIG = (200_000,)
_NAMES = {20_000: "n20k", 200_000: "n200k"}
GROUP = "W7 HDF5 floor N={n:,}"
# (group, contender, figure) -> one value per round; the rows show the medians
_PER_ROUND: dict[tuple[str, str, str], list[float]] = {}


def _rounds(n: int) -> int:
    return 3 if n <= 20_000 else 1


def _cases(sizes: tuple[int, ...]) -> list[Any]:
    return [pytest.param(n, c, id=f"{_NAMES[n]}-r{r}-{'floor' if c == FLOOR else 'acme_xr'}")
            for n in sizes
            for r, c in report.interleaved([FLOOR, ACME_XR], lambda c, n=n: _rounds(n))]


ONE = "W7 one process N={n:,}"
ONE_FLOOR = "write+rename floor, 1 process"
ONE_ACME = "acme_xr Runner.run, 1 process"
BATCH = 500


def _worker_cpu(client: Any) -> float:
    return sum(client.run(workloads.process_cpu).values())


def _run(benchmark: Any, client: Any, pool: Any, round_dirs: Any, n: int,
         contender: str) -> None:
    import acme_xr

    group = GROUP.format(n=n)
    report.declare(group, f"W7 {n:,} calls of f(x) = np.full(4, x), HDF5 payloads on 2 "
                   "workers, against 2 processes writing 2 KB files to a temporary name + "
                   "rename (goal: acme_xr <= 2x)", FLOOR)
    cpu: dict[str, float] = {}
    extra: dict[str, Any] = {}

    def keep(figure: str, value: float) -> None:
        values = _PER_ROUND.setdefault((group, contender, figure), [])
        values.append(value)
        extra[figure] = round(statistics.median(values), 1)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        d = round_dirs.new()
        if contender == ACME_XR:
            cpu["workers"], cpu["client"] = _worker_cpu(client), workloads.process_cpu()
        return (d,), {}

    def target(d: str) -> None:
        if contender == FLOOR:
            done = pool.starmap(workloads.write_rename_range, [(d, 0, n, 2), (d, 1, n, 2)])
            assert sum(k for k, _ in done) == n
            cpu["workers"] = sum(c for _, c in done)
        else:
            acme_xr.ParallelMap(workloads.full4, list(range(n)), output_dir=os.path.join(
                d, "run"), verbose=False).compute()

    def teardown(d: str) -> None:
        if contender == ACME_XR:
            workers = _worker_cpu(client) - cpu["workers"]
            keep("client_cpu_us_per_call", 1e6 * (workloads.process_cpu() - cpu["client"]) / n)
            run = os.path.join(d, "run")
            extra["payload_bytes"] = os.path.getsize(os.path.join(run, "full4_0.h5"))
            found = sum(name.startswith("full4_") for name in os.listdir(run))
            assert found == n, f"{found} payloads for {n} calls"
        else:
            workers = cpu["workers"]
        keep("worker_cpu_us_per_call", 1e6 * workers / n)
        round_dirs.remove(d)

    row = report.measure(benchmark, group, contender, target, rounds=1, setup=setup,
                         teardown=teardown, n_calls=n)
    row.extra.update(extra)


@pytest.mark.parametrize("n,contender", _cases(SIZES))
def test_w7_hdf5_floor(benchmark: Any, local_client: Any, plain_pool: Any, round_dirs: Any,
                       n: int, contender: str) -> None:
    _run(benchmark, local_client, plain_pool, round_dirs, n, contender)


@pytest.mark.big
@pytest.mark.parametrize("n,contender", _cases(BIG))
def test_w7_hdf5_floor_big(benchmark: Any, local_client: Any, plain_pool: Any,
                           round_dirs: Any, n: int, contender: str) -> None:
    _run(benchmark, local_client, plain_pool, round_dirs, n, contender)


def _runner_loop(directory: str, n: int) -> None:
    """acme_xr's worker path for ``n`` calls of a new run, in this process."""
    from acme_xr.inputs import distribute
    from acme_xr.worker import Runner, WriteSpec, split_values_for

    plan = distribute(workloads.full4, (list(range(n)),), {})
    runner = Runner.from_plan(plan, WriteSpec("hdf5", directory=directory, stem="full4"))
    # a new run's batch (the before/after comparison runs this on code without ``first``)
    first = "first" in inspect.signature(runner.run).parameters
    for start in range(0, n, BATCH):
        idx = list(range(start, min(n, start + BATCH)))
        kw = {"first": f"task-{start}"} if first else {}
        out = runner.run(idx, split_values_for(plan, idx), **kw)
        assert out.status == [1] * len(idx)


@pytest.mark.parametrize("n,contender", [
    pytest.param(n, c, id=f"{_NAMES[n]}-r{r}-{'floor' if c == ONE_FLOOR else 'acme_xr'}")
    for n in SIZES
    for r, c in report.interleaved([ONE_FLOOR, ONE_ACME], lambda c: 3)])
def test_w7_one_process(benchmark: Any, round_dirs: Any, n: int, contender: str) -> None:
    group = ONE.format(n=n)
    report.declare(group, f"W7 without dask: {n:,} calls of f in one process, acme_xr's "
                   "worker path against the write+rename floor (derived: wall per call; "
                   "cpu_us_per_call: this process)", ONE_FLOOR)
    cpu: dict[str, float] = {}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (round_dirs.new(),), {}

    def target(d: str) -> None:
        c0 = time.process_time()
        if contender == ONE_FLOOR:
            workloads.write_rename_range(d, 0, n, 1)
        else:
            _runner_loop(d, n)
        cpu["s"] = time.process_time() - c0

    def teardown(d: str) -> None:
        values = _PER_ROUND.setdefault((group, contender, "cpu"), [])
        values.append(1e6 * cpu["s"] / n)
        round_dirs.remove(d)

    row = report.measure(benchmark, group, contender, target, rounds=1, setup=setup,
                         teardown=teardown, n_calls=n)
    row.extra["cpu_us_per_call"] = round(statistics.median(
        _PER_ROUND[(group, contender, "cpu")]), 1)
