"""acme_xr: run a function over many inputs with dask and keep every result.

The successor of ACME (``esi-acme``): :class:`ParallelMap` takes ACME's keywords and
argument distribution rules, writes each call's results to HDF5 in ACME's layout, and
:func:`open_results` opens a whole run as one lazy, labelled :class:`xarray.Dataset`.

Examples
--------
>>> from acme_xr import ParallelMap
>>> def f(x, y):
...     return x + y
>>> with ParallelMap(f, [1, 2, 3], 10, write_worker_results=False, verbose=False) as pmap:
...     pmap.compute()
[11, 12, 13]
"""

from __future__ import annotations

import logging

from . import errors
from ._version import __version__
from .cluster import cluster_cleanup, local_cluster_setup
from .map import ParallelMap
from .slurm import slurm_cluster_setup


def open_results(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Open all results of a run as one lazy, labelled xarray Dataset.

    See :func:`acme_xr.results.open_results` (imported on first use, so that importing
    acme_xr does not import xarray).

    Examples
    --------
    >>> import acme_xr
    >>> callable(acme_xr.open_results)
    True
    """
    from .results import open_results as _open_results

    return _open_results(*args, **kwargs)


__all__ = [
    "ParallelMap",
    "open_results",
    "local_cluster_setup",
    "slurm_cluster_setup",
    "cluster_cleanup",
    "errors",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
