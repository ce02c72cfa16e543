"""M1: the run manifest at 1,000,000 calls (issue 12, point 2), format 4 beside format 3.

* Write, flush and open a manifest of 1,000,000 done calls (one float64[4] result each,
  HDF5 payloads with sums, 8 hosts, an input label per call): format 4 (``manifest.json``
  header plus the calls log) against format 3 (the whole manifest as one JSON document,
  as acme_xr wrote it until 532ab5c: :func:`acme_xr.manifest_json.to_json`), in this
  process, rounds alternating.
  "flush" is what a running run pays after 10,000 more calls: format 4 appends their
  records, format 3 rewrote the whole document. Sizes on disk are recorded beside.
* ``Collector.add`` per call (the client's cost of recording what workers send back),
  batches of 1,000 calls, in a fresh process each (benchmarks/m1_collect_probe.py): this
  tree, and, when ``ACME_XR_BEFORE`` names a checkout of an older commit (e.g. 532ab5c,
  whose Collector.add called Manifest.record_done per call), that one side by side.

Goals: a 1,000,000-call manifest opens in under 1 s and is tens of MB, not hundreds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import report

from acme_xr.manifest import Manifest
from acme_xr.manifest_json import to_json
from acme_xr.storage.atomic import write_json
from acme_xr.storage.checksums import Sums

N = 1_000_000
NEW, OLD = "format 4 (header + calls log)", "format 3 (one JSON document)"
ROUNDS = 3
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "m1_collect_probe.py")

for _what in ("write", "flush 10,000 calls", "open"):
    report.declare(f"M1 manifest {_what}", f"M1 the manifest of {N:,} calls: {_what}", OLD)
report.declare("M1 Collector.add", "M1 Collector.add per call (batches of 1,000)", "before")


def _manifest(n: int) -> Manifest:
    # as ParallelMap(f, range(n)) records it: the input labels one value per call
    m = Manifest.new(n, {"func": {"name": "f"}, "payload": "f_{i}.h5",
                         "coords": {"x": {"dtype": "<i8", "values": list(range(n))}}})
    meta = (("result_0", (4,), "<f8", ("result_0_dim_0",), None, None),)
    for lo in range(0, n, 10_000):
        idx = np.arange(lo, min(n, lo + 10_000))
        m.record_batch(idx, "h5", [meta] * len(idx), f"node{lo % 4}/worker-{lo % 8}",
                       [Sums(2080, (i * 2654435761) % 2**32, ((2048, 32, (i * 40503) % 2**32),))
                        for i in idx.tolist()],
                       duration=0.001 + idx * 1e-9, start=1.8e9 + idx, attempts=1)
    return m


def _size(d: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_m1_manifest_write_flush_open(benchmark: Any, tmp_path: Any) -> None:
    m = _manifest(N)
    m.state = "complete"
    new, old = str(tmp_path / "v4"), str(tmp_path / "v3")
    os.mkdir(new)
    os.mkdir(old)
    json_path = os.path.join(old, "manifest.json")
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(ROUNDS):
        order = ((NEW, OLD) if r % 2 == 0 else (OLD, NEW))
        for who in order:
            if who == NEW:
                times.setdefault(("write", NEW), []).append(_timed(lambda: m.write(new)))
            else:
                times.setdefault(("write", OLD), []).append(
                    _timed(lambda: write_json(json_path, to_json(m), fsync=True)))
    sizes = {NEW: _size(new), OLD: _size(old)}
    for r in range(ROUNDS):
        for who in ((NEW, OLD) if r % 2 == 0 else (OLD, NEW)):
            if who == NEW:
                times.setdefault(("open", NEW), []).append(_timed(lambda: Manifest.read(new)))
            else:
                times.setdefault(("open", OLD), []).append(_timed(lambda: Manifest.read(old)))
    # a running run: 10,000 more calls done since the last flush
    m.state = "running"
    m.write(new)
    meta = (("result_0", (4,), "<f8", ("result_0_dim_0",), None, None),)
    for r in range(ROUNDS):
        idx = np.arange(10_000 * r, 10_000 * (r + 1))
        m.record_batch(idx, "h5", [meta] * len(idx), "node9/worker-0",
                       [Sums(2080, 7, ((2048, 32, 9),))] * len(idx))
        for who in ((NEW, OLD) if r % 2 == 0 else (OLD, NEW)):
            if who == NEW:
                times.setdefault(("flush 10,000 calls", NEW), []).append(
                    _timed(lambda: m.flush(new)))
            else:
                times.setdefault(("flush 10,000 calls", OLD), []).append(
                    _timed(lambda: write_json(json_path, to_json(m), fsync=True)))
    for (what, who), seconds in times.items():
        report.record(f"M1 manifest {what}", who, seconds, n_calls=N, nbytes=sizes[who])
    ratio = {what: float(np.median(times[(what, OLD)]) / np.median(times[(what, NEW)]))
             for what in ("write", "flush 10,000 calls", "open")}
    print(f"\nM1 {N:,} calls: size format 4 {sizes[NEW] / 2**20:.1f} MiB, format 3 "
          f"{sizes[OLD] / 2**20:.1f} MiB ({sizes[OLD] / sizes[NEW]:.1f}x); "
          + "; ".join(f"{w}: format 4 {np.median(times[(w, NEW)]):.3f} s, format 3 "
                      f"{np.median(times[(w, OLD)]):.3f} s ({r:.1f}x)" for w, r in ratio.items()))
    assert sizes[NEW] < 64 * 2**20
    benchmark.group = "M1 manifest open"
    benchmark.pedantic(Manifest.read, (new,), rounds=1, iterations=1)


def _probe(pythonpath: str, n: int, size: int, rounds: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run([sys.executable, PROBE, str(n), str(size), str(rounds)], env=env,
                         capture_output=True, text=True, check=True, timeout=1800)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["acme_xr"].startswith(pythonpath), found  # the intended tree ran
    return list(found["seconds_per_call"])


def test_m1_collector_add_per_call(benchmark: Any) -> None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before = os.environ.get("ACME_XR_BEFORE")
    n, size = 200_000, 1_000
    runs: dict[str, list[float]] = {}
    for r in range(2):
        trees = [("after", here)] + ([("before", before)] if before else [])
        for who, tree in (trees if r % 2 == 0 else trees[::-1]):
            runs.setdefault(who, []).extend(_probe(tree, n, size, 2))
    for who, seconds in runs.items():
        report.record("M1 Collector.add", who, seconds, n_calls=1)
    line = f"\nM1 Collector.add: after {np.median(runs['after']) * 1e6:.2f} us/call"
    if before:
        line += (f", before ({before}) {np.median(runs['before']) * 1e6:.2f} us/call "
                 f"({np.median(runs['before']) / np.median(runs['after']):.1f}x)")
    else:
        report.note("M1 Collector.add: set ACME_XR_BEFORE to a checkout of 532ab5c to "
                    "measure the per-call recording it replaced beside it")
    print(line)
    benchmark.group = "M1 Collector.add"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
