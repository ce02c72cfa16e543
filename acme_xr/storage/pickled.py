"""Pickle payloads: ``write_pickle=True``, and the fallback for values HDF5 cannot hold.

Examples
--------
>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "f_0.pickle")
>>> write_pickle(p, {"a": 1})
>>> read_pickle(p)
{'a': 1}
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from .atomic import atomic_path
from .checksums import Sums, file_sums

__all__ = ["write_pickle", "read_pickle"]


def write_pickle(path: str, value: Any, *, checksums: bool = False) -> Sums | None:
    """Pickle ``value`` to ``path`` atomically (cloudpickle for lambdas and local classes).

    With ``checksums``, return the file's size and CRC-32C (no per-variable sums).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            try:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError):
                fh.seek(0)
                fh.truncate()
                cloudpickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        if checksums:
            return Sums(*file_sums(tmp))
    return None


def read_pickle(path: str) -> Any:
    """Load a pickle payload."""
    with open(path, "rb") as fh:
        return pickle.load(fh)
