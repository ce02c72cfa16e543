"""Batch-chunked zarr (issue 12, point 1): each dask task writes its batch's calls as whole
chunks of its own region; a killed worker, a Ctrl-C and a resume lose nothing and run no
finished call again.

Every run here is real: a LocalCluster, real files; faults are real processes killed or
interrupted (as in test_faults.py and test_faults_interrupt.py).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ComputeError
from acme_xr.manifest import Manifest

from . import fault_script
from .test_faults_interrupt import (
    assert_ended_by_keyboard_interrupt,
    assert_processes_gone,
    done_calls,
    executions,
    run_script,
)

zarr = pytest.importorskip("zarr", reason="storage='zarr' needs the zarr package")

# the store's array of which calls it holds whole (acme_xr.storage.zarr.STATUS), spelt out:
# it is part of the store's documented layout
STATUS = "_acme_xr_status"


def tiny(x: int) -> np.ndarray:
    return np.full(4, float(x))


def files_below(path: Any) -> list[str]:
    return [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]


def chunk_lengths(store: Any) -> dict[str, int]:
    root = zarr.open_group(str(store), mode="r")
    return {name: arr.chunks[0] for name, arr in root.arrays()
            if (arr.metadata.dimension_names or ("",))[0] == "call"}


def mark(marker_dir: str, i: int) -> None:
    """Record one execution of call ``i`` (one file per execution)."""
    os.makedirs(marker_dir, exist_ok=True)
    open(os.path.join(marker_dir, f"{i}.{os.getpid()}.{time.perf_counter_ns()}"), "w").close()


def ran(marker_dir: str) -> list[int]:
    return executions(marker_dir) if os.path.isdir(marker_dir) else []


# -- files by batch, not by call ---------------------------------------------------------
def test_a_few_thousand_tiny_calls_leave_about_one_file_per_batch(client: Any,
                                                                  tmp_path: Any) -> None:
    n = 3000
    out = tmp_path / "run"
    ParallelMap(tiny, list(range(n)), storage="zarr", output_dir=str(out)).compute()
    lengths = chunk_lengths(out / "tiny.zarr")
    # one regular chunk grid: every array of the run has the same chunk length along call
    (length,) = set(lengths.values())
    assert length > 1 and STATUS in lengths
    batches = -(-n // length)
    chunk_files = [f for f in files_below(out) if os.sep + "c" + os.sep in f]
    assert len(chunk_files) == batches * len(lengths)
    assert len(files_below(out)) < len(chunk_files) + 20  # metadata, manifest, log
    assert len(files_below(out)) < n / 10
    ds = open_results(out)
    np.testing.assert_array_equal(ds.result_0.values,
                                  np.repeat(np.arange(float(n)), 4).reshape(n, 4))
    assert (ds.status.values == "done").all()


# -- failed calls inside a batch ---------------------------------------------------------
def sometimes_fails(i: int) -> tuple[np.ndarray, np.int32]:
    if i % 7 == 5:
        raise ValueError(f"call {i} fails on purpose")
    return np.arange(3.0) + i, np.int32(-i)


def test_failed_calls_of_a_batch_are_gaps_and_the_others_are_kept(client: Any,
                                                                  tmp_path: Any) -> None:
    n, out = 60, tmp_path / "run"
    with pytest.raises(ComputeError):
        ParallelMap(sometimes_fails, list(range(n)), storage="zarr", batch_size=10,
                    output_dir=str(out)).compute()
    assert set(chunk_lengths(out / "sometimes_fails.zarr").values()) == {10}
    ds = open_results(out)
    failed = [i for i in range(n) if i % 7 == 5]
    assert [i for i, s in enumerate(ds.status.values) if s == "failed"] == failed
    for i in range(n):
        if i in failed:
            assert np.isnan(ds.result_0.values[i]).all()  # floats: NaN
            assert bool(ds.result_1_mask.values[i])  # other dtypes: the mask (and status)
        else:
            np.testing.assert_array_equal(ds.result_0.values[i], np.arange(3.0) + i)
            assert ds.result_1.values[i] == -i and ds.result_1.dtype == np.int32
    # plain zarr readers see NaN in the failed calls' rows of a float array too
    raw = zarr.open_array(str(out / "sometimes_fails.zarr"), path="result_0", mode="r")
    assert np.isnan(raw[5]).all()


# -- ragged results --------------------------------------------------------------------
def ragged(i: int) -> np.ndarray:
    return np.arange(float(1 + (i // 10) % 3))  # length 1, 2 or 3 by tens of calls


def test_ragged_results_keep_their_true_shapes_none_truncated(client: Any,
                                                              tmp_path: Any) -> None:
    n, out = 60, tmp_path / "run"
    ParallelMap(ragged, list(range(n)), storage="zarr", batch_size=10,
                output_dir=str(out)).compute()
    store = zarr.open_group(str(out / "ragged.zarr"), mode="r")
    assert store["result_0"].chunks[0] == 10 and store["result_0"].shape == (n, 1)
    # calls longer than the arrays stay whole in payload files of their own, none cut
    payloads = sorted(int(f.split("_")[1].split(".")[0]) for f in os.listdir(out)
                      if f.startswith("ragged_") and f.endswith(".h5"))
    assert payloads == [i for i in range(n) if (i // 10) % 3]
    ds = open_results(out)
    assert ds.result_0.shape == (n, 3)  # padded to the largest, NaN beyond each call's own
    for i in range(n):
        k = 1 + (i // 10) % 3
        np.testing.assert_array_equal(ds.result_0.values[i, :k], np.arange(float(k)))
        assert np.isnan(ds.result_0.values[i, k:]).all()
    shapes = Manifest.read(str(out)).variables["result_0"].shapes
    assert [shapes[i] for i in range(n)] == [(1 + (i // 10) % 3,) for i in range(n)]  # true shapes
    assert len(files_below(out)) < n


# -- xarray returns -------------------------------------------------------------------
def labelled(i: int) -> xr.DataArray:
    return xr.DataArray(np.arange(6.0).reshape(2, 3) + i, dims=("trial", "time"),
                        coords={"time": [0.0, 0.1, 0.2], "trial": ["a", "b"]},
                        attrs={"units": "mV"}, name="lfp")


def test_xarray_returns_keep_dims_coords_and_attrs(client: Any, tmp_path: Any) -> None:
    n, out = 80, tmp_path / "run"
    ParallelMap(labelled, list(range(n)), storage="zarr", batch_size=16,
                output_dir=str(out)).compute()
    assert set(chunk_lengths(out / "labelled.zarr").values()) == {16}
    ds = open_results(out)
    (name,) = list(ds.data_vars)
    assert ds[name].dims == ("call", "trial", "time")
    assert ds[name].attrs["units"] == "mV"
    assert ds.time.values.tolist() == [0.0, 0.1, 0.2]
    assert ds.trial.values.tolist() == ["a", "b"]
    for i in (0, 17, 79):
        np.testing.assert_array_equal(ds[name].values[i], labelled(i).values)
    with xr.open_zarr(out / "labelled.zarr") as plain:  # without acme_xr's reader too
        assert plain[name].dims == ("call", "trial", "time")
        assert plain.time.values.tolist() == [0.0, 0.1, 0.2]
        np.testing.assert_array_equal(plain[name].values[17], labelled(17).values)


# -- a worker killed mid-chunk -----------------------------------------------------------
@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A 2-worker cluster of this test only: one of its workers gets killed."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def slow_marked(i: int, marker_dir: str) -> np.ndarray:
    mark(marker_dir, i)
    time.sleep(0.05)
    return np.full(3, float(i))


def test_worker_killed_mid_chunk_loses_nothing(own_cluster: Any, tmp_path: Any) -> None:
    n, length, victim = 48, 8, 21  # call 21 is in the middle of chunk 2 (calls 16-23)
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    killed: list[int] = []

    def kill_the_worker_of_the_victim() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for name in os.listdir(markers) if os.path.isdir(markers) else []:
                if name.startswith(f"{victim}."):
                    pid = int(name.split(".")[1])
                    os.kill(pid, signal.SIGKILL)  # calls 16-20 of its batch are done
                    killed.append(pid)
                    return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_the_worker_of_the_victim)
    killer.start()
    ParallelMap(slow_marked, list(range(n)), markers, storage="zarr", batch_size=length,
                output_dir=str(out)).compute()
    killer.join()
    assert killed
    runs = ran(markers)
    assert runs.count(victim) == 2  # ran again on another worker
    assert all(1 <= runs.count(i) <= 2 for i in range(n))
    # each chunk written whole once it was complete: the grid is intact, nothing half-done
    store = out / "slow_marked.zarr"
    chunks = sorted(os.listdir(store / "result_0" / "c"))
    assert chunks == [str(k) for k in range(n // length)]
    assert not [f for f in files_below(out) if f.endswith(".partial") or f.endswith(".h5")
                and "slow_marked_" in f]
    m = Manifest.read(str(out))
    assert m.state == "complete" and m.counts["done"] == n
    np.testing.assert_array_equal(open_results(out).result_0.values,
                                  np.repeat(np.arange(float(n)), 3).reshape(n, 3))
    status = zarr.open_array(str(store), path=STATUS, mode="r")[:]
    assert (status == 1).all()


# -- Ctrl-C and resume ---------------------------------------------------------------
@pytest.fixture(scope="module")
def interrupted_zarr(tmp_path_factory: Any) -> Any:
    """A batch-chunked zarr run interrupted by SIGINT (chunks of 4 calls)."""
    base = tmp_path_factory.mktemp("ctrl_c_zarr")
    os.environ["ACME_XR_TEST_STORAGE"], os.environ["ACME_XR_TEST_BATCH_SIZE"] = "zarr", "4"
    try:
        return run_script("own", str(base / "run"), str(base / "markers"), delay=0.3,
                          interrupt_after=10)
    finally:
        del os.environ["ACME_XR_TEST_STORAGE"], os.environ["ACME_XR_TEST_BATCH_SIZE"]


def test_ctrl_c_on_a_batch_chunked_store_keeps_every_finished_call(
        interrupted_zarr: Any) -> None:
    run = interrupted_zarr
    assert_ended_by_keyboard_interrupt(run)
    assert_processes_gone(run.processes)
    m = run.manifest
    assert m["state"] == "interrupted" and 0 < m["counts"]["done"] < fault_script.N_CALLS
    done = done_calls(run)
    assert done <= run.started
    assert not [f for f in run.files if f.endswith(".partial")]
    ds = open_results(run.out)
    for i in done:
        want = fault_script.slow(i, 0.5)
        np.testing.assert_array_equal(ds.result_0.values[i], want[0])
        assert ds.result_1.values[i] == want[1]
    # the store's status and the manifest agree call by call
    status = zarr.open_array(os.path.join(run.out, "slow.zarr"), path=STATUS, mode="r")[:]
    assert {i for i in range(fault_script.N_CALLS) if status[i] == 1} <= done


def test_resume_after_ctrl_c_runs_each_missing_call_once(interrupted_zarr: Any,
                                                        tmp_path: Any) -> None:
    done_before = done_calls(interrupted_zarr)
    markers = str(tmp_path / "markers")
    os.environ["ACME_XR_TEST_STORAGE"], os.environ["ACME_XR_TEST_BATCH_SIZE"] = "zarr", "4"
    try:
        run = run_script("resume", interrupted_zarr.out, markers, delay=0.02)
    finally:
        del os.environ["ACME_XR_TEST_STORAGE"], os.environ["ACME_XR_TEST_BATCH_SIZE"]
    assert run.returncode == 0, run.stderr
    n = fault_script.N_CALLS
    # no finished call ran (or was written) again; every other one ran once
    assert sorted(executions(markers)) == sorted(set(range(n)) - done_before)
    assert run.manifest["state"] == "complete" and run.manifest["counts"]["done"] == n
    # the resumed run kept the store's chunk grid
    assert set(chunk_lengths(os.path.join(run.out, "slow.zarr")).values()) == {4}
    ds = open_results(run.out)
    for i in range(n):
        want = fault_script.slow(i, 0.5)
        np.testing.assert_array_equal(ds.result_0.values[i], want[0])
        assert ds.result_1.values[i] == want[1]


def flaky(i: int, flags: str, markers: str) -> np.ndarray:
    """Fails while ``flags/<i>`` exists; records each run."""
    mark(markers, i)
    if os.path.exists(os.path.join(flags, str(i))):
        raise FileNotFoundError(f"input {i} is not there yet")
    return np.arange(4.0) * 2 + i


def test_resume_reruns_only_the_unfinished_calls_of_a_chunk(client: Any, tmp_path: Any) -> None:
    n, out = 40, tmp_path / "run"
    flags, markers = tmp_path / "flags", str(tmp_path / "m")
    flags.mkdir()
    for i in (11, 13, 35):  # two calls in the middle of chunk 1 (calls 10-19), one in 3
        (flags / str(i)).write_text("")
    args = (list(range(n)), str(flags), markers)
    with pytest.raises(ComputeError, match="3 of 40 calls failed"):
        ParallelMap(flaky, *args, storage="zarr", batch_size=10, output_dir=str(out)).compute()
    # calls that finished without their outcome reaching the manifest (the client died):
    # one of chunk 2, and all of chunk 3 (whose call 35 failed)
    m = Manifest.read(str(out))
    for i in (25, 30, 31, 32, 33, 34, 36, 37, 38, 39):
        m.forget(i)
    m.write(str(out))
    for f in flags.iterdir():
        f.unlink()
    before = ran(markers)
    ParallelMap(flaky, *args, storage="zarr", batch_size=10, output_dir=str(out),
                resume=True).compute()
    again = ran(markers)
    for i in before:
        again.remove(i)
    # the failed calls ran again; the calls whose chunk says they are done did not, and
    # rewriting chunk 3 for call 35 kept them
    assert sorted(again) == [11, 13, 35]
    ds = open_results(out)
    np.testing.assert_array_equal(ds.result_0.values,
                                  np.arange(4.0)[None, :] * 2 + np.arange(n)[:, None])
    assert (ds.status.values == "done").all()
    assert set(chunk_lengths(out / "flaky.zarr").values()) == {10}


# -- the chunk grid, as a property -------------------------------------------------------
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), length=st.integers(1, 9), data=st.data())
def test_batches_are_chunks_and_rows_written_in_any_order_stay(tmp_path: Any, n: int,
                                                               length: int, data: Any) -> None:
    from acme_xr.storage.values import to_variables
    from acme_xr.storage.zarr import ZarrStore
    from acme_xr.storage.zarr_batch import ChunkBatcher, write_rows

    store = ZarrStore(os.path.join(str(tmp_path), f"s{n}_{length}_{time.perf_counter_ns()}.zarr"),
                      n_calls=n, chunk=length)
    store.create()
    store.ensure_arrays((("result_0", (2,), "<f8", ("d",), None, None),), templates={})
    # two passes over random subsets of the calls: a run, then a resume of some calls
    written: dict[int, float] = {}
    for run in range(2):
        todo = sorted(data.draw(st.sets(st.integers(0, n - 1)), label=f"todo{run}"))
        batcher = ChunkBatcher(todo, slots=2, length=length)
        handed: list[int] = []
        while (batch := batcher.take()) is not None:
            calls = batch[0]
            assert len({c // length for c in calls}) == 1  # one chunk per batch
            handed += calls
            ok = [c for c in calls if data.draw(st.booleans(), label="succeeds")]
            write_rows(store, calls, [(c, {"result_0": to_variables(
                np.full(2, c + 0.5 * run))[0].data}) for c in ok])
            for c in calls:
                if c in ok:
                    written[c] = c + 0.5 * run
                elif len(set(range(c // length * length, min(n, c // length * length
                                                              + length))) - set(calls)) == 0:
                    written.pop(c, None)  # a whole chunk rewritten: its failed rows are gaps
        assert handed == todo
    values = zarr.open_array(store.path, path="result_0", mode="r")[:]
    status = zarr.open_array(store.path, path=STATUS, mode="r")[:]
    for c in range(n):
        if c in written:
            assert values[c].tolist() == [written[c]] * 2 and status[c] == 1


def _nul_units(x: int) -> Any:
    return xr.DataArray(np.arange(3.0) + x, dims="t", attrs={"units": "\x00"})


def test_a_probe_call_hdf5_cannot_hold_is_pickled_with_a_warning(tmp_path: Any) -> None:
    # the probe calls are written as HDF5 payloads before the arrays exist: a value HDF5
    # cannot hold (an attribute with an embedded NUL) is pickled and named, never a crash
    out = str(tmp_path / "run")
    with pytest.warns(UserWarning, match="pickled instead"):
        ParallelMap(_nul_units, [1, 2, 3], output_dir=out, storage="zarr",
                    verbose=False).compute(debug=True)
    for i in range(3):
        with open(os.path.join(out, f"_nul_units_{i}.pickle"), "rb") as fh:
            value = pickle.load(fh)
        got = value[0] if isinstance(value, list) else value
        assert got.attrs["units"] == "\x00" and got.values.tolist() == [i + 1.0, i + 2.0,
                                                                        i + 3.0]


# -- chunk length of fast calls ------------------------------------------------------------
@pytest.mark.parametrize(("probe_seconds", "least", "most"), [
    (2e-5, 25_000, 25_000),  # capped by 4 batches per worker slot (200,000 calls, 2 slots)
    (5e-4, 4000, 4000),      # about a payload write: 2 s of such calls at most
    (1e-3, 2000, 2000),
    (1e-2, 20, 20),          # slower than a payload write: ~0.2 s a batch
])
def test_a_probe_as_fast_as_a_payload_write_gives_chunks_of_thousands_of_calls(
        tmp_path: Any, probe_seconds: float, least: int, most: int) -> None:
    """The probe calls also write a payload file (~0.5-1 ms): a million 10 us calls sized
    by that time made 5,000 chunks of 200 calls, each batch's task and chunk writes then
    costing as much as its calls (issue 12: zarr at most 1.5x the memory run)."""
    from acme_xr.manifest import Manifest
    from acme_xr.storage.registry import backend_class
    from acme_xr.storage.zarr_batch import chunk_batcher

    n = 200_000
    backend = backend_class("zarr")(output_dir=str(tmp_path), stem="tiny", n_calls=n)
    backend.prepare()
    manifest = Manifest.new(n, {"func": {"name": "tiny"}})
    batcher = chunk_batcher(backend, manifest, list(range(n)), slots=2)
    assert batcher is not None
    probe = [0, 1, 2, 3]
    written = backend.write_batch([(i, tiny(i)) for i in probe], templates={}, warnings=[])
    backend.collected(written, manifest)
    manifest.duration[probe] = probe_seconds
    assert least <= batcher.decide(None, probe) <= most  # type: ignore[misc]


def test_open_results_reads_a_store_in_blocks_of_whole_chunks(client: Any,
                                                               tmp_path: Any) -> None:
    """Each dask block of a variable held by the store alone is whole chunks: a block
    that cut a chunk would make two tasks decode it, and blocks of 1000 calls made a
    million-call mean 1000 tasks of ~5 ms overhead each (issue 12: mean under 5 s)."""
    n = 3000
    out = tmp_path / "run"
    ParallelMap(tiny, list(range(n)), storage="zarr", output_dir=str(out), batch_size=300,
                verbose=False).compute()
    (length,) = set(chunk_lengths(out / "tiny.zarr").values())
    assert length == 300
    ds = open_results(out)
    blocks = ds.result_0.data.chunks[0]
    assert all(b % length == 0 for b in blocks[:-1]) and sum(blocks) == n
    assert len(blocks) == 1  # 3000 calls: one block, not three
    np.testing.assert_array_equal(ds.result_0.values[:, 0], np.arange(float(n)))


def test_a_chunks_calls_share_one_description_pickled_once(tmp_path: Any) -> None:
    """The calls of a chunk that fit its arrays have equal descriptions (name, shape, dtype,
    dims): the worker hands out one object for all of them, so a batch's outcome pickles
    it once, not once per call (the client unpickled a million of them)."""
    from acme_xr.storage.registry import backend_class

    n = 8
    backend = backend_class("zarr")(output_dir=str(tmp_path), stem="tiny", n_calls=n)
    backend.prepare()
    backend.zarr.chunk = n
    written = backend.write_batch([(0, tiny(0))], templates={}, warnings=[])  # the probe
    backend.zarr.ensure_arrays(written[0].meta, {})
    staged = [backend.stage(i, tiny(i), {}, [])[0] for i in range(1, n)]
    assert {w.fmt for w in staged} == {"zarr"}
    assert all(w.meta is staged[0].meta for w in staged)
    one = len(pickle.dumps([staged[0]]))
    assert len(pickle.dumps(staged)) < one + 20 * (n - 1)  # a reference per call, no copy
    # a call of another shape gets its own description (a payload file)
    other = backend.stage(n - 1, np.arange(5.0), {}, [])[0]
    assert other.meta is not staged[0].meta and other.meta[0][1] == (5,)


def test_the_client_shows_zarr_only_the_calls_kept_as_payloads() -> None:
    # a class-level setting, never a dataclass field whose default None would hide the
    # subclass's: a million-call run then built a record per call for nothing
    import dataclasses

    from acme_xr.storage.base import StorageBackend
    from acme_xr.storage.zarr_run import ZarrRun

    assert "collected_formats" not in {f.name for f in dataclasses.fields(StorageBackend)}
    assert ZarrRun.collected_formats == ("h5",)
