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

__all__ = [
    "ParallelMap",
    "local_cluster_setup",
    "cluster_cleanup",
    "errors",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
