"""``single_file=True``: every call ends up in ``<func>.h5`` itself, group ``comp_<i>``.

The workers write ordinary payloads into ``<func>_parts/``; when the calls are done they
are merged into the container and the parts removed. With ``result_shape`` ``result_0``
of every call is one row of the dataset ``result_0``. A value HDF5 cannot hold is pickled
and kept as ``<output_dir>/<func>_<i>.pickle`` (ACME's name for its pickles).

Examples
--------
>>> import tempfile
>>> backend = SingleFile(output_dir=tempfile.mkdtemp(), stem="f")
>>> os.path.basename(backend.payload_dir), backend.locations()["group"]
('f_parts', 'comp_{i}')
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..manifest import DONE
from .atomic import atomic_path
from .base import payload_name
from .per_call import HdfPayloads

if TYPE_CHECKING:
    import h5py

    from ..manifest import Manifest

__all__ = ["SingleFile", "STACKED_MASK"]


@dataclass(frozen=True)
class SingleFile(HdfPayloads):
    """Per-call payloads merged into one container at the end."""

    # its finalize merges the payloads into one file: no container of links to write live
    live_container = False

    name = "single_file"

    @property
    def payload_dir(self) -> str:
        """A temporary directory of the per-call files, removed once they are merged."""
        return os.path.join(self.output_dir, f"{self.stem}_parts")

    def locations(self) -> dict[str, Any]:
        container = os.path.basename(self.container)  # type: ignore[type-var]
        stacked = None
        if self.result_shape is not None:
            stacked = {"result_0": {"dataset": "result_0",
                                    "axis": self.result_shape.index(None)}}
        return {"payload": container, "group": "comp_{i}", "stacked": stacked,
                "container": container}

    def file_of(self, manifest: Manifest, i: int) -> str | None:
        if manifest.status[i] != DONE:
            return None
        return self.kept_pickle(i) if manifest.fmt[i] == "pickle" else self.container

    def results(self, manifest: Manifest) -> list[Any]:
        return [self.container]

    def finalize(self, manifest: Manifest) -> str | None:
        done = [int(i) for i in manifest.indices(DONE) if manifest.fmt[i] == "h5"]
        try:
            self._merge_single_file(manifest, done)
        except (ValueError, TypeError) as exc:
            raise self.shape_error(manifest, exc) from exc
        return self.container

    def kept_pickle(self, i: int) -> str:
        """Where a single_file run keeps call ``i``'s pickle (a value HDF5 cannot hold)."""
        return os.path.join(self.output_dir, payload_name(self.stem, i, "pickle"))

    def _merge_single_file(self, manifest: Manifest, done: list[int]) -> None:
        """Copy every per-call file into ``<func>.h5``, then remove the per-call files.

        Calls merged by an earlier (interrupted, then resumed) compute have no per-call
        file any more: they are copied from the previous ``<func>.h5``. Pickled calls keep
        their pickle, moved to ``<output_dir>/<func>_<i>.pickle`` (the manifest says
        "pickled": removing it would lose the call's only copy).
        """
        import h5py

        from .checksums import file_sums

        axis = None if self.result_shape is None else self.result_shape.index(None)
        assert self.container is not None
        with contextlib.ExitStack() as stack:
            old = None
            if os.path.exists(self.container):
                old = stack.enter_context(h5py.File(self.container, "r"))
            self._merge_into(manifest, done, axis, old)
        # values HDF5 cannot hold were pickled beside the parts: keep them, as
        # <output_dir>/<func>_<i>.pickle (the name ACME gives its pickles), before the
        # parts go
        for i in manifest.indices(DONE):
            part = self.payload(int(i), "pickle")
            if manifest.fmt[i] == "pickle" and os.path.exists(part):
                os.replace(part, self.kept_pickle(int(i)))
        shutil.rmtree(self.payload_dir, ignore_errors=True)
        # the per-call sums described the parts: the container is checked as a whole
        for i in done:
            manifest.forget_sums(i)
        if manifest.header.get("checksum"):
            manifest.header["container_sums"] = list(file_sums(self.container))

    def _merge_into(self, manifest: Manifest, done: list[int], axis: int | None,
                    old: h5py.File | None) -> None:
        import h5py

        from . import hdf5

        with atomic_path(self.container) as tmp:  # type: ignore[arg-type]
            with h5py.File(tmp, "w") as dst:
                stacked = None
                if self.result_shape is not None:
                    rec = manifest.variables.get("result_0")
                    shape = [manifest.n_inputs if s is None else int(s) if np.isfinite(s) else
                             max((sh[j] for sh in (rec.shapes if rec else []) if sh), default=0)
                             for j, s in enumerate(self.result_shape)]
                    # the stacking axis is absent from each call's shape: re-index per axis
                    fill = np.nan if self.result_dtype.kind in "fc" else 0
                    stacked = dst.create_dataset("result_0", shape=tuple(shape),
                                                 dtype=self.result_dtype, fillvalue=fill)
                for i in done:
                    if not os.path.exists(self.payload(i)) and old is not None:
                        grp = dst.create_group(f"comp_{i}")
                        hdf5.write_variables(grp, hdf5.read_variables(old[f"comp_{i}"]))
                        if stacked is not None:
                            _copy_stacked_mask(old[f"comp_{i}"], grp)
                            prev = old["result_0"][(slice(None),) * axis + (i,)]  # type: ignore[operator]
                            where: list[slice | int] = [slice(0, n) for n in prev.shape]
                            where.insert(axis, i)  # type: ignore[arg-type]
                            stacked[tuple(where)] = prev
                        continue
                    with h5py.File(self.payload(i), "r") as src:
                        variables = hdf5.read_variables(src)
                    mask = None
                    if stacked is not None:
                        first = next(v for v in variables if v.name == "result_0")
                        sel: list[slice | int] = [slice(0, n) for n in first.data.shape]
                        sel.insert(axis, i)  # type: ignore[arg-type]
                        stacked[tuple(sel)] = first.data
                        mask = first.mask
                        variables = [v for v in variables if v.name != "result_0"]
                    grp = dst.create_group(f"comp_{i}")
                    hdf5.write_variables(grp, variables)
                    if mask is not None:
                        # the stacked dataset holds values only: the mask of a masked
                        # result_0 stays with its call, where open_results reads it
                        grp.require_group(hdf5.META_GROUP).create_dataset(
                            STACKED_MASK, data=mask)


STACKED_MASK = "mask_0"


def _copy_stacked_mask(src: h5py.Group, dst: h5py.Group) -> None:
    import h5py

    from . import hdf5

    meta = src.get(hdf5.META_GROUP)
    if isinstance(meta, h5py.Group) and STACKED_MASK in meta:
        dst.require_group(hdf5.META_GROUP).create_dataset(STACKED_MASK,
                                                          data=meta[STACKED_MASK][()])
