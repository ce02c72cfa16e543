"""W1 with and without payload checksums (issue 10): what proving each payload costs.

* W1 HDF5 at 2,000 and 20,000 calls of ``f(x) = 2 * x`` on the shared 2-worker cluster:
  acme_xr with checksums (the default), acme_xr without (``acme_xr.payload.checksums:
  false``), and esi-acme 2026.6.2 beside them, rounds interleaved, in one process and run.
* The write of one call alone: :func:`acme_xr.storage.hdf5.write_payload` of a 2 KB payload
  with and without checksums, in this process (timeit, alternating repeats).

Goal: checksums cost at most 5% of a call's write.
"""

from __future__ import annotations

import os
import tempfile
import timeit
from typing import Any

import dask
import numpy as np
import pytest
import report
import workloads
from contenders import ESI_ACME, count_payloads, run_acme_xr, run_esi_acme

WITH = "acme_xr, checksums"
WITHOUT = "acme_xr, no checksums"
SIZES = (2000, 20000)


def _rounds(n: int, contender: str) -> int:
    if n <= 2000:
        return 3
    return 1 if contender == ESI_ACME else 2


CASES = [
    pytest.param(n, c, id=f"{n}-r{r}-{c.split(',')[-1].strip().split()[0]}")
    for n in SIZES
    for r, c in report.interleaved([WITH, WITHOUT, ESI_ACME], lambda c, n=n: _rounds(n, c))
]

for _n in SIZES:
    report.declare(f"W1 checksums N={_n}", f"W1 HDF5, {_n:,} calls, with and without payload "
                   "checksums (acme_xr.payload.checksums)", WITHOUT)
report.declare("write_payload 2 KB", "One call's write: write_payload of a 2 KB payload "
               "(timeit, per write, in this process)", "no checksums")


@pytest.mark.parametrize("n,contender", CASES)
def test_w1_hdf5_checksums(benchmark: Any, local_client: Any, round_dirs: Any, n: int,
                           contender: str) -> None:
    func = workloads.double
    inputs = list(range(n))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (round_dirs.new(),), {}

    def target(d: str) -> None:
        out = os.path.join(d, "run")
        if contender == ESI_ACME:
            run_esi_acme(func, inputs, out)
            return
        # read on the client when the run starts (WriteSpec), so workers need no config
        with dask.config.set({"acme_xr.payload.checksums": contender == WITH}):
            run_acme_xr(func, inputs, out)

    def teardown(d: str) -> None:
        found = count_payloads(os.path.join(d, "run"))
        round_dirs.remove(d)
        assert found == n, f"{contender} left {found} payload files for {n} calls"

    report.measure(benchmark, f"W1 checksums N={n}", contender, target, rounds=1,
                   setup=setup, teardown=teardown, n_calls=n)


def test_write_payload_2kb_checksums(benchmark: Any) -> None:
    from acme_xr.storage.hdf5 import write_payload
    from acme_xr.storage.values import to_variables

    variables = to_variables(np.random.default_rng(0).random(256))  # 2,048 bytes of data
    number, repeats = 300, 15
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f_0.h5")
        for flag in (True, False):  # warm: the payload template is built once
            write_payload(path, variables, checksums=flag)
        for _ in range(repeats):  # alternate, so that a slow moment hits both alike
            for flag in (True, False):
                t = timeit.timeit(lambda f=flag: write_payload(path, variables, checksums=f),
                                  number=number)
                times[flag].append(t / number)
        benchmark.group = "write_payload 2 KB"  # (pytest-benchmark runs only such tests)
        benchmark.pedantic(write_payload, (path, variables), {"checksums": True}, rounds=1,
                           iterations=1)
    report.record("write_payload 2 KB", "checksums", times[True], n_calls=1)
    report.record("write_payload 2 KB", "no checksums", times[False], n_calls=1)
