"""``write_worker_results=False``: the return values travel back to the client; nothing
is written, so there is nothing to resume, finalize or scan.

Examples
--------
>>> InMemory().write_call(0, 1.5, templates={}, warnings=[]).fmt
'memory'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import StorageBackend, Written, check_shape
from .values import to_variables

__all__ = ["InMemory"]


@dataclass(frozen=True)
class InMemory(StorageBackend):
    """Results kept in the client's memory (the worker returns the values)."""

    name = "memory"
    on_disk = False

    def prepare(self) -> None:
        """Nothing to create."""

    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        if self.result_shape is not None:
            check_shape(self.result_shape, to_variables(result))
        return Written("memory")

    def locations(self) -> dict[str, Any]:
        return {}
