"""``storage="zarr"``: every call's results in one zarr (v3) store ``<func>.zarr``
(:class:`~acme_xr.storage.zarr.ZarrStore`), batch-chunked
(:mod:`acme_xr.storage.zarr_batch`).

Before the run's batches are submitted, its first call runs alone (the probe): its result
shows every variable's shape and dtype, its time the chunk length, and the client creates
the arrays (:meth:`ZarrRun.chunking`). Every other batch is one chunk's calls; its task
writes their values as whole chunks at its end (:meth:`ZarrRun.write_batch`), and opens
each array once per worker process. The probe's call, and calls whose results do not fit
the arrays (another shape: *ragged* results, or a dtype zarr cannot hold), write ordinary
HDF5 payloads as in ``storage="hdf5"``, moved into the store by :meth:`ZarrRun.finalize`
where they fit; the others stay payload files, which :func:`acme_xr.open_results` reads
(and pads) beside the store: nothing is truncated. A call whose variable is larger than
the probe's therefore costs one payload file.

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
from .base import Written, check_shape, describe, payload_name
from .per_call import HdfPayloads, _plain_array
from .values import NotStorable, Variable, to_variables
from .zarr import STATUS, STORE_SUFFIX, ZarrStore

__all__ = ["ZarrRun"]

RESULT_0 = "result_0"




@dataclass(frozen=True)
class ZarrRun(HdfPayloads):
    """One zarr store for every call (HDF5 payloads for the calls that do not fit it yet)."""

    name = "zarr"
    # the worker hands over a batch's results at its end (write_rows), not call by call
    batched = True

    @property
    def container(self) -> str | None:
        return None

    @property
    def store(self) -> str | None:
        return os.path.join(self.output_dir, f"{self.stem}{STORE_SUFFIX}")

    @cached_property
    def zarr(self) -> ZarrStore:
        """The run's store (opened once per process that uses it; its arrays too)."""
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

    # -- batch-chunked writes (acme_xr.storage.zarr_batch) -----------------------------
    def stage(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
              warnings: list[str]) -> tuple[Written, dict[str, Any] | None]:
        """Check call ``i``'s result as :meth:`write_call` does; return its record and the
        values to write with the batch (None: written now, as a payload file).

        Raises
        ------
        ResultShapeError
            ``result_0`` does not fit ``result_shape``.
        StorageError
            A payload file could not be written.
        """
        plain = _plain_array(result)
        key = None if plain is None else (plain.dtype.str, plain.shape)
        last = self.zarr.plain  # read once: another thread may replace it meanwhile
        if plain is not None and last is not None and key == last[0]:
            # a plain array like the last one that fitted: the same record and array, no
            # to_variables/fits/describe (3/4 of a tiny call's worker time, ~15 us)
            return Written("zarr", last[1], None), {RESULT_0: plain.copy()}
        try:
            variables = to_variables(result)
            if self.result_shape is not None:
                check_shape(self.result_shape, variables)
        except NotStorable:
            return self.write_call(i, result, templates, warnings), None
        items = self.zarr.fits(variables)
        if items is None:  # no arrays yet (the probe), or ragged: a payload file
            try:
                return super().write_variables(i, variables, templates), None
            except NotStorable:  # e.g. an attribute HDF5 cannot hold: pickled, with a warning
                return self.write_call(i, result, templates, warnings), None
        # the values as they are now: written at the batch's end, by when a function that
        # refills and returns one array has changed it (~0.2 us per small array)
        items = {name: value.copy() for name, value in items.items()}
        meta = describe(variables, templates)
        previous = self.zarr.last_meta  # read once (a worker's threads share the store)
        if meta == previous:
            # one object for a chunk's calls: pickled once per batch, not per call (the
            # client unpickled 1,000,000 equal descriptions: ~3.6 us a call, 5x the bytes)
            meta = previous
        self.zarr.last_meta = meta
        # the next plain array of this dtype and shape fits the same way (what fits()
        # checks: the array's dtype and per-call shape; the store never loses an array)
        self.zarr.plain = ((key, meta) if key is not None and list(items) == [RESULT_0]
                           else None)
        return Written("zarr", meta, None), items

    def write_rows(self, batch: Sequence[int], rows: Sequence[tuple[int, Any]]) -> None:
        """Write the staged values ``rows`` of the batch ``batch`` as whole chunks.

        Raises
        ------
        StorageError
            The store could not be written (the message names it).
        """
        from .base import storage_error
        from .zarr_batch import write_rows

        try:
            write_rows(self.zarr, batch, rows)
        except OSError as exc:
            raise storage_error(str(self.store), exc) from exc

    def write_batch(self, calls: Sequence[tuple[int, Any]],
                    templates: dict[str, dict[str, Any]], warnings: list[str]) -> list[Written]:
        staged = [(i, self.stage(i, result, templates, warnings)) for i, result in calls]
        self.write_rows([i for i, _ in calls],
                        [(i, items) for i, (_, items) in staged if items is not None])
        return [w for _, (w, _) in staged]

    def stored_batch(self, indices: Sequence[int],
                     templates: dict[str, dict[str, Any]]) -> list[Written | None]:
        """What the store holds of a batch's calls, from one read of its status chunk
        (a batch dask runs again after its worker died wrote its chunk already)."""
        from .zarr_batch import done_calls

        self.zarr.recheck()  # arrays the client created since this process last looked
        if self.zarr.array(STATUS) is None:
            return [None] * len(indices)
        done = done_calls(self.zarr, indices)
        if not done.any():
            return [None] * len(indices)
        meta = self.zarr.stored_call(int(indices[int(done.argmax())]))
        return [Written("zarr", meta, None) if d and meta is not None else None for d in done]

    def chunking(self, manifest: Manifest, slots: int, per_call: float | None,
                 batch_size: int | None = None) -> int | None:
        """Choose the run's chunk length from its first finished call (``batch_size``: the
        user's) and create the store's arrays (on the client, before the other batches);
        None while no call is done."""
        from .zarr_batch import chunk_length, largest_call_bytes

        meta = self.zarr.first_meta
        if meta is None:
            return None
        length = batch_size or chunk_length(manifest.n_inputs, slots, per_call,
                                            largest_call_bytes(meta))
        self.zarr.chunk = length
        self.zarr.decided = True
        self.zarr.ensure_arrays(meta, manifest.coord_templates)
        return self.existing_chunk()

    def existing_chunk(self) -> int | None:
        """The chunk length of the store's arrays (a resumed run), None without arrays."""
        status = self.zarr.array(STATUS)
        if status is None:
            return None
        self.zarr.decided = True
        return int(status.chunks[0])

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

    collected_formats = ("h5",)

    def collected(self, written: Sequence[Written], manifest: Manifest) -> None:
        """Create the store's arrays once a call has shown their shapes (calls that come
        before write HDF5 payloads, moved into the store at the end); with ``deferred``
        (a batch-chunked run), only once :meth:`chunking` has chosen the chunk length."""
        for w in written:
            if w.meta and w.fmt == "h5":
                if self.zarr.deferred and not self.zarr.decided:
                    if self.zarr.first_meta is None:
                        self.zarr.first_meta = w.meta
                    continue
                self.zarr.ensure_arrays(w.meta, manifest.coord_templates)

    def file_of(self, manifest: Manifest, i: int) -> str | None:
        if manifest.status[i] == DONE and manifest.fmt[i] == "zarr":
            return self.store
        return super().file_of(manifest, i)

    def results(self, manifest: Manifest) -> list[Any]:
        """The store for each call in it, the payload file of each call kept as one (None:
        not done); one list built at once, not one look-up per call."""
        in_store = (manifest.status == DONE) & self.reader_options(manifest)["in_store"]
        out: list[Any] = [self.store] * manifest.n_inputs
        others = np.flatnonzero(~in_store).tolist()
        for i, path in zip(others, self.payload_files(manifest, others), strict=True):
            out[i] = path
        return out

    @classmethod
    def reader_options(cls, manifest: Manifest) -> dict[str, Any]:
        return {"in_store": manifest.fmt.equals("zarr")}

    def finalize(self, manifest: Manifest) -> str | None:
        """Move the calls still in payload files into the zarr store where they fit, and
        store the coordinates that are the same in every call once."""
        store = self.zarr_store(manifest.n_inputs)
        assert store is not None and self.store is not None
        self.adopt(store, manifest)
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

    @staticmethod
    def adopt(store: ZarrStore, manifest: Manifest) -> int:
        """Record as done the pending calls whose chunk the store holds (they finished
        after their outcome last reached the client: an interruption); return how many."""
        from ..manifest import PENDING
        from .zarr_batch import done_calls

        pending = [int(i) for i in manifest.indices(PENDING)]
        if not pending or store.array(STATUS) is None:
            return 0
        done = done_calls(store, pending)
        calls = [i for i, d in zip(pending, done, strict=True) if d]
        meta = store.stored_call(calls[0]) if calls else None
        if meta is None:
            return 0
        for i in calls:
            manifest.record_done(i, "zarr", meta, None)
        return len(calls)

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
        if store.array(STATUS) is not None:  # the status says which calls are whole
            for i in range(n):
                if calls.get(i) == "h5":
                    _scan_into(manifest, run_dir, i)
            ZarrRun.adopt(store, manifest)
            return manifest
        for i in range(n):
            if calls.get(i) == "h5":
                _scan_into(manifest, run_dir, i)
            elif (meta := store.stored_call(i)) is not None:
                manifest.record_done(i, "zarr", meta, None)
        return manifest
