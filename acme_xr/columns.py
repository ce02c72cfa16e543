"""Coded columns: one small table of distinct values and an integer code per call.

The manifest keeps per-call strings (payload format, host) and shapes this way, so that a
run of a million calls holds a million-entry integer array, not a million Python objects,
and a batch of calls that agree is recorded with one vectorised assignment.

Examples
--------
>>> col = CodedColumn(3)
>>> col[1] = "h5"
>>> col[1], col[0], len(col)
('h5', None, 3)
>>> list(col)
[None, 'h5', None]
>>> col.equals("h5").tolist()
[False, True, False]
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["CodedColumn", "NONE"]

NONE = -1  # the code of "no value" (None)


class CodedColumn:
    """A column of hashable values (str, shape tuples) or None, one entry per call.

    Parameters
    ----------
    n : int
        Number of calls; every entry starts as None.
    values : sequence, optional
        The initial entries (length ``n``), instead of None everywhere.

    Attributes
    ----------
    codes : numpy.ndarray of int32, shape (n,)
        Per call: the index of its value in :attr:`table`, or -1 for None.
    table : list
        The distinct values, in the order they were first seen; codes are stable: a value
        keeps its code for the life of the column (the manifest's log relies on it).
    """

    __slots__ = ("codes", "table", "_index")

    def __init__(self, n: int, values: Sequence[Hashable | None] | None = None) -> None:
        self.codes = np.full(n, NONE, np.int32)
        self.table: list[Any] = []
        self._index: dict[Any, int] = {}
        if values is not None:
            for i, value in enumerate(values):
                if value is not None:
                    self.codes[i] = self.code(value)

    @classmethod
    def of(cls, codes: np.ndarray, table: list[Any]) -> CodedColumn:
        """A column from its codes and table (as read back from the manifest)."""
        col = cls(0)
        col.codes = np.asarray(codes, np.int32)
        col.extend(table)
        return col

    def extend(self, values: Sequence[Any]) -> None:
        """Append ``values`` to the table (codes len(table), len(table) + 1, ...)."""
        for value in values:
            self._index[value] = len(self.table)
            self.table.append(value)

    def code(self, value: Hashable | None) -> int:
        """The code of ``value``, added to the table when new."""
        if value is None:
            return NONE
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.table)
            self.table.append(value)
        return found

    def codes_of(self, values: Sequence[Hashable | None]) -> np.ndarray:
        """Codes of ``values`` (one table lookup when they all agree)."""
        if len(values) and all(v == values[0] for v in values):
            return np.full(len(values), self.code(values[0]), np.int32)
        return np.fromiter((self.code(v) for v in values), np.int32, len(values))

    def equals(self, value: Hashable | None) -> np.ndarray:
        """Boolean mask of the calls whose entry is ``value`` (vectorised)."""
        if value is None:
            return self.codes == NONE
        code = self._index.get(value)
        return np.zeros(len(self.codes), bool) if code is None else self.codes == code

    def isin(self, values: Sequence[Hashable | None]) -> np.ndarray:
        """Boolean mask of the calls whose entry is one of ``values``."""
        out = np.zeros(len(self.codes), bool)
        for value in values:
            out |= self.equals(value)
        return out

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, (int, np.integer)):
            code = int(self.codes[i])
            return None if code < 0 else self.table[code]
        return [None if c < 0 else self.table[c] for c in self.codes[i].tolist()]

    def __setitem__(self, i: Any, value: Hashable | None) -> None:
        self.codes[i] = self.code(value)

    def __iter__(self) -> Iterator[Any]:
        lookup = [*self.table, None]  # code -1 picks the last entry: None
        return iter([lookup[c] for c in self.codes.tolist()])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CodedColumn):
            other = list(other)
        return isinstance(other, list) and list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        more = "..." if len(self.table) > 5 else ""
        return f"CodedColumn(n={len(self)}, table={self.table[:5]!r}{more})"
