"""Batch-chunked writes into a run's zarr store: one dask task writes its batch's results as
whole chunks of its own region of every array.

A ``storage="zarr"`` run picks one chunk length ``L`` along ``call`` before its batches are
submitted (:func:`chunk_length`) and hands out the calls of chunk ``k`` — calls
``k*L ... (k+1)*L - 1`` that still have to run — as one batch (:class:`ChunkBatcher`), so
that no two tasks share a chunk and the chunk grid is regular (the last chunk may be
partial). A task keeps its calls' values in memory (at most ~64 MiB, the cap of ``L``) and
writes each array's chunk once, at the end of the batch (:func:`write_rows`); the status
array ``_acme_xr_status`` is written last, so a chunk counts as done only once its values
are all there. zarr writes a chunk under a temporary name and renames it: a worker killed
mid-batch leaves no chunk (the batch runs again and writes it whole), never half of one.

A batch that does not cover its whole chunk (a resumed run re-running the calls that
failed, a call run alone after a worker died, the calls that ran before an interruption)
reads the chunk first and writes it back whole with its own rows replaced.

Examples
--------
>>> chunk_length(n_calls=20_000, slots=2, per_call=1e-4, call_bytes=32)
2000
>>> b = ChunkBatcher([0, 1, 2, 3, 4, 6, 9], slots=2, length=4)
>>> [b.take()[0] for _ in range(3)]
[[0, 1, 2, 3], [4, 6], [9]]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .. import config
from ..batching import Batcher
from .zarr import STATUS, ZarrStore, quiet_dtypes

__all__ = ["chunk_length", "write_rows", "done_calls", "ChunkBatcher", "MAX_CHUNK_BYTES"]

# a chunk (one array's values of one batch) stays under this: a task holds its batch's
# values in memory until it writes them, and a reader decompresses a whole chunk
MAX_CHUNK_BYTES = 64 * 2**20
# batches per worker slot at least: the end of the run stays balanced
_BATCHES_PER_SLOT = 4
# a probe call also writes a payload file (~0.5-1 ms here), which the chunked calls do not:
# a probe faster than this cannot tell the function's time from that write
_PROBE_WRITE = 2e-3


def chunk_length(n_calls: int, slots: int, per_call: float | None, call_bytes: int) -> int:
    """Calls per chunk (= per batch) of a run: about ``acme_xr.batch.target-duration`` of
    work, at most ``acme_xr.batch.max-size`` calls, at least ``4 * slots`` batches, and
    under :data:`MAX_CHUNK_BYTES` for the largest array (``call_bytes``: its bytes per
    call)."""
    target = config.get_seconds("batch.target-duration")
    limits = [int(config.get("batch.max-size")),
              math.ceil(n_calls / (_BATCHES_PER_SLOT * max(1, slots))),
              MAX_CHUNK_BYTES // max(1, call_bytes)]
    if per_call is not None and per_call > 0:
        limits.append(int(target / per_call))
    return max(1, min(limits))


def _regions(calls: Iterable[int], length: int, n_calls: int) -> dict[int, tuple[int, int]]:
    return {k: (k * length, min(n_calls, (k + 1) * length)) for k in {c // length for c in calls}}


def write_rows(store: ZarrStore, batch: Sequence[int],
               rows: Sequence[tuple[int, dict[str, np.ndarray]]]) -> None:
    """Write ``rows`` (call, array name -> value) of the calls ``batch`` as whole chunks.

    Rows of a chunk's calls outside ``batch`` keep what the store holds (the chunk is
    read first); rows of calls in ``batch`` without a value (failed) get the fill value
    (NaN for floating point) and status 0.
    """
    status = store.array(STATUS)
    if status is None or not rows:
        return
    length, n = int(status.chunks[0]), int(status.shape[0])
    names = list(dict.fromkeys(name for _, items in rows for name in items))
    by_chunk: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = defaultdict(list)
    for i, items in rows:
        by_chunk[i // length].append((i, items))
    mine = set(batch)
    regions = _regions((i for i, _ in rows), length, n)
    with quiet_dtypes():
        for k, (c0, c1) in sorted(regions.items()):
            whole = all(c in mine for c in range(c0, c1))
            for name in [*names, STATUS]:
                arr = status if name == STATUS else store.array(name)
                if whole:
                    block = np.full((c1 - c0, *arr.shape[1:]), arr.fill_value, dtype=arr.dtype)
                else:  # the chunk holds other calls' values: keep them
                    block = np.asarray(arr[c0:c1])
                    if name == STATUS:
                        block = block.copy()
                _fill(block, c0, by_chunk[k], name)
                arr[c0:c1] = block


def _fill(block: np.ndarray, c0: int, rows: Sequence[tuple[int, dict[str, np.ndarray]]],
          name: str) -> None:
    """Put the values ``name`` of ``rows`` into ``block`` (the chunk starting at call
    ``c0``): one stacked assignment, not one per call (~1 us a call)."""
    if name == STATUS:
        block[[i - c0 for i, _ in rows]] = 1
        return
    have = [(i - c0, items[name]) for i, items in rows if name in items]
    if not have:
        return
    rows_at = [k for k, _ in have]
    values = [v for _, v in have]
    if rows_at == list(range(len(block))) and all(v.dtype == block.dtype for v in values):
        np.stack(values, out=block)  # the whole chunk in order: no stacked copy in between
    else:
        block[rows_at] = np.stack(values)


def done_calls(store: ZarrStore, calls: Sequence[int]) -> np.ndarray:
    """Which of ``calls`` the store holds whole (their chunk's status says so): one read
    of the status array per chunk, no listing."""
    status = store.array(STATUS)
    if status is None or not len(calls):
        return np.zeros(len(calls), bool)
    lo, hi = min(calls), max(calls) + 1
    values = np.asarray(status[lo:hi])
    return values[np.asarray(calls, np.int64) - lo] == 1


class ChunkBatcher(Batcher):
    """Hands out the calls still to run chunk by chunk: each batch is one chunk's calls.

    The chunk length comes from ``length``, or — while the store has no arrays — from
    ``decide(per_call)`` once the first batch (``probe`` calls, written as payload files
    and moved into the store at the end) has finished; until then no other batch is
    handed out. ``decide`` returns None when it cannot tell yet (the probe failed): the
    next calls are probed.

    Parameters
    ----------
    todo : iterable of int
        Call indices to run, ascending.
    slots : int
        Worker threads.
    length : int, optional
        The chunk length of an existing store.
    decide : callable, optional
        ``decide(seconds per call or None, the probe's calls) -> length or None`` (creates
        the arrays).
    probe : int
        Calls of the first batch, which shows shapes, dtypes and the time per call (the
        fastest of several: a worker's first call also pays for imports).
    """

    def __init__(self, todo: Iterable[int], slots: int, length: int | None = None,
                 decide: Callable[[float | None, Sequence[int]], int | None] | None = None,
                 probe: int = 4, max_probes: int = 3) -> None:
        super().__init__(sorted(todo), slots)
        self.length = length
        self.decide = decide
        self.probe = max(1, probe)
        self.probes_left = max_probes
        self.probing: list[int] | None = None

    def settled(self, indices: Sequence[int]) -> None:
        """A batch ended (with a result or without): after the probe, fix the length."""
        if self.probing is None or not set(indices) & set(self.probing):
            return
        self.probing = None
        length = self.decide(self.per_call, indices) if self.decide is not None else None
        self.probes_left -= 1
        if length is None and self.probes_left <= 0:
            length = chunk_length(len(self) + 1, self.slots, self.per_call, 1)
        self.length = length

    def take(self) -> tuple[list[int], int] | None:
        if self._retry:
            return self._retry.popleft()
        if not self._todo or self.probing is not None:
            return None  # all handed out, or waiting for the probe
        if self.length is None:
            self.probing = [self._todo.popleft()
                            for _ in range(min(self.probe, len(self._todo)))]
            return list(self.probing), 0
        k = self._todo[0] // self.length
        batch = []
        while self._todo and self._todo[0] // self.length == k:
            batch.append(self._todo.popleft())
        return batch, 0


def largest_call_bytes(meta: Any) -> int:
    """Bytes per call of the largest variable described by a call's ``meta``."""
    sizes = [math.prod(shape) * max(1, np.dtype(dtype).itemsize)
             for _name, shape, dtype, *_ in meta or ()]
    return max(sizes, default=1)


def chunk_batcher(backend: Any, manifest: Any, todo: Sequence[int], slots: int,
                  batch_size: int | None = None) -> ChunkBatcher | None:
    """The batcher of a run whose backend writes whole chunks (``backend.batched``), None
    for the others (their batches are sized by time alone). A given ``batch_size`` is
    the chunk length (a resumed store keeps its own)."""
    if not backend.batched:
        return None
    length = backend.existing_chunk()
    backend.zarr.deferred = True
    def decide(per_call: float | None, probe: Sequence[int]) -> int | None:
        seconds = np.asarray(manifest.duration, float)[list(probe)]
        seconds = seconds[np.isfinite(seconds)]
        if len(seconds):
            # the fastest: each probe call also wrote a payload file (no arrays yet), and a
            # worker's first call pays for imports; later calls only stage their values
            per_call = float(seconds.min())
        if per_call is not None and per_call < _PROBE_WRITE:
            # mostly the probe's payload write: sized by it, 1,000,000 calls of 10 us made
            # ~5,000 chunks of 200 calls, whose task and chunk-write costs (~5 ms a batch)
            # doubled the run. Aim at the top of joblib's 0.2-2 s range instead: at most
            # ~2 s a batch if the calls really take that long, else fewer, larger chunks
            per_call /= 10
        return backend.chunking(manifest, slots, per_call, batch_size)  # type: ignore[no-any-return]

    return ChunkBatcher(todo, slots, length=length, decide=decide)
