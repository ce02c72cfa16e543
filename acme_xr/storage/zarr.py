"""``storage="zarr"``: every call's results in one zarr (v3) store ``<output_dir>/<func>.zarr``.

Each result variable is one array of shape ``(n_calls, *shape)`` with dimension names
``("call", *dims)``, chunked along ``call`` by the run's batch length (``chunk``; see
:mod:`acme_xr.storage.zarr_batch`: each task writes its batch's chunks whole), so that no
two workers share a chunk: no locks, no pile of small files. zarr writes each chunk under a
temporary name and renames it. The int8 array ``_acme_xr_status`` (:data:`STATUS`) marks
the calls the store holds whole.

The arrays are created by the client once the first calls have reported their shapes and
dtypes. A call that finishes before that, or whose result does not fit the arrays (a
different shape), is written as an ordinary HDF5 payload instead; when the run ends, every
payload that fits is moved into the store. Results whose shape varies between calls
therefore stay readable: :func:`acme_xr.open_results` reads each call from where it is.

The mask of a masked-array result is the boolean array ``_acme_xr_mask_<name>`` beside it.
Structured (compound) dtypes are stored with zarr-python's ``structured`` data type, which
has no zarr v3 specification yet: zarr-python reads it back exactly, other zarr libraries
may not (zarr's ``UnstableSpecificationWarning`` is silenced for it here).

Examples
--------
>>> import os, tempfile, numpy as np
>>> from acme_xr.storage.values import to_variables
>>> store = ZarrStore(os.path.join(tempfile.mkdtemp(), "f.zarr"), n_calls=3)
>>> store.create()
>>> meta = (("result_0", (2,), "<f8", ("result_0_dim_0",), None, None),)
>>> store.ensure_arrays(meta, templates={})
>>> store.write(1, to_variables(np.array([1.0, 2.0])))
True
>>> store.array("result_0")[1].tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .values import MASKED_ATTR, RESERVED_PREFIX, Variable, dtype_of

__all__ = ["ZarrStore", "STORE_SUFFIX", "STATUS", "per_call", "mask_of", "items_of"]

log = logging.getLogger(__name__)

STORE_SUFFIX = ".zarr"
_RECHECK_SECONDS = 0.5
# per call: 0 not written, 1 done (the manifest's PENDING and DONE codes)
STATUS = f"{RESERVED_PREFIX}status"
_CONFIG = {"write_empty_chunks": True}  # a chunk equal to the fill value still marks a done call


def per_call(coordinate: str) -> str:
    """Name of the array holding a coordinate's value in every call."""
    return f"{coordinate}_per_call"


def call_chunk(run_dir: str, header: dict[str, Any], name: str) -> int | None:
    """Calls per chunk of the run's stored array ``name`` (from its ``zarr.json``, without
    opening the store); None when the run has no store or the array is not in it."""
    store = header.get("store")
    if not store:
        return None
    try:
        with open(os.path.join(run_dir, store, name, "zarr.json"), encoding="utf-8") as fh:
            meta = json.load(fh)
        return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def mask_of(name: str) -> str:
    """Name of the array holding the mask of a masked variable ``name``."""
    return f"{RESERVED_PREFIX}mask_{name}"


def items_of(variables: Sequence[Variable]) -> dict[str, np.ndarray]:
    """Array name -> data of one call's variables (masks and per-call coordinates too)."""
    items: dict[str, np.ndarray] = {v.name: v.data for v in variables}
    for v in variables:
        if v.mask is not None:
            items[mask_of(v.name)] = v.mask
    for v in variables:
        for c in v.coords if v.labelled else ():
            items.setdefault(per_call(c.name), c.data)
    return items


@contextlib.contextmanager
def quiet_dtypes() -> Iterator[None]:
    """Silence zarr's warning that a dtype (structured, bytes) has no v3 specification yet:
    acme_xr chose to store them (zarr-python reads them back exactly); see the module doc."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


def _fill_value(dtype: np.dtype) -> Any:
    if dtype.kind == "V":
        return np.zeros((), dtype)[()]
    if dtype.kind == "S":
        return b""
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind in "Mm":
        return dtype.type("NaT")
    if dtype.kind == "U":
        return ""
    return 0


def _compressors(checksums: bool) -> dict[str, Any]:
    """zarr's default compressor, plus the crc32c codec with checksums (per chunk)."""
    if not checksums:
        return {}
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": (ZstdCodec(level=0, checksum=False), Crc32cCodec())}


def _zarr_dtype(dtype: np.dtype) -> Any:
    return str if dtype.kind in "UO" else dtype


class ZarrStore:
    """The zarr store of one run (used on the client and, pickled, on the workers).

    Parameters
    ----------
    path : str
        Absolute path of the store directory ``<output_dir>/<func>.zarr``.
    n_calls : int
        Number of calls (length of the leading ``call`` axis).
    checksums : bool
        Give the arrays zarr's ``crc32c`` codec: each chunk carries its CRC-32C, which
        zarr checks whenever the chunk is read.
    chunk : int
        Calls per chunk along ``call`` of the arrays this store creates (the run's batch
        length, :mod:`acme_xr.storage.zarr_batch`); 1: one chunk per call.
    """

    def __init__(self, path: str, n_calls: int, checksums: bool = True, chunk: int = 1) -> None:
        self.path = path
        self.n_calls = n_calls
        self.checksums = checksums
        self.chunk = max(1, int(chunk))
        # client side: the arrays wait for the chunk length (deferred) until it is decided;
        # first_meta is the first call's description seen meanwhile
        self.deferred = False
        self.decided = False
        self.first_meta: Any = None
        # worker side: the last call's description, handed out again for an equal one
        self.last_meta: Any = None
        # ((dtype string, shape), record) of the last call that returned a plain array
        # which fitted (ZarrRun.stage's fast path), None when the last call was not one:
        # one attribute, replaced and read whole, so that a worker's threads staging
        # calls at once never pair one call's key with another call's record
        self.plain: tuple[tuple[str, tuple[int, ...]], Any] | None = None
        self._arrays: dict[str, Any] = {}
        self._checked: dict[str, float] = {}
        self._created: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "n_calls": self.n_calls, "checksums": self.checksums,
                "chunk": self.chunk}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["n_calls"],  # type: ignore[misc]
                      state.get("checksums", True), state.get("chunk", 1))

    # -- client side ---------------------------------------------------------------------
    def create(self) -> None:
        """Create the (empty) store; an existing store is kept (resume)."""
        import zarr

        zarr.open_group(self.path, mode="a", zarr_format=3)

    def _create(self, root: Any, name: str, shape: tuple[int, ...], dtype: np.dtype,
                dims: tuple[str, ...], attrs: dict[str, Any] | None) -> None:
        with quiet_dtypes():
            root.create_array(
                name, shape=(self.n_calls, *shape),
                chunks=(min(self.chunk, max(1, self.n_calls)), *(max(1, n) for n in shape)),
                dtype=_zarr_dtype(dtype), fill_value=_fill_value(dtype),
                dimension_names=("call", *dims), attributes=dict(attrs or {}),
                config=_CONFIG,  # type: ignore[arg-type]
                **_compressors(self.checksums),
            )
        self._checked.pop(name, None)  # visible at once in this process

    def damaged_calls(self, names: Sequence[str], calls: Sequence[int]) -> dict[int, str]:
        """Read every chunk of ``calls`` in the arrays ``names``; return call -> what is
        wrong, for the chunks whose checksum (or decoding) fails (``verify=True``)."""
        import zarr

        bad: dict[int, str] = {}
        with quiet_dtypes():
            for name in names:
                try:
                    arr = zarr.open_array(self.path, path=name, mode="r")
                except FileNotFoundError:
                    continue
                for i in calls:
                    if i in bad:
                        continue
                    try:
                        arr[int(i)]
                    except ValueError as exc:  # zarr's crc32c codec: "checksum do not match"
                        bad[int(i)] = f"the chunk of {name!r} is damaged ({exc})"
        return bad

    def ensure_arrays(self, meta: Sequence[tuple[Any, ...]] | None,
                      templates: dict[str, dict[str, Any]]) -> None:
        """Create the arrays for the variables (and their coordinates) of a call's ``meta``.

        ``templates`` are the coordinate descriptions of the manifest: a coordinate ``x``
        of an xarray result gets the array ``x_per_call`` of shape ``(n_calls, *x.shape)``.
        """
        import zarr

        if not meta:
            return
        wanted: list[tuple[str, tuple[int, ...], np.dtype, tuple[str, ...], Any]] = []
        for name, shape, dtype, dims, attrs, coords in meta:
            wanted.append((name, tuple(shape), dtype_of(dtype, attrs), tuple(dims), attrs))
            if (attrs or {}).get(MASKED_ATTR):
                wanted.append((mask_of(name), tuple(shape), np.dtype(bool), tuple(dims), None))
            for tok in (coords or {}).values():
                tpl = templates[tok]
                values = np.asarray(tpl["values"])
                wanted.append((per_call(tpl["name"]), values.shape, np.dtype(tpl["dtype"]),
                               tuple(tpl["dims"]), tpl.get("attrs")))
        # which calls a chunk holds (written last, after their values): resume and a re-run
        # batch read it instead of listing the store
        wanted.append((STATUS, (), np.dtype("int8"), (), None))
        root = None
        for name, shape, dtype, dims, attrs in wanted:
            if name in self._created:
                continue
            self._created.add(name)
            if os.path.exists(os.path.join(self.path, name, "zarr.json")):
                continue
            root = root or zarr.open_group(self.path, mode="a", zarr_format=3)
            if name not in root:
                try:
                    self._create(root, name, shape, dtype, dims, attrs)
                except (TypeError, ValueError) as exc:
                    # a dtype zarr cannot hold: its calls stay HDF5 payloads (read from there)
                    log.info("no zarr array for %r (dtype %s): %s", name, dtype, exc)

    # -- both sides ----------------------------------------------------------------------
    def recheck(self) -> None:
        """Look for arrays not found so far at the next :meth:`array` (once per batch)."""
        self._checked.clear()

    def array(self, name: str) -> Any:
        """The zarr array of variable ``name``, or None while it does not exist."""
        arr = self._arrays.get(name)
        if arr is not None:
            return arr
        now = time.monotonic()
        if now - self._checked.get(name, -1e9) < _RECHECK_SECONDS:
            return None
        self._checked[name] = now
        if not os.path.exists(os.path.join(self.path, name, "zarr.json")):
            return None
        import zarr

        with quiet_dtypes():
            # open_array drops ``config`` (zarr 3.1): without write_empty_chunks a call whose
            # value equals the fill value (an integer 0) would leave no chunk, and look undone
            arr = zarr.open_array(self.path, path=name, mode="r+").with_config(
                _CONFIG)  # type: ignore[call-overload]
        self._arrays[name] = arr
        return arr

    # -- worker side ---------------------------------------------------------------------
    def _fits(self, name: str, data: np.ndarray) -> Any:
        arr = self.array(name)
        if arr is None or tuple(arr.shape[1:]) != data.shape:
            return None
        kind = data.dtype.kind
        stored = np.dtype(arr.dtype)
        if (kind in "UO") != (stored.kind in "UOT") or (kind not in "UO" and stored != data.dtype):
            return None
        return arr

    def fits(self, variables: Sequence[Variable]) -> dict[str, np.ndarray] | None:
        """What call ``variables`` put into which array, or None unless every one fits."""
        items = items_of(variables)
        if not variables or any(self._fits(n, d) is None for n, d in items.items()):
            return None
        return items

    def write(self, i: int, variables: Sequence[Variable]) -> bool:
        """Write call ``i`` into its chunks if every variable fits; False otherwise.

        With more than one call per chunk, zarr reads the chunk and writes it back whole:
        only for a call written on its own (moved from a payload at the end of the run).
        """
        items = self.fits(variables)
        if items is None:
            return False
        try:
            with quiet_dtypes():
                for name, data in items.items():
                    self.array(name)[i] = data
        except (TypeError, ValueError):
            return False  # zarr cannot hold these values: the call goes to an HDF5 payload
        status = self.array(STATUS)
        if status is not None:
            status[i] = 1
        return True

    def stored_call(self, i: int) -> tuple[Any, ...] | None:
        """The manifest description of call ``i`` if all its variables are in the store."""
        import zarr

        if not os.path.isdir(self.path):
            return None
        root = zarr.open_group(self.path, mode="r", zarr_format=3)
        with quiet_dtypes():
            listed = list(root.arrays())
        arrays: dict[str, Any] = {
            name: arr for name, arr in listed
            if not name.endswith("_per_call") and not name.startswith(RESERVED_PREFIX)
            and (getattr(arr.metadata, "dimension_names", None) or ("",))[0] == "call"
        }
        if not arrays or not self.has_call(i, list(arrays)):
            return None
        out = []
        for name, arr in arrays.items():
            dims = tuple(arr.metadata.dimension_names[1:])
            dtype = "<U0" if np.dtype(arr.dtype).kind in "UOT" else np.dtype(arr.dtype).str
            out.append((name, tuple(arr.shape[1:]), dtype, dims, dict(arr.attrs) or None, None))
        return tuple(out)

    def has_call(self, i: int, names: Sequence[str]) -> bool:
        """Whether every named variable has call ``i``'s chunk on disk."""
        for name in names:
            arr = self.array(name)
            if arr is None:
                return False
            key = os.path.join(self.path, name, "c", str(i // arr.chunks[0]),
                               *(["0"] * (arr.ndim - 1)))
            if not os.path.exists(key):
                return False
        return True

    def absorb(self, staged: Sequence[tuple[int, str]]) -> list[int]:
        """Move staged HDF5 payloads that fit into the store; return the calls moved.

        Each payload is deleted only after its chunks are written. Payloads that do not fit
        (another shape) stay where they are.
        """
        import h5py

        from .hdf5 import read_variables

        moved = []
        for i, path in staged:
            with h5py.File(path, "r") as fh:
                variables = read_variables(fh)
            if self.write(i, variables):
                os.unlink(path)
                moved.append(i)
        return moved

    def write_coordinates(
        self, coords: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]
    ) -> None:
        """Store coordinates shared by every call once (so ``xr.open_zarr`` sees them too),
        in place of their ``<name>_per_call`` arrays."""
        import zarr

        root = zarr.open_group(self.path, mode="a", zarr_format=3)
        for name, (dims, values, attrs) in coords.items():
            if per_call(name) in root:
                del root[per_call(name)]
                self._arrays.pop(per_call(name), None)
            if name in root:
                continue
            arr = root.create_array(
                name, shape=values.shape, dtype=_zarr_dtype(values.dtype),
                fill_value=_fill_value(values.dtype), dimension_names=dims,
                attributes=dict(attrs), config=_CONFIG,  # type: ignore[arg-type]
            )
            arr[...] = values

    def consolidate(self) -> None:
        """Write consolidated metadata, which xarray looks for first (``xr.open_zarr``)."""
        import warnings

        import zarr

        with warnings.catch_warnings():
            # "not part of the Zarr format 3 specification": xarray reads it all the same
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self.path, zarr_format=3)

    def remove_partials(self) -> int:
        """Remove chunk files a killed writer left half-written (``*.partial``)."""
        removed = 0
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                if name.endswith(".partial"):
                    os.unlink(os.path.join(root, name))
                    removed += 1
        return removed
