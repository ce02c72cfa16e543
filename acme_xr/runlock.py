"""One process at a time in a run directory: a kernel file lock on ``.acme_xr.lock``.

A run (or a resume) holds the lock from before its first write in the run directory until
it ends, however it ends. The lock is filelock's :class:`~filelock.FileLock`, an ``flock``
on the file: the kernel releases it when the holding process dies, so a run killed with
``kill -9`` never blocks its resume. A second process that wants the directory gets
:class:`~acme_xr.errors.RunLockedError` before it writes anything.

The lock file is removed when the run ends normally (and left behind, harmless and
unlocked, by a killed run); readers (:func:`acme_xr.open_results`) never take the lock and
ignore the file.

Examples
--------
>>> import os, tempfile
>>> run = os.path.join(tempfile.mkdtemp(), "run1")
>>> lock = RunLock(run)
>>> lock.acquire()
>>> is_locked(run)
True
>>> lock.release()
>>> os.listdir(run), is_locked(run)
([], False)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import TYPE_CHECKING, Any

from .errors import RunLockedError, StorageError
from .manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from filelock import FileLock

# filelock is imported where a lock is taken: a run kept in memory takes none

__all__ = ["LOCK_NAME", "RunLock", "is_locked", "check_unlocked", "process_record"]

LOCK_NAME = ".acme_xr.lock"


def process_record() -> dict[str, Any]:
    """This process as the manifest records the run's holder (``header["process"]``)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


class RunLock:
    """The lock of the run directory ``directory`` (created by :meth:`acquire`)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        """Create the directory if needed and take its lock, without waiting.

        Raises
        ------
        RunLockedError
            Another process holds the lock.
        StorageError
            The directory or the lock file cannot be created.
        """
        from filelock import FileLock, Timeout

        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create output_dir {self.directory}: {exc}",
                               errno=exc.errno, filename=self.directory) from exc
        for _ in range(3):
            lock = FileLock(self.path, timeout=0)
            try:
                lock.acquire()
            except Timeout:
                # the holder may have just ended, removing the file we waited on: try again
                if os.path.exists(self.path):
                    raise RunLockedError(_locked_message(self.directory)) from None
                continue
            except OSError as exc:
                raise StorageError(f"cannot create the lock file {self.path}: {exc}",
                                   errno=exc.errno, filename=self.path) from exc
            if os.path.exists(self.path):
                self._lock = lock
                return
            # we locked a file its holder removed as it ended: a stale inode, retry
            lock.release()
        raise RunLockedError(_locked_message(self.directory))

    def release(self) -> None:
        """Remove the lock file and release the lock; idempotent, never raises OSError."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        # remove while still holding: no other process can have taken it meanwhile
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_locked(directory: str) -> bool:
    """Whether a process holds the lock of the run in ``directory`` now."""
    path = os.path.join(directory, LOCK_NAME)
    if not os.path.exists(path):
        return False
    from filelock import FileLock, Timeout

    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:  # e.g. a read-only directory: nobody can run there
        return False
    probe.release()  # a lock file left by a killed run: not removed, not ours
    return False


def check_unlocked(directory: str) -> None:
    """Raise :class:`~acme_xr.errors.RunLockedError` if a process runs in ``directory``."""
    if is_locked(directory):
        raise RunLockedError(_locked_message(directory))


def _locked_message(directory: str) -> str:
    return (f"output_dir {directory} is in use by another process{_holder(directory)}: a run "
            "or a resume of it is still going there. Wait until it ends (or stop it), then "
            "resume=True continues it; or choose another output_dir")


def _holder(directory: str) -> str:
    """" (pid N on host H)" from the manifest the holder wrote, when it is known."""
    try:
        with open(os.path.join(directory, MANIFEST_NAME), encoding="utf-8") as fh:
            proc = json.load(fh).get("process") or {}
        host, pid = str(proc["host"]), int(proc["pid"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    if host == socket.gethostname() and not _alive(pid):
        return ""  # the manifest is from an earlier run; the holder has not written yet
    return f" (pid {pid} on host {host})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
