"""open_results: a whole run as one lazy, labelled :class:`xarray.Dataset`.

Opening reads the manifest (one file), never the payload files. Each result variable is a
lazy array of shape ``(n_calls, *per_call_shape)`` whose reads open the payload files of the
calls they need, read, and close them again (no handle per payload is kept open).

* ``call`` (or ``dim=``) is the leading dimension; its coordinate is the call index, and every
  argument that was split across calls with one scalar per call becomes a coordinate along it
  (``f(subject, alpha)`` over ``subject=["s01", "s02"]`` gives ``ds.subject``).
* Calls that failed, have not run yet, or were pickled have no values (gaps), and the
  ``status`` coordinate says which is which. Every result keeps its dtype: floating-point and
  complex gaps read as NaN, times as NaT, integers as the dtype's most negative value (0 for
  unsigned), booleans as False, strings (objects of ``str``) as ``""``, bytes as ``b""``. So
  that a gap is never taken for a value, a result that is neither floating-point nor
  complex and has gaps also gets the boolean variable ``<name>_mask`` (True: no value).
  ``open_results(..., mask_integers=True)`` instead turns integer and boolean results with
  gaps into float64 with NaN, and warns when a value cannot be held exactly (beyond 2**53).
* A masked array (:class:`numpy.ma.MaskedArray`) returned by a call keeps its mask: the
  result holds the data (NaN where masked, for floating-point results) and ``<name>_mask``
  is True where it was masked (and at gaps).
* A payload that the manifest lists but that is gone raises
  :class:`~acme_xr.errors.MissingPayloadError` on read.
* Results whose shape differs between calls are padded to the largest shape with the same
  fill; their true shapes are the coordinate ``<var>_shape``. Results whose number of
  dimensions differs cannot be stacked: a :class:`~acme_xr.errors.ResultsLayoutError` names
  the calls and shapes.
* xarray return values keep their dimension names, attributes and coordinates; a coordinate
  that is the same in every call appears once, one that differs becomes a coordinate along
  ``call`` too (an index coordinate ``x`` that differs is renamed ``x_per_call``).

Examples
--------
>>> import os, tempfile
>>> from acme_xr import ParallelMap
>>> def f(subject, alpha):
...     return alpha * 2.0
>>> run = os.path.join(tempfile.mkdtemp(), "run")
>>> _ = ParallelMap(f, ["s01", "s02"], [0.5, 1.5], output_dir=run, verbose=False).compute()
>>> ds = open_results(run)
>>> ds.result_0.values.tolist(), ds.subject.values.tolist()
([1.0, 3.0], ['s01', 's02'])
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Hashable, Iterable
from typing import Any

import h5py
import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from .errors import MissingPayloadError, ResultsLayoutError
from .manifest import DONE, FAILED, PENDING, Manifest, VarRecord
from .scan import load_manifest, locate_run, payload_location, refresh_pending
from .storage.hdf5 import decode, find_dataset, read_mask
from .storage.values import DATASET_ATTRS_ATTR, MASKED_ATTR, dtype_of, own_attrs
from .storage.zarr import mask_of, per_call, quiet_dtypes

__all__ = ["open_results", "build_dataset", "CallStackArray"]

_BLOCK_BYTES = 64 * 2**20
_HDF5_READS = threading.Lock()
_MAX_BLOCK_CALLS = 1000


_EXACT = 2**53  # integers up to this size are exact in float64


def _output_dtype(native: np.dtype, gaps: bool, mask_integers: bool) -> tuple[np.dtype, Any]:
    """(dtype of the stacked array, fill value for calls without values).

    Every dtype is kept (gaps are named by ``status`` and ``<name>_mask``, not by the fill);
    only ``mask_integers`` turns integers and booleans with gaps into float64 with NaN.
    """
    kind = native.kind
    if kind in "UO":
        return np.dtype(object), ""
    if kind in "fc":
        return native, np.nan
    if kind in "Mm":
        return native, native.type("NaT")
    if kind == "S":
        return native, b""
    if kind == "V":
        return native, np.zeros((), native)[()]
    if gaps and mask_integers:
        return np.dtype("float64"), np.nan
    if kind == "b":
        return native, False
    return native, (0 if kind == "u" else np.iinfo(native).min)


def _needs_mask(native: np.dtype, gaps: bool, masked: bool, dtype: np.dtype) -> bool:
    return masked or (gaps and dtype.kind not in "fc")


def _outer_index(arr: np.ndarray, key: tuple[Any, ...]) -> np.ndarray:
    # from the last axis to the first, so that integer keys do not shift later axes
    for axis in reversed(range(len(key))):
        k = key[axis]
        if isinstance(k, np.ndarray):
            arr = np.take(arr, k, axis=axis)
        else:
            arr = arr[(slice(None),) * axis + (k,)]
    return arr


def _selected_shape(key: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            out.append(len(range(*k.indices(n))))
        elif isinstance(k, np.ndarray):
            out.append(k.size)
    return tuple(out)


class CallStackArray(BackendArray):
    """One variable of every call, stacked along a leading call axis, read on demand.

    Parameters
    ----------
    run_dir : str
        The run directory.
    header : dict
        The manifest header (where each call's payload is).
    name : str
        Dataset name inside each payload (group).
    shapes : list of tuple or None
        Per call: the shape of the stored array, None when the call has no value.
    native : numpy.dtype
        dtype as stored (decoded).
    dtype : numpy.dtype
        dtype of the stacked array.
    fill : object
        Value of calls without values and of padding.
    mask : bool
        Read the variable's mask instead of its values (boolean; True where a call has no
        value, where its array was masked, and in padding).
    """

    def __init__(self, run_dir: str, header: dict[str, Any], name: str,
                 shapes: list[tuple[int, ...] | None], native: np.dtype, dtype: np.dtype,
                 fill: Any, in_store: np.ndarray | None = None,
                 store_name: str | None = None, mask: bool = False) -> None:
        present = [s for s in shapes if s is not None]
        ndim = len(present[0]) if present else 0
        self.maxshape = tuple(max((s[j] for s in present), default=0) for j in range(ndim))
        self.run_dir = run_dir
        self.header = header
        self.name = name
        self.shapes = shapes
        self.native = native
        self.dtype = dtype
        self.fill = fill
        self.shape = (len(shapes), *self.maxshape)
        # calls whose values are in the run's zarr store rather than in a payload file
        self.in_store = np.zeros(len(shapes), bool) if in_store is None else in_store
        self.store_name = store_name or name
        self.mask = mask
        # values of a masked float result read NaN where masked (set by build_dataset)
        self.masked_nan = False
        if mask:
            self.dtype, self.fill, self.store_name = np.dtype(bool), True, mask_of(name)
        # integers read into float64 (mask_integers=True): warn when one is not exact
        self.lossy = self.native.kind in "iu" and self.dtype.kind == "f" and (
            self.native.itemsize >= 8)

    def __dask_tokenize__(self) -> Any:
        return ("acme_xr.CallStackArray", self.run_dir, self.name, self.mask, self.shape,
                str(self.dtype),
                self.header.get("created"), tuple(s is not None for s in self.shapes))

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        calls = np.arange(self.shape[0])[key[0]]
        single = np.ndim(calls) == 0
        calls = np.atleast_1d(calls)
        rest = tuple(key[1:])
        shape = (len(calls), *_selected_shape(rest, self.maxshape))
        if all(self.shapes[c] == self.maxshape for c in calls):
            out = np.empty(shape, self.dtype)  # every element is read: no fill pass
        else:
            out = np.full(shape, self.fill, self.dtype)
        # whole arrays of a plain numeric type go straight from the file into ``out``
        direct = (self.dtype == self.native and self.native.kind in "iufc" and len(rest) > 0
                  and not self.mask and not self.masked_nan
                  and not (self.header.get("stacked") or {}).get(self.name)
                  and all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
                          for k, n in zip(rest, self.maxshape, strict=True)))
        inexact: list[int] = []
        zarr_rows = [j for j, c in enumerate(calls)
                     if self.in_store[c] and self.shapes[c] is not None]
        if zarr_rows:
            data = self._read_store(calls[zarr_rows], rest)
            self._check_exact(data, calls[zarr_rows], inexact)
            out[zarr_rows] = data
        # HDF5 serialises all its calls on one lock anyway; threads taking turns at it file by
        # file run at half the speed of one thread reading a whole block (measured: 10,000
        # files, 9.6 s vs 5.2 s), so a block's files are read by one thread at a time
        with _HDF5_READS:
            for j, c in enumerate(calls):
                if self.shapes[c] is not None and not self.in_store[c]:
                    if direct and self.shapes[c] == self.maxshape:
                        self._read_call(int(c), rest, into=out[j])
                        continue
                    data = self._read_call(int(c), rest)
                    self._check_exact(data, [c], inexact)
                    out[j] = data.item() if data.ndim == 0 and self.dtype.kind == "O" else data
        self._warn_inexact(inexact)
        return out[0] if single else out

    def _check_exact(self, data: np.ndarray, calls: Any, inexact: list[int]) -> None:
        """Add to ``inexact`` the calls whose integers float64 would round."""
        if not self.lossy or not data.size:
            return
        rows = data.reshape(len(calls), -1) if len(calls) > 1 else data.reshape(1, -1)
        for c, row in zip(calls, rows, strict=True):
            if np.any(np.abs(row.astype(np.float64)) >= _EXACT) and np.any(
                    row.astype(np.float64).astype(self.native) != row):
                inexact.append(int(c))

    def _warn_inexact(self, inexact: list[int]) -> None:
        if inexact:
            warnings.warn(
                f"{self.name!r} of call(s) {sorted(inexact)[:10]} holds integers beyond 2**53 "
                "that float64 cannot hold exactly (mask_integers=True): the values read are "
                "rounded; open without mask_integers to keep them exact",
                UserWarning, stacklevel=3,
            )

    def _read_store(self, calls: np.ndarray, rest: tuple[Any, ...]) -> np.ndarray:
        """Read several calls from the zarr store at once."""
        with quiet_dtypes():
            return self._read_store_quietly(calls, rest)

    def _read_store_quietly(self, calls: np.ndarray, rest: tuple[Any, ...]) -> np.ndarray:
        import zarr

        store = os.path.join(self.run_dir, self.header["store"])
        try:
            arr = zarr.open_array(store, path=self.store_name, mode="r")
        except FileNotFoundError as exc:
            if self.mask:  # an unmasked variable: no mask array in the store
                return np.zeros((len(calls), *_selected_shape(rest, self.maxshape)), bool)
            raise MissingPayloadError(
                f"the zarr store {store} (or its array {self.store_name!r}) listed in the run's "
                "manifest is gone"
            ) from exc
        if tuple(arr.shape[1:]) == self.maxshape:
            data = np.asarray(arr.get_orthogonal_selection((calls, *rest)))
        else:  # some calls (kept as payload files) are larger: pad the stored ones
            rows = np.asarray(arr.get_orthogonal_selection((calls,)))
            data = np.stack([_outer_index(self._pad(np.asarray(r)), rest) for r in rows])
        if self.masked_nan:
            try:
                marr = zarr.open_array(store, path=mask_of(self.store_name), mode="r")
            except FileNotFoundError:
                marr = None
            if marr is not None:
                m = np.asarray(marr.get_orthogonal_selection((calls,)))
                m = np.stack([_outer_index(self._pad(np.asarray(r)), rest) for r in m])
                data = np.where(m, np.nan, data).astype(self.native)
        return data.astype(object) if self.dtype.kind == "O" else data

    def _read_call(self, c: int, rest: tuple[Any, ...], into: np.ndarray | None = None) -> Any:
        """Call ``c``'s values at ``rest`` (or read them straight into ``into``)."""
        path, group = payload_location(self.header, self.run_dir, c)
        try:
            fh = h5py.File(path, "r")
        except FileNotFoundError as exc:
            raise MissingPayloadError(
                f"call {c}: the payload {path} listed in the run's manifest is gone; restore it, "
                "or re-run that call with ParallelMap(..., resume=True)"
            ) from exc
        with fh:
            stacked = (self.header.get("stacked") or {}).get(self.name)
            try:
                if stacked is not None:  # single_file + result_shape: one row of a dataset
                    ds = fh[stacked["dataset"]]
                    where: list[Any] = [slice(0, n) for n in self.shapes[c]]  # type: ignore[union-attr]
                    where.insert(stacked["axis"], c)
                    full = np.asarray(ds[tuple(where)]).astype(self.native)
                    return _outer_index(self._pad(full), rest)
                grp = fh[group] if group else fh
                ds = find_dataset(grp, self.name)
                if self.mask:
                    stored = read_mask(grp, ds)
                    full = np.zeros(ds.shape, bool) if stored is None else stored
                    return _outer_index(self._pad(full), rest)
            except KeyError as exc:
                raise MissingPayloadError(
                    f"call {c}: {path} has no {self.name!r} although the manifest lists it"
                ) from exc
            if self.masked_nan:
                full = decode(ds, self.native)
                stored = read_mask(grp, ds)
                if stored is not None:
                    full = np.where(stored, np.nan, full).astype(self.native)
                return _outer_index(self._pad(full), rest)
            if into is not None:
                ds.read_direct(into)
                return None
            shape = self.shapes[c]
            plain = all(isinstance(k, (slice, np.integer, int)) and
                        (not isinstance(k, slice) or (k.step or 1) > 0) for k in rest)
            if shape == self.maxshape and plain:
                return decode(ds, self.native, rest)
            full = decode(ds, self.native)
        return _outer_index(self._pad(full), rest)

    def _pad(self, full: np.ndarray) -> np.ndarray:
        if full.shape == self.maxshape:
            return full
        padded = np.full(self.maxshape, self.fill, self.dtype)
        padded[tuple(slice(0, n) for n in full.shape)] = full
        return padded


def _shapes_checked(name: str, rec: VarRecord) -> list[tuple[int, ...] | None]:
    by_ndim: dict[int, tuple[int, tuple[int, ...]]] = {}
    for i, s in enumerate(rec.shapes):
        if s is not None:
            by_ndim.setdefault(len(s), (i, s))
    if len(by_ndim) > 1:
        listing = ", ".join(f"call {i} has shape {s}" for i, s in sorted(by_ndim.values()))
        raise ResultsLayoutError(
            f"{name!r} cannot be stacked: its number of dimensions differs between calls "
            f"({listing}); return arrays of one dimensionality, or open single payloads"
        )
    if rec.dims_conflicts:
        ref = next(i for i, s in enumerate(rec.shapes)
                   if s is not None and i not in rec.dims_conflicts)
        calls = ", ".join(f"call {i} has {list(d)}"
                          for i, d in sorted(rec.dims_conflicts.items())[:5])
        raise ResultsLayoutError(
            f"{name!r} cannot be stacked: call {ref} has dimensions {list(rec.dims)} but {calls}; "
            "give every call's result the same dimension names"
        )
    return rec.shapes


def _template_array(tpl: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(tpl["dtype"])
    values = np.asarray(tpl["values"])
    if dtype.kind in "Mm":
        return values.astype(np.int64).view(dtype)
    if dtype.kind == "U":
        return values.astype(str)
    return values.astype(dtype)


def _coordinate(tpl: dict[str, Any]) -> xr.Variable:
    return xr.Variable(tuple(tpl["dims"]), _template_array(tpl), tpl.get("attrs") or {})


def _readable(manifest: Manifest) -> np.ndarray:
    return (manifest.status == DONE) & np.array([f in ("h5", "zarr", None) for f in manifest.fmt])


def _in_store(manifest: Manifest) -> np.ndarray:
    return np.array([f == "zarr" for f in manifest.fmt], bool)


def _status_labels(manifest: Manifest) -> np.ndarray:
    labels = np.array(["pending", "done", "failed"], dtype="<U7")[manifest.status]
    pickled = np.array([f == "pickle" for f in manifest.fmt])
    labels[(manifest.status == DONE) & pickled] = "pickled"
    return labels


def build_dataset(run_dir: str, manifest: Manifest, *, dim: str = "call",
                  mask_integers: bool = False) -> xr.Dataset:
    """The lazy Dataset of a run described by ``manifest`` (no payload is opened)."""
    n = manifest.n_inputs
    header = manifest.header
    readable = _readable(manifest)
    in_store = _in_store(manifest)
    data_vars: dict[Hashable, xr.Variable] = {}
    coords: dict[Hashable, xr.Variable] = {dim: xr.Variable(dim, np.arange(n))}
    block = _MAX_BLOCK_CALLS
    sizes: dict[str, tuple[int, str]] = {}
    masks: dict[Hashable, xr.Variable] = {}
    user_attrs: dict[str, Any] = {}
    for name, rec in manifest.variables.items():
        shapes = [s if readable[i] else None for i, s in enumerate(_shapes_checked(name, rec))]
        present = [s for s in shapes if s is not None]
        gaps = len(present) < n or any(s != present[0] for s in present)
        native = dtype_of(rec.dtype, rec.attrs)
        dtype, fill = _output_dtype(native, gaps, mask_integers)
        masked = bool(rec.attrs.get(MASKED_ATTR))
        arr = CallStackArray(run_dir, header, name, shapes, native, dtype, fill, in_store)
        arr.masked_nan = masked and dtype.kind in "fc"
        if _needs_mask(native, gaps, masked, dtype):
            marr = CallStackArray(run_dir, header, name, shapes, native, dtype, fill, in_store,
                                  mask=True)
            masks[f"{name}_mask"] = xr.Variable((dim, *rec.dims),
                                                indexing.LazilyIndexedArray(marr))
        if rec.attrs.get(DATASET_ATTRS_ATTR):
            user_attrs.update(json.loads(str(rec.attrs[DATASET_ATTRS_ATTR])))
        for d, size in zip(rec.dims, arr.maxshape, strict=True):
            if sizes.setdefault(d, (size, name))[0] != size:
                raise ResultsLayoutError(
                    f"dimension {d!r} has length {sizes[d][0]} in {sizes[d][1]!r} but {size} in "
                    f"{name!r}: give the two results different dimension names"
                )
        var = xr.Variable((dim, *rec.dims), indexing.LazilyIndexedArray(arr),
                          own_attrs(rec.attrs))
        per_call = max(1, int(np.prod(arr.maxshape, dtype=np.int64)) * max(dtype.itemsize, 8))
        block = min(block, max(1, _BLOCK_BYTES // per_call))
        data_vars[name] = var
        if present and any(s != present[0] for s in present):
            shape_arr = np.array([s if s is not None else (-1,) * len(arr.maxshape)
                                  for s in shapes], dtype=np.int64).reshape(n, len(arr.maxshape))
            coords[f"{name}_shape"] = xr.Variable((dim, f"{name}_axis"), shape_arr)
        _add_coords(coords, name, rec, manifest, run_dir, dim, shapes, in_store)
    for name, spec in header.get("coords", {}).items():
        if name in data_vars or name in coords or any(name in v.dims for v in data_vars.values()):
            continue
        values = np.asarray(spec["values"]).astype(np.dtype(spec["dtype"]))
        coords[name] = xr.Variable(dim, values)
    coords["status"] = xr.Variable(dim, _status_labels(manifest))
    for mname, mvar in masks.items():
        if mname not in data_vars and mname not in coords:
            data_vars[mname] = mvar
    for var in data_vars.values():
        var.encoding["preferred_chunks"] = {dim: min(block, max(n, 1))}
    # the attributes of xarray.Dataset returns; the run's own attributes win a clash
    ds = xr.Dataset(data_vars, coords, attrs={**user_attrs, **_attrs(manifest, run_dir)})
    return ds


def _add_coords(coords: dict[Hashable, xr.Variable], name: str, rec: VarRecord,
                manifest: Manifest, run_dir: str, dim: str,
                shapes: list[tuple[int, ...] | None], in_store: np.ndarray) -> None:
    for cname, tok in rec.coords.items():
        if tok is not None:
            var = _coordinate(manifest.coord_templates[tok])
            if cname in coords and not coords[cname].equals(var):
                raise ResultsLayoutError(
                    f"coordinate {cname!r} differs between result variables ({name!r} and "
                    "another); give them different coordinate names"
                )
            coords[cname] = var
            continue
        tpl = next(t for t in manifest.coord_templates.values() if t["name"] == cname)
        cdims = tuple(tpl["dims"])
        cshapes = [None if s is None else tuple(s[rec.dims.index(d)] for d in cdims)
                   for s in shapes]
        native = np.dtype(tpl["dtype"])
        dtype, fill = _output_dtype(native, True, True)
        arr = CallStackArray(run_dir, manifest.header, cname, cshapes, native, dtype, fill,
                             in_store, store_name=per_call(cname))
        out = f"{cname}_per_call" if cname in cdims else cname
        coords[out] = xr.Variable((dim, *cdims), indexing.LazilyIndexedArray(arr),
                                  tpl.get("attrs") or {})


def _attrs(manifest: Manifest, run_dir: str) -> dict[str, Any]:
    h = manifest.header
    counts = {"done": int((manifest.status == DONE).sum()),
              "failed": int((manifest.status == FAILED).sum()),
              "pending": int((manifest.status == PENDING).sum())}
    attrs: dict[str, Any] = {
        "acme_xr_function": (h.get("func") or {}).get("name", ""),
        "acme_xr_version": h.get("acme_xr_version", ""),
        "created": manifest.created,
        "state": manifest.state,
        "run_dir": run_dir,
        "n_calls": manifest.n_inputs,
        **{f"n_{k}": v for k, v in counts.items()},
    }
    if counts["failed"]:
        attrs["failed_calls"] = [int(i) for i in manifest.indices(FAILED)]
    return attrs


def open_results(
    path: str | os.PathLike[str],
    *,
    dim: str = "call",
    chunks: int | str | None = "auto",
    mask_integers: bool = False,
    drop_variables: Iterable[str] | None = None,
) -> xr.Dataset:
    """Open all results of a run as one lazy, labelled :class:`xarray.Dataset`.

    Parameters
    ----------
    path : str or path-like
        The run directory, or its container ``<func>.h5`` / ``manifest.json``. Runs written
        by ACME (``esi-acme``) open too.
    dim : str
        Name of the leading dimension along the calls.
    chunks : int, "auto" or None
        Calls per dask block ("auto": up to 1000 calls or 64 MiB); None for lazily indexed
        arrays without dask.
    mask_integers : bool
        False (default): every result keeps its dtype; calls without a value are named by
        the ``status`` coordinate and the boolean variable ``<name>_mask``. True: integer
        and boolean results with such gaps become float64 with NaN there (as xarray does for
        masked integers), with a warning when a value is beyond 2**53 and so not exact.
    drop_variables : iterable of str, optional
        Variables not to open.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    ResultsLayoutError
        ``path`` holds no run, or results cannot be stacked (differing dimensions).
    """
    from .backend import AcmeXrBackendEntrypoint

    if chunks == "auto":
        chunk_arg: Any = {}
    elif chunks is None:
        chunk_arg = None
    elif isinstance(chunks, int) and chunks >= 1:
        chunk_arg = {dim: chunks}
    else:
        raise ResultsLayoutError(
            f"chunks={chunks!r} is not valid: give 'auto', None or a number >= 1")
    return xr.open_dataset(
        locate_run(path), engine=AcmeXrBackendEntrypoint, chunks=chunk_arg, dim=dim,
        mask_integers=mask_integers, drop_variables=drop_variables,
    )


def dataset_for(path: str | os.PathLike[str], *, dim: str = "call",
                mask_integers: bool = False) -> xr.Dataset:
    """The lazy Dataset of the run at ``path`` (what the xarray backend returns)."""
    run_dir = locate_run(path)
    manifest = load_manifest(run_dir)
    if manifest.state in ("running", "interrupted", "rebuilt"):
        refresh_pending(manifest, run_dir)
    return build_dataset(run_dir, manifest, dim=dim, mask_integers=mask_integers)
