"""The per-call HDF5 backend's cheap paths (issue 12): what a plain value's fast path
writes and records is what the whole path writes and records, and a batch's resume check
finds exactly what is on disk with one directory listing."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr.errors import ResultShapeError
from acme_xr.inputs import distribute
from acme_xr.storage import hdf5, per_call
from acme_xr.storage.atomic import TMP_SUFFIX, remove_stale_temporaries
from acme_xr.storage.base import describe
from acme_xr.storage.checksums import checksum
from acme_xr.storage.per_call import HdfPayloads
from acme_xr.storage.values import to_variables
from acme_xr.worker import Runner, WriteSpec, split_values_for

# plain values of every kind the fast path takes: arrays of each numeric dtype (either
# byte order), NumPy scalars and Python numbers
KINDS = ["f8", "f4", "i8", "i2", "u1", "u8", "c16", "c8", ">f8", ">i4",
         "np.float32", "np.int64", "int", "float", "complex"]


def _plain(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    raw = rng.integers(-100, 100, size=shape)
    if kind in ("int", "float", "complex"):
        return {"int": int, "float": float, "complex": complex}[kind](raw.flat[0] if
                                                                      raw.size else 3)
    if kind.startswith("np."):
        return getattr(np, kind[3:])(raw.flat[0] if raw.size else 3)
    return (raw if kind[0] in "iu>" else raw / 7).astype(kind)


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(KINDS),
       shape=st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple),
       checksums=st.booleans(), seed=st.integers(0, 2**16))
def test_plain_values_are_written_and_recorded_as_the_whole_path_does(
        tmp_path_factory: Any, kind: str, shape: tuple[int, ...], checksums: bool,
        seed: int) -> None:
    hdf5._templates.clear()
    per_call._plain_meta.clear()
    rng = np.random.default_rng(seed)
    backend = HdfPayloads(output_dir=str(tmp_path_factory.mktemp("run")), stem="f",
                          checksums=checksums)
    values = [_plain(kind, shape, rng) for _ in range(4)]
    written = [backend.write_call(i, v, templates={}, warnings=[]) for i, v in
               enumerate(values)]
    for i, (value, w) in enumerate(zip(values, written, strict=True)):
        with open(backend.payload(i), "rb") as fh:
            data = fh.read()
        variables = to_variables(value)
        # the bytes HDF5 itself writes for these variables, and the same record
        assert data == hdf5._file_image(variables)
        assert w.fmt == "h5" and w.meta == describe(variables, {})
        assert w.sums is not None and w.sums.size == len(data)
        (offset, length, crc), = w.sums.variables
        assert data[offset:offset + length] == np.asarray(value).tobytes()
        if checksums:
            assert w.sums.file == checksum(data) and crc == checksum(np.asarray(value).tobytes())
        got = hdf5.read_payload(backend.payload(i))["result_0"]
        # (h5py reads a big-endian scalar as a native one: the same value)
        assert got.dtype.newbyteorder("=") == np.asarray(value).dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, np.asarray(value))
    # after the first call of a dtype and shape, the calls share one record object: a
    # batch's outcome pickles it once
    assert written[1].meta is written[2].meta is written[3].meta
    assert not [n for n in os.listdir(backend.output_dir) if n.endswith(TMP_SUFFIX)]


def test_result_shape_is_checked_for_every_shape(tmp_path: Any) -> None:
    per_call._plain_meta.clear()
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f", result_shape=(None, 4))
    for i in range(3):
        backend.write_call(i, np.full(4, float(i)), templates={}, warnings=[])
    with pytest.raises(ResultShapeError, match=r"shape \(5,\)"):
        backend.write_call(3, np.full(5, 3.0), templates={}, warnings=[])
    # the same dtype and shape in a run without result_shape is written
    free = HdfPayloads(output_dir=str(tmp_path), stem="g")
    assert free.write_call(0, np.full(5, 3.0), templates={}, warnings=[]).fmt == "h5"


def _full4(x: int) -> np.ndarray:
    return np.full(4, x)


def test_a_batch_outcome_carries_one_record_for_calls_alike(tmp_path: Any) -> None:
    per_call._plain_meta.clear()
    n = 300
    plan = distribute(_full4, (list(range(n)),), {})
    runner = Runner.from_plan(plan, WriteSpec("hdf5", directory=str(tmp_path), stem="f"))
    out = runner.run(list(range(n)), split_values_for(plan, range(n)))
    assert out.status == [1] * n
    assert len({id(m) for m in out.meta}) == 1
    # what travels back to the client per call: the sums, not the description again
    assert len(pickle.dumps(out, protocol=5)) < 70 * n
    for i in (0, 1, n - 1):
        np.testing.assert_array_equal(hdf5.read_payload(str(tmp_path / f"f_{i}.h5"))["result_0"],
                                      np.full(4, i))


def _on_disk(backend: HdfPayloads, tmp_path: Any) -> None:
    """Calls 0 (HDF5) and 2 (pickled) done, 3 left a temporary, 4 a damaged payload."""
    backend.prepare()
    backend.write_call(0, np.arange(3.0), templates={}, warnings=[])
    backend.write_call(2, {"not": "HDF5"}, templates={}, warnings=[])
    (tmp_path / f".f_3.h5.1-ab-0{TMP_SUFFIX}").write_bytes(b"killed while writing")
    (tmp_path / "f_4.h5").write_bytes(b"")


@pytest.mark.parametrize("listing", [True, False], ids=["one listing", "a stat per call"])
def test_the_resume_check_of_a_batch_finds_what_is_on_disk(tmp_path: Any, monkeypatch: Any,
                                                           listing: bool) -> None:
    monkeypatch.setattr(per_call, "_LIST_BYTES_PER_CALL", 2**40 if listing else 0)
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f")
    _on_disk(backend, tmp_path)
    found = backend.stored_batch(list(range(6)), {})
    assert [None if w is None else w.fmt for w in found] == ["h5", None, "pickle", None, None,
                                                             None]
    assert found == [backend.stored(i, {}) for i in range(6)]


def test_a_batch_of_new_calls_asks_the_file_system_once(tmp_path: Any, monkeypatch: Any) -> None:
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f")
    _on_disk(backend, tmp_path)
    asked: list[str] = []
    stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(os.fspath(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    found = backend.stored_batch(list(range(10, 200)), {})
    assert found == [None] * 190
    assert not [p for p in asked if p.endswith((".h5", ".pickle"))]


@pytest.mark.parametrize("files,new", [
    ([], True), (["f.log", "f.h5", "manifest.json", "g_0.h5"], True),
    (["f_3.h5"], False), (["f_3.pickle"], False), ([".f_3.h5.1-ab-0" + TMP_SUFFIX], True),
], ids=["empty", "no payload", "a payload", "a pickle", "a temporary"])
def test_a_new_run_is_told_by_its_payload_files(tmp_path: Any, files: list[str],
                                                new: bool) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    assert HdfPayloads(output_dir=str(tmp_path), stem="f").holds_no_results() is new
    assert HdfPayloads(output_dir=str(tmp_path / "gone"), stem="f").holds_no_results()


def test_a_first_batch_looks_for_nothing_and_its_rerun_finds_everything(
        tmp_path: Any, monkeypatch: Any) -> None:
    n = 40
    plan = distribute(_full4, (list(range(n)),), {})
    runner = Runner.from_plan(plan, WriteSpec("hdf5", directory=str(tmp_path), stem="f"))
    looked: list[str] = []
    stat, listdir = os.stat, os.listdir

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        looked.append(os.fspath(path))
        return stat(path, *args, **kwargs)

    def counting_listdir(path: Any = ".") -> Any:
        looked.append(os.fspath(path))
        return listdir(path)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "listdir", counting_listdir)
    first = runner.run(list(range(n)), split_values_for(plan, range(n)), first="task-1")
    assert first.attempts == [1] * n and looked == []
    monkeypatch.undo()
    # dask runs the same task again (its worker died): the calls done are not run again
    again = runner.run(list(range(n)), split_values_for(plan, range(n)), first="task-1")
    assert again.status == [1] * n and again.attempts == [0] * n
    assert again.meta == first.meta
    # the marker goes with the run's temporaries
    assert remove_stale_temporaries(str(tmp_path)) == 1


def test_a_plain_array_never_takes_the_payload_of_a_labelled_one(tmp_path: Any) -> None:
    import xarray as xr

    hdf5._templates.clear()
    per_call._plain_meta.clear()
    backend = HdfPayloads(output_dir=str(tmp_path), stem="f")
    # the same name, dims, dtype and shape: only the labels' attribute tells them apart
    labelled = xr.DataArray(np.arange(4.0), dims="result_0_dim_0")
    values = [labelled, labelled + 1, np.arange(4.0) + 2, np.arange(4.0) + 3]
    for i, value in enumerate(values):
        backend.write_call(i, value, templates={}, warnings=[])
        with open(backend.payload(i), "rb") as fh:
            assert fh.read() == hdf5._file_image(to_variables(value))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS),
       shape=st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple),
       seed=st.integers(0, 2**16))
def test_plain_values_are_staged_in_zarr_as_the_whole_path_does(
        tmp_path_factory: Any, kind: str, shape: tuple[int, ...], seed: int) -> None:
    """storage="zarr" stages a plain array like the last one without to_variables (issue
    12): the record and the values staged are those of the whole path, the values read
    back from the store are the values returned."""
    from acme_xr.storage.zarr import items_of
    from acme_xr.storage.zarr_batch import write_rows
    from acme_xr.storage.zarr_run import ZarrRun

    rng = np.random.default_rng(seed)
    values = [_plain(kind, shape, rng) for _ in range(5)]
    backend = ZarrRun(output_dir=str(tmp_path_factory.mktemp("run")), stem="f", n_calls=5)
    backend.prepare()
    backend.zarr.chunk = 5
    backend.zarr.ensure_arrays(describe(to_variables(values[0]), {}), templates={})
    staged = [backend.stage(i, v, templates={}, warnings=[]) for i, v in enumerate(values)]
    if backend.zarr.fits(to_variables(values[0])) is None:
        # zarr keeps no big-endian array: each such call is a payload file, as before
        assert np.dtype(kind).byteorder == ">" and [w.fmt for w, _ in staged] == ["h5"] * 5
        return
    for value, (written, items) in zip(values, staged, strict=True):
        variables = to_variables(value)
        assert written.fmt == "zarr" and written.meta == describe(variables, {})
        assert items is not None and list(items) == list(items_of(variables))
        np.testing.assert_array_equal(items["result_0"], variables[0].data)
        assert items["result_0"].dtype == variables[0].data.dtype
    # the calls after the first share one record object (pickled once per batch)
    assert staged[1][0].meta is staged[2][0].meta is staged[4][0].meta
    write_rows(backend.zarr, range(5), [(i, items) for i, (_, items) in enumerate(staged)])
    stored = np.asarray(backend.zarr.array("result_0")[:])
    for i, value in enumerate(values):
        np.testing.assert_array_equal(stored[i], np.asarray(value))


def test_zarr_stages_a_plain_array_unlike_the_last_one_the_whole_way(tmp_path: Any) -> None:
    """Only an array of the last one's dtype and shape skips the checks: another shape or
    dtype goes to a payload file, a labelled value of the same shape keeps its labels."""
    import xarray as xr

    from acme_xr.storage.zarr_run import ZarrRun

    backend = ZarrRun(output_dir=str(tmp_path), stem="f", n_calls=6)
    backend.prepare()
    backend.zarr.chunk = 6
    backend.zarr.ensure_arrays(describe(to_variables(np.zeros(4)), {}), templates={})
    values = [np.zeros(4), np.zeros(5), np.zeros(4, np.float32),
              xr.DataArray(np.ones(4), dims="result_0_dim_0", attrs={"units": "V"}),
              np.full(4, 2.0), np.full(4, 3.0)]
    staged = [backend.stage(i, v, templates={}, warnings=[]) for i, v in enumerate(values)]
    assert [w.fmt for w, _ in staged] == ["zarr", "h5", "h5", "zarr", "zarr", "zarr"]
    assert [items is None for _, items in staged] == [False, True, True, False, False, False]
    labelled = staged[3][0].meta
    assert labelled == describe(to_variables(values[3]), {}) and labelled != staged[4][0].meta
    assert staged[4][0].meta == staged[0][0].meta == describe(to_variables(values[4]), {})
    with pytest.raises(ResultShapeError):
        ZarrRun(output_dir=str(tmp_path / "b"), stem="f", n_calls=1,
                result_shape=(None, 4)).stage(0, np.zeros(5), templates={}, warnings=[])


@settings(max_examples=40, deadline=None)
@given(outcomes=st.lists(st.sampled_from(["h5", "pickle", "zarr", "failed", "not run"]),
                         max_size=40),
       backend_name=st.sampled_from(["hdf5", "pickle", "zarr"]))
def test_the_files_of_a_run_are_built_at_once_as_one_by_one(
        tmp_path_factory: Any, outcomes: list[str], backend_name: str) -> None:
    """compute()'s list of files (and the container's links) come from whole columns, not a
    look-up per call: the same paths file_of gives call by call, for every outcome."""
    from acme_xr.manifest import DONE, FAILED, Manifest
    from acme_xr.storage.base import StorageBackend
    from acme_xr.storage.registry import backend_class

    manifest = Manifest.new(len(outcomes), {"func": {"name": "f"}})
    for i, outcome in enumerate(outcomes):
        if outcome in ("h5", "pickle", "zarr"):
            manifest.status[i], manifest.fmt[i] = DONE, outcome
        elif outcome == "failed":
            manifest.status[i] = FAILED
    directory = str(tmp_path_factory.mktemp("run"))
    backend = backend_class(backend_name)(output_dir=directory, stem="f_{x}",
                                          n_calls=len(outcomes))
    one_by_one = [backend.file_of(manifest, i) for i in range(len(outcomes))]
    assert backend.results(manifest) == one_by_one
    base = [StorageBackend.file_of(backend, manifest, i) for i in range(len(outcomes))]
    assert backend.payload_files(manifest, range(len(outcomes))) == base
    before, after = backend.payload_template("pickle", directory=False)
    assert [f"{before}{i}{after}" for i in range(3)] == [
        os.path.basename(backend.payload(i, "pickle")) for i in range(3)]
