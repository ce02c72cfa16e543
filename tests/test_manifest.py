"""The run manifest: round trips, ragged shapes, compact columns."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from acme_xr.errors import ResultsLayoutError
from acme_xr.manifest import DONE, FAILED, PENDING, Manifest
from acme_xr.manifest_json import from_json, to_json


def meta(shape: tuple[int, ...], dtype: str = "<f8") -> tuple[Any, ...]:
    return (("result_0", shape, dtype, tuple(f"result_0_dim_{j}" for j in range(len(shape))),
             None, None),)


def test_round_trip_with_ragged_and_failed_calls(tmp_path: Any) -> None:
    m = Manifest.new(5, {"func": {"name": "f"}})
    m.record_done(0, "h5", meta((3, 4)), "host/a")
    m.record_done(1, "h5", meta((3, 2)), "host/b")
    m.record_failed(2, {"type": "ValueError", "message": "bad", "traceback": "tb", "attempts": 2},
                    "host/a")
    m.record_done(4, "h5", meta((3, 4), "<i8"), "host/a")
    m.duration[[0, 1, 4]] = [0.5, 0.25, 0.125]
    path = m.write(str(tmp_path))
    back = Manifest.read(str(tmp_path))
    assert os.path.basename(path) == "manifest.json"
    assert back.status.tolist() == [DONE, DONE, FAILED, PENDING, DONE]
    assert back.errors[2]["message"] == "bad"
    rec = back.variables["result_0"]
    assert rec.shapes == [(3, 4), (3, 2), None, None, (3, 4)]
    assert rec.dtype == "<f8"  # int64 and float64 promote to float64
    assert back.host == ["host/a", "host/b", "host/a", None, "host/a"]
    assert back.counts == {"pending": 1, "done": 3, "failed": 1}
    np.testing.assert_array_equal(back.duration[[0, 1, 4]], [0.5, 0.25, 0.125])


def test_equal_shapes_are_stored_once(tmp_path: Any) -> None:
    m = Manifest.new(10_000, {})
    for i in range(10_000):
        m.record_done(i, "h5", meta((8, 16)), "h")
    assert m.variables["result_0"].shapes.table == [(8, 16)]
    m.write(str(tmp_path))
    # every column is the same in every call: the log holds no per-call bytes at all
    assert os.path.getsize(tmp_path / "manifest.calls") < 4096
    d = to_json(m)  # the JSON manifest of format 3 stored them once too
    assert d["variables"]["result_0"]["shape"] == [8, 16]
    assert d["variables"]["result_0"]["present"] == [[0, 10_000]]
    assert len(json.dumps(d)) < 400_000


def test_dims_conflicts_are_recorded() -> None:
    m = Manifest.new(2, {})
    m.record_done(0, "h5", (("r", (2,), "<f8", ("x",), None, None),), "h")
    m.record_done(1, "h5", (("r", (2,), "<f8", ("y",), None, None),), "h")
    assert m.variables["r"].dims_conflicts == {1: ("y",)}


def test_not_a_manifest(tmp_path: Any) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ResultsLayoutError, match="not an acme_xr manifest"):
        Manifest.read(str(tmp_path))


def _sleepy(x: float) -> float:
    import time

    time.sleep(0.02)
    if x == 3:
        raise ValueError("three")
    return x


def test_each_call_records_when_it_started(tmp_path: Any, client: Any) -> None:
    # the run report draws a timeline of calls per worker from these
    import time

    from acme_xr import ParallelMap
    from acme_xr.errors import ComputeError

    before = time.time()
    with ParallelMap(_sleepy, [0.0, 1.0, 2.0, 3.0, 4.0], output_dir=str(tmp_path / "run"),
                     verbose=False) as pmap, pytest.raises(ComputeError):
        pmap.compute()
    after = time.time()
    m = Manifest.read(str(tmp_path / "run"))
    assert ((m.start >= before) & (m.start + m.duration <= after)).all()  # failed call too
    assert all(h is not None and "/" in h for h in m.host)  # hostname/worker
    # older manifests hold no start column: NaN
    d = to_json(m)
    del d["calls"]["start"]
    assert np.isnan(from_json(d).start).all()
