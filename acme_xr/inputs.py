"""Argument distribution: turn ``func, *args, **kwargs`` into one argument set per call.

The rules are ACME's, so code written for ACME distributes its inputs the same way:

* a ``list``, ``tuple`` or ``range`` whose length is ``n_inputs``, or a NumPy array that
  squeezes to one dimension with ``n_inputs`` elements, is *split*: element ``i`` goes to
  call ``i``;
* everything else (scalars, strings, dicts, 2-D arrays, length-1 lists, other objects)
  goes *whole* to every call;
* a keyword argument whose default value is itself a list/tuple of the same length (or an
  array) is passed whole: it is a value of that parameter, not one value per call;
* ``n_inputs="auto"`` takes the one length shared by all splittable arguments (length-1
  lists do not count unless nothing else is there); anything ambiguous is an error that
  asks for ``n_inputs``.

This module is pure: no dask, no files.

Examples
--------
>>> def f(x, y, scale=1.0):
...     return (x + y) * scale
>>> plan = distribute(f, ([1, 2, 3], 10), {"scale": 2.0})
>>> plan.n_inputs
3
>>> plan.call(1)   # a positional parameter given by name is passed by position
((2, 10, 2.0), {})
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, InputTypeError, SignatureError

__all__ = ["Argument", "CallPlan", "distribute"]

_TASK_ID = "taskID"


@dataclass(frozen=True)
class Argument:
    """One argument of the user function as given by the user.

    Parameters
    ----------
    name : str
        The function's parameter name (``<varargs>_<j>`` for extra positional values).
    value : object
        The value as given (the whole sequence when it is split).
    split : bool
        Whether element ``i`` of ``value`` goes to call ``i``.
    """

    name: str
    value: Any
    split: bool = False

    def at(self, i: int) -> Any:
        """Value this argument takes in call ``i``."""
        if not self.split:
            return self.value
        if isinstance(self.value, np.ndarray):
            return self.value.reshape(-1)[i]
        return self.value[i]


@dataclass(frozen=True)
class CallPlan:
    """Everything needed to build the arguments of every call.

    Attributes
    ----------
    func : callable
        The user function.
    n_inputs : int
        Number of calls.
    args : tuple of Argument
        Positional arguments in order.
    kwargs : dict of str -> Argument
        Keyword arguments.
    task_id : bool
        Whether ``func`` takes ACME's ``taskID`` keyword (it receives the call index).
    """

    func: Callable[..., Any]
    n_inputs: int
    args: tuple[Argument, ...]
    kwargs: Mapping[str, Argument]
    task_id: bool = False
    _split: tuple[Argument, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        split = tuple(a for a in (*self.args, *self.kwargs.values()) if a.split)
        object.__setattr__(self, "_split", split)

    @property
    def split_arguments(self) -> tuple[Argument, ...]:
        """The arguments that differ between calls, positional first."""
        return self._split

    def call(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of call ``i``."""
        if not 0 <= i < self.n_inputs:
            raise IndexError(f"call index {i} outside 0..{self.n_inputs - 1}")
        args = tuple(a.at(i) for a in self.args)
        kwargs = {k: a.at(i) for k, a in self.kwargs.items()}
        if self.task_id:
            kwargs[_TASK_ID] = i
        return args, kwargs

    def coords(self) -> dict[str, np.ndarray]:
        """Per-call labels: every split argument whose elements are scalars.

        Returns
        -------
        dict
            Parameter name -> 1-D array of length ``n_inputs``.
        """
        out: dict[str, np.ndarray] = {}
        for arg in self.split_arguments:
            values = [arg.at(i) for i in range(self.n_inputs)]
            if all(_is_scalar_label(v) for v in values):
                arr = np.asarray(values)
                if arr.ndim == 1 and arr.dtype.kind in "biufcUSMm":
                    out[arg.name] = arr
        return out


def _is_scalar_label(value: Any) -> bool:
    return isinstance(value, (numbers.Number, str, bytes, np.generic)) and not isinstance(
        value, np.ndarray
    )


def _split_length(value: Any) -> int | None:
    """Length of ``value`` if ACME would split it across calls, else ``None``."""
    if isinstance(value, (list, tuple, range)):
        return len(value)
    if isinstance(value, np.ndarray):
        squeezed = value.squeeze()
        if squeezed.ndim == 1:
            return int(squeezed.size)
    return None


def _check_n_inputs(n_inputs: Any) -> int | None:
    if isinstance(n_inputs, str):
        if n_inputs != "auto":
            raise InputError(
                f"n_inputs={n_inputs!r} is not valid: give 'auto' (infer it from the "
                "arguments) or a whole number >= 1"
            )
        return None
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, numbers.Integral):
        raise InputTypeError(
            f"n_inputs must be 'auto' or a whole number >= 1, not {n_inputs!r} "
            f"({type(n_inputs).__name__})"
        )
    if n_inputs < 1:
        raise InputError(f"n_inputs={n_inputs} is not valid: give a whole number >= 1 or 'auto'")
    return int(n_inputs)


def _bind(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[tuple[str, Any]], dict[str, Any], inspect.Signature | None]:
    """Match the user's arguments to ``func``'s parameters.

    Returns the positional arguments as (name, value) pairs, the keyword arguments and the
    signature (``None`` when ``func`` has none Python can read).
    """
    name = getattr(func, "__name__", repr(func))
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return [(f"arg_{j}", v) for j, v in enumerate(args)], dict(kwargs), None
    if _TASK_ID in sig.parameters and _TASK_ID in kwargs:
        raise SignatureError(
            f"{name}() takes ACME's 'taskID' parameter, which acme_xr sets to the call "
            "index itself: do not pass taskID"
        )
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise SignatureError(
            f"the arguments given do not fit {name}{sig}: {exc}. Pass one argument per "
            "parameter of the function (lists are split across calls), by position or by "
            "name"
        ) from exc
    if _TASK_ID in sig.parameters and _TASK_ID in bound.arguments:
        raise SignatureError(
            f"{name}() takes ACME's 'taskID' parameter, which acme_xr sets to the call "
            f"index itself, but {len(args)} positional arguments reach it: pass one fewer"
        )
    positional: list[tuple[str, Any]] = []
    keyword: dict[str, Any] = {}
    for pname, value in bound.arguments.items():
        param = sig.parameters[pname]
        if param.kind is param.VAR_POSITIONAL:
            positional.extend((f"{pname}_{j}", v) for j, v in enumerate(value))
        elif param.kind is param.VAR_KEYWORD:
            keyword.update(value)
        elif param.kind is param.KEYWORD_ONLY:
            keyword[pname] = value
        else:
            positional.append((pname, value))
    return positional, keyword, sig


def distribute(
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    n_inputs: int | str = "auto",
) -> CallPlan:
    """Apply ACME's distribution rules to the arguments of a :class:`ParallelMap`.

    Parameters
    ----------
    func : callable
        The user function.
    args : sequence
        Positional arguments as given to ``ParallelMap``.
    kwargs : mapping
        Keyword arguments as given to ``ParallelMap`` (acme_xr's own keywords removed).
    n_inputs : int or "auto"
        Number of calls, or ``"auto"`` to infer it.

    Returns
    -------
    CallPlan

    Raises
    ------
    InputTypeError
        ``func`` is not callable or ``n_inputs`` is not an integer.
    SignatureError
        The arguments do not fit ``func``'s signature.
    InputError
        ``n_inputs`` cannot be inferred or matches no argument.

    Examples
    --------
    >>> def f(trial, channel):
    ...     return trial * channel
    >>> distribute(f, (3,), {"channel": range(4)}).n_inputs
    4
    """
    if not callable(func):
        raise InputTypeError(
            f"the first argument of ParallelMap must be the function to run, not "
            f"{func!r} ({type(func).__name__}); write ParallelMap(func, *args, **kwargs)"
        )
    wanted = _check_n_inputs(n_inputs)
    positional, keyword, sig = _bind(func, args, kwargs)
    name = getattr(func, "__name__", repr(func))

    given_by_name = set(kwargs)
    candidates: dict[str, int] = {}
    for pname, value in [*positional, *keyword.items()]:
        length = _split_length(value)
        if length is None:
            continue
        if pname in given_by_name and sig is not None and pname in sig.parameters:
            default = sig.parameters[pname].default
            # A value shaped like the parameter's own default is that parameter's value.
            if isinstance(value, np.ndarray) and isinstance(default, np.ndarray):
                continue
            if isinstance(default, (list, tuple)) and len(default) == length:
                continue
        candidates[pname] = length

    lengths = set(candidates.values())
    if wanted is None:
        longer = lengths - {1}
        if len(longer) == 1:
            n = longer.pop()
        elif not longer and lengths:
            n = 1
        elif not lengths:
            raise InputError(
                f"cannot infer how often to call {name}(): no argument is a list, tuple, "
                "range or 1-D array to split across calls. Pass one such argument, or set "
                "n_inputs=<number of calls> to call it that often with the same arguments"
            )
        else:
            listing = ", ".join(f"{k} (length {v})" for k, v in candidates.items())
            raise InputError(
                f"cannot infer how often to call {name}(): the arguments {listing} have "
                "different lengths. Set n_inputs=<number of calls>; arguments of another "
                "length then go whole to every call"
            )
        if n == 0:
            empty = ", ".join(k for k, v in candidates.items() if v == 0)
            raise InputError(
                f"{name}() would be called 0 times: {empty} is empty. Pass at least one input "
                "to split across calls"
            )
    else:
        n = wanted
        if lengths - {1} and n not in lengths:
            listing = ", ".join(f"{k} (length {v})" for k, v in candidates.items())
            raise InputError(
                f"n_inputs={n} matches no argument of {name}(): {listing}. Give a list of "
                f"{n} values to split, or set n_inputs to one of those lengths"
            )

    def make(pname: str, value: Any) -> Argument:
        return Argument(pname, value, split=candidates.get(pname) == n)

    task_id = sig is not None and _TASK_ID in sig.parameters
    return CallPlan(
        func=func,
        n_inputs=int(n),
        args=tuple(make(p, v) for p, v in positional),
        kwargs={k: make(k, v) for k, v in keyword.items()},
        task_id=task_id,
    )

