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


def _byte_order(i: int) -> Any:
    import numpy as np

    return (np.array([1.5, -2.0], dtype=">f8"), np.array([7], dtype=">i4"),
            np.array([3], dtype="<u2"))


def test_return_values_reach_the_client_with_their_byte_order(client: Any) -> None:
    """dask's fallback pickling of a batch's outcome turned '>f8' into native float64 (a
    reviewer's find); the values travel as cloudpickle pickles them instead."""
    got = ParallelMap(_byte_order, [0, 1], write_worker_results=False,
                      verbose=False).compute()
    for values in got:
        for value, want in zip(values, _byte_order(0), strict=True):
            assert value.dtype == want.dtype and value.tobytes() == want.tobytes()
