"""Exception hierarchy of acme_xr.

Every error acme_xr raises on purpose derives from :class:`AcmeXrError` *and* from the
builtin exception a Python user would expect (``ValueError`` for bad values, ``TypeError``
for bad types, ``RuntimeError`` for failed computations, ...), so both
``except acme_xr.errors.AcmeXrError`` and ``except ValueError`` work.

Examples
--------
>>> from acme_xr.errors import InputError
>>> issubclass(InputError, ValueError)
True
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AcmeXrError",
    "InputError",
    "InputTypeError",
    "SignatureError",
    "RunExistsError",
    "ResumeMismatchError",
    "FingerprintError",
    "StorageError",
    "ResultShapeError",
    "ClusterError",
    "ComputeError",
    "CallTimeoutError",
    "CallCrashedError",
    "PayloadCorruptError",
    "MissingPayloadError",
    "ResultsLayoutError",
    "ManifestCorruptError",
    "MainGuardError",
    "RunLockedError",
    "ReferencesExistError",
]


class AcmeXrError(Exception):
    """Base class of every error raised by acme_xr on purpose."""


class InputError(AcmeXrError, ValueError):
    """An argument of :class:`~acme_xr.ParallelMap` has a bad value.

    Raised before any directory is created or any cluster is started.
    """


class InputTypeError(AcmeXrError, TypeError):
    """An argument of :class:`~acme_xr.ParallelMap` has the wrong type.

    Raised before any directory is created or any cluster is started.
    """


class SignatureError(AcmeXrError, TypeError, ValueError):
    """The arguments given do not fit the signature of the user function.

    Both a ``TypeError`` (what Python raises for a bad call) and a ``ValueError``
    (what ACME raises), so code written for either keeps working.
    """


class RunExistsError(AcmeXrError, FileExistsError):
    """The output directory already holds a run and ``resume=True`` was not given."""


class ResumeMismatchError(InputError):
    """``resume=True`` was asked for a run recorded with another function or inputs.

    ``resume="force"`` resumes even so when only the function or the inputs differ (not
    the number of calls or the storage layout).
    """


class FingerprintError(ResumeMismatchError):
    """Something the run depends on cannot be fingerprinted, so a resume cannot be checked.

    An object that neither pickles nor tokenizes deterministically (an open file, a lock)
    among the arguments, or captured or used by the function. The message names it;
    ``resume="force"`` resumes even so.
    """


class StorageError(AcmeXrError, OSError):
    """A file or directory could not be created, written or read.

    The message names the path; ``filename`` holds it and ``errno`` the OS error number
    when there is one (``errno.ENOSPC``: the disk is full).

    Examples
    --------
    >>> err = StorageError("cannot write /data/f_0.h5: disk full", errno=28,
    ...                    filename="/data/f_0.h5")
    >>> str(err), err.errno, err.filename
    ('cannot write /data/f_0.h5: disk full', 28, '/data/f_0.h5')
    """

    def __init__(self, message: str, *, errno: int | None = None,
                 filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno  # type: ignore[misc]
        self.filename = filename

    def __str__(self) -> str:
        # OSError would print "[Errno n] None: 'path'" once errno/filename are set
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_storage_error, (str(self), self.errno, self.filename))


def _storage_error(message: str, errno: int | None, filename: str | None) -> StorageError:
    return StorageError(message, errno=errno, filename=filename)


class ResultShapeError(AcmeXrError, ValueError):
    """Results do not fit the requested ``result_shape`` or cannot be stacked."""


class ClusterError(AcmeXrError, RuntimeError):
    """A dask cluster could not be started or has no workers."""


class ComputeError(AcmeXrError, RuntimeError):
    """One or more calls of the user function failed.

    Attributes
    ----------
    failed : dict
        Call index -> ``{"type", "message", "traceback"}`` of each failed call.
    results : list, numpy.ma.MaskedArray or None
        Whatever :meth:`ParallelMap.compute` would have returned, with ``None`` at
        the failed calls (file paths in disk mode, return values in memory mode); in
        memory mode with ``result_shape`` the stacked arrays, masked at the failed calls.
    manifest : str or None
        Path of the run manifest that records every call's outcome.
    logfile : str or None
        Path of the run's log file.
    """

    def __init__(
        self,
        message: str,
        *,
        failed: dict[int, dict[str, Any]] | None = None,
        results: Any = None,
        manifest: str | None = None,
        logfile: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})
        self.results = results
        self.manifest = manifest
        self.logfile = logfile


class CallTimeoutError(AcmeXrError, TimeoutError):
    """A call ran longer than ``call_timeout`` seconds and was stopped.

    Recorded (type and message) in the manifest for each call stopped this way; the call
    counts as failed once its ``retries`` are used up.
    """


class CallCrashedError(AcmeXrError, RuntimeError):
    """The process running a call died under it (segfault, ``os._exit``, out of memory).

    Detected for calls that run in a child process (with ``call_timeout``); the call counts
    as failed once its ``retries`` are used up, the worker itself survives.
    """


class PayloadCorruptError(AcmeXrError, OSError):
    """A payload file is not the one its call wrote: missing, emptied, truncated or changed.

    Raised when a read finds a payload whose size or checksum differs from what the run's
    manifest recorded, or that HDF5 cannot open or read. The message names each bad file
    with its call and what is wrong; ``bad`` maps call index -> (path, reason).
    ``ParallelMap(..., resume=True)`` runs such calls again;
    ``open_results(..., verify=True)`` lists every bad payload of a run up front.

    Examples
    --------
    >>> err = PayloadCorruptError.for_calls({3: ("/run/f_3.h5", "0 bytes, 2072 recorded")})
    >>> err.bad[3][0], isinstance(err, OSError)
    ('/run/f_3.h5', True)
    """

    def __init__(self, message: str, *, bad: dict[int, tuple[str, str]] | None = None,
                 filename: str | None = None) -> None:
        super().__init__(message)
        self.bad = dict(bad or {})
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), str(self), self.bad, self.filename))

    @classmethod
    def for_calls(cls, bad: dict[int, tuple[str, str]]) -> PayloadCorruptError:
        """The error listing every bad payload: ``{call: (path, what is wrong)}``."""
        listing = "; ".join(f"call {i}: {path}: {why}" for i, (path, why) in
                            sorted(bad.items())[:50])
        more = f"; and {len(bad) - 50} more" if len(bad) > 50 else ""
        paths = {path for path, _ in bad.values()}
        return cls(
            f"{len(bad)} payload(s) are not what their call wrote ({listing}{more}). Re-run "
            "these calls with ParallelMap(..., output_dir=<this run>, resume=True), or "
            "restore the files from a copy",
            bad=bad, filename=paths.pop() if len(paths) == 1 else None,
        )


def _rebuild_error(cls: type[PayloadCorruptError], message: str,
                   bad: dict[int, tuple[str, str]], filename: str | None) -> PayloadCorruptError:
    return cls(message, bad=bad, filename=filename)


class MissingPayloadError(PayloadCorruptError, FileNotFoundError):
    """A payload file the manifest lists as written is gone (a :class:`PayloadCorruptError`)."""


class ResultsLayoutError(AcmeXrError, ValueError):
    """A directory is not a run acme_xr (or ACME) can open, or its results cannot be combined."""


class ManifestCorruptError(ResultsLayoutError):
    """A run's ``manifest.json`` is damaged (truncated, not JSON, not a manifest).

    acme_xr writes its manifest atomically and durably, so only an outside cause damages
    it. :func:`~acme_xr.open_results` then rebuilds the manifest by scanning the payloads
    (with a warning); a resume refuses, as the recorded function and inputs are lost with
    it, unless ``resume="force"``.
    """


class MainGuardError(AcmeXrError, RuntimeError):
    """A script runs :class:`~acme_xr.ParallelMap` outside ``if __name__ == "__main__":``.

    acme_xr's local worker processes start by importing the main script again (as
    ``__mp_main__``); unguarded module-level code would run the ParallelMap once more in
    every worker. Raised before any directory or cluster exists, and at once in a worker's
    import of the script. The fix: put the code that runs the ParallelMap under
    ``if __name__ == "__main__":``.
    """


class RunLockedError(AcmeXrError, RuntimeError):
    """Another process is running in the output directory (it holds the run's lock).

    Raised before anything is written. The lock is the file ``.acme_xr.lock`` in the run
    directory, held by the kernel for the running process: it is released when that
    process ends in any way (even ``kill -9``), so a finished or killed run never blocks
    its resume.
    """


class ReferencesExistError(AcmeXrError, FileExistsError):
    """The path given to :func:`~acme_xr.write_references` (or ``acme-xr export``) exists.

    References are never written over: give a new path, or remove the old one first.
    Raised before anything is written.
    """
