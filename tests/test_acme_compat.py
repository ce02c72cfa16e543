"""What ACME (esi-acme 2026.6.2) users rely on: its pickles, its exception types, the
attributes they touch (argv/kwargv/daemon/config/n_calls).

The expected values were observed by running esi-acme itself (see docs/migrating.md); the
tests re-enact them against acme_xr. Ports of ACME's own test_pmap.py are in
tests/test_acme_ported.py.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import distributed
import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.cluster import cluster_cleanup
from acme_xr.errors import InputError, SignatureError
from tests.conftest import listing


class Thing:
    """A user's own class: HDF5 cannot hold it (importable, so a worker can unpickle it)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return type(other) is Thing and other.v == self.v

    def __repr__(self) -> str:
        return f"Thing({self.v})"


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types, all the way down (arrays by dtype, shape and data)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- 1. pickles ---------------------------------------------------------------------------
def mixed_dict(i: int) -> Any:
    return {"a": i, "b": np.arange(3) * i, "c": "text"}


def custom_object(i: int) -> Any:
    return Thing(i)


def array_and_dict(i: int) -> Any:
    return np.ones(2) * i, {"k": i}


def list_with_object(i: int) -> Any:
    return [np.ones(2) * i, Thing(i)]


# what ACME 2026.6.2 writes for call i, observed by running it: the emergency pickle holds
# the return values as its HDF5 writer saw them ([value] unless a list/tuple was returned)
EMERGENCY = [
    pytest.param(mixed_dict, lambda i: [mixed_dict(i)], id="dict of mixed objects"),
    pytest.param(custom_object, lambda i: [Thing(i)], id="custom class instance"),
    pytest.param(array_and_dict, lambda i: array_and_dict(i), id="tuple: array and dict"),
    pytest.param(list_with_object, lambda i: list_with_object(i), id="list: array and object"),
]


@pytest.mark.filterwarnings("ignore:.*pickled instead:UserWarning")
@pytest.mark.parametrize(("func", "acme_dumps"), EMERGENCY)
def test_value_hdf5_cannot_hold_is_pickled_as_acme_pickles_it(
        client: Any, tmp_path: Any, func: Any, acme_dumps: Any) -> None:
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="pickled instead"):
        files = ParallelMap(func, [0, 1, 2], output_dir=str(out)).compute()
    # ACME's name and place: <output_dir>/<func>_<i>.pickle
    assert files == [str(out / f"{func.__name__}_{i}.pickle") for i in range(3)]
    for i, path in enumerate(files):
        with open(path, "rb") as fh:
            loaded = pickle.load(fh)
        assert _same(loaded, acme_dumps(i)), (loaded, acme_dumps(i))


@pytest.mark.parametrize("func", [mixed_dict, custom_object, array_and_dict,
                                  list_with_object])
def test_write_pickle_holds_the_return_value_itself(client: Any, tmp_path: Any,
                                                    func: Any) -> None:
    out = tmp_path / "run"
    files = ParallelMap(func, [0, 1, 2], write_pickle=True, output_dir=str(out)).compute()
    assert files == [str(out / f"{func.__name__}_{i}.pickle") for i in range(3)]
    for i, path in enumerate(files):
        with open(path, "rb") as fh:
            assert _same(pickle.load(fh), func(i))


def sabotage(i: int) -> Any:
    # ACME's test_pmap pickle_func: even calls return a dict HDF5 cannot hold
    return {"b": np.arange(4.0)} if i % 2 == 0 else np.full(3, float(i))


@pytest.mark.filterwarnings("ignore:.*pickled instead:UserWarning")
def test_acme_readers_of_emergency_pickles_work(client: Any, tmp_path: Any) -> None:
    # ACME's own reader (test_pmap.test_pickling): pickle.load(pkf)[0]["b"]
    files = ParallelMap(sabotage, list(range(4)), output_dir=str(tmp_path / "r")).compute()
    for i, fname in enumerate(files):
        if i % 2 == 0:
            assert fname.endswith(".pickle")
            with open(fname, "rb") as pkf:
                assert np.array_equal(np.arange(4.0), pickle.load(pkf)[0]["b"])
        else:
            assert fname.endswith(".h5")


@pytest.mark.filterwarnings("ignore:.*pickled instead:UserWarning")
def test_single_file_keeps_the_pickles_of_values_hdf5_cannot_hold(client: Any,
                                                                  tmp_path: Any) -> None:
    # ACME fails such a call with single_file=True; acme_xr keeps the value as it does
    # without single_file, and the other calls in <func>.h5
    out = tmp_path / "run"
    files = ParallelMap(sabotage, list(range(4)), single_file=True,
                        output_dir=str(out)).compute()
    assert files == [str(out / "sabotage.h5")]
    for i in (0, 2):
        with open(out / f"sabotage_{i}.pickle", "rb") as fh:
            assert _same(pickle.load(fh), [sabotage(i)])
    import h5py

    with h5py.File(files[0]) as fh:
        assert np.array_equal(fh["comp_3/result_0"][()], sabotage(3))


# -- 2. exception types of bad keyword values ---------------------------------------------
def f3(x: Any, y: Any, z: Any = 3) -> Any:
    return (x + y) * z


# keyword -> bad value -> the builtin ACME 2026.6.2 raises (observed by running it; the
# rows marked "acme_xr only" are values ACME accepts or checks only on SLURM)
BAD_KEYWORDS: list[tuple[str, Any, type[BaseException]]] = [
    ("n_inputs", "x", ValueError), ("n_inputs", {}, TypeError), ("n_inputs", -3, ValueError),
    ("n_inputs", 3.6, ValueError), ("n_inputs", 0, ValueError), ("n_inputs", True, TypeError),
    ("write_worker_results", "invalid", TypeError), ("write_worker_results", 1, TypeError),
    ("write_worker_results", None, TypeError),
    ("output_dir", 2, TypeError), ("output_dir", "<a file>/sub", OSError),
    ("result_shape", 5, TypeError), ("result_shape", "ab", TypeError),
    ("result_shape", (None, None), ValueError), ("result_shape", (None, -1), ValueError),
    ("result_shape", (None, 2.5), ValueError), ("result_shape", (None, "a"), ValueError),
    ("result_shape", (None, np.inf, np.inf), ValueError), ("result_shape", (3, 4), ValueError),
    ("result_dtype", "nonsense", TypeError), ("result_dtype", np.ones(3), TypeError),
    ("single_file", "invalid", TypeError), ("single_file", 1, TypeError),
    ("write_pickle", "invalid", TypeError), ("write_pickle", 1, TypeError),
    ("partition", 3, TypeError),  # ACME: on SLURM nodes
    ("partition", "", ValueError),  # acme_xr only
    ("n_workers", "invalid", ValueError), ("n_workers", {}, TypeError),
    ("n_workers", 0, ValueError), ("n_workers", -1, ValueError), ("n_workers", 2.5, ValueError),
    ("n_workers", True, TypeError), ("n_workers", None, TypeError),
    ("mem_per_worker", 4, TypeError), ("mem_per_worker", "lots", ValueError),  # acme_xr only
    ("setup_timeout", "x", TypeError), ("setup_timeout", -1, ValueError),
    ("setup_timeout", True, TypeError), ("setup_timeout", None, TypeError),
    ("setup_interactive", "x", TypeError), ("setup_interactive", 1, TypeError),
    ("stop_client", 3, TypeError), ("stop_client", "not-auto", ValueError),
    ("stop_client", None, TypeError),
    ("verbose", "x", TypeError), ("verbose", 1, TypeError),
    ("dryrun", "x", TypeError), ("dryrun", 1, TypeError),
    ("logfile", 3, TypeError), ("logfile", "<a directory>", OSError),
    ("cleanup_threshold_days", "x", TypeError),
    ("cleanup_threshold_days", -1, ValueError),  # acme_xr only
]


@pytest.mark.parametrize(("keyword", "value", "expected"), BAD_KEYWORDS,
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_KEYWORDS])
def test_bad_keyword_raises_acmes_builtin_at_construction(
        tmp_path: Any, keyword: str, value: Any, expected: type[BaseException]) -> None:
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir").mkdir()
    if isinstance(value, str) and value == "<a file>/sub":
        value = str(tmp_path / "a_file" / "sub")
    elif isinstance(value, str) and value == "<a directory>":
        value = str(tmp_path / "a_dir")
    extra: dict[str, Any] = {"result_shape": (None,)} if keyword == "result_dtype" else {}
    before = listing(tmp_path)
    with pytest.raises(expected):
        ParallelMap(f3, [1, 2, 3, 4], 4, **{keyword: value}, **extra)
    assert listing(tmp_path) == before  # nothing written, nothing created


def test_write_pickle_with_single_file_is_a_value_error(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="single_file"):
        ParallelMap(f3, [1, 2], 4, write_pickle=True, single_file=True)
    assert os.listdir(tmp_path) == []


def test_a_function_that_is_not_callable_is_a_type_error(tmp_path: Any) -> None:
    with pytest.raises(TypeError):
        ParallelMap("invalid")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# -- 3. argv / kwargv / daemon / config / n_calls -----------------------------------------
def f4(x: Any, y: Any, z: Any = 3, w: Any = None) -> Any:
    return x, y, z, w


def test_argv_and_kwargv_have_acmes_shapes(tmp_path: Any) -> None:
    x = np.arange(4)
    pmap = ParallelMap(f4, x, 4, z=[1, 2, 3, 4], w="s")
    # ACME: one list per positional argument, keyword -> list; a split argument is kept
    # as given, any other wrapped as [value]
    assert len(pmap.argv) == 2 and pmap.argv[0] is x and pmap.argv[1] == [4]
    assert pmap.kwargv == {"z": [1, 2, 3, 4], "w": ["s"]}
    assert pmap.n_calls == pmap.n_inputs == 4
    assert pmap.config.n_calls == pmap.daemon.config.n_calls == 4
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("args", "kwargs", "argv", "kwargv"), [
    # ACME moves a parameter without a default given by name to argv ...
    (([1, 2],), {"y": 4}, [[1, 2], [4]], {}),
    (([1, 2],), {"y": 4, "z": 5}, [[1, 2], [4]], {"z": [5]}),
    # ... and files a parameter with a default under its name
    (([1, 2], 4, 5), {}, [[1, 2], [4]], {"z": [5]}),
    (([1, 2], 4, 5, "s"), {}, [[1, 2], [4]], {"z": [5], "w": ["s"]}),
])
def test_argv_holds_the_parameters_without_default_as_in_acme(
        client: Any, args: Any, kwargs: Any, argv: Any, kwargv: Any) -> None:
    pmap = ParallelMap(f4, *args, **kwargs, write_worker_results=False)
    assert pmap.argv == argv and pmap.kwargv == kwargv
    direct = [f4(*[a[i] if len(a) > 1 else a[0] for a in argv],
                 **{k: v[i] if len(v) > 1 else v[0] for k, v in kwargv.items()})
              for i in range(2)]
    pmap.argv[1] = [7]  # an edit makes the plan be rebuilt from argv/kwargv
    assert pmap.compute() == [(x, 7, *rest) for x, _, *rest in direct]


def collect(x: Any, cfg: Any = None) -> Any:
    return cfg


def test_syncopy_edit_hands_a_list_whole_to_every_call(client: Any) -> None:
    n = 3
    pmap = ParallelMap(collect, [0, 1, 2], cfg=["a", "b", "c"], write_worker_results=False)
    # Syncopy (ComputationalRoutine.compute): a cfg entry that happens to have numCalls
    # elements must not be torn open
    for key, value in pmap.kwargv.items():
        if isinstance(value, (list, tuple)) and len(value) == n:
            pmap.kwargv[key] = [value]
    assert pmap.compute() == [["a", "b", "c"]] * n


def test_edits_of_argv_and_kwargv_change_what_calls_receive(client: Any) -> None:
    pmap = ParallelMap(f4, [1, 2, 3], 4, z=5, w="s", write_worker_results=False)
    pmap.argv[1] = [10, 20, 30]          # now one value per call
    pmap.kwargv["z"][0] = 7              # edit of the [value] wrapper in place
    pmap.kwargv["w"] = ["t"]
    assert pmap.compute() == [(1, 10, 7, "t"), (2, 20, 7, "t"), (3, 30, 7, "t")]


def test_edits_on_disk_mode_reach_the_payloads(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(f3, [1, 2, 3], 4, output_dir=str(tmp_path / "r"))
    pmap.kwargv["z"] = [1, 10, 100]
    pmap.compute()
    import h5py

    values = []
    for path in pmap.results:
        with h5py.File(path) as fh:
            values.append(fh["result_0"][()])
    assert values == [5, 60, 700]


def test_an_edit_of_the_wrong_length_is_refused_before_anything_runs(tmp_path: Any) -> None:
    pmap = ParallelMap(f3, [1, 2, 3], 4, output_dir=str(tmp_path / "r"))
    pmap.argv[1] = [1, 2]
    with pytest.raises(InputError, match=r"pmap.argv\[1\] has 2 entries"):
        pmap.compute()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("edit", ["kwargv", "argv"])
def test_an_edit_the_function_cannot_take_is_refused_before_anything_runs(
        tmp_path: Any, edit: str) -> None:
    pmap = ParallelMap(f3, [1, 2, 3], 4, output_dir=str(tmp_path / "r"))
    if edit == "kwargv":
        pmap.kwargv["nope"] = [1]
    else:
        pmap.argv += [[5], [6]]  # four positional values: f3 takes at most three
    with pytest.raises(SignatureError, match="pmap.argv / pmap.kwargv"):
        pmap.compute()
    assert os.listdir(tmp_path) == []
    assert pmap._lease is None  # no cluster was asked for


def test_daemon_client_is_none_until_compute_adopts_one(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(f3, [1, 2], 4, write_worker_results=False)
    assert pmap.daemon.client is None and pmap.config.client is None
    pmap.compute()
    # a running client the run adopted stays the daemon's client
    assert pmap.daemon.client is client and pmap.config.client is client


def test_daemon_client_of_a_cluster_kept_running(tmp_path: Any) -> None:
    with pytest.raises(ValueError):
        distributed.default_client()  # no client around: compute() must start one
    pmap = ParallelMap(f3, [1, 2], 4, write_worker_results=False, n_workers=1,
                       stop_client=False)
    assert pmap.daemon.client is None  # constructing starts nothing
    with pytest.raises(ValueError):
        distributed.default_client()
    assert pmap.compute() == [15, 18]
    started = pmap.daemon.client
    try:
        assert started is not None and started.status == "running"
    finally:
        cluster_cleanup(started)
    assert pmap.daemon.client is None  # closed: no client to hand out


def test_config_output_dir(client: Any, tmp_path: Any) -> None:
    given = ParallelMap(f3, [1, 2], 4, output_dir="here")
    assert given.config.output_dir == str(tmp_path / "here")  # absolute, at once
    assert not os.path.exists(tmp_path / "here")
    default = ParallelMap(f3, [1, 2], 4)
    assert default.config.output_dir is None  # the timestamped name is chosen by compute()
    default.compute()
    assert default.config.output_dir == default.output_dir
    assert os.path.isdir(default.config.output_dir)
    assert os.path.basename(default.config.output_dir).startswith("ACME_")
    memory = ParallelMap(f3, [1, 2], 4, output_dir="ignored", write_worker_results=False)
    assert memory.config.output_dir is None  # ACME: None when nothing is written
    assert memory.config.write_worker_results is False


def test_daemon_compute_runs_the_map(client: Any) -> None:
    pmap = ParallelMap(f3, [1, 2], 4, write_worker_results=False)
    assert pmap.daemon.compute() == [15, 18]
    with pytest.raises(TypeError):
        pmap.daemon.compute(debug="invalid")  # type: ignore[arg-type]
