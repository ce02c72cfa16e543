"""Run identity: what must be equal for a run to resume another one.

A run is identified by two digests, stored in its manifest header under ``"fingerprint"``:

* ``"func"``: the function's normalised code (bytecode, constants without the docstring,
  names, argument counts, flags), its defaults, closure values, a ``functools.partial``'s
  function, arguments and keywords, a bound method's instance state, and every global the
  code uses, followed into the user's own modules (their functions, classes and constants,
  hashed the same way). Installed packages (site-packages, dist-packages, the standard
  library) count by name and version, not by code.
* ``"inputs"``: the number of calls and every argument's name, split and bytes (NumPy arrays
  by dtype, shape and all their bytes; containers element by element; other objects by what
  they pickle to, i.e. ``__reduce_ex__``, and their class's code).

Nothing that cannot change a result takes part: file names, line numbers, comments,
docstrings, the module name (``__main__`` for a script, the module's name when imported).
So the digests are equal across processes and launch styles (``python script.py``,
``python -c``, ``python -m``). What cannot be hashed (an object that neither pickles nor
tokenizes deterministically) raises :class:`~acme_xr.errors.FingerprintError`: guessing
(a ``repr`` with a memory address, a truncated array) is never done.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> def f(x, gain):
...     return x * gain
>>> identity = run_identity(f, distribute(f, ([1, 2, 3], 2.0), {}))
>>> sorted(identity), identity["version"]
(['func', 'inputs', 'version'], 2)
>>> identity["func"] == func_fingerprint(lambda x, gain: x * gain)  # only code counts
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import FingerprintError
from .hashing import Hasher

if TYPE_CHECKING:
    from .inputs import CallPlan

__all__ = ["FINGERPRINT_VERSION", "compare_identity", "func_fingerprint", "inputs_fingerprint",
           "run_identity"]

#: Scheme of the digests; a run recorded with another scheme cannot be compared.
FINGERPRINT_VERSION = 2

def run_identity(func: Callable[..., Any], plan: CallPlan, *,
                 on_error: str = "raise") -> dict[str, Any]:
    """The identity of a run of ``func`` over ``plan``, as stored in its manifest.

    Parameters
    ----------
    func : callable
        The user function.
    plan : CallPlan
        Its distributed arguments (:func:`acme_xr.inputs.distribute`).
    on_error : {"raise", "record"}
        What to do with a part that cannot be fingerprinted: raise
        :class:`~acme_xr.errors.FingerprintError`, or record ``None`` for it and the reason
        under ``"errors"`` (a new run must start even so; only its resume is refused).

    Returns
    -------
    dict
        ``{"version": FINGERPRINT_VERSION, "func": str, "inputs": str}`` (plus ``"errors"``).

    Examples
    --------
    >>> from acme_xr.inputs import distribute
    >>> run_identity(abs, distribute(abs, ([1, -2],), {}))["version"]
    2
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error={on_error!r}: give 'raise' or 'record'")
    identity: dict[str, Any] = {"version": FINGERPRINT_VERSION}
    errors: dict[str, str] = {}
    for part, compute in (("func", lambda: func_fingerprint(func)),
                          ("inputs", lambda: inputs_fingerprint(plan))):
        try:
            identity[part] = compute()
        except FingerprintError as exc:
            if on_error == "raise":
                raise
            identity[part], errors[part] = None, str(exc)
    if errors:
        identity["errors"] = errors
    return identity


def func_fingerprint(func: Callable[..., Any]) -> str:
    """A digest of everything about ``func`` that can change its results.

    Raises
    ------
    FingerprintError
        Something ``func`` holds or uses cannot be fingerprinted; the message names it.

    Examples
    --------
    >>> def f(x):
    ...     '''A docstring does not count.'''
    ...     return x + 1
    >>> func_fingerprint(f) == func_fingerprint(lambda x: x + 1)
    True
    """
    h = Hasher()
    with h.at(f"the function {getattr(func, '__qualname__', type(func).__qualname__)}"):
        h.value(func)
    return h.hexdigest()


def inputs_fingerprint(plan: CallPlan) -> str:
    """A digest of the number of calls and every argument's name, split and full bytes.

    Raises
    ------
    FingerprintError
        An argument cannot be fingerprinted; the message names it.
    """
    h = Hasher()
    h.text("n_inputs", str(plan.n_inputs))
    keywords = sorted(plan.kwargs.items())  # f(a=1, b=2) is f(b=2, a=1)
    for kind, arguments in (("positional", [(a.name, a) for a in plan.args]),
                            ("keyword", keywords)):
        for name, arg in arguments:
            h.text(kind, f"{name}:{arg.split}")
            with h.at(f"argument {name!r}"):
                h.value(arg.value)
    return h.hexdigest()


def compare_identity(recorded: Any, current: dict[str, Any]) -> list[str]:
    """What differs between a recorded identity and the current one (empty: the same run).

    Each entry is a phrase such as ``"the function differs"``; every one of them may be
    overridden with ``resume="force"``.
    """
    if not isinstance(recorded, dict) or "version" not in recorded:
        return ["the run was written by an older acme_xr whose fingerprints (function source, "
                "argument repr) cannot be compared with this version's"]
    if recorded["version"] != current["version"]:
        older = isinstance(recorded["version"], int) and recorded["version"] < current["version"]
        age = "an older" if older else "a newer"
        return [f"the run was written by {age} acme_xr (fingerprint scheme "
                f"{recorded['version']}, this one uses {current['version']})"]
    what = []
    for part, phrase in (("func", "the function differs"), ("inputs", "the inputs differ")):
        theirs, ours = recorded.get(part), current.get(part)
        if ours is None:
            what.append(current.get("errors", {}).get(part, f"{part} cannot be fingerprinted"))
        elif theirs is None:
            reason = recorded.get("errors", {}).get(part, "")
            what.append(f"the recorded run's {part} could not be fingerprinted ({reason})")
        elif theirs != ours:
            what.append(phrase)
    return what
