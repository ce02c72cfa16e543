"""Runs written in every earlier manifest format still open, and resume where they can.

tests/data/runs/manifest-v3 holds runs of the JSON manifest of acme_xr 532ab5c (formats 2 and
3); tests/data/runs/manifest-v2 one of format 2 without raw dtypes (see the make_runs.py
scripts beside them).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap, open_results
from acme_xr.manifest import DONE, FAILED, Manifest

DATA = os.path.join(os.path.dirname(__file__), "data", "runs")
V3 = os.path.join(DATA, "manifest-v3")


def _legacy() -> Any:
    spec = importlib.util.spec_from_file_location("make_runs_v3", os.path.join(V3, "make_runs.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.legacy


@pytest.mark.parametrize("kind", ["hdf5", "unchecked"])
def test_a_json_manifest_run_opens(tmp_path: Any, kind: str) -> None:
    run = str(tmp_path / "run")
    shutil.copytree(os.path.join(V3, kind), run)
    m = Manifest.read(run)
    assert m.status.tolist() == [DONE, DONE, FAILED, DONE]
    assert m.errors[2]["type"] == "ValueError" and "on purpose" in m.errors[2]["message"]
    assert [m.host[i] for i in range(4)] == ["vm/0"] * 4
    assert [m.variables["result_0"].shapes[i] for i in range(4)] == [(1,), (2,), None, (4,)]
    assert np.isfinite(m.start).all() and (m.attempts == 1).all()
    assert (m.size[[0, 1, 3]] > 0).all() and ((m.checksum[[0, 1, 3]] >= 0) == (kind == "hdf5")).all()
    ds = open_results(run).load()
    assert ds.status.values.tolist() == ["done", "done", "failed", "done"]
    for i in (0, 1, 3):
        want = np.arange(i + 1) * 10.0 + i
        np.testing.assert_array_equal(ds.result_0.values[i][: i + 1], want)
        assert ds.result_1.values[i].tolist() == [i, -i]
    assert ds.side.values.tolist() == ["left", "right"]
    assert ds.result_1.attrs["units"] == "mV"


def test_a_json_manifest_run_resumes(tmp_path: Any, client: Any) -> None:
    run = str(tmp_path / "run")
    shutil.copytree(os.path.join(V3, "hdf5"), run)
    os.remove(os.path.join(run, "legacy_3.h5"))  # lost: resume runs it again
    m = Manifest.read(run)
    m.forget(3)
    m.write(run)
    with pytest.raises(Exception, match="call 2 fails"):
        ParallelMap(_legacy(), [0, 1, 2, 3], output_dir=run, verbose=False, resume="force").compute()
    m = Manifest.read(run)
    assert m.status.tolist() == [DONE, DONE, FAILED, DONE]
    ds = open_results(run).load()
    np.testing.assert_array_equal(ds.result_0.values[3], [3.0, 13.0, 23.0, 33.0])
