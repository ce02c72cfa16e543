"""What a call returned is what the run keeps, whatever the function does with its own
objects afterwards: inputs found by a review of the zarr and HDF5 fast paths of issue 12
(threads sharing a worker's store, a refilled output array, a "/" in a function's name)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from acme_xr.storage.base import describe
from acme_xr.storage.values import to_variables


def test_zarr_fast_path_never_pairs_a_plain_call_with_another_threads_record(
        tmp_path: Any) -> None:
    """A worker with several threads (``threads-per-worker``, ``cores=``) stages calls of
    two batches at once with one backend. Thread B staging a labelled value sets the
    store's last record, then its plain key; a plain call staged by thread A in between
    took the fast path with B's record (seen with real threads: plain calls recorded with
    the dims ``('t',)`` and attributes of a DataArray). Here the interleaving is made
    deterministic: the plain call is staged at the moment B's record is stored."""
    import xarray as xr

    from acme_xr.storage.zarr import ZarrStore
    from acme_xr.storage.zarr_run import ZarrRun

    backend = ZarrRun(output_dir=str(tmp_path), stem="f", n_calls=4)
    backend.prepare()
    backend.zarr.chunk = 4
    backend.zarr.ensure_arrays(describe(to_variables(np.zeros(4)), {}), templates={})
    plain_meta = describe(to_variables(np.zeros(4)), {})
    seen: list[Any] = []

    class Interleaved(ZarrStore):
        @property
        def last_meta(self) -> Any:
            return self.__dict__.get("last_meta")

        @last_meta.setter
        def last_meta(self, meta: Any) -> None:
            self.__dict__["last_meta"] = meta
            if meta is not None and meta != plain_meta:  # thread A runs here
                seen.append(backend.stage(2, np.full(4, 2.0), templates={}, warnings=[]))

    backend.zarr.__class__ = Interleaved
    first, _ = backend.stage(0, np.zeros(4), templates={}, warnings=[])
    assert first.meta == plain_meta
    labelled = xr.DataArray(np.ones(4), dims="t", attrs={"units": "V"})
    written, _ = backend.stage(1, labelled, templates={}, warnings=[])
    assert written.meta == describe(to_variables(labelled), {})
    assert seen and seen[0][0].meta == plain_meta
    # and afterwards: the next plain call is not recorded with the labelled call's record
    after, _ = backend.stage(3, np.full(4, 3.0), templates={}, warnings=[])
    assert after.meta == plain_meta


_BUFFER = np.zeros(3)


def _fills_one_buffer(x: float) -> np.ndarray:
    """A function that fills and returns one preallocated output array (a common habit)."""
    _BUFFER[:] = x
    return _BUFFER


def test_zarr_run_keeps_each_calls_value_of_a_reused_output_array(client: Any,
                                                                  tmp_path: Any) -> None:
    """storage="zarr" kept the returned array itself until the batch's end: a function
    returning the same (refilled) array every call had every call of a chunk stored as the
    chunk's last call, with no warning ([0, 1, 2, 3, 7, 7, 7, 7, 11, 11, 11, 11]). The
    HDF5 run of the same function reads back [0, ..., 11]."""
    from acme_xr import ParallelMap, open_results

    n = 12
    ParallelMap(_fills_one_buffer, list(range(n)), storage="zarr", batch_size=4,
                output_dir=str(tmp_path / "z"), verbose=False).compute()
    ds = open_results(tmp_path / "z")
    assert ds.result_0.values[:, 0].tolist() == [float(i) for i in range(n)]


def _buffer_in_a_dataarray(x: float) -> Any:
    import xarray as xr

    _BUFFER[:] = x
    return xr.DataArray(_BUFFER, dims="t")


def _buffer_twice(x: float) -> tuple[np.ndarray, float]:
    _BUFFER[:] = x
    return _BUFFER, x


@pytest.mark.parametrize("func", [_fills_one_buffer, _buffer_in_a_dataarray, _buffer_twice])
def test_memory_mode_keeps_each_calls_value_of_a_reused_output_array(client: Any,
                                                                     func: Any) -> None:
    """In memory a batch's values travel to the client at its end: a refilled output
    array returned by every call came back as the batch's last value for every call."""
    from acme_xr import ParallelMap

    n = 12
    out = ParallelMap(func, list(range(n)), write_worker_results=False, batch_size=4,
                      verbose=False).compute()
    first = [np.asarray(v[0] if isinstance(v, tuple) else v)[0] for v in out]
    assert first == [float(i) for i in range(n)]


def test_a_function_named_with_a_slash_names_its_files_without_one(client: Any,
                                                                   tmp_path: Any) -> None:
    from acme_xr import ParallelMap, open_results

    def f(x: float) -> np.ndarray:
        return np.full(2, x)

    f.__name__ = "a/b"
    files = ParallelMap(f, [1.0, 2.0], output_dir=str(tmp_path / "run"),
                        verbose=False).compute()
    assert [os.path.basename(p) for p in files] == ["a_b_0.h5", "a_b_1.h5"]
    assert open_results(tmp_path / "run").result_0.values.tolist() == [[1.0, 1.0], [2.0, 2.0]]
