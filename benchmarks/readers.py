"""Ways to aggregate a run's results: acme_xr.open_results and the plain h5py loop that
ACME users write today. Used in-process (W3, issue 3) and by ``_peak_memory.py``.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

__all__ = ["payload_paths", "h5py_mean", "open_results", "open_results_mean"]


def payload_paths(run_dir: str, stem: str, n: int) -> list[str]:
    """The payload files of calls 0..n-1, in call order (the layout's naming rule)."""
    return [os.path.join(run_dir, f"{stem}_{i}.h5") for i in range(n)]


def h5py_mean(paths: list[str], name: str = "result_0") -> np.ndarray:
    """Mean of dataset ``name`` over all files: open, read, add, close, one at a time."""
    total: np.ndarray | None = None
    for p in paths:
        with h5py.File(p, "r") as fh:
            a = fh[name][()]
        if total is None:
            total = np.array(a, dtype=np.float64)
        else:
            total += a
    assert total is not None
    return total / len(paths)


def open_results(run_dir: str) -> Any:
    """``acme_xr.open_results(run_dir)``; ImportError while it does not exist yet."""
    from acme_xr import open_results as _open

    return _open(run_dir)


def open_results_mean(run_dir: str, name: str = "result_0") -> np.ndarray:
    """Open the run lazily and average ``name`` over ``call``."""
    return np.asarray(open_results(run_dir)[name].mean("call").compute())
