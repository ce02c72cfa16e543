"""Two processes on one run directory: the second is refused before it writes anything;
a killed run's lock never blocks its resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap, open_results
from acme_xr.errors import RunLockedError
from acme_xr.layout import remove_old_runs
from acme_xr.runlock import LOCK_NAME, RunLock, is_locked

from . import fault_script

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(__file__), "fault_script.py")
N = fault_script.N_CALLS


def start_script(mode: str, out: str, markers: str, delay: float) -> subprocess.Popen[str]:
    os.makedirs(markers, exist_ok=True)
    env = dict(os.environ, ACME_XR_TEST_MARKERS=markers, ACME_XR_TEST_DELAY=str(delay),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen([sys.executable, SCRIPT, mode, out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            start_new_session=True)


def wait_for_calls(proc: subprocess.Popen[str], markers: str, n: int) -> None:
    deadline = time.monotonic() + 120
    while len(os.listdir(markers)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the script never got going"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("second", ["resume", "own"])
def test_a_second_process_on_a_running_run_directory_is_refused(tmp_path: Any,
                                                                 second: str) -> None:
    out = str(tmp_path / "run")
    first = start_script("own", out, str(tmp_path / "m1"), delay=0.4)
    try:
        wait_for_calls(first, str(tmp_path / "m1"), 2)
        # resume=True while the run goes on, or a second script with the same output_dir
        other = start_script(second, out, str(tmp_path / "m2"), delay=0.0)
        code, _, stderr = finish(other)
        assert code != 0
        assert "RunLockedError" in stderr
        assert f"output_dir {out} is in use by another process (pid {first.pid} on host" \
            in stderr
        assert os.listdir(tmp_path / "m2") == []  # it ran no call
        assert first.poll() is None  # the first run goes on
    finally:
        code, stdout, stderr = finish(first)
    assert code == 0, stderr
    assert "DONE" in stdout
    with open(os.path.join(out, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["state"] == "complete" and manifest["counts"]["done"] == N
    assert LOCK_NAME not in os.listdir(out)  # released and removed at the end
    ds = open_results(out)
    want = np.stack([fault_script.slow(i, 0.5)[0] for i in range(N)])
    np.testing.assert_array_equal(ds.result_0.values, want)


def test_a_killed_run_leaves_no_lock_that_blocks_its_resume(tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    markers = str(tmp_path / "m")
    proc = start_script("own", out, markers, delay=0.3)
    try:
        wait_for_calls(proc, markers, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert LOCK_NAME in os.listdir(out)  # left behind, but nobody holds it
    assert not is_locked(out)
    assert open_results(out).sizes["call"] == N  # readers ignore the lock file
    code, stdout, stderr = finish(start_script("resume", out, str(tmp_path / "m2"), delay=0))
    assert code == 0, stderr
    assert "DONE" in stdout
    ds = open_results(out)
    assert (ds.status.values == "done").all()
    want = np.stack([fault_script.slow(i, 0.5)[0] for i in range(N)])
    np.testing.assert_array_equal(ds.result_0.values, want)
    assert LOCK_NAME not in os.listdir(out)


def test_a_run_in_this_process_holds_the_lock_until_it_ends(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    seen: list[bool] = []

    def probe(i: int, run: str) -> int:
        return i

    class Watch(ParallelMap):
        def _run(self, *args: Any) -> None:
            seen.append(is_locked(out))
            super()._run(*args)

    Watch(probe, [0, 1], out, output_dir=out, verbose=False).compute()
    assert seen == [True]
    assert not is_locked(out) and LOCK_NAME not in os.listdir(out)


def test_a_failing_run_releases_the_lock(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")

    def fails(i: int) -> int:
        raise ValueError("no")

    with pytest.raises(RuntimeError):
        ParallelMap(fails, [0, 1], output_dir=out, verbose=False).compute()
    assert not is_locked(out) and LOCK_NAME not in os.listdir(out)


def test_cleanup_of_old_runs_leaves_a_running_one_alone(tmp_path: Any) -> None:
    running, old = tmp_path / "ACME_20240101-000000-000000", tmp_path / "ACME_20240101-000001-000000"
    old.mkdir()
    with RunLock(str(running)):
        removed = remove_old_runs(str(tmp_path), 0)
        assert removed == [str(old)]
        assert running.exists()


def test_a_lock_held_elsewhere_refuses_the_run_before_it_writes(tmp_path: Any) -> None:
    out = tmp_path / "run"
    with RunLock(str(out)):
        before = sorted(os.listdir(out))
        with pytest.raises(RunLockedError, match="is in use by another process"):
            ParallelMap(abs, [1, 2], output_dir=str(out), resume=True, verbose=False).compute()
        with pytest.raises(RunLockedError):
            ParallelMap(abs, [1, 2], output_dir=str(out), verbose=False).compute()
        assert sorted(os.listdir(out)) == before


def test_ctrl_c_releases_and_removes_the_lock(tmp_path: Any) -> None:
    out, markers = str(tmp_path / "run"), str(tmp_path / "m")
    proc = start_script("own", out, markers, delay=0.4)
    wait_for_calls(proc, markers, 3)
    assert is_locked(out)
    os.kill(proc.pid, signal.SIGINT)
    code, _, stderr = finish(proc)
    assert "KeyboardInterrupt" in stderr
    assert LOCK_NAME not in os.listdir(out)  # removed on the way out, not by the death
    with open(os.path.join(out, "manifest.json")) as fh:
        assert json.load(fh)["state"] == "interrupted"
