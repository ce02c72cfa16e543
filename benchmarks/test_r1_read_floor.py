"""Issue 11's reading benchmark: how close ``open_results`` comes to reading the bytes.

Two runs written once by acme_xr (module fixture), HDF5 payloads:

* ``tiny``: 20,000 calls of ``f(x) = np.full(4, x)``;
* ``cells``: 10,000 calls of ``result_0`` (8, 16) float64 + ``result_1`` (3,) int64.

Side by side on each, rounds interleaved, all with a warm page cache:

1. the pread floor: an independent loop of ``os.open`` + ``os.pread`` + ``os.close`` of each
   payload at offsets looked up with h5py before the timing, values read from the payloads
   (not from the manifest) and averaged;
2. the h5py loop ACME users write (open, read, close each file);
3. ``open_results(run)`` alone (opening: goal < 0.3 s);
4. ``open_results(run).result_0.mean()`` (and ``result_1`` for ``cells``), open included
   (goal <= 2x the floor, >= 10x faster than the h5py loop);
5. peak memory of (4) in a fresh process (goal < 300 MB);
6. the reference read through kerchunk: ``acme_xr.write_references(run, path,
   format="json")`` writes the references once, untimed; the timed part is
   ``xr.open_dataset(path, engine="kerchunk")`` + the same means.

``ACME_XR_BENCH_R1_SCALE`` scales both runs (default 1; e.g. 0.02 for a smoke run of 400
and 200 calls). No distributed client runs here: dask uses its threaded scheduler in this
process, as in an analysis session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import h5py
import numpy as np
import pytest
import readers
import report
import workloads
from contenders import acme_xr_run

SCALE = float(os.environ.get("ACME_XR_BENCH_R1_SCALE", "1"))
RUNS: dict[str, tuple[Callable[[int], Any], int, tuple[str, ...]]] = {
    "tiny": (workloads.full4, max(2, int(20_000 * SCALE)), ("result_0",)),
    "cells": (workloads.cells, max(2, int(10_000 * SCALE)), ("result_0", "result_1")),
}
FLOOR = "pread floor (open+pread+close)"
H5PY = "h5py loop"
ACME_XR = "open_results(...).mean()"
KERCHUNK = "kerchunk references (xr engine=kerchunk)"
OPEN_RESULTS = "acme_xr.open_results"


def _title(key: str) -> str:
    _func, n, _names = RUNS[key]
    what = "np.full(4, x)" if key == "tiny" else "(8, 16) float64 + (3,) int64"
    return f"{n:,} calls of {what}"


def mean_group(key: str) -> str:
    return f"R1 read {key} N={RUNS[key][1]}"


def open_group(key: str) -> str:
    return f"R1 open {key} N={RUNS[key][1]}"


PEAK = "R1 peak memory"

for _key in RUNS:
    report.declare(mean_group(_key), f"Issue 11, read {_title(_key)}: mean of "
                   f"{' and '.join(RUNS[_key][2])} (open included)", FLOOR,
                   note="ratio = median / the pread floor's; reads from a warm page cache; "
                        f"the row {KERCHUNK!r} reads write_references' JSON with plain xarray "
                        "(chunks=None; fsspec fetches each call's chunk on its own)")
    report.declare(open_group(_key), f"Issue 11, open a run of {_title(_key)}", OPEN_RESULTS)
report.declare(PEAK, "Issue 11, peak memory of open_results + means in a fresh process (time "
               "column = whole subprocess incl. imports)", None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = str(tmp_path_factory.mktemp("r1"))
    with acme_xr_run(os.path.join(base, "tiny"), workloads.full4, RUNS["tiny"][1]) as tiny, \
            acme_xr_run(os.path.join(base, "cells"), workloads.cells, RUNS["cells"][1]) as cells:
        # imports and first uses (xarray's backends, dask) out of the timed rounds, as the
        # floor's and the h5py loop's are
        open_results_means(cells, RUNS["cells"][2])
        yield {"tiny": tiny, "cells": cells}


def _stem(key: str) -> str:
    return RUNS[key][0].__name__


@pytest.fixture(scope="module")
def offsets(runs: dict[str, str]) -> dict[str, dict[str, list[tuple[str, int, int, Any]]]]:
    """Per run and variable: (path, offset, length, dtype) of each payload's data bytes,
    looked up with h5py before any timing (the floor's "offsets known in advance")."""
    out: dict[str, dict[str, list[tuple[str, int, int, Any]]]] = {}
    for key, run_dir in runs.items():
        _func, n, names = RUNS[key]
        out[key] = {name: [] for name in names}
        for path in readers.payload_paths(run_dir, _stem(key), n):
            with h5py.File(path, "r") as fh:
                for name in names:
                    did = fh[name].id
                    out[key][name].append((path, did.get_offset(), did.get_storage_size(),
                                           fh[name].dtype))
    return out


@pytest.fixture(scope="module")
def expected(runs: dict[str, str]) -> dict[str, dict[str, float]]:
    out = {}
    for key in runs:
        func, n, names = RUNS[key]
        values = [func(i) for i in range(n)]
        out[key] = {name: float(np.mean([np.asarray(v if isinstance(v, np.ndarray) else v[k])
                                         for v in values]))
                    for k, name in enumerate(names)}
    return out


def pread_floor(entries: list[tuple[str, int, int, Any]]) -> float:
    """Mean of one variable over every payload: open + pread + close at known offsets."""
    total = None
    for path, offset, length, dtype in entries:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        values = np.frombuffer(data, dtype)
        total = values.astype(np.float64) if total is None else total + values
    assert total is not None
    return float(total.mean() / len(entries))


def open_results_means(run_dir: str, names: tuple[str, ...]) -> dict[str, float]:
    ds = readers.open_results(run_dir)
    return {name: float(ds[name].mean().compute()) for name in names}


def kerchunk_means(refs: str, names: tuple[str, ...]) -> dict[str, float]:
    import xarray as xr

    ds = xr.open_dataset(refs, engine="kerchunk")  # chunks=None: what plain xarray does
    return {name: float(ds[name].mean().compute()) for name in names}


_REFS: dict[str, str] = {}


def _references(run_dir: str) -> str:
    """The run's kerchunk JSON references, written once (not timed)."""
    if run_dir not in _REFS:
        from acme_xr import write_references

        path = os.path.join(os.path.dirname(run_dir), "refs.json")
        t0 = time.perf_counter()
        write_references(run_dir, path, format="json")
        report.note(f"write_references of {run_dir} took {time.perf_counter() - t0:.2f} s "
                    "(once, not timed)")
        _REFS[run_dir] = path
    return _REFS[run_dir]


ROUNDS = {FLOOR: 5, H5PY: 1, ACME_XR: 5, KERCHUNK: 1}


@pytest.mark.parametrize("key", list(RUNS))
@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split(' ')[0]}")
    for r, c in report.interleaved(list(ROUNDS), lambda c: ROUNDS[c])])
def test_r1_read(benchmark: Any, runs: dict[str, str], offsets: Any, expected: Any,
                 key: str, contender: str) -> None:
    _func, n, names = RUNS[key]
    run_dir = runs[key]
    target: Callable[[], dict[str, float]]
    if contender == FLOOR:
        def target() -> dict[str, float]:
            return {name: pread_floor(offsets[key][name]) for name in names}
    elif contender == H5PY:
        paths = readers.payload_paths(run_dir, _stem(key), n)

        def target() -> dict[str, float]:
            return {name: float(readers.h5py_mean(paths, name).mean()) for name in names}
    elif contender == ACME_XR:
        def target() -> dict[str, float]:
            return open_results_means(run_dir, names)
    else:
        refs = _references(run_dir)

        def target() -> dict[str, float]:
            return kerchunk_means(refs, names)

    got: dict[str, dict[str, float]] = {}
    before = _range_reads()
    report.measure(benchmark, mean_group(key), contender, lambda: got.update(m=target()),
                   rounds=1, n_calls=n)
    for name in names:
        np.testing.assert_allclose(got["m"][name], expected[key][name], rtol=1e-9)
    if contender == ACME_XR:  # read by byte range, not by the h5py fallback
        assert _range_reads() - before == n * len(names)


def _range_reads() -> int:
    from acme_xr.storage.ranges import read_counts

    return read_counts().get("range", 0)


@pytest.mark.parametrize("key", list(RUNS))
def test_r1_open(benchmark: Any, runs: dict[str, str], key: str) -> None:
    opened: list[Any] = []
    report.measure(benchmark, open_group(key), OPEN_RESULTS,
                   lambda: opened.append(readers.open_results(runs[key])), rounds=5)
    assert opened[-1][RUNS[key][2][0]].shape[0] == RUNS[key][1]


@pytest.mark.parametrize("key", list(RUNS))
def test_r1_peak_memory(benchmark: Any, runs: dict[str, str], key: str) -> None:
    _func, n, names = RUNS[key]
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")
    out: dict[str, Any] = {}

    def target() -> None:
        proc = subprocess.run([sys.executable, script, "open_results", runs[key], _stem(key),
                               str(n), ",".join(names)],
                              capture_output=True, text=True, check=True)
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    row = report.measure(benchmark, PEAK, f"open_results + means, {key} N={n}", target,
                         rounds=1)
    row.extra.update({k: round(v, 1) for k, v in out.items()
                      if k in ("seconds", "base_rss_MB", "peak_rss_MB", "rss_rise_MB")})
    if not out.get("hwm_reset"):
        row.extra["note"] = "VmHWM not reset: peak counts from process start"
