"""Arguments that dask ships with its own serializers reach the calls, as in ACME
(issue 9, point 6): an open read-only h5py File or Dataset cannot be pickled, but dask
sends it as its file and object name and reopens it on the worker."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError, InputTypeError


@pytest.fixture
def h5(tmp_path: Any) -> Iterator[h5py.File]:
    """A file with datasets d (8 values) and e (8 more), open read-only in the client."""
    # not *.h5: an in-process scheduler keeps its last messages (dask's low-level log),
    # and with them the split Datasets it unpickled, open: that is not a payload left open
    path = tmp_path / "data.hdf5"
    with h5py.File(path, "w") as fh:
        fh["d"] = np.arange(8) * 1.5
        fh["e"] = np.arange(8) + 100.0
    with h5py.File(path, "r") as fh:
        yield fh


def row_of(i: int, dset: Any) -> float:
    return float(dset[i])


def row_of_file(i: int, fh: Any) -> float:
    return float(fh["d"][i])


def first_of(dset: Any, scale: float) -> float:
    return float(dset[0]) * scale


def get_with_lock(i: int, lock: Any) -> int:
    return i


@pytest.mark.parametrize("call_timeout", [None, 30])
@pytest.mark.parametrize("form", ["dataset", "file", "split"])
def test_an_open_read_only_h5py_object_reaches_every_call(
        client: Any, h5: h5py.File, form: str, call_timeout: float | None) -> None:
    """Whole (every call gets the Dataset or the File) and split (call i gets the i-th of
    a list of Datasets); with call_timeout the call's child process gets it too."""
    if form == "dataset":
        pmap = ParallelMap(row_of, list(range(8)), h5["d"], write_worker_results=False,
                           call_timeout=call_timeout, verbose=False)
        want = [1.5 * i for i in range(8)]
    elif form == "file":
        pmap = ParallelMap(row_of_file, list(range(8)), h5, write_worker_results=False,
                           call_timeout=call_timeout, verbose=False)
        want = [1.5 * i for i in range(8)]
    else:
        pmap = ParallelMap(first_of, [h5["d"], h5["e"], h5["d"]], 2.0,
                           write_worker_results=False, call_timeout=call_timeout,
                           verbose=False)
        want = [0.0, 200.0, 0.0]
    assert pmap.compute() == want


def test_disk_mode_with_a_dataset(client: Any, h5: h5py.File, tmp_path: Any) -> None:
    from acme_xr.storage.hdf5 import read_payload

    files = ParallelMap(row_of, list(range(4)), h5["e"], output_dir=str(tmp_path / "run"),
                        verbose=False).compute()
    assert [float(read_payload(f)["result_0"]) for f in files] == [100.0, 101.0, 102.0, 103.0]


def test_an_argument_nothing_can_ship_is_named(client: Any, tmp_path: Any) -> None:
    """Neither pickle nor dask can send a lock (nor a file open for writing): the error
    names the argument and says what to pass instead."""
    with pytest.raises(InputTypeError, match=r"argument 'lock' \(lock\).*file.*its name"):
        ParallelMap(get_with_lock, [1, 2], threading.Lock(),
                    write_worker_results=False, verbose=False).compute()
    with h5py.File(tmp_path / "w.h5", "w") as writable:
        writable["x"] = [1]
        with pytest.raises(InputTypeError, match="argument 'dset'"):
            ParallelMap(row_of, [0, 0], writable["x"], write_worker_results=False,
                        verbose=False).compute()


def test_an_argument_nothing_can_ship_is_refused_before_anything_exists(tmp_path: Any) -> None:
    """No cluster is started and no run directory written for a run no worker can receive
    (a reviewer's run left a directory that then refused both a new run and its resume)."""
    run = tmp_path / "run"
    pmap = ParallelMap(get_with_lock, [1, 2], threading.Lock(), output_dir=str(run),
                       verbose=False)
    with pytest.raises(InputTypeError, match=r"argument 'lock'"):
        pmap.compute()
    assert not run.exists()
    assert pmap.daemon.client is None and (pmap._lease is None or pmap._lease.client is None)


def test_a_split_element_nothing_can_ship_fails_only_its_calls(client: Any) -> None:
    with pytest.raises(ComputeError) as info:
        ParallelMap(get_with_lock, [1, 2, 3], [1, threading.Lock(), 3], batch_size=1,
                    write_worker_results=False, verbose=False).compute()
    assert list(info.value.failed) == [1]
    assert "element 1 of argument 'lock'" in info.value.failed[1]["message"]
    assert info.value.results == [1, None, 3]


def test_shipping_round_trips_and_keeps_big_buffers_out_of_band(h5: h5py.File) -> None:
    from acme_xr.shipping import Shipped, dumps

    big = np.arange(100_000.0)
    shipped = Shipped([big, 3])
    assert len(shipped.buffers) == 1  # the array is not copied into the pickle
    data, buffers = [], []
    data = pickle.dumps(shipped, protocol=5, buffer_callback=buffers.append)
    back = pickle.loads(data, buffers=buffers)
    np.testing.assert_array_equal(back[0], big) and back[1] == 3
    back = pickle.loads(pickle.dumps(shipped, protocol=4))
    np.testing.assert_array_equal(back[0], big)
    dset = pickle.loads(dumps({"x": h5["d"]}))["x"]  # plain pickle.loads rebuilds it
    assert dset.name == "/d" and dset[2] == 3.0


def test_with_call_timeout_a_value_the_child_cannot_get_fails_its_calls_clearly() -> None:
    """The calls' child process gets what the worker got; what cannot be sent to it fails
    each call with an error naming the argument and the way out."""
    from acme_xr.inputs import distribute
    from acme_xr.worker import Runner, WriteSpec

    plan = distribute(get_with_lock, ([0, 1],), {"lock": threading.Lock()})
    runner = Runner.from_plan(plan, WriteSpec("memory"), call_timeout=30)
    out = runner.run([0, 1], [(0,), (1,)])
    runner.close_children()
    assert out.status == [2, 2]
    message = out.errors[0]["message"]
    assert out.errors[0]["type"] == "acme_xr.errors.InputTypeError"
    assert "argument 'lock' (lock)" in message and "call_timeout" in message
    assert "its name" in message


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.builds(np.arange, st.integers(0, 20_000)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(value=values, protocol=st.sampled_from([4, 5]))
def test_shipped_values_come_back_equal(value: Any, protocol: int) -> None:
    """Whatever the nesting, with big arrays out of band or not, unpickling a Shipped gives
    back an equal value."""
    from acme_xr.shipping import Shipped

    buffers: list[Any] = []
    data = pickle.dumps(Shipped(value), protocol=protocol,
                        buffer_callback=buffers.append if protocol == 5 else None)
    assert same(pickle.loads(data, buffers=buffers), value)
