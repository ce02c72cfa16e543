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
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    InputError,
    ResumeMismatchError,
    RunExistsError,
    StorageError,
)
from .manifest import MANIFEST_NAME, Manifest
from .options import Options
from .runlock import LOCK_NAME, check_unlocked, is_locked
from .storage.registry import backend_class, mode_of

if TYPE_CHECKING:
    from .storage.base import StorageBackend

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
    """Paths of one run on disk; what goes where is its storage backend's business
    (:mod:`acme_xr.storage.base`)."""

    output_dir: str
    stem: str
    mode: str  # the backend's name: "hdf5" | "pickle" | "single_file" | "zarr" | ...
    result_shape: tuple[float | None, ...] | None = None
    result_dtype: np.dtype = np.dtype("float64")
    n_calls: int = 0

    @classmethod
    def resolve(cls, options: Options, stem: str, n_calls: int = 0) -> RunLayout:
        """Decide the paths (no file-system access)."""
        out = options.output_dir
        out = _timestamped_dir() if out is None else os.path.abspath(os.path.expanduser(out))
        return cls(out, stem, mode_of(options), options.result_shape, options.result_dtype,
                   n_calls)

    @cached_property
    def backend(self) -> StorageBackend:
        """The run's storage backend (the worker gets a copy)."""
        from .storage.checksums import enabled

        return backend_class(self.mode)(
            output_dir=self.output_dir, stem=self.stem, result_shape=self.result_shape,
            result_dtype=self.result_dtype, checksums=enabled(), n_calls=self.n_calls)

    # -- paths ---------------------------------------------------------------------------
    @property
    def payload_dir(self) -> str:
        """Directory of the per-call files (a temporary one for single_file runs)."""
        return self.backend.payload_dir

    def payload(self, i: int, ext: str = "h5") -> str:
        return self.backend.payload(i, ext)

    @property
    def container(self) -> str | None:
        """The HDF5 results container (None for pickles and zarr stores)."""
        return self.backend.container

    @property
    def store(self) -> str | None:
        """The store of a backend that keeps every call in one (``storage="zarr"``)."""
        return self.backend.store

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
        return self.backend.locations()

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
            if entries and not os.path.exists(self.manifest) and not _rebuildable(out):
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
            self.backend.prepare()
        except OSError as exc:
            raise StorageError(f"cannot create output_dir {self.output_dir}: {exc}") from exc

    # -- after the calls -----------------------------------------------------------------
    def file_of(self, manifest: Manifest, i: int) -> str | None:
        """Final path of call ``i``'s results (None when it has none)."""
        return self.backend.file_of(manifest, i)

    def finalize(self, manifest: Manifest) -> str | None:
        """Complete the run's storage for the calls done (the container, the merge into
        one file, the store's consolidation); return its path. Raises what the backend's
        ``finalize`` raises (:class:`~acme_xr.errors.ResultShapeError`)."""
        return self.backend.finalize(manifest)


def _rebuildable(directory: str) -> bool:
    """A run whose manifest is lost but can be rebuilt by scanning (a backend's rebuild
    included): resuming it is then decided by :func:`acme_xr.scan.manifest_to_resume`."""
    from .scan import holds_run  # h5py: only a directory without manifest needs it

    return holds_run(directory)


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
