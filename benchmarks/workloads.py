"""The functions every contender runs, in one importable module.

Workers (dask, joblib/loky, multiprocessing) import these by name, so every contender
ships the same function the same way and pays the same pickling cost.
"""

from __future__ import annotations

import gc
import os

import h5py
import numpy as np

__all__ = [
    "BLOCK_ELEMENTS",
    "double",
    "double_to_h5",
    "write_range",
    "write_rename_range",
    "process_cpu",
    "block",
    "write_block",
    "write_blocks",
    "cells",
    "full4",
    "worker_rss",
    "collect_garbage",
    "warm_imports",
]

# W2: 1,000,000 float64 = 8 MB per call, 64 calls = 512 MB.
BLOCK_ELEMENTS = 1_000_000


def double(x: int) -> int:
    """W1's call: ``f(x) = 2 * x``."""
    return 2 * x


def double_to_h5(x: int, directory: str) -> str:
    """W1's call for the peers without a storage layer: compute, then write the payload
    acme_xr writes (one scalar dataset ``result_0``) to ``<directory>/double_<x>.h5``."""
    path = os.path.join(directory, f"double_{x}.h5")
    with h5py.File(path, "w") as fh:
        fh["result_0"] = double(x)
    return path


def write_range(directory: str, start: int, stop: int, step: int) -> int:
    """The HDF5 floor: one plain process writing the payloads ``start:stop:step``."""
    n = 0
    for i in range(start, stop, step):
        with h5py.File(os.path.join(directory, f"double_{i}.h5"), "w") as fh:
            fh["result_0"] = double(i)
        n += 1
    return n


def write_rename_range(directory: str, start: int, stop: int, step: int,
                       nbytes: int = 2048) -> tuple[int, float]:
    """The write-and-rename floor (issue 12): one plain process writing ``nbytes`` to a
    temporary name and renaming it into place, for the files ``start:stop:step``; returns
    (files written, CPU seconds this process spent on them). The bare system calls
    (open, write, close, rename), as acme_xr's own small-file writes."""
    data = bytes(nbytes)
    cpu0 = process_cpu()
    n = 0
    for i in range(start, stop, step):
        final = os.path.join(directory, f"floor_{i}.h5")
        tmp = os.path.join(directory, f".floor_{i}.h5.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, final)
        n += 1
    return n, process_cpu() - cpu0


def process_cpu() -> float:
    """CPU seconds (user + system) of the calling process so far (run on a worker too)."""
    t = os.times()
    return t.user + t.system


def block(i: int) -> np.ndarray:
    """W2's call: an 8 MB float64 array."""
    return np.full(BLOCK_ELEMENTS, float(i))


def write_block(i: int, directory: str) -> str:
    """W2's call for the peers without a storage layer: compute block ``i``, write it."""
    path = os.path.join(directory, f"block_{i}.h5")
    with h5py.File(path, "w") as fh:
        fh.create_dataset("result_0", data=block(i))
    return path


def write_blocks(directory: str, start: int, stop: int, step: int = 1) -> int:
    """W2's plain-process peers: compute and write blocks ``start:stop:step`` with h5py."""
    n = 0
    for i in range(start, stop, step):
        write_block(i, directory)
        n += 1
    return n


def cells(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Issue 3's call: ``result_0`` (8, 16) float64 and ``result_1`` (3,) int64."""
    rng = np.random.default_rng(i)
    return rng.standard_normal((8, 16)), np.arange(3, dtype=np.int64) + i


def full4(x: int) -> np.ndarray:
    """Issue 11's tiny call: ``f(x) = np.full(4, x)``."""
    return np.full(4, x)


def worker_rss() -> int:
    """Resident set size of the calling process in bytes (run on a worker)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def collect_garbage() -> int:
    """Run a full garbage collection (on a worker) and return what it found."""
    return gc.collect()


def warm_imports() -> None:
    """Import what the contenders need, so that no contender pays for the first import."""
    import acme_xr.engine  # noqa: F401
    import acme_xr.worker  # noqa: F401
