"""open_results: every run as one lazy, labelled Dataset, checked value by value."""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

import h5py
import numpy as np
import psutil
import pytest
import xarray as xr

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ComputeError, MissingPayloadError, ResultsLayoutError
from acme_xr.manifest import Manifest
from acme_xr.storage import hdf5
from acme_xr.storage.values import to_variables


def scalar(i: int) -> float:
    return i * 1.5


def vector(i: int) -> np.ndarray:
    return np.arange(5.0) * i


def cube(i: int) -> np.ndarray:
    return np.arange(24.0).reshape(2, 3, 4) + i


def several(i: int) -> tuple[Any, Any, Any]:
    return np.full(3, i), i * 2, f"call-{i}"


def text(i: int) -> str:
    return "x" * (i + 1)


def dataarray(i: int) -> xr.DataArray:
    return xr.DataArray(
        np.arange(6.0).reshape(2, 3) + i, dims=("trial", "time"),
        coords={"time": [0.0, 0.1, 0.2], "trial": ["a", "b"]}, attrs={"units": "mV"},
    )


def dataset(i: int) -> xr.Dataset:
    return xr.Dataset(
        {"power": (("freq",), np.arange(4.0) * i), "peak": ((), float(i))},
        coords={"freq": [1.0, 2.0, 4.0, 8.0]}, attrs={"method": "fft"},
    )


def expected_values(func: Any, n: int) -> dict[str, np.ndarray]:
    """What the Dataset must hold, computed in this process."""
    out: dict[str, list[Any]] = {}
    for i in range(n):
        for v in to_variables(func(i)):
            out.setdefault(v.name, []).append(v.data)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("func", [scalar, vector, cube, several, text, dataarray, dataset])
def test_round_trip_against_memory_run(client: Any, tmp_path: Any, func: Any) -> None:
    n = 7
    run = tmp_path / "run"
    ParallelMap(func, list(range(n)), output_dir=str(run)).compute()
    memory = ParallelMap(func, list(range(n)), write_worker_results=False).compute()
    ds = open_results(run)
    assert ds.sizes["call"] == n
    assert ds.call.values.tolist() == list(range(n))
    assert (ds.status.values == "done").all()
    want: dict[str, list[Any]] = {}
    for value in memory:
        for v in to_variables(value):
            want.setdefault(v.name, []).append(v.data)
    assert sorted(ds.data_vars) == sorted(want)
    for name, values in want.items():
        got = ds[name]
        assert got.dims[0] == "call"
        assert got.chunks is not None  # dask-backed
        for i, value in enumerate(values):
            np.testing.assert_array_equal(got.isel(call=i).values, value)
    assert ds.attrs["acme_xr_function"] == func.__name__
    assert ds.attrs["n_done"] == n


def test_dataarray_dims_coords_attrs_survive(client: Any, tmp_path: Any) -> None:
    ParallelMap(dataarray, list(range(3)), output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    da = ds.result_0
    assert da.dims == ("call", "trial", "time")
    assert da.attrs == {"units": "mV"}
    assert ds.time.dims == ("time",) and ds.time.values.tolist() == [0.0, 0.1, 0.2]  # once
    assert ds.trial.values.tolist() == ["a", "b"]
    one = da.isel(call=2).drop_vars(["call", "status", "i"])  # i: the split argument
    xr.testing.assert_identical(one, dataarray(2).rename("result_0"))


def per_call_time(i: int) -> xr.DataArray:
    return xr.DataArray(np.ones(3) * i, dims="time", coords={"time": np.arange(3) + 10 * i})


def test_coordinates_that_differ_between_calls_go_along_call(client: Any, tmp_path: Any) -> None:
    ParallelMap(per_call_time, [0, 1, 2], output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    assert ds.time_per_call.dims == ("call", "time")
    np.testing.assert_array_equal(ds.time_per_call.values[2], [20, 21, 22])


def labelled(subject: str, alpha: float, data: Any) -> float:
    return alpha * float(np.sum(data))


def test_split_scalar_arguments_become_coordinates(client: Any, tmp_path: Any) -> None:
    ParallelMap(labelled, ["s01", "s02", "s03"], [0.5, 1.5, 2.5], np.ones((2, 2)),
                output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    assert ds.subject.dims == ("call",) and ds.subject.values.tolist() == ["s01", "s02", "s03"]
    assert ds.alpha.values.tolist() == [0.5, 1.5, 2.5]
    assert "data" not in ds.coords  # the 2-D array went whole to every call
    assert ds.result_0.sel(call=ds.subject == "s02").values.tolist() == [6.0]


def fails_on_3(i: int) -> tuple[np.ndarray, int, bool]:
    if i == 3:
        raise ValueError("no")
    return np.full(2, float(i)), i, i % 2 == 0


def test_failed_call_is_nan_and_listed(client: Any, tmp_path: Any) -> None:
    with pytest.raises(ComputeError):
        ParallelMap(fails_on_3, list(range(5)), output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    assert ds.status.values.tolist() == ["done", "done", "done", "failed", "done"]
    assert ds.attrs["failed_calls"] == [3] and ds.attrs["n_failed"] == 1
    r0 = ds.result_0.values
    assert np.isnan(r0[3]).all() and r0[4].tolist() == [4.0, 4.0]
    # integers and booleans keep their dtype; the gap is named by status and the mask
    assert ds.result_1.dtype == np.int64 and ds.result_2.dtype == bool
    assert ds.result_1.values.tolist()[:3] == [0, 1, 2] and ds.result_1.values[4] == 4
    assert ds.result_1_mask.values.tolist() == [False, False, False, True, False]
    assert ds.result_2_mask.values.tolist() == [False, False, False, True, False]
    assert "result_0_mask" not in ds  # floats show NaN
    as_float = open_results(tmp_path / "r", mask_integers=True)  # the user's explicit choice
    assert as_float.result_1.dtype == np.float64
    assert np.isnan(as_float.result_1.values[3]) and as_float.result_1.values[2] == 2


def test_opening_reads_only_the_manifest_and_a_vanished_payload_raises(
    client: Any, tmp_path: Any
) -> None:
    files = ParallelMap(vector, list(range(6)), output_dir=str(tmp_path / "r")).compute()
    os.remove(files[4])
    ds = open_results(tmp_path / "r")  # no payload opened: no error yet
    np.testing.assert_array_equal(ds.result_0.isel(call=1).values, vector(1))
    with pytest.raises(MissingPayloadError, match="vector_4.h5"):
        ds.result_0.load()
    for p in files[:4] + files[5:]:
        os.remove(p)
    open_results(tmp_path / "r")  # still opens from the manifest alone


def test_no_payload_stays_open(client: Any, tmp_path: Any) -> None:
    ParallelMap(vector, list(range(30)), output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    ds.result_0.mean("call").compute()
    assert not [f for f in psutil.Process().open_files() if f.path.endswith(".h5")]


def test_moved_directory_opens(client: Any, tmp_path: Any) -> None:
    ParallelMap(several, list(range(4)), output_dir=str(tmp_path / "r")).compute()
    shutil.move(tmp_path / "r", tmp_path / "moved")
    ds = open_results(tmp_path / "moved")
    assert ds.result_2.values.tolist() == [f"call-{i}" for i in range(4)]
    ds2 = open_results(tmp_path / "moved" / "several.h5")  # the container works as a path too
    assert ds2.sizes["call"] == 4


def test_xarray_engine_entry_point(client: Any, tmp_path: Any) -> None:
    ParallelMap(vector, list(range(3)), output_dir=str(tmp_path / "r")).compute()
    ds = xr.open_dataset(tmp_path / "r", engine="acme_xr")
    np.testing.assert_array_equal(ds.result_0.values, np.stack([vector(i) for i in range(3)]))
    assert "acme_xr" in xr.backends.list_engines()


def growing(i: int) -> np.ndarray:
    return np.arange(float(i + 1))


def test_ragged_results_are_padded_with_true_shapes(client: Any, tmp_path: Any) -> None:
    ParallelMap(growing, [0, 1, 2, 3], output_dir=str(tmp_path / "r")).compute()
    ds = open_results(tmp_path / "r")
    assert ds.result_0.shape == (4, 4)
    np.testing.assert_array_equal(ds.result_0.values[1], [0.0, 1.0, np.nan, np.nan])
    assert ds.result_0_shape.values.tolist() == [[1], [2], [3], [4]]
    # a slice along the padded axis reads the right parts
    np.testing.assert_array_equal(ds.result_0[:, 1:3].values[2], [1.0, 2.0])


def ndim_differs(i: int) -> np.ndarray:
    return np.zeros(3) if i < 2 else np.zeros((3, 3))


def test_different_number_of_dimensions_is_a_clear_error(client: Any, tmp_path: Any) -> None:
    ParallelMap(ndim_differs, [0, 1, 2], output_dir=str(tmp_path / "r")).compute()
    with pytest.raises(ResultsLayoutError, match=r"call 0 has shape \(3,\).*call 2 has shape \(3, 3\)"):
        open_results(tmp_path / "r")


def test_single_file_runs_open_the_same(client: Any, tmp_path: Any) -> None:
    ParallelMap(several, list(range(4)), single_file=True, output_dir=str(tmp_path / "a")).compute()
    ParallelMap(several, list(range(4)), output_dir=str(tmp_path / "b")).compute()
    a, b = open_results(tmp_path / "a"), open_results(tmp_path / "b")
    for name in b.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_single_file_with_result_shape_opens(client: Any, tmp_path: Any) -> None:
    ParallelMap(vector, list(range(4)), single_file=True, result_shape=(None, 5),
                output_dir=str(tmp_path / "a")).compute()
    ds = open_results(tmp_path / "a")
    np.testing.assert_array_equal(ds.result_0.values, np.stack([vector(i) for i in range(4)]))


def test_run_in_progress_opens(client: Any, tmp_path: Any) -> None:
    """A manifest written at the start (all pending) plus payloads that appeared since."""
    run = tmp_path / "r"
    ParallelMap(vector, list(range(6)), output_dir=str(run)).compute()
    m = Manifest.read(str(run))
    m.state = "running"
    for i in range(2, 6):  # the last flush knew of two calls
        m.forget(i)
    m.write(str(run))
    os.remove(run / "vector_5.h5")  # not written yet
    ds = open_results(run)
    assert ds.status.values.tolist() == ["done"] * 5 + ["pending"]
    np.testing.assert_array_equal(ds.result_0.values[4], vector(4))
    assert np.isnan(ds.result_0.values[5]).all()
    assert Manifest.read(str(run)).state == "running"  # untouched


def test_run_that_died_before_its_manifest_is_rebuilt_once(tmp_path: Any) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for i in (0, 1, 3):
        hdf5.write_payload(str(run / f"f_{i}.h5"), to_variables((np.full(2, i), f"s{i}")))
    ds = open_results(run)
    assert ds.status.values.tolist() == ["done", "done", "pending", "done"]
    assert ds.result_1.values.tolist()[:2] == ["s0", "s1"]
    assert (run / "manifest.json").exists()  # saved: the next open reads one file
    assert open_results(run).sizes["call"] == 4


def write_acme_run(root: Any, stem: str, n: int, values: Any, result_shape: bool = False) -> None:
    """A directory laid out as esi-acme 2026.6 writes it (payload subdirectory, links)."""
    payload = root / f"{stem}_payload"
    payload.mkdir(parents=True)
    for i in range(n):
        with h5py.File(payload / f"{stem}_{i}.h5", "w") as fh:  # ACME: no dimension scales
            for k, v in enumerate(values(i)):
                fh.create_dataset(f"result_{k}", data=v)
    with h5py.File(root / f"{stem}.h5", "w", libver="latest") as fh:
        if result_shape:
            layout = h5py.VirtualLayout(shape=(n, 3), dtype="f8")
            for i in range(n):
                layout[i] = h5py.VirtualSource(str(payload / f"{stem}_{i}.h5"), "result_0", shape=(3,))
            fh.create_virtual_dataset("result_0", layout)
        else:
            for i in range(n):
                fh[f"comp_{i}"] = h5py.ExternalLink(f"{stem}_payload/{stem}_{i}.h5", "/")


def test_runs_written_by_acme_open(tmp_path: Any) -> None:
    write_acme_run(tmp_path / "acme", "filt", 4, lambda i: (np.arange(3.0) + i, np.int64(i)))
    ds = open_results(tmp_path / "acme")
    assert ds.attrs["acme_xr_function"] == "filt"
    np.testing.assert_array_equal(ds.result_0.values, np.arange(3.0) + np.arange(4)[:, None])
    assert ds.result_1.values.tolist() == [0, 1, 2, 3]
    write_acme_run(tmp_path / "vds", "g", 3, lambda i: (np.full(3, float(i)),), result_shape=True)
    np.testing.assert_array_equal(open_results(tmp_path / "vds").result_0.values[:, 0], [0, 1, 2])


def test_acme_single_file_container_opens(tmp_path: Any) -> None:
    run = tmp_path / "acme"
    run.mkdir()
    with h5py.File(run / "f.h5", "w") as fh:  # ACME single_file=True
        for i in range(3):
            fh.create_dataset(f"comp_{i}/result_0", data=np.full(2, i))
    assert open_results(run).result_0.values.tolist() == [[0, 0], [1, 1], [2, 2]]


def test_not_a_run(tmp_path: Any) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ResultsLayoutError, match="holds no acme_xr or ACME run"):
        open_results(tmp_path)
    with pytest.raises(ResultsLayoutError, match="does not exist"):
        open_results(tmp_path / "missing")


# -- storage="zarr": one store, and the same Dataset as with HDF5 ------------------------

@pytest.mark.parametrize("func", [scalar, vector, cube, several, text, dataarray, dataset,
                                  per_call_time])
def test_zarr_run_opens_like_the_hdf5_run(client: Any, tmp_path: Any, func: Any) -> None:
    n = 9
    ParallelMap(func, list(range(n)), output_dir=str(tmp_path / "h5")).compute()
    with ParallelMap(func, list(range(n)), storage="zarr", output_dir=str(tmp_path / "z")) as pm:
        files = pm.compute()
    store = tmp_path / "z" / f"{func.__name__}.zarr"
    assert pm.results_container == str(store)
    assert files == [str(store)] * n  # every call ended up in the store
    assert not [p for p in os.listdir(tmp_path / "z") if p.endswith(".h5")]
    a, b = open_results(tmp_path / "h5"), open_results(tmp_path / "z")
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def test_zarr_store_has_one_chunk_per_call_and_opens_with_xarray(client: Any, tmp_path: Any) -> None:
    ParallelMap(dataarray, list(range(5)), storage="zarr", output_dir=str(tmp_path / "z")).compute()
    store = tmp_path / "z" / "dataarray.zarr"
    assert sorted(os.listdir(store / "result_0" / "c")) == [str(i) for i in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata is there: no fallback warning
        ds = xr.open_zarr(store)
    assert ds.result_0.dims == ("call", "trial", "time")
    assert ds.time.values.tolist() == [0.0, 0.1, 0.2]  # shared coordinates stored once
    np.testing.assert_array_equal(ds.result_0.values[3], dataarray(3).values)


def test_zarr_results_whose_shape_varies_stay_readable(client: Any, tmp_path: Any) -> None:
    ParallelMap(growing, [2, 2, 0, 3], storage="zarr", output_dir=str(tmp_path / "z")).compute()
    ds = open_results(tmp_path / "z")
    np.testing.assert_array_equal(ds.result_0.values[0], [0.0, 1.0, 2.0, np.nan])
    np.testing.assert_array_equal(ds.result_0.values[3], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ds.result_0.values[2], [0.0, np.nan, np.nan, np.nan])


def test_zarr_failed_call_is_nan(client: Any, tmp_path: Any) -> None:
    with pytest.raises(ComputeError):
        ParallelMap(fails_on_3, list(range(5)), storage="zarr", output_dir=str(tmp_path / "z")).compute()
    ds = open_results(tmp_path / "z")
    assert ds.status.values.tolist()[3] == "failed"
    assert np.isnan(ds.result_0.values[3]).all() and ds.result_0.values[4].tolist() == [4.0, 4.0]
