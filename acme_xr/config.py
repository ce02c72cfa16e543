"""Settings: explicit keyword > ``dask.config`` (``acme_xr.*``) > packaged defaults.

The defaults live in ``acme_xr.yaml`` next to this module and are merged into
``dask.config`` the first time a setting is read, so importing acme_xr changes nothing.

Examples
--------
>>> import dask
>>> from acme_xr.config import get
>>> with dask.config.set({"acme_xr.batch.target-duration": "1s"}):
...     get("batch.target-duration")
'1s'
"""

from __future__ import annotations

import functools
import os
from typing import Any

import dask.config
import yaml

__all__ = ["get", "get_seconds"]

_DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "acme_xr.yaml")


@functools.cache
def _defaults() -> dict[str, Any]:
    with open(_DEFAULTS_FILE, encoding="utf-8") as fh:
        defaults: dict[str, Any] = yaml.safe_load(fh)
    dask.config.update_defaults(defaults)  # so that dask.config.get("acme_xr...") works too
    return defaults


def get(key: str) -> Any:
    """Return the setting ``acme_xr.<key>``.

    Parameters
    ----------
    key : str
        Dotted key below ``acme_xr``, for example ``"batch.target-duration"``.

    Returns
    -------
    object
        The configured value.
    """
    # the packaged default is passed explicitly: a dask.config.set() block that ends can
    # drop keys merged into the live config
    default = dask.config.get(key, config=_defaults()["acme_xr"])
    return dask.config.get(f"acme_xr.{key}", default=default)


def get_seconds(key: str) -> float:
    """Return the setting ``acme_xr.<key>`` as seconds (accepts ``"200ms"``, ``2``, ...).

    Examples
    --------
    >>> get_seconds("progress.delay") >= 0
    True
    """
    value = get(key)
    return float(dask.utils.parse_timedelta(value, default="seconds"))
