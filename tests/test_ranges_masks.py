"""Which way ``<name>_mask`` and selections inside each call are read (read_counts), and
that the values are those of the h5py path."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pytest

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ComputeError, PayloadCorruptError
from acme_xr.manifest import Manifest

from .test_ranges import counted as counted_anywhere
from .test_ranges import flip


def counted(load: Any) -> tuple[Any, dict[str, int]]:
    """``counted`` with the reads in this process (read_counts are per process), not on
    the test's cluster."""
    with dask.config.set(scheduler="sync"):
        return counted_anywhere(load)


def ints(x: int) -> np.ndarray:
    if x == 2:
        raise ValueError("call 2 fails on purpose")
    return np.full(4 if x != 3 else 2, x, np.int64)  # call 3 is short: padded


def sometimes_masked(x: int) -> np.ndarray:
    if x == 2:
        raise ValueError("call 2 fails on purpose")
    values = np.full(3, x, np.int64)
    return np.ma.masked_array(values, mask=[False, x == 3, False]) if x >= 3 else values


def _run(func: Any, out: str) -> str:
    with pytest.raises(ComputeError):
        ParallelMap(func, list(range(5)), output_dir=out, verbose=False).compute()
    return out


def test_the_mask_of_an_unmasked_result_opens_no_payload(client: Any, tmp_path: Any) -> None:
    run = _run(ints, str(tmp_path / "run"))
    ds = open_results(run)
    got, ways = counted(lambda: ds.result_0_mask.values)
    assert ways == {"range": 0, "h5py": 0}
    want = np.zeros((5, 4), bool)
    want[2] = True  # the failed call
    want[3, 2:] = True  # padding of the short call
    np.testing.assert_array_equal(got, want)
    with dask.config.set({"acme_xr.read.byte-ranges": False}):
        np.testing.assert_array_equal(open_results(run).result_0_mask.values, want)
    # a selection inside each call
    np.testing.assert_array_equal(ds.result_0_mask[:, 3].values, want[:, 3])
    np.testing.assert_array_equal(ds.result_0_mask[3].values, want[3])


def test_stored_masks_are_still_read_when_a_later_call_was_masked(client: Any,
                                                                   tmp_path: Any) -> None:
    # call 0 (the first recorded) is a plain array, call 3 a masked one: the mask of call
    # 3 is in its payload, and the variable is known to have stored masks
    run = _run(sometimes_masked, str(tmp_path / "run"))
    ds = open_results(run)
    got, ways = counted(lambda: ds.result_0_mask.values)
    assert ways["h5py"] > 0
    assert got.tolist() == [[False] * 3, [False] * 3, [True] * 3, [False, True, False],
                            [False] * 3]


ROWS, COLS = 400, 400  # 1.28 MB per call: more than a call read whole for any selection


def large(x: int) -> np.ndarray:
    return np.arange(ROWS * COLS, dtype=np.float64).reshape(ROWS, COLS) + 1000.0 * x


def small(x: int) -> np.ndarray:
    return np.arange(12, dtype=np.float64).reshape(4, 3) + 1000.0 * x


def _plain(func: Any, out: str) -> str:
    ParallelMap(func, list(range(3)), output_dir=out, verbose=False).compute(debug=True)
    return out


def _flip_last_row(run: str, name: str, c: int) -> None:
    offset, length, _ = Manifest.read(run).variables["result_0"].range(c)  # type: ignore[misc]
    flip(f"{run}/{name}_{c}.h5", offset + length - 1)


@pytest.mark.parametrize("key", [(slice(None), 0, 0), (slice(None), slice(2, 9, 3)),
                                 (slice(None), -1), ([2, 0], slice(None, None, -7), [5, 1]),
                                 (1, slice(10, 12), slice(None)), (slice(None), slice(5, 5))])
def test_a_selection_inside_large_calls_reads_only_its_rows(tmp_path: Any,
                                                            key: tuple[Any, ...]) -> None:
    run = _plain(large, str(tmp_path / "run"))
    ds = open_results(run)
    got, ways = counted(lambda: ds.result_0[key].values)
    with dask.config.set({"acme_xr.read.byte-ranges": False}):
        want = open_results(run).result_0[key].values
    assert ways["h5py"] == 0 and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_rows_outside_a_selection_of_large_calls_are_not_read(tmp_path: Any) -> None:
    run = _plain(large, str(tmp_path / "run"))
    _flip_last_row(run, "large", 1)
    ds = open_results(run)
    # the first rows are read, not the changed last one: no whole read, so no checksum
    got, ways = counted(lambda: ds.result_0[:, 0, :3].values)
    assert ways == {"range": 3, "h5py": 0}
    np.testing.assert_array_equal(got, np.stack([large(x)[0, :3] for x in range(3)]))
    with pytest.raises(PayloadCorruptError, match="large_1.h5"):  # a whole read checks it
        with dask.config.set(scheduler="sync"):
            ds.result_0.load()


def test_small_calls_are_read_whole_and_checked_for_any_selection(tmp_path: Any) -> None:
    run = _plain(small, str(tmp_path / "run"))
    _flip_last_row(run, "small", 1)
    with pytest.raises(PayloadCorruptError, match="small_1.h5"):
        counted(lambda: open_results(run).result_0[:, 0, 0].values)
