"""The xarray backend: ``xr.open_dataset(run_dir, engine="acme_xr")``.

Registered as the entry point ``acme_xr`` in the group ``xarray.backends``.

Examples
--------
>>> import os, tempfile
>>> import xarray as xr
>>> from acme_xr import ParallelMap
>>> run = os.path.join(tempfile.mkdtemp(), "run")
>>> _ = ParallelMap(abs, [-1, -2, -3], output_dir=run, verbose=False).compute()
>>> xr.open_dataset(run, engine="acme_xr").result_0.values.tolist()
[1, 2, 3]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

from .manifest import MANIFEST_NAME

__all__ = ["AcmeXrBackendEntrypoint"]


class AcmeXrBackendEntrypoint(BackendEntrypoint):
    """Open an acme_xr (or ACME) run directory as one Dataset; see :func:`acme_xr.open_results`."""

    description = "All results of an acme_xr / ACME ParallelMap run as one Dataset"
    url = "https://github.com/acme-xr/acme_xr"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "dim", "mask_integers",
                               "verify")

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: Iterable[str] | None = None,
        dim: str = "call",
        mask_integers: bool = False,
        verify: bool = False,
    ) -> xr.Dataset:
        from .results import dataset_for

        ds = dataset_for(os.fspath(filename_or_obj), dim=dim, mask_integers=mask_integers,
                         verify=verify)
        if drop_variables:
            ds = ds.drop_vars(list(drop_variables), errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        if os.path.isdir(path):
            return os.path.exists(os.path.join(path, MANIFEST_NAME))
        return os.path.basename(path) == MANIFEST_NAME
