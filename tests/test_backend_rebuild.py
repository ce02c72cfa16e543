"""A custom backend's run whose manifest.json is lost is found through the backend's own
``rebuild`` (docs/developer.md): it opens, resumes and exports like a built-in one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from acme_xr import ParallelMap, open_results
from acme_xr.cli import main
from acme_xr.errors import ResultsLayoutError, ResumeMismatchError
from acme_xr.scan import locate_run

from . import example_backend


def square(x: int) -> np.ndarray:
    return np.full(3, x * x, np.int64)


def _lost_manifest_run(out: Path) -> xr.Dataset:
    ParallelMap(square, [1, 2, 3], output_dir=str(out), storage=example_backend.SubdirPayloads.name,
                verbose=False).compute()
    with open_results(str(out)) as ds:
        want = ds.load()
    os.remove(out / "manifest.json")
    return want


def test_lost_manifest_of_a_custom_backend_is_rebuilt_on_open(client: Any,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    want = _lost_manifest_run(out)
    assert locate_run(str(out)) == str(out)
    with open_results(str(out)) as ds:
        np.testing.assert_array_equal(ds.result_0.values, want.result_0.values)
    assert os.path.exists(out / "manifest.json")  # rebuilt and saved


def test_lost_manifest_of_a_custom_backend_exports(client: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    want = _lost_manifest_run(out)
    refs = tmp_path / "run.json"
    assert main(["export", str(out), str(refs)]) == 0
    assert capsys.readouterr().out.strip() == str(refs)
    with xr.open_dataset(str(refs), engine="kerchunk") as ds:
        np.testing.assert_array_equal(ds.result_0.values, want.result_0.values)


def test_lost_manifest_of_a_custom_backend_resumes(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    want = _lost_manifest_run(out)
    os.remove(out / "calls" / "square_1.h5")
    # the function and inputs fingerprints are lost with the manifest: as for a damaged one
    # (docs/layout.md), resume=True says so and resume="force" continues
    with pytest.raises(ResumeMismatchError, match='resume="force"'):
        ParallelMap(square, [1, 2, 3], output_dir=str(out), storage="subdir",
                    resume=True, verbose=False).compute()
    ParallelMap(square, [1, 2, 3], output_dir=str(out), storage="subdir", resume="force",
                verbose=False).compute()
    with open_results(str(out)) as ds:
        np.testing.assert_array_equal(ds.result_0.values, want.result_0.values)


def test_a_directory_no_backend_recognises_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "notes.txt").write_text("mine")
    with pytest.raises(ResultsLayoutError, match="holds no acme_xr or ACME run"):
        locate_run(str(tmp_path))
