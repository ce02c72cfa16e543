"""W4: time to the first result from a cold start (cluster start included) for one call.

Each round is a fresh ``python cold_start.py MODE`` process (rounds of the two contenders
alternate), so imports are part of the cold start; the rows "imports excluded" subtract the
import time the child measured. The time column of "W4 process wall" is the parent's view
(interpreter start-up and exit included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import report
from contenders import ACME_XR

ROUNDS = 8
BARE = "bare dask LocalCluster"
INCL, EXCL, IMPORTS, WALL = ("W4 cold start, imports included",
                             "W4 cold start, imports excluded", "W4 imports", "W4 process wall")

report.declare(INCL, "W4 cold start to first result, one call, imports included "
               "(measured inside a fresh process)", BARE)
report.declare(EXCL, "W4 cold start to first result, one call, imports excluded", BARE)
report.declare(IMPORTS, "W4 the imports alone (bare: distributed; acme_xr: ParallelMap + "
               "distributed)", BARE)
report.declare(WALL, "W4 whole subprocess as the parent sees it (python start-up, "
               "imports, run, exit)", BARE)


@pytest.mark.parametrize("contender", [
    pytest.param(c, id=f"r{r}-{c.split()[0]}")
    for r, c in report.interleaved([BARE, ACME_XR], lambda c: ROUNDS)])
def test_w4_cold_start(benchmark: Any, tmp_path: Any, contender: str) -> None:
    mode = "acme_xr" if contender == ACME_XR else "dask"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cold_start.py")
    children: list[dict[str, float]] = []

    def target() -> None:
        proc = subprocess.run([sys.executable, script, mode], capture_output=True, text=True,
                              check=True, cwd=str(tmp_path))
        children.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    wall = report.measure(benchmark, WALL, contender, target, rounds=1)
    for group, key in ((INCL, "total_s"), (EXCL, "run_s"), (IMPORTS, "import_s")):
        report.record(group, contender, [c[key] for c in children], load=wall.load,
                      others=wall.others)
