"""HDF5 payloads: every value type round-trips, and opens in xarray as written."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import open_payload
from acme_xr.storage import hdf5
from acme_xr.storage.atomic import TMP_SUFFIX, atomic_path, remove_stale_temporaries
from acme_xr.storage.container import write_container
from acme_xr.storage.values import NotStorable, to_variables

VALUES = [
    pytest.param(3.5, id="float"),
    pytest.param(np.int32(7), id="int32"),
    pytest.param(True, id="bool"),
    pytest.param("héllo", id="str"),
    pytest.param(np.array(["a", "bcd"]), id="str array"),
    pytest.param(b"raw", id="bytes"),
    pytest.param(np.arange(24.0).reshape(2, 3, 4), id="3-D"),
    pytest.param(np.array([True, False]), id="bool array"),
    pytest.param(np.array(["2026-01-01", "2026-06-01"], dtype="datetime64[ns]"), id="datetime"),
    pytest.param(np.array([1, 2], dtype="timedelta64[ms]"), id="timedelta"),
    pytest.param(np.array([1 + 2j]), id="complex"),
    pytest.param([1, 2, 3], id="list"),
    pytest.param(np.empty((0, 3)), id="empty"),
]


@pytest.mark.parametrize("value", VALUES)
def test_round_trip(tmp_path: Any, value: Any) -> None:
    path = str(tmp_path / "f_0.h5")
    hdf5.write_payload(path, to_variables(value))
    got = hdf5.read_payload(path)["result_0"]
    want = np.asarray(value)
    assert got.dtype.kind == want.dtype.kind
    np.testing.assert_array_equal(got, want)
    (meta,) = hdf5.describe_payload(path)
    assert meta[1] == want.shape


def _datasets(path: str) -> list[str]:
    """Every dataset of an HDF5 file, as ACME users' loaders visit them."""
    found: list[str] = []
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                      else None)
    return found


@pytest.mark.parametrize("value", VALUES)
def test_open_payload_reads_the_same_values(tmp_path: Any, value: Any) -> None:
    path = str(tmp_path / "f_0.h5")
    hdf5.write_payload(path, to_variables(value))
    ds = open_payload(path)
    np.testing.assert_array_equal(ds["result_0"].values, np.asarray(value))
    assert ds["result_0"].dims == tuple(f"result_0_dim_{j}" for j in range(np.ndim(value)))


def test_dataarray_keeps_dims_coords_attrs(tmp_path: Any) -> None:
    da = xr.DataArray(
        np.arange(6.0).reshape(2, 3), dims=("trial", "time"),
        coords={"time": [0.1, 0.2, 0.3], "trial": ["a", "b"], "label": ("trial", [1, 2])},
        attrs={"units": "mV", "note": "raw"},
    )
    path = str(tmp_path / "f_0.h5")
    hdf5.write_payload(path, to_variables(da))
    back = open_payload(path)["result_0"]
    xr.testing.assert_identical(back.rename(None), da)
    with h5py.File(path) as fh:
        (v,) = hdf5.read_variables(fh)
    assert v.dims == ("trial", "time") and v.attrs == {"units": "mV", "note": "raw"}
    assert sorted(c.name for c in v.coords) == ["label", "time", "trial"]


def test_dataset_variables_keep_their_names(tmp_path: Any) -> None:
    ds = xr.Dataset(
        {"power": (("freq",), np.arange(3.0)), "phase": (("freq",), np.zeros(3))},
        coords={"freq": [1.0, 2.0, 4.0]}, attrs={"method": "fft"},
    )
    path = str(tmp_path / "f_0.h5")
    hdf5.write_payload(path, to_variables((ds, 5)))
    back = open_payload(path)
    assert list(back.data_vars) == ["power", "phase", "result_1"]
    xr.testing.assert_identical(back[["power", "phase"]], ds)
    # stored as the spec's result_<j> in data_vars order, names recorded
    with h5py.File(path) as fh:
        assert sorted(k for k in fh if isinstance(fh[k], h5py.Dataset)) == [
            "result_0", "result_1", "result_2"]
        assert hdf5.find_dataset(fh, "phase").name == "/result_1"
        assert hdf5.find_dataset(fh, "result_1").name == "/result_2"


ROOT_ONLY = [
    pytest.param(lambda: np.arange(24.0).reshape(2, 3, 4), id="3-D"),
    pytest.param(lambda: (np.zeros((2, 2)), np.ones(3), 7), id="three values"),
    pytest.param(lambda: xr.DataArray(np.zeros((2, 3)), dims=("result", "time"),
                                      coords={"time": [1, 2, 3], "result": ["a", "b"],
                                              "result_label": ("result", [1, 2])}),
                 id="coordinates named result"),
    pytest.param(lambda: (xr.Dataset({"a": ("x", [1.0]), "b": ("x", [2])}, coords={"x": [0]}),
                          np.ma.masked_array([1, 2], mask=[0, 1])), id="dataset and mask"),
]


@pytest.mark.parametrize("make", ROOT_ONLY)
def test_payload_root_holds_exactly_the_spec_datasets(tmp_path: Any, make: Any) -> None:
    # the spec: the root group has one dataset per return value, result_0 ... result_<k>,
    # and no other; labels live in attributes or in _acme_xr, never under a "result" name
    value = make()
    path = str(tmp_path / "f_0.h5")
    variables = to_variables(value)
    hdf5.write_payload(path, variables)
    with h5py.File(path) as fh:
        root = [k for k in fh if isinstance(fh[k], h5py.Dataset)]
        assert fh.attrs["_acme_xr_format"] == hdf5.PAYLOAD_FORMAT
    assert sorted(root) == [f"result_{j}" for j in range(len(variables))]
    assert [d for d in _datasets(path) if "result" in d] == sorted(root)
    assert [d for d in _datasets(path) if d not in root] == [
        d for d in _datasets(path) if d.startswith("_acme_xr/")]


@pytest.mark.parametrize("value", [None, {"a": 1}, np.array([object()]), [[1], [1, 2]], print])
def test_values_hdf5_cannot_hold(value: Any) -> None:
    with pytest.raises(NotStorable):
        to_variables(value)


def test_conflicting_dimension_sizes_are_not_storable(tmp_path: Any) -> None:
    a = xr.DataArray(np.zeros(2), dims="x")
    b = xr.DataArray(np.zeros(3), dims="x")
    with pytest.raises(NotStorable, match="'x'"):
        hdf5.write_payload(str(tmp_path / "f.h5"), to_variables((a, b)))
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_atomic_path_cleans_up_on_error(tmp_path: Any) -> None:
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "x.h5")) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_remove_stale_temporaries(tmp_path: Any) -> None:
    (tmp_path / f".f_0.h5.abc{TMP_SUFFIX}").write_text("left by a killed worker")
    (tmp_path / "f_1.h5").write_text("kept")
    assert remove_stale_temporaries(str(tmp_path)) == 1
    assert os.listdir(tmp_path) == ["f_1.h5"]


def test_container_virtual_dataset_fill_is_nan_for_missing_calls(tmp_path: Any) -> None:
    for i in (0, 2):
        hdf5.write_payload(str(tmp_path / f"f_{i}.h5"), to_variables(np.full(3, float(i))))
    write_container(str(tmp_path / "f.h5"), [(0, "f_0.h5"), (2, "f_2.h5")], n_calls=3,
                    virtual=((None, 3), np.dtype("f8")))
    with h5py.File(tmp_path / "f.h5") as fh:
        data = fh["result_0"][()]
    np.testing.assert_array_equal(data[0], 0.0)
    assert np.isnan(data[1]).all()  # never a silent zero
    np.testing.assert_array_equal(data[2], 2.0)


def dump(path: str) -> dict[str, Any]:
    """Every object of an HDF5 file: values, attributes and dimension scales."""
    out: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        attrs = {k: v for k, v in obj.attrs.items() if k not in ("DIMENSION_LIST", "REFERENCE_LIST")}
        value = np.asarray(obj[()]).tolist() if isinstance(obj, h5py.Dataset) else None
        scales = [[s.name for s in d.values()] for d in obj.dims] \
            if isinstance(obj, h5py.Dataset) else None
        out[name] = (value, repr(sorted(attrs.items())), scales)

    with h5py.File(path) as fh:
        fh.visititems(visit)
    return out


def test_small_payloads_in_memory_equal_payloads_written_in_place(
        tmp_path: Any, monkeypatch: Any) -> None:
    da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("trial", "time"),
                      coords={"time": [0.1, 0.2, 0.3]}, attrs={"units": "mV"})
    value = (da, np.arange(4), "text")
    hdf5.write_payload(str(tmp_path / "image.h5"), to_variables(value))
    monkeypatch.setattr(hdf5, "_IMAGE_MAX_BYTES", 0)  # every payload straight into its file
    hdf5.write_payload(str(tmp_path / "direct.h5"), to_variables(value))
    assert dump(str(tmp_path / "image.h5")) == dump(str(tmp_path / "direct.h5"))
    assert sorted(os.listdir(tmp_path)) == ["direct.h5", "image.h5"]  # no temporaries


def test_payloads_built_in_memory_by_many_threads_stay_apart(tmp_path: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> None:
        hdf5.write_payload(str(tmp_path / f"f_{i}.h5"), to_variables(np.full(50, float(i))))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(200)))
    for i in range(200):
        np.testing.assert_array_equal(hdf5.read_payload(str(tmp_path / f"f_{i}.h5"))["result_0"],
                                      np.full(50, float(i)))


TEMPLATED = [
    pytest.param(lambda i: float(i), id="float"),
    pytest.param(lambda i: np.int32(i), id="int32"),
    pytest.param(lambda i: i % 2 == 0, id="bool"),
    pytest.param(lambda i: np.arange(24.0).reshape(2, 3, 4) * i, id="3-D"),
    pytest.param(lambda i: (np.full(3, i, dtype=">i8"), i + 1j, np.full((2, 2), i, "u2")),
                 id="big-endian, complex, uint16"),
    pytest.param(lambda i: np.array(["2026-01-01", "2026-06-01"], "M8[ns]") + i, id="datetime"),
    pytest.param(lambda i: np.array([1, 2], dtype="m8[ms]") * i, id="timedelta"),
    pytest.param(lambda i: xr.DataArray(np.arange(3.0) + i, dims="time"), id="dims only"),
    pytest.param(lambda i: np.arange(4.0)[::2] + i, id="strided"),
]


@pytest.mark.parametrize("make", TEMPLATED)
def test_payloads_from_a_template_are_byte_for_byte_what_hdf5_writes(
        tmp_path: Any, make: Any) -> None:
    hdf5._templates.clear()
    paths = [str(tmp_path / f"f_{i}.h5") for i in range(3)]
    for i, path in enumerate(paths):
        hdf5.write_payload(path, to_variables(make(i)))
    assert [t for t in hdf5._templates.values() if t is not None]  # the template was used
    for i, path in enumerate(paths):
        with open(path, "rb") as fh:
            assert fh.read() == hdf5._file_image(to_variables(make(i)))
        want = make(i)
        want = list(want) if isinstance(want, tuple) else [want]
        got = hdf5.read_payload(path)
        for k, w in enumerate(want):
            np.testing.assert_array_equal(got[f"result_{k}"], np.asarray(w))


@pytest.mark.parametrize("value", [
    pytest.param(lambda i: f"text {i}", id="str"),
    pytest.param(lambda i: xr.DataArray([i], dims="x", coords={"x": [i]}), id="coordinate"),
    pytest.param(lambda i: xr.DataArray([i], dims="x", attrs={"i": i}), id="attribute"),
    pytest.param(lambda i: np.full(20_000, float(i)), id="over the template size"),
])
def test_payloads_a_template_cannot_hold_are_written_by_hdf5(tmp_path: Any, value: Any) -> None:
    hdf5._templates.clear()
    for i in range(3):
        path = str(tmp_path / f"f_{i}.h5")
        hdf5.write_payload(path, to_variables(value(i)))
        with open(path, "rb") as fh:
            assert fh.read() == hdf5._file_image(to_variables(value(i)))
    assert not [t for t in hdf5._templates.values() if t is not None]


def test_the_same_values_give_the_same_bytes_at_any_time(tmp_path: Any, monkeypatch: Any) -> None:
    # HDF5 records object times by default; payloads do not (templates rely on it)
    monkeypatch.setattr(hdf5, "_TEMPLATE_MAX_BYTES", 0)  # no templates: HDF5 writes each
    value = (np.arange(3.0), xr.DataArray([1, 2], dims="x", coords={"x": [5, 6]}))
    images = []
    for k, limit in enumerate([hdf5._IMAGE_MAX_BYTES, 0, hdf5._IMAGE_MAX_BYTES, 0]):
        monkeypatch.setattr(hdf5, "_IMAGE_MAX_BYTES", limit)  # in memory, then in place
        hdf5.write_payload(str(tmp_path / f"f_{k}.h5"), to_variables(value))
        with open(tmp_path / f"f_{k}.h5", "rb") as fh:
            images.append(fh.read())
        time.sleep(1.1)  # into the next second
    assert images[0] == images[2] and images[1] == images[3]


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["f8", "f4", "i8", "i2", "u1", "?", "c16", ">f8", "M8[s]", "m8[us]"]),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
    n_values=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_any_template_payload_is_what_hdf5_writes(dtype: str, shape: tuple[int, ...],
                                                  n_values: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def make() -> tuple[np.ndarray, ...]:
        raw = rng.integers(0, 100, size=shape)
        return tuple(raw.astype(np.dtype(dtype)) for _ in range(n_values))

    hdf5._templates.clear()
    directory = tempfile.mkdtemp()
    values = [make() for _ in range(3)]
    for i, value in enumerate(values):
        hdf5.write_payload(os.path.join(directory, f"f_{i}.h5"), to_variables(value))
    for i, value in enumerate(values):
        with open(os.path.join(directory, f"f_{i}.h5"), "rb") as fh:
            assert fh.read() == hdf5._file_image(to_variables(value))
    shutil.rmtree(directory)
