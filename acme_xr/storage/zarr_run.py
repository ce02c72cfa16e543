"""``storage="zarr"``: every call's results in one zarr (v3) store ``<func>.zarr``
(:class:`~acme_xr.storage.zarr.ZarrStore`).

The store's arrays are created by the client once a call has shown a variable's shape
(:meth:`ZarrRun.collected`); calls that come before, or do not fit, write ordinary HDF5
payloads, moved into the store by :meth:`ZarrRun.finalize` where they fit.

Examples
--------
>>> import tempfile
>>> backend = ZarrRun(output_dir=tempfile.mkdtemp(), stem="f", n_calls=2)
>>> os.path.basename(backend.store), backend.locations()["store"]
('f.zarr', 'f.zarr')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import ResultsLayoutError
from ..manifest import DONE, Manifest
from .base import Written, describe, payload_name
from .per_call import HdfPayloads
from .values import Variable
from .zarr import STORE_SUFFIX, ZarrStore

__all__ = ["ZarrRun"]


@dataclass(frozen=True)
class ZarrRun(HdfPayloads):
    """One zarr store for every call (HDF5 payloads for the calls that do not fit it yet)."""

    name = "zarr"

    @property
    def container(self) -> str | None:
        return None

    @property
    def store(self) -> str | None:
        return os.path.join(self.output_dir, f"{self.stem}{STORE_SUFFIX}")

    @cached_property
    def zarr(self) -> ZarrStore:
        """The run's store (opened once per process that uses it)."""
        assert self.store is not None
        return ZarrStore(self.store, self.n_calls, checksums=self.checksums)

    def zarr_store(self, n_calls: int) -> ZarrStore:
        assert self.store is not None
        return ZarrStore(self.store, n_calls, checksums=self.checksums)

    def locations(self) -> dict[str, Any]:
        assert self.store is not None
        return {**super().locations(), "store": os.path.basename(self.store)}

    def prepare(self) -> None:
        super().prepare()
        assert self.store is not None
        ZarrStore(self.store, 0).create()

    def write_variables(self, i: int, variables: list[Variable],
                        templates: dict[str, dict[str, Any]]) -> Written:
        if self.zarr.write(i, variables):
            return Written("zarr", describe(variables, templates), None)
        return super().write_variables(i, variables, templates)

    def stored(self, i: int, templates: dict[str, dict[str, Any]]) -> Written | None:
        found = super().stored(i, templates)
        if found is not None or os.path.exists(self.payload(i, "h5")):
            return found
        meta = self.zarr.stored_call(i)
        return None if meta is None else Written("zarr", meta, None)

    def collected(self, written: Sequence[Written], manifest: Manifest) -> None:
        """Create the store's arrays once a call has shown their shapes (calls that come
        before write HDF5 payloads, moved into the store at the end)."""
        for w in written:
            if w.meta and w.fmt == "h5":
                self.zarr.ensure_arrays(w.meta, manifest.coord_templates)

    def file_of(self, manifest: Manifest, i: int) -> str | None:
        if manifest.status[i] == DONE and manifest.fmt[i] == "zarr":
            return self.store
        return super().file_of(manifest, i)

    @classmethod
    def reader_options(cls, manifest: Manifest) -> dict[str, Any]:
        return {"in_store": np.array([f == "zarr" for f in manifest.fmt], bool)}

    def finalize(self, manifest: Manifest) -> str | None:
        """Move the calls still in payload files into the zarr store where they fit, and
        store the coordinates that are the same in every call once."""
        store = self.zarr_store(manifest.n_inputs)
        assert store is not None and self.store is not None
        staged = [(int(i), self.payload(int(i))) for i in manifest.indices(DONE)
                  if manifest.fmt[i] == "h5" and os.path.exists(self.payload(int(i)))]
        for i in store.absorb(staged):
            manifest.fmt[i] = "zarr"
            manifest.forget_sums(i)  # the payload is gone; its chunks carry their own CRCs
        shared: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = {}
        for rec in manifest.variables.values():
            for cname, tok in rec.coords.items():
                if tok is not None and manifest.coord_templates.get(tok):
                    tpl = manifest.coord_templates[tok]
                    values = np.asarray(tpl["values"])
                    dtype = np.dtype(tpl["dtype"])
                    values = (values.astype(np.int64).view(dtype) if dtype.kind in "Mm"
                              else values.astype(dtype))
                    shared[cname] = (tuple(tpl["dims"]), values, tpl.get("attrs") or {})
        store.write_coordinates(shared)
        store.remove_partials()
        store.consolidate()
        return self.store

    @classmethod
    def damaged(cls, run_dir: str, manifest: Manifest) -> dict[int, tuple[str, str]]:
        """Calls with a chunk whose CRC-32C does not match (zarr checks each as it reads)."""
        from .zarr import mask_of

        if not manifest.header.get("store"):
            return {}
        store = os.path.join(run_dir, manifest.header["store"])
        calls = [i for i in range(manifest.n_inputs)
                 if manifest.status[i] == DONE and manifest.fmt[i] == "zarr"]
        names = [n for v in manifest.variables for n in (v, mask_of(v))]
        return {i: (store, chunk)
                for i, chunk in ZarrStore(store, 0).damaged_calls(names, calls).items()}

    @classmethod
    def rebuild(cls, run_dir: str, files: dict[str, dict[int, str]]) -> Manifest | None:
        """The manifest of a ``storage="zarr"`` run: calls whose chunks are all in the store,
        and calls left as payload files; None without a store."""
        import zarr

        from ..scan import _scan_into, common_header

        stores = sorted(name for name in os.listdir(run_dir) if name.endswith(STORE_SUFFIX)
                        and os.path.isdir(os.path.join(run_dir, name)))
        if not stores:
            return None
        store_name = stores[0]  # its calls that did not fit stay payload files

        stem = store_name[: -len(STORE_SUFFIX)]
        path = os.path.join(run_dir, store_name)
        try:
            root = zarr.open_group(path, mode="r", zarr_format=3)
            lengths = [arr.shape[0] for _, arr in root.arrays()
                       if (getattr(arr.metadata, "dimension_names", None) or ("",))[0] == "call"]
        except Exception as exc:  # zarr raises its own types for a damaged store
            raise ResultsLayoutError(f"cannot rebuild the manifest of {run_dir}: its zarr store "
                                     f"{path} cannot be read ({exc})") from exc
        calls = files.get(stem, {})
        n = max([*lengths, max(calls, default=-1) + 1])
        if n == 0:
            raise ResultsLayoutError(f"cannot rebuild the manifest of {run_dir}: its zarr store "
                                     f"{path} holds no calls and there are no payload files")
        header = {"payload": payload_name(stem, "{i}"), "group": None, "source": "acme_xr",
                  "storage": "zarr", "store": store_name, "container": None,
                  **common_header(stem)}
        manifest = Manifest.new(n, header)
        manifest.state = "rebuilt"
        store = ZarrStore(path, n)
        for i in range(n):
            if calls.get(i) == "h5":
                _scan_into(manifest, run_dir, i)
            elif (meta := store.stored_call(i)) is not None:
                manifest.record_done(i, "zarr", meta, None)
        return manifest
