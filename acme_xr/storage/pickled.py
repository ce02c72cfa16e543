"""Pickle payloads: ``write_pickle=True``, and the fallback for values HDF5 cannot hold.

Both are ACME's files, holding what ACME puts in them, so that code that reads ACME's
pickles reads ours:

* ``write_pickle=True``: ``<output_dir>/<func>_<i>.pickle`` holds the return value itself.
* the fallback ("emergency pickling" in ACME): ``<output_dir>/<func>_<i>.pickle`` holds the
  return values as ACME's HDF5 writer saw them when it gave up: a list or tuple as
  returned, any other value wrapped in a one-element list (``[value]``). See
  :func:`fallback_value`.

Examples
--------
>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "f_0.pickle")
>>> write_pickle(p, {"a": 1})
>>> read_pickle(p)
{'a': 1}
>>> fallback_value({"a": 1}), fallback_value((1, {"a": 1}))
([{'a': 1}], (1, {'a': 1}))
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from .atomic import atomic_path
from .checksums import Sums, file_sums

__all__ = ["write_pickle", "read_pickle", "fallback_value"]


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


def fallback_value(result: Any) -> Any:
    """What ACME pickles for a call whose return value HDF5 cannot hold.

    ACME's HDF5 writer first turns a single return value into ``[value]`` (a list or tuple
    is already the list of return values) and, when HDF5 refuses it, pickles that list.
    """
    return result if isinstance(result, (list, tuple)) else [result]


def read_pickle(path: str) -> Any:
    """Load a pickle payload."""
    with open(path, "rb") as fh:
        return pickle.load(fh)
