"""Byte ranges in the outcome record (issue 11, point 2).

Every variable whose data sits contiguous and unfiltered in its payload gets its (offset,
length) recorded, with or without checksums, and :meth:`VarRecord.range` says what the bytes
there are: the dtype the payload stores for that call, which may differ from the run's
decoded dtype. What the tests compare with is the file itself, through h5py.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import dask
import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap, open_results
from acme_xr.manifest import Manifest, VarRecord
from acme_xr.manifest_json import from_json, to_json
from acme_xr.storage import hdf5
from acme_xr.storage.ranges import read_counts, stored_dtype
from acme_xr.storage.values import to_variables

from .test_contract import _DTYPES, Returns, _array

DATA = os.path.join(os.path.dirname(__file__), "data", "runs")


def write_run(values: list[Any], out: str, checksums: bool = True) -> Manifest:
    """Run ``values`` (call i returns values[i]) in this process; the run's manifest."""
    with dask.config.set({"acme_xr.payload.checksums": checksums}):
        ParallelMap(Returns(values, None), list(range(len(values))), output_dir=out,
                    verbose=False).compute(debug=True)
    return Manifest.read(out)


def stored_bytes_agree(out: str, m: Manifest) -> int:
    """Check every recorded range against h5py's view of the file; count the ranges."""
    n = 0
    for name, rec in m.variables.items():
        for i in range(m.n_inputs):
            found = rec.range(i)
            if found is None:
                continue
            offset, length, dtype = found
            path = os.path.join(out, m.header["payload"].format(i=i))
            with h5py.File(path, "r") as fh:
                ds = hdf5.find_dataset(fh, name)
                want = ds[()]
                # the bytes' dtype is the stored one, byte order included
                assert dtype.str == ds.dtype.str, (name, i)
            with open(path, "rb") as fh:
                fh.seek(offset)
                raw = fh.read(length)
            got = np.frombuffer(raw, dtype).reshape(rec.shapes[i])  # type: ignore[arg-type]
            assert got.tobytes() == np.asarray(want, dtype).tobytes(), (name, i)
            n += 1
    return n


CASES = [
    # (id, per-call values, per call: dtype of the bytes or None (no plain range))
    ("float64", [np.arange(3.0), np.arange(3.0) + 1], ["<f8", "<f8"]),
    ("big-endian call in a little-endian run", [np.arange(3.0), np.arange(3.0).astype(">f8")],
     ["<f8", ">f8"]),
    ("int32 promoted by an int64 call", [np.arange(2, dtype="i4"), np.arange(2, dtype="i8")],
     ["<i4", "<i8"]),
    ("bool stored as uint8", [np.array([True, False])] * 2, ["|u1", "|u1"]),
    ("datetime64 stored as int64", [np.arange(2).astype("M8[ns]")] * 2, ["<i8", "<i8"]),
    ("timedelta64 stored as int64", [np.arange(2).astype("m8[ns]")] * 2, ["<i8", "<i8"]),
    ("0-d", [np.float32(1.5), np.float32(2.5)], ["<f4", "<f4"]),
    ("complex", [np.arange(2) * 1j] * 2, ["<c16", "<c16"]),
    ("strings: heap pointers, no range", [np.array(["ab", "c"])] * 2, [None, None]),
    ("fixed bytes: no range", [np.array([b"ab", b"c"])] * 2, [None, None]),
    ("structured: no range", [np.zeros(2, [("a", "<i4"), ("b", "<f8")])] * 2, [None, None]),
    ("empty: no bytes", [np.zeros(0), np.zeros(0)], [None, None]),
    ("labelled (built by HDF5, not a template)",
     [xr.DataArray(np.arange(2.0) + i, dims="t", coords={"t": [1, 2]}, attrs={"u": "V"})
      for i in range(2)], ["<f8", "<f8"]),
    ("large: written straight to the file", [np.zeros(600_000), np.ones(600_000)],
     ["<f8", "<f8"]),
]


@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no checksums"])
@pytest.mark.parametrize("values,want", [pytest.param(v, w, id=k) for k, v, w in CASES])
def test_the_range_of_each_call_names_the_dtype_of_its_bytes(
        tmp_path: Any, values: list[Any], want: list[str | None], checksums: bool) -> None:
    out = str(tmp_path / "run")
    m = write_run(values, out, checksums)
    rec = m.variables["result_0"]
    got = [None if rec.range(i) is None else rec.range(i)[2].str  # type: ignore[index]
           for i in range(len(values))]
    assert got == want
    assert stored_bytes_agree(out, m) == sum(w is not None for w in want)
    # recorded whether or not checksums are on; the checksum is -1 when they are off
    for i, w in enumerate(want):
        if w is not None:
            assert (rec.span(i)[2] >= 0) == checksums  # type: ignore[index]
    # and it survives the JSON manifest of format 3 as well as format 4's calls log
    copy = tmp_path / "copy"
    copy.mkdir()
    m.write(str(copy))
    for back in (from_json(json.loads(json.dumps(to_json(m)))), Manifest.read(str(copy))):
        assert [back.variables["result_0"].range(i) for i in range(len(values))] == [
            rec.range(i) for i in range(len(values))]


@st.composite
def _calls(draw: Any) -> list[Any]:
    """Calls returning one array each: one dtype of the round-trip suite (or its other byte
    order) per run, some calls of a wider or other-endian dtype, ragged shapes."""
    dtype = draw(st.sampled_from(_DTYPES))
    ndim = draw(st.integers(0, 2))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        own = dtype
        if dtype.kind in "iufc" and draw(st.booleans()):
            own = dtype.newbyteorder(draw(st.sampled_from([">", "<"])))
        shape = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
        out.append(draw(_array(own, shape)))
    return out


@settings(max_examples=int(os.environ.get("ACME_XR_CONTRACT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=_calls(), checksums=st.booleans())
def test_every_recorded_range_holds_the_stored_values(tmp_path_factory: Any,
                                                      values: list[Any],
                                                      checksums: bool) -> None:
    out = str(tmp_path_factory.mktemp("run") / "run")
    m = write_run(values, out, checksums)
    n = stored_bytes_agree(out, m)
    rec = m.variables.get("result_0")
    if rec is None:  # every call was pickled (a value HDF5 cannot hold exactly)
        return
    plain = [i for i, v in enumerate(values) if m.fmt[i] == "h5" and v.size
             and stored_dtype(v.dtype) is not None]
    assert n == len(plain)


def test_stored_dtype_is_what_the_payload_writer_stores(tmp_path: Any) -> None:
    for dtype in [*_DTYPES, np.dtype(">f8"), np.dtype(">i2"), np.dtype("<c8")]:
        value = np.zeros(2, dtype)
        path = str(tmp_path / f"f_{dtype.str.replace('|', '')}.h5".replace("<", "l").replace(
            ">", "b").replace("[", "").replace("]", ""))
        hdf5.write_payload(path, to_variables(value))
        with h5py.File(path, "r") as fh:
            stored = fh["result_0"].dtype
        want = stored_dtype(dtype)
        if want is not None:
            assert want.str == stored.str, dtype


def test_a_format_2_manifest_opens_and_its_spans_are_no_ranges(tmp_path: Any) -> None:
    # written by acme_xr cac4b5c (tests/data/runs/manifest-v2/make_runs.py): spans with
    # checksums but no raw dtypes. Call 1's floats are big-endian, call 0's integer int32:
    # read as the run's dtype they would be wrong, so these spans are never read as ranges
    run = str(tmp_path / "run")
    shutil.copytree(os.path.join(DATA, "manifest-v2", "hdf5"), run)
    m = Manifest.read(run)
    assert m.header.get("checksum") == "crc32c"
    assert all(rec.range(i) is None for rec in m.variables.values() for i in range(4))
    before = read_counts().get("range", 0)
    ds = open_results(run).load()
    assert read_counts().get("range", 0) == before
    assert ds.status.values.tolist() == ["done", "done", "failed", "done"]
    for i in (0, 1, 3):
        assert ds.result_0.values[i].tolist() == [0.0, i, 2.0 * i]
        assert ds.result_1.values[i] == i
        assert ds.result_2.values[i].tolist() == [i % 2 == 0, True]
        assert ds.result_3.values[i] == np.datetime64(i, "ns")
    assert [ds[f"result_{k}"].dtype.str for k in range(4)] == ["<f8", "<i8", "|b1", "<M8[ns]"]
    # a call added by a newer acme_xr (resume) gets a range; the old ones still have none
    rec = m.variables["result_0"]
    rec.set_span(2, (2048, 24, -1))
    rec.set_raw(2, "<f8")
    rec.shapes[2] = (3,)
    assert rec.range(2) == (2048, 24, np.dtype("<f8")) and rec.range(1) is None


def test_the_manifest_is_format_2_unless_a_checksum_is_missing(tmp_path: Any) -> None:
    with_sums = write_run([np.arange(2.0)], str(tmp_path / "a"))
    assert to_json(with_sums)["format_version"] == 2  # readers of format 2 open it
    without = write_run([np.arange(2.0)], str(tmp_path / "b"), checksums=False)
    assert to_json(without)["format_version"] == 3


def test_a_range_whose_length_is_not_the_shapes_is_none() -> None:
    rec = VarRecord("<f8", ("x",), [(3,), (3,)])
    rec.set_span(0, (2048, 24, -1))
    rec.set_span(1, (2048, 16, -1))  # 2 elements: not what shape (3,) holds
    rec.set_raw(0, "<f8")
    rec.set_raw(1, "<f8")
    assert rec.range(0) == (2048, 24, np.dtype("<f8")) and rec.range(1) is None
