"""Write the tiny ACME run beside this script (run with esi-acme 2026.6.2's Python).

    /tmp/acme-venv/bin/python tests/data/runs/acme-2026.6.2/make_run.py tests/data/runs/acme-2026.6.2/run

Four calls of ``f``; call 2 fails on purpose (ACME keeps going and writes no payload for it).
"""

import os
import shutil
import sys

import numpy as np


def f(x):
    if x == 2:
        raise ValueError("call 2 fails on purpose")
    return np.arange(3, dtype=np.int64) * x, float(x) / 2


if __name__ == "__main__":
    from acme import ParallelMap
    from dask.distributed import Client, LocalCluster

    out = os.path.abspath(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    # ACME picks up a running client; partition only passes its check where SLURM exists
    with Client(LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)):
        with ParallelMap(f, [0, 1, 2, 3], output_dir=out, setup_interactive=False, partition="any",
                         verbose=False, logfile=False) as pmap:
            try:
                pmap.compute()
            except Exception as exc:  # ACME reports the failed call after the others ran
                print(type(exc).__name__, exc)
