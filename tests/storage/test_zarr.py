"""The zarr store of storage="zarr": chunks per call, staging, resume."""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import xarray as xr

from acme_xr import ParallelMap, open_results
from acme_xr.manifest import Manifest
from acme_xr.storage import hdf5
from acme_xr.storage.values import to_variables
from acme_xr.storage.zarr import ZarrStore

META = (("result_0", (3,), "<f8", ("result_0_dim_0",), None, None),)


def test_only_fitting_calls_go_into_the_store(tmp_path: Any) -> None:
    store = ZarrStore(str(tmp_path / "f.zarr"), n_calls=4)
    store.create()
    assert not store.write(0, to_variables(np.zeros(3)))  # no array yet
    store.ensure_arrays(META, templates={})
    assert store.write(0, to_variables(np.ones(3)))
    assert not store.write(1, to_variables(np.ones(4)))  # another shape
    assert not store.write(1, to_variables(np.ones(3, dtype=np.int32)))  # another dtype
    assert store.has_call(0, ["result_0"]) and not store.has_call(1, ["result_0"])
    assert store.stored_call(0) == (("result_0", (3,), "<f8", ("result_0_dim_0",), None, None),)
    assert store.stored_call(1) is None


def test_staged_payloads_are_absorbed_when_they_fit(tmp_path: Any) -> None:
    store = ZarrStore(str(tmp_path / "f.zarr"), n_calls=3)
    store.create()
    store.ensure_arrays(META, templates={})
    for i, n in ((0, 3), (1, 5)):
        hdf5.write_payload(str(tmp_path / f"f_{i}.h5"), to_variables(np.full(n, float(i))))
    moved = store.absorb([(0, str(tmp_path / "f_0.h5")), (1, str(tmp_path / "f_1.h5"))])
    assert moved == [0]
    assert not (tmp_path / "f_0.h5").exists() and (tmp_path / "f_1.h5").exists()
    assert store.array("result_0")[0].tolist() == [0.0, 0.0, 0.0]


def test_half_written_chunks_are_removed(tmp_path: Any) -> None:
    store = ZarrStore(str(tmp_path / "f.zarr"), n_calls=3)
    store.create()
    store.ensure_arrays(META, templates={})
    (tmp_path / "f.zarr" / "result_0" / "c").mkdir(parents=True)
    (tmp_path / "f.zarr" / "result_0" / "c" / "2.abc.partial").write_bytes(b"half")
    assert store.remove_partials() == 1


def vec(i: int) -> np.ndarray:
    return np.arange(4.0) + i


def test_resume_runs_only_the_calls_missing_from_the_store(client: Any, tmp_path: Any) -> None:
    run = tmp_path / "z"
    ParallelMap(vec, list(range(8)), storage="zarr", output_dir=str(run)).compute()
    # as if the run had been interrupted: calls 5-7 never finished, 3-4 finished unrecorded
    for i in (5, 6, 7):
        shutil.rmtree(run / "vec.zarr" / "result_0" / "c" / str(i))
    m = Manifest.read(str(run))
    for i in range(3, 8):
        m.forget(i)
    m.state = "interrupted"
    m.write(str(run))
    ParallelMap(vec, list(range(8)), storage="zarr", output_dir=str(run), resume=True).compute()
    m = Manifest.read(str(run))
    assert m.attempts[3:5].tolist() == [1, 1]  # found in the store, not run again
    assert list(m.fmt) == ["zarr"] * 8 and m.state == "complete"
    ds = open_results(run)
    np.testing.assert_array_equal(ds.result_0.values, np.stack([vec(i) for i in range(8)]))
    with xr.open_zarr(run / "vec.zarr") as z:
        assert z.result_0.shape == (8, 4)
    assert not [p for p in os.listdir(run) if p.endswith(".h5")]


def test_a_value_equal_to_the_fill_value_still_marks_its_call_done(tmp_path: Any) -> None:
    # integers fill with 0: a call returning 0 must still write its chunk, or the store
    # would not know the call is done (resume would run it again)
    store = ZarrStore(str(tmp_path / "f.zarr"), n_calls=2)
    store.create()
    store.ensure_arrays((("result_0", (), "<i8", (), None, None),), templates={})
    assert store.write(0, to_variables(np.int64(0)))
    assert store.has_call(0, ["result_0"])
    assert store.stored_call(0) is not None
