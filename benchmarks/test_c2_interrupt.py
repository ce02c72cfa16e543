"""C2 (issue 14): how soon a Ctrl-C ends a run, and what capturing each call's output costs.

* Ctrl-C: ``tests/fault_script.py`` (24 calls of 0.3 s, 2 local workers acme_xr starts) in
  its own process group gets SIGINT to the whole group, as a terminal sends it, once 6
  calls have started ("during the run") or 0.5 s after it printed STARTING ("during the
  cluster's start"). The time is from the signal to the process's exit. The peer: the same
  calls with bare dask (a LocalCluster and ``client.map``) interrupted the same way.
  Goal: gone within 2 s.
* Capture (:mod:`acme_xr.capture`): per call, a bare call of a function that returns at
  once, the same call inside ``CallOutput`` (the tee installed), and ``Runner.run``'s
  whole per-call path in memory mode (capture included), by timeit in this process.
  Goal: the capture alone <= 1 us per call, 1% of the floor of writing one payload.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import timeit
from typing import Any

import pytest
import report

from acme_xr.capture import CallOutput, installed
from acme_xr.inputs import distribute
from acme_xr.worker import Runner, WriteSpec, split_values_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "fault_script.py")
ROUNDS = 4
RUN, START, BARE = ("acme_xr, Ctrl-C during the run", "acme_xr, Ctrl-C during the cluster's "
                    "start", "bare dask LocalCluster + client.map, Ctrl-C during the run")
GROUP = "C2 Ctrl-C to exit"
CAPTURE = "C2 capture per call"
BARE_CALL, CAPTURED, RUNNER = ("bare call", "call inside CallOutput (tee installed)",
                               "Runner.run per call, memory mode (capture included)")

report.declare(GROUP, "C2 seconds from a Ctrl-C (SIGINT to the process group) to the "
               "process's exit", BARE)
report.declare(CAPTURE, "C2 per-call cost of capturing prints and warnings (timeit, in "
               "this process)", BARE_CALL)

BARE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from distributed import Client, LocalCluster
    sys.path.insert(0, sys.argv[1])
    from fault_script import slow
    if __name__ == "__main__":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
        print("STARTING", flush=True)
        futures = client.map(slow, range(24), scale=0.5)
        client.gather(futures)
""")


def _interrupt_once(tmp: str, contender: str) -> float:
    markers = os.path.join(tmp, "markers")
    os.makedirs(markers)
    env = dict(os.environ, ACME_XR_TEST_MARKERS=markers, ACME_XR_TEST_DELAY="0.3",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    if contender == BARE:
        script = os.path.join(tmp, "bare.py")
        with open(script, "w") as fh:
            fh.write(BARE_SCRIPT)
        argv = [sys.executable, script, os.path.join(ROOT, "tests")]
    else:
        argv = [sys.executable, SCRIPT, "own", os.path.join(tmp, "run")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True, start_new_session=True, cwd=tmp)
    try:
        assert proc.stdout is not None
        while "STARTING" not in proc.stdout.readline():
            pass
        if contender == START:
            time.sleep(0.5)
        else:
            deadline = time.monotonic() + 120
            while len(os.listdir(markers)) < 6 and time.monotonic() < deadline:
                time.sleep(0.005)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        return time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split(',')[0].split()[0]}-{c.split()[-1]}")
    for r, c in report.interleaved([BARE, RUN, START], lambda c: ROUNDS)])
def test_c2_ctrl_c_to_exit(benchmark: Any, tmp_path: Any, contender: str) -> None:
    seconds: list[float] = []
    benchmark.group = GROUP
    benchmark.pedantic(lambda: seconds.append(_interrupt_once(str(tmp_path), contender)),
                       rounds=1, iterations=1, warmup_rounds=0)
    report.record(GROUP, contender, seconds)


def _nothing(i: int) -> int:
    return i


def test_c2_capture_per_call(benchmark: Any) -> None:
    n = 20000

    def bare() -> None:
        for i in range(n):
            _nothing(i)

    def captured() -> None:
        with installed():
            for i in range(n):
                with CallOutput():
                    _nothing(i)

    plan = distribute(_nothing, (list(range(n)),), {})
    runner = Runner.from_plan(plan, WriteSpec("memory"))
    split = split_values_for(plan, range(n))

    def run() -> None:
        runner.run(range(n), split)

    benchmark.group = CAPTURE
    benchmark.pedantic(run, rounds=1, iterations=1)
    best = {}
    for name, target in ((BARE_CALL, bare), (CAPTURED, captured), (RUNNER, run)):
        best[name] = min(timeit.repeat(target, number=1, repeat=7)) / n
        report.record(CAPTURE, name, [best[name]])
    report.record(CAPTURE, "the capture alone (difference)", [best[CAPTURED] - best[BARE_CALL]])
