"""W5: worker memory before and after the 512 MB write run of W2.

Each contender gets its own fresh 2-worker LocalCluster. A small warm-up run of the same
contender (2 calls) comes first, so that imports and allocator pools are in the baseline;
then the worker RSS (summed over both workers, via ``client.run`` + psutil) is taken
before the 64 x 8 MB run, right after it, and after a ``gc.collect()`` on each worker and
one second of rest. Goal for acme_xr: back within 10% of the start.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import report
import workloads
from conftest import start_local_client, stop_local_client
from contenders import ACME_XR, ESI_ACME, run_acme_xr, run_esi_acme

GROUP = "W5 worker RSS"
MB = 1e6

report.declare(GROUP, "W5 worker memory: RSS of both workers around one 512 MB write run "
               "(time column = that run)", None)


def _rss(client: Any) -> float:
    return sum(client.run(workloads.worker_rss).values()) / MB


@pytest.mark.parametrize("contender", [ACME_XR, ESI_ACME])
def test_w5_worker_rss(benchmark: Any, round_dirs: Any, contender: str) -> None:
    run = run_acme_xr if contender == ACME_XR else run_esi_acme
    client = start_local_client()
    try:
        run(workloads.block, [0, 1], os.path.join(round_dirs.new(), "warmup"))
        client.run(workloads.collect_garbage)
        time.sleep(1)
        figures: dict[str, float] = {"before_MB": _rss(client)}

        def target(d: str) -> None:
            run(workloads.block, list(range(64)), os.path.join(d, "run"))
            figures["after_MB"] = _rss(client)

        report.measure(benchmark, GROUP, contender, target, rounds=1,
                       setup=lambda: ((round_dirs.new(),), {}),
                       teardown=lambda d: round_dirs.remove(d))
        client.run(workloads.collect_garbage)
        time.sleep(1)
        figures["after_gc_MB"] = _rss(client)
        figures["after_gc/before"] = figures["after_gc_MB"] / figures["before_MB"]
        figures["growth_MB"] = figures["after_gc_MB"] - figures["before_MB"]
        report.ROWS[(GROUP, contender)].extra.update(
            {k: round(v, 3) for k, v in figures.items()})
    finally:
        stop_local_client(client)
