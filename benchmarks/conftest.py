"""Shared fixtures of the benchmark suite and the summary table printed at the end.

Run with ``make bench`` (see docs/benchmarks.md). Markers: ``big`` (the 200,000-call
scaling rows, minutes each; not in the default run), ``mfdataset`` (the
``xr.open_mfdataset`` peer of issue 3, about 3 minutes here).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# workers and subprocesses import the workloads by name from here
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

import report  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-json", default=None,
                     help="write every measured figure and the goals to this JSON file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "big: 200,000-call scaling rows (minutes; run -m big)")
    config.addinivalue_line("markers", "mfdataset: the xr.open_mfdataset peer (about 3 min)")
    report.remember_tree()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = report.render()
    if not lines:
        return
    terminalreporter.section("acme_xr benchmark summary")
    for line in lines:
        terminalreporter.write_line(line)
    path = config.getoption("--bench-json")
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report.to_json(), fh, indent=1)
        terminalreporter.write_line(f"figures written to {path}")


# A round directory of more files than this is not deleted until the session ends (it is
# moved to the session's graveyard instead): this machine's ext4 has no journal, and then
# the kernel skips every inode freed in the last 60-360 s when it allocates one
# (fs/ext4/ialloc.c, recently_deleted), reading its inode table block each time. After a
# round deleted 200,000 files, every file the next round created cost 150-450 us of system
# CPU instead of ~40 us (perf: 60% of the time in recently_deleted), whichever contender
# came next: that, not the contenders, made W7's ratio vary from 1.3x to 5.7x
_DEFER_FILES = 1000


class _Graveyard:
    """Round directories kept (moved aside) until the session ends, then deleted."""

    path: str | None = None

    @classmethod
    def bury(cls, path: str, base: str) -> None:
        if cls.path is None:
            cls.path = os.path.join(os.path.dirname(base), "graveyard")
            os.makedirs(cls.path, exist_ok=True)
        try:
            os.rename(path, os.path.join(cls.path, uuid.uuid4().hex))
        except OSError:  # another file system: delete it now
            shutil.rmtree(path, ignore_errors=True)

    @classmethod
    def empty(cls) -> None:
        if cls.path is not None:
            shutil.rmtree(cls.path, ignore_errors=True)
            cls.path = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _Graveyard.empty()


def _many_files(path: str) -> bool:
    count = 0
    for _, _, files in os.walk(path):
        count += len(files)
        if count > _DEFER_FILES:
            return True
    return False


class RoundDirs:
    """A fresh, empty directory per benchmark round, removed again after the round (one of
    many files only when the session ends: see ``_DEFER_FILES``)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.made: list[str] = []

    def new(self) -> str:
        path = os.path.join(self.base, uuid.uuid4().hex[:8])
        os.makedirs(path)
        self.made.append(path)
        # start every writing round without the previous rounds' dirty pages still being
        # written back (that alone made a 512 MB write vary from 0.3 s to 2 s here)
        os.sync()
        return path

    def remove(self, path: str) -> None:
        if not os.path.isdir(path):
            return
        if _many_files(path):
            _Graveyard.bury(path, self.base)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def remove_all(self) -> None:
        for p in self.made:
            self.remove(p)


@pytest.fixture
def round_dirs(tmp_path: Any) -> Iterator[RoundDirs]:
    dirs = RoundDirs(str(tmp_path))
    yield dirs
    dirs.remove_all()


def start_local_client(n_workers: int = 2) -> Any:
    """The contenders' shared cluster: worker processes, one thread each, warmed up."""
    import workloads
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    client.run(workloads.warm_imports)
    client.gather(client.map(workloads.double, range(4 * n_workers), pure=False))
    return client


def stop_local_client(client: Any) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def plain_pool() -> Iterator[Any]:
    """Two warm plain processes (spawned, h5py imported), no dask: the floors."""
    import multiprocessing

    import workloads

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.starmap(workloads.double, [(1,), (2,)])
        yield pool


@pytest.fixture(scope="module")
def local_client() -> Iterator[Any]:
    """A 2-worker LocalCluster shared by the contenders of one module (the default client,
    so acme_xr and esi-acme attach to it); closed at the end of the module."""
    client = start_local_client()
    yield client
    stop_local_client(client)
