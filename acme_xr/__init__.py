"""acme_xr: run a function over many inputs with dask and keep every result.

The successor of ACME (``esi-acme``): :class:`ParallelMap` takes ACME's keywords and
argument distribution rules, writes each call's results to HDF5 in ACME's layout, and
:func:`open_results` opens a whole run as one lazy, labelled :class:`xarray.Dataset`.

The public names are imported on first use, so that ``import acme_xr`` stays cheap, and so
does a dask worker's import of the few modules it runs.

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

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from . import errors
    from .cluster import cluster_cleanup, cluster_setup, local_cluster_setup
    from .map import ParallelMap
    from .payload import open_payload
    from .references import write_references
    from .results import open_results
    from .slurm import slurm_cluster_setup

__all__ = [
    "ParallelMap",
    "open_results",
    "open_payload",
    "cluster_setup",
    "local_cluster_setup",
    "slurm_cluster_setup",
    "cluster_cleanup",
    "write_references",
    "errors",
    "__version__",
]

_LAZY = {
    "ParallelMap": ".map",
    "open_results": ".results",
    "open_payload": ".payload",
    "cluster_setup": ".cluster",
    "local_cluster_setup": ".cluster",
    "slurm_cluster_setup": ".slurm",
    "cluster_cleanup": ".cluster",
    "write_references": ".references",
    "errors": ".errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'acme_xr' has no attribute {name!r}")
    mod = importlib.import_module(module, __name__)
    value = mod if name == "errors" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


logging.getLogger(__name__).addHandler(logging.NullHandler())
