"""W7: what `acme-xr status` and `acme-xr report` cost beside reading the run's manifest
(issue 14). A synthetic run of 20,000 calls on 32 workers (1% failed) is written once; each
round then reads it with ``Manifest.read`` (the floor: every figure comes from it), builds
the status record, renders the report without and with its figures (matplotlib), rounds
interleaved. No goal was set; the ratios say what the report adds to the read.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import report

from acme_xr.commands import status_record
from acme_xr.manifest import Manifest
from acme_xr.report import render_report

N = 20_000
GROUP = f"W7 report N={N}"
FLOOR = "Manifest.read"
CONTENDERS = [FLOOR, "status record", "report, tables", "report, figures"]
ROUNDS = 5

report.declare(GROUP, f"W7 a run's status and HTML report, {N:,} calls on 32 workers "
               "(from its manifest; figures drawn with matplotlib)", FLOOR)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: Any) -> str:
    out = str(tmp_path_factory.mktemp("w7"))
    m = Manifest.new(N, {"func": {"name": "f"}})
    rng = np.random.default_rng(0)
    m.duration[:] = rng.exponential(0.05, N)
    m.start[:] = 1.7e9 + np.cumsum(m.duration) / 32
    for i in range(N):
        if i % 100 == 7:
            m.record_failed(i, {"type": "ValueError", "message": f"bad input {i}",
                                "traceback": "Traceback ...\nValueError"}, f"node{i % 32}/w")
        else:
            m.record_done(i, "h5", None, f"node{i % 32}/w")
    m.state = "failed"
    m.write(out)
    return out


def _work(contender: str, run: str) -> Any:
    if contender == FLOOR:
        return Manifest.read(run)
    if contender == "status record":
        return status_record(run)
    return render_report(Manifest.read(run), run, figures=contender.endswith("figures"))


@pytest.mark.parametrize("rnd,contender", report.interleaved(CONTENDERS, lambda c: ROUNDS),
                         ids=lambda v: str(v).replace(" ", "_").replace(",", ""))
def test_w7_report(benchmark: Any, run_dir: str, rnd: int, contender: str) -> None:
    if contender == "report, figures":
        import matplotlib  # noqa: F401 - imported once before timing: a report's own cost

    result = report.measure(benchmark, GROUP, contender, lambda: _work(contender, run_dir),
                            rounds=1, n_calls=N)
    assert result is not None and os.path.exists(os.path.join(run_dir, "manifest.json"))
