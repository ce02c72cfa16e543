"""Argument distribution (ACME's rules) and every way to get the arguments wrong."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import psutil
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import AcmeXrError, InputError, InputTypeError, SignatureError
from acme_xr.inputs import distribute


def f2(x: Any, y: Any) -> Any:
    return x


def f3(x: Any, y: Any, z: Any = 3) -> Any:
    return x


def fkw(x: Any, y: Any = [1, 2, 3]) -> Any:  # noqa: B006 - ACME's rule for list defaults
    return x


def farr(x: Any, a: Any = np.zeros(3)) -> Any:  # noqa: B008
    return x


def fvar(*args: Any, **kw: Any) -> Any:
    return args


def ftask(x: Any, taskID: Any = None) -> Any:  # noqa: N803 - ACME's name
    return x


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and np.array_equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# (func, args, kwargs, n_inputs, expected n, call index, expected (args, kwargs) of that call)
DISTRIBUTION = [
    pytest.param(f2, ([1, 2, 3], 5), {}, "auto", 3, 1, ((2, 5), {}), id="list split, scalar whole"),
    pytest.param(f2, ((1, 2, 3), "abc"), {}, "auto", 3, 2, ((3, "abc"), {}), id="tuple split, str whole"),
    pytest.param(f2, (range(4), {"a": 1}), {}, "auto", 4, 3, ((3, {"a": 1}), {}), id="range split, dict whole"),
    pytest.param(f2, (np.arange(5), np.ones((2, 2))), {}, "auto", 5, 4, ((4, np.ones((2, 2))), {}),
                 id="1-D array split, 2-D array whole"),
    pytest.param(f2, (np.arange(5).reshape(5, 1), 1), {}, "auto", 5, 2, ((np.array([2]), 1), {}),
                 id="(5,1) array split into rows"),
    pytest.param(f2, ([1, 2, 3], [9]), {}, "auto", 3, 0, ((1, [9]), {}), id="length-1 list whole"),
    pytest.param(f2, ([7], [9]), {}, "auto", 1, 0, ((7, 9), {}), id="only length-1 lists: one call"),
    pytest.param(f2, (5, 6), {}, 4, 4, 3, ((5, 6), {}), id="n_inputs with scalars repeats"),
    pytest.param(f2, ([1, 2], [3, 4, 5]), {}, 3, 3, 1, (([1, 2], 4), {}), id="n_inputs picks the length"),
    pytest.param(f3, ([1, 2, 3], 0), {"z": [4, 5, 6]}, "auto", 3, 2, ((3, 0), {"z": 6}), id="keyword split"),
    pytest.param(fkw, ([1, 2, 3],), {"y": [4, 5, 6]}, "auto", 3, 1, ((2,), {"y": [4, 5, 6]}),
                 id="list like the default goes whole"),
    pytest.param(fkw, ([1, 2, 3, 4],), {"y": [4, 5, 6, 7]}, "auto", 4, 1, ((2,), {"y": 5}),
                 id="list unlike the default splits"),
    pytest.param(farr, (np.arange(3),), {"a": np.arange(3)}, "auto", 3, 1, ((1,), {"a": np.arange(3)}),
                 id="array default: array goes whole"),
    pytest.param(f2, (), {"x": [1, 2], "y": 3}, "auto", 2, 1, ((), {"x": 2, "y": 3}), id="positional by name"),
    pytest.param(fvar, ([1, 2], 3), {"k": [5, 6]}, "auto", 2, 1, ((2, 3), {"k": 6}), id="*args and **kwargs"),
    pytest.param(f2, (np.arange(3), [1, 2, 3]), {}, "auto", 3, 2, ((2, 3), {}), id="array and list split"),
    pytest.param(ftask, ([1, 2],), {}, "auto", 2, 1, ((2,), {"taskID": 1}), id="ACME taskID"),
]


@pytest.mark.parametrize("func, args, kwargs, n_inputs, n, i, expected", DISTRIBUTION)
def test_distribution(func: Any, args: Any, kwargs: Any, n_inputs: Any, n: int, i: int,
                      expected: Any) -> None:
    plan = distribute(func, args, kwargs, n_inputs)
    assert plan.n_inputs == n
    assert same(plan.call(i), expected)
    # the ParallelMap front door agrees
    assert ParallelMap(func, *args, n_inputs=n_inputs, **kwargs).n_inputs == n


def test_coordinates_from_split_scalars() -> None:
    plan = distribute(f3, (["s01", "s02"], np.ones((2, 2))), {"z": [0.5, 1.5]})
    coords = plan.coords()
    assert list(coords) == ["x", "z"]
    assert coords["x"].tolist() == ["s01", "s02"]
    assert coords["z"].tolist() == [0.5, 1.5]


def lines(exc: BaseException) -> str:
    return str(exc)


# (func, args, kwargs, expected error class, words the message must contain)
BAD_CALLS = [
    pytest.param(5, ([1, 2],), {}, InputTypeError, ["function", "5"], id="func not callable"),
    pytest.param(f2, ([1, 2], [1, 2, 3]), {}, InputError, ["x (length 2)", "y (length 3)", "n_inputs"],
                 id="ambiguous lengths"),
    pytest.param(f2, (1, 2), {}, InputError, ["n_inputs"], id="nothing to split"),
    pytest.param(f2, ([1, 2], [3, 4]), {"n_inputs": 3}, InputError, ["n_inputs=3", "length 2"],
                 id="n_inputs matches no argument"),
    pytest.param(f2, ([1, 2],), {}, SignatureError, ["f2", "'y'"], id="missing positional"),
    pytest.param(f2, ([1, 2], 3, 4), {}, SignatureError, ["f2", "too many"], id="too many positional"),
    pytest.param(f2, ([1, 2], 3), {"w": 4}, SignatureError, ["'w'"], id="unknown keyword"),
    pytest.param(f2, ([1, 2], 3), {"n_inputs": 2.5}, InputError, ["n_inputs", "2.5"], id="n_inputs float"),  # ACME: ValueError
    pytest.param(f2, ([1, 2], 3), {"n_inputs": "many"}, InputError, ["n_inputs", "'many'"], id="n_inputs str"),
    pytest.param(f2, ([1, 2], 3), {"n_inputs": 0}, InputError, ["n_inputs=0"], id="n_inputs 0"),
    pytest.param(f2, ([1, 2], 3), {"n_inputs": True}, InputTypeError, ["n_inputs"], id="n_inputs bool"),
    pytest.param(ftask, ([1, 2],), {"taskID": 3}, SignatureError, ["taskID"], id="taskID given"),
]

# keyword -> (bad value, error class, words of the message)
BAD_KEYWORDS = [
    ("write_worker_results", "yes", InputTypeError, ["write_worker_results", "'yes'"]),
    ("single_file", 1, InputTypeError, ["single_file"]),
    ("dryrun", "no", InputTypeError, ["dryrun"]),
    ("verbose", "loud", InputTypeError, ["verbose"]),
    ("resume", None, InputTypeError, ["resume"]),
    ("n_workers", 0, InputError, ["n_workers=0"]),
    ("n_workers", "many", InputError, ["n_workers", "'many'"]),  # ACME: ValueError
    ("stop_client", "sometimes", InputError, ["stop_client", "'sometimes'"]),
    ("mem_per_worker", "lots", InputError, ["mem_per_worker", "'lots'", "4GB"]),
    ("mem_per_worker", 4, InputTypeError, ["mem_per_worker"]),
    ("result_shape", (3, 4), InputError, ["result_shape", "None"]),
    ("result_shape", (None, None), InputError, ["exactly one None"]),
    ("result_shape", [None, -1], InputError, ["-1"]),
    ("result_shape", "(None, 3)", InputTypeError, ["result_shape"]),
    ("result_dtype", "notadtype", InputTypeError, ["result_dtype", "'notadtype'"]),
    ("storage", "netcdf", InputError, ["storage", "'netcdf'", "'hdf5'"]),
    ("storage", "single_file", InputError, ["storage='single_file'", "single_file=True"]),
    ("storage", "pickle", InputError, ["storage='pickle'", "write_pickle=True"]),
    ("storage", "memory", InputError, ["storage='memory'", "write_worker_results=False"]),
    ("output_dir", 5, InputTypeError, ["output_dir", "5"]),
    ("logfile", 3, InputTypeError, ["logfile"]),
    ("retries", -1, InputError, ["retries=-1"]),
    ("call_timeout", 0, InputError, ["call_timeout=0"]),
    ("call_timeout", "10", InputTypeError, ["call_timeout"]),
    ("setup_timeout", -1, InputError, ["setup_timeout"]),
    ("cleanup_threshold_days", -2, InputError, ["cleanup_threshold_days=-2"]),
    ("partition", 5, InputTypeError, ["partition"]),
    ("batch_size", 0, InputError, ["batch_size=0"]),
    ("resume", True, InputError, ["resume", "output_dir"]),
]
BAD_CALLS += [
    pytest.param(f2, ([1, 2], 3), {kw: value}, cls, words, id=f"{kw}={value!r}")
    for kw, value, cls, words in BAD_KEYWORDS
]
BAD_CALLS += [
    pytest.param(f2, ([1, 2], 3), {"result_shape": (None, np.inf), "write_worker_results": False},
                 InputError, ["np.inf", "write_worker_results"], id="inf shape in memory"),
    pytest.param(f2, ([1, 2], 3), {"write_pickle": True, "single_file": True}, InputError,
                 ["write_pickle", "single_file"], id="pickle and single file"),
]


@pytest.mark.parametrize("func, args, kwargs, cls, words", BAD_CALLS)
def test_bad_input_is_reported_before_anything_happens(
    tmp_path: Any, func: Any, args: Any, kwargs: Any, cls: type, words: list[str]
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(cls) as info:
        ParallelMap(func, *args, **kwargs).compute()
    assert isinstance(info.value, AcmeXrError)
    assert isinstance(info.value, (ValueError, TypeError))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert os.listdir(tmp_path) == []  # no directory, no file
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before  # no cluster started


def test_arguments_are_built_in_one_place_for_the_plan_and_the_worker() -> None:
    # plan.call (dry run, ACME compatibility) and the worker's Runner.arguments both use
    # inputs.call_arguments: same values, same taskID, same rng stream
    import numpy as np

    from acme_xr.inputs import call_arguments, distribute
    from acme_xr.worker import Runner, WriteSpec, split_values_for

    def f(x, y, taskID, rng, scale=1.0):  # noqa: N803 - ACME's name
        return x

    plan = distribute(f, ([1, 2, 3], "w"), {"scale": [0.1, 0.2, 0.3]},
                      seed=np.random.SeedSequence(7))
    runner = Runner.from_plan(plan, WriteSpec("memory"))
    positional, keyword = plan.slots()
    for i in range(3):
        split = split_values_for(plan, [i])[0]
        for args, kwargs in (plan.call(i), runner.arguments(i, split)):
            built = call_arguments(positional, keyword, split, i, plan.task_id, plan.seed)
            assert args == built[0] and kwargs["taskID"] == i == built[1]["taskID"]
            assert kwargs["scale"] == built[1]["scale"]
            assert kwargs["rng"].random() == built[1]["rng"].random()
        assert np.isclose(built[1]["scale"], [0.1, 0.2, 0.3][i])
