"""Where acme_xr's time goes in W1 (HDF5): a diagnosis, not a benchmark.

Usage: python benchmarks/profile_w1.py [N_CALLS] [--memory]

On a warm 2-worker LocalCluster (as in the benchmarks) this

1. runs ``ParallelMap(double, range(N))`` writing HDF5 under cProfile on the client, and
   reports wall time, the CPU seconds of the client process (which also hosts the
   LocalCluster's scheduler) and of each worker process, the number of dask tasks, and the
   sum of the per-call durations the workers recorded in the manifest;
2. measures the per-call cost on a worker without any scheduling: one task per worker that
   runs acme_xr's own ``Runner`` over N/2 calls, beside one that writes the same files with
   plain h5py (both workers at once, as in the run);
3. prints the client's cProfile, top 25 by cumulative time.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
import psutil

from acme_xr.manifest import Manifest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def runner_loop(directory: str, n: int, start: int, step: int) -> float:
    """acme_xr's worker code path for calls start::step, without dask in between."""
    from acme_xr.inputs import distribute
    from acme_xr.worker import Runner, WriteSpec, split_values_for

    plan = distribute(workloads.double, (list(range(n)),), {})
    runner = Runner.from_plan(plan, WriteSpec("hdf5", directory=directory, stem="double"))
    idx = list(range(start, n, step))
    values = split_values_for(plan, idx)
    t0 = time.perf_counter()
    runner.run(idx, values)
    return (time.perf_counter() - t0) / len(idx)


def plain_loop(directory: str, n: int, start: int, step: int) -> float:
    t0 = time.perf_counter()
    count = workloads.write_range(directory, start, n, step)
    return (time.perf_counter() - t0) / count


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20000
    memory = "--memory" in sys.argv
    from distributed import Client, LocalCluster

    import acme_xr

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    client.run(workloads.warm_imports)
    pids: dict[str, Any] = client.run(os.getpid)
    base = tempfile.mkdtemp(prefix="acme_xr-profile-")
    try:
        acme_xr.ParallelMap(workloads.double, list(range(50)), write_worker_results=False,
                            verbose=False).compute()
        run_dir = None if memory else os.path.join(base, "run")
        cpu0 = {"client+scheduler": _cpu(os.getpid()),
                **{w: _cpu(p) for w, p in pids.items()}}
        tasks0 = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.transition_counter)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        acme_xr.ParallelMap(workloads.double, list(range(n)), write_worker_results=not memory,
                            output_dir=run_dir, verbose=False).compute()
        prof.disable()
        wall = time.perf_counter() - t0
        tasks = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.transition_counter) - tasks0
        cpu1 = {"client+scheduler": _cpu(os.getpid()),
                **{w: _cpu(p) for w, p in pids.items()}}
        print(f"acme_xr, {n} calls, {'memory' if memory else 'HDF5'}: wall {wall:.2f} s "
              f"({wall / n * 1e6:.0f} us/call); scheduler transitions {tasks} "
              f"(~{tasks // 4} tasks)")
        for k in cpu0:
            print(f"  CPU seconds {k:<40} {cpu1[k] - cpu0[k]:7.2f}")
        if run_dir is not None:
            recorded = Manifest.read(run_dir).duration
            durations = recorded[~np.isnan(recorded)].tolist()
            print(f"  per-call durations recorded by the workers: sum {sum(durations):.2f} s, "
                  f"mean {sum(durations) / len(durations) * 1e6:.0f} us, "
                  f"sum / 2 workers = {sum(durations) / 2:.2f} s of the wall time")
            shutil.rmtree(run_dir)
            for name, fn in (("acme_xr Runner.run", runner_loop), ("plain h5py", plain_loop)):
                d = os.path.join(base, name.split()[0])
                os.makedirs(d)
                per_call = client.gather([
                    client.submit(fn, d, n, k, 2, pure=False, workers=[w])
                    for k, w in enumerate(pids)])
                print(f"  per-call cost on a worker, one task of {n // 2} calls per worker, "
                      f"{name:<18}: {', '.join(f'{p * 1e6:.0f} us' for p in per_call)}")
                shutil.rmtree(d)
        print()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
