"""The backend contract: every registered storage backend, driven through the interface of
:mod:`acme_xr.storage.base` directly (like zarr-python's ``StoreTests``).

Each test runs once per name in the registry, so a new backend (e.g. the test-only one of
tests/example_backend.py) is held to the same contract without an edit here: write a batch
of calls, describe them, see the records on the client, finalize, read the values back with
the readers of :func:`acme_xr.open_results`, rebuild the same manifest records by scanning,
and find on a resume what is stored. Real files, no mocks.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest

from acme_xr import open_results
from acme_xr.errors import InputError
from acme_xr.manifest import DONE, MANIFEST_NAME, PENDING, STATUS_NAMES, Manifest
from acme_xr.options import validate_options
from acme_xr.scan import load_manifest
from acme_xr.storage import pickled
from acme_xr.storage.base import StorageBackend, Written, payload_name
from acme_xr.storage.registry import backend_class, names, register, unregister
from acme_xr.worker import FAILED, NOT_RUN, OK

from .. import example_backend

N_CALLS = 4  # the last call is never written: a gap
BATCHES = ([0, 1], [2])
# backends whose readers are open_results; the others keep each call's value as written
_PICKLES = {"pickle"}


def value(i: int) -> tuple[np.ndarray, np.int32]:
    return np.arange(3.0) + 10 * i, np.int32(-i)


def _backend(name: str, run: str) -> StorageBackend:
    return backend_class(name)(output_dir=run, stem="f", n_calls=N_CALLS, checksums=True)


def _header(backend: StorageBackend) -> dict[str, Any]:
    return {"acme_xr_version": "test", "func": {"name": backend.stem}, "coords": {},
            "storage": backend.name, "source": "acme_xr", **backend.locations()}


def _write(backend: StorageBackend) -> tuple[Manifest, list[list[Written]]]:
    """prepare, then each batch as a worker writes it and the client collects it."""
    backend.prepare()
    manifest = Manifest.new(N_CALLS, _header(backend))
    written = []
    for batch in BATCHES:
        records = backend.write_batch([(i, value(i)) for i in batch],
                                      manifest.coord_templates, warnings=[])
        for i, rec in zip(batch, records, strict=True):
            manifest.record_done(i, rec.fmt, rec.meta, "here", rec.sums)
        backend.collected(records, manifest)
        written.append(records)
    return manifest, written


def _on_disk(name: str) -> None:
    if not backend_class(name).on_disk:
        pytest.skip(f"the {name!r} backend keeps nothing on disk: no files to read, scan "
                    "or resume from")


def _described(meta: Any) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    return [(m[0], tuple(m[1]), np.dtype(m[2])) for m in meta]


@pytest.fixture(params=names())
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_registry_holds_the_test_only_backend() -> None:
    assert example_backend.SubdirPayloads.name in names()
    assert backend_class("subdir") is example_backend.SubdirPayloads
    assert set(names()) >= {"hdf5", "single_file", "pickle", "zarr", "memory"}


def test_write_batch_gives_one_record_per_call(name: str, tmp_path: Any) -> None:
    backend = _backend(name, str(tmp_path / "run"))
    _, written = _write(backend)
    for batch, records in zip(BATCHES, written, strict=True):
        assert len(records) == len(batch)
        for rec in records:
            assert isinstance(rec, Written) and rec.fmt is not None
            if rec.fmt in ("h5", "zarr"):  # described variable by variable
                assert _described(rec.meta) == [("result_0", (3,), np.dtype("f8")),
                                                ("result_1", (), np.dtype("i4"))]
            if rec.fmt in ("h5", "pickle"):  # a file of its own: its sums are recorded
                assert rec.sums is not None and rec.sums.size > 0


def _finished(name: str, tmp_path: Any) -> tuple[str, StorageBackend, Manifest]:
    """A run of ``name`` written and finalized, its manifest not saved."""
    _on_disk(name)
    run = str(tmp_path / "run")
    backend = _backend(name, run)
    manifest, _ = _write(backend)
    backend.finalize(manifest)
    return run, backend, manifest


def test_readers_give_back_the_values(name: str, tmp_path: Any) -> None:
    run, backend, manifest = _finished(name, tmp_path)
    manifest.write(run)
    done = [i for batch in BATCHES for i in batch]
    for i in range(N_CALLS):  # every call done has a file, a pending one none
        path = backend.file_of(manifest, i)
        assert (path is not None and os.path.exists(path)) == (i in done)
    if name in _PICKLES:
        for i in done:
            got = pickled.read_pickle(backend.file_of(manifest, i))  # type: ignore[arg-type]
            np.testing.assert_array_equal(got[0], value(i)[0])
            assert got[1] == value(i)[1]
        return
    ds = open_results(run).load()
    assert ds.status.values.tolist() == ["done"] * len(done) + ["pending"]
    for i in done:
        np.testing.assert_array_equal(ds.result_0.values[i], value(i)[0])
        assert ds.result_1.values[i] == value(i)[1]
    assert np.isnan(ds.result_0.values[N_CALLS - 1]).all()
    assert ds.result_1.dtype == np.int32 and bool(ds.result_1_mask.values[N_CALLS - 1])


def test_scan_rebuilds_the_same_records(name: str, tmp_path: Any) -> None:
    run, _, manifest = _finished(name, tmp_path)
    assert not os.path.exists(os.path.join(run, MANIFEST_NAME))
    rebuilt = load_manifest(run, save=False)
    # calls after the last one written leave no trace in files: the rebuilt run may end there
    n = rebuilt.n_inputs
    assert max(i for batch in BATCHES for i in batch) < n <= N_CALLS
    assert rebuilt.header["storage"] == name
    assert rebuilt.status.tolist() == manifest.status[:n].tolist()
    assert list(rebuilt.fmt) == list(manifest.fmt[:n])
    assert set(rebuilt.variables) == set(manifest.variables)
    for var, rec in manifest.variables.items():
        assert rebuilt.variables[var].dtype == rec.dtype
        assert list(rebuilt.variables[var].shapes) == list(rec.shapes[:n])


def test_resume_sees_what_is_stored(name: str, tmp_path: Any) -> None:
    _on_disk(name)
    backend = _backend(name, str(tmp_path / "run"))
    _, written = _write(backend)
    # what a worker of a resumed run gets: a copy of the client's backend
    shipped = pickle.loads(pickle.dumps(backend))
    for batch, records in zip(BATCHES, written, strict=True):
        for i, rec in zip(batch, records, strict=True):
            found = shipped.stored(i, {})
            assert found is not None and found.fmt == rec.fmt, (i, found, rec)
            if rec.meta is not None:
                # the order of the variables is not part of the record (keyed by name)
                assert sorted(_described(found.meta)) == sorted(_described(rec.meta))
    assert shipped.stored(N_CALLS - 1, {}) is None


def test_a_damaged_payload_is_not_stored(name: str, tmp_path: Any) -> None:
    _on_disk(name)
    backend = _backend(name, str(tmp_path / "run"))
    _, written = _write(backend)
    if written[0][0].fmt != "h5":
        pytest.skip(f"the {name!r} backend keeps call 0 as {written[0][0].fmt!r}, not as an "
                    "HDF5 payload file")
    with open(backend.payload(0), "wb"):  # emptied: HDF5 cannot read it
        pass
    assert backend.stored(0, {}) is None


def test_memory_keeps_nothing(tmp_path: Any) -> None:
    backend = backend_class("memory")()
    assert not backend.on_disk
    assert backend.write_call(0, value(0), {}, []) == Written("memory")
    assert backend.stored(0, {}) is None
    assert not os.listdir(tmp_path)


def test_storage_accepts_every_registered_backend_on_disk() -> None:
    assert validate_options(storage="subdir").storage == "subdir"
    with pytest.raises(InputError, match=r"storage='nowhere' is not valid: give one of .*"
                                         r"'subdir'"):
        validate_options(storage="nowhere")
    with pytest.raises(InputError, match="storage='subdir' already writes its own layout"):
        validate_options(storage="subdir", single_file=True)


def test_register_refuses_a_built_in_name() -> None:
    class Clash(example_backend.SubdirPayloads):
        name = "hdf5"

    with pytest.raises(ValueError, match="'hdf5' .* is empty or a built-in one"):
        register(Clash)


def test_a_registered_backend_can_be_removed() -> None:
    class Extra(example_backend.SubdirPayloads):
        name = "extra_for_this_test"

    register(Extra)
    try:
        assert backend_class("extra_for_this_test") is Extra
    finally:
        unregister("extra_for_this_test")
    with pytest.raises(InputError, match="'extra_for_this_test' is not a storage backend"):
        backend_class("extra_for_this_test")


def test_status_codes_and_names_live_in_the_manifest() -> None:
    # the worker's codes are the manifest's (one place): a batch outcome is a manifest status
    assert (NOT_RUN, OK, FAILED) == (PENDING, DONE, 2)
    assert STATUS_NAMES[OK] == "done" and STATUS_NAMES[NOT_RUN] == "pending"
    assert STATUS_NAMES[FAILED] == "failed"


def test_payload_names_are_spelt_in_one_place(tmp_path: Any) -> None:
    for name in ("hdf5", "single_file", "zarr", "pickle"):
        backend = _backend(name, str(tmp_path))
        assert os.path.basename(backend.payload(7)) == payload_name("f", 7) == "f_7.h5"
        assert os.path.basename(backend.payload(7, "pickle")) == "f_7.pickle"


def test_a_run_of_pickles_is_rebuilt_with_every_call(tmp_path: Any) -> None:
    # an end-to-end run: its manifest lost, the scan finds every pickled call again
    from acme_xr import ParallelMap

    run = str(tmp_path / "run")
    ParallelMap(abs, [-1, -2, -3], output_dir=run, write_pickle=True, verbose=False,
                ).compute(debug=True)
    os.remove(os.path.join(run, MANIFEST_NAME))
    rebuilt = load_manifest(run, save=False)
    assert rebuilt.header["storage"] == "pickle"
    assert rebuilt.status.tolist() == [DONE] * 3 and list(rebuilt.fmt) == ["pickle"] * 3


def test_the_developer_page_shows_the_backend_the_tests_run() -> None:
    # the docs' example is the module the contract suites register, word for word
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "example_backend.py")) as fh:
        code = fh.read()
    with open(os.path.join(os.path.dirname(here), "docs", "developer.md")) as fh:
        page = fh.read()
    assert code[code.index("from __future__"):] in page
    with open(os.path.join(os.path.dirname(here), "docs", "index.md")) as fh:
        assert "(developer.md)" in fh.read()
