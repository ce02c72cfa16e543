"""Where a run's files go, and the files written once the calls are done.

The layout is the specification's: in ``<output_dir>`` (default
``ACME_YYYYMMDD-hhmmss-ffffff`` in the current directory) one payload ``<func>_<i>.h5`` per
call, the results container ``<func>.h5``, the manifest ``manifest.json`` and the log
``<func>.log``. With ``write_pickle=True`` payloads are ``<func>_<i>.pickle`` and there is
no container; with ``single_file=True`` all calls end up in ``<func>.h5`` itself.

Examples
--------
>>> from acme_xr.options import Options
>>> lay = RunLayout.resolve(Options(output_dir="/tmp/run1"), "f")
>>> os.path.basename(lay.payload(3))
'f_3.h5'
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    InputError,
    ResultShapeError,
    ResumeMismatchError,
    RunExistsError,
    StorageError,
)
from .manifest import DONE, MANIFEST_NAME, Manifest
from .options import Options
from .runlock import LOCK_NAME, check_unlocked, is_locked
from .storage import zarr as zarr_store
from .storage.atomic import atomic_path

if TYPE_CHECKING:
    import h5py

# h5py and the HDF5 storage are imported where they are used: a run kept in memory never
# needs them, and their import is a tenth of a second of a cold start.

__all__ = ["RunLayout", "remove_old_runs"]

log = logging.getLogger(__name__)

_RUN_DIR = re.compile(r"^ACME_\d{8}-\d{6}-\d{6}$")


def _timestamped_dir() -> str:
    return os.path.join(
        os.getcwd(), f"ACME_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    )


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run on disk."""

    output_dir: str
    stem: str
    mode: str  # "hdf5" | "pickle" | "single_file" | "zarr"
    result_shape: tuple[float | None, ...] | None = None
    result_dtype: np.dtype = np.dtype("float64")

    @classmethod
    def resolve(cls, options: Options, stem: str) -> RunLayout:
        """Decide the paths (no file-system access)."""
        out = options.output_dir
        out = _timestamped_dir() if out is None else os.path.abspath(os.path.expanduser(out))
        mode = ("pickle" if options.write_pickle else "single_file" if options.single_file
                else "zarr" if options.storage == "zarr" else "hdf5")
        return cls(out, stem, mode, options.result_shape, options.result_dtype)

    # -- paths ---------------------------------------------------------------------------
    @property
    def payload_dir(self) -> str:
        """Directory of the per-call files (a temporary one for single_file runs)."""
        if self.mode == "single_file":
            return os.path.join(self.output_dir, f"{self.stem}_parts")
        return self.output_dir

    def payload(self, i: int, ext: str = "h5") -> str:
        return os.path.join(self.payload_dir, f"{self.stem}_{i}.{ext}")

    @property
    def container(self) -> str | None:
        """The HDF5 results container (None for pickles and zarr stores)."""
        if self.mode in ("pickle", "zarr"):
            return None
        return os.path.join(self.output_dir, f"{self.stem}.h5")

    @property
    def store(self) -> str | None:
        """The zarr store of a ``storage="zarr"`` run."""
        if self.mode != "zarr":
            return None
        return os.path.join(self.output_dir, f"{self.stem}{zarr_store.STORE_SUFFIX}")

    def zarr_store(self, n_calls: int) -> zarr_store.ZarrStore | None:
        from .storage.checksums import enabled

        if self.store is None:
            return None
        return zarr_store.ZarrStore(self.store, n_calls, checksums=enabled())

    @property
    def manifest(self) -> str:
        return os.path.join(self.output_dir, MANIFEST_NAME)

    @property
    def default_logfile(self) -> str:
        return os.path.join(self.output_dir, f"{self.stem}.log")

    def locations(self) -> dict[str, Any]:
        """Where call ``i``'s variables are, as recorded in the manifest (relative paths).

        ``payload``: file pattern; ``group``: group pattern inside it (None: the root);
        ``stacked``: variables stored in one dataset along an axis (single_file with
        result_shape); ``container``: the results container.
        """
        container = None if self.container is None else os.path.basename(self.container)
        if self.mode == "single_file":
            stacked = None
            if self.result_shape is not None:
                stacked = {"result_0": {"dataset": "result_0",
                                        "axis": self.result_shape.index(None)}}
            return {"payload": container, "group": "comp_{i}", "stacked": stacked,
                    "container": container}
        ext = "pickle" if self.mode == "pickle" else "h5"
        where = {"payload": f"{self.stem}_{{i}}.{ext}", "group": None, "stacked": None,
                 "container": container}
        if self.store is not None:
            where["store"] = os.path.basename(self.store)
        return where

    # -- checks and creation -------------------------------------------------------------
    def check(self, resume: bool, holding_lock: bool = False) -> bool:
        """Check the directory can be used; return True when there is a run to resume.

        ``holding_lock``: this process holds the directory's lock (see
        :mod:`acme_xr.runlock`), so it is not asked for.

        Raises
        ------
        RunLockedError
            Another process runs in the directory (it holds its lock).
        RunExistsError
            The directory holds files and ``resume`` is False.
        ResumeMismatchError
            ``resume`` is True but the directory holds files and no manifest: it is not a
            run acme_xr can continue.
        StorageError
            The directory (or its parent) is not a writable directory.
        """
        out = self.output_dir
        if os.path.exists(out):
            if not os.path.isdir(out):
                raise StorageError(
                    f"output_dir {out} exists and is not a directory: choose another path")
            if not holding_lock:
                check_unlocked(out)
            # a lock file alone is what a run killed before its first write leaves
            entries = [e for e in os.listdir(out) if e != LOCK_NAME]
            if entries and not resume:
                raise RunExistsError(
                    f"output_dir {out} already holds {len(entries)} files "
                    f"(e.g. {sorted(entries)[0]!r}); "
                    "acme_xr never overwrites results. Pass resume=True to finish that run, or "
                    "choose a new output_dir"
                )
            if entries and not os.path.exists(self.manifest):
                raise ResumeMismatchError(
                    f"cannot resume {out}: it holds {len(entries)} files (e.g. "
                    f"{sorted(entries)[0]!r}) but no {os.path.basename(self.manifest)}, so it "
                    "is not an acme_xr run; choose a new or empty output_dir"
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise StorageError(f"output_dir {out} is not writable: choose another path")
            return bool(entries)
        base = _nearest_existing(os.path.dirname(out))
        if not os.path.isdir(base) or not os.access(base, os.W_OK | os.X_OK):
            raise StorageError(
                f"cannot create output_dir {out}: {base} is not a writable directory; choose "
                "an output_dir you can write to"
            )
        return False

    def create(self) -> None:
        try:
            os.makedirs(self.payload_dir, exist_ok=True)
            if self.store is not None:
                zarr_store.ZarrStore(self.store, 0).create()
        except OSError as exc:
            raise StorageError(f"cannot create output_dir {self.output_dir}: {exc}") from exc

    # -- after the calls -----------------------------------------------------------------
    def file_of(self, manifest: Manifest, i: int) -> str | None:
        """Final path of call ``i``'s results (None when it has none)."""
        if manifest.status[i] != DONE:
            return None
        if self.mode == "single_file":
            if manifest.fmt[i] == "pickle":
                return self.kept_pickle(i)
            return self.container
        if manifest.fmt[i] == "zarr":
            return self.store
        return self.payload(i, "pickle" if manifest.fmt[i] == "pickle" else "h5")

    def finalize(self, manifest: Manifest) -> str | None:
        """Write the container (or the single file) for the calls done; return its path.

        Raises
        ------
        ResultShapeError
            The results cannot be stacked as ``result_shape``/``result_dtype`` ask (HDF5
            has no conversion, e.g. from integers to complex numbers); the container is
            then written with its links only.
        """
        if self.mode == "pickle":
            return None
        if self.mode == "zarr":
            return self._finalize_store(manifest)
        from .storage import hdf5

        done = [int(i) for i in manifest.indices(DONE) if manifest.fmt[i] == "h5"]
        assert self.container is not None
        virtual = (self.result_shape, self.result_dtype) if self.result_shape else None
        try:
            if self.mode == "hdf5":
                rel = [(i, os.path.basename(self.payload(i))) for i in done]
                try:
                    hdf5.write_container(self.container, rel, n_calls=manifest.n_inputs,
                                         virtual=virtual)
                except (ValueError, TypeError):
                    hdf5.write_container(self.container, rel, n_calls=manifest.n_inputs)
                    raise
            else:
                self._merge_single_file(manifest, done)
        except (ValueError, TypeError) as exc:
            rec = manifest.variables.get("result_0")
            raise ResultShapeError(
                f"cannot stack result_0 (dtype {rec.dtype if rec else '?'}) into "
                f"result_shape={self.result_shape} with result_dtype={self.result_dtype} in "
                f"{self.container}: {exc}. Every payload is complete; run again with a "
                "result_dtype the results convert to (for example their own dtype)"
            ) from exc
        return self.container

    def _finalize_store(self, manifest: Manifest) -> str:
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

    def kept_pickle(self, i: int) -> str:
        """Where a single_file run keeps call ``i``'s pickle (a value HDF5 cannot hold)."""
        return os.path.join(self.output_dir, f"{self.stem}_{i}.pickle")

    def _merge_single_file(self, manifest: Manifest, done: list[int]) -> None:
        """Copy every per-call file into ``<func>.h5``, then remove the per-call files.

        Calls merged by an earlier (interrupted, then resumed) compute have no per-call
        file any more: they are copied from the previous ``<func>.h5``. Pickled calls keep
        their pickle, moved to ``<output_dir>/<func>_<i>.pickle`` (the manifest says
        "pickled": removing it would lose the call's only copy).
        """
        import h5py

        from .storage.checksums import file_sums

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

        from .storage import hdf5

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

    from .storage import hdf5

    meta = src.get(hdf5.META_GROUP)
    if isinstance(meta, h5py.Group) and STACKED_MASK in meta:
        dst.require_group(hdf5.META_GROUP).create_dataset(STACKED_MASK,
                                                          data=meta[STACKED_MASK][()])


def remove_old_runs(directory: str, older_than_days: float) -> list[str]:
    """Delete ``ACME_YYYYMMDD-hhmmss-ffffff`` run directories older than the threshold.

    Only directories whose name has exactly that form are touched (ACME's
    ``cleanup_threshold_days``); 0 removes all of them.
    """
    if older_than_days < 0:
        raise InputError(f"cleanup_threshold_days={older_than_days} must be >= 0")
    cutoff = time.time() - older_than_days * 86400
    removed = []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if _RUN_DIR.match(entry) and os.path.isdir(path):
            if is_locked(path):  # another process is running there
                continue
            if older_than_days == 0 or os.path.getmtime(path) < cutoff:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path)
                    removed.append(path)
                    log.info("removed old run directory %s", path)
    return removed
