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


# -- cluster=, adaptive workers, the dashboard link (issue 13) -----------------------------
def test_cluster_local_starts_a_local_cluster_even_beside_a_running_client(client: Any) -> None:
    pids = ParallelMap(worker_pid, [1, 2], write_worker_results=False, cluster="local",
                       n_workers=1).compute()
    assert not set(pids) & set(client.run(os.getpid).values())  # not the running client's
    assert client.status == "running"


def test_a_given_client_is_used_and_left_running(_session_client: Any) -> None:
    assert no_default_client()
    pids = ParallelMap(worker_pid, list(range(4)), write_worker_results=False,
                       cluster=_session_client).compute()
    assert set(pids) <= set(_session_client.run(os.getpid).values())
    assert _session_client.status == "running"


def test_a_given_cluster_is_used_scaled_to_n_workers_and_left_running() -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        pids = ParallelMap(worker_pid, list(range(4)), write_worker_results=False,
                           cluster=cluster, n_workers=2).compute()
        assert 1 <= len(set(pids)) <= 2
        assert len(cluster.workers) == 2 and cluster.status.name == "running"
    assert no_default_client()


def test_stop_client_true_closes_a_given_cluster() -> None:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    ParallelMap(worker_pid, [1], write_worker_results=False, cluster=cluster,
                stop_client=True).compute()
    assert cluster.status.name == "closed"


def test_adaptive_local_workers_finish_every_call(tmp_path: Any) -> None:
    before = n_children()
    files = ParallelMap(worker_pid, list(range(12)), n_workers=(1, 2), output_dir=str(tmp_path / "run"),
                        verbose=False).compute()
    assert len(files) == 12 and all(os.path.exists(f) for f in files)
    assert n_children() <= before


def test_cluster_setup_adaptive_stays_within_its_bounds() -> None:
    from acme_xr import cluster_setup

    client = cluster_setup("local", n_workers=(1, 2))
    try:
        futures = client.map(worker_pid, range(20), pure=False)
        pids = set(client.gather(futures))
        assert 1 <= len(pids) <= 2
        assert len(client.scheduler_info(n_workers=-1)["workers"]) <= 2
    finally:
        cluster_cleanup(client)


def test_the_dashboard_link_is_printed_and_logged(tmp_path: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import dask

    # tests/conftest.py turns the dashboard off; port 0 takes any free port
    with dask.config.set({"acme_xr.local.dashboard-address": ":0"}):
        ParallelMap(worker_pid, [1], n_workers=1, output_dir=str(tmp_path / "run")).compute()
    printed = capsys.readouterr().out
    link = printed.split("acme_xr: dask dashboard at ", 1)[1].split()[0]
    assert link.startswith("http://") and link.endswith("/status")
    assert f"dask dashboard: {link}" in (tmp_path / "run" / "worker_pid.log").read_text()


def test_no_dashboard_link_when_the_run_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    import dask

    with dask.config.set({"acme_xr.local.dashboard-address": ":0"}):
        ParallelMap(worker_pid, [1], write_worker_results=False, n_workers=1,
                    verbose=False).compute()
    assert "dashboard" not in capsys.readouterr().out
