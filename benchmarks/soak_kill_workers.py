"""Soak test: thousands of calls while a random worker is SIGKILLed every few seconds.

Runs the same ParallelMap twice on one local cluster -- once undisturbed, once while a
thread kills a random worker process every ``--kill-every`` seconds (the nanny starts a new
one) -- and reports calls completed, calls lost (must be 0) and the slowdown against the
clean run. Every payload of the soak run is read back and compared with the clean run.

Not part of the test suite (it takes a minute); run it as a script::

    python benchmarks/soak_kill_workers.py                 # 2,000 calls, a kill every ~3 s
    python benchmarks/soak_kill_workers.py --calls 10000 --kill-every 1 --workers 4
    python benchmarks/soak_kill_workers.py --call-timeout 30   # calls in killable children

Exit status 0 when no call was lost and every result equals the clean run's, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np


def work(i: int, size: int, seconds: float) -> tuple[np.ndarray, float]:
    """A small analysis step: some arithmetic, some waiting (I/O, a library call)."""
    x = np.sin(np.arange(size) * (i + 1) / size)
    time.sleep(seconds)
    return np.cumsum(x), float(x.sum())


class Killer(threading.Thread):
    """SIGKILLs a random worker process of ``client`` every ``every`` seconds (+-50 %)."""

    def __init__(self, client: Any, every: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.every = every
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills: list[tuple[float, int]] = []

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
            try:
                pids = list(self.client.run(os.getpid, on_error="ignore").values())
            except Exception:  # noqa: BLE001 - a worker that just died: try again later
                continue
            pids = [p for p in pids if isinstance(p, int)]
            if not pids:
                continue
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append((round(time.monotonic() - t0, 2), pid))


def timed_run(out: str, calls: int, size: int, seconds: float, call_timeout: float | None,
              resume: bool = False) -> tuple[float, str | None]:
    from acme_xr import ParallelMap
    from acme_xr.errors import AcmeXrError

    t0 = time.perf_counter()
    error = None
    try:
        ParallelMap(work, list(range(calls)), size, seconds, output_dir=out, resume=resume,
                    call_timeout=call_timeout, verbose=False).compute()
    except AcmeXrError as exc:  # ComputeError: calls failed; ClusterError: no worker left
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return time.perf_counter() - t0, error


def check(out: str, clean: str, calls: int) -> dict[str, Any]:
    """Calls whose payload is on disk, whole and equal to the clean run's."""
    from acme_xr.manifest import DONE, Manifest
    from acme_xr.storage.atomic import TMP_SUFFIX
    from acme_xr.storage.hdf5 import read_payload

    manifest = Manifest.read(out)
    completed, wrong = 0, []
    for i in range(calls):
        path = os.path.join(out, f"work_{i}.h5")
        if manifest.status[i] != DONE or not os.path.exists(path):
            continue
        got, want = read_payload(path), read_payload(os.path.join(clean, f"work_{i}.h5"))
        if list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in got):
            completed += 1
        else:
            wrong.append(i)
    leftovers = [n for n in os.listdir(out) if n.endswith(TMP_SUFFIX) or n.startswith(".")]
    return {"state": manifest.state, "completed": completed, "wrong": wrong,
            "max_attempts": int(manifest.attempts.max()), "leftovers": leftovers}


def call_processes() -> list[int]:
    """acme_xr call processes (call_timeout) still alive anywhere: orphans of killed workers."""
    import psutil

    deadline = time.monotonic() + 5  # the parent watch of a child checks once a second
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if "acme_xr.callhost" in " ".join(proc.info["cmdline"] or []):
                found.append(proc.pid)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    p.add_argument("--call-seconds", type=float, default=0.01, help="sleep per call")
    p.add_argument("--size", type=int, default=2000, help="values per call result")
    p.add_argument("--call-timeout", type=float, default=None,
                   help="run the calls in killable child processes (acme_xr's call_timeout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    from distributed import Client, LocalCluster

    base = tempfile.mkdtemp(prefix="acme_xr_soak_")
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        clean_dir, soak_dir = os.path.join(base, "clean"), os.path.join(base, "soak")
        run = (args.calls, args.size, args.call_seconds, args.call_timeout)
        t_clean, clean_error = timed_run(clean_dir, *run)
        if clean_error:
            print(f"the clean run failed: {clean_error}", file=sys.stderr)
            return 1
        killer = Killer(client, args.kill_every, args.seed)
        killer.start()
        t_soak, soak_error = timed_run(soak_dir, *run)
        killer.stop.set()
        killer.join()
        resumed = None
        if soak_error and soak_error.startswith("ClusterError"):
            # kills faster than dask's LocalCluster restarts workers: it gives up on them
            # (distributed.deploy.lost-worker-timeout). Nothing is lost: bring the workers
            # back and resume.
            resumed = soak_error
            cluster.scale(args.workers)
            client.wait_for_workers(args.workers, timeout=60)
            t_resume, soak_error = timed_run(soak_dir, *run, resume=True)
            t_soak += t_resume
        result = check(soak_dir, clean_dir, args.calls)
    finally:
        client.close()
        cluster.close()
    orphans = call_processes()
    lost = args.calls - result["completed"]
    figures = {
        "calls": args.calls, "workers": args.workers, "kill_every_s": args.kill_every,
        "workers_killed": len(killer.kills), "calls_completed": result["completed"],
        "calls_lost": lost, "wrong_results": len(result["wrong"]),
        "max_attempts": result["max_attempts"], "manifest_state": result["state"],
        "leftover_files": result["leftovers"], "orphan_processes": orphans,
        "clean_s": round(t_clean, 2),
        "soak_s": round(t_soak, 2), "slowdown": round(t_soak / t_clean, 2),
        "error": soak_error, "stopped_then_resumed": resumed,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)
    shutil.rmtree(base, ignore_errors=True)
    ok = (lost == 0 and not result["wrong"] and not result["leftovers"] and not orphans
          and not soak_error)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
