"""C1: 1,000 calls on 4 SLURM worker jobs beside a 4-worker LocalCluster.

Each round starts its cluster with ``acme_xr.cluster_setup`` (``"slurm"``: 4 one-core worker
jobs in partition ``debug`` of ci/slurm.sh's one-node cluster; ``"local"``: 4 worker
processes), runs ``ParallelMap(double, range(N))`` writing HDF5 payloads, and records the time
from the start to the first payload on disk and to the last result (``compute()`` returning),
cluster start included: what a user waits for. The cluster is closed after the clock stops.

``ACME_XR_BENCH_C1_CALLS`` (default 1000) and ``ACME_XR_BENCH_C1_ROUNDS`` (default 3) shrink
it for a smoke run: ``ACME_XR_BENCH_C1_CALLS=50 ACME_XR_BENCH_C1_ROUNDS=1``. Without SLURM
the SLURM rounds skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

import pytest
import report
import workloads

N = int(os.environ.get("ACME_XR_BENCH_C1_CALLS", "1000"))
ROUNDS = int(os.environ.get("ACME_XR_BENCH_C1_ROUNDS", "3"))
WORKERS = 4
LOCAL = "LocalCluster x4"
SLURM = "SLURM x4 jobs"
LAST, FIRST = f"C1 last N={N}", f"C1 first N={N}"

report.declare(LAST, f"C1 time to the last of {N:,} results (f(x) = 2 * x, HDF5), cluster "
               f"start included, {WORKERS} workers", LOCAL)
report.declare(FIRST, f"C1 time to the first of {N:,} results, cluster start included", LOCAL)

CASES = [pytest.param(c, id=f"r{r}-{c.split()[0]}")
         for r, c in report.interleaved([LOCAL, SLURM], lambda c: ROUNDS)]


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch on this machine (start ci/slurm.sh)"
    try:
        from acme_xr.slurm import slurm_partitions

        if "debug" not in slurm_partitions():
            return "no partition 'debug' (start ci/slurm.sh)"
    except Exception as exc:  # noqa: BLE001 - any failure means: no SLURM to measure
        return f"SLURM does not answer: {exc}"
    return None


class FirstPayload:
    """Notes when the first payload file appears in a directory (polled every 2 ms)."""

    def __init__(self, directory: str, t0: float) -> None:
        self.directory, self.t0 = directory, t0
        self.seconds: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                if any(e.name.endswith(".h5") and e.name.startswith("double_")
                       for e in os.scandir(self.directory)):
                    self.seconds = time.perf_counter() - self.t0
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("contender", CASES)
def test_c1_time_to_first_and_last_result(benchmark: Any, round_dirs: Any,
                                          contender: str) -> None:
    from acme_xr import ParallelMap, cluster_cleanup, cluster_setup

    if contender == SLURM:
        problem = _slurm_problem()
        if problem is not None:
            report.note(f"C1 SLURM not measured: {problem}")
            pytest.skip(problem)
    firsts: list[float] = []
    clients: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (os.path.join(round_dirs.new(), "run"),), {}

    def target(out: str) -> None:
        t0 = time.perf_counter()
        watch = FirstPayload(out, t0)
        try:
            if contender == SLURM:
                client = cluster_setup("slurm", n_workers=WORKERS, partition="debug",
                                       mem_per_worker="500MiB")
            else:
                client = cluster_setup("local", n_workers=WORKERS)
            clients.append(client)
            files = ParallelMap(workloads.double, list(range(N)), output_dir=out,
                                verbose=False).compute()
        finally:
            watch.close()
        assert len(files) == N
        assert watch.seconds is not None
        firsts.append(watch.seconds)

    def teardown(out: str) -> None:
        while clients:
            cluster_cleanup(clients.pop())
        round_dirs.remove(os.path.dirname(out))

    report.measure(benchmark, LAST, contender, target, rounds=1, setup=setup,
                   teardown=teardown, n_calls=N)
    report.record(FIRST, contender, firsts, n_calls=N)
