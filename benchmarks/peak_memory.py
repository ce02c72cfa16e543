"""Peak memory of one aggregation in a fresh process; prints one JSON line.

Usage: python peak_memory.py {open_results|h5py_loop} RUN_DIR STEM N_CALLS [NAMES]

NAMES (comma-separated, open_results only): the variables whose ``.mean()`` is computed
(issue 11); without it, ``result_0.mean("call")`` (issue 3).

After the imports the kernel's peak-RSS counter (VmHWM) is reset through
/proc/self/clear_refs, so ``peak_rss_MB - base_rss_MB`` is what the aggregation itself
added, including HDF5's and dask's C allocations (which tracemalloc would not see; it would
also slow the h5py loop threefold).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(field)


def main() -> None:
    mode, run_dir, stem, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dask.array  # noqa: F401
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import readers
    import xarray  # noqa: F401

    import acme_xr  # noqa: F401

    gc.collect()
    base = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False  # VmHWM then counts from process start: an upper bound
    t0 = time.perf_counter()
    if mode == "open_results" and len(sys.argv) > 5:
        ds = readers.open_results(run_dir)
        mean = numpy.array([float(ds[name].mean().compute()) for name in sys.argv[5].split(",")])
    elif mode == "open_results":
        mean = readers.open_results_mean(run_dir)
    else:
        mean = readers.h5py_mean(readers.payload_paths(run_dir, stem, n))
    elapsed = time.perf_counter() - t0
    peak = _status("VmHWM")
    print(json.dumps({
        "mode": mode, "seconds": elapsed, "base_rss_MB": base, "peak_rss_MB": peak,
        "rss_rise_MB": peak - base,
        "hwm_reset": reset, "mean_sum": float(mean.sum()),
    }))


if __name__ == "__main__":
    main()
