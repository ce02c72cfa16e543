"""Batch sizing: one call per task until calls are measured, then ~target-duration tasks."""

from __future__ import annotations

import dask

from acme_xr.batching import Batcher


def drain(b: Batcher) -> list[list[int]]:
    out = []
    while (batch := b.take()) is not None:
        out.append(batch[0])
    return out


def test_tiny_calls_are_grouped_and_the_tail_is_split() -> None:
    with dask.config.set({"acme_xr.batch.target-duration": "200ms"}):
        b = Batcher(range(20_000), slots=2)
    first, _ = b.take()  # type: ignore[misc]
    assert first == [0]
    b.observe(1, 1e-6)
    sizes = [len(x) for x in drain(b)]
    assert sum(sizes) == 19_999
    assert sizes[0] == 19_999 // 4 + 1  # a quarter of what is left: workers stay balanced
    assert len(sizes) < 40  # not one task per call
    assert sizes[-1] == 1


def test_long_calls_run_one_per_task() -> None:
    b = Batcher(range(10), slots=2)
    b.observe(1, 5.0)
    assert [len(x) for x in drain(b)] == [1] * 10


def test_fixed_batch_size_and_put_back() -> None:
    b = Batcher(range(10), slots=2, batch_size=4)
    assert b.take() == ([0, 1, 2, 3], 0)
    b.put_back([0, 1, 2, 3], tries=1, one_by_one=True)
    assert len(b) == 10
    assert [b.take() for _ in range(2)] == [([0], 1), ([1], 1)]


def test_max_size() -> None:
    with dask.config.set({"acme_xr.batch.max-size": 10}):
        b = Batcher(range(1000), slots=1)
    b.observe(1, 1e-9)
    assert max(len(x) for x in drain(b)) == 10


def test_suspects_wait_their_turn_one_by_one() -> None:
    b = Batcher(range(4), slots=2, batch_size=2)
    first, _ = b.take()  # type: ignore[misc]
    b.suspect(first)  # their worker died under them
    assert b.has_suspects and len(b) == 4
    assert [b.take_suspect(), b.take_suspect(), b.take_suspect()] == [0, 1, None]
    assert b.take() == ([2, 3], 0)
