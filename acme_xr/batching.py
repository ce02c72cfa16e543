"""Batch sizing: hand out calls in batches sized by the measured time per call.

Batches are sized from measured call durations (as joblib does): a task should run for
about ``acme_xr.batch.target-duration`` so that dask's ~2 ms per task stays small, while
the end of the run is split finely enough to keep every worker busy.

Examples
--------
>>> b = Batcher(range(100), slots=2)
>>> len(b.take()[0])   # the first batches have one call: nothing is measured yet
1
>>> b.observe(n_calls=1, seconds=0.001)
>>> len(b.take()[0])   # 0.2 s of 1 ms calls, but no more than a quarter of what is left
25
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

from . import config

__all__ = ["Batcher"]


class Batcher:
    """Hands out batches of call indices, sized by the measured time per call.

    Parameters
    ----------
    todo : iterable of int
        Call indices to run, in order.
    slots : int
        Worker threads; the tail of the run is split so that each gets work.
    batch_size : int, optional
        Fixed number of calls per batch (no automatic sizing).
    """

    def __init__(self, todo: Iterable[int], slots: int, batch_size: int | None = None) -> None:
        self._todo = deque(todo)
        self._retry: deque[tuple[list[int], int]] = deque()
        self._suspects: deque[int] = deque()
        self.slots = max(1, slots)
        self.fixed = batch_size
        self.target = config.get_seconds("batch.target-duration")
        self.max_size = int(config.get("batch.max-size"))
        self.per_call: float | None = None

    def __len__(self) -> int:
        return len(self._todo) + sum(len(b) for b, _ in self._retry) + len(self._suspects)

    def observe(self, n_calls: int, seconds: float) -> None:
        """Feed back how long a finished batch of ``n_calls`` took on its worker."""
        if n_calls <= 0 or not math.isfinite(seconds):
            return
        x = max(seconds / n_calls, 1e-7)
        self.per_call = x if self.per_call is None else 0.5 * self.per_call + 0.5 * x

    def settled(self, indices: Sequence[int]) -> None:
        """A batch ended, with a result or without (a subclass may wait for one)."""
        return None

    def put_back(self, indices: Sequence[int], tries: int, one_by_one: bool = False) -> None:
        """Queue calls again (their batch was lost) before any new ones; ``tries`` counts
        how often they were lost already."""
        if one_by_one:
            self._retry.extend(([i], tries) for i in indices)
        else:
            self._retry.append((list(indices), tries))

    def suspect(self, indices: Sequence[int]) -> None:
        """Queue calls that were on workers that died, to be run one at a time, alone."""
        self._suspects.extend(indices)

    def take_suspect(self) -> int | None:
        """The next suspect call, or None."""
        return self._suspects.popleft() if self._suspects else None

    @property
    def has_suspects(self) -> bool:
        return bool(self._suspects)

    def take(self) -> tuple[list[int], int] | None:
        """The next batch and how often it was lost before, or None when all is handed out."""
        if self._retry:
            return self._retry.popleft()
        if not self._todo:
            return None
        if self.fixed is not None:
            size = self.fixed
        elif self.per_call is None:
            size = 1
        else:
            tail = math.ceil(len(self._todo) / (2 * self.slots))
            size = min(int(self.target / self.per_call), tail, self.max_size)
        size = max(1, min(size, len(self._todo)))
        return [self._todo.popleft() for _ in range(size)], 0
