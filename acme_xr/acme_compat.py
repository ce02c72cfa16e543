"""The attributes of ACME's ``ParallelMap`` that its users read and edit.

ACME (``esi-acme``) keeps the distributed arguments on the object as ``argv`` (one list
per positional argument) and ``kwargv`` (keyword -> list), each list holding either one
value per call or a single value that every call gets. Packages built on ACME, Syncopy
first, read them and edit them between construction and ``compute()``, e.g. to hand a
list whole to every call instead of splitting it::

    pmap = ParallelMap(f, data, cfg=[1, 2, 3])   # 3 calls: cfg split
    pmap.kwargv["cfg"] = [[1, 2, 3]]             # now every call gets the whole list

acme_xr keeps its call plan (:class:`~acme_xr.inputs.CallPlan`) as the truth and exposes
``argv``/``kwargv`` in ACME's shapes; an edit of them is turned into a new plan when the
plan is next used (at ``compute()``), so the calls receive what the edited lists say.
``daemon`` and ``config`` are small stand-ins for ACME's ``ACMEdaemon`` and ``ACMEConfig``
with the attributes users touch (``client``, ``output_dir``, ``n_calls``), not
re-implementations.

Examples
--------
>>> from acme_xr import ParallelMap
>>> def f(x, y, z=3):
...     return (x + y) * z
>>> pmap = ParallelMap(f, [2, 4, 6, 8], 4, write_worker_results=False)
>>> pmap.argv, pmap.kwargv, pmap.n_calls
([[2, 4, 6, 8], [4]], {}, 4)
>>> pmap.argv[1] = [10]          # every call now gets y=10
>>> pmap.plan.call(0)
((2, 10), {})
>>> pmap.daemon.client is None   # constructing starts nothing
True
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InputError, InputTypeError, SignatureError
from .inputs import Argument, CallPlan, _bind

if TYPE_CHECKING:
    from .lease import ClusterLease
    from .options import Options

__all__ = ["AcmeAttributes", "AcmeDaemon", "AcmeConfig"]


def _entry(arg: Argument) -> Any:
    # ACME's shape: a split argument is kept as given (one value per call), any other is
    # wrapped in a one-element list
    return arg.value if arg.split else [arg.value]


def _state(entry: Any) -> tuple[int, int, int]:
    """What identifies an argv/kwargv entry as unedited: the object, its length and, for
    a one-element wrapper, the object inside it (``kwargv[k][0] = v`` edits in place)."""
    try:
        n = len(entry)
    except TypeError:
        return (id(entry), -1, 0)
    inner = id(entry[0]) if n == 1 and isinstance(entry, (list, tuple)) else 0
    return (id(entry), n, inner)


def _argument(where: str, name: str, entry: Any, n_calls: int) -> Argument:
    """ACME's reading of an argv/kwargv entry: one value for all calls, or one per call."""
    try:
        n = len(entry)
    except TypeError:
        raise InputTypeError(
            f"{where} must be a list: [value] for one value that every call gets, or a list "
            f"of {n_calls} values (one per call), not {entry!r} ({type(entry).__name__})"
        ) from None
    if n == 1:
        return Argument(name, entry[0], split=False)
    if n == n_calls:
        return Argument(name, entry, split=True)
    raise InputError(
        f"{where} has {n} entries, but the run has {n_calls} calls: give [value] for one "
        f"value that every call gets, or a list of {n_calls} values (one per call)"
    )


def _acme_layout(plan: CallPlan) -> tuple[list[Argument], dict[str, Argument]]:
    """The plan's arguments as ACME files them: ``argv`` and ``kwargv``.

    ACME puts the parameters without a default in ``argv`` (in the function's order, also
    when given by name) and those with a default in ``kwargv`` (by name). The calls stay
    the same: leading positional parameters may be given by position or by name.
    """
    args, kwargs = list(plan.args), dict(plan.kwargs)
    try:
        params = inspect.signature(plan.func).parameters
    except (TypeError, ValueError):
        return args, kwargs
    ordinary = [p for p in params.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    cut = len(args)
    while cut > 0:  # trailing arguments of parameters with a default: by name
        p = params.get(args[cut - 1].name)
        if p is None or p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is p.empty:
            break
        cut -= 1
    moved = {a.name: a for a in args[cut:]}
    argv = args[:cut]
    for p in ordinary[cut:]:  # required parameters given by name: by position
        if p.default is not p.empty or p.name not in kwargs:
            break
        argv.append(kwargs.pop(p.name))
    return argv, {**moved, **kwargs}


def _kept(before: Argument | None, entry: Any) -> Argument | None:
    """The plan's own Argument when its entry was left alone (it keeps its exact
    splitting rule, e.g. for arrays), else None."""
    if before is None:
        return None
    if before.split:
        return before if entry is before.value else None
    same = isinstance(entry, (list, tuple)) and len(entry) == 1 and entry[0] is before.value
    return before if same else None


def _check_fits(plan: CallPlan) -> None:
    """Refuse edited ``argv``/``kwargv`` that the function cannot take: the same check
    as at construction, on the first call's values (every call has the same form)."""
    args = [a.at(0) for a in plan.args]
    kwargs = {k: a.at(0) for k, a in plan.kwargs.items()}
    try:
        _bind(plan.func, args, kwargs, plan.seed is not None)
    except SignatureError as exc:
        raise SignatureError(f"after editing pmap.argv / pmap.kwargv: {exc}") from exc


class AcmeAttributes:
    """Mixin of :class:`~acme_xr.ParallelMap`: ``plan`` kept in step with ACME's
    ``argv``/``kwargv``, plus ``n_calls``, ``daemon`` and ``config``."""

    _plan: CallPlan
    _synced: tuple[Any, ...]
    _state_refs: tuple[Any, ...]
    argv: list[Any]
    kwargv: dict[str, Any]
    options: Options
    output_dir: str | None
    _lease: ClusterLease | None
    compute: Callable[..., Any]
    cleanup: Callable[[], None]

    @property
    def plan(self) -> CallPlan:
        """The per-call arguments; rebuilt from ``argv``/``kwargv`` if they were edited."""
        state = self._argv_state()
        if state != self._synced:
            self._plan = self._plan_from_argv()
            self._synced = state
        return self._plan

    @plan.setter
    def plan(self, plan: CallPlan) -> None:
        self._plan = plan
        argv, kwargv = _acme_layout(plan)
        self.argv = [_entry(a) for a in argv]
        self.kwargv = {k: _entry(a) for k, a in kwargv.items()}
        self._synced = self._argv_state()

    def _sync_plan(self) -> None:
        """Turn edits of ``argv``/``kwargv`` into the plan now (errors before any I/O)."""
        self.plan  # noqa: B018 - the property does the work

    @property
    def n_calls(self) -> int:
        """Number of calls (ACME's name for ``n_inputs``)."""
        return self._plan.n_inputs

    @property
    def daemon(self) -> AcmeDaemon:
        """ACME's ``pmap.daemon``: ``client``, ``config``, ``compute()``, ``cleanup()``."""
        return AcmeDaemon(self)

    @property
    def config(self) -> AcmeConfig:
        """ACME's ``pmap.daemon.config``: ``output_dir``, ``n_calls``, ``client``, ..."""
        return AcmeConfig(self)

    def _argv_state(self) -> tuple[Any, ...]:
        argv, kwargv = self.argv, self.kwargv
        # keep the objects alive until the next look, so that an object the user puts in
        # meanwhile cannot reuse the id of one the state was taken from
        self._state_refs = (argv, kwargv, list(argv), list(kwargv.values()))
        return (id(argv), id(kwargv), tuple(_state(e) for e in argv),
                tuple((k, _state(e)) for k, e in kwargv.items()))

    def _plan_from_argv(self) -> CallPlan:
        old, n = self._plan, self._plan.n_inputs
        if not isinstance(self.argv, (list, tuple)) or not isinstance(self.kwargv, dict):
            raise InputTypeError(
                "pmap.argv must be a list and pmap.kwargv a dict (keyword -> list), not "
                f"{type(self.argv).__name__} and {type(self.kwargv).__name__}"
            )
        old_argv, old_kwargv = _acme_layout(old)
        args = []
        for k, entry in enumerate(self.argv):
            before = old_argv[k] if k < len(old_argv) else None
            name = before.name if before is not None else f"arg_{k}"
            args.append(_kept(before, entry) or _argument(f"pmap.argv[{k}]", name, entry, n))
        kwargs = {}
        for key, entry in self.kwargv.items():
            if not isinstance(key, str):
                raise InputTypeError(f"pmap.kwargv keys must be parameter names, not {key!r}")
            before = old_kwargv.get(key)
            kwargs[key] = (_kept(before, entry) or _argument(
                f"pmap.kwargv[{key!r}]", before.name if before else key, entry, n))
        plan = dataclasses.replace(old, args=tuple(args), kwargs=kwargs)
        _check_fits(plan)
        return plan


class AcmeDaemon:
    """The parts of ACME's ``ACMEdaemon`` that users touch.

    Attributes
    ----------
    client : distributed.Client or None
        None until :meth:`compute` starts or adopts a client; afterwards the client of
        the run while it is still running (a client the user started, or one kept with
        ``stop_client=False``), else None.
    config : AcmeConfig
        Same as ``pmap.config``.
    """

    def __init__(self, pmap: AcmeAttributes) -> None:
        self._pmap = pmap

    @property
    def client(self) -> Any:
        return _live_client(self._pmap)

    @property
    def config(self) -> AcmeConfig:
        return AcmeConfig(self._pmap)

    @property
    def n_calls(self) -> int:
        return self._pmap.n_calls

    def compute(self, debug: bool = False) -> Any:
        """Same as :meth:`ParallelMap.compute`."""
        return self._pmap.compute(debug=debug)

    def cleanup(self) -> None:
        """Same as :meth:`ParallelMap.cleanup`."""
        self._pmap.cleanup()


class AcmeConfig:
    """The parts of ACME's ``ACMEConfig`` that users read.

    ``output_dir`` is the absolute run directory: the given one at once, the default
    ``ACME_<timestamp>`` once :meth:`compute` has chosen it (None before, and always in
    memory mode). The other keywords read as validated.
    """

    def __init__(self, pmap: AcmeAttributes) -> None:
        self._pmap = pmap

    @property
    def output_dir(self) -> str | None:
        pmap = self._pmap
        if pmap.output_dir is not None:
            return pmap.output_dir
        given = pmap.options.output_dir
        if given is None or not pmap.options.write_worker_results:
            return None
        return os.path.abspath(os.path.expanduser(given))

    @property
    def n_calls(self) -> int:
        return self._pmap.n_calls

    @property
    def client(self) -> Any:
        return _live_client(self._pmap)

    @property
    def argv(self) -> list[Any]:
        return self._pmap.argv

    @property
    def kwargv(self) -> dict[str, Any]:
        return self._pmap.kwargv

    def __getattr__(self, name: str) -> Any:
        # the validated keywords (write_worker_results, result_shape, n_workers, ...)
        options = self.__dict__["_pmap"].options
        if name.startswith("_") or not hasattr(options, name):
            raise AttributeError(f"config has no attribute {name!r}")
        return getattr(options, name)


def _live_client(pmap: AcmeAttributes) -> Any:
    lease = pmap._lease
    if lease is not None and lease.client is not None:
        return lease.client
    client = getattr(pmap, "_last_client", None)
    if client is not None and getattr(client, "status", None) == "running":
        return client
    return None

