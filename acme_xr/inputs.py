"""Argument distribution: turn ``func, *args, **kwargs`` into one argument set per call.

The rules are ACME's, so code written for ACME distributes its inputs the same way:

* a ``list``, ``tuple`` or ``range`` whose length is ``n_inputs``, or a NumPy array that
  squeezes to one dimension with ``n_inputs`` elements, is *split*: element ``i`` goes to
  call ``i``. An array is split along its one axis longer than 1 and keeps its other
  (length-1) axes, so an ``(n, 1)`` array gives call ``i`` the row ``arr[i]`` of shape
  ``(1,)``, as in ACME, and an ``(n,)`` array gives it the scalar ``arr[i]``;
* everything else (scalars, strings, dicts, 2-D arrays, length-1 lists, other objects)
  goes *whole* to every call;
* a keyword argument whose default value is itself a list/tuple of the same length (or an
  array) is passed whole: it is a value of that parameter, not one value per call;
* ``n_inputs="auto"`` takes the one length shared by all splittable arguments (length-1
  lists do not count unless nothing else is there); anything ambiguous is an error that
  asks for ``n_inputs``.

Each call receives exactly what ``func(*args_i, **kwargs_i)`` would: what was given by
position is passed by position and what was given by name is passed by name. The signature
only names the arguments (coordinates of the results use those names) and checks them
before anything runs. A parameter named ``taskID`` receives the call index (ACME's rule);
with ``seed=`` a parameter named ``rng`` receives the call's own
:class:`numpy.random.Generator` (see :mod:`acme_xr.seeds`).

This module is pure: no dask, no files.

Examples
--------
>>> def f(x, y, scale=1.0):
...     return (x + y) * scale
>>> plan = distribute(f, ([1, 2, 3], 10), {"scale": 2.0})
>>> plan.n_inputs
3
>>> plan.call(1)   # by position stays by position, by name stays by name
((2, 10), {'scale': 2.0})
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, InputTypeError, SignatureError
from .seeds import call_rng

__all__ = ["Argument", "CallPlan", "distribute"]

_TASK_ID = "taskID"
_RNG = "rng"


@dataclass(frozen=True)
class Argument:
    """One argument of the user function as given by the user.

    Parameters
    ----------
    name : str
        Its label: the function's parameter name, ``<varargs>_<j>`` for extra positional
        values, the keyword for a value that goes to ``**kwargs``.
    value : object
        The value as given (the whole sequence when it is split).
    split : bool
        Whether element ``i`` of ``value`` goes to call ``i``.
    axis : int
        The axis of an array ``value`` that is split (its one axis longer than 1).
    """

    name: str
    value: Any
    split: bool = False
    axis: int = 0

    def at(self, i: int) -> Any:
        """Value this argument takes in call ``i``."""
        if not self.split:
            return self.value
        if isinstance(self.value, np.ndarray):
            # ACME's arr[i] for (n,) and (n, 1, ...): a view without the split axis
            return self.value[(slice(None),) * self.axis + (i,)]
        return self.value[i]

    def labels(self) -> np.ndarray | list[Any]:
        """The element of each call (of an array: its elements, whatever the split axis)."""
        if isinstance(self.value, np.ndarray):
            return self.value.reshape(-1)
        return list(self.value)


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
        Positional arguments, as given by position.
    kwargs : dict of str -> Argument
        Keyword arguments, as given by name.
    task_id : bool
        Whether ``func`` takes ACME's ``taskID`` keyword (it receives the call index).
    seed : numpy.random.SeedSequence, optional
        With a seed, ``func``'s ``rng`` parameter receives the Generator of call ``i``
        (:func:`acme_xr.seeds.call_rng`).
    """

    func: Callable[..., Any]
    n_inputs: int
    args: tuple[Argument, ...]
    kwargs: Mapping[str, Argument]
    task_id: bool = False
    seed: np.random.SeedSequence | None = None
    _split: tuple[Argument, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        split = tuple(a for a in (*self.args, *self.kwargs.values()) if a.split)
        object.__setattr__(self, "_split", split)

    @property
    def split_arguments(self) -> tuple[Argument, ...]:
        """The arguments that differ between calls, positional first."""
        return self._split

    def slots(self) -> tuple[list[Slot], dict[str, Slot]]:
        """The positional and keyword slots of :func:`call_arguments`: ``(True, k)`` for the
        ``k``-th split argument, ``(False, value)`` for a value every call gets whole."""
        order = {id(a): k for k, a in enumerate(self._split)}

        def slot(a: Argument) -> Slot:
            return (True, order[id(a)]) if a.split else (False, a.value)

        return [slot(a) for a in self.args], {k: slot(a) for k, a in self.kwargs.items()}

    def call(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of call ``i``."""
        if not 0 <= i < self.n_inputs:
            raise IndexError(f"call index {i} outside 0..{self.n_inputs - 1}")
        positional, keyword = self.slots()
        return call_arguments(positional, keyword, [a.at(i) for a in self._split], i,
                              self.task_id, self.seed)

    def coords(self) -> dict[str, np.ndarray]:
        """Per-call labels: every split argument whose elements are scalars.

        Returns
        -------
        dict
            Argument name -> 1-D array of length ``n_inputs``.
        """
        out: dict[str, np.ndarray] = {}
        for arg in self.split_arguments:
            values = arg.labels()
            if isinstance(values, np.ndarray):
                if values.dtype.kind in "biufcUSMm":
                    out[arg.name] = values
                continue
            if all(_is_scalar_label(v) for v in values):
                arr = np.asarray(values)
                if arr.ndim == 1 and arr.dtype.kind in "biufcUSMm":
                    out[arg.name] = arr
        return out


Slot = tuple[bool, Any]


def call_arguments(positional: Sequence[Slot], keyword: Mapping[str, Slot],
                   split: Sequence[Any], i: int, task_id: bool,
                   seed: np.random.SeedSequence | None,
                   ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of call ``i`` in the form the user gave them: the
    one place they are built (the plan here, the worker's :class:`~acme_xr.worker.Runner`).

    ``split``: the call's values of the split arguments; ``task_id``: fill ACME's
    ``taskID``; ``seed``: give ``rng`` call ``i``'s own Generator (a new one at each call,
    so that a retry draws what the first attempt drew).

    >>> call_arguments([(True, 0), (False, "w")], {"k": (True, 1)}, [10, 20], 3, True, None)
    ((10, 'w'), {'k': 20, 'taskID': 3})
    """
    args = tuple(split[v] if s else v for s, v in positional)
    kwargs = {k: (split[v] if s else v) for k, (s, v) in keyword.items()}
    if task_id:
        kwargs[_TASK_ID] = i
    if seed is not None:
        kwargs[_RNG] = call_rng(seed, i)
    return args, kwargs


def _is_scalar_label(value: Any) -> bool:
    return isinstance(value, (numbers.Number, str, bytes, np.generic)) and not isinstance(
        value, np.ndarray
    )


def _split_shape(value: Any) -> tuple[int, int] | None:
    """(length, axis) along which ACME would split ``value`` across calls, else ``None``."""
    if isinstance(value, (list, tuple, range)):
        return len(value), 0
    if isinstance(value, np.ndarray):
        long = [k for k, n in enumerate(value.shape) if n != 1]
        if len(long) == 1:  # squeezes to 1-D
            return int(value.shape[long[0]]), long[0]
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


_WHY = {
    _TASK_ID: "ACME's 'taskID' parameter, which acme_xr sets to the call index itself",
    _RNG: "the parameter 'rng', which acme_xr sets to the call's own random generator "
          "because seed= is given",
}


def _injected(func: Callable[..., Any], sig: inspect.Signature | None,
              seeded: bool) -> list[str]:
    """The parameters acme_xr fills itself (taskID; rng with a seed), checked."""
    name = getattr(func, "__name__", repr(func))
    params = {} if sig is None else sig.parameters
    if seeded and _RNG not in params:
        # a seed the function cannot receive would be ignored without a word
        raise InputError(
            f"seed= is given, but {name}() has no parameter 'rng' to receive the call's "
            f"random generator: add one (def {name}(..., rng): ... rng.random() ...) and "
            "draw every random number from it, or drop seed="
        )
    out = [p for p in (_TASK_ID, _RNG) if p in params and (p == _TASK_ID or seeded)]
    for p in out:
        if params[p].kind in (inspect.Parameter.POSITIONAL_ONLY,
                              inspect.Parameter.VAR_POSITIONAL,
                              inspect.Parameter.VAR_KEYWORD):
            raise SignatureError(
                f"{name}() takes {_WHY[p]} by name, but {p} cannot be passed by name in "
                f"{name}{sig}: make it an ordinary or keyword-only parameter"
            )
    return out


def _bind(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], seeded: bool
) -> tuple[list[tuple[str, Any]], dict[str, tuple[str, Any]], inspect.Signature | None,
           list[str]]:
    """Check the user's arguments against ``func``'s signature and label them.

    The call form is kept: the positional arguments come back in order as
    ``(label, value)`` pairs, the keyword arguments as ``keyword -> (label, value)``. Also
    returned: the signature (``None`` when ``func`` has none Python can read) and the
    parameters acme_xr fills itself.
    """
    name = getattr(func, "__name__", repr(func))
    try:
        sig: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        sig = None
    injected = _injected(func, sig, seeded)
    if sig is None:
        return ([(f"arg_{j}", v) for j, v in enumerate(args)],
                {k: (k, v) for k, v in kwargs.items()}, None, [])
    for p in injected:
        if p in kwargs:
            raise SignatureError(f"{name}() takes {_WHY[p]}: do not pass {p}")
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        # Python puts a keyword named like a positional-only parameter into **kwargs;
        # Signature.bind refuses it, so it is checked under a name no parameter has
        only = {p.name for p in params if p.kind is p.POSITIONAL_ONLY}
        kwargs_ = {(f"{k}\0" if k in only else k): v for k, v in kwargs.items()}
    else:
        kwargs_ = dict(kwargs)
    try:
        reached = sig.bind_partial(*args, **kwargs_).arguments
    except TypeError:
        reached = {}  # the full check below names what is wrong
    for p in injected:
        if p in reached:
            raise SignatureError(
                f"{name}() takes {_WHY[p]}, but {len(args)} positional arguments reach it: "
                "pass one fewer"
            )
    try:
        sig.bind(*args, **kwargs_, **{p: None for p in injected})
    except TypeError as exc:
        raise SignatureError(
            f"the arguments given do not fit {name}{sig}: {exc}. Pass one argument per "
            "parameter of the function (lists are split across calls), by position or by "
            "name"
        ) from exc

    ordinary = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), "args")
    starstar = next((p.name for p in params if p.kind is p.VAR_KEYWORD), "kwargs")
    used = set(kwargs)
    positional: list[tuple[str, Any]] = []
    for j, value in enumerate(args):
        if j < len(ordinary):
            label = ordinary[j]
        else:
            label = f"{star}_{j - len(ordinary)}"
            while label in used:  # e.g. f(*args, args_0): that name is a keyword's
                label += "_"
        used.add(label)
        positional.append((label, value))
    keyword: dict[str, tuple[str, Any]] = {}
    taken = {label for label, _ in positional}
    for key, value in kwargs.items():
        # e.g. f(a, /, **kw) called as f(1, a=2): the keyword 'a' lands in **kw
        label = key if key not in taken else f"{starstar}.{key}"
        keyword[key] = (label, value)
    return positional, keyword, sig, injected


def _takes_default(sig: inspect.Signature | None, key: str, value: Any, length: int) -> bool:
    """Whether ``value``, given by name, is shaped like that parameter's own default (then it
    is that parameter's value, passed whole: ACME's rule)."""
    if sig is None or key not in sig.parameters:
        return False
    param = sig.parameters[key]
    if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL, param.VAR_KEYWORD):
        return False  # the keyword does not bind to this parameter
    default = param.default
    if isinstance(value, np.ndarray) and isinstance(default, np.ndarray):
        return True
    return isinstance(default, (list, tuple)) and len(default) == length


def distribute(
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    n_inputs: int | str = "auto",
    seed: np.random.SeedSequence | None = None,
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
    seed : numpy.random.SeedSequence, optional
        The validated ``seed=`` (:func:`acme_xr.seeds.check_seed`): ``func`` must then
        have a parameter ``rng``, which receives call ``i``'s own Generator.

    Returns
    -------
    CallPlan

    Raises
    ------
    InputTypeError
        ``func`` is not callable or ``n_inputs`` is not an integer.
    SignatureError
        The arguments do not fit ``func``'s signature, or fill a parameter acme_xr sets
        itself (``taskID``; ``rng`` with a seed).
    InputError
        ``n_inputs`` cannot be inferred or matches no argument; a seed is given but
        ``func`` has no ``rng`` parameter.

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
    positional, keyword, sig, injected = _bind(func, args, kwargs, seed is not None)
    name = getattr(func, "__name__", repr(func))

    # label -> (length, axis) of every argument that may be split
    candidates: dict[str, tuple[int, int]] = {}
    for label, value in positional:
        shape = _split_shape(value)
        if shape is not None:
            candidates[label] = shape
    for key, (label, value) in keyword.items():
        shape = _split_shape(value)
        if shape is not None and not _takes_default(sig, key, value, shape[0]):
            candidates[label] = shape

    lengths = {length for length, _ in candidates.values()}
    listing = ", ".join(f"{k} (length {v})" for k, (v, _) in candidates.items())
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
            raise InputError(
                f"cannot infer how often to call {name}(): the arguments {listing} have "
                "different lengths. Set n_inputs=<number of calls>; arguments of another "
                "length then go whole to every call"
            )
        if n == 0:
            empty = ", ".join(k for k, (v, _) in candidates.items() if v == 0)
            raise InputError(
                f"{name}() would be called 0 times: {empty} is empty. Pass at least one input "
                "to split across calls"
            )
    else:
        n = wanted
        if lengths - {1} and n not in lengths:
            raise InputError(
                f"n_inputs={n} matches no argument of {name}(): {listing}. Give a list of "
                f"{n} values to split, or set n_inputs to one of those lengths"
            )

    def make(label: str, value: Any) -> Argument:
        length, axis = candidates.get(label, (-1, 0))
        return Argument(label, value, split=length == n, axis=axis)

    return CallPlan(
        func=func,
        n_inputs=int(n),
        args=tuple(make(label, v) for label, v in positional),
        kwargs={k: make(label, v) for k, (label, v) in keyword.items()},
        task_id=_TASK_ID in injected,
        seed=seed,
    )

