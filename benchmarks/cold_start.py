"""Time to the first result from a cold start, in this fresh process; prints one JSON line.

Usage: python cold_start.py {acme_xr|dask}

acme_xr: ``ParallelMap(f, [1], write_worker_results=False).compute()`` with no running
client (it starts a LocalCluster, runs the call, closes the cluster). dask: a bare
``LocalCluster(n_workers=1)`` + ``Client`` + ``submit(f, 1).result()`` + close. The imports
happen inside the timed region and are reported apart (for acme_xr: ``from acme_xr import
ParallelMap``, which imports acme_xr's modules, plus the dask.distributed it imports lazily,
so that both import phases hold distributed); they sit
under the main guard so that the spawned worker processes, which re-import this file, do not
import them.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()


def f(x: int) -> int:
    return 2 * x


def main(mode: str) -> dict[str, float]:
    t0 = time.perf_counter()
    if mode == "acme_xr":
        import distributed  # noqa: F401 -- acme_xr imports it lazily; count it as import

        # what a user types; acme_xr's names are lazy, so this is what imports its modules
        from acme_xr import ParallelMap

        t_import = time.perf_counter()
        result = ParallelMap(f, [1], write_worker_results=False, verbose=False).compute()
        value = result[0]
    else:
        from distributed import Client, LocalCluster

        t_import = time.perf_counter()
        cluster = LocalCluster(n_workers=1)
        client = Client(cluster)
        value = client.submit(f, 1).result()
        client.close()
        cluster.close()
    t_end = time.perf_counter()
    assert value == 2, value
    return {"import_s": t_import - t0, "run_s": t_end - t_import, "total_s": t_end - t0,
            "since_start_s": t_end - T_START}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(sys.argv[1])))
