"""Client lifecycle: reuse a running client, or start and stop a local cluster."""

from __future__ import annotations

import os
from typing import Any

import pytest

from acme_xr import ParallelMap, cluster_cleanup, local_cluster_setup
from acme_xr.cluster import available_cores

from .processes import live_children


def n_children() -> int:
    return len(live_children())


def worker_pid(x: Any) -> int:
    return os.getpid()


def no_default_client() -> bool:
    from distributed import default_client

    try:
        default_client()
    except ValueError:
        return True
    return False


def test_starts_a_local_cluster_and_closes_it() -> None:
    assert no_default_client()
    before = n_children()
    pids = ParallelMap(worker_pid, list(range(6)), write_worker_results=False).compute()
    assert os.getpid() not in pids  # ran in worker processes
    assert 1 <= len(set(pids)) <= min(6, available_cores())
    assert no_default_client()
    assert n_children() <= before  # the cluster acme_xr started is gone


def test_never_more_workers_than_calls() -> None:
    pids = ParallelMap(worker_pid, [1], write_worker_results=False, n_workers="auto").compute()
    assert len(pids) == 1


def test_stop_client_false_leaves_the_started_cluster_running() -> None:
    from distributed import default_client

    ParallelMap(worker_pid, [1, 2], write_worker_results=False, stop_client=False).compute()
    client = default_client()
    try:
        assert client.submit(worker_pid, 0).result() > 0
    finally:
        cluster_cleanup(client)
    assert no_default_client()


def test_a_running_client_is_used_and_left_running(client: Any) -> None:
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    pids = ParallelMap(worker_pid, list(range(4)), write_worker_results=False).compute()
    worker_pids = set(client.run(os.getpid).values())
    assert set(pids) <= worker_pids
    assert set(client.scheduler_info(n_workers=-1)["workers"]) == workers
    assert client.status == "running"


def test_stop_client_true_closes_a_running_client() -> None:
    c = local_cluster_setup(n_workers=1, mem_per_worker="1GB")
    assert c.scheduler_info(n_workers=-1)["workers"]
    ParallelMap(worker_pid, [1, 2], write_worker_results=False, stop_client=True).compute()
    assert c.status == "closed"
    assert no_default_client()


def test_local_cluster_setup_and_cleanup() -> None:
    c = local_cluster_setup(n_workers=2, mem_per_worker="500MB")
    try:
        info = c.scheduler_info(n_workers=-1)["workers"]
        assert len(info) == 2
        assert all(w["memory_limit"] == 500_000_000 for w in info.values())
    finally:
        cluster_cleanup(c)
    assert c.status == "closed"
    cluster_cleanup()  # nothing left to close: no error


@pytest.mark.parametrize("kwargs, match", [
    ({"n_workers": 0}, "n_workers=0"),
    ({"mem_per_worker": "lots"}, "mem_per_worker"),
    ({"interactive": "yes"}, "interactive"),
])
def test_local_cluster_setup_rejects_bad_arguments(kwargs: Any, match: str) -> None:
    from acme_xr.errors import AcmeXrError

    before = n_children()
    with pytest.raises(AcmeXrError, match=match):
        local_cluster_setup(**kwargs)
    assert n_children() <= before
