"""What a run of :class:`~acme_xr.map.ParallelMap` gives back: its results, or its error.

* :func:`memory_values` holds the return values of a memory-mode run as they arrive, and
  :func:`memory_results` turns them into what ``compute()`` returns.
* :func:`run_outcome` decides, once the run's files are finished, what ``compute()``
  returns or raises (a :class:`~acme_xr.errors.ComputeError` when calls failed).

Examples
--------
>>> values = memory_values(3, None, np.dtype("float"))
>>> values[1] = 2.0
>>> memory_results(values)
[None, 2.0, None]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .collect import compute_error
from .layout import RunLayout
from .manifest import FAILED, Manifest
from .storage.memory import StackedResults

__all__ = ["memory_values", "memory_results", "run_outcome"]


def memory_values(n_inputs: int, result_shape: tuple[Any, ...] | None,
                  result_dtype: np.dtype[Any]) -> list[Any] | StackedResults:
    """Where memory mode keeps the return values: stacked as they arrive with
    ``result_shape``, else a list (one value per call).

    Parameters
    ----------
    n_inputs : int
        Number of calls.
    result_shape : tuple or None
        The ``result_shape`` option.
    result_dtype : numpy.dtype
        The ``result_dtype`` option (the dtype of the stacked ``result_0``).

    Returns
    -------
    list or StackedResults
        ``n_inputs`` times None, or an empty :class:`~acme_xr.storage.memory.StackedResults`.
    """
    if result_shape is None:
        return [None] * n_inputs
    return StackedResults(n_inputs, result_shape, result_dtype)


def memory_results(values: list[Any] | StackedResults) -> Any:
    """The return values of a memory-mode run as ``compute()`` gives them: the list, or
    the stacked arrays (masked at the calls without a value)."""
    return values.results() if isinstance(values, StackedResults) else values


def run_outcome(manifest: Manifest, layout: RunLayout | None,
                values: list[Any] | StackedResults | None, problems: list[Exception],
                logfile: str | None) -> tuple[Any, Exception | None]:
    """The results of a finished run, and the error ``compute()`` raises (None: none).

    Parameters
    ----------
    manifest : Manifest
        The run's record.
    layout : RunLayout or None
        The run's layout (its backend gives the results); None in memory mode.
    values : list or StackedResults or None
        The return values in memory mode (:func:`memory_values`); None on disk.
    problems : list of Exception
        What went wrong while the run's files were finished; the first is raised when no
        call failed.
    logfile : str or None
        The run's log file, named in the error of failed calls.

    Returns
    -------
    results : list or numpy.ndarray
        What ``pmap.results`` holds: after failed calls, those of the calls that succeeded
        (None, or masked when stacked, at the failed ones).
    error : Exception or None
        A :class:`~acme_xr.errors.ComputeError` when calls failed, else the first of
        ``problems``, else None.
    """
    stacked = isinstance(values, StackedResults)
    if layout is not None:
        results: Any = layout.backend.results(manifest)
    else:
        assert values is not None
        results = memory_results(values)
    failed = manifest.indices(FAILED)
    if len(failed):
        # stacked results are masked at the failed calls, not a list with None there
        error = compute_error(manifest, layout, [] if stacked else results, logfile)
        if stacked:
            error.results = results
        return error.results, error
    if problems:
        return results, problems[0]
    return results, None
