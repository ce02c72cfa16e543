"""SLURM workers, against the real one-node cluster of ``ci/slurm.sh`` (no mocks).

Without SLURM these tests skip with the reason; in CI ``.ci/run`` exports
``ACME_XR_REQUIRE_SLURM=1`` and a missing SLURM fails them instead. Every test that may
submit jobs cancels what it left behind, also when it fails.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import dask
import h5py
import numpy as np
import pytest

from acme_xr import ParallelMap, cluster_cleanup
from acme_xr.errors import ClusterError, InputError
from acme_xr.slurm import slurm_cluster_setup, slurm_partitions

from .conftest import listing

JOB_NAME = "acme_xr-worker"


def squeue(*args: str, workdir: str | None = None) -> list[list[str]]:
    """acme_xr worker jobs submitted from ``workdir`` (default: the current directory, a
    test's own tmp_path), so that a test sees neither other tests' jobs nor anyone else's."""
    workdir = os.getcwd() if workdir is None else workdir
    out = subprocess.run(["squeue", "-h", "-n", JOB_NAME, *args, "-o", "%i|%P|%T|%Z"],
                         capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    return [row[:3] for row in rows if row[3] == workdir]


def all_jobs() -> dict[str, tuple[str, str]]:
    """Job id -> (partition, state) of every job the controller still knows, finished ones
    included (MinJobAge=300 in ci/slurm.sh)."""
    return {j: (p, s) for j, p, s in squeue("-t", "all")}


def queued(workdir: str | None = None) -> set[str]:
    """Ids of jobs that squeue lists by default (pending, running, ending)."""
    return {row[0] for row in squeue(workdir=workdir)}


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                          text=True, check=True).stdout


@functools.cache
def slurm_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "no SLURM client commands (sbatch, squeue) on the PATH"
    try:
        partitions = slurm_partitions()
    except ClusterError as exc:
        return f"SLURM does not answer ({exc})"
    missing = sorted({"debug", "small"} - set(partitions))
    if missing:
        return f"this SLURM cluster lacks the partition(s) {missing} of ci/slurm.sh"
    return None


@pytest.fixture(autouse=True)
def _slurm_or_skip(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip (or, with ACME_XR_REQUIRE_SLURM=1, fail) SLURM tests without SLURM; after each,
    close a SLURM cluster left as the default client and cancel jobs it submitted."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    problem = slurm_problem()
    if problem is not None:
        reason = f"{problem}; start the test cluster with `ci/slurm.sh start` (as root)"
        if os.environ.get("ACME_XR_REQUIRE_SLURM") == "1":
            pytest.fail(f"ACME_XR_REQUIRE_SLURM=1, but {reason}", pytrace=False)
        pytest.skip(reason)
    workdir = os.getcwd()
    before = queued()
    try:
        yield
    finally:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            client = None
        if client is not None and type(client.cluster).__name__ == "_AcmeSLURMCluster":
            cluster_cleanup(client)
        left = sorted(queued(workdir) - before)
        if left:
            subprocess.run(["scancel", *left], check=False)


def in_slurm_job(x: int) -> tuple[Any, ...]:
    from distributed import get_worker

    return (
        np.full(3, 2.0 * x),
        int(os.environ["SLURM_JOB_ID"]),
        os.environ["SLURM_JOB_PARTITION"],
        float(get_worker().memory_manager.memory_limit),
    )


def job_id(x: int) -> int:
    return int(os.environ["SLURM_JOB_ID"])


def negative(x: int) -> int:
    return -x


@pytest.mark.slurm
@pytest.mark.parametrize("partition", ["debug", "small"])
def test_calls_run_in_worker_jobs_of_the_partition(tmp_path: Any, partition: str) -> None:
    before = set(all_jobs())
    log_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "acme_xr-slurm-*")))
    out = tmp_path / "run"
    files = ParallelMap(in_slurm_job, [0, 1, 2], partition=partition, mem_per_worker="300MiB",
                        output_dir=str(out), verbose=False).compute()

    jobs = {j: v for j, v in all_jobs().items() if j not in before}
    assert len(jobs) == 3  # n_workers="auto": one worker job per call
    assert {p for p, _ in jobs.values()} == {partition}
    assert not queued() & set(jobs)  # the run closed its cluster: no job left in squeue
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "acme_xr-slurm-*"))) <= log_dirs
    assert [os.path.basename(f) for f in files] == [f"in_slurm_job_{i}.h5" for i in range(3)]
    for i, path in enumerate(files):
        with h5py.File(path, "r") as h5:
            np.testing.assert_array_equal(h5["result_0"][()], np.full(3, 2.0 * i))
            assert str(h5["result_1"][()]) in jobs
            assert h5["result_2"][()] == partition.encode()
            assert h5["result_3"][()] == 300 * 2**20  # the dask worker's memory limit
    for j in jobs:  # ... and the job's memory in SLURM
        assert "mem=300M" in scontrol_job(j)


@pytest.mark.slurm
def test_an_unknown_partition_fails_before_any_file_or_job(tmp_path: Any) -> None:
    before = all_jobs()
    with pytest.raises(InputError, match=r"partition='nope'.*'debug', 'small'"):
        ParallelMap(job_id, [1, 2], partition="nope").compute()
    assert listing(tmp_path) == []  # the default output directory would be here
    assert all_jobs() == before


def test_without_sbatch_partition_is_a_cluster_error_before_any_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-dir"))
    with pytest.raises(ClusterError, match=r"no `sbatch`.*partition='auto'"):
        ParallelMap(job_id, [1, 2], partition="debug").compute()
    assert listing(tmp_path) == []


def test_a_running_client_is_used_whatever_the_partition(client: Any) -> None:
    # as in ACME: a running client wins, so its partition is neither checked nor used
    out = ParallelMap(negative, [1, 2], partition="nope", write_worker_results=False,
                      verbose=False).compute()
    assert out == [-1, -2]


@pytest.mark.slurm
def test_n_workers_auto_is_capped(tmp_path: Any) -> None:
    before = set(all_jobs())
    with dask.config.set({"acme_xr.jobqueue.max-auto-workers": 1}):
        ids = ParallelMap(job_id, [1, 2, 3], partition="debug", mem_per_worker="200MiB",
                          write_worker_results=False, verbose=False).compute()
    new = set(all_jobs()) - before
    assert len(new) == 1 and {str(i) for i in ids} == new


@pytest.mark.slurm
def test_stop_client_false_keeps_the_jobs_for_the_next_run() -> None:
    from distributed import default_client

    before = set(all_jobs())
    first = ParallelMap(job_id, [1, 2], partition="debug", n_workers=1, stop_client=False,
                        mem_per_worker="200MiB", write_worker_results=False,
                        verbose=False).compute()
    running = queued() - before
    assert running == {str(first[0])}
    # the next run uses the running cluster (its partition is not looked at), submits nothing
    second = ParallelMap(job_id, [3], partition="small", write_worker_results=False,
                         verbose=False).compute()
    assert second == first[:1] and set(all_jobs()) - before == running
    cluster_cleanup(default_client())
    assert not queued() & running


@pytest.mark.slurm
def test_no_worker_within_setup_timeout_is_a_cluster_error_and_cancels_the_jobs() -> None:
    before = set(all_jobs())
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"within 2 s \(jobs: \d+ PENDING \(BeginTime\)") as err:
        slurm_cluster_setup("debug", n_workers=1, mem_per_worker="200MiB", timeout=2,
                            job_extra_directives=["--begin=now+3600"])
    assert time.monotonic() - t0 < 20
    logs = str(err.value).rsplit(" ", 1)[-1]
    assert os.path.isdir(logs)  # kept for the user, whom the message sends there
    shutil.rmtree(logs)
    new = set(all_jobs()) - before
    assert len(new) == 1 and not queued() & new


@pytest.mark.slurm
def test_a_job_sbatch_refuses_is_a_cluster_error_at_once(tmp_path: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"sbatch refused .*'debug'"):
        ParallelMap(job_id, [1], partition="debug", mem_per_worker="100TB", setup_timeout=60,
                    write_worker_results=False, verbose=False).compute()
    assert time.monotonic() - t0 < 20


@pytest.mark.slurm
def test_a_cancelled_worker_job_is_replaced() -> None:
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0.5s"}):
        client = slurm_cluster_setup("debug", n_workers=1, mem_per_worker="200MiB")
        try:
            (first,) = client.cluster.job_ids()
            subprocess.run(["scancel", first], check=True)
            deadline = time.monotonic() + 60
            now: set[str] = {first}
            while now <= {first}:
                assert time.monotonic() < deadline, "no new worker job after the scancel"
                time.sleep(0.2)
                now = set(client.run(lambda: os.environ["SLURM_JOB_ID"]).values())
        finally:
            cluster_cleanup(client)
    assert not queued() & {first, *now}


def test_ctrl_c_stays_a_keyboard_interrupt() -> None:
    # dask-jobqueue 0.9 replaces the SIGINT handler with sys.exit() when it is imported
    code = (
        "import signal, acme_xr.jobqueue as s\n"
        "before = signal.getsignal(signal.SIGINT)\n"
        "s._classes()\n"
        "assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- issue 13: the generic path, site settings, adaptive workers, walltimes ----------------
def job_and_value(x: int, seconds: float = 0.0) -> tuple[int, int]:
    time.sleep(seconds)
    return int(os.environ["SLURM_JOB_ID"]), x


def job_of(path: str) -> int:
    with h5py.File(path, "r") as h5:
        return int(h5["result_0"][()])


@pytest.mark.slurm
def test_a_site_jobqueue_account_and_queue_reach_the_jobs_unchanged(tmp_path: Any) -> None:
    # a site's jobqueue.yaml (dask.config jobqueue.slurm.*): acme_xr passes no value over it
    from acme_xr.jobqueue import _classes

    _classes()
    site = {"jobqueue.slurm.account": "lab42", "jobqueue.slurm.queue": "small",
            "jobqueue.slurm.job-extra-directives": ["--comment=from-site"]}
    before = set(all_jobs())
    with dask.config.set(site):
        out = ParallelMap(job_and_value, [1, 2], cluster="slurm", n_workers=1,
                          mem_per_worker="200MiB", write_worker_results=False,
                          verbose=False).compute()
    jobs = set(all_jobs()) - before
    assert [v for _, v in out] == [1, 2] and {str(j) for j, _ in out} <= jobs
    for j in jobs:
        info = scontrol_job(j)
        assert "Partition=small" in info and "Account=lab42" in info
        assert "Comment=from-site" in info


@pytest.mark.slurm
def test_adaptive_worker_jobs_finish_every_call(tmp_path: Any) -> None:
    before = set(all_jobs())
    files = ParallelMap(job_and_value, list(range(24)), 0.2, cluster="slurm",
                        n_workers=(1, 3), mem_per_worker="200MiB",
                        output_dir=str(tmp_path / "run"), verbose=False).compute()
    assert len(files) == 24
    for i, path in enumerate(files):
        with h5py.File(path, "r") as h5:
            assert int(h5["result_1"][()]) == i
    jobs = set(all_jobs()) - before
    assert 1 <= len(jobs) and not queued() & jobs  # the run closed its cluster


@pytest.mark.slurm
def test_a_worker_job_cancelled_mid_run_loses_no_call(tmp_path: Any) -> None:
    import threading

    out = tmp_path / "run"
    cancelled: list[str] = []

    def cancel_one_when_work_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = [j for j, _, state in squeue(workdir=str(tmp_path)) if state == "RUNNING"]
            if len(running) >= 2 and len(glob.glob(str(out / "job_and_value_*.h5"))) >= 4:
                subprocess.run(["scancel", running[0]], check=True)
                cancelled.append(running[0])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=cancel_one_when_work_runs, daemon=True)
    before = set(all_jobs())
    killer.start()
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0.5s"}):
        files = ParallelMap(job_and_value, list(range(60)), 0.25, cluster="slurm",
                            n_workers=2, mem_per_worker="200MiB", batch_size=1,
                            output_dir=str(out), verbose=False).compute()
    killer.join(5)
    assert cancelled, "no worker job was cancelled: the run ended first"
    assert len(files) == 60 and all(os.path.exists(f) for f in files)
    for i, path in enumerate(files):
        with h5py.File(path, "r") as h5:
            assert int(h5["result_1"][()]) == i
    ran_in = {str(job_of(f)) for f in files}
    jobs = set(all_jobs()) - before
    assert ran_in <= jobs and len(jobs) >= 3  # the cancelled job was replaced


@pytest.mark.slurm
@pytest.mark.slow
def test_a_run_longer_than_the_walltime_finishes_with_every_result(tmp_path: Any) -> None:
    """About 2.5 minutes: SLURM's --time counts whole minutes. The workers retire after
    ~90 s (``--lifetime``, 2 min walltime minus a quarter), their jobs end, new jobs take
    over, and SLURM never has to kill a worker."""
    from acme_xr.jobqueue import _classes

    _classes()
    before = set(all_jobs())
    t0 = time.monotonic()
    with dask.config.set({"jobqueue.slurm.walltime": "00:02:00"}):
        files = ParallelMap(job_and_value, list(range(300)), 1.0, cluster="slurm",
                            n_workers=2, mem_per_worker="200MiB", batch_size=1,
                            output_dir=str(tmp_path / "run"), verbose=False).compute()
    assert time.monotonic() - t0 > 120  # the run did outlive a job's walltime
    assert len(files) == 300 and all(os.path.exists(f) for f in files)
    jobs = set(all_jobs()) - before
    ran_in = {str(job_of(f)) for f in files}
    assert len(ran_in) >= 3 and ran_in <= jobs  # later calls ran in replacement jobs
    for j in jobs:  # retired by dask, not killed by SLURM at the walltime
        assert "JobState=TIMEOUT" not in scontrol_job(j)
