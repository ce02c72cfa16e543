"""Nothing lost: failed calls, retries, call timeouts and killed workers.

Real worker processes and real files throughout: the functions below run on dask workers,
coordinate with the test through marker files in ``tmp_path``, and the tests read back what
is on disk.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest

from acme_xr import ParallelMap
from acme_xr.errors import ClusterError, ComputeError
from acme_xr.manifest import DONE, Manifest
from acme_xr.storage.atomic import TMP_SUFFIX
from acme_xr.storage.hdf5 import read_payload

from .conftest import listing


def manifest_of(out: Any) -> Manifest:
    return Manifest.read(os.fspath(out))


def mark(marker_dir: str, i: int) -> int:
    """Record one execution of call ``i`` (a file per execution); return how many so far."""
    os.makedirs(marker_dir, exist_ok=True)
    open(os.path.join(marker_dir, f"{i}.{os.getpid()}.{time.perf_counter_ns()}"), "w").close()
    return executions(marker_dir).count(i)


def executions(marker_dir: str) -> list[int]:
    if not os.path.isdir(marker_dir):
        return []
    return [int(name.split(".")[0]) for name in os.listdir(marker_dir)]


def no_temporaries(out: Any) -> None:
    leftovers = [p for p in listing(out) if p.endswith(TMP_SUFFIX) or "reserve" in p]
    assert leftovers == []


# -- 1. failed calls ---------------------------------------------------------------------
def picky(i: int, scale: float) -> np.ndarray:
    if i in (3, 7):
        raise ValueError(f"input {i} is out of range")
    return np.arange(3) * scale + i


def test_failed_calls_give_one_error_that_says_everything(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "run"
    pmap = ParallelMap(picky, list(range(10)), 0.5, output_dir=str(out))
    with pytest.raises(ComputeError) as info:
        pmap.compute()
    err = info.value
    text = str(err)
    assert isinstance(err, RuntimeError)
    assert "2 of 10 calls failed (8 succeeded and were kept)" in text
    assert "call 3: ValueError: input 3 is out of range" in text
    assert "call 7: ValueError: input 7 is out of range" in text
    # the first remote traceback, down to the user's own line
    assert "Traceback (most recent call last)" in text and 'raise ValueError(f"input' in text
    assert str(out / "manifest.json") in text and str(out / "picky.log") in text
    assert sorted(err.failed) == [3, 7] and err.manifest == str(out / "manifest.json")
    assert err.logfile == str(out / "picky.log")
    # every other call ran and was kept, on the error and on the ParallelMap
    assert err.results == pmap.results
    assert [r is None for r in err.results] == [i in (3, 7) for i in range(10)]
    for i, path in enumerate(err.results):
        if path is not None:
            np.testing.assert_array_equal(read_payload(path)["result_0"], picky(i, 0.5))
    assert not (out / "picky_3.h5").exists() and not (out / "picky_7.h5").exists()
    # all of it recorded in the manifest and the log
    m = manifest_of(out)
    assert m.state == "failed" and m.counts == {"pending": 0, "done": 8, "failed": 2}
    assert set(m.errors) == {3, 7}
    assert m.errors[7]["type"] == "ValueError"
    assert "input 7 is out of range" in m.errors[7]["traceback"]
    log = (out / "picky.log").read_text()
    assert "call 3 failed" in log and "call 7 failed" in log
    no_temporaries(out)


def test_memory_mode_keeps_the_successful_results(client: Any) -> None:
    pmap = ParallelMap(picky, list(range(6)), 2.0, write_worker_results=False)
    with pytest.raises(ComputeError, match="1 of 6 calls failed") as info:
        pmap.compute()
    assert info.value.manifest is None
    for i, value in enumerate(info.value.results):
        if i == 3:
            assert value is None
        else:
            np.testing.assert_array_equal(value, picky(i, 2.0))
    assert pmap.results is info.value.results


# -- 2. retries ----------------------------------------------------------------------------
def fails_first_time(i: int, marker_dir: str) -> float:
    if mark(marker_dir, i) == 1:
        raise RuntimeError(f"transient failure of call {i}")
    return i * 2.0


def test_retry_succeeds_on_the_second_attempt(client: Any, tmp_path: Any) -> None:
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    files = ParallelMap(fails_first_time, list(range(6)), markers, retries=1,
                        output_dir=str(out)).compute()
    assert [float(read_payload(f)["result_0"]) for f in files] == [i * 2.0 for i in range(6)]
    assert sorted(executions(markers)) == sorted(list(range(6)) * 2)  # exactly two each
    m = manifest_of(out)
    assert m.state == "complete" and m.attempts.tolist() == [2] * 6
    assert "succeeded on attempt 2; before: RuntimeError: transient failure of call 4" in (
        out / "fails_first_time.log").read_text()


def test_without_retries_the_same_calls_fail(client: Any, tmp_path: Any) -> None:
    with pytest.raises(ComputeError, match="6 of 6 calls failed"):
        ParallelMap(fails_first_time, list(range(6)), str(tmp_path / "markers"),
                    output_dir=str(tmp_path / "run")).compute()


def always_fails(i: int) -> None:
    raise KeyError(f"no such channel {i}")


def test_retries_used_up_are_recorded(client: Any, tmp_path: Any) -> None:
    out = tmp_path / "run"
    with pytest.raises(ComputeError, match="after|KeyError"):
        ParallelMap(always_fails, [0, 1], retries=2, output_dir=str(out)).compute()
    m = manifest_of(out)
    assert m.attempts.tolist() == [3, 3]
    assert m.errors[1]["attempts"] == 3
    assert m.errors[1]["earlier"] == ["KeyError: 'no such channel 1'"] * 2


# -- 3. call_timeout -----------------------------------------------------------------------
def sleeps_at_3(i: int, marker_dir: str) -> np.ndarray:
    mark(marker_dir, i)
    if i == 3:
        time.sleep(3600)  # stuck in C code: no Python signal handler would run
    return np.full(4, float(i))


def child_pids(client: Any) -> dict[str, list[int]]:
    """Live child processes of each worker (the call_timeout processes)."""
    def children() -> list[int]:
        return [p.pid for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]

    return client.run(children)


def test_call_timeout_stops_a_call_stuck_in_c_code(client: Any, tmp_path: Any) -> None:
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    t0 = time.monotonic()
    with pytest.raises(ComputeError) as info:
        ParallelMap(sleeps_at_3, list(range(8)), markers, call_timeout=1.5, retries=1,
                    output_dir=str(out)).compute()
    assert time.monotonic() - t0 < 30  # two attempts of 1.5 s, not an hour
    assert list(info.value.failed) == [3]
    m = manifest_of(out)
    err = m.errors[3]
    assert err["type"] == "acme_xr.errors.CallTimeoutError"
    assert "call_timeout=1.5 s" in err["message"] and err["attempts"] == 2
    assert executions(markers).count(3) == 2  # retried once, then given up
    for i in set(range(8)) - {3}:
        np.testing.assert_array_equal(read_payload(out / f"sleeps_at_3_{i}.h5")["result_0"],
                                      np.full(4, float(i)))
    no_temporaries(out)
    # the processes that ran the calls are gone once the run is over
    deadline = time.monotonic() + 10
    while any(child_pids(client).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(child_pids(client).values())


def slow_first_time(i: int, marker_dir: str) -> float:
    if mark(marker_dir, i) == 1 and i % 2:
        time.sleep(3600)
    return float(i) ** 2


def test_timed_out_call_is_retried_and_succeeds(client: Any, tmp_path: Any) -> None:
    markers = str(tmp_path / "markers")
    values = ParallelMap(slow_first_time, list(range(4)), markers, call_timeout=1.0, retries=1,
                         write_worker_results=False).compute()
    assert values == [0.0, 1.0, 4.0, 9.0]  # memory mode: values come back from the child
    assert sorted(executions(markers)) == [0, 1, 1, 2, 3, 3]


def exits_hard(i: int) -> int:
    if i == 1:
        os._exit(3)  # as a segfault or the kernel's OOM killer would
    return i


def test_a_call_that_kills_its_process_fails_alone(client: Any) -> None:
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    with pytest.raises(ComputeError) as info:
        ParallelMap(exits_hard, list(range(4)), call_timeout=60,
                    write_worker_results=False).compute()
    assert list(info.value.failed) == [1]
    assert info.value.failed[1]["type"] == "acme_xr.errors.CallCrashedError"
    assert "exited with code 3" in info.value.failed[1]["message"]
    assert info.value.results == [0, None, 2, 3]
    assert set(client.scheduler_info(n_workers=-1)["workers"]) == workers  # no worker lost


# -- 4. killed workers -------------------------------------------------------------------
@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A 2-worker cluster of this test only: its workers get killed."""
    import dask
    from distributed import Client, LocalCluster

    # every worker death ends its tasks at once (KilledWorker): acme_xr's own resubmission
    # must keep every call that did not cause it
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def many_variables(i: int, marker_dir: str) -> tuple[np.ndarray, ...]:
    """Slow to write (hundreds of datasets); records which process runs it."""
    mark(marker_dir, i)
    if i == 5:  # 6.5 MB: over the in-memory image limit, so written into the file itself
        return tuple(np.full(2048, float(i + k)) for k in range(400))
    time.sleep(0.15)
    return tuple(np.full(8, float(i + k)) for k in range(2))


def test_worker_killed_while_writing_loses_nothing(own_cluster: Any, tmp_path: Any) -> None:
    out, markers = tmp_path / "run", str(tmp_path / "markers")
    killed: list[int] = []

    def kill_the_writer_of_call_5() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            writing = [p for p in os.listdir(out) if p.startswith(".many_variables_5.h5")] \
                if out.exists() else []
            runs = [n for n in os.listdir(markers) if n.startswith("5.")] \
                if os.path.isdir(markers) else []
            if writing and runs:
                pid = int(runs[0].split(".")[1])
                os.kill(pid, signal.SIGKILL)  # mid-write: a half-written temporary stays
                killed.append(pid)
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_the_writer_of_call_5)
    killer.start()
    workers_before = own_cluster.run(os.getpid)
    files = ParallelMap(many_variables, list(range(12)), markers, output_dir=str(out)).compute()
    killer.join()
    assert killed and killed[0] in workers_before.values()
    assert executions(markers).count(5) == 2  # ran again elsewhere
    # every result, each in exactly one valid file, nothing else
    for i, path in enumerate(files):
        data = read_payload(path)
        n, size = (400, 2048) if i == 5 else (2, 8)
        assert sorted(data) == sorted(f"result_{k}" for k in range(n))
        np.testing.assert_array_equal(data[f"result_{n - 1}"], np.full(size, float(i + n - 1)))
    assert sorted(os.listdir(out)) == sorted(
        [f"many_variables_{i}.h5" for i in range(12)]
        + ["many_variables.h5", "many_variables.log", "manifest.calls", "manifest.json",
           "acme_xr_call.pkl"])
    assert manifest_of(out).state == "complete"
    # the nanny replaced the killed worker
    deadline = time.monotonic() + 30
    while len(own_cluster.scheduler_info(n_workers=-1)["workers"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert killed[0] not in own_cluster.run(os.getpid).values()


def kills_its_worker(i: int) -> int:
    if i == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return i * 10


def test_a_call_that_keeps_killing_workers_fails_alone(own_cluster: Any, tmp_path: Any) -> None:
    with pytest.raises(ComputeError) as info:
        ParallelMap(kills_its_worker, list(range(8)), batch_size=4,
                    write_worker_results=False).compute()
    assert list(info.value.failed) == [2]
    assert "KilledWorker" in info.value.failed[2]["type"]
    assert info.value.results == [0, 10, None, 30, 40, 50, 60, 70]


def test_two_executions_of_a_call_leave_one_valid_payload(client: Any, tmp_path: Any) -> None:
    """dask may run a call twice: concurrent writers of one payload leave one whole file."""
    from acme_xr.storage.hdf5 import write_payload
    from acme_xr.storage.values import to_variables

    path = str(tmp_path / "f_0.h5")
    workers = list(client.scheduler_info(n_workers=-1)["workers"])

    def write_many(seed: int) -> int:
        for k in range(30):
            write_payload(path, to_variables((np.full(50_000, seed + k), np.arange(k + 1))))
        return seed

    futures = [client.submit(write_many, 1000 * w, workers=[addr], pure=False)
               for w, addr in enumerate(workers)]
    assert sorted(f.result() for f in futures) == [0, 1000]
    data = read_payload(path)
    assert data["result_0"][0] in (29, 1029) and (data["result_0"] == data["result_0"][0]).all()
    np.testing.assert_array_equal(data["result_1"], np.arange(30))
    assert os.listdir(tmp_path) == ["f_0.h5"]


def naps(i: int) -> float:
    time.sleep(0.1)
    return float(i)


def test_a_cluster_that_loses_every_worker_stops_the_run(tmp_path: Any) -> None:
    """Workers that do not come back (walltime, dask giving up on them): no endless wait."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    out = tmp_path / "run"

    def stop_the_workers() -> None:
        while not out.exists() or len([p for p in os.listdir(out) if p.startswith("naps_")]) < 5:
            time.sleep(0.01)
        cluster.scale(0)

    stopper = threading.Thread(target=stop_the_workers)
    stopper.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ClusterError, match="no worker for"):
            ParallelMap(naps, list(range(100)), output_dir=str(out), setup_timeout=2).compute()
        assert time.monotonic() - t0 < 30
    finally:
        stopper.join()
        client.close()
        cluster.close()
    m = manifest_of(out)
    assert m.state == "interrupted" and m.header["interruption"]["type"].endswith("ClusterError")
    done = {int(i) for i in m.indices(DONE)}
    assert 5 <= len(done) < 100
    assert done == {int(p[5:-3]) for p in os.listdir(out) if p.startswith("naps_")}
    no_temporaries(out)


def test_a_call_process_that_cannot_start_fails_the_call_not_the_batch() -> None:
    import dask

    from acme_xr.inputs import distribute
    from acme_xr.worker import Runner, WriteSpec

    runner = Runner.from_plan(distribute(naps, ([1, 2],), {}), WriteSpec("memory"),
                              retries=1, call_timeout=5)
    # a child that does not come up in time (here: no time at all) fails its call only
    with dask.config.set({"acme_xr.call-host.start-timeout": "1ms"}):
        out = runner.run([0, 1], [(1,), (2,)])
    runner.close_children()
    assert out.status == [2, 2] and out.attempts == [2, 2]
    assert out.errors[0]["type"] == "acme_xr.errors.CallCrashedError"
    assert "did not start" in out.errors[0]["message"]
    out = runner.run([0, 1], [(1,), (2,)])  # with time to start, the same runner works
    runner.close_children()
    assert out.values == [1.0, 2.0]
