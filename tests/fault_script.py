"""A real user script for the Ctrl-C tests: a ParallelMap of slow calls on a local cluster.

Usage: ``python fault_script.py {own,user,resume} <output_dir>``

* ``own``: acme_xr starts (and must close) its cluster;
* ``user``: the script starts its own dask client first (acme_xr must leave it alone);
* ``resume``: finish the run in ``<output_dir>``.

Environment: ``ACME_XR_TEST_MARKERS``, a directory that gets one file per call started
(``<call>.<pid>.<ns>``); ``ACME_XR_TEST_DELAY``, seconds each call sleeps;
``ACME_XR_TEST_STORAGE`` and ``ACME_XR_TEST_BATCH_SIZE``, the run's ``storage=`` and
``batch_size=`` (default: HDF5 payloads, automatic batches).
On KeyboardInterrupt the script prints ``REPORT <json>`` of what compute() left running,
then lets the interrupt end the script.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

N_CALLS = 24


def slow(i: int, scale: float) -> tuple[np.ndarray, np.int64]:
    markers = os.environ.get("ACME_XR_TEST_MARKERS")
    if markers:
        open(os.path.join(markers, f"{i}.{os.getpid()}.{time.perf_counter_ns()}"), "w").close()
    time.sleep(float(os.environ.get("ACME_XR_TEST_DELAY", "0")))
    return np.linspace(0.0, 1.0, 5) * i + scale, np.int64(i) * 3


def descendants() -> list[int]:
    """Live processes below this one (multiprocessing's resource tracker aside)."""
    from processes import live_children  # this script's directory is on sys.path

    return sorted(live_children())


def _acme_xr_tasks(dask_scheduler: Any) -> list[str]:
    """acme_xr's tasks the scheduler still runs or keeps results of (released ones are
    only bookkeeping, dropped once the cancelled calls still running on workers end)."""
    return [f"{k}: {ts.state}" for k, ts in dask_scheduler.tasks.items()
            if str(k).startswith("acme_xr-") and ts.state != "released"]


def main(mode: str, out: str) -> None:
    from acme_xr import ParallelMap

    client = cluster = None
    if mode == "user":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    before = descendants()
    pmap = ParallelMap(slow, list(range(N_CALLS)), 0.5, output_dir=out, n_workers=2,
                       resume=mode == "resume", verbose=False,
                       storage=os.environ.get("ACME_XR_TEST_STORAGE", "hdf5"),
                       batch_size=int(os.environ.get("ACME_XR_TEST_BATCH_SIZE", "0")) or "auto")
    print("STARTING", flush=True)
    try:
        pmap.compute()
    except KeyboardInterrupt:
        report: dict[str, Any] = {"before": before, "after": descendants()}
        if client is not None:
            report["user_client_works"] = client.submit(abs, -7).result() == 7
            deadline = time.monotonic() + 10
            while client.run_on_scheduler(_acme_xr_tasks) and time.monotonic() < deadline:
                time.sleep(0.05)
            report["acme_xr_tasks"] = client.run_on_scheduler(_acme_xr_tasks)
        print("REPORT", json.dumps(report), flush=True)
        raise
    finally:
        if client is not None:
            client.close()
            cluster.close()  # type: ignore[union-attr]
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
