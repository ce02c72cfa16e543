"""Every call receives exactly what ``func(*args_i, **kwargs_i)`` would (issue 9, point 1),
and arrays are split the way ACME splits them (point 6, the (n, 1) case).

The property test builds functions with random signatures (every parameter kind, with and
without defaults), gives them random arguments by position or by name, and compares what
each call receives -- values, and whether by position or by name -- with a direct call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.errors import SignatureError
from acme_xr.inputs import distribute
from acme_xr.seeds import check_seed
from acme_xr.worker import Runner, WriteSpec, split_values_for

N = 3  # calls in every generated run


def issue_func(x: Any, y: Any, z: Any = 3, arrsize: Any = 2, sleeper: Any = 300) -> Any:
    return {"x": x, "y": y, "z": z, "arrsize": arrsize, "sleeper": sleeper}


def test_issue_case_keywords_reach_their_parameters(client: Any) -> None:
    pmap = ParallelMap(issue_func, [0, 1], 2, sleeper=5, arrsize=7, write_worker_results=False,
                       verbose=False)
    assert pmap.compute() == [
        {"x": 0, "y": 2, "z": 3, "arrsize": 7, "sleeper": 5},
        {"x": 1, "y": 2, "z": 3, "arrsize": 7, "sleeper": 5},
    ]


# -- random signatures -----------------------------------------------------------------------
P = inspect.Parameter


@st.composite
def signatures(draw: Any) -> inspect.Signature:
    """A signature with a random mix of parameter kinds and defaults."""
    params: list[inspect.Parameter] = []
    defaulted = False
    names = iter(f"p{k}" for k in range(20))
    for kind, most in ((P.POSITIONAL_ONLY, 2), (P.POSITIONAL_OR_KEYWORD, 3)):
        for _ in range(draw(st.integers(0, most))):
            # after a parameter with a default, every positional one needs one too
            defaulted = defaulted or draw(st.booleans())
            name = next(names)
            params.append(P(name, kind, default=f"default-{name}" if defaulted else P.empty))
    if draw(st.booleans()):
        params.append(P("args", P.VAR_POSITIONAL))
    for _ in range(draw(st.integers(0, 2))):
        name = next(names)
        params.append(P(name, P.KEYWORD_ONLY,
                        default=f"default-{name}" if draw(st.booleans()) else P.empty))
    if draw(st.booleans()):
        params.append(P("kw", P.VAR_KEYWORD))
    return inspect.Signature(params)


def make_function(sig: inspect.Signature) -> Any:
    """A function with signature ``sig`` returning its parameters' values, wrapped (as a
    decorator would) by one that also records how it was called."""
    defaults = {p.name: p.default for p in sig.parameters.values() if p.default is not P.empty}
    text = str(sig.replace(parameters=[
        p.replace(default=P.empty) if p.default is P.empty else p.replace(default=0)
        for p in sig.parameters.values()]))
    for name in defaults:  # the defaults are looked up in the namespace by name
        text = text.replace(f"{name}=0", f"{name}=_defaults[{name!r}]")
    namespace: dict[str, Any] = {"_defaults": defaults}
    exec(f"def target{text}:\n    return dict(locals())\n", namespace)  # noqa: S102
    target = namespace["target"]

    @functools.wraps(target)
    def recorder(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs, target(*args, **kwargs)

    return recorder


def split_value(draw: Any, k: int) -> Any:
    """One argument value: split across the calls or given whole."""
    return draw(st.sampled_from([
        [10 * k + i for i in range(N)],                      # split
        tuple(f"s{k}{i}" for i in range(N)),                 # split
        np.arange(N) + 10 * k,                               # split: scalars
        (np.arange(N) + 10 * k).reshape(N, 1),               # split: rows of shape (1,)
        k,                                                   # whole
        f"whole{k}",                                         # whole
        [k],                                                 # whole (length 1)
        np.full((2, 2), k),                                  # whole (2-D)
    ]))


@st.composite
def bindings(draw: Any) -> tuple[inspect.Signature, tuple[Any, ...], dict[str, Any], bool]:
    """A signature and arguments for it, by position or by name; sometimes wrong ones."""
    sig = draw(signatures())
    seeded = draw(st.booleans())
    if seeded:  # the generator arrives by name, as a keyword-only parameter
        params = list(sig.parameters.values())
        at = len([p for p in params if p.kind is not P.VAR_KEYWORD])
        params.insert(at, P("rng", P.KEYWORD_ONLY))
        sig = sig.replace(parameters=params)
    ordinary = [p for p in sig.parameters.values()
                if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    has_star = any(p.kind is P.VAR_POSITIONAL for p in sig.parameters.values())
    has_kw = any(p.kind is P.VAR_KEYWORD for p in sig.parameters.values())
    n_pos = draw(st.integers(0, len(ordinary) + (2 if has_star else 1)))
    values = iter(range(100))
    args = tuple(split_value(draw, next(values)) for _ in range(n_pos))
    kwargs: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name == "rng" or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            continue
        if p.kind is P.POSITIONAL_ONLY or (p in ordinary and ordinary.index(p) < n_pos):
            continue
        # a required parameter is almost always given; left out, the call must be refused
        given = draw(st.sampled_from([True] * 5 + [False])) if p.default is P.empty \
            else draw(st.booleans())
        if given:
            kwargs[p.name] = split_value(draw, next(values))
    for k in range(draw(st.integers(0, 2 if has_kw else 0))):
        kwargs[f"extra{k}"] = split_value(draw, next(values))
    # the same name as a positional-only parameter goes to **kw, or is an error
    if ordinary and ordinary[0].kind is P.POSITIONAL_ONLY and draw(st.booleans()):
        kwargs[ordinary[0].name] = split_value(draw, next(values))
    return sig, args, kwargs, seeded


def element(value: Any, i: int) -> Any:
    """What ACME's rules give call ``i`` of ``value`` with N calls."""
    if isinstance(value, (list, tuple)) and len(value) == N:
        return value[i]
    if isinstance(value, np.ndarray) and value.shape in ((N,), (N, 1)):
        return value[i]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types (arrays: same shape, dtype and elements)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, np.random.Generator):
        return a.bit_generator.state == b.bit_generator.state
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


SEED = 20261130


def direct_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], seeded: bool,
                i: int) -> Any:
    """``func(*args_i, **kwargs_i)``: what call ``i`` must receive."""
    kw = {k: element(v, i) for k, v in kwargs.items()}
    if seeded:
        kw["rng"] = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(i,)))
    return func(*(element(v, i) for v in args), **kw)


@settings(max_examples=400, deadline=None)
@given(binding=bindings())
def test_every_call_receives_what_a_direct_call_would(binding: Any) -> None:
    sig, args, kwargs, seeded = binding
    func = make_function(sig)
    seed = check_seed(SEED) if seeded else None
    try:
        expected = [direct_call(func, args, kwargs, seeded, i) for i in range(N)]
    except TypeError as exc:  # the arguments do not fit: refused before anything runs
        with pytest.raises(SignatureError):
            distribute(func, args, kwargs, N, seed=seed)
        assert str(exc)
        event("refused")
        return
    event(f"{len(args)} by position, {len(kwargs)} by name" + (", seeded" if seeded else ""))
    plan = distribute(func, args, kwargs, N, seed=seed)
    runner = Runner.from_plan(plan, WriteSpec("memory"))
    for i in range(N):
        a, k = plan.call(i)
        assert same(func(*a, **k), expected[i]), (sig, i, (a, k))
        (split,) = split_values_for(plan, [i])
        a, k = runner.arguments(i, split)
        assert same(func(*a, **k), expected[i]), (sig, i, (a, k))


def run_through_parallel_map(binding: Any, debug: bool) -> None:
    sig, args, kwargs, seeded = binding
    func = make_function(sig)
    try:
        expected = [direct_call(func, args, kwargs, seeded, i) for i in range(N)]
    except TypeError:
        with pytest.raises(SignatureError):
            ParallelMap(func, *args, n_inputs=N, **kwargs)
        return
    opts: dict[str, Any] = {"seed": SEED} if seeded else {}
    pmap = ParallelMap(func, *args, n_inputs=N, write_worker_results=False, verbose=False,
                       **opts, **kwargs)
    got = pmap.compute(debug=debug)
    assert all(same(g, e) for g, e in zip(got, expected, strict=True)), (sig, got, expected)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(binding=bindings())
def test_parallel_map_calls_receive_what_a_direct_call_would_debug(binding: Any) -> None:
    run_through_parallel_map(binding, debug=True)


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(binding=bindings())
def test_parallel_map_calls_receive_what_a_direct_call_would_on_the_cluster(
        client: Any, binding: Any) -> None:
    run_through_parallel_map(binding, debug=False)


def test_every_parameter_kind_on_the_cluster(client: Any) -> None:
    sig = inspect.Signature([
        P("a", P.POSITIONAL_ONLY), P("b", P.POSITIONAL_ONLY, default="B"),
        P("c", P.POSITIONAL_OR_KEYWORD, default="C"), P("d", P.POSITIONAL_OR_KEYWORD, default="D"),
        P("args", P.VAR_POSITIONAL), P("e", P.KEYWORD_ONLY), P("f", P.KEYWORD_ONLY, default="F"),
        P("kw", P.VAR_KEYWORD)])
    # b given, c and d by name (c left at its default), a keyword named like the
    # positional-only a that lands in **kw, an extra keyword
    args = ([1, 2, 3], "b")
    kwargs = {"d": (4, 5, 6), "e": np.arange(3).reshape(3, 1), "a": "to kw", "x": [7, 8, 9]}
    run_through_parallel_map((sig, args, kwargs, False), debug=False)


# -- arrays: split as ACME splits them ---------------------------------------------------
def shape_of(x: Any) -> Any:
    return np.shape(x), type(x).__name__


# shape -> what call i gets; ACME (esi-acme 2026.6.2, frontend.prepare_input and the zip over
# argv in client_orchestrator) gives arr[i] when the long axis is the first one
ARRAY_SPLITS = [
    pytest.param((3,), lambda a, i: a[i], ((), "int64"), id="(n,): numpy scalar, as ACME"),
    pytest.param((3, 1), lambda a, i: a[i], ((1,), "ndarray"), id="(n,1): row arr[i], as ACME"),
    pytest.param((3, 1, 1), lambda a, i: a[i], ((1, 1), "ndarray"), id="(n,1,1): arr[i], as ACME"),
    # ACME counts n calls but then hands the whole array to every call (by position) or
    # fails (by name): here the one long axis is split, the length-1 axes are kept
    pytest.param((1, 3), lambda a, i: a[:, i], ((1,), "ndarray"), id="(1,n): arr[:, i]"),
    pytest.param((1, 3, 1), lambda a, i: a[:, i], ((1, 1), "ndarray"), id="(1,n,1): arr[:, i]"),
    pytest.param((1, 1, 3), lambda a, i: a[:, :, i], ((1, 1), "ndarray"), id="(1,1,n)"),
]


@pytest.mark.parametrize("by_name", [False, True], ids=["by position", "by name"])
@pytest.mark.parametrize("shape, index, received", ARRAY_SPLITS)
def test_arrays_that_squeeze_to_1d_are_split_as_acme_does(
        shape: tuple[int, ...], index: Any, received: Any, by_name: bool) -> None:
    arr = np.arange(3, dtype=np.int64).reshape(shape) + 10
    plan = distribute(shape_of, (), {"x": arr}) if by_name else distribute(shape_of, (arr,), {})
    assert plan.n_inputs == 3
    for i in range(3):
        a, k = plan.call(i)
        value = k["x"] if by_name else a[0]
        assert same(value, index(arr, i))
        assert shape_of(value) == received
    # labels of the calls are the elements, whatever the shape
    assert plan.coords()["x"].tolist() == [10, 11, 12]


@pytest.mark.parametrize("shape", [(1,), (1, 1), (3, 2), (2, 1, 2), (1, 3, 2)])
def test_other_arrays_go_whole(shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape)
    plan = distribute(shape_of, (arr,), {}, n_inputs=3)
    assert all(plan.call(i)[0][0] is arr for i in range(3))


def test_rows_reach_the_workers(client: Any) -> None:
    arr = np.arange(4.0).reshape(4, 1)
    pmap = ParallelMap(lambda x: x, arr, write_worker_results=False, verbose=False)
    got = pmap.compute()
    assert [g.shape for g in got] == [(1,)] * 4
    assert np.array_equal(np.concatenate(got), arr[:, 0])
