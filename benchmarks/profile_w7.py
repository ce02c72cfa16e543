"""Where a worker's CPU goes in W7 (HDF5 payloads of tiny calls): a diagnosis, not a benchmark.

Usage: python benchmarks/profile_w7.py [N_CALLS]   (needs py-spy: pip install py-spy)

Starts a warm 2-worker LocalCluster (as the benchmarks do), samples one worker with
py-spy while ``ParallelMap(full4, range(N))`` writes HDF5 payloads, and prints the share
of that worker's busy samples per part of the per-call path (creating the temporary file,
renaming it, the resume check, building records, dask's own threads, ...) and, scaled by
the worker CPU seconds measured around the run, the microseconds per call of each part.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402

# (part, frames of the sampled stack that mark it), first match wins; a frame is
# "function (file:line)" as py-spy's raw format writes it. The line numbers are those of
# the system calls in acme_xr/storage/atomic.py (write_bytes) and, for the code before
# issue 12, of hdf5.write_payload's open() and atomic_path's os.replace: update them when
# those lines move
PARTS = [
    ("temporary name", ("_temporary_name",)),
    ("create the temporary file (open)", ("atomic.py:84)", "hdf5.py:176)")),
    ("write + close", ("atomic.py:89)", "atomic.py:91)", "hdf5.py:177)")),
    ("rename into place", ("atomic.py:92)", "atomic.py:47)")),
    ("resume check", ("stored",)),
    ("to_variables", ("to_variables",)),
    ("describe (outcome record)", ("describe", "var_meta")),
    ("payload image (template)", ("_from_template", "write_plain")),
    ("checksums", ("of_image",)),
    ("the user function", ("full4",)),
]


def part_of(frames: list[str]) -> str | None:
    """The part of the per-call path a sampled stack is in (None: the event loop idles)."""
    if "EpollSelector.select" in frames[-1]:
        return None
    if not any("_run_chunk" in f for f in frames):
        return "dask's worker threads (comm, heartbeats, results)"
    stack = ";".join(frames)
    for part, marks in PARTS:
        if any(m in stack for m in marks):
            return part
    return "run loop, arguments, records, other"


def main() -> None:
    from distributed import Client, LocalCluster

    import acme_xr

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is needed: pip install py-spy")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    client.run(workloads.warm_imports)
    base = tempfile.mkdtemp(prefix="acme_xr-profile-w7-")
    raw = os.path.join(base, "samples.txt")
    try:
        acme_xr.ParallelMap(workloads.full4, list(range(100)), verbose=False,
                            output_dir=os.path.join(base, "warm")).compute()
        pid = next(iter(client.run(os.getpid).values()))
        sampler = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "400", "-f", "raw",
                                    "-o", raw, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)  # py-spy attaches
        cpu0 = client.run(workloads.process_cpu)
        t0 = time.perf_counter()
        acme_xr.ParallelMap(workloads.full4, list(range(n)), verbose=False,
                            output_dir=os.path.join(base, "run")).compute()
        wall = time.perf_counter() - t0
        cpu1 = client.run(workloads.process_cpu)
        sampler.send_signal(signal.SIGINT)
        sampler.wait()
        per_call = 1e6 * sum(cpu1[w] - cpu0[w] for w in cpu0) / n
        print(f"{n} calls: wall {1e6 * wall / n:.0f} us/call, worker CPU {per_call:.0f} us/call")
        parts: collections.Counter[str] = collections.Counter()
        with open(raw, encoding="utf-8") as fh:
            for line in fh:
                stack, _, count = line.rstrip().rpartition(" ")
                part = part_of(stack.split(";"))
                if part is not None:
                    parts[part] += int(count)
        busy = sum(parts.values()) or 1
        for part, count in parts.most_common():
            print(f"  {part:<52} {count / busy:6.1%}  ~{per_call * count / busy:5.0f} us/call")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
