"""Memory mode (``write_worker_results=False``) with ``result_shape``: the return values
come back stacked, one array per return value, and the client holds the results' bytes,
not a Python object per call (issue 12, point 4).

:class:`~acme_xr.storage.memory.StackedResults` is checked on its own against a plain
``np.stack`` of the same values (a hypothesis property), then through real runs on the
test session's LocalCluster: exact values and dtypes, failed calls masked, ragged returns
kept per call with a warning naming the call, and the client's peak memory (tracemalloc)
over 100,000 calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError
from acme_xr.storage.memory import StackedResults

DTYPES = ["float64", "float32", "int64", "int16", "complex128", "bool", "uint8"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), row=st.integers(0, 4), axis=st.integers(0, 1),
       dtype=st.sampled_from(DTYPES), extra=st.sampled_from(DTYPES),
       order=st.permutations(range(12)))
def test_stacked_equals_np_stack_in_any_arrival_order(n: int, row: int, axis: int, dtype: str,
                                                       extra: str, order: list[int]) -> None:
    """Whatever order the calls arrive in, result_0 is np.stack of the calls along the None
    axis in result_dtype, result_1 np.stack of the calls' values in their own dtype."""
    rng = np.random.default_rng(n * 100 + row)
    values = [(rng.integers(0, 2, row).astype(dtype), np.asarray(rng.integers(0, 2), extra))
              for _ in range(n)]
    shape = (None, row) if axis == 0 else (row, None)
    stacked = StackedResults(n, shape, np.dtype(dtype))
    for i in [i for i in order if i < n]:
        stacked[i] = values[i]
    result_0, result_1 = stacked.results()
    assert type(result_0) is np.ndarray and type(result_1) is np.ndarray
    assert result_0.dtype == np.dtype(dtype) and result_1.dtype == np.dtype(extra)
    np.testing.assert_array_equal(result_0, np.stack([v[0] for v in values], axis=axis))
    np.testing.assert_array_equal(result_1, np.stack([v[1] for v in values]))


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(6)), odd=st.integers(0, 5))
def test_the_warnings_name_the_same_calls_in_any_arrival_order(order: list[int],
                                                                odd: int) -> None:
    stacked = StackedResults(6, (None,), np.dtype("float64"))
    for i in order:
        stacked[i] = (1j if i == odd else float(i), np.arange(2 + (i == odd)))
    with pytest.warns(UserWarning) as caught:
        stacked.results()
    assert sorted(str(w.message).split(" cast ")[0].split(" is ")[0] for w in caught) == [
        f"result_0 of call {odd} (complex128)", f"result_1 of call {odd}"]


def row_and_more(x: int) -> tuple[np.ndarray, np.int32, np.ndarray, str]:
    return np.arange(4.0) + x, np.int32(-x), np.full((2, 3), x, np.uint8), f"call {x}"


def test_memory_mode_returns_one_stacked_array_per_result(client: Any) -> None:
    n = 7
    out = ParallelMap(row_and_more, list(range(n)), result_shape=(None, 4),
                      result_dtype="float32", write_worker_results=False,
                      verbose=False).compute()
    result_0, result_1, result_2, result_3 = out
    # result_0 as ACME returns it: one array of result_shape in result_dtype
    assert type(result_0) is np.ndarray and result_0.dtype == np.float32
    np.testing.assert_array_equal(result_0, np.arange(4.0)[None, :] + np.arange(n)[:, None])
    # every further result stacked on a leading call axis in its own dtype
    assert result_1.dtype == np.int32 and result_1.tolist() == [-i for i in range(n)]
    assert result_2.dtype == np.uint8 and result_2.shape == (n, 2, 3)
    np.testing.assert_array_equal(result_2[:, 0, 0], np.arange(n))
    # what is not a number or an array is kept per call
    assert result_3 == [f"call {i}" for i in range(n)]


def fails_on_odd(x: int) -> tuple[np.ndarray, np.int64]:
    if x % 2:
        raise ValueError(f"odd {x}")
    return np.full(3, float(x)), np.int64(x)


def test_failed_calls_are_masked_nan_in_the_stacked_results(client: Any) -> None:
    with pytest.raises(ComputeError) as info:
        ParallelMap(fails_on_odd, list(range(6)), result_shape=(3, None), retries=0,
                    write_worker_results=False, verbose=False).compute()
    result_0, result_1 = info.value.results
    assert isinstance(result_0, np.ma.MaskedArray) and result_0.shape == (3, 6)
    assert result_0.mask[:, 1::2].all() and not result_0.mask[:, ::2].any()
    assert np.isnan(result_0.data[:, 1::2]).all()  # NaN under the mask (float dtype)
    np.testing.assert_array_equal(result_0[:, ::2], np.tile([0.0, 2.0, 4.0], (3, 1)))
    assert isinstance(result_1, np.ma.MaskedArray) and result_1.dtype == np.int64
    assert result_1.mask.tolist() == [False, True] * 3
    assert result_1.compressed().tolist() == [0, 2, 4]


def ragged_second(x: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(2, float(x)), np.arange(2 + (x == 3))


def test_ragged_result_falls_back_to_per_call_with_a_warning_naming_the_call(
        client: Any) -> None:
    with pytest.warns(UserWarning, match=r"result_1 of call 3 is int64 of shape \(3,\).*"
                                         r"returned per call") as caught:
        result_0, result_1 = ParallelMap(
            ragged_second, list(range(5)), result_shape=(None, 2), batch_size=1,
            write_worker_results=False, verbose=False).compute()
    assert len([w for w in caught if "per call" in str(w.message)]) == 1
    assert result_0.shape == (5, 2)
    assert isinstance(result_1, list)
    for i, value in enumerate(result_1):  # exact values, none truncated or padded
        np.testing.assert_array_equal(value, np.arange(2 + (i == 3)))


def complex_row(x: int) -> np.ndarray:
    return np.full(2, x + 1j)


def test_a_cast_across_kinds_warns_naming_the_calls(client: Any) -> None:
    with pytest.warns(UserWarning, match=r"result_0 of calls \[0, 1\] \(complex128\) cast "
                                         r"to result_dtype=float64"):
        out = ParallelMap(complex_row, [0, 1], result_shape=(None, 2), batch_size=1,
                          write_worker_results=False, verbose=False).compute()
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0]]  # ACME's cast: the real part


ROW = 128  # float64: 1 KiB of results per call
# run in a fresh process with its own cluster: in the test session, the shared cluster's
# scheduler (in this process) still settles earlier tests' work and its allocations land
# in the window (a peak of 1,907 bytes per call after 350 tests, 1,551 alone). The peak of
# a run of 1-float rows is measured first: the run's own bookkeeping per call (the inputs
# in the scheduler's graph, the manifest; ~500-800 bytes here, varying with the load)
# cancels in the difference.
_PEAK_SCRIPT = """
import json, sys, tracemalloc, warnings
import numpy as np
from distributed import Client, LocalCluster
from acme_xr import ParallelMap

def row(x, width):
    return np.full(width, float(x))

def peak(n, width):
    # small batches: few values in flight (a 0.2 s batch of these calls holds ~10 MB)
    pmap = ParallelMap(row, list(range(n)), width, result_shape=(None, width),
                       write_worker_results=False, verbose=False, batch_size=500)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about here
        out = pmap.compute()
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (n, width) and out[-1, 0] == n - 1
    return (top - base) / n

if __name__ == "__main__":
    n = N_CALLS
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        peak(100, ROW)  # imports and first-use allocations before the windows
        print(json.dumps({"narrow": peak(n, 1), "wide": peak(n, ROW)}))
"""


@pytest.mark.slow
def test_client_peak_memory_per_call_is_the_results_bytes(tmp_path: Any) -> None:
    """100,000 calls: the client's peak (tracemalloc, in a fresh process holding the client
    and its LocalCluster's scheduler) grows with the results' bytes, once: from rows of 1
    float64 to rows of 128 (1,016 bytes more per call) the peak per call grows by about
    that (measured: 1,054). A Python object per call (an ndarray: 112 bytes + its data)
    and the copy into the stacked array at the end (the code before StackedResults) grow
    it by twice that (measured: 2,028)."""
    n = 100_000
    more = (ROW - 1) * 8
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT.replace("ROW", str(ROW)).replace("N_CALLS", str(n)))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    grown = peaks["wide"] - peaks["narrow"]
    assert grown < 1.5 * more, (
        f"the peak grew by {grown:.0f} bytes per call for {more} more bytes of results per "
        f"call (peaks {peaks})")


def _stops_at_three(i: int) -> np.ndarray:
    if i == 3:
        raise KeyboardInterrupt  # as a Ctrl-C during the call
    return np.full(2, float(i))


def test_a_ctrl_c_keeps_the_finished_stacked_values_as_arrays() -> None:
    # pmap.results after a Ctrl-C is what compute() would have returned, the calls not run
    # masked: not the internal stacking object
    pmap = ParallelMap(_stops_at_three, list(range(6)), write_worker_results=False,
                       result_shape=(None, 2), verbose=False)
    with pytest.raises(KeyboardInterrupt):
        pmap.compute(debug=True)
    got = pmap.results
    assert isinstance(got, np.ma.MaskedArray) and got.shape == (6, 2)
    np.testing.assert_array_equal(got[:3].filled(-1), [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert got.mask[3:].all() and not got.mask[:3].any()
