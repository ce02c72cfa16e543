"""The ``acme-xr`` command against real runs, each command in its own subprocess: a complete
run, one with failed calls, one interrupted by SIGINT, each resumed from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap, open_results
from acme_xr.manifest import Manifest
from acme_xr.rerun import CALL_NAME, record_call
from acme_xr.runlock import RunLock

from . import fault_script
from .test_faults_interrupt import run_script

COMMANDS = ["status", "show", "report", "resume", "clean", "export", "demo"]

# A user's script whose function fails on calls 1 and 4 while the file FLAG exists; each call
# leaves a marker <i>.<ns> in MARKERS (how often each call ran).
SCRIPT = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from acme_xr import ParallelMap

    def f(i, flag, markers):
        open(os.path.join(markers, f"{i}.{time.perf_counter_ns()}"), "w").close()
        if i in (1, 4) and os.path.exists(flag):
            raise ValueError(f"call {i} <bad> input")
        return np.arange(3.0) * i

    if __name__ == "__main__":
        out, flag, markers = sys.argv[1:4]
        with ParallelMap(f, list(range(7)), flag, markers, output_dir=out, n_workers=2,
                         verbose=False) as pmap:
            pmap.compute()
""")


def acme(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "acme_xr", *args], capture_output=True,
                          text=True, input=stdin, env=environ, timeout=300,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def user_error(proc: subprocess.CompletedProcess[str], command: str, *words: str) -> None:
    """Exit status 1 and one line on stderr naming the command and the problem."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith(f"acme-xr {command}: ")]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0]


def square(i: int) -> np.ndarray:
    return np.full(2, i * i)


@pytest.fixture
def complete_run(client: Any, tmp_path: Any) -> str:
    out = str(tmp_path / "complete")
    with ParallelMap(square, list(range(5)), output_dir=out, verbose=False) as pmap:
        pmap.compute()
    return out


@pytest.fixture
def failed_run(tmp_path: Any) -> tuple[str, str, str]:
    """(run, flag, markers) of the script's run with calls 1 and 4 failed."""
    script, flag, markers = tmp_path / "user.py", tmp_path / "flag", tmp_path / "markers"
    script.write_text(SCRIPT)
    flag.touch()
    markers.mkdir()
    out = str(tmp_path / "failed")
    proc = subprocess.run([sys.executable, str(script), out, str(flag), str(markers)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ,
                                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert proc.returncode == 1 and "ComputeError" in proc.stderr, proc.stderr
    return out, str(flag), str(markers)


def ran(markers: str) -> list[int]:
    return sorted(int(name.split(".")[0]) for name in os.listdir(markers))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    proc = acme(command, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: acme-xr " + command)


def test_status_show_report_of_a_complete_run(complete_run: str) -> None:
    status = acme("status", complete_run)
    assert status.returncode == 0, status.stderr
    assert "calls     5: 5 done, 0 failed, 0 pending" in status.stdout
    assert "state complete" in status.stdout and "resume" not in status.stdout
    record = json.loads(acme("status", "--json", complete_run).stdout)
    assert record["counts"] == {"pending": 0, "done": 5, "failed": 0}
    assert record["function"] == "square" and record["failures"] == []
    d = record["duration"]
    assert 0 <= d["min"] <= d["median"] <= d["max"] and d["total"] >= d["max"]
    show = acme("show", complete_run)
    assert show.returncode == 0 and show.stdout.startswith("<xarray.Dataset>")
    assert "result_0  (call, result_0_dim_0) int64" in show.stdout
    report = acme("report", complete_run)
    assert report.returncode == 0
    assert report.stdout.strip() == os.path.join(complete_run, "report.html")
    resume = acme("resume", complete_run)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout


def test_a_failed_run_listed_then_resumed(failed_run: tuple[str, str, str]) -> None:
    out, flag, markers = failed_run
    status = acme("status", out)
    assert status.returncode == 0
    assert "7: 5 done, 2 failed, 0 pending" in status.stdout
    rows = [x.split() for x in status.stdout.splitlines() if "ValueError" in x]
    assert [r[0] for r in rows] == ["1", "4"]
    assert "ValueError: call 4 <bad> input" in status.stdout
    assert f"acme-xr resume {out}" in status.stdout
    record = json.loads(acme("status", "--json", out).stdout)
    assert [(f["call"], f["message"]) for f in record["failures"]] == [
        (1, "call 1 <bad> input"), (4, "call 4 <bad> input")]
    assert ran(markers) == list(range(7))
    # still failing: exit status 1, the run as it was
    again = acme("resume", out)
    assert again.returncode == 1 and "2 of 7 calls failed again" in again.stderr, again.stderr
    # (distributed may log a worker's closing comm with its traceback: not ours to hide here)
    assert again.stderr.splitlines()[-1].startswith("acme-xr resume: ")
    assert 'commands.py", line' not in again.stderr
    os.remove(flag)
    resumed = acme("resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert ran(markers) == sorted([*range(7), 1, 4, 1, 4])  # only the failed calls ran
    assert "7: 7 done, 0 failed, 0 pending" in acme("status", out).stdout
    np.testing.assert_array_equal(open_results(out).result_0.values,
                                  np.arange(7)[:, None] * np.arange(3.0))


def test_an_interrupted_run_resumed(tmp_path: Any) -> None:
    run = run_script("own", str(tmp_path / "run"), str(tmp_path / "markers"), 0.3,
                     interrupt_after=6)
    assert run.returncode in (-signal.SIGINT, 128 + signal.SIGINT), run.stderr
    status = acme("status", run.out)
    done = run.manifest["counts"]["done"]
    pending = fault_script.N_CALLS - done
    assert f"{done} done, 0 failed, {pending} pending" in status.stdout
    assert "state interrupted" in status.stdout and "acme-xr resume" in status.stdout
    report = acme("report", run.out)
    assert report.returncode == 0
    markers = tmp_path / "resumed"
    markers.mkdir()
    resumed = acme("resume", run.out, "--workers", "1",
                   env={"ACME_XR_TEST_MARKERS": str(markers), "ACME_XR_TEST_DELAY": "0"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{pending} of {fault_script.N_CALLS} calls to run" in resumed.stdout
    again = {int(name.split(".")[0]) for name in os.listdir(markers)}
    assert len(again) == pending and not again & run.done
    ds = open_results(run.out)
    for i in range(fault_script.N_CALLS):
        np.testing.assert_array_equal(ds.result_0[i].values, fault_script.slow(i, 0.5)[0])


def test_resume_needs_the_recorded_call(failed_run: tuple[str, str, str]) -> None:
    out, _, _ = failed_run
    os.remove(os.path.join(out, CALL_NAME))
    user_error(acme("resume", out), "resume", CALL_NAME, "resume=True")


def test_a_running_run_is_reported_and_never_resumed_or_removed(complete_run: str) -> None:
    manifest = Manifest.read(complete_run)
    manifest.state = "running"
    manifest.write(complete_run)
    with RunLock(complete_run):
        assert "state running" in acme("status", complete_run).stdout
        user_error(acme("resume", complete_run), "resume", complete_run)
        cleaned = acme("clean", complete_run, "--yes")
        assert cleaned.returncode == 0 and "skipped (running)" in cleaned.stdout
    assert os.path.isdir(complete_run)


def damaged(tmp_path: Any) -> str:
    run = tmp_path / "damaged"
    run.mkdir()
    (run / "manifest.json").write_text('{"format": "acme_xr-manifest", "calls"')
    return str(run)


@pytest.mark.parametrize("command", ["status", "show", "report", "resume"])
@pytest.mark.parametrize("case, words", [
    ("missing", ["does not exist"]),
    ("not a run", ["holds no acme_xr or ACME run"]),
    ("damaged", ["manifest"]),
])
def test_user_errors_are_one_line(command: str, case: str, words: list[str],
                                  tmp_path: Any) -> None:
    if case == "missing":
        path = str(tmp_path / "nowhere")
    elif case == "not a run":
        path = str(tmp_path / "empty")
        os.mkdir(path)
        open(os.path.join(path, "notes.txt"), "w").close()
    else:
        path = damaged(tmp_path)
    user_error(acme(command, path), command, *words)
    assert not os.path.exists(os.path.join(path, "report.html"))


def test_report_to_an_unwritable_place(complete_run: str, tmp_path: Any) -> None:
    user_error(acme("report", complete_run, "-o", str(tmp_path / "no" / "r.html")), "report",
               "r.html")


def test_clean_shows_asks_and_removes_only_runs(client: Any, tmp_path: Any) -> None:
    top = tmp_path / "top"
    top.mkdir()
    old, new = str(top / "old"), str(top / "new")
    for out in (old, new):
        with ParallelMap(square, [1, 2], output_dir=out, verbose=False) as pmap:
            pmap.compute()
    acme_named = top / "ACME_20200101-000000-000000"  # ACME's default name, no manifest
    acme_named.mkdir()
    (acme_named / "f_0.h5").write_bytes(b"")
    stray = top / "data"  # a payload-named file but no run
    stray.mkdir()
    (stray / "x_0.h5").write_bytes(b"")
    week = time.time() - 8 * 86400
    for path in (old, os.path.join(old, "manifest.json"), str(acme_named)):
        os.utime(path, (week, week))

    listed = acme("clean", str(top), "--older-than", "7")  # nobody to ask
    user_error(listed, "clean", "--yes")
    assert str(acme_named) in listed.stdout and old in listed.stdout and new not in listed.stdout
    declined = acme("clean", str(top), "--older-than", "7", stdin="n\n")
    assert declined.returncode == 0 and "nothing removed" in declined.stdout
    assert os.path.isdir(old) and os.path.isdir(acme_named)
    accepted = acme("clean", str(top), "--older-than", "7", stdin="y\n")
    assert accepted.returncode == 0 and "removed 2 run directories" in accepted.stdout
    assert sorted(os.listdir(top)) == ["data", "new"]
    assert acme("clean", str(top), "--yes").returncode == 0
    assert sorted(os.listdir(top)) == ["data"]
    user_error(acme("clean", str(top), "--older-than", "-1", "--yes"), "clean", "-1")
    user_error(acme("clean", str(tmp_path / "nowhere")), "clean", "nowhere")


def test_the_demo_writes_its_report(tmp_path: Any) -> None:
    proc = acme("demo", "--output-dir", str(tmp_path / "demo"), "--channels", "3",
                "--trials", "2", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    path = os.path.join(tmp_path, "demo", "report.html")
    assert f"report:    {path}" in proc.stdout and os.path.exists(path)


def test_the_recorded_call_is_kept_by_a_resume(client: Any, tmp_path: Any) -> None:
    out = str(tmp_path / "run")
    with ParallelMap(square, [1, 2], output_dir=out, verbose=False) as pmap:
        pmap.compute()
    before = os.stat(os.path.join(out, CALL_NAME)).st_mtime_ns
    with ParallelMap(square, [1, 2], output_dir=out, resume=True, verbose=False) as pmap:
        pmap.compute()
    assert os.stat(os.path.join(out, CALL_NAME)).st_mtime_ns == before


@pytest.mark.parametrize("case", ["unpicklable", "too big"])
def test_a_call_that_cannot_be_stored_is_not_recorded(
        case: str, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    # compute() refuses an unpicklable call before any I/O (no worker could receive it):
    # the record says so and writes nothing if it ever meets one; a huge one is not stored
    import threading

    import dask

    lock = threading.Lock()  # neither cloudpickle nor dask ships a lock
    args = [lock, lock] if case == "unpicklable" else [np.zeros(1000), np.zeros(1000)]
    pmap = ParallelMap(square, args, verbose=False)
    with dask.config.set({"acme_xr.resume.max-recorded-size": "10kB"}):
        assert record_call(str(tmp_path), pmap) is False
    assert os.listdir(tmp_path) == [] and "resume=True" in caplog.text


def test_resume_refuses_a_changed_function_unless_forced(tmp_path: Any) -> None:
    # a function in the user's module travels by reference: its code is the module's now
    module = tmp_path / "mymod.py"
    module.write_text("def g(i):\n    if i == 2:\n        raise ValueError('two')\n"
                      "    return float(i)\n")
    (tmp_path / "main.py").write_text(textwrap.dedent("""
        import sys
        from acme_xr import ParallelMap
        from mymod import g
        if __name__ == "__main__":
            with ParallelMap(g, [0, 1, 2, 3], output_dir=sys.argv[1], n_workers=1,
                             verbose=False) as pmap:
                pmap.compute()
    """))
    out = str(tmp_path / "run")
    path = os.pathsep.join([str(tmp_path), *(p for p in sys.path if p)])
    proc = subprocess.run([sys.executable, str(tmp_path / "main.py"), out], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=path))
    assert proc.returncode == 1 and "ComputeError" in proc.stderr
    module.write_text("def g(i):\n    return float(i)\n")
    env = {"PYTHONPATH": path}
    user_error(acme("resume", out, "--workers", "1", env=env), "resume", "the function")
    forced = acme("resume", out, "--workers", "1", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    np.testing.assert_array_equal(open_results(out).result_0.values, [0.0, 1.0, 2.0, 3.0])


def test_status_of_a_run_that_is_going(tmp_path: Any) -> None:
    # the real script, still running: status reads its manifest (and the payloads written
    # since its last flush); resume and clean leave it alone
    markers, out = tmp_path / "markers", str(tmp_path / "run")
    markers.mkdir()
    env = dict(os.environ, ACME_XR_TEST_MARKERS=str(markers), ACME_XR_TEST_DELAY="1.5",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = os.path.join(os.path.dirname(__file__), "fault_script.py")
    proc = subprocess.Popen([sys.executable, script, "own", out], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(os.listdir(markers)) < 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        status = acme("status", "--json", out)
        record = json.loads(status.stdout)
        assert record["state"] == "running" and record["counts"]["pending"] > 0
        assert "skipped (running)" in acme("clean", out, "--yes").stdout
        user_error(acme("resume", out), "resume", out)
        assert proc.poll() is None  # all of that while the run was going
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads(acme("status", "--json", out).stdout)["counts"]["done"] == \
        fault_script.N_CALLS
