"""W3: mean over the stacking axis of W2's results (64 calls x 8 MB, written by acme_xr),
through ``acme_xr.open_results(run_dir).result_0.mean("call")`` beside a plain h5py loop.

No distributed client runs here, so dask computes with its default threaded scheduler in
this process, as in a fresh analysis session. The files are in the page cache (just written).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import readers
import report
import workloads
from contenders import acme_xr_run

N_CALLS = 64
GROUP = "W3 mean of W2 results"
EXPECTED = np.full(workloads.BLOCK_ELEMENTS, (N_CALLS - 1) / 2)

report.declare(GROUP, "W3 aggregation: mean over 'call' of 64 x 8 MB results written by "
               "acme_xr (no distributed client; threaded dask)", "h5py loop")


@pytest.fixture(scope="module")
def w2_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # no client is running here: acme_xr starts (and closes) its own local cluster
    with acme_xr_run(str(tmp_path_factory.mktemp("w3")), workloads.block, N_CALLS) as run_dir:
        yield run_dir


@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split('(')[0].replace(' ', '_')}")
    for r, c in report.interleaved(["h5py loop", "open_results(...).mean().compute()"],
                                   lambda c: 5)])
def test_w3_mean(benchmark: Any, w2_run: str, contender: str) -> None:
    if contender == "h5py loop":
        paths = readers.payload_paths(w2_run, "block", N_CALLS)

        def target() -> np.ndarray:
            return readers.h5py_mean(paths)
    else:
        def target() -> np.ndarray:
            return readers.open_results_mean(w2_run)

    result: dict[str, np.ndarray] = {}
    report.measure(benchmark, GROUP, contender, lambda: result.update(mean=target()),
                   rounds=1, nbytes=N_CALLS * workloads.BLOCK_ELEMENTS * 8)
    np.testing.assert_allclose(result["mean"], EXPECTED)
    assert os.path.isdir(w2_run)
