"""Ctrl-C during compute(), and resuming the interrupted run.

Each test runs a real script (``fault_script.py``: a ParallelMap of slow calls on a local
cluster) in a subprocess, sends it SIGINT once a few calls have started, and inspects what
it left behind: exit status, processes, payloads, manifest, temporary files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import psutil
import pytest

from acme_xr import ParallelMap
from acme_xr.manifest import DONE, Manifest
from acme_xr.storage.atomic import TMP_SUFFIX
from acme_xr.storage.hdf5 import read_payload

from . import fault_script
from .conftest import listing

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(__file__), "fault_script.py")
N = fault_script.N_CALLS


@dataclass
class Interrupted:
    out: str
    returncode: int
    stdout: str
    stderr: str
    processes: list[psutil.Process]  # everything below the script just before SIGINT
    started: set[int]  # calls started by the time the script had exited
    manifest: dict[str, Any]  # manifest.json: the header (state, counts, interruption)
    files: list[str]
    done: set[int]  # the calls the manifest records as done (Manifest.read)


def executions(marker_dir: str) -> list[int]:
    return [int(name.split(".")[0]) for name in os.listdir(marker_dir)]


def run_script(mode: str, out: str, markers: str, delay: float,
               interrupt_after: int | None = None, group: bool = False,
               interrupt_at_start: float | None = None,
               sig: signal.Signals = signal.SIGINT) -> Interrupted:
    os.makedirs(markers, exist_ok=True)
    env = dict(os.environ, ACME_XR_TEST_MARKERS=markers, ACME_XR_TEST_DELAY=str(delay),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, SCRIPT, mode, out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            start_new_session=True)  # a process group, as in a terminal
    processes: list[psutil.Process] = []
    first_lines = ""
    try:
        if interrupt_at_start is not None:  # while compute() starts its cluster
            assert proc.stdout is not None
            while "STARTING" not in first_lines:
                first_lines += proc.stdout.readline()
            time.sleep(interrupt_at_start)
            processes = psutil.Process(proc.pid).children(recursive=True)
            os.kill(proc.pid, signal.SIGINT)
        if interrupt_after is not None:
            deadline = time.monotonic() + 120
            while len(os.listdir(markers)) < interrupt_after:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the script never got going"
                time.sleep(0.01)
            processes = psutil.Process(proc.pid).children(recursive=True)
            if group:  # Ctrl-C in a terminal: every process of the foreground group
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    manifest: dict[str, Any] = {}
    done: set[int] = set()
    if os.path.exists(os.path.join(out, "manifest.json")):
        with open(os.path.join(out, "manifest.json")) as fh:
            manifest = json.load(fh)
        done = {int(i) for i in Manifest.read(out).indices(DONE)}
    return Interrupted(out, proc.returncode, first_lines + stdout, stderr, processes,
                       set(executions(markers)), manifest,
                       listing(out) if os.path.isdir(out) else [], done)


def report_of(run: Interrupted) -> dict[str, Any]:
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


def payload_calls(files: list[str]) -> set[int]:
    return {int(f.removeprefix("slow_").removesuffix(".h5")) for f in files
            if f.startswith("slow_") and f.endswith(".h5")}


def done_calls(run: Interrupted | str | os.PathLike[str]) -> set[int]:
    """The calls the run's manifest records as done (as they were when ``run`` ended)."""
    if isinstance(run, Interrupted):
        return run.done
    return {int(i) for i in Manifest.read(os.fspath(run)).indices(DONE)}


def assert_ended_by_keyboard_interrupt(run: Interrupted) -> None:
    # Python ends itself with SIGINT only for an uncaught KeyboardInterrupt
    assert run.returncode in (-signal.SIGINT, 128 + signal.SIGINT), run.stderr
    assert "KeyboardInterrupt" in run.stderr.splitlines()


def assert_interrupted_by_ctrl_c(run: Interrupted) -> None:
    assert_ended_by_keyboard_interrupt(run)
    assert "DONE" not in run.stdout
    m = run.manifest
    assert m["state"] == "interrupted"
    assert m["interruption"]["type"] == "KeyboardInterrupt"
    assert 0 < m["counts"]["done"] < N and m["counts"]["failed"] == 0
    assert not [f for f in run.files if f.endswith(TMP_SUFFIX) or "reserve" in f]


def assert_processes_gone(processes: list[psutil.Process]) -> None:
    deadline = time.monotonic() + 10
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert alive == []


def assert_payloads_valid(out: str, calls: set[int]) -> None:
    for i in calls:
        data = read_payload(os.path.join(out, f"slow_{i}.h5"))
        want = fault_script.slow(i, 0.5)
        np.testing.assert_array_equal(data["result_0"], want[0])
        assert data["result_1"] == want[1]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: Any) -> Interrupted:
    """A run interrupted by SIGINT to the script (acme_xr started the cluster)."""
    base = tmp_path_factory.mktemp("ctrl_c")
    return run_script("own", str(base / "run"), str(base / "markers"), delay=0.3,
                      interrupt_after=6)


def test_ctrl_c_keeps_every_finished_call_and_closes_the_cluster(interrupted: Interrupted) -> None:
    run = interrupted
    assert_interrupted_by_ctrl_c(run)
    # compute() itself closed the cluster it started (not the interpreter's exit)
    assert report_of(run)["after"] == []
    assert len(run.processes) >= 2  # the cluster's worker processes, during the run
    assert_processes_gone(run.processes)
    # the manifest says exactly which calls completed, and each of those is on disk, whole
    done = done_calls(run)
    assert done == payload_calls(run.files)
    assert done <= run.started
    assert_payloads_valid(run.out, done)
    # the container links the finished calls only
    with h5py.File(os.path.join(run.out, "slow.h5")) as fh:
        assert sorted(fh) == sorted(f"comp_{i}" for i in done)
    log = open(os.path.join(run.out, "slow.log")).read()
    assert "closed LocalCluster" in log


def test_resume_after_ctrl_c_equals_a_clean_run(interrupted: Interrupted, client: Any,
                                                 tmp_path: Any) -> None:
    done_before = done_calls(interrupted)
    markers = str(tmp_path / "markers")
    run = run_script("resume", interrupted.out, markers, delay=0.02)
    assert run.returncode == 0, run.stderr
    assert "DONE" in run.stdout
    # only the calls without a payload ran, each once
    assert sorted(executions(markers)) == sorted(set(range(N)) - done_before)
    assert run.manifest["state"] == "complete" and "interruption" not in run.manifest
    assert run.manifest["counts"]["done"] == N
    # value by value, the same as an uninterrupted run
    clean = ParallelMap(fault_script.slow, list(range(N)), 0.5,
                        output_dir=str(tmp_path / "clean")).compute()
    for i, path in enumerate(clean):
        want = read_payload(path)
        got = read_payload(os.path.join(interrupted.out, f"slow_{i}.h5"))
        assert list(got) == list(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
    with h5py.File(os.path.join(interrupted.out, "slow.h5")) as a, \
            h5py.File(str(tmp_path / "clean" / "slow.h5")) as b:
        assert sorted(a) == sorted(b)
        for i in range(N):
            np.testing.assert_array_equal(a[f"comp_{i}/result_0"][()], b[f"comp_{i}/result_0"][()])
    assert not [f for f in listing(interrupted.out) if f.endswith(TMP_SUFFIX)]


def test_ctrl_c_leaves_the_users_own_client_alone(tmp_path: Any) -> None:
    run = run_script("user", str(tmp_path / "run"), str(tmp_path / "markers"), delay=0.3,
                     interrupt_after=6)
    assert_interrupted_by_ctrl_c(run)
    report = report_of(run)
    assert report["user_client_works"] is True
    assert report["after"] == report["before"]  # the user's workers, no more, no fewer
    assert report["acme_xr_tasks"] == []  # pending work was cancelled
    # calls that were running on the user's cluster may finish after compute() returned:
    # their payloads are whole (and a resume adopts them without running them again)
    done, on_disk = done_calls(run), payload_calls(run.files)
    assert done <= on_disk <= run.started
    assert_payloads_valid(run.out, on_disk)


@pytest.mark.parametrize("delay", [0.3, 0.7])
def test_ctrl_c_while_the_cluster_starts_leaves_no_process(tmp_path: Any, delay: float) -> None:
    run = run_script("own", str(tmp_path / "run"), str(tmp_path / "markers"), delay=0.3,
                     interrupt_at_start=delay)
    assert_ended_by_keyboard_interrupt(run)  # asyncio may complain after it: dask's noise
    assert report_of(run)["after"] == []  # before the interpreter exits
    assert_processes_gone(run.processes)
    assert run.manifest["state"] == "interrupted"


def test_ctrl_c_in_a_terminal_reaches_every_process(tmp_path: Any) -> None:
    """A terminal sends SIGINT to the whole process group, dask's workers included."""
    run = run_script("own", str(tmp_path / "run"), str(tmp_path / "markers"), delay=0.3,
                     interrupt_after=6, group=True)
    assert_interrupted_by_ctrl_c(run)
    assert_processes_gone(run.processes)
    done = done_calls(run)
    assert done == payload_calls(run.files)
    assert_payloads_valid(run.out, done)


def test_a_ctrl_c_while_the_files_are_written_waits_for_them() -> None:
    """The first Ctrl-C during the last steps is held back; a second one is not."""
    from acme_xr.map import _deferred_interrupts

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with _deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal arrives here
            steps.append("manifest written")
    assert steps == ["manifest written"]
    with pytest.raises(KeyboardInterrupt):
        with _deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            steps.append("not reached")
    assert steps == ["manifest written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_whose_client_was_killed_resumes(client: Any, tmp_path: Any) -> None:
    """SIGKILL of everything (a walltime, the OOM killer): the manifest is the last flush,
    payloads that are on disk are whole, and resume finishes the run."""
    out, markers = str(tmp_path / "run"), str(tmp_path / "markers")
    killed = run_script("own", out, markers, delay=0.3, interrupt_after=8, group=True,
                        sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert killed.manifest["state"] == "running"  # nothing could write the end of the run
    on_disk = payload_calls(killed.files)
    assert done_calls(killed) <= on_disk
    assert_payloads_valid(out, on_disk)
    assert_processes_gone(killed.processes)

    run = run_script("resume", out, str(tmp_path / "markers2"), delay=0.02)
    assert run.returncode == 0, run.stderr
    assert sorted(executions(str(tmp_path / "markers2"))) == sorted(set(range(N)) - on_disk)
    assert run.manifest["state"] == "complete"
    assert_payloads_valid(out, set(range(N)))
    assert not [f for f in listing(out) if f.endswith(TMP_SUFFIX) or "reserve" in f]
