"""Every result reaches the client, however long it takes to arrive (issue 9, point 2)."""

from __future__ import annotations

from typing import Any

from acme_xr import ParallelMap

from .deadline import fails_after
from .slow_unpickle import SlowToUnpickle, slow_result


def test_results_slow_to_arrive_are_fetched_once(client: Any) -> None:
    """Each return value takes 3 s to unpickle on the client (plain dask: ~3 s); a
    client-side timeout shorter than that used to abandon and restart it forever."""
    with fails_after(90):
        values = ParallelMap(slow_result, list(range(3)), 3.0, write_worker_results=False,
                             verbose=False).compute()
    assert all(isinstance(v, SlowToUnpickle) for v in values)
    assert [v.value for v in values] == [0, 10, 20]
