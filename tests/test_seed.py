"""``ParallelMap(..., seed=S)``: call ``i`` draws from its own stream, whatever the batching,
retries or resuming (issue 9, point 7)."""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import (
    AcmeXrError,
    ComputeError,
    InputError,
    InputTypeError,
    ResumeMismatchError,
    SignatureError,
)
from acme_xr.manifest import Manifest

S = 1234
N = 20


def draw(x: Any, rng: Any) -> Any:
    return rng.random(5)


def expected(seed: Any, n: int = N) -> list[np.ndarray]:
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))).random(5)
            for i in range(n)]


def same_arrays(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_each_call_gets_its_own_stream(client: Any) -> None:
    got = ParallelMap(draw, range(N), seed=S, write_worker_results=False, verbose=False).compute()
    assert same_arrays(got, expected(S))
    # the stream of call i is the i-th child of SeedSequence(S)
    children = np.random.SeedSequence(S).spawn(N)
    assert np.array_equal(got[7], np.random.default_rng(children[7]).random(5))


def test_a_seed_sequence_is_split_the_same_way(client: Any) -> None:
    parent = np.random.SeedSequence(S)
    child = parent.spawn(3)[2]  # a sequence that spawned children before starts at 0 too
    child.spawn(4)
    by_int = ParallelMap(draw, range(4), seed=S, write_worker_results=False, verbose=False)
    by_seq = ParallelMap(draw, range(4), seed=np.random.SeedSequence(S),
                         write_worker_results=False, verbose=False)
    assert same_arrays(by_int.compute(), by_seq.compute())
    got = ParallelMap(draw, range(4), seed=child, write_worker_results=False,
                      verbose=False).compute()
    grandchildren = [np.random.SeedSequence(S, spawn_key=(2, i)) for i in range(4)]
    assert same_arrays(got, [np.random.default_rng(g).random(5) for g in grandchildren])


def test_batching_and_debug_draw_the_same_numbers(client: Any) -> None:
    runs = [
        ParallelMap(draw, range(N), seed=S, batch_size=1, write_worker_results=False,
                    verbose=False).compute(),
        ParallelMap(draw, range(N), seed=S, batch_size=7, write_worker_results=False,
                    verbose=False).compute(),
        ParallelMap(draw, range(N), seed=S, write_worker_results=False,
                    verbose=False).compute(debug=True),
    ]
    assert same_arrays(runs[0], runs[1])
    assert same_arrays(runs[0], runs[2])
    assert same_arrays(runs[0], expected(S))


def flaky_draw(x: Any, markers: str, rng: Any) -> Any:
    """Draws, then fails the first attempt of each call (a marker file per call)."""
    values = rng.random(5)
    marker = os.path.join(markers, f"tried_{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"first attempt of call {x}")
    return values


@pytest.mark.parametrize("call_timeout", [None, 60.0], ids=["in the worker", "in a child"])
def test_a_retried_call_draws_what_a_first_attempt_draws(client: Any, tmp_path: Any,
                                                         call_timeout: float | None) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    pmap = ParallelMap(flaky_draw, range(6), str(markers), seed=S, retries=1,
                       call_timeout=call_timeout, write_worker_results=False, verbose=False)
    got = pmap.compute()
    assert sorted(os.listdir(markers)) == sorted(f"tried_{i}" for i in range(6))  # all retried
    assert same_arrays(got, expected(S, 6))


def failing_draw(x: Any, marker: str, rng: Any) -> Any:
    """Fails calls 5 and up while the marker file exists."""
    values = rng.standard_normal((3, 4)) + x
    if x >= 5 and os.path.exists(marker):
        raise RuntimeError(f"call {x} interrupted")
    return values


def payloads(run: str, n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        with h5py.File(os.path.join(run, f"failing_draw_{i}.h5"), "r") as fh:
            out.append(fh["result_0"][()])
    return out


def test_an_interrupted_then_resumed_run_equals_an_uninterrupted_one(
        client: Any, tmp_path: Any) -> None:
    marker = str(tmp_path / "marker")
    open(marker, "w").close()
    interrupted = str(tmp_path / "interrupted")
    with pytest.raises(ComputeError):
        ParallelMap(failing_draw, range(12), marker, seed=S, output_dir=interrupted,
                    batch_size=3, verbose=False).compute()
    assert Manifest.read(interrupted).counts["failed"] == 7
    os.unlink(marker)
    # resumed with other batches: the calls that ran are kept, the rest run now
    ParallelMap(failing_draw, range(12), marker, seed=S, output_dir=interrupted, resume=True,
                batch_size=2, verbose=False).compute()
    whole = str(tmp_path / "whole")
    ParallelMap(failing_draw, range(12), marker, seed=S, output_dir=whole,
                verbose=False).compute()
    a, b = payloads(interrupted, 12), payloads(whole, 12)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    assert Manifest.read(whole).header["seed"] == {"entropy": S, "spawn_key": [],
                                                   "pool_size": 4}


def draw_or_not(x: Any, rng: Any = None) -> Any:
    return x if rng is None else rng.random(5) + x


@pytest.mark.parametrize("other", [S + 1, None, np.random.SeedSequence(S, spawn_key=(0,))],
                         ids=["another seed", "no seed", "a child of the seed"])
def test_resume_with_another_seed_is_refused(client: Any, tmp_path: Any, other: Any) -> None:
    run = str(tmp_path / "run")
    ParallelMap(draw_or_not, range(3), seed=S, output_dir=run, verbose=False).compute()
    with pytest.raises(ResumeMismatchError, match="seed") as info:
        ParallelMap(draw_or_not, range(3), seed=other, output_dir=run, resume=True,
                    verbose=False).compute()
    assert "function" not in str(info.value).split("differ")[0]  # the seed alone differs
    # the same seed resumes
    ParallelMap(draw_or_not, range(3), seed=S, output_dir=run, resume=True,
                verbose=False).compute()
    assert "the seed differs" in str(info.value)
    assert "storage layout" not in str(info.value)  # the fix offered is resume='force'


def test_force_resumes_with_another_seed_and_warns_once_at_the_caller(
        client: Any, tmp_path: Any) -> None:
    import warnings

    run = str(tmp_path / "run")
    ParallelMap(draw_or_not, range(3), seed=S, output_dir=run, verbose=False).compute()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ParallelMap(draw_or_not, range(3), seed=S + 1, output_dir=run, resume="force",
                    verbose=False).compute()
    forced = [w for w in caught if "resume='force'" in str(w.message)]
    assert len(forced) == 1, [str(w.message) for w in caught]
    assert "the seed differs" in str(forced[0].message)
    assert forced[0].filename == __file__  # points at the resuming code, not at acme_xr
    header = Manifest.read(run).header
    assert header["forced_resumes"][0]["seed"]["entropy"] == S
    # the run is now the forced one: the same seed resumes without force
    ParallelMap(draw_or_not, range(3), seed=S + 1, output_dir=run, resume=True,
                verbose=False).compute()


def no_rng(x: Any) -> Any:
    return x


def rng_first(rng: Any, x: Any) -> Any:
    return x


def rng_positional_only(x: Any, rng: Any, /) -> Any:
    return x


# (func, args, kwargs, error class, words of the message)
BAD_SEEDS = [
    pytest.param(draw, ([1, 2],), {"seed": -1}, InputError, ["seed=-1"], id="negative"),
    pytest.param(draw, ([1, 2],), {"seed": 1.5}, InputTypeError, ["seed", "1.5"], id="float"),
    pytest.param(draw, ([1, 2],), {"seed": True}, InputTypeError, ["seed", "True"], id="bool"),
    pytest.param(draw, ([1, 2],), {"seed": "7"}, InputTypeError, ["seed", "'7'"], id="str"),
    pytest.param(draw, ([1, 2],), {"seed": np.random.default_rng(1)}, InputTypeError,
                 ["seed", "Generator", "the number it was seeded with"], id="a Generator"),
    pytest.param(no_rng, ([1, 2],), {"seed": 3}, InputError, ["no_rng", "'rng'", "drop seed"],
                 id="no rng parameter"),
    pytest.param(np.sqrt, ([1, 2],), {"seed": 3}, InputError, ["rng"], id="no signature"),
    pytest.param(draw, ([1, 2],), {"seed": 3, "rng": 5}, SignatureError,
                 ["draw", "rng", "do not pass rng"], id="rng given with seed"),
    pytest.param(draw, ([1, 2], 5), {"seed": 3}, SignatureError, ["rng", "pass one fewer"],
                 id="rng reached by position"),
    pytest.param(rng_first, ([1, 2],), {"seed": 3}, SignatureError, ["rng", "pass one fewer"],
                 id="rng first"),
    pytest.param(rng_positional_only, ([1, 2],), {"seed": 3}, SignatureError,
                 ["rng", "keyword-only"], id="rng positional-only"),
]


@pytest.mark.parametrize("func, args, kwargs, cls, words", BAD_SEEDS)
def test_a_bad_seed_is_refused_before_anything_happens(
        tmp_path: Any, func: Any, args: Any, kwargs: Any, cls: type, words: list[str]) -> None:
    with pytest.raises(cls) as info:
        ParallelMap(func, *args, **kwargs).compute()
    assert isinstance(info.value, AcmeXrError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert os.listdir(tmp_path) == []


def test_without_a_seed_rng_is_an_ordinary_argument() -> None:
    got = ParallelMap(draw, [1, 2], rng=np.random.default_rng(0), write_worker_results=False,
                      verbose=False).compute(debug=True)
    assert np.array_equal(got[0], np.random.default_rng(0).random(5))
