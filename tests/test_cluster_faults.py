"""A user's own cluster: its scheduler dies mid-run, or the run is interrupted on it
(issue 9, point 5). Real schedulers and workers, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from acme_xr import ParallelMap
from acme_xr.errors import ClusterError
from acme_xr.manifest import DONE, Manifest
from acme_xr.storage.atomic import TMP_SUFFIX
from acme_xr.storage.hdf5 import read_payload

from .conftest import listing
from .deadline import fails_after


def nap(i: int, seconds: float, marker_dir: str) -> float:
    """Mark the start of call ``i``, then sleep: a call that is running for a while."""
    os.makedirs(marker_dir, exist_ok=True)
    open(os.path.join(marker_dir, f"{i}.{os.getpid()}"), "w").close()
    time.sleep(seconds)
    return float(i)


def manifest_of(out: Any) -> dict[str, Any]:
    with open(os.path.join(out, "manifest.json")) as fh:
        return json.load(fh)


def done_calls(out: Any) -> set[int]:
    return {int(i) for i in Manifest.read(str(out)).indices(DONE)}


def payload_calls(out: Any) -> set[int]:
    return {int(p[len("nap_"):-len(".h5")]) for p in os.listdir(out)
            if p.startswith("nap_") and p.endswith(".h5")}


def when(condition: Any, then: Any) -> threading.Thread:
    """Run ``then()`` in a thread once ``condition()`` holds (checked every 10 ms)."""

    def wait() -> None:
        deadline = time.monotonic() + 120
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        then()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def cli_cluster(tmp_path: Any) -> Iterator[tuple[subprocess.Popen[bytes], Any]]:
    """``dask scheduler`` and ``dask worker`` processes, as a user starts them, and a
    client of them: the scheduler can be killed."""
    from distributed import Client

    dask_cli = os.path.join(os.path.dirname(sys.executable), "dask")
    info = str(tmp_path / "scheduler.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", info], **quiet)
    workers = subprocess.Popen([dask_cli, "worker", "--scheduler-file", info, "--nworkers",
                                "2", "--nthreads", "1", "--no-dashboard"], **quiet)
    client = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(info):
            assert time.monotonic() < deadline, "the dask scheduler did not start"
            time.sleep(0.05)
        client = Client(scheduler_file=info, set_as_default=False, timeout=30)
        client.wait_for_workers(2, timeout=60)
        yield scheduler, client
    finally:
        for proc in (workers, scheduler):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if client is not None:
            client.close(timeout=5)


def test_a_scheduler_that_dies_mid_run_ends_it_with_a_cluster_error(
        cli_cluster: tuple[subprocess.Popen[bytes], Any], tmp_path: Any) -> None:
    scheduler, client = cli_cluster
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    killed: list[float] = []

    def kill_scheduler() -> None:
        scheduler.send_signal(signal.SIGKILL)
        killed.append(time.monotonic())

    killer = when(lambda: out.exists() and len(payload_calls(out)) >= 4, kill_scheduler)
    with fails_after(180), client.as_current(), \
            pytest.raises(ClusterError, match="scheduler") as info:
        ParallelMap(nap, list(range(60)), 0.2, markers, output_dir=str(out),
                    setup_timeout=5, verbose=False).compute()
    ended = time.monotonic()
    killer.join()
    assert killed, "the run ended before the scheduler was killed"
    assert ended - killed[0] < 5 + 25  # setup_timeout and a generous margin: no hang
    assert "resume=True" in str(info.value)
    m = manifest_of(out)
    assert m["state"] == "interrupted" and m["interruption"]["type"].endswith("ClusterError")
    done = done_calls(out)
    assert 4 <= len(done) < 60
    # every call the manifest calls done has its payload (workers without their scheduler
    # may finish a call after the run ended: such a payload is whole, and a resume adopts it)
    assert done <= payload_calls(out)
    for i in done:
        assert read_payload(str(out / f"nap_{i}.h5"))["result_0"] == float(i)
    assert not [p for p in listing(out) if p.endswith(TMP_SUFFIX)]


def run_tasks(dask_worker: Any = None) -> list[str]:
    return [str(k) for k in dask_worker.state.tasks if str(k).startswith("acme_xr-")]


def scheduler_tasks(dask_scheduler: Any = None) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith("acme_xr-")]


@pytest.mark.parametrize("call_timeout", [None, 60])
def test_an_interrupted_run_on_a_users_cluster_leaves_nothing_running(
        tmp_path: Any, call_timeout: float | None) -> None:
    """Ctrl-C on a user's own client: when compute() returns, no task of the run is left on
    the scheduler or a worker, nothing writes into the run directory any more, it holds no
    temporary, the manifest knows every payload, and the user's cluster still works."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    main = threading.main_thread().ident
    assert main is not None
    try:
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
        ctrl_c = when(lambda: os.path.isdir(markers) and len(os.listdir(markers)) >= 3,
                      lambda: signal.pthread_kill(main, signal.SIGINT))
        with client.as_current(), pytest.raises(KeyboardInterrupt):
            ParallelMap(nap, list(range(12)), 1.5, markers, output_dir=str(out),
                        call_timeout=call_timeout, verbose=False).compute()
        files = listing(out)
        assert client.run(run_tasks) == {w: [] for w in workers}
        assert client.run_on_scheduler(scheduler_tasks) == []
        assert not [p for p in files if p.endswith(TMP_SUFFIX) or "reserve" in p]
        assert manifest_of(out)["state"] == "interrupted"
        assert done_calls(out) == payload_calls(out)
        time.sleep(2.0)  # longer than a call: a task still running would write now
        assert listing(out) == files
        assert client.submit(abs, -7).result() == 7
        assert set(client.scheduler_info(n_workers=-1)["workers"]) == workers
        ctrl_c.join()
    finally:
        client.close()
        cluster.close()
