"""open_results reads by byte range (issue 11, point 3).

Values and dtypes read with plain ``pread`` at the recorded ranges equal h5py's (the same
run opened with ``acme_xr.read.byte-ranges`` off), for every dtype and shape of the
round-trip suite; payloads without a usable range are read by h5py; a payload rewritten with
another layout, damaged or truncated is never read at a stale offset; threads, processes
and a LocalCluster read the same values.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import Any

import dask
import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap, callstack, open_results
from acme_xr.errors import MissingPayloadError, PayloadCorruptError
from acme_xr.manifest import Manifest
from acme_xr.results import build_dataset
from acme_xr.storage.checksums import Sums
from acme_xr.storage.ranges import read_counts

from .deadline import fails_after
from .test_contract import runs
from .test_ranges_recorded import write_run

N = 12


def opened(run: str, by_range: bool = True, **kw: Any) -> xr.Dataset:
    with dask.config.set({"acme_xr.read.byte-ranges": by_range}):
        return open_results(run, **kw)


def counted(load: Any) -> tuple[Any, dict[str, int]]:
    """(what ``load()`` returns, calls read by each way meanwhile)."""
    before = read_counts()
    got = load()
    after = read_counts()
    return got, {k: after.get(k, 0) - before.get(k, 0) for k in ("range", "h5py")}


def same(got: xr.Dataset, want: xr.Dataset) -> None:
    """Equal values (bit for bit, NaN included) and dtypes, variable by variable."""
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        g, w = got[name].values, want[name].values
        assert g.dtype == w.dtype, name
        if w.dtype.kind == "O":
            assert g.tolist() == w.tolist(), name
        else:
            assert g.tobytes() == w.tobytes(), name


def cells(i: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((4, 3), float(i)), np.arange(3, dtype=np.int64) * i


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("pristine") / "run")
    with dask.config.set({"acme_xr.progress.delay": "1h"}):
        ParallelMap(cells, list(range(N)), output_dir=out, verbose=False).compute(debug=True)
    return out


@pytest.fixture
def run(pristine: str, tmp_path: Any) -> str:
    out = str(tmp_path / "run")
    shutil.copytree(pristine, out)
    return out


def expected() -> tuple[np.ndarray, np.ndarray]:
    return (np.stack([cells(i)[0] for i in range(N)]), np.stack([cells(i)[1] for i in range(N)]))


# -- (a) the same values as h5py, for every dtype and shape ------------------------------------

@settings(max_examples=int(os.environ.get("ACME_XR_CONTRACT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(run=runs(), checksums=st.booleans(), mask_integers=st.booleans())
def test_values_read_by_range_equal_h5pys(tmp_path_factory: Any, run: Any, checksums: bool,
                                          mask_integers: bool) -> None:
    values, _fail = run
    out = str(tmp_path_factory.mktemp("run") / "run")
    m = write_run(values, out, checksums)
    by_h5py, ways = counted(lambda: opened(out, False, mask_integers=mask_integers).load())
    assert ways["range"] == 0
    by_range, ways = counted(lambda: opened(out, mask_integers=mask_integers).load())
    same(by_range, by_h5py)
    # every call of a variable with a plain range (and no mask to apply) went by range
    plain = sum(rec.range(i) is not None for name, rec in m.variables.items()
                for i in range(m.n_inputs)
                if not (rec.attrs.get("_acme_xr_masked") and by_h5py[name].dtype.kind in "fc"))
    assert ways["range"] == plain


def test_partial_selections_equal_h5pys(run: str) -> None:
    ds, ref = opened(run), opened(run, False)
    for key in [dict(call=slice(2, 9, 3)), dict(call=[7, 1, 4]), dict(call=5),
                dict(result_0_dim_0=1), dict(result_0_dim_0=slice(None, None, -1)),
                dict(call=slice(None, None, -2), result_0_dim_1=[2, 0])]:
        for name in ("result_0", "result_1"):
            sub = {k: v for k, v in key.items() if k in ds[name].dims}
            got, want = ds[name].isel(sub).values, ref[name].isel(sub).values
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, key)
    np.testing.assert_array_equal(ds.result_0.values, expected()[0])


def test_a_gap_reads_as_its_fill_beside_ranges(tmp_path: Any) -> None:
    values: list[Any] = [np.arange(3, dtype="i4") * i for i in range(4)]
    values[2] = np.arange(2, dtype="i4")  # ragged: padded
    out = str(tmp_path / "run")
    m = write_run(values, out)
    m.forget(3)  # not done: a gap
    m.write(out)
    ds = opened(out)
    got, ways = counted(lambda: ds.result_0.values)
    assert ways == {"range": 3, "h5py": 0}
    assert got.tolist() == [[0, 0, 0], [0, 1, 2], [0, 1, -(2**31)],
                                           [-(2**31)] * 3]
    assert ds.result_0_mask.values[:, 2].tolist() == [False, False, True, True]


@pytest.mark.parametrize("mode", [{"single_file": True}, {"storage": "zarr"}],
                         ids=["single_file", "zarr"])
def test_runs_without_payload_ranges_read_as_before(tmp_path: Any, mode: dict[str, Any]) -> None:
    # a single_file container's groups and the zarr store's chunks have no recorded range
    out = str(tmp_path / "run")
    ParallelMap(cells, list(range(4)), output_dir=out, verbose=False, **mode).compute(debug=True)
    assert all(rec.range(i) is None for rec in Manifest.read(out).variables.values()
               for i in range(4))
    ds, ways = counted(lambda: opened(out).load())
    assert ways["range"] == 0
    np.testing.assert_array_equal(ds.result_0.values, expected()[0][:4])


# -- (b) a payload rewritten with another layout ----------------------------------------------

def relayout(path: str) -> None:
    """Rewrite a payload as h5repack -f GZIP would: same values and attributes, chunked
    and compressed, into a new file renamed over the old one."""
    tmp = path + ".repack"
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        dst.attrs.update(src.attrs)
        for key, obj in src.items():
            if isinstance(obj, h5py.Dataset) and obj.shape:
                new = dst.create_dataset(key, data=obj[()], chunks=True, compression="gzip")
                new.attrs.update(obj.attrs)
            else:
                src.copy(obj, dst, name=key)
    os.replace(tmp, path)


@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no checksums"])
def test_a_relaid_payload_is_named_while_its_recorded_size_stands(tmp_path: Any,
                                                                  checksums: bool) -> None:
    # never read at its old offset: the size recorded with the range tells it apart
    run = str(tmp_path / "run")
    write_run([cells(i) for i in range(4)], run, checksums)
    relayout(os.path.join(run, "returns_3.h5"))
    with pytest.raises(PayloadCorruptError, match=r"call 3: \S*returns_3\.h5: \d+ bytes, \d+ "
                                                  r"recorded"):
        opened(run).result_0.load()


def test_a_relaid_payload_is_read_by_h5py_once_the_run_is_rescanned(run: str) -> None:
    relayout(os.path.join(run, "cells_3.h5"))
    os.remove(os.path.join(run, "manifest.json"))  # rebuilt by scanning the payloads
    ds, ways = counted(lambda: opened(run).load())
    np.testing.assert_array_equal(ds.result_0.values, expected()[0])
    np.testing.assert_array_equal(ds.result_1.values, expected()[1])
    assert ways == {"range": 0, "h5py": 2 * N}  # a rebuilt manifest records no ranges


def test_a_relaid_payload_whose_sums_are_forgotten_is_read_by_h5py(run: str) -> None:
    # what a move or merge of payloads does to the manifest (Manifest.forget_sums)
    relayout(os.path.join(run, "cells_3.h5"))
    m = Manifest.read(run)
    m.forget_sums(3)
    m.write(run)
    ds, ways = counted(lambda: opened(run).load())
    np.testing.assert_array_equal(ds.result_0.values, expected()[0])
    assert ways == {"range": 2 * (N - 1), "h5py": 2}


# -- (c) damaged payloads name their file -----------------------------------------------------

def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_the_data_names_the_file(run: str, where: str) -> None:
    offset, length, _dtype = Manifest.read(run).variables["result_0"].range(5)  # type: ignore[misc]
    flip(os.path.join(run, "cells_5.h5"),
         offset + {"first": 0, "middle": length // 2, "last": length - 1}[where])
    with pytest.raises(PayloadCorruptError, match=r"call 5: \S*cells_5\.h5: the data of "
                                                  r"'result_0' \(bytes \d+ to \d+\).*changed"):
        opened(run).result_0.load()
    np.testing.assert_array_equal(opened(run).result_1.values, expected()[1])  # intact


@pytest.mark.parametrize("damage,match", [
    ("truncated", r"truncated"), ("emptied", r"0 bytes.*emptied"), ("longer", r"longer"),
    ("missing", r"is gone")])
@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no checksums"])
def test_a_truncated_or_missing_payload_names_the_file(tmp_path: Any, damage: str, match: str,
                                                       checksums: bool) -> None:
    out = str(tmp_path / "run")
    write_run([np.full(5, float(i)) for i in range(3)], out, checksums)
    path = os.path.join(out, "returns_1.h5")
    if damage == "truncated":
        os.truncate(path, os.path.getsize(path) - 3)  # the data's last bytes
    elif damage == "emptied":
        os.truncate(path, 0)
    elif damage == "longer":
        with open(path, "ab") as fh:
            fh.write(b"\0")
    else:
        os.remove(path)
    error = MissingPayloadError if damage == "missing" else PayloadCorruptError
    with pytest.raises(error, match=rf"call 1: .*returns_1\.h5.*{match}"):
        opened(out).result_0.load()


# -- (d) threads, processes, a cluster ----------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")
def test_threads_processes_and_a_cluster_read_the_same_values(run: str, client: Any) -> None:
    want = expected()
    ds = opened(run, chunks=2)  # 6 blocks per variable
    for scheduler in ("threads", "processes"):
        got, ways = counted(lambda s=scheduler: ds.compute(scheduler=s))
        np.testing.assert_array_equal(got.result_0.values, want[0])
        np.testing.assert_array_equal(got.result_1.values, want[1])
        if scheduler == "threads":  # counted in this process only
            assert ways == {"range": 2 * N, "h5py": 0}
    got = client.compute(ds).result()  # worker processes of a LocalCluster
    np.testing.assert_array_equal(got.result_0.values, want[0])
    np.testing.assert_array_equal(got.result_1.values, want[1])


def test_reads_by_range_never_wait_for_the_hdf5_lock(run: str) -> None:
    # another thread holds the lock h5py reads take (say, reading a big payload) meanwhile
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with callstack._HDF5_READS:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        with fails_after(60):  # a bound on a hang, not a timing
            got = opened(run).result_0.compute(scheduler="sync")
    finally:
        release.set()
        holder.join()
    np.testing.assert_array_equal(got.values, expected()[0])


# -- dask blocks --------------------------------------------------------------------------------

def blocked(n: int, shape: tuple[int, ...], ranges: bool) -> int:
    """Calls per dask block of a run of ``n`` calls of float64 ``shape``, with or without
    recorded ranges (opening reads no payload: the manifest alone decides)."""
    m = Manifest.new(n, {"func": {"name": "f"}, "payload": "f_{i}.h5"})
    nbytes = int(np.prod(shape)) * 8
    sums = Sums(2048 + nbytes, -1, ((2048, nbytes, -1),)) if ranges else None
    for i in range(n):
        m.record_done(i, "h5", [("result_0", shape, "<f8", ("d",), None, None)], None, sums)
    m.state = "complete"
    ds = build_dataset("/nonexistent", m)
    return ds.result_0.encoding["preferred_chunks"]["call"]  # type: ignore[no-any-return]


def test_blocks_hold_thousands_of_calls_read_by_range() -> None:
    # ~10-20 us a call by pread: 10,000 calls make a block of ~0.1-0.2 s
    assert blocked(20_000, (4,), ranges=True) == 10_000
    # ~0.5 ms a call by h5py: 1000 calls
    assert blocked(20_000, (4,), ranges=False) == 1000
    # 1 MiB a call: blocks stay within 64 MiB
    assert blocked(200, (2**17,), ranges=True) == 64
