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
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import StorageBackend, Written, check_shape
from .values import to_variables

__all__ = ["InMemory", "StackedResults"]

# return values stacked into an array of their own; anything else is kept per call
_STACKABLE_KINDS = "biufc"
# calls named in one warning
_NAMED = 20


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
    the first call that differed. A ``result_0`` whose dtype cannot be cast to
    ``result_dtype`` within its kind (complex to float, float to int) is cast as ACME
    casts it, with a ``UserWarning`` naming those calls.

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
        self.recast: list[str] = []
        self.ragged: list[tuple[int, str]] = []

    def __setitem__(self, i: int, value: Any) -> None:
        """Keep call ``i``'s return value (a tuple: several return values)."""
        parts = value if isinstance(value, tuple) else (value,)
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
        if len(self.recast) < _NAMED:
            self.recast.append(f"call {i} ({src.dtype})")
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
            what = ("a " + type(part).__name__ if arr is None
                    else f"{arr.dtype} of shape {arr.shape}")
            self.ragged.append((k, f"result_{k} of call {i} is {what}, unlike the "
                                   f"{stack.dtype} values of shape {stack.shape[1:]} before it"))
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
            and the first call of each ``result_k`` kept per call because it differed.
        """
        if self.recast:
            dtype = self.stacks[0].dtype  # type: ignore[union-attr]
            warnings.warn(
                f"result_0 of {', '.join(self.recast)} cast to result_dtype={dtype.name}; "
                "values may have changed (pass a result_dtype that holds them)",
                UserWarning, stacklevel=4)
        for k, reason in self.ragged:
            warnings.warn(f"{reason}: result_{k} is returned per call (a list), not stacked",
                          UserWarning, stacklevel=4)
        out = [_masked(stack, filled, self.axis if k == 0 else 0)
               for k, (stack, filled) in enumerate(zip(self.stacks, self.filled, strict=True))]
        return out[0] if len(out) == 1 else out


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
