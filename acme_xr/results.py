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
  unsigned), booleans as False, strings (``<U`` of the longest call's string) as ``""``,
  bytes as ``b""``. So that a gap is never taken for a value, a result that is neither
  floating-point nor complex and has gaps also gets the boolean variable ``<name>_mask``
  (True: no value).
  ``open_results(..., mask_integers=True)`` instead turns integer and boolean results with
  gaps into float64 with NaN, and warns when a value cannot be held exactly (beyond 2**53).
* A masked array (:class:`numpy.ma.MaskedArray`) returned by a call keeps its mask: the
  result holds the data (NaN where masked, for floating-point results) and ``<name>_mask``
  is True where it was masked (and at gaps).
* Payloads prove themselves: a read compares each payload's size and the checksum of the
  data bytes it reads with what the call recorded in the manifest; a payload that is
  missing, emptied, truncated, changed or that HDF5 cannot read raises
  :class:`~acme_xr.errors.PayloadCorruptError` naming the file and the call
  (:class:`~acme_xr.errors.MissingPayloadError` when it is gone).
  ``open_results(..., verify=True)`` checks every payload's whole-file checksum up front.
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
import warnings
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from . import config
from .callstack import CallStackArray
from .errors import PayloadCorruptError, ResultsLayoutError
from .integrity import unchecked_calls, verify_run
from .manifest import DONE, FAILED, MASKS_KNOWN, PENDING, STATUS_NAMES, Manifest, VarRecord
from .scan import load_manifest, locate_run, refresh_pending
from .storage.ranges import Ranges
from .storage.registry import DEFAULT, backend_class, names
from .storage.values import DATASET_ATTRS_ATTR, MASKED_ATTR, dtype_of, own_attrs
from .storage.zarr import call_chunk, per_call

__all__ = ["open_results", "build_dataset", "CallStackArray"]

# Calls per dask block: a block should take ~0.1-0.5 s, so that dask's per-task cost
# (~1 ms with its graph, mean-chunk and aggregation tasks) stays small beside the reads while
# there are still several blocks for the threads or workers. h5py reads ~0.5 ms a payload:
# 1000 calls. A read by byte range costs ~10-20 us: 10,000 calls, whose memory is small (a
# block read by range holds its output and at most 4 MiB more; 64 MiB at most in all).
# Measured, mean of result_0 over 10,000 calls of (8, 16) float64: 1000-call blocks
# 0.14-0.18 s, 10,000-call blocks 0.09-0.12 s; the pread floor 0.055 s.
_BLOCK_BYTES = 64 * 2**20
_MAX_BLOCK_CALLS = 1000
_MAX_BLOCK_CALLS_BY_RANGE = 10_000
_MAX_BLOCK_CALLS_IN_STORE = 100_000




def _output_dtype(native: np.dtype, gaps: bool, mask_integers: bool) -> tuple[np.dtype, Any]:
    """(dtype of the stacked array, fill value for calls without values).

    Every dtype is kept (gaps are named by ``status`` and ``<name>_mask``, not by the fill);
    only ``mask_integers`` turns integers and booleans with gaps into float64 with NaN.
    """
    kind = native.kind
    if kind == "U" and native.itemsize:  # the longest string of any call is recorded
        return native, ""
    if kind in "UO":  # older manifests record no length: objects of str
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


def _needs_mask(gaps: bool, masked: bool, dtype: np.dtype) -> bool:
    return masked or (gaps and dtype.kind not in "fc")


def _uniform(shapes: list[tuple[int, ...] | None]) -> bool:
    """Whether every call has values of one shape (a million-call run, mostly): one
    C-level pass instead of Python loops over the calls."""
    return bool(shapes) and shapes[0] is not None and shapes.count(shapes[0]) == len(shapes)


def _shapes_checked(name: str, rec: VarRecord) -> list[tuple[int, ...] | None]:
    by_ndim: dict[int, tuple[int, tuple[int, ...]]] = {}
    codes = rec.shapes.codes
    for code in np.unique(codes[codes >= 0]).tolist():  # the distinct shapes, not each call
        s = rec.shapes.table[code]
        first = int(np.argmax(codes == code))
        if by_ndim.get(len(s), (first + 1,))[0] > first:
            by_ndim[len(s)] = (first, s)
    if len(by_ndim) > 1:
        listing = ", ".join(f"call {i} has shape {s}" for i, s in sorted(by_ndim.values()))
        raise ResultsLayoutError(
            f"{name!r} cannot be stacked: its number of dimensions differs between calls "
            f"({listing}); return arrays of one dimensionality, or open single payloads"
        )
    if rec.dims_conflicts:
        ref, calls = _conflicts(rec, rec.dims_conflicts, lambda d: f"has {list(d)}")
        raise ResultsLayoutError(
            f"{name!r} cannot be stacked: call {ref} has dimensions {list(rec.dims)} but {calls}; "
            "give every call's result the same dimension names"
        )
    if rec.dtype_conflicts:
        ref, calls = _conflicts(rec, rec.dtype_conflicts, lambda d: f"returned {np.dtype(d)}")
        raise ResultsLayoutError(
            f"{name!r} cannot be stacked exactly: call {ref} returned {np.dtype(rec.dtype)} but "
            f"{calls}, and no dtype holds both without changing values. Return one dtype from "
            "every call, or open each call with acme_xr.open_payload"
        )
    return list(rec.shapes)


def _conflicts(rec: VarRecord, conflicts: dict[int, Any],
               describe: Callable[[Any], str]) -> tuple[int, str]:
    """(a call that agrees with the record, "call i <describe>, ..." of the first five
    calls that do not)."""
    ref = next(i for i, s in enumerate(rec.shapes) if s is not None and i not in conflicts)
    calls = ", ".join(f"call {i} {describe(d)}" for i, d in sorted(conflicts.items())[:5])
    return ref, calls


def _template_array(tpl: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(tpl["dtype"])
    values = np.asarray(tpl["values"])
    if dtype.kind in "Mm":
        return values.astype(np.int64).view(dtype)
    if dtype.kind == "U":
        return values.astype(str)
    return values.astype(dtype)


def _attrs_of(attrs: dict[str, Any] | None) -> dict[str, Any]:
    """Attributes from the manifest: JSON has no NaN, so the manifest holds a NaN attribute
    as null; storage refuses None attributes, so a null can only have been a NaN."""
    def nan(value: Any) -> Any:
        if value is None:
            return float("nan")
        if isinstance(value, list):
            return [nan(v) for v in value]
        return value

    return {k: nan(v) for k, v in (attrs or {}).items()}


def _coordinate(tpl: dict[str, Any]) -> xr.Variable:
    return xr.Variable(tuple(tpl["dims"]), _template_array(tpl), _attrs_of(tpl.get("attrs")))


def _store_block(run_dir: str, header: dict[str, Any], name: str, n: int) -> int:
    """Calls per dask block of a variable read from the zarr store alone: whole chunks,
    ~100,000 calls (a store reads ~1-2 us a call: a block then takes ~0.1-0.2 s, and a
    million calls are 10 blocks, not 1000 of ~5 ms of dask and zarr overhead each)."""
    chunk = call_chunk(run_dir, header, name)
    if chunk is None:
        return _MAX_BLOCK_CALLS_BY_RANGE
    return max(chunk, _MAX_BLOCK_CALLS_IN_STORE // chunk * chunk)


def _readable(manifest: Manifest) -> np.ndarray:
    return (manifest.status == DONE) & manifest.fmt.isin(("h5", "zarr", None))


def _in_store(manifest: Manifest) -> np.ndarray:
    """Calls read from the run's store rather than their own payload (its backend says)."""
    name = manifest.header.get("storage") or DEFAULT
    cls = backend_class(name) if name in names() else backend_class(DEFAULT)
    return np.asarray(cls.reader_options(manifest)["in_store"], bool)


def _status_labels(manifest: Manifest) -> np.ndarray:
    labels = np.array(STATUS_NAMES, dtype="<U7")[manifest.status]
    pickled = manifest.fmt.equals("pickle")
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
    block = _MAX_BLOCK_CALLS_BY_RANGE
    sizes: dict[str, tuple[int, str]] = {}
    masks: dict[Hashable, xr.Variable] = {}
    user_attrs: dict[str, Any] = {}
    by_range = bool(config.get("read.byte-ranges"))
    for name, rec in manifest.variables.items():
        checked = _shapes_checked(name, rec)
        shapes = (list(checked) if readable.all() else
                  [s if readable[i] else None for i, s in enumerate(checked)])
        uniform = _uniform(shapes)
        present = shapes[:1] if uniform else [s for s in shapes if s is not None]
        ragged = not uniform and any(s != present[0] for s in present)
        gaps = not uniform and (len(present) < n or ragged)
        native = dtype_of(rec.dtype, rec.attrs)
        dtype, fill = _output_dtype(native, gaps, mask_integers)
        masked = bool(rec.attrs.get(MASKED_ATTR))
        ranges = Ranges.of(rec, manifest.size, name) if by_range else None
        arr = CallStackArray(run_dir, header, name, shapes, native, dtype, fill, in_store,
                             sizes=manifest.size, spans=rec.spans, ranges=ranges)
        arr.masked_nan = masked and dtype.kind in "fc"
        in_files = arr.present & ~in_store
        if not in_files.any():  # all in the zarr store: blocks of whole chunks
            block = max(block, _store_block(run_dir, header, name, n))
        elif ranges is None or arr.masked_nan or not ranges.usable[in_files].all():
            block = min(block, _MAX_BLOCK_CALLS)  # some calls are for h5py
        if _needs_mask(gaps, masked, dtype):
            marr = CallStackArray(run_dir, header, name, shapes, native, dtype, fill, in_store,
                                  mask=True, sizes=manifest.size,
                                  gaps_only=not masked and bool(rec.attrs.get(MASKS_KNOWN)))
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
                          _attrs_of(own_attrs(rec.attrs)))
        per_call = max(1, int(np.prod(arr.maxshape, dtype=np.int64)) * max(dtype.itemsize, 8))
        block = min(block, max(1, _BLOCK_BYTES // per_call))
        data_vars[name] = var
        if ragged:
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
        dtype, fill = _output_dtype(native, True, False)  # a coordinate keeps its dtype too
        arr = CallStackArray(run_dir, manifest.header, cname, cshapes, native, dtype, fill,
                             in_store, store_name=per_call(cname), sizes=manifest.size)
        out = f"{cname}_per_call" if cname in cdims else cname
        coords[out] = xr.Variable((dim, *cdims), indexing.LazilyIndexedArray(arr),
                                  _attrs_of(tpl.get("attrs")))


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
    verify: bool = False,
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
        Calls per dask block ("auto": up to 10,000 calls read by byte range, 1000 when some
        are read with h5py, and at most 64 MiB); None for lazily indexed
        arrays without dask.
    mask_integers : bool
        False (default): every result keeps its dtype; calls without a value are named by
        the ``status`` coordinate and the boolean variable ``<name>_mask``. True: integer
        and boolean results with such gaps become float64 with NaN there (as xarray does for
        masked integers), with a warning when a value is beyond 2**53 and so not exact.
    drop_variables : iterable of str, optional
        Variables not to open.
    verify : bool
        Check every payload's whole-file checksum (and size) against the manifest now, and
        raise one error listing every bad payload. Without it, each read checks the size of
        the payloads it opens and the checksum of the data bytes it reads.

    Returns
    -------
    xarray.Dataset
        One variable per return value (leading dimension ``dim``, one entry per call), the
        coordinates ``dim``, ``status`` and the split arguments, ``<name>_mask`` where gaps
        cannot read NaN, and the run's metadata as attributes (see docs/results.md).

    Raises
    ------
    ResultsLayoutError
        ``path`` holds no run, or results cannot be stacked (differing dimensions).
    PayloadCorruptError
        ``verify=True`` and some payloads are missing, emptied, truncated or changed (all
        are listed, with their calls). Reads raise it too, for the payload they read.
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
        mask_integers=mask_integers, drop_variables=drop_variables, verify=verify,
    )


def dataset_for(path: str | os.PathLike[str], *, dim: str = "call",
                mask_integers: bool = False, verify: bool = False) -> xr.Dataset:
    """The lazy Dataset of the run at ``path`` (what the xarray backend returns)."""
    run_dir = locate_run(path)
    manifest = load_manifest(run_dir)
    if manifest.state in ("running", "interrupted", "rebuilt"):
        refresh_pending(manifest, run_dir)
    if verify:
        bad = verify_run(run_dir, manifest)
        if bad:
            raise PayloadCorruptError.for_calls(bad)
        if unchecked_calls(manifest):  # it would pass a same-size change silently
            warnings.warn(
                f"this run ({run_dir}) recorded no checksums (acme_xr.payload.checksums was "
                "off): verify checks sizes only, so a payload changed in place at the same "
                "size is not found", UserWarning, stacklevel=3)
    return build_dataset(run_dir, manifest, dim=dim, mask_integers=mask_integers)
