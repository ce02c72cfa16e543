"""The lazy array behind each variable of :func:`acme_xr.open_results`: one variable of every
call, stacked along a leading call axis, read from the payloads (or the zarr store) on demand.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from xarray.core import indexing
>>> from acme_xr import ParallelMap
>>> run = os.path.join(tempfile.mkdtemp(), "run")
>>> _ = ParallelMap(abs, [-1, -2], output_dir=run, verbose=False).compute()
>>> arr = CallStackArray(run, {"payload": "abs_{i}.h5"}, "result_0", [(), ()],
...                      np.dtype(int), np.dtype(int), 0)
>>> arr.shape, arr[indexing.BasicIndexer((slice(None),))].tolist()
((2,), [1, 2])
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Any

import h5py
import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from .errors import MissingPayloadError, PayloadCorruptError
from .integrity import check_read
from .scan import payload_location
from .storage.hdf5 import META_GROUP, decode, find_dataset, read_mask
from .storage.ranges import Ranges, count
from .storage.zarr import ZarrStore, mask_of, quiet_dtypes

__all__ = ["CallStackArray"]

_HDF5_READS = threading.Lock()
_EXACT = 2**53  # integers up to this size are exact in float64
# bytes read by range per copy into the output: a block costs at most this much more memory
_GROUP_BYTES = 4 * 2**20
# a call's data up to this size is read whole for any selection (and its checksum checked):
# that costs less than an HDF5 open; larger ones are read in part
_SMALL_CALL = 2**20


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
    sizes : numpy.ndarray, optional
        Per call: the recorded size of its payload file (-1: not recorded), checked before
        each read (:func:`acme_xr.integrity.check_read`).
    spans : numpy.ndarray, optional
        Per call: (offset, length, checksum) of the variable's data bytes (-1: not
        recorded), checked when a read takes the whole variable.
    ranges : Ranges, optional
        Where the calls' values are as plain bytes: those calls are read with ``pread``
        (:mod:`acme_xr.storage.ranges`), the others with h5py.
    gaps_only : bool
        With ``mask``: the manifest shows that no call stored a mask of its own, so the
        mask is the gaps and the padding, known without opening a payload.
    """

    def __init__(self, run_dir: str, header: dict[str, Any], name: str,
                 shapes: list[tuple[int, ...] | None], native: np.dtype, dtype: np.dtype,
                 fill: Any, in_store: np.ndarray | None = None,
                 store_name: str | None = None, mask: bool = False,
                 sizes: np.ndarray | None = None, spans: np.ndarray | None = None,
                 ranges: Ranges | None = None, gaps_only: bool = False) -> None:
        # every call of one shape (a million-call run, mostly): one C-level pass
        first = shapes[0] if shapes else None
        uniform = first is not None and shapes.count(first) == len(shapes)
        present = [first] if first is not None and uniform else [
            s for s in shapes if s is not None]
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
        # per call: has values / has them at the full shape (a block's look-ups are then
        # array operations, not a Python loop over its calls: 1,000,000 calls of a zarr run)
        if uniform:
            self.present = self.full = np.ones(len(shapes), bool)
        else:
            self.present = np.fromiter((s is not None for s in shapes), bool, len(shapes))
            self.full = np.fromiter((s == self.maxshape for s in shapes), bool, len(shapes))
        # calls whose values are in the run's zarr store rather than in a payload file
        self.in_store = np.zeros(len(shapes), bool) if in_store is None else in_store
        self.store_name = store_name or name
        self.mask = mask
        self.gaps_only = mask and gaps_only
        # sums apply to files of one call only, never to a single_file container's groups
        self.sizes = None if header.get("group") else sizes
        self.spans = None if header.get("group") else spans
        self.ranges = None if header.get("group") or mask else ranges
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
                self.header.get("created"), np.packbits(self.present).tobytes())

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        calls = (np.arange(*key[0].indices(self.shape[0])) if isinstance(key[0], slice)
                 else np.arange(self.shape[0])[key[0]])
        single = np.ndim(calls) == 0
        calls = np.atleast_1d(calls)
        rest = tuple(key[1:])
        shape = (len(calls), *_selected_shape(rest, self.maxshape))
        if self.full[calls].all():
            out = np.empty(shape, self.dtype)  # every element is read: no fill pass
        else:
            out = np.full(shape, self.fill, self.dtype)
        if self.gaps_only:  # False where a call has values, True in gaps and padding
            for j, c in enumerate(calls.tolist()):
                if self.shapes[c] is not None:
                    out[j] = _outer_index(self._pad(np.zeros(self.shapes[c], bool)), rest)
            return out[0] if single else out
        # whole arrays of a plain numeric type go straight from the file into ``out``
        direct = (self.dtype == self.native and self.native.kind in "iufc" and len(rest) > 0
                  and not self.mask and not self.masked_nan
                  and not (self.header.get("stacked") or {}).get(self.name)
                  and all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
                          for k, n in zip(rest, self.maxshape, strict=True)))
        inexact: list[int] = []
        zarr_rows = np.flatnonzero(self.in_store[calls] & self.present[calls])
        if len(zarr_rows):
            data = self._read_store(calls[zarr_rows], rest)
            self._check_exact(data, calls[zarr_rows], inexact)
            out[zarr_rows] = data
        done = None
        if self.ranges is not None and not self.masked_nan:
            done = self._read_ranges(calls, rest, out, inexact)
        # HDF5 serialises all its calls on one lock anyway; threads taking turns at it file by
        # file run at half the speed of one thread reading a whole block (measured: 10,000
        # files, 9.6 s vs 5.2 s), so a block's files are read by one thread at a time
        # (the calls read by range never wait for it)
        need = self.present[calls] & ~self.in_store[calls]
        if done is not None:
            need &= ~done
        left = [(j, int(calls[j])) for j in np.flatnonzero(need).tolist()]
        if left:
            with _HDF5_READS:
                for j, c in left:
                    if direct and self.shapes[c] == self.maxshape:
                        self._read_call(c, rest, into=out[j])
                        continue
                    data = self._read_call(c, rest)
                    self._check_exact(data, [c], inexact)
                    out[j] = data.item() if data.ndim == 0 and self.dtype.kind == "O" else data
        count("h5py", len(left))
        self._warn_inexact(inexact)
        return out[0] if single else out

    def _read_ranges(self, calls: np.ndarray, rest: tuple[Any, ...], out: np.ndarray,
                     inexact: list[int]) -> np.ndarray | None:
        """Read the calls with a recorded byte range into their rows of ``out``; return
        which rows were read (the others are for h5py)."""
        table = self.ranges
        assert table is not None
        rows = np.flatnonzero(table.usable[calls] & ~self.in_store[calls])
        if not len(rows):
            return None
        cs = calls[rows]
        codes = table.codes[cs]
        itemsize = np.array([d.itemsize for d in table.dtypes], np.int64)[codes]
        shapes = [self.shapes[c] for c in cs.tolist()]
        uniform = all(s == self.maxshape for s in shapes)
        counts = (np.full(len(cs), math.prod(self.maxshape)) if uniform else
                  np.array([-1 if s is None else math.prod(s) for s in shapes], np.int64))
        # a call whose length is not its shape's bytes is left to h5py: never guessed
        ok = table.spans[cs, 1] == counts * itemsize
        rows, cs, codes = rows[ok], cs[ok], codes[ok]
        prefix, pattern = os.path.join(self.run_dir, ""), self.header["payload"]
        whole = all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
                    for k, n in zip(rest, self.maxshape, strict=True))
        if not whole and len(cs) and int(table.spans[cs, 1].max()) > _SMALL_CALL:
            # a few elements of large calls: their rows by range, or h5py (which reads
            # only the selection) rather than every byte of every call
            if not uniform:
                return None
            self._read_rows(cs, rows, codes, rest, out, inexact)
            count("range", len(rows))
            done = np.zeros(len(calls), bool)
            done[rows] = True
            return done
        if uniform:
            # one array per group of calls: the per-call cost is the reads alone
            step = max(1, _GROUP_BYTES // max(1, int(table.spans[cs[0], 1]) if len(cs) else 1))
            for k in np.unique(codes).tolist():
                mine = np.flatnonzero(codes == k)
                for start in range(0, len(mine), step):
                    part = mine[start:start + step]
                    calls_part = cs[part].tolist()
                    data = table.read_many(calls_part,
                                           [prefix + pattern.format(i=c) for c in calls_part])
                    arr = np.frombuffer(b"".join(data), table.dtypes[k]).reshape(
                        len(part), *self.maxshape)
                    arr = self._decoded(arr)
                    self._check_exact(arr, calls_part, inexact)
                    out[rows[part]] = _outer_index(arr, (slice(None), *rest))
        else:
            calls_ok = cs.tolist()
            data = table.read_many(calls_ok, [prefix + pattern.format(i=c) for c in calls_ok])
            for j, c, raw, k in zip(rows.tolist(), calls_ok, data, codes.tolist(),
                                    strict=True):
                arr = self._decoded(np.frombuffer(raw, table.dtypes[k]).reshape(self.shapes[c]))
                self._check_exact(arr, [c], inexact)
                out[j] = _outer_index(self._pad(arr), rest)
        count("range", len(rows))
        done = np.zeros(len(calls), bool)
        done[rows] = True
        return done

    def _read_rows(self, cs: np.ndarray, rows: np.ndarray, codes: np.ndarray,
                   rest: tuple[Any, ...], out: np.ndarray, inexact: list[int]) -> None:
        """Read only the rows (along the call's first axis) that ``rest`` selects, from
        the first to the last, of calls of the full shape."""
        table = self.ranges
        assert table is not None
        picked = np.arange(self.maxshape[0])[rest[0]]
        if not picked.size:
            return  # nothing selected: ``out`` has no element for these calls
        lo, hi = int(picked.min()), int(picked.max()) + 1
        key = (picked - lo, *rest[1:])
        prefix, pattern = os.path.join(self.run_dir, ""), self.header["payload"]
        for j, c, k in zip(rows.tolist(), cs.tolist(), codes.tolist(), strict=True):
            row_bytes = math.prod(self.maxshape[1:]) * table.dtypes[k].itemsize
            raw = table.read_many([c], [prefix + pattern.format(i=c)],
                                  part=(lo * row_bytes, (hi - lo) * row_bytes))[0]
            arr = self._decoded(np.frombuffer(raw, table.dtypes[k]).reshape(
                hi - lo, *self.maxshape[1:]))
            self._check_exact(arr, [c], inexact)
            out[j] = _outer_index(arr, key)

    def _decoded(self, arr: np.ndarray) -> np.ndarray:
        """Undo the payload's encodings of stored values, as hdf5.decode does."""
        if self.native.kind == "b":
            return arr.astype(bool)
        if self.native.kind in "Mm":
            return arr.view(self.native)
        return arr

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
            try:
                return self._read_store_quietly(calls, rest)
            except ValueError as exc:  # zarr's crc32c codec: a chunk is not what was written
                if "checksum" not in str(exc):
                    raise
                store = os.path.join(self.run_dir, self.header["store"])
                bad = ZarrStore(store, 0).damaged_calls([self.store_name], calls.tolist())
                path = os.path.join(store, self.store_name)
                raise PayloadCorruptError.for_calls(
                    {i: (path, why) for i, why in bad.items()}
                    or {int(calls[0]): (path, str(exc))}) from exc

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
        # a block's calls are mostly one run of calls: a slice reads its chunks whole,
        # where zarr's orthogonal selection by index array costs ~10x more
        first, last = int(calls[0]), int(calls[-1])
        rows_of: Any = (slice(first, last + 1) if last - first + 1 == len(calls)
                        and bool((np.diff(calls) == 1).all()) else calls)
        if tuple(arr.shape[1:]) == self.maxshape:
            data = np.asarray(arr.get_orthogonal_selection((rows_of, *rest)))
        else:  # some calls (kept as payload files) are larger: pad the stored ones
            rows = np.asarray(arr.get_orthogonal_selection((rows_of,)))
            data = np.stack([_outer_index(self._pad(np.asarray(r)), rest) for r in rows])
        if self.masked_nan:
            try:
                marr = zarr.open_array(store, path=mask_of(self.store_name), mode="r")
            except FileNotFoundError:
                marr = None
            if marr is not None:
                m = np.asarray(marr.get_orthogonal_selection((rows_of,)))
                m = np.stack([_outer_index(self._pad(np.asarray(r)), rest) for r in m])
                data = self._nan_where(m, data)
        return data.astype(object) if self.dtype.kind == "O" else data

    def _nan_where(self, mask: np.ndarray, data: np.ndarray) -> np.ndarray:
        """``data`` with NaN where ``mask``: in the stored float dtype, or in the float dtype
        an integer result is read as (``mask_integers=True``), never NaN cast to an integer."""
        kind = self.native if self.native.kind in "fc" else self.dtype
        return np.where(mask, np.nan, data).astype(kind)

    def _read_call(self, c: int, rest: tuple[Any, ...], into: np.ndarray | None = None) -> Any:
        """Call ``c``'s values at ``rest`` (or read them straight into ``into``)."""
        path, group = payload_location(self.header, self.run_dir, c)
        # a read of every element reads every data byte: check them (cheap, read anyway)
        whole = not self.mask and all(isinstance(k, slice) and k.indices(n) == (0, n, 1)
                                      for k, n in zip(rest, self.maxshape, strict=True))
        size = None if self.sizes is None or self.sizes[c] < 0 else int(self.sizes[c])
        span = None
        if whole and self.spans is not None and self.spans[c, 1] >= 0:
            span = tuple(int(x) for x in self.spans[c])
        check_read(c, path, size, span, self.name)  # type: ignore[arg-type]
        try:
            return self._read_checked(c, path, group, rest, into)
        except PayloadCorruptError:
            raise
        except OSError as exc:  # HDF5 cannot open or read it: damaged, never a result
            raise PayloadCorruptError.for_calls(
                {c: (path, f"HDF5 cannot read it ({exc})")}) from exc

    def _read_checked(self, c: int, path: str, group: str | None, rest: tuple[Any, ...],
                      into: np.ndarray | None) -> Any:
        with h5py.File(path, "r") as fh:
            stacked = (self.header.get("stacked") or {}).get(self.name)
            try:
                if stacked is not None:  # single_file + result_shape: one row of a dataset
                    where: list[Any] = [slice(0, n) for n in self.shapes[c]]  # type: ignore[union-attr]
                    # the stacked dataset holds values only; a masked result_0's mask is
                    # the call group's _acme_xr/mask_0
                    own = fh.get(f"{group}/{META_GROUP}/mask_0") if group else None
                    stored = None if own is None else np.asarray(own[()]).astype(bool)
                    if self.mask:
                        own_shape: tuple[int, ...] = self.shapes[c]  # type: ignore[assignment]
                        full = np.zeros(own_shape, bool) if stored is None else stored
                        return _outer_index(self._pad(full), rest)
                    ds = fh[stacked["dataset"]]
                    where.insert(stacked["axis"], c)
                    full = np.asarray(ds[tuple(where)]).astype(self.native)
                    if self.masked_nan and stored is not None:
                        full = self._nan_where(stored, full)
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
                    full = self._nan_where(stored, full)
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
