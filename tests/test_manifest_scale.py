"""Manifest format 4 at a million calls: small on disk, flushes that append only what
changed, client memory per call bounded (measured with tracemalloc, never with a clock)."""

from __future__ import annotations

import os
import pickle
import tracemalloc
from typing import Any

import numpy as np
import pytest

from acme_xr.collect import Collector
from acme_xr.manifest import DONE, FAILED, PENDING, Manifest
from acme_xr.storage.checksums import Sums
from acme_xr.worker import FAILED as CALL_FAILED
from acme_xr.worker import OK, BatchResult

META = (("result_0", (4,), "<f8", ("result_0_dim_0",), None, None),)


def batch(indices: range, host: str, failed: tuple[int, ...] = ()) -> BatchResult:
    """What a worker sends back for the calls ``indices``: payloads of 2,080 bytes whose
    data sit at byte 2,048, a checksum of their own each; as the client receives it
    (unpickled: each call's description its own objects, as from a worker)."""
    out = BatchResult(list(indices), host=host)
    for i in indices:
        if i in failed:
            out.add(CALL_FAILED, 0.5, 1, start=1.8e9 + i)
            out.errors[i] = {"type": "ValueError", "message": f"bad {i}", "traceback": "tb",
                             "attempts": 1}
        else:
            meta = (("result_0", np.empty(4).shape, "<f8", ("result_0_dim_0",), None, None),)
            out.add(OK, 0.001 + i * 1e-9, 1, "h5", meta, None,
                    Sums(2080, (i * 2654435761) % 2**32, ((2048, 32, (i * 40503) % 2**32),)),
                    start=1.8e9 + i)
    return pickle.loads(pickle.dumps(out))  # type: ignore[no-any-return]


def record(m: Manifest, out: str | None, n: int, size: int, flush_every: int = 10) -> None:
    sink = Collector(m, None, None, n, verbose=False)
    for k, lo in enumerate(range(0, n, size)):
        sink.add(batch(range(lo, min(n, lo + size)), f"node{k % 4}/worker-{k % 8}",
                       failed=(lo + 7,)))
        if out is not None and k % flush_every == 0:
            m.flush(out)


def disk_size(out: str) -> int:
    return sum(os.path.getsize(os.path.join(out, f)) for f in ("manifest.json", "manifest.calls"))


@pytest.mark.slow
def test_a_million_call_manifest_is_tens_of_mb_and_reads_back_whole(tmp_path: Any) -> None:
    n, out = 1_000_000, str(tmp_path)
    m = Manifest.new(n, {"func": {"name": "f"}, "payload": "f_{i}.h5"})
    record(m, out, n, 10_000, flush_every=10)
    m.state = "failed"
    m.write(out)  # compacted: one block
    assert disk_size(out) < 64 * 2**20
    back = Manifest.read(out)
    assert back.counts == {"pending": 0, "done": n - 100, "failed": 100}
    np.testing.assert_array_equal(back.status, m.status)
    np.testing.assert_array_equal(back.duration, m.duration)
    np.testing.assert_array_equal(back.start, m.start)
    np.testing.assert_array_equal(back.checksum, m.checksum)
    rec, want = back.variables["result_0"], m.variables["result_0"]
    assert want.spans is not None
    np.testing.assert_array_equal(rec.spans, want.spans)
    assert rec.shapes[5] == (4,) and rec.shapes[7] is None
    assert back.host[123_456] == m.host[123_456] == "node0/worker-4"
    assert back.errors[10_007]["message"] == "bad 10007" and len(back.errors) == 100


def test_a_flush_appends_only_the_changed_records(tmp_path: Any) -> None:
    n, out = 100_000, str(tmp_path)
    m = Manifest.new(n, {"func": {"name": "f"}})
    record(m, None, n // 2, 5_000)
    m.flush(out)
    before = (tmp_path / "manifest.calls").read_bytes()
    sink = Collector(m, None, None, n, verbose=False)
    sink.add(batch(range(60_000, 60_010), "node9/worker-0"))  # ten calls more
    m.flush(out)
    after = (tmp_path / "manifest.calls").read_bytes()
    assert after[: len(before)] == before  # earlier bytes untouched
    # the block of ten calls: its meta and ~10 bytes a call, not the 100,000 calls' records
    assert 0 < len(after) - len(before) < 3000
    m.flush(out)  # nothing changed: a block of no calls
    assert len((tmp_path / "manifest.calls").read_bytes()) - len(after) < 1500
    back = Manifest.read(out)
    assert back.host[60_005] == "node9/worker-0" and back.status[60_005] == DONE
    assert back.status[70_000] == PENDING and back.status[7] == FAILED
    np.testing.assert_array_equal(back.checksum, m.checksum)


def test_later_records_of_a_call_win(tmp_path: Any) -> None:
    out = str(tmp_path)
    m = Manifest.new(4, {"func": {"name": "f"}})
    m.record_failed(1, {"type": "E", "message": "first", "traceback": "", "attempts": 1}, "a/0")
    m.flush(out)
    m.record_batch([1], "h5", [META], "b/1", [Sums(10, 3, ((2048, 32, 4),))])  # retried: done
    m.flush(out)
    m.forget(2)
    m.record_failed(3, {"type": "E", "message": "later", "traceback": "", "attempts": 2}, None)
    m.flush(out)
    back = Manifest.read(out)
    assert back.status.tolist() == [PENDING, DONE, PENDING, FAILED]
    assert back.errors == {3: {"type": "E", "message": "later", "traceback": "", "attempts": 2}}
    assert back.host[1] == "b/1" and back.sums(1) == (10, 3)
    assert back.variables["result_0"].span(1) == (2048, 32, 4)


def _grown_per_call(n: int, size: int) -> float:
    m = Manifest.new(n, {"func": {"name": "f"}})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        record(m, None, n, size)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return grown / n


def test_the_clients_memory_per_recorded_call_is_bounded() -> None:
    # what recording keeps per call beyond the manifest's fixed columns (allocated up
    # front): the data spans (3 int64) and nothing that grows with Python objects per call
    per_call = _grown_per_call(100_000, 2_000)
    assert per_call < 40, f"{per_call:.1f} bytes kept per recorded call"


def ticks(i: int) -> Any:
    import xarray as xr

    # "t" differs in every call (its values are in the payload), "side" is the same in all
    return xr.DataArray(np.full((2, 3), float(i)), dims=("side", "t"),
                        coords={"t": np.arange(3) + 10 * i, "side": ["l", "r"]})


@pytest.mark.parametrize("storage", ["hdf5", "zarr"])
def test_per_call_coordinate_values_are_not_repeated_in_the_manifest(tmp_path: Any,
                                                                    storage: str) -> None:
    import json

    from acme_xr import ParallelMap, open_results

    n, out = 40, str(tmp_path / "run")
    ParallelMap(ticks, list(range(n)), output_dir=out, verbose=False,
                storage=storage).compute(debug=True)
    with open(os.path.join(out, "manifest.json")) as fh:
        templates = json.load(fh)["coord_templates"]
    # one template for "side" (values kept: they are the same in every call) and one that
    # describes "t"; not one per call
    assert sorted(t["name"] for t in templates.values()) == ["side", "t"]
    back = Manifest.read(out)
    assert len(back.coord_templates) == 2
    ds = open_results(out).load()
    assert ds.side.values.tolist() == ["l", "r"]
    assert ds.t_per_call.values[7].tolist() == [70, 71, 72]
    np.testing.assert_array_equal(ds.result_0.values[:, 0, 0], np.arange(n, dtype=float))


def test_input_labels_are_written_once_not_at_every_flush(tmp_path: Any) -> None:
    # every scalar split argument labels the calls (header "coords"): a value per call
    n, out = 100_000, str(tmp_path)
    labels = {"trial": {"dtype": "<i8", "values": list(range(n))},
              "when": {"dtype": "<M8[ns]", "values": list(range(n))},
              "name": {"dtype": "<U4", "values": [f"c{i % 100}" for i in range(n)]}}
    m = Manifest.new(n, {"func": {"name": "f"}, "coords": labels})
    m.flush(out)
    m.record_batch(list(range(10)), "h5", [META] * 10, "h/0")
    before = os.path.getsize(tmp_path / "manifest.calls")
    m.flush(out)
    assert os.path.getsize(tmp_path / "manifest.json") < 2048
    assert os.path.getsize(tmp_path / "manifest.calls") - before < 2048
    back = Manifest.read(out).header["coords"]
    assert back["trial"]["values"].tolist() == list(range(n))
    assert back["when"]["values"][7] == np.datetime64(7, "ns")
    assert back["name"]["values"][123] == "c23"
