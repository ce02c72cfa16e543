"""call_timeout's child-process host (acme_xr/callhost.py), tested on its own.

Why a home-made host: dask's worker processes are daemonic, and a daemonic process may not
start multiprocessing children -- which is how loky (joblib's executor) and pebble start
theirs. The last tests show that on a real dask worker; pebble is not installed here, but
its ``ProcessPool`` starts ``multiprocessing.Process`` children, which the first of them shows
failing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import psutil
import pytest

from acme_xr.callhost import CallHost
from acme_xr.inputs import distribute
from acme_xr.shipping import dumps
from acme_xr.worker import Runner, WriteSpec, split_values_for


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pid: int, patience: float = 30.0) -> bool:
    deadline = time.monotonic() + patience
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def host_for(func: Any, args: tuple[Any, ...]) -> tuple[CallHost, Any]:
    plan = distribute(func, args, {})
    runner = Runner.from_plan(plan, WriteSpec("memory"), call_timeout=60)
    return CallHost(dumps(runner)), plan


def echo(x: Any) -> Any:
    return x


def nap_with_a_grandchild(seconds: float) -> int:
    # a process the call starts must end with it, too
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["ACME_XR_TEST_PIDFILE"], "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    time.sleep(seconds)
    return child.pid


VALUES = [np.arange(6, dtype=">i4").reshape(2, 3), {"a": [1, 2.5, None]}, "text", b"\x00\xff",
          np.array(["x", "yz"]), (np.float32(1.5), np.datetime64("2026-01-01"))]


def test_values_round_trip_through_the_child() -> None:
    host, plan = host_for(echo, (VALUES,))
    try:
        for i, value in enumerate(VALUES):
            a, _, _ = host.call(i, split_values_for(plan, [i])[0], timeout=60, attempt=1)
            assert a.ok, a.error
            assert type(a.value) is type(value)
            if isinstance(value, np.ndarray):
                assert a.value.dtype == value.dtype
                np.testing.assert_array_equal(a.value, value)
            elif isinstance(value, tuple):
                assert a.value == value and a.value[0].dtype == value[0].dtype
            else:
                assert a.value == value
        assert host.pid is not None and host.pid != os.getpid()
    finally:
        host.close()


def test_a_timeout_kills_the_child_and_what_it_started(tmp_path: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("ACME_XR_TEST_PIDFILE", str(pidfile))
    host, plan = host_for(nap_with_a_grandchild, ([60.0, 0.0],))
    try:
        a, _, _ = host.call(0, split_values_for(plan, [0])[0], timeout=1.0, attempt=1)
        assert not a.ok and a.error["type"] == "acme_xr.errors.CallTimeoutError"
        assert "call_timeout=1 s" in a.error["message"]
        child, grandchild = map(int, pidfile.read_text().split())
        assert wait_until_gone(child) and wait_until_gone(grandchild)
        # the next call gets a fresh child
        b, _, _ = host.call(1, split_values_for(plan, [1])[0], timeout=60, attempt=1)
        assert b.ok and host.pid not in (None, child)
    finally:
        host.close()


PARENT = """
import sys, time
from acme_xr.callhost import CallHost
from acme_xr.inputs import distribute
from acme_xr.shipping import dumps
from acme_xr.worker import Runner, WriteSpec
runner = Runner.from_plan(distribute(time.sleep, ([0.0],), {}), WriteSpec("memory"),
                          call_timeout=60)
host = CallHost(dumps(runner))
host.start()
print(host.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_child_dies_with_its_parent(sig: signal.Signals) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.send_signal(sig)  # SIGKILL: no cleanup code of the parent runs
        parent.wait(30)
        assert wait_until_gone(child), "the call host outlived its worker"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def start_a_multiprocessing_child() -> str:
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=abs, args=(1,))
    try:
        proc.start()
    except AssertionError as exc:
        return str(exc)
    proc.join()
    return "started"


def start_a_loky_child() -> str:
    from loky import get_reusable_executor

    try:
        return str(get_reusable_executor(max_workers=1).submit(abs, -1).result(timeout=60))
    except AssertionError as exc:
        return str(exc)


def start_a_pebble_child() -> str:
    from pebble import ProcessPool

    try:
        with ProcessPool(max_workers=1) as pool:
            return str(pool.schedule(abs, args=(-1,)).result(timeout=60))
    except AssertionError as exc:
        return str(exc)


def start_a_call_host() -> int:
    host, plan = host_for(echo, ([5],))
    try:
        a, _, _ = host.call(0, split_values_for(plan, [0])[0], timeout=60, attempt=1)
        return int(a.value)
    finally:
        host.close()


@pytest.fixture(scope="module")
def own_client() -> Any:
    """A one-worker cluster of these tests' own: loky leaves its resource tracker behind
    in a worker it tried to use, which the shared cluster's other tests would count."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster,
                                                                 set_as_default=False) as c:
        yield c


def test_a_daemonic_dask_worker_cannot_start_multiprocessing_children(own_client: Any) -> None:
    """Why loky and pebble cannot host the calls: both start multiprocessing children."""
    client = own_client
    message = client.submit(start_a_multiprocessing_child, pure=False).result()
    assert message == "daemonic processes are not allowed to have children"
    assert client.submit(start_a_call_host, pure=False).result() == 5  # subprocess works


@pytest.mark.parametrize("start", [start_a_loky_child, start_a_pebble_child],
                         ids=["loky", "pebble"])
def test_loky_and_pebble_cannot_start_workers_in_a_daemonic_dask_worker(
        own_client: Any, start: Any) -> None:
    # loky and pebble are test dependencies (pyproject's test extra): never skipped
    message = own_client.submit(start, pure=False).result()
    assert message == "daemonic processes are not allowed to have children"
