"""ParallelMap end to end on a real LocalCluster, checked against the files on disk."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from typing import Any

import h5py
import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError, RunExistsError, StorageError
from acme_xr.manifest import Manifest
from acme_xr.storage.hdf5 import read_payload

from .conftest import listing


def this_func(a: Any, b: Any, c: Any) -> tuple[Any, Any, Any]:
    # the specification's example: three return values per call
    return a * 10.0, np.full((2, 3), b + a), np.arange(c) + a


def expected(i: int) -> tuple[Any, Any, Any]:
    return this_func(i, 7, 4)


def test_specification_example_50_files(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "run"
    with ParallelMap(this_func, list(range(50)), 7, c=4, output_dir=str(out)) as pmap:
        files = pmap.compute()
    assert files == [str(out / f"this_func_{i}.h5") for i in range(50)]
    payloads = sorted(p for p in os.listdir(out) if p.startswith("this_func_"))
    assert payloads == sorted(f"this_func_{i}.h5" for i in range(50))
    for i, path in enumerate(files):
        data = read_payload(path)
        assert list(data) == ["result_0", "result_1", "result_2"]
        for k, value in enumerate(expected(i)):
            np.testing.assert_array_equal(data[f"result_{k}"], value)
    assert pmap.results_container == str(out / "this_func.h5")
    assert sorted(os.listdir(out)) == sorted(
        payloads + ["this_func.h5", "this_func.log", "manifest.calls", "manifest.json",
                    "acme_xr_call.pkl"])


def test_single_return_gives_only_result_0(client: Any, tmp_path: Any) -> None:
    files = ParallelMap(np.sqrt, [1.0, 4.0, 9.0], output_dir=str(tmp_path / "r")).compute()
    for path, want in zip(files, [1.0, 2.0, 3.0], strict=True):
        with h5py.File(path) as fh:
            assert list(fh) == ["result_0"]
            assert fh["result_0"].shape == ()
            assert fh["result_0"][()] == want


def test_payload_opens_labelled_with_open_payload(client: Any, tmp_path: Any) -> None:
    # payloads hold only the spec's result_<k> datasets (issue 10), so netCDF readers see no
    # dimension names: open_payload restores them
    from acme_xr import open_payload

    files = ParallelMap(this_func, [1, 2], 7, 4, output_dir=str(tmp_path / "r")).compute()
    ds = open_payload(files[1])
    assert ds.result_1.dims == ("result_1_dim_0", "result_1_dim_1")
    np.testing.assert_array_equal(ds.result_2.values, np.arange(4) + 2)


def test_container_links_every_call(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with ParallelMap(this_func, list(range(5)), 7, 4, output_dir=str(out)) as pmap:
        pmap.compute()
    with h5py.File(pmap.results_container) as fh:
        assert sorted(fh) == [f"comp_{i}" for i in range(5)]
        link = fh.get("comp_3", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "this_func_3.h5"
        np.testing.assert_array_equal(fh["comp_3/result_2"][()], np.arange(4) + 3)


def test_memory_mode_equals_disk_mode(client: Any, tmp_path: Any) -> None:
    args = (list(range(12)), 7, 4)
    values = ParallelMap(this_func, *args, write_worker_results=False).compute()
    files = ParallelMap(this_func, *args, output_dir=str(tmp_path / "r")).compute()
    assert len(values) == len(files) == 12
    for value, path in zip(values, files, strict=True):
        on_disk = read_payload(path)
        for k, v in enumerate(value):
            np.testing.assert_array_equal(on_disk[f"result_{k}"], v)
    assert os.listdir(tmp_path) == ["r"]  # memory mode wrote nothing


def row(i: Any) -> np.ndarray:
    return np.arange(4.0) + 10 * i


def test_result_shape_virtual_dataset_survives_a_move(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with ParallelMap(row, list(range(6)), result_shape=(None, 4), output_dir=str(out)) as pmap:
        pmap.compute()
    want = np.stack([row(i) for i in range(6)])
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(str(out), str(moved))
    os.chdir(tmp_path / "elsewhere")  # relative sources must not depend on the cwd
    with h5py.File(moved / "row.h5") as fh:
        np.testing.assert_array_equal(fh["result_0"][()], want)
        np.testing.assert_array_equal(fh["comp_5/result_0"][()], row(5))
        assert all(not os.path.isabs(s.file_name) for s in fh["result_0"].virtual_sources())
    # memory mode stacks the same array
    stacked = ParallelMap(row, list(range(6)), result_shape=(None, 4),
                          write_worker_results=False).compute()
    np.testing.assert_array_equal(stacked, want)


def ragged(i: Any) -> np.ndarray:
    return np.arange(i + 1, dtype=float)


def test_result_shape_with_unlimited_axis(client: Any, tmp_path: Any) -> None:
    with ParallelMap(ragged, [0, 1, 2], result_shape=(None, np.inf),
                     output_dir=str(tmp_path / "r")) as pmap:
        pmap.compute()
    with h5py.File(pmap.results_container) as fh:
        data = fh["result_0"][()]
    assert data.shape == (3, 3)
    np.testing.assert_array_equal(data[2], [0, 1, 2])
    np.testing.assert_array_equal(data[1, :2], [0, 1])


def test_wrong_result_shape_fails_the_call(client: Any, tmp_path: Any) -> None:
    with pytest.raises(ComputeError, match=r"result_0 has shape \(4,\)"):
        ParallelMap(row, [1, 2], result_shape=(None, 5), output_dir=str(tmp_path / "r")).compute()


def test_single_file(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with ParallelMap(this_func, list(range(8)), 7, 4, single_file=True, output_dir=str(out)) as pmap:
        files = pmap.compute()
    assert files == [str(out / "this_func.h5")]
    assert sorted(os.listdir(out)) == ["acme_xr_call.pkl", "manifest.calls", "manifest.json",
                                       "this_func.h5",
                                       "this_func.log"]
    with h5py.File(files[0]) as fh:
        assert sorted(fh) == sorted(f"comp_{i}" for i in range(8))
        for i in range(8):
            for k, value in enumerate(expected(i)):
                np.testing.assert_array_equal(fh[f"comp_{i}/result_{k}"][()], value)
    from acme_xr import open_payload

    ds = open_payload(files[0], group="comp_3")
    assert ds.result_1.dims == ("result_1_dim_0", "result_1_dim_1")


def test_single_file_with_result_shape(client: Any, tmp_path: Any) -> None:
    with ParallelMap(row, list(range(5)), single_file=True, result_shape=(None, 4),
                     output_dir=str(tmp_path / "r")) as pmap:
        pmap.compute()
    with h5py.File(pmap.results_container) as fh:
        np.testing.assert_array_equal(fh["result_0"][()], np.stack([row(i) for i in range(5)]))


def test_write_pickle(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with ParallelMap(this_func, [1, 2, 3], 7, 4, write_pickle=True, output_dir=str(out)) as pmap:
        files = pmap.compute()
    assert files == [str(out / f"this_func_{i}.pickle") for i in range(3)]
    assert pmap.results_container is None
    with open(files[2], "rb") as fh:
        value = pickle.load(fh)
    for got, want in zip(value, expected(3), strict=True):
        np.testing.assert_array_equal(got, want)


def odd(i: int) -> Any:
    return {"call": i} if i % 2 else np.float64(i)


def test_values_hdf5_cannot_hold_are_pickled_with_a_warning(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with pytest.warns(UserWarning, match="pickled"):
        files = ParallelMap(odd, list(range(4)), output_dir=str(out)).compute()
    assert [os.path.basename(f) for f in files] == ["odd_0.h5", "odd_1.pickle", "odd_2.h5", "odd_3.pickle"]
    with open(files[3], "rb") as fh:
        assert pickle.load(fh) == [{"call": 3}]  # ACME's emergency pickle: [value]
    with h5py.File(out / "odd.h5") as fh:
        assert sorted(fh) == ["comp_0", "comp_2"]  # no dangling links


def test_compute_without_with_returns_results(client: Any, tmp_path: Any) -> None:
    values = ParallelMap(this_func, [1, 2], 7, 4, write_worker_results=False).compute()
    np.testing.assert_array_equal(values[1][1], np.full((2, 3), 9))
    pmap = ParallelMap(this_func, [1, 2], 7, 4, write_worker_results=False)
    pmap.compute()
    assert pmap.results_container is None and pmap.output_dir is None


def test_construction_does_nothing(tmp_path: Any) -> None:
    pmap = ParallelMap(this_func, list(range(5)), 7, 4)
    assert os.listdir(tmp_path) == []
    assert pmap.n_inputs == 5


def test_default_output_dir_is_timestamped_in_cwd(client: Any, tmp_path: Any) -> None:
    files = ParallelMap(this_func, [1, 2], 7, 4).compute()
    (name,) = os.listdir(tmp_path)
    assert name.startswith("ACME_") and len(name) == len("ACME_YYYYMMDD-hhmmss-ffffff")
    assert os.path.dirname(files[0]) == str(tmp_path / name)


def test_existing_output_dir_is_never_overwritten(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    ParallelMap(this_func, [1, 2], 7, 4, output_dir=str(out)).compute()
    before = {p: os.path.getmtime(out / p) for p in os.listdir(out)}
    with pytest.raises(RunExistsError, match="resume=True"):
        ParallelMap(this_func, [5, 6], 7, 4, output_dir=str(out)).compute()
    assert {p: os.path.getmtime(out / p) for p in os.listdir(out)} == before


def test_empty_existing_output_dir_is_used(client: Any, tmp_path: Any) -> None:
    files = ParallelMap(this_func, [1, 2], 7, 4, output_dir=str(tmp_path)).compute()
    assert os.path.dirname(files[0]) == str(tmp_path)


def test_output_dir_that_cannot_be_created(client: Any, tmp_path: Any) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=str(blocker)):
        ParallelMap(this_func, [1, 2], 7, 4, output_dir=str(blocker / "run")).compute()
    with pytest.raises(StorageError, match="not a directory"):
        ParallelMap(this_func, [1, 2], 7, 4, output_dir=str(blocker)).compute()
    assert os.listdir(tmp_path) == ["a_file"]


def test_manifest_records_every_call(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    ParallelMap(this_func, list(range(10)), 7, 4, output_dir=str(out)).compute()
    with open(out / "manifest.json") as fh:
        m = json.load(fh)
    assert m["n_inputs"] == 10 and m["state"] == "complete"
    assert m["func"]["name"] == "this_func"
    run = Manifest.read(str(out))
    assert run.status.tolist() == [1] * 10
    assert (run.duration >= 0).all()  # NaN (not run) fails too
    assert list(run.variables["result_1"].shapes) == [(2, 3)] * 10
    assert m["variables"]["result_0"]["dtype"] == "<f8"
    assert m["variables"]["result_2"]["dtype"] == np.dtype(int).str
    assert run.header["coords"]["a"]["values"].tolist() == list(range(10))
    log = (out / "this_func.log").read_text()
    assert "running 10 calls of this_func" in log and log[:4].isdigit()  # timestamped


def boom(i: int) -> float:
    if i == 3:
        raise ValueError(f"bad input {i}")
    return float(i)


def test_debug_runs_in_this_thread_and_raises_the_users_error(tmp_path: Any) -> None:
    import threading

    seen = []

    def where(i: int) -> str:
        seen.append(threading.current_thread().name)
        return "x"

    ParallelMap(where, [1, 2, 3], write_worker_results=False).compute(debug=True)
    assert seen == [threading.current_thread().name] * 3
    with pytest.raises(ValueError, match="bad input 3") as info:
        ParallelMap(boom, list(range(5)), output_dir=str(tmp_path / "r")).compute(debug=True)
    assert not isinstance(info.value, ComputeError)  # the user's own exception
    assert os.path.exists(tmp_path / "r" / "boom_2.h5")  # what ran before is kept


def test_failed_call_is_reported_and_the_rest_kept(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    with pytest.raises(ComputeError) as info:
        ParallelMap(boom, list(range(6)), output_dir=str(out)).compute()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert list(err.failed) == [3] and "ValueError" in str(err) and "bad input 3" in str(err)
    assert "manifest" in str(err) and "Traceback" in str(err)
    assert sorted(os.path.basename(p) for p in err.results if p) == sorted(
        f"boom_{i}.h5" for i in (0, 1, 2, 4, 5))
    assert not (out / "boom_3.h5").exists()


def test_dryrun_writes_nothing_then_proceeds(client: Any, tmp_path: Any, capsys: Any) -> None:
    files = ParallelMap(this_func, [1, 2, 3], 7, 4, dryrun=True, output_dir=str(tmp_path / "r")).compute()
    assert len(files) == 3
    out = capsys.readouterr().out
    assert "dry run of call" in out and "peak memory" in out


def test_no_temporary_files_are_left(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "r"
    ParallelMap(this_func, list(range(20)), 7, 4, output_dir=str(out)).compute()
    assert not [p for p in listing(out) if "tmp" in p]


# ACME's README / user guide examples, verbatim apart from the import.
def f(x: Any, y: Any, z: Any = 3) -> Any:
    return (x + y) * z


def g(x: Any, y: Any) -> Any:
    return x * sum(y)


@pytest.mark.parametrize("func, args, kwargs, want", [
    (f, ([2, 4, 6, 8], 4), {}, [18, 24, 30, 36]),
    (g, ([2, 4, 6, 8], [2, 2]), {"n_inputs": 4}, [8, 16, 24, 32]),
    (f, ([2, 4, 6, 8], 4), {"z": [1, 2, 3, 4]}, [6, 16, 30, 48]),
    (f, ([2, 4, 6, 8],), {"y": 4}, [18, 24, 30, 36]),
    (f, (2, 4), {"z": 3, "n_inputs": 3}, [18, 18, 18]),
])
def test_acme_examples(client: Any, func: Any, args: Any, kwargs: Any, want: Any) -> None:
    with ParallelMap(func, *args, write_worker_results=False, **kwargs) as pmap:
        results = pmap.compute()
    assert results == want
