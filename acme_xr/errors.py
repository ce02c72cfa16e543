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
    "StorageError",
    "ResultShapeError",
    "ClusterError",
    "ComputeError",
    "CallTimeoutError",
    "MissingPayloadError",
    "ResultsLayoutError",
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
    """``resume=True`` was asked for a run recorded with another function or inputs."""


class StorageError(AcmeXrError, OSError):
    """A file or directory could not be created, written or read."""


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
    results : list or None
        Whatever :meth:`ParallelMap.compute` would have returned, with ``None`` at
        the failed calls (file paths in disk mode, return values in memory mode).
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
        results: list[Any] | None = None,
        manifest: str | None = None,
        logfile: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})
        self.results = results
        self.manifest = manifest
        self.logfile = logfile


class CallTimeoutError(AcmeXrError, TimeoutError):
    """A call ran longer than ``call_timeout`` seconds and was stopped."""


class MissingPayloadError(AcmeXrError, FileNotFoundError):
    """A payload file the manifest lists as written is gone."""


class ResultsLayoutError(AcmeXrError, ValueError):
    """A directory is not a run acme_xr (or ACME) can open, or its results cannot be combined."""
