"""The storage contract: what a call returned is what comes back, from every storage mode.

One round-trip property (hypothesis) runs against every storage mode — per-call HDF5,
``single_file``, ``write_pickle``, zarr, memory, and every backend in the registry (the
test-only one of tests/example_backend.py included) — for return values of every NumPy dtype
kind (bool, signed and unsigned integers at their extremes, float16 to float64, complex,
datetime64/timedelta64 in ns, bytes, unicode, structured), 0-d, empty and ragged shapes,
masked arrays, tuples of several values, and DataArray/Dataset with coordinates and
attributes, with and without a call that fails. What :func:`acme_xr.open_results` gives
back (for ``write_pickle``: what each pickle holds; in memory: what ``compute()`` returns)
equals what the function returned, dtype included; or the call was pickled with a warning
naming it (a value storage cannot hold exactly). Gaps read as NaN for floating-point
results and are named by ``status`` and ``<name>_mask`` for every other dtype.

The hypothesis examples run with ``compute(debug=True)``: the same storage code as a
cluster run, in this process (a call that raises ends such a run, so the calls from it on
are the gaps). A few fixed examples run through a real LocalCluster, failed call included.
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ComputeError
from acme_xr.storage.registry import names

from . import example_backend

# every registered backend (a new one is tested without an edit here); three of them are
# chosen by ACME's own flags, the others by storage=
_FLAGS = {
    "single_file": {"single_file": True},
    "pickle": {"write_pickle": True},
    "memory": {"write_worker_results": False},
}
MODES = {name: _FLAGS.get(name, {"storage": name}) for name in names()}
assert example_backend.SubdirPayloads.name in MODES


class CallFailedError(Exception):
    """What the call chosen to fail raises."""


class Returns:
    """A picklable user function: call ``i`` returns ``values[i]`` (or raises)."""

    __name__ = "returns"

    def __init__(self, values: list[Any], fail: int | None) -> None:
        self.values = values
        self.fail = fail

    def __call__(self, i: int) -> Any:
        if i == self.fail:
            raise CallFailedError(f"call {i} fails on purpose")
        return self.values[i]


# -- values ------------------------------------------------------------------------------

_STRUCT = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "S2"), ("d", "u1", (2,))])
_DTYPES = [
    np.dtype(t) for t in (
        "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16",
        "M8[ns]", "m8[ns]", "S4", "U4",
    )
] + [_STRUCT]


def _elements(dtype: np.dtype) -> st.SearchStrategy[Any] | None:
    if dtype.kind == "U":  # NUL included: HDF5 strings end at it, so such calls are pickled
        # (numpy drops trailing NULs itself)
        return st.text(st.characters(), max_size=4).map(lambda t: t.rstrip("\x00"))
    if dtype.kind == "S":
        return st.binary(max_size=4).map(lambda b: b.rstrip(b"\x00").replace(b"\x00", b"x"))
    return None


@st.composite
def _array(draw: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))


def _shape(ndim: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim).map(tuple)


_ATTR = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(),
    st.text(st.characters(), max_size=5),
    st.lists(st.integers(-100, 100), min_size=1, max_size=3),
)
_ATTRS = st.dictionaries(st.sampled_from(["units", "note", "scale", "n"]), _ATTR, max_size=2)


@st.composite
def _position(draw: Any, n: int, k: int) -> list[Any]:
    """Return value ``k``'s kind, drawn once, and its value in each of ``n`` calls."""
    kind = draw(st.sampled_from(["array", "array", "masked", "dataarray", "dataset"]))
    if kind in ("array", "masked"):
        numeric = [d for d in _DTYPES if d.kind in "biufc"]
        dtype = draw(st.sampled_from(numeric if kind == "masked" else _DTYPES))
        ndim = draw(st.integers(0, 2))
        ragged = draw(st.booleans()) and ndim > 0
        fixed = draw(_shape(ndim))
        out = []
        for _ in range(n):
            shape = draw(_shape(ndim)) if ragged else fixed
            arr = draw(_array(dtype, shape))
            if kind == "masked":
                arr = np.ma.masked_array(arr, mask=draw(hnp.arrays(bool, shape)))
            out.append(arr)
        return out
    dtype = draw(st.sampled_from([d for d in _DTYPES if d.kind in "biufcMmU"]))
    shape = draw(_shape(1).filter(lambda s: s[0] > 0))
    coord = draw(hnp.arrays(np.int64, shape, elements=st.integers(-5, 5), unique=True))
    attrs = draw(_ATTRS)
    ds_attrs = draw(_ATTRS)
    values = []
    for _ in range(n):
        dim = f"x{k}"  # each value its own dimension and variable names
        da = xr.DataArray(draw(_array(dtype, shape)), dims=(dim,), coords={dim: coord},
                          attrs=attrs)
        if kind == "dataarray":
            values.append(da)
        else:
            values.append(xr.Dataset({f"v{k}": da, f"w{k}": da.copy(data=da.values[::-1])},
                                     attrs=ds_attrs))
    return values


@st.composite
def runs(draw: Any) -> tuple[list[Any], int | None]:
    """(the value of each call, the call that fails or None)."""
    n = draw(st.integers(1, 3))
    positions = [draw(_position(n, k)) for k in range(draw(st.integers(1, 3)))]
    values = [positions[0][i] if len(positions) == 1 and draw(st.booleans())
              else tuple(p[i] for p in positions) for i in range(n)]
    # in debug mode a failing call ends the run: the last call, so the others ran
    fail = draw(st.sampled_from([None, n - 1])) if n > 1 else None
    return values, fail


# -- comparison --------------------------------------------------------------------------

def _same_array(got: np.ndarray, want: np.ndarray, what: str) -> None:
    if want.dtype.kind == "U":  # variable-length strings stack as objects of str
        assert got.dtype.kind in "UO", what
        assert [str(x) for x in got.ravel()] == [str(x) for x in want.ravel()], what
        assert got.shape == want.shape, what
        return
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), what


def _same(got: Any, want: Any, what: str) -> None:
    """``got`` is ``want`` exactly (for values that came back whole: memory, pickles)."""
    assert type(got) is type(want), what
    if isinstance(want, tuple):
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{what}[{k}]")
    elif isinstance(want, (xr.DataArray, xr.Dataset)):
        xr.testing.assert_identical(got, want)
    elif isinstance(want, np.ma.MaskedArray):
        _same_array(np.ma.getdata(got), np.ma.getdata(want), what)
        _same_array(np.ma.getmaskarray(got), np.ma.getmaskarray(want), what)
    else:
        _same_array(np.asarray(got), np.asarray(want), what)


def _variables(value: Any) -> list[tuple[str, Any]]:
    """(name in open_results, value) of each variable of one call's return value."""
    out: list[tuple[str, Any]] = []
    for k, v in enumerate(value if isinstance(value, tuple) else (value,)):
        if isinstance(v, xr.Dataset):
            out.extend((str(name), v[name]) for name in v.data_vars)
        else:
            out.append((f"result_{k}", v))
    return out


def _call_values(ds: xr.Dataset, name: str, i: int, shape: tuple[int, ...]) -> np.ndarray:
    got = ds[name].values[i, ...]  # a 0-d array, not a scalar, for 0-d results
    return got[tuple(slice(0, s) for s in shape)] if shape else got


def _check_opened(ds: xr.Dataset, values: list[Any], done: list[int], pickled: set[int]) -> None:
    status = ds.status.values.tolist()
    for i in range(len(values)):
        if i in pickled:
            assert status[i] == "pickled"
            continue
        if i not in done:
            assert status[i] in ("failed", "pending")
        else:
            assert status[i] == "done"
    for i in done:
        if i in pickled:
            continue
        for name, want in _variables(values[i]):
            what = f"call {i} {name}"
            data = want.values if isinstance(want, xr.DataArray) else np.ma.getdata(want)
            data = np.asarray(data)
            got = _call_values(ds, name, i, data.shape)
            if isinstance(want, np.ma.MaskedArray):
                mask = np.ma.getmaskarray(want)
                got_mask = _call_values(ds, f"{name}_mask", i, data.shape)
                _same_array(got_mask, mask, what + " mask")
                if data.dtype.kind in "fc":  # masked floats read NaN where masked
                    data = np.where(mask, np.nan, data).astype(data.dtype)
            _same_array(got, data, what)
            if isinstance(want, xr.DataArray):
                assert ds[name].dims[1:] == want.dims, what
                np.testing.assert_equal(ds[name].attrs, want.attrs, err_msg=what)
                for c in want.coords:
                    np.testing.assert_array_equal(ds[c].values, want[c].values)
    for name in ds.data_vars:
        if str(name).endswith("_mask"):
            continue
        gaps = [i for i in range(len(values)) if i not in done or i in pickled]
        if gaps and ds[name].dtype.kind in "fc":
            assert np.isnan(ds[name].values[gaps]).all(), name
        elif gaps:
            mask = ds[f"{name}_mask"].values
            assert mask[gaps].all(), name


# -- running -----------------------------------------------------------------------------

def _run(values: list[Any], fail: int | None, mode: str, out: str, debug: bool,
         ) -> tuple[Any, list[str]]:
    func = Returns(values, fail)
    kw: dict[str, Any] = dict(MODES[mode])
    if mode != "memory":
        kw["output_dir"] = out
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = ParallelMap(func, list(range(len(values))), verbose=False,
                                 **kw).compute(debug=debug)
        except (CallFailedError, ComputeError) as exc:
            result = getattr(exc, "results", None)
    return result, [str(w.message) for w in caught]


def check_run(values: list[Any], fail: int | None, mode: str, debug: bool) -> None:
    out = tempfile.mkdtemp(prefix="acme_xr-contract-")
    try:
        result, caught = _run(values, fail, mode, os.path.join(out, "run"), debug)
        done = [i for i in range(len(values)) if i != fail and (fail is None or i < fail
                                                                 or not debug)]
        if mode == "memory":
            if result is None:  # in debug mode the failed call's error ends compute()
                assert debug and fail is not None
                return
            for i in done:
                _same(result[i], values[i], f"call {i}")
            return
        run = os.path.join(out, "run")
        if mode == "pickle":
            for i in done:
                (path,) = glob.glob(os.path.join(run, "**", f"returns_{i}.pickle"),
                                    recursive=True)
                with open(path, "rb") as fh:
                    _same(pickle.load(fh), values[i], f"call {i}")
            return
        ds = open_results(run)
        pickled = {i for i in done if ds.status.values[i] == "pickled"}
        for i in pickled:  # refused: loudly, naming the call
            assert any(f"call {i}" in w for w in caught), (i, caught)
        _check_opened(ds.load(), values, done, pickled)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=int(os.environ.get("ACME_XR_CONTRACT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(run=runs())
def test_round_trip(mode: str, run: tuple[list[Any], int | None]) -> None:
    values, fail = run
    check_run(values, fail, mode, debug=True)


def _fixed_values(i: int) -> tuple[Any, ...]:
    return (
        np.int64(2**53 + 1 + i),
        np.ma.masked_array([1.5, 2.5 * i], mask=[i % 2, 0]),
        np.array([(i, 0.5, b"ab", (1, 2))], _STRUCT),
        np.arange(i + 1, dtype="u8") + np.uint64(2**64 - 4),
        np.array(f"text {i}"),
        xr.Dataset({"p": ("f", np.arange(2.0) * i)}, coords={"f": [1, 2]}, attrs={"m": "x"}),
    )


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_on_a_cluster_with_a_failed_call(client: Any, mode: str) -> None:
    values = [_fixed_values(i) for i in range(4)]
    check_run(values, 1, mode, debug=False)
