"""W6: the million-call run (issue 12): ``storage="zarr"`` against memory mode.

``f(x) = np.full(4, x)`` (issue 11's tiny call, :func:`workloads.full4`) over 2,000,
20,000, 200,000 and 1,000,000 inputs on one shared 2-worker LocalCluster; the 200,000 and
1,000,000 rows are marked ``big``. Per row: wall time of ``compute()``; for zarr also the
files in the run directory, ``open_results`` time, the time of ``result_0.mean()``, the
client's peak RSS during the run and the ratio to the memory run of the same size. The
group "W6 zarr per call" compares the time per call at each size with 20,000 calls (goal:
it does not grow).

A third contender, "stacked", is memory mode with ``result_shape=(None, 4)``: the values
stacked into one array as the batches arrive (issue 12 point 4), its client peak RSS beside
the per-call list's. Every row also reports the client's seconds in ``Collector.add`` and in
manifest writes, and their share of the wall time (the client-side recording).

Goals (issue 12): zarr at most 1.5x the memory run; thousands of files, not a million;
``open_results`` under 1 s; mean of ``result_0`` under 5 s; client peak RSS under 1 GB.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import report
import workloads

SIZES = (2000, 20_000)
# memory: a list of per-call values (the peer); stacked: memory with result_shape=(None, 4)
MODES = ("memory", "stacked", "zarr")
BIG = (200_000, 1_000_000)
# test ids name the sizes so that none is a substring of another: smoke with -k n2k
_NAMES = {2000: "n2k", 20_000: "n20k", 200_000: "n200k", 1_000_000: "n1M"}
GROUP = "W6 zarr vs memory N={n:,}"


def _peak_rss_reset() -> None:
    """Reset this process's peak-RSS counter (VmHWM), where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _ClientTime:
    """Seconds the client spends in ``Collector.add`` (recording each batch's outcomes in
    the manifest, keeping memory mode's values) and ``ManifestWriter.write`` (the periodic
    and the final manifest writes): the share of a run that is client-side recording,
    reported next to the wall time."""

    def __init__(self) -> None:
        self.add = self.write = 0.0

    def __enter__(self) -> _ClientTime:
        from acme_xr.collect import Collector, ManifestWriter

        self.saved = Collector.add, ManifestWriter.write
        timer = self

        def add(sink: Any, result: Any) -> None:
            t0 = time.perf_counter()
            try:
                timer.saved[0](sink, result)
            finally:
                timer.add += time.perf_counter() - t0

        def write(writer: Any) -> None:
            t0 = time.perf_counter()
            try:
                timer.saved[1](writer)
            finally:
                timer.write += time.perf_counter() - t0

        Collector.add, ManifestWriter.write = add, write  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from acme_xr.collect import Collector, ManifestWriter

        Collector.add, ManifestWriter.write = self.saved  # type: ignore[method-assign]


def _files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def _run(benchmark: Any, round_dirs: Any, n: int, mode: str) -> None:
    import acme_xr

    group = GROUP.format(n=n)
    report.declare(group, f"W6 {n:,} calls of f(x) = np.full(4, x) on 2 workers: "
                   "storage='zarr' against memory (goal: zarr <= 1.5x)", "memory")
    extra: dict[str, Any] = {}
    dirs: list[str] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        d = None if mode != "zarr" else os.path.join(round_dirs.new(), "run")
        dirs.append(d or "")
        _peak_rss_reset()
        return (d,), {}

    def target(d: str | None) -> None:
        kw: dict[str, Any] = ({"storage": "zarr", "output_dir": d} if d is not None
                              else {"write_worker_results": False})
        if mode == "stacked":  # issue 12 point 4: memory mode returning stacked arrays
            kw["result_shape"] = (None, 4)
        with _ClientTime() as client_time:
            t0 = time.perf_counter()
            out = acme_xr.ParallelMap(workloads.full4, list(range(n)), verbose=False,
                                      **kw).compute()
            wall = time.perf_counter() - t0
        extra["client_peak_rss_MB"] = round(_peak_rss_mb())
        extra["client_add_s"] = round(client_time.add, 2)
        extra["client_manifest_write_s"] = round(client_time.write, 2)
        extra["client_recording_share"] = round((client_time.add + client_time.write) / wall, 2)
        if mode == "stacked":
            assert out.shape == (n, 4) and out[-1, 0] == n - 1
        elif d is None:
            assert len(out) == n and out[-1][0] == n - 1

    def teardown(d: str | None) -> None:
        if d is None:
            return
        extra["files"] = _files(d)
        t0 = time.perf_counter()
        ds = acme_xr.open_results(d)
        extra["open_results_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        mean = float(ds.result_0.mean())
        extra["mean_result_0_s"] = round(time.perf_counter() - t0, 3)
        assert abs(mean - (n - 1) / 2) < 1e-6 * n, mean
        round_dirs.remove(os.path.dirname(d))

    row = report.measure(benchmark, group, mode, target, rounds=1, setup=setup,
                         teardown=teardown, n_calls=n)
    row.extra.update(extra)
    memory = report.median(group, "memory")
    if mode == "stacked" and memory:
        row.extra["x_memory"] = round(row.median / memory, 2)
    if mode == "zarr" and memory:
        row.extra["x_memory"] = round(row.median / memory, 2)
        per_call = report.record("W6 zarr per call", f"N={n:,}", [row.median / n])
        per_call.extra["us_per_call"] = round(1e6 * row.median / n, 1)
        report.declare("W6 zarr per call", "W6 zarr: time per call by run size (goal: "
                       "1,000,000 no slower per call than 20,000)", "N=20,000")


@pytest.mark.parametrize("n,mode", [(n, m) for n in SIZES for m in MODES],
                         ids=[f"{m}-{_NAMES[n]}" for n in SIZES for m in MODES])
def test_w6_zarr_vs_memory(benchmark: Any, local_client: Any, round_dirs: Any, n: int,
                           mode: str) -> None:
    _run(benchmark, round_dirs, n, mode)


@pytest.mark.big
@pytest.mark.parametrize("n,mode", [(n, m) for n in BIG for m in MODES],
                         ids=[f"{m}-{_NAMES[n]}" for n in BIG for m in MODES])
def test_w6_zarr_vs_memory_big(benchmark: Any, local_client: Any, round_dirs: Any, n: int,
                               mode: str) -> None:
    _run(benchmark, round_dirs, n, mode)
