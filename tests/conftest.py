"""Shared fixtures: a real dask LocalCluster, and settings that keep test output quiet."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dask
import distributed  # noqa: F401 - load distributed's config before tests change it
import pytest


@pytest.fixture(autouse=True)
def _quiet_and_isolated(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own directory, with no progress bars and no dashboard."""
    monkeypatch.chdir(tmp_path)
    with dask.config.set({"acme_xr.progress.delay": "1h",
                          "acme_xr.local.dashboard-address": None,
                          "acme_xr.jobqueue.dashboard-address": None,
                          "distributed.scheduler.dashboard.address": None}):
        yield


@pytest.fixture(scope="session")
def _session_client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.dashboard.address": None}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def client(_session_client: Any) -> Iterator[Any]:
    """A running 2-worker LocalCluster client, current for this test only."""
    with _session_client.as_current():
        yield _session_client


def listing(path: str | os.PathLike[str]) -> list[str]:
    """Every entry below ``path``, relative, sorted."""
    out = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(out)
