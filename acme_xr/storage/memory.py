"""``write_worker_results=False``: the return values travel back to the client; nothing
is written, so there is nothing to resume, finalize or scan.

With ``result_shape``, :class:`StackedResults` writes each call's return values into one
array per return value as the batches arrive, so that a million calls cost the client the
results' bytes and a flag per call, not a Python object per call.

Examples
--------
>>> InMemory().write_call(0, 1.5, templates={}, warnings=[]).fmt
'memory'
>>> stacked = StackedResults(3, (None, 2), np.dtype("float64"))
>>> for i in range(3):
...     stacked[i] = (np.full(2, i), i * 10)
>>> result_0, result_1 = stacked.results()
>>> result_0
array([[0., 0.],
       [1., 1.],
       [2., 2.]])
>>> result_1
array([ 0, 10, 20])
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import StorageBackend, Written, check_shape, check_shape_of
from .values import to_variables

__all__ = ["InMemory", "StackedResults", "detached"]

# return values stacked into an array of their own; anything else is kept per call
_STACKABLE_KINDS = "biufc"
# calls named in one warning
_NAMED = 20
# single return values stacked at once (a bounded buffer of per-call objects)
_PENDING = 1024


@dataclass(frozen=True)
class InMemory(StorageBackend):
    """Results kept in the client's memory (the worker returns the values)."""

    name = "memory"
    on_disk = False

    def prepare(self) -> None:
        """Nothing to create."""

    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        if self.result_shape is None:
            return Written("memory")
        first = result[0] if isinstance(result, tuple) and result else result
        if type(first) is np.ndarray:  # as to_variables sees it, ~15x cheaper per call
            check_shape_of(self.result_shape, first.shape)
        else:
            check_shape(self.result_shape, to_variables(result))
        return Written("memory")

    def locations(self) -> dict[str, Any]:
        return {}


class StackedResults:
    """The return values of a memory-mode run with ``result_shape``, stacked as they arrive.

    ``result_0`` goes into one array of ``result_shape`` (its ``None`` axis is the call
    axis) and ``result_dtype``, allocated up front, as ACME's in-memory ``result_shape``
    does. Each further return value ``result_k`` (a function returning a tuple) goes into
    an array of shape ``(n_calls, *shape)`` with the dtype of the first call's value. The
    client then holds the results' bytes and one flag per call and return value, whatever
    the number of calls.

    A ``result_k`` that is not a plain number or NumPy array (a string, a dict, an xarray
    object, a masked array) is kept per call, in a list. So is a numeric ``result_k`` whose
    shape or dtype differs between calls (ragged returns), with a ``UserWarning`` naming
    the calls that differ from the most common shape and dtype. A ``result_0`` whose dtype
    cannot be cast to ``result_dtype`` within its kind (complex to float, float to int) is
    cast as ACME casts it, with a ``UserWarning`` naming those calls.

    Parameters
    ----------
    n_calls : int
        Number of calls (the length of the call axis).
    result_shape : tuple
        ACME's ``result_shape``: whole numbers and one ``None`` (no ``np.inf``: memory
        mode refuses it).
    dtype : numpy.dtype
        ``result_dtype``, the dtype of ``result_0``.

    Examples
    --------
    >>> stacked = StackedResults(2, (3, None), np.dtype("float32"))
    >>> stacked[1] = np.arange(3)
    >>> stacked.results().mask[:, 0].tolist()     # call 0 never arrived (it failed)
    [True, True, True]
    >>> stacked.results()[:, 1].tolist()
    [0.0, 1.0, 2.0]
    """

    def __init__(self, n_calls: int, result_shape: tuple[float | None, ...],
                 dtype: np.dtype) -> None:
        self.n_calls = n_calls
        self.axis = result_shape.index(None)
        shape = tuple(n_calls if s is None else int(s) for s in result_shape)
        # per return value: the stacked array, or a list of per-call values (None: no call
        # has returned that value yet)
        self.stacks: list[np.ndarray | list[Any] | None] = [np.empty(shape, dtype)]
        self.filled: list[np.ndarray] = [np.zeros(n_calls, bool)]
        # calls whose result_0 was cast across kinds (allocated at the first), and their dtypes
        self.recast: np.ndarray | None = None
        self.recast_dtypes: set[str] = set()
        # return values kept per call because their calls differ (named at the end)
        self.ragged: set[int] = set()
        # calls of one return value kept until _PENDING of them are stacked at once
        self.pending: list[tuple[int, Any]] = []

    def __setitem__(self, i: int, value: Any) -> None:
        """Keep call ``i``'s return value (a tuple: several return values)."""
        if isinstance(value, tuple):
            self._put_parts(i, value)
            return
        self.pending.append((i, value))
        if len(self.pending) >= _PENDING:
            self._flush()

    def _flush(self) -> None:
        """Stack the pending single return values with one assignment (~50x cheaper per
        call than one by one); one by one when they differ in shape or kind."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        out = self.stacks[0]
        assert isinstance(out, np.ndarray)
        try:
            block = np.asarray([v for _, v in pending])
        except ValueError:  # rows of different shapes
            block = None
        row = out.shape[:self.axis] + out.shape[self.axis + 1:]
        if (block is None or block.shape[1:] != row or block.dtype.kind not in "biufc"
                or not np.can_cast(block.dtype, out.dtype, "same_kind")):
            for i, v in pending:
                self._put_parts(i, (v,))
            return
        calls = np.fromiter((i for i, _ in pending), np.intp, len(pending))
        index: list[Any] = [slice(None)] * out.ndim
        index[self.axis] = calls
        out[tuple(index)] = np.moveaxis(block, 0, self.axis)
        self.filled[0][calls] = True

    def _put_parts(self, i: int, parts: tuple[Any, ...]) -> None:
        for k, part in enumerate(parts):
            if k == len(self.stacks):
                self.stacks.append(None)
                self.filled.append(np.zeros(self.n_calls, bool))
            if k == 0:
                self._put_first(i, part)
            else:
                self._put(k, i, part)
            self.filled[k][i] = True

    def _put_first(self, i: int, part: Any) -> None:
        out = self.stacks[0]
        assert isinstance(out, np.ndarray)
        index: list[Any] = [slice(None)] * out.ndim
        index[self.axis] = i
        src = np.asarray(part)
        if np.can_cast(src.dtype, out.dtype, "same_kind"):
            out[tuple(index)] = src
            return
        if self.recast is None:
            self.recast = np.zeros(self.n_calls, bool)
        self.recast[i] = True
        self.recast_dtypes.add(src.dtype.name)
        with warnings.catch_warnings():  # ACME's cast, reported once in results()
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            out[tuple(index)] = src

    def _put(self, k: int, i: int, part: Any) -> None:
        stack = self.stacks[k]
        if isinstance(stack, list):
            stack[i] = part
            return
        arr = _stackable(part)
        if stack is None:
            if arr is None:
                self.stacks[k] = stack = [None] * self.n_calls
                stack[i] = part
                return
            self.stacks[k] = stack = np.empty((self.n_calls, *arr.shape), arr.dtype)
        elif arr is None or arr.shape != stack.shape[1:] or arr.dtype != stack.dtype:
            self.ragged.add(k)
            per_call: list[Any] = [stack[j] if done else None
                                   for j, done in enumerate(self.filled[k])]
            per_call[i] = part
            self.stacks[k] = per_call
            return
        stack[i] = arr

    def results(self) -> Any:
        """The stacked values: ``result_0``'s array alone, or a list with one entry per
        return value (an array with the call axis first, or a list of per-call values).

        Calls that never returned a value (failed calls) are masked: the arrays are then
        :class:`numpy.ma.MaskedArray` (NaN under the mask for float and complex dtypes),
        a per-call list holds ``None`` there.

        Warns
        -----
        UserWarning
            Naming the calls whose ``result_0`` was cast across kinds to ``result_dtype``,
            and the calls whose ``result_k`` differed from the others' dtype or shape (that
            ``result_k`` is then kept per call).
        """
        self._flush()
        if self.recast is not None:
            dtype = self.stacks[0].dtype  # type: ignore[union-attr]
            warnings.warn(
                f"result_0 of {_calls(np.flatnonzero(self.recast).tolist())} "
                f"({', '.join(sorted(self.recast_dtypes))}) cast to result_dtype={dtype.name}; "
                "values may have changed (pass a result_dtype that holds them)",
                UserWarning, stacklevel=4)
        for k in sorted(self.ragged):
            per_call = self.stacks[k]
            assert isinstance(per_call, list)
            warnings.warn(_ragged(k, per_call), UserWarning, stacklevel=4)
        out = [_masked(stack, filled, self.axis if k == 0 else 0)
               for k, (stack, filled) in enumerate(zip(self.stacks, self.filled, strict=True))]
        return out[0] if len(out) == 1 else out


def _calls(calls: list[int]) -> str:
    """``call 3`` or ``calls [3, 7, ...]`` (the first :data:`_NAMED`) and how many."""
    if len(calls) == 1:
        return f"call {calls[0]}"
    more = f" and {len(calls) - _NAMED} more" if len(calls) > _NAMED else ""
    return f"calls {calls[:_NAMED]}{more}"


def _signature(part: Any) -> str:
    arr = _stackable(part)
    return "a " + type(part).__name__ if arr is None else f"{arr.dtype} of shape {arr.shape}"


def _ragged(k: int, values: list[Any]) -> str:
    """The warning of a return value kept per call: the calls that differ from the most
    common dtype and shape (in call order, whatever order the calls arrived in)."""
    signatures = [None if v is None else _signature(v) for v in values]
    common = Counter(s for s in signatures if s is not None).most_common(1)[0][0]
    odd = [i for i, s in enumerate(signatures) if s is not None and s != common]
    return (f"result_{k} of {_calls(odd)} is {signatures[odd[0]]}, unlike the {common} of "
            f"the other calls: result_{k} is returned per call (a list), not stacked")


def _stackable(part: Any) -> np.ndarray | None:
    """``part`` as an array when it is a plain number or NumPy array, else None."""
    if type(part) is not np.ndarray and not isinstance(part, np.generic | bool | int | float
                                                           | complex):
        return None
    arr = np.asarray(part)
    return arr if arr.dtype.kind in _STACKABLE_KINDS else None


def _masked(stack: np.ndarray | list[Any] | None, filled: np.ndarray, axis: int) -> Any:
    if not isinstance(stack, np.ndarray) or filled.all():
        return stack
    missing = ~filled
    index: list[Any] = [slice(None)] * stack.ndim
    index[axis] = missing
    # nothing was written there: NaN, or a defined 0 under the mask
    stack[tuple(index)] = np.nan if stack.dtype.kind in "fc" else 0
    shape = [1] * stack.ndim
    shape[axis] = len(filled)
    mask = np.broadcast_to(missing.reshape(shape), stack.shape)
    return np.ma.MaskedArray(stack, mask=mask)


def _arrays(value: Any) -> list[np.ndarray]:
    """The numpy arrays a return value holds directly (itself, a tuple's items, a
    DataArray's data)."""
    if isinstance(value, np.ndarray):
        return [value]
    if type(value) is tuple:
        return [a for v in value for a in _arrays(v)]
    if type(value).__module__.startswith("xarray"):
        held = [v.data for v in value.data_vars.values()] if hasattr(value, "data_vars") \
            else [getattr(value, "data", None)]
        return [a for a in held if isinstance(a, np.ndarray)]
    return []


def _copied(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if type(value) is tuple:
        return tuple(_copied(v) for v in value)
    if _arrays(value):  # an xarray object over numpy arrays
        return value.copy(deep=True)
    return value


def detached(value: Any) -> Any:
    """Memory mode: ``value`` with its own copy of the arrays it holds. A batch's values
    travel to the client at its end: a function refilling one output buffer would have
    every call of the batch come back as its last one (and in a worker thread of the
    client's process, change after the run). ~0.3 us for a small array."""
    return _copied(value) if _arrays(value) else value
