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
from typing import TYPE_CHECKING, Any

from . import pickled
from .base import StorageBackend, Written, payload_name

if TYPE_CHECKING:
    from ..manifest import Manifest

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

    @classmethod
    def rebuild(cls, run_dir: str, files: dict[str, dict[int, str]]) -> Manifest | None:
        """A run of pickles only, without a container (an HDF5 run whose every call was
        pickled has one)."""
        from ..scan import common_header, rebuilt_manifest

        if not files:
            return None
        stem = max(files, key=lambda s: len(files[s]))
        calls = files[stem]
        if (any(ext != "pickle" for ext in calls.values())
                or os.path.exists(os.path.join(run_dir, f"{stem}.h5"))):
            return None
        header = {**cls(output_dir=run_dir, stem=stem).locations(), "source": "acme_xr",
                  "storage": cls.name, **common_header(stem)}
        return rebuilt_manifest(run_dir, max(calls) + 1, header, calls)

    def stored(self, i: int, templates: dict[str, dict[str, Any]]) -> Written | None:
        pk = self.payload(i, "pickle")
        if os.path.exists(pk) and os.path.getsize(pk) > 0:
            return Written("pickle", None, self.found_sums(pk))
        return None
