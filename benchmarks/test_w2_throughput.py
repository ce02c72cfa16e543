"""W2: write throughput, 64 calls each returning 8 MB of float64 (512 MB in all).

acme_xr and esi-acme (HDF5, on a shared 2-worker LocalCluster) beside one plain process
computing and writing the same arrays with h5py, and the disk's own sequential write speed
(512 MB in 16 MB blocks, with and without fsync). For the diagnosis also 2 plain processes
and raw dask ``client.map`` (one task per call) writing the same files. Nothing fsyncs
except that one row: the others measure what reaches the page cache, as a user sees it.
Every round starts after an ``os.sync()`` (outside the timing).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import report
import workloads
from contenders import ACME_XR, ESI_ACME, count_payloads, run_acme_xr, run_esi_acme

N_CALLS = 64
NBYTES = N_CALLS * workloads.BLOCK_ELEMENTS * 8
GROUP = "W2 write 512 MB"
DISK_BLOCK = 16 * 1024 * 1024

report.declare(GROUP, "W2 write throughput: 64 calls x 8 MB float64 = 512 MB "
               "(ratio = median time / median time of acme_xr; derived = MB/s)", ACME_XR)


def _disk_write(directory: str, fsync: bool) -> None:
    buf = np.random.default_rng(0).integers(0, 255, DISK_BLOCK, dtype=np.uint8).tobytes()
    fd = os.open(os.path.join(directory, "seq.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        written = 0
        while written < NBYTES:
            written += os.write(fd, buf[: min(DISK_BLOCK, NBYTES - written)])
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


H5PY_1 = "h5py, 1 process"
H5PY_2 = "h5py, 2 plain processes"
DASK_MAP_H5 = "dask client.map + h5py"


CONTENDERS = [ACME_XR, ESI_ACME, H5PY_1, H5PY_2, DASK_MAP_H5, "disk, 16 MB blocks + fsync",
              "disk, 16 MB blocks, no fsync"]
ROUNDS = 5


@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split(',')[0].split()[0]}-{k}")
    for k, (r, c) in enumerate(report.interleaved(CONTENDERS, lambda c: ROUNDS))])
def test_w2_write(benchmark: Any, request: pytest.FixtureRequest, local_client: Any,
                  round_dirs: Any, contender: str) -> None:
    inputs = list(range(N_CALLS))
    if contender == ACME_XR:
        def target(d: str) -> None:
            run_acme_xr(workloads.block, inputs, os.path.join(d, "run"))
    elif contender == ESI_ACME:
        def target(d: str) -> None:
            run_esi_acme(workloads.block, inputs, os.path.join(d, "run"))
    elif contender == H5PY_1:
        def target(d: str) -> None:
            workloads.write_blocks(d, 0, N_CALLS)
    elif contender == H5PY_2:
        pool = request.getfixturevalue("plain_pool")

        def target(d: str) -> None:
            pool.starmap(workloads.write_blocks, [(d, 0, N_CALLS, 2), (d, 1, N_CALLS, 2)])
    elif contender == DASK_MAP_H5:
        def target(d: str) -> None:
            local_client.gather(local_client.map(workloads.write_block, inputs, directory=d,
                                                 pure=False))
    else:
        fsync = "+ fsync" in contender

        def target(d: str) -> None:
            _disk_write(d, fsync)

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (round_dirs.new(),), {}

    def teardown(d: str) -> None:
        run = os.path.join(d, "run")
        found = count_payloads(run, "block") if os.path.isdir(run) else None
        round_dirs.remove(d)
        assert found in (None, N_CALLS), f"{contender} left {found} payloads"

    report.measure(benchmark, GROUP, contender, target, rounds=1, setup=setup,
                   teardown=teardown, nbytes=NBYTES)
