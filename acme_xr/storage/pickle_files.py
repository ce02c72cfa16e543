"""``write_pickle=True``: ``<func>_<i>.pickle`` per call holds the return value itself;
no container (ACME's pickle mode).

Examples
--------
>>> import tempfile
>>> backend = PickleFiles(output_dir=tempfile.mkdtemp(), stem="f")
>>> backend.prepare()
>>> backend.write_call(0, {"a": 1}, templates={}, warnings=[]).fmt
'pickle'
>>> pickled.read_pickle(backend.payload(0, "pickle"))
{'a': 1}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import pickled
from .base import StorageBackend, Written, payload_name

__all__ = ["PickleFiles"]


@dataclass(frozen=True)
class PickleFiles(StorageBackend):
    """One pickle per call."""

    name = "pickle"

    def locations(self) -> dict[str, Any]:
        return {**super().locations(), "payload": payload_name(self.stem, "{i}", "pickle")}

    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        return Written("pickle", None,
                       self.write_file(pickled.write_pickle, self.payload(i, "pickle"), result))

    def stored(self, i: int, templates: dict[str, dict[str, Any]]) -> Written | None:
        pk = self.payload(i, "pickle")
        if os.path.exists(pk) and os.path.getsize(pk) > 0:
            return Written("pickle", None, self.found_sums(pk))
        return None
