"""Time ``Collector.add`` per call in a fresh process, with whichever acme_xr is on
``PYTHONPATH`` (benchmarks/test_m1_manifest.py runs it with this tree and, when
``ACME_XR_BEFORE`` names a checkout of an older commit, with that one, side by side).

    python benchmarks/m1_collect_probe.py N_CALLS BATCH ROUNDS

Prints one JSON line: {"seconds_per_call": [...], "acme_xr": <path of the package>}.
Batches are what the client receives from workers: unpickled BatchResults of calls that
each return a float64 array of 4 (HDF5 payloads with sums, one host per batch).
"""

from __future__ import annotations

import json
import pickle
import sys
import time

import numpy as np

import acme_xr
from acme_xr.collect import Collector
from acme_xr.manifest import Manifest
from acme_xr.storage.checksums import Sums
from acme_xr.worker import OK, BatchResult


def batches(n: int, size: int) -> list[bytes]:
    out = []
    for k, lo in enumerate(range(0, n, size)):
        b = BatchResult(list(range(lo, min(n, lo + size))), host=f"node{k % 4}/worker-{k % 8}")
        for i in b.indices:
            meta = (("result_0", np.empty(4).shape, "<f8", ("result_0_dim_0",), None, None),)
            b.add(OK, 0.001, 1, "h5", meta, None,
                  Sums(2080, (i * 2654435761) % 2**32, ((2048, 32, (i * 40503) % 2**32),)),
                  start=1.8e9 + i)
        out.append(pickle.dumps(b))
    return out


def main() -> None:
    n, size, rounds = (int(a) for a in sys.argv[1:4])
    raw = batches(n, size)
    times = []
    for _ in range(rounds):
        received = [pickle.loads(b) for b in raw]  # unpickled before the clock starts
        m = Manifest.new(n, {"func": {"name": "f"}})
        sink = Collector(m, None, None, n, verbose=False)
        t0 = time.perf_counter()
        for b in received:
            sink.add(b)
        times.append((time.perf_counter() - t0) / n)
        assert int((m.status == 1).sum()) == n
    print(json.dumps({"seconds_per_call": times, "acme_xr": acme_xr.__file__}))


if __name__ == "__main__":
    main()
