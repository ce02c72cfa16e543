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


ROUNDS = 4  # of each acme_xr setting; esi-acme (a minute at 20,000 calls) runs fewer


def _order(n: int) -> list[tuple[int, str]]:
    """The two settings alternate and swap places every round, so that neither always runs
    right after the other (or after esi-acme, whose workers keep 0.5 GB: issue 5's W5);
    esi-acme's rounds come after them."""
    pairs = [(r, c) for r in range(ROUNDS)
             for c in ((WITH, WITHOUT) if r % 2 == 0 else (WITHOUT, WITH))]
    return pairs + [(r, ESI_ACME) for r in range(2 if n <= 2000 else 1)]


CASES = [
    pytest.param(n, c, id=f"{n}-r{r}-{c.split(',')[-1].strip().split()[0]}")
    for n in SIZES
    for r, c in _order(n)
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


def _alternating(write: Any, path: str, variables: Any, number: int, repeats: int,
                 ) -> dict[bool, list[float]]:
    """Seconds per write with and without checksums; the two alternate and swap places
    every repeat, so that a slow moment of this shared machine hits both alike."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for flag in (True, False):  # warm: the payload template is built once
        write(path, variables, checksums=flag)
    for r in range(repeats):
        for flag in ((True, False) if r % 2 else (False, True)):
            t = timeit.timeit(lambda f=flag: write(path, variables, checksums=f), number=number)
            times[flag].append(t / number)
    return times


def test_write_payload_2kb_checksums(benchmark: Any, tmp_path: Any) -> None:
    from acme_xr.storage.checksums import Sums
    from acme_xr.storage.hdf5 import _file_image, write_payload
    from acme_xr.storage.values import to_variables

    variables = to_variables(np.random.default_rng(0).random(256))  # 2,048 bytes of data
    on_disk = _alternating(write_payload, str(tmp_path / "f_0.h5"), variables, 300, 15)
    report.record("write_payload 2 KB", "checksums", on_disk[True], n_calls=1)
    report.record("write_payload 2 KB", "no checksums", on_disk[False], n_calls=1)
    if os.path.isdir("/dev/shm"):  # no disk: the same fixed cost weighs ~10x more
        with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
            in_ram = _alternating(write_payload, os.path.join(d, "f_0.h5"), variables, 1000,
                                  15)
        report.record("write_payload 2 KB", "checksums, tmpfs", in_ram[True], n_calls=1)
        report.record("write_payload 2 KB", "no checksums, tmpfs", in_ram[False], n_calls=1)
    spans: list[Any] = []
    image = _file_image(variables, spans)
    work = [timeit.timeit(lambda: Sums.of_image(image, tuple(spans)), number=10_000) / 10_000
            for _ in range(7)]
    report.record("write_payload 2 KB", "the checksum work alone (Sums.of_image)", work,
                  n_calls=1)
    benchmark.group = "write_payload 2 KB"  # (pytest-benchmark runs only such tests)
    benchmark.pedantic(write_payload, (str(tmp_path / "f_1.h5"), variables),
                       {"checksums": True}, rounds=1, iterations=1)
