"""Disk faults: an output directory that cannot be written, a disk that fills up mid-run.

The full disk is a small tmpfs mounted by the test (root only; skipped elsewhere with the
reason), so that ENOSPC comes from a real file system, to the real worker processes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from acme_xr import ParallelMap
from acme_xr.collect import RESERVE_NAME, ManifestWriter
from acme_xr.errors import StorageError
from acme_xr.manifest import DONE, Manifest
from acme_xr.storage.atomic import TMP_SUFFIX
from acme_xr.storage.hdf5 import read_payload

from .conftest import listing


@contextlib.contextmanager
def mounted_tmpfs(path: Any, options: str) -> Iterator[Any]:
    """A tmpfs mounted at ``path`` for the duration (skips the test where it cannot be)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[Any]:
    """A 2 MiB file system."""
    with mounted_tmpfs(tmp_path / "disk", "size=2m") as disk:
        yield disk


@pytest.fixture
def read_only_disk(tmp_path: Any) -> Iterator[Any]:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        yield disk


def chunk(i: int) -> np.ndarray:
    return np.full(16_384, float(i))  # 128 KiB per payload


@pytest.mark.parametrize("sub", ["", "run", "run/deeper"])
def test_output_dir_on_a_read_only_disk(read_only_disk: Any, sub: str) -> None:
    out = read_only_disk / sub if sub else read_only_disk
    with pytest.raises(StorageError, match=str(out if sub == "" else read_only_disk)):
        ParallelMap(chunk, [1, 2], output_dir=str(out)).compute()
    assert listing(read_only_disk) == []


def test_disk_full_mid_run_stops_with_the_path_and_keeps_what_finished(
        client: Any, small_disk: Any) -> None:
    out = small_disk / "run"
    with pytest.raises(StorageError) as info:
        ParallelMap(chunk, list(range(40)), output_dir=str(out)).compute()  # 5 MiB > 2 MiB
    err = info.value
    assert err.filename.startswith(str(out / "chunk_"))  # the payload that did not fit
    assert f"cannot write {err.filename}: [Errno {errno.ENOSPC}]" in str(err)
    assert "resume=True" in str(err)
    # the manifest is valid and says exactly which calls finished; those files are whole
    m = Manifest.read(str(out))
    assert m.state == "interrupted" and m.header["interruption"]["type"].endswith("StorageError")
    done = {int(i) for i in m.indices(DONE)}
    on_disk = {int(f[6:-3]) for f in os.listdir(out) if f.startswith("chunk_")}
    assert 0 < len(done) < 40 and done == on_disk
    for i in done:
        np.testing.assert_array_equal(read_payload(out / f"chunk_{i}.h5")["result_0"], chunk(i))
    assert not [f for f in listing(out) if f.endswith(TMP_SUFFIX) or RESERVE_NAME in f]

    # more room, then the run is finished where it stopped
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    files = ParallelMap(chunk, list(range(40)), output_dir=str(out), resume=True).compute()
    for i, path in enumerate(files):
        np.testing.assert_array_equal(read_payload(path)["result_0"], chunk(i))
    with open(out / "manifest.json") as fh:
        assert json.load(fh)["state"] == "complete"


def fill(directory: Any) -> None:
    """Fill the file system of ``directory`` to the last byte."""
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def errors_for(n: int) -> Manifest:
    m = Manifest.new(n, {"func": {"name": "f"}})
    for i in range(n):
        m.record_failed(i, {"type": "ValueError", "message": "x" * 200, "traceback": "t" * 2000,
                            "attempts": 1}, "host")
    return m


def test_manifest_is_written_from_reserve_on_a_full_disk(small_disk: Any) -> None:
    m = Manifest.new(100, {"func": {"name": "f"}})
    writer = ManifestWriter(m, str(small_disk))
    writer.write()  # keeps twice its size in reserve
    fill(small_disk)
    for i in range(20):  # the manifest grows while the disk is full
        m.record_failed(i, {"type": "ValueError", "message": "x" * 200, "traceback": "t" * 2000,
                            "attempts": 1}, "host")
    writer.write()
    assert len(Manifest.read(str(small_disk)).errors) == 20
    assert not (small_disk / RESERVE_NAME).exists()
    writer.close()


def test_a_manifest_that_cannot_be_written_leaves_the_old_one(small_disk: Any) -> None:
    ManifestWriter(Manifest.new(5, {"func": {"name": "f"}}), str(small_disk)).manifest.write(
        str(small_disk))
    fill(small_disk)
    with pytest.raises(StorageError, match=str(small_disk / "manifest.json")):
        errors_for(400).write(str(small_disk))
    assert Manifest.read(str(small_disk)).n_inputs == 5  # the old manifest, whole
    # no temporary
    assert sorted(os.listdir(small_disk)) == ["filler", "manifest.calls", "manifest.json"]


def test_a_log_file_on_a_full_disk_complains_once(small_disk: Any, capfd: Any) -> None:
    import logging

    from acme_xr.runlog import run_logging

    path = str(small_disk / "f.log")
    with run_logging(path, verbose=False):
        fill(small_disk)
        for k in range(50):
            logging.getLogger("acme_xr.map").info("message %d %s", k, "x" * 5000)
    err = capfd.readouterr().err
    assert err.count(f"cannot write the log file {path}") == 1
    assert "Traceback" not in err and "Logging error" not in err
