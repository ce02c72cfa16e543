"""A cancelled batch stops between its calls, seen through public dask APIs only."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from acme_xr.engine import Chunk, _Parcel, _run_chunk, _run_tasks, _wait_until_gone
from acme_xr.inputs import distribute
from acme_xr.worker import Runner, WriteSpec

ACME_XR = Path(__file__).resolve().parents[1] / "acme_xr"


def slow_marked(i: int, markers: str) -> int:
    open(os.path.join(markers, str(i)), "w").close()
    time.sleep(0.3)
    return i


def test_a_cancelled_batch_skips_its_remaining_calls(client: Any, tmp_path: Path) -> None:
    from acme_xr.cancel import PLUGIN_NAME, watch_plugin

    client.register_plugin(watch_plugin(), name=PLUGIN_NAME)
    markers = tmp_path / "markers"
    markers.mkdir()
    plan = distribute(slow_marked, (list(range(20)), str(markers)), {})
    runner = Runner.from_plan(plan, WriteSpec("memory"))
    run_id = uuid.uuid4().hex[:10]
    key = f"acme_xr-slow_marked-0-{run_id}-x"
    chunk = Chunk(list(range(20)), [(i,) for i in range(20)], key)
    fut = client.submit(_run_chunk, _Parcel(runner), chunk, key=key, pure=False)
    deadline = time.monotonic() + 30
    while not os.listdir(markers):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.02)
    assert any(client.run(_run_tasks, run_id).values())  # the worker says it runs it
    client.cancel([fut], force=True)
    _wait_until_gone(client, run_id, timeout=30)
    assert not any(client.run(_run_tasks, run_id).values())
    assert len(os.listdir(markers)) < 5  # 20 calls of 0.3 s: it stopped early


def test_acme_xr_uses_no_private_dask_state() -> None:
    """Issue 13: no SpecCluster._instances, no worker.state poking, no private
    as_completed state, no thread_state (the task's key travels with the batch)."""
    banned = re.compile(r"_instances|\.state\.tasks|\bthread_state\b|\._futures\b|"
                        r"\._queue\b|dask_worker\.state")
    found = [f"{path.name}:{n}: {line.strip()}"
             for path in sorted(ACME_XR.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if banned.search(line)]
    assert found == []
