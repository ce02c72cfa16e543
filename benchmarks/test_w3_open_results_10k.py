"""Issue 3's benchmark: a 10,000-call run, ``result_0`` (8, 16) float64 and ``result_1``
(3,) int64 per call, written once by acme_xr (module fixture).

* open: ``acme_xr.open_results(dir)`` (goal < 0.5 s) beside ``xr.open_mfdataset`` over the
  same files (combine="nested", concat_dim="call", engine="h5netcdf"; 100-200 s, one round,
  marker ``mfdataset``);
* mean: ``open_results(dir).result_0.mean("call").compute()`` beside a plain h5py loop
  (goal within 1.5x);
* peak memory of open + mean in a fresh process (goal < 500 MB).

No distributed client runs here: dask uses its threaded scheduler in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import readers
import report
import workloads
from contenders import acme_xr_run

N_CALLS = 10_000
OPEN, MEAN, PEAK = "I3 open 10,000 calls", "I3 mean 10,000 calls", "I3 peak memory"
OPEN_RESULTS = "acme_xr.open_results"

report.declare(OPEN, "Issue 3, open a 10,000-call run (result_0 (8, 16) float64, "
               "result_1 (3,) int64)", OPEN_RESULTS)
report.declare(MEAN, "Issue 3, mean of result_0 over 'call', 10,000 calls (open included)",
               "h5py loop")
report.declare(PEAK, "Issue 3, peak memory of open + mean in a fresh process (time column "
               "= whole subprocess incl. imports; seconds = the aggregation alone)", None)


@pytest.fixture(scope="module")
def run_10k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with acme_xr_run(str(tmp_path_factory.mktemp("i3")), workloads.cells, N_CALLS) as run_dir:
        yield run_dir


@pytest.fixture(scope="module")
def expected_mean(run_10k: str) -> np.ndarray:
    return np.mean([workloads.cells(i)[0] for i in range(N_CALLS)], axis=0)


def test_i3_open_results(benchmark: Any, run_10k: str) -> None:
    opened: list[Any] = []

    def target() -> None:
        opened.append(readers.open_results(run_10k))

    report.measure(benchmark, OPEN, OPEN_RESULTS, target, rounds=5)
    ds = opened[-1]
    assert ds["result_0"].shape == (N_CALLS, 8, 16), ds
    assert ds["result_1"].shape == (N_CALLS, 3), ds


@pytest.mark.mfdataset
def test_i3_open_mfdataset(benchmark: Any, run_10k: str) -> None:
    import xarray as xr

    paths = readers.payload_paths(run_10k, "cells", N_CALLS)
    opened: list[Any] = []

    def target() -> None:
        opened.append(xr.open_mfdataset(paths, combine="nested", concat_dim="call",
                                        engine="h5netcdf"))

    report.measure(benchmark, OPEN, "xr.open_mfdataset (h5netcdf)", target, rounds=1)
    ds = opened[-1]
    assert ds["result_0"].shape[0] == N_CALLS, ds
    ds.close()
    if (OPEN, OPEN_RESULTS) not in report.ROWS:
        # run on its own (-m mfdataset): time open_results here too, for the ratio
        try:
            seconds = []
            for _ in range(5):
                t0 = time.perf_counter()
                readers.open_results(run_10k)
                seconds.append(time.perf_counter() - t0)
        except ImportError as exc:
            report.note(f"acme_xr.open_results is not importable yet ({exc})")
        else:
            report.record(OPEN, OPEN_RESULTS, seconds,
                          extra={"note": "timed beside open_mfdataset, not by pytest-benchmark"})


@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split('(')[0].replace(' ', '_')}")
    for r, c in report.interleaved(["h5py loop", "open_results(...).mean().compute()"],
                                   lambda c: 3)])
def test_i3_mean(benchmark: Any, run_10k: str, expected_mean: np.ndarray,
                 contender: str) -> None:
    if contender == "h5py loop":
        paths = readers.payload_paths(run_10k, "cells", N_CALLS)

        def target() -> np.ndarray:
            return readers.h5py_mean(paths)
    else:
        def target() -> np.ndarray:
            return readers.open_results_mean(run_10k)

    result: dict[str, np.ndarray] = {}
    report.measure(benchmark, MEAN, contender, lambda: result.update(mean=target()), rounds=1,
                   n_calls=N_CALLS)
    np.testing.assert_allclose(result["mean"], expected_mean)


@pytest.mark.parametrize("contender", ["h5py loop", "open_results + mean"])
def test_i3_peak_memory(benchmark: Any, run_10k: str, contender: str) -> None:
    mode = "h5py_loop" if contender == "h5py loop" else "open_results"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")
    out: dict[str, Any] = {}

    def target() -> None:
        proc = subprocess.run([sys.executable, script, mode, run_10k, "cells", str(N_CALLS)],
                              capture_output=True, text=True, check=True)
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    row = report.measure(benchmark, PEAK, contender, target, rounds=1)
    row.extra.update({k: round(v, 1) for k, v in out.items()
                      if k in ("seconds", "base_rss_MB", "peak_rss_MB", "rss_rise_MB")})
    if not out.get("hwm_reset"):
        row.extra["note"] = "VmHWM not reset: peak counts from process start"
