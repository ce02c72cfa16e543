"""W1: per-call overhead of ``f(x) = 2 * x`` on 2 local workers, in memory and writing HDF5.

Contenders on one shared 2-worker LocalCluster (processes, 1 thread each): acme_xr,
esi-acme 2026.6.2, raw dask ``client.map`` (one task per call; the HDF5 task writes its own
file), joblib ``Parallel(n_jobs=2)``; for HDF5 also the floor: 2 warm plain processes
writing the same files with h5py, no dask. Issue 2's first benchmark is the N=2000 HDF5
group. The 200,000-call scaling rows of acme_xr are marked ``big``.

Each test is one round of one contender; the rounds of a group alternate between the
contenders (see ``report.interleaved``), and the summary gathers them per contender.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import report
import workloads
from contenders import (
    ACME_XR,
    DASK_MAP,
    ESI_ACME,
    FLOOR,
    JOBLIB,
    count_payloads,
    run_acme_xr,
    run_dask_map,
    run_esi_acme,
    run_floor,
    run_joblib,
)

SIZES = (200, 2000, 20000)
MEMORY_CONTENDERS = (ACME_XR, ESI_ACME, DASK_MAP, JOBLIB)
HDF5_CONTENDERS = (FLOOR, ACME_XR, ESI_ACME, DASK_MAP, JOBLIB)
# esi-acme and raw client.map need about a minute per round at 20,000 calls
SLOW = (ESI_ACME, DASK_MAP)


def _rounds(n: int, contender: str) -> int:
    if n <= 200:
        return 5
    if n <= 2000:
        return 3
    return 1 if contender in SLOW else 2


CASES = [
    pytest.param(n, mode, c, id=f"{mode}-{n}-r{r}-{c.split()[0]}")
    for n in SIZES
    for mode in ("memory", "hdf5")
    for r, c in report.interleaved(
        list(MEMORY_CONTENDERS if mode == "memory" else HDF5_CONTENDERS),
        lambda c, n=n: _rounds(n, c))
]


@pytest.fixture(scope="module")
def joblib_ready() -> None:
    """Start joblib's reusable worker processes before the first measured round."""
    run_joblib(workloads.double, list(range(20)), None)


def _case(request: pytest.FixtureRequest, client: Any, contender: str, n: int,
          ) -> tuple[Callable[[str | None], Any], Callable[[str], str]]:
    """(run(out_dir_or_None), where the payloads of a round in out_dir end up)."""
    func = workloads.double
    inputs = list(range(n))
    run_dir = lambda d: os.path.join(d, "run")  # noqa: E731 -- acme_xr/esi-acme create it
    if contender == ACME_XR:
        return (lambda d: run_acme_xr(func, inputs, None if d is None else run_dir(d))), run_dir
    if contender == ESI_ACME:
        return (lambda d: run_esi_acme(func, inputs, None if d is None else run_dir(d))), run_dir
    if contender == DASK_MAP:
        return (lambda d: run_dask_map(client, func, inputs, d)), (lambda d: d)
    if contender == JOBLIB:
        request.getfixturevalue("joblib_ready")
        return (lambda d: run_joblib(func, inputs, d)), (lambda d: d)
    pool = request.getfixturevalue("plain_pool")
    return (lambda d: run_floor(pool, n, d)), (lambda d: d)


def _run_case(benchmark: Any, request: pytest.FixtureRequest, client: Any, round_dirs: Any,
              group: str, contender: str, label: str, n: int, mode: str, rounds: int) -> None:
    run, payload_dir = _case(request, client, contender, n)
    last: dict[str, Any] = {}

    if mode == "memory":
        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (None,), {}

        def teardown(_: Any) -> None:
            values = list(last.pop("result"))
            assert len(values) == n and values[-1] == 2 * (n - 1), values[-3:]
    else:
        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (round_dirs.new(),), {}

        def teardown(d: str) -> None:
            last.pop("result", None)
            found = count_payloads(payload_dir(d))
            round_dirs.remove(d)
            assert found == n, f"{label} left {found} payload files for {n} calls"

    def target(d: str | None) -> None:
        last["result"] = run(d)

    report.measure(benchmark, group, label, target, rounds=rounds, setup=setup,
                   teardown=teardown, n_calls=n)


for _n in SIZES:
    for _mode in ("memory", "hdf5"):
        report.declare(f"W1 {_mode} N={_n}", f"W1 per-call overhead, {_mode}, {_n:,} calls of "
                       "f(x) = 2 * x on 2 workers", ACME_XR)
for _mode in ("memory", "hdf5"):
    report.declare(f"W1 scaling {_mode}", f"W1 scaling of acme_xr alone, {_mode} (goal: "
                   "per-call time at 200,000 within 1.5x of 2,000)", "N=2000")


@pytest.mark.parametrize("n,mode,contender", CASES)
def test_w1_per_call(benchmark: Any, request: pytest.FixtureRequest, local_client: Any,
                     round_dirs: Any, n: int, mode: str, contender: str) -> None:
    group = f"W1 {mode} N={n}"
    _run_case(benchmark, request, local_client, round_dirs, group, contender, contender, n,
              mode, 1)


@pytest.mark.big
@pytest.mark.parametrize("mode,n", [("memory", 2000), ("memory", 200_000),
                                    ("hdf5", 2000), ("hdf5", 200_000)],
                         ids=["memory-2000", "memory-200000", "hdf5-2000", "hdf5-200000"])
def test_w1_scaling(benchmark: Any, request: pytest.FixtureRequest, local_client: Any,
                    round_dirs: Any, mode: str, n: int) -> None:
    group = f"W1 scaling {mode}"
    _run_case(benchmark, request, local_client, round_dirs, group, ACME_XR, f"N={n}", n, mode,
              1 if n > 20000 else 3)
