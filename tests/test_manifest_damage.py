"""The manifest on disk is always whole and durable; a damaged one is rebuilt, not fatal."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap, open_results
from acme_xr.errors import ManifestCorruptError, ResumeMismatchError
from acme_xr.manifest import Manifest

from . import fault_script

SCRIPT = os.path.join(os.path.dirname(__file__), "fault_script.py")


def spectrum(i: int, gain: float) -> tuple[np.ndarray, np.int64]:
    return np.arange(5.0) * gain + i, np.int64(i) * 2


def complete_run(out: Any, n: int = 6) -> None:
    ParallelMap(spectrum, list(range(n)), 1.5, output_dir=str(out), verbose=False).compute()


def damage(path: Any, kind: str) -> None:
    if kind == "calls log garbage":  # the per-call records, beside the header
        (path.parent / "manifest.calls").write_bytes(b"\x89\xff\x00acme\x13" * 40)
        return
    raw = path.read_bytes()
    path.write_bytes({
        "truncated": raw[: len(raw) // 2],
        "garbage": b"\x89\xff\x00acme\x13" * 40,
        "empty file": b"",
        "empty JSON": b"{}",
        "no n_inputs": json.dumps({**json.loads(raw), "n_inputs": None}).encode(),
    }[kind])


KINDS = ["truncated", "garbage", "empty file", "empty JSON", "no n_inputs", "calls log garbage"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_manifest_is_rebuilt_by_scanning_with_a_warning(
        client: Any, tmp_path: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    complete_run(out)
    want = open_results(out)
    damage(out / "manifest.json", kind)
    with pytest.raises(ManifestCorruptError):
        Manifest.read(str(out))
    with caplog.at_level(logging.WARNING, logger="acme_xr"):
        ds = open_results(out)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "manifest.json" in warning.getMessage()
    assert "rebuilding it by scanning" in warning.getMessage()
    assert (ds.status.values == "done").all()
    np.testing.assert_array_equal(ds.result_0.values, want.result_0.values)
    np.testing.assert_array_equal(ds.result_1.values, want.result_1.values)
    # the rebuilt manifest was saved: the next open reads it, without a warning
    assert Manifest.read(str(out)).header["rebuilt"] is True


@pytest.mark.parametrize("options", [{"storage": "zarr"}, {"single_file": True}],
                         ids=["zarr", "single_file"])
def test_a_damaged_manifest_of_every_layout_is_rebuilt(client: Any, tmp_path: Any,
                                                       options: dict[str, Any]) -> None:
    pytest.importorskip("zarr", reason="the zarr layout needs the zarr package")
    out = tmp_path / "run"
    ParallelMap(spectrum, list(range(6)), 1.5, output_dir=str(out), verbose=False,
                **options).compute()
    want = open_results(out)
    damage(out / "manifest.json", "truncated")
    ds = open_results(out)
    assert (ds.status.values == "done").all()
    np.testing.assert_array_equal(ds.result_0.values, want.result_0.values)
    np.testing.assert_array_equal(ds.result_1.values, want.result_1.values)


@pytest.mark.parametrize("kind", ["truncated", "empty file"])
def test_resuming_a_run_whose_manifest_is_damaged_needs_force(client: Any, tmp_path: Any,
                                                              kind: str) -> None:
    out = tmp_path / "run"
    complete_run(out)
    damage(out / "manifest.json", kind)
    before = sorted(os.listdir(out))
    with pytest.raises(ResumeMismatchError, match='its manifest was damaged.*resume="force"'):
        ParallelMap(spectrum, list(range(6)), 1.5, output_dir=str(out), resume=True,
                    verbose=False).compute()
    assert sorted(os.listdir(out)) == before  # refused before writing anything


def test_resume_force_continues_a_run_whose_manifest_is_damaged(client: Any,
                                                                tmp_path: Any) -> None:
    out = tmp_path / "run"
    complete_run(out)
    os.unlink(out / "spectrum_4.h5")
    kept = {p: os.stat(out / p).st_mtime_ns for p in os.listdir(out)
            if p.startswith("spectrum_")}
    damage(out / "manifest.json", "garbage")
    pmap = ParallelMap(spectrum, list(range(6)), 1.5, output_dir=str(out), resume=True,
                       verbose=False)
    # resume="force" is validated by options.py (issue 9, point 3); set it past that here
    pmap.options = dataclasses.replace(pmap.options, resume="force")
    pmap.compute()
    assert {p: os.stat(out / p).st_mtime_ns for p in kept} == kept  # not run again
    ds = open_results(out)
    assert (ds.status.values == "done").all()
    np.testing.assert_array_equal(ds.result_0.values,
                                  [spectrum(i, 1.5)[0] for i in range(6)])


def test_the_manifest_reaches_the_disk_before_it_replaces_the_old_one(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[bool, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real_fsync(fd)

    m = Manifest.new(3, {"func": {"name": "f"}})
    m.write(str(tmp_path))
    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = m.write(str(tmp_path))
    # each new file's data, then the directory entry that renamed it into place: the
    # calls log first, then the header that describes it
    log = os.stat(tmp_path / "manifest.calls").st_ino
    here = os.stat(tmp_path).st_ino
    assert synced == [(False, log), (True, here), (False, os.stat(path).st_ino), (True, here)]


@pytest.mark.slow
@pytest.mark.parametrize("after_calls", [3, 9])
def test_a_client_killed_during_frequent_manifest_flushes_leaves_a_whole_manifest(
        tmp_path: Any, after_calls: int) -> None:
    out, markers = str(tmp_path / "run"), str(tmp_path / "m")
    os.makedirs(markers)
    env = dict(os.environ, ACME_XR_TEST_MARKERS=markers, ACME_XR_TEST_DELAY="0.05",
               DASK_ACME_XR__MANIFEST__FLUSH_INTERVAL="0s",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, SCRIPT, "own", out], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(os.listdir(markers)) < after_calls:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the script never got going"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    manifest = Manifest.read(out)  # whole: it parses
    assert manifest.n_inputs == fault_script.N_CALLS
    assert manifest.state == "running"
    done = {int(i) for i in manifest.indices(1)}
    assert done <= {int(p[5:-3]) for p in os.listdir(out)
                    if p.startswith("slow_") and p.endswith(".h5")}
