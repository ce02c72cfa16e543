"""Progress and logs: the bar or plain lines, verbose's detail, each call's output in the log."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
import warnings
from typing import Any

import dask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.capture import MAX_OUTPUT, CallOutput, installed
from acme_xr.progress import Progress

TIMESTAMPED = re.compile(r"^acme_xr \d\d:\d\d:\d\d (INFO|DEBUG|WARNING|ERROR): ")


def chatty(i: int, token: str) -> int:
    print(f"hello {token} {i}")
    print(f"oops {token} {i}", file=sys.stderr)
    warnings.warn(f"careful {token} {i}", UserWarning, stacklevel=1)
    return i


# -- capture ------------------------------------------------------------------------------
writes = st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                            st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)),
                  max_size=20)


@settings(max_examples=50, deadline=None)
@given(writes)
def test_capture_keeps_each_write_in_order_and_passes_it_on(pieces: list[tuple[str, str]]
                                                            ) -> None:
    streams = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]
    try:
        with installed(), CallOutput() as out:
            for name, text in pieces:
                print(text, end="", file=getattr(sys, name))
        print("after the call", end="")
    finally:
        sys.stdout, sys.stderr = old
    for name in streams:  # the terminal still sees everything
        assert streams[name].getvalue() == "".join(t for n, t in pieces if n == name) + (
            "after the call" if name == "stdout" else "")
    assert out.parts == pieces
    assert "".join(t for _, t in out.output or []) == "".join(t for _, t in pieces)
    assert sys.stdout is old[0] and sys.stderr is old[1]


def test_capture_keeps_each_threads_calls_apart() -> None:
    seen: dict[int, Any] = {}
    barrier = threading.Barrier(2)

    def call(k: int) -> None:
        with CallOutput() as out:
            for n in range(50):
                barrier.wait() if n == 0 else None
                print(f"{k}:{n}")
        seen[k] = out.parts

    with installed():
        threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in range(2):
        assert "".join(text for _, text in seen[k]) == "".join(f"{k}:{n}\n" for n in range(50))


def test_a_calls_output_kept_for_the_log_is_bounded(capsys: Any) -> None:
    with installed(), CallOutput() as out:
        for _ in range(30):
            print("x" * 9999)  # 10,000 characters a line, 300,000 in all
    kept = out.output
    assert kept is not None
    assert sum(len(t) for s, t in kept if s == "stdout") == 10 * 10_000 == MAX_OUTPUT
    assert kept[-1] == ("stderr", "[acme_xr: 200000 more characters of this call's output are "
                                  "not kept in the log]\n")
    assert len(capsys.readouterr().out) == 300_000  # the terminal saw all of it


def test_a_kept_warning_hook_still_shows_warnings_after_the_batch() -> None:
    with installed():
        kept = warnings.showwarning  # as logging.captureWarnings(True) keeps it
    with warnings.catch_warnings(record=True) as shown:  # Python's display, recorded
        kept("late", UserWarning, "f.py", 3)
    assert [(str(w.message), w.filename, w.lineno) for w in shown] == [("late", "f.py", 3)]


# -- each call's output in the run's log ----------------------------------------------------
@pytest.mark.parametrize("how", ["dask", "call_timeout", "debug"])
def test_a_calls_prints_and_warnings_reach_the_log_with_its_index(
        how: str, client: Any, tmp_path: Any, capsys: Any) -> None:
    token = f"{how}-{os.getpid()}"
    pmap = ParallelMap(chatty, list(range(4)), token, output_dir=str(tmp_path / "run"),
                       call_timeout=60 if how == "call_timeout" else None)
    pmap.compute(debug=how == "debug")
    log = (tmp_path / "run" / "chatty.log").read_text()
    for i in range(4):
        assert f"acme_xr.calls: call {i} stdout: hello {token} {i}\n" in log
        assert f"acme_xr.calls: call {i} stderr: oops {token} {i}\n" in log
        # the warning as Python shows it: where, what, and the source line
        lines = [x for x in log.splitlines() if f"call {i} warning:" in x]
        assert f"UserWarning: careful {token} {i}" in lines[0] and "warnings.warn(" in lines[1]
    if how == "debug":  # run here: still on the terminal, as printed
        out = capsys.readouterr()
        assert f"hello {token} 3" in out.out and f"oops {token} 3" in out.err


def test_a_failed_calls_output_is_logged_too(client: Any, tmp_path: Any) -> None:
    def loud_failure(i: int) -> None:
        print(f"about to fail {i}")
        raise ValueError(i)

    with pytest.raises(Exception, match="failed"):
        ParallelMap(loud_failure, [0, 1], output_dir=str(tmp_path / "run")).compute()
    log = (tmp_path / "run" / "loud_failure.log").read_text()
    assert "call 1 stdout: about to fail 1" in log


# -- verbose ------------------------------------------------------------------------------
@pytest.mark.parametrize("verbose", [None, True, False])
def test_verbose_true_logs_scheduling_and_each_batch_and_the_default_does_not(
        verbose: bool | None, client: Any, tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="acme_xr")
    with dask.config.set({"acme_xr.progress.delay": 0, "acme_xr.progress.interval": 0}):
        ParallelMap(chatty, list(range(6)), "v", output_dir=str(tmp_path / "run"),
                    batch_size=2, verbose=verbose).compute()
    messages = [r.getMessage() for r in caplog.records]
    batches = [m for m in messages if m.startswith("batch of calls ")]
    progress = [m for m in messages if " calls finished (" in m]
    if verbose:
        assert len(batches) == 3 and any(m.startswith("scheduling 6 calls") for m in messages)
        assert re.fullmatch(r"batch of calls \d-\d on .+: 2 done, 0 failed in [\d.]+ s",
                            batches[0])
    else:
        assert batches == [] and not any(m.startswith("scheduling") for m in messages)
    # plain progress lines (caplog is no terminal), none with verbose=False
    assert bool(progress) == (verbose is not False), messages
    if progress:
        assert progress[-1].startswith("6 of 6 calls finished (6 done, 0 failed)")


# -- the bar on a terminal, plain lines elsewhere -------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_shows_done_failed_and_stays() -> None:
    screen = _Terminal()
    with dask.config.set({"acme_xr.progress.delay": 0}):
        bar = Progress(10, verbose=None, stream=screen)
        bar.update(1)
        bar.update(6, failed=3)
        bar.close()
    last = screen.getvalue().split("\r")[-1]
    assert "10/10" in last and "3 failed" in last and last.endswith("\n")


def test_piped_output_has_plain_timestamped_lines_and_no_carriage_returns(tmp_path: Any
                                                                          ) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, time\n"
        "from acme_xr import ParallelMap\n"
        "def f(i):\n"
        "    time.sleep(0.1)\n"
        "    print('said by', i)\n"
        "    return i\n"
        "if __name__ == '__main__':\n"
        "    ParallelMap(f, list(range(30)), n_workers=2, batch_size=1,\n"
        "                output_dir=sys.argv[1]).compute()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               DASK_ACME_XR__PROGRESS__DELAY="0", DASK_ACME_XR__PROGRESS__INTERVAL="0.3s",
               DASK_ACME_XR__LOCAL__DASHBOARD_ADDRESS="")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    progress = [x for x in lines if " calls finished (" in x]
    assert len(progress) >= 2 and all(TIMESTAMPED.match(x) for x in progress), lines
    assert any("about" in x and "left" in x for x in progress)
    assert any(re.match(r".*30 calls done, 0 failed, 0 not run, in [\d.]+ s$", x)
               for x in lines)
    # a call's print: on the terminal once (as it happened), in the log file with its index
    assert proc.stdout.count("said by 7\n") == 1
    assert "call 7 stdout" not in proc.stderr + proc.stdout
    assert "acme_xr.calls: call 7 stdout: said by 7" in (tmp_path / "run" / "f.log").read_text()
