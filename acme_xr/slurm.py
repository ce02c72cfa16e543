"""SLURM workers through dask-jobqueue.

``ParallelMap(..., partition="name")`` runs its calls on dask workers that are SLURM batch
jobs in that partition: :func:`check_partition` validates the partition before anything is
created, :func:`slurm_cluster_setup` submits the worker jobs and waits for the first one.
Every SLURM command acme_xr runs itself goes through :func:`_slurm` (dask-jobqueue runs
``sbatch``/``scancel``).

Examples
--------
On a machine with SLURM (``sbatch`` on the PATH):

.. code-block:: python

    client = slurm_cluster_setup("debug", n_workers=4, mem_per_worker="1GB")
    ...
    acme_xr.cluster_cleanup(client)   # cancels the worker jobs
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import dask.config
from dask.utils import format_bytes, parse_bytes

from . import config
from .errors import ClusterError, InputError, InputTypeError

__all__ = ["slurm_cluster_setup", "slurm_partitions", "check_partition", "auto_n_workers"]

log = logging.getLogger(__name__)

# a SLURM command that does not answer within this time means slurmctld is not reachable
_COMMAND_TIMEOUT = 30.0
# scancel'ed jobs stay in squeue (state CG) while their processes end; wait this long at most
_CLOSE_WAIT = 15.0


def _slurm(*args: str) -> str:
    """Run one SLURM client command and return its standard output."""
    cmd = " ".join(args)
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise ClusterError(
            f"`{args[0]}` is not on the PATH: install the SLURM client commands, or leave "
            "partition='auto' to run on a local cluster"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(
            f"`{cmd}` did not answer within {_COMMAND_TIMEOUT:g} s: is slurmctld reachable? "
            "(`scontrol ping`)"
        ) from exc
    if proc.returncode != 0:
        raise ClusterError(
            f"`{cmd}` failed with exit code {proc.returncode}: {proc.stderr.strip()} -- is "
            "slurmctld reachable? (`scontrol ping`)"
        )
    return proc.stdout


def _require_sbatch(partition: str) -> None:
    if shutil.which("sbatch") is None:
        raise ClusterError(
            f"partition={partition!r} asks for SLURM workers, but there is no `sbatch` on this "
            "machine: run on a SLURM submit node, or leave partition='auto' to run on a local "
            "cluster"
        )


def _partition_nodes() -> dict[str, list[str]]:
    """Partition name -> its node lists, in ``sinfo`` order (default partition first)."""
    parts: dict[str, list[str]] = {}
    for line in _slurm("sinfo", "-h", "-o", "%P %N").splitlines():
        fields = line.split()
        if fields:
            # sinfo marks the default partition with '*' and repeats a partition per node state
            parts.setdefault(fields[0].rstrip("*"), []).extend(fields[1:])
    return parts


def slurm_partitions() -> list[str]:
    """Names of the SLURM partitions this machine can submit to.

    Returns
    -------
    list of str
        As ``sinfo -h -o %P`` lists them, without the ``*`` that marks the default.

    Raises
    ------
    ClusterError
        There is no SLURM here, or slurmctld does not answer.

    Examples
    --------
    .. code-block:: python

        slurm_partitions()  # ['debug', 'small'] on the test cluster of ci/slurm.sh
    """
    return list(_partition_nodes())


def check_partition(partition: str) -> None:
    """Make sure worker jobs can be submitted to ``partition``; create nothing.

    :class:`~acme_xr.ParallelMap` calls this before it creates its output directory.

    Parameters
    ----------
    partition : str
        A SLURM partition name.

    Raises
    ------
    InputError
        There is no such partition; the message lists the valid ones.
    ClusterError
        There is no ``sbatch`` on this machine, or slurmctld does not answer.

    Examples
    --------
    .. code-block:: python

        check_partition("debug")  # fine on the test cluster of ci/slurm.sh
        check_partition("nope")   # InputError: partition='nope' is not a SLURM partition
                                  # of this cluster; valid partitions: 'debug', 'small' ...
    """
    _partition_nodes_of(partition)


def _partition_nodes_of(partition: str) -> list[str]:
    if not isinstance(partition, str):
        raise InputTypeError(f"partition must be the name of a SLURM partition, not {partition!r}")
    _require_sbatch(partition)
    parts = _partition_nodes()
    if partition not in parts:
        valid = ", ".join(repr(p) for p in parts) or "none"
        raise InputError(
            f"partition={partition!r} is not a SLURM partition of this cluster; valid "
            f"partitions: {valid} (`sinfo -s` lists them), or 'auto' for a local cluster"
        )
    return parts[partition]


def _runs_here(node_lists: list[str]) -> bool:
    """True when every node of a partition is this machine (a one-node test cluster)."""
    here = {"localhost", socket.gethostname(), socket.gethostname().split(".")[0],
            socket.getfqdn()}
    return bool(node_lists) and all(nodes in here for nodes in node_lists)


def auto_n_workers(n_calls: int) -> int:
    """Worker jobs for ``n_workers="auto"``: one per call, as ACME, at most
    ``acme_xr.slurm.max-auto-workers``.

    Examples
    --------
    >>> auto_n_workers(3), auto_n_workers(10_000) == auto_n_workers(10_001)
    (3, True)
    """
    return max(1, min(int(n_calls), int(config.get("slurm.max-auto-workers"))))


def _lifetime_args(walltime: Any) -> list[str]:
    """Worker arguments that retire a worker a few minutes before its job's walltime, so
    that its tasks move elsewhere instead of dying with the job; [] for short walltimes.

    Examples
    --------
    >>> _lifetime_args("01:00:00")
    ['--lifetime', '3300s', '--lifetime-stagger', '120s']
    >>> _lifetime_args("00:10:00"), _lifetime_args(None)
    ([], [])
    """
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", str(walltime or "").strip())
    if m is None:
        return []
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 15 * 60:
        return []
    # lifetime varies by +-stagger, so the latest retirement is 3 minutes before walltime
    return ["--lifetime", f"{total - 300}s", "--lifetime-stagger", "120s"]


def _log_directory(local: bool) -> tuple[str, bool]:
    """Where worker jobs write their output, and whether it is ours to remove at close."""
    configured = config.get("slurm.log-directory")
    if configured:
        path = os.path.abspath(os.path.expanduser(str(configured)))
        os.makedirs(path, exist_ok=True)
        return path, False
    if local:
        return tempfile.mkdtemp(prefix="acme_xr-slurm-"), True
    # compute nodes do not see the submit host's /tmp, but usually share the home directory
    base = os.path.join(os.path.expanduser("~"), ".acme_xr", "slurm-logs")
    os.makedirs(base, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
    return tempfile.mkdtemp(prefix=stamp, dir=base), True


@functools.cache
def _cluster_classes() -> tuple[type, type]:
    """acme_xr's SLURMCluster and SLURMJob, defined on first use.

    dask-jobqueue 0.9 installs a SIGINT handler that calls ``sys.exit()`` when it is
    imported (``dask_jobqueue/runner.py``): Ctrl-C would then raise SystemExit instead of
    KeyboardInterrupt. The import therefore happens here, never at acme_xr's import, and
    the previous handler is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ClusterError(
            "start a SLURM cluster from the main thread: dask-jobqueue installs a signal "
            "handler when it is imported, which only the main thread may do"
        )
    previous = signal.getsignal(signal.SIGINT)
    try:
        from dask_jobqueue import SLURMCluster
        from dask_jobqueue.slurm import SLURMJob
    finally:
        signal.signal(signal.SIGINT, previous)
    from distributed.core import Status

    class _AcmeSLURMJob(SLURMJob):  # type: ignore[misc]
        """A worker job whose failed ``sbatch`` is recorded, not raised in the event loop."""

        submit_errors: list[str] = []

        async def start(self) -> None:
            try:
                await super().start()
            except RuntimeError as exc:  # dask-jobqueue: "Command exited with non-zero ..."
                text = str(exc)
                reason = text.split("stderr:", 1)[-1].strip() or text
                self.submit_errors.append(reason)
                self.status = Status.failed  # lets the cluster close without this job
                log.warning("sbatch refused a dask worker job: %s", reason)

    class _AcmeSLURMCluster(SLURMCluster):  # type: ignore[misc]
        """A SLURMCluster whose ``close()`` returns once its jobs have left ``squeue``."""

        acme_log_directory: str | None = None
        acme_remove_logs = False

        def job_ids(self) -> list[str]:
            """SLURM job ids of the workers this cluster submitted and still tracks."""
            return [str(w.job_id) for w in self.workers.values() if getattr(w, "job_id", None)]

        def close(self, timeout: float | None = None) -> Any:
            jobs = self.job_ids()
            try:
                return super().close(timeout)
            finally:
                _wait_until_gone(jobs)
                if self.acme_remove_logs and self.acme_log_directory:
                    _remove_log_directory(self.acme_log_directory)

    return _AcmeSLURMCluster, _AcmeSLURMJob


def _remove_log_directory(path: str, patience: float = 5.0) -> None:
    """Remove a job log directory, also when slurmd still writes a job's last output into
    it after the job left ``squeue`` (one ``rmtree`` then leaves the directory behind)."""
    deadline = time.monotonic() + patience
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _queued(job_ids: list[str]) -> dict[str, str]:
    """Job id -> "STATE (reason)" of those of ``job_ids`` that squeue still lists."""
    if not job_ids:
        return {}
    wanted = set(job_ids)
    out = {}
    for line in _slurm("squeue", "-h", "-o", "%i %T %r").splitlines():
        fields = line.split(None, 2)
        if fields and fields[0] in wanted:
            out[fields[0]] = " ".join(fields[1:2] + [f"({f})" for f in fields[2:]])
    return out


def _wait_until_gone(job_ids: list[str]) -> None:
    deadline = time.monotonic() + _CLOSE_WAIT
    while job_ids:
        try:
            left = _queued(job_ids)
        except ClusterError as exc:
            log.warning("could not check that the worker jobs ended: %s", exc)
            return
        if not left:
            return
        if time.monotonic() > deadline:
            log.warning("SLURM still lists the cancelled worker jobs %s after %g s",
                        ", ".join(left), _CLOSE_WAIT)
            return
        time.sleep(0.1)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r} is not valid: give a whole number >= 1")
    return value


def slurm_cluster_setup(
    partition: str,
    n_workers: int = 1,
    mem_per_worker: str | None = None,
    timeout: float = 60,
    cores: int = 1,
    **cluster_kwargs: Any,
) -> Any:
    """Start ``n_workers`` dask workers as SLURM jobs in ``partition``; return a client.

    Every worker is one batch job running this interpreter (``sys.executable``, so the same
    virtual environment) with ``cores`` threads and ``mem_per_worker`` of memory, which is
    both the job's ``--mem`` and the dask worker's memory limit. The function returns as
    soon as the first worker has connected; the others join while work runs. A worker
    whose job ends (cancelled, preempted, walltime) is replaced by a new job; workers retire
    a few minutes before the walltime (``jobqueue.slurm.walltime``, default 30 minutes) so
    that their work moves elsewhere in time. ``acme_xr.cluster_cleanup(client)`` cancels
    every job and returns once SLURM no longer lists them.

    Parameters
    ----------
    partition : str
        SLURM partition (queue) of the worker jobs.
    n_workers : int
        Worker jobs to keep running.
    mem_per_worker : str, optional
        Memory of each job, e.g. ``"4GB"`` (default: ``cores`` times the setting
        ``acme_xr.slurm.memory-per-core``, 2GB).
    timeout : float
        Seconds to wait for the first worker.
    cores : int
        Cores (dask threads) per job.
    **cluster_kwargs
        Passed to :class:`dask_jobqueue.SLURMCluster` (e.g. ``walltime``, ``account``,
        ``job_extra_directives``), overriding acme_xr's choices.

    Returns
    -------
    distributed.Client
        A client of the new cluster, also the default client.

    Raises
    ------
    InputError
        ``partition`` does not exist, or a bad ``n_workers``/``cores``/``mem_per_worker``.
    ClusterError
        No SLURM here, ``sbatch`` refused the jobs, or no worker started within ``timeout``
        (the jobs are cancelled then).

    Examples
    --------
    >>> import acme_xr
    >>> client = slurm_cluster_setup("debug", n_workers=4, mem_per_worker="4GB")  # doctest: +SKIP
    >>> acme_xr.cluster_cleanup(client)  # cancels the jobs  # doctest: +SKIP
    """
    n_workers = _positive_int("n_workers", n_workers)
    cores = _positive_int("cores", cores)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise InputError(f"timeout={timeout!r} is not valid: give a number of seconds >= 0")
    if mem_per_worker in (None, "auto"):
        memory = format_bytes(cores * parse_bytes(config.get("slurm.memory-per-core")))
    else:
        try:
            parse_bytes(mem_per_worker)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"mem_per_worker={mem_per_worker!r} is not a memory size: write e.g. '4GB'"
            ) from exc
        memory = str(mem_per_worker)
    local = _runs_here(_partition_nodes_of(partition))
    cluster_cls, job_cls = _cluster_classes()

    from distributed import Client

    interface = config.get("slurm.interface")
    if interface == "auto":
        # a one-node cluster on this machine: keep scheduler and workers on the loopback
        interface = "lo" if local else None
    walltime = cluster_kwargs.get("walltime") or dask.config.get("jobqueue.slurm.walltime", None)
    log_dir, remove_logs = _log_directory(local)
    errors: list[str] = []
    kwargs: dict[str, Any] = {
        "queue": partition,
        "cores": cores,
        "processes": 1,
        "memory": memory.replace(" ", ""),
        "job_name": "acme_xr-worker",
        "python": sys.executable,
        "interface": interface,
        "log_directory": log_dir,
        "scheduler_options": {"dashboard_address": ":0"},
        "worker_extra_args": _lifetime_args(walltime),
        # a subclass per cluster, so that each cluster sees its own sbatch errors
        "job_cls": type(job_cls.__name__, (job_cls,), {"submit_errors": errors}),
    }
    kwargs.update(cluster_kwargs)
    try:
        cluster = cluster_cls(**kwargs)
    except BaseException:
        if remove_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        raise
    cluster.acme_log_directory, cluster.acme_remove_logs = log_dir, remove_logs
    client = None
    try:
        client = Client(cluster)
        # adapt() with a fixed size, unlike scale(), submits a new job when one ends
        cluster.adapt(minimum=n_workers, maximum=n_workers)
        _wait_for_first_worker(client, cluster, partition, timeout, errors)
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        raise
    log.info("SLURM cluster in partition %r: %d worker job(s) of %d core(s) and %s, logs in %s",
             partition, n_workers, cores, kwargs["memory"], log_dir)
    return client


def _wait_for_first_worker(
    client: Any, cluster: Any, partition: str, timeout: float, errors: list[str]
) -> None:
    deadline = time.monotonic() + timeout
    while not client.scheduler_info(n_workers=-1).get("workers"):
        if errors:
            raise ClusterError(
                f"sbatch refused the dask worker jobs for partition {partition!r}: {errors[0]} "
                f"-- ask for what the partition allows (mem_per_worker, cores; see `scontrol "
                f"show partition {partition}`)"
            )
        if time.monotonic() > deadline:
            states = _queued(cluster.job_ids())
            jobs = ", ".join(f"{j} {s}" for j, s in states.items()) or "none queued"
            cluster.acme_remove_logs = False  # the error points to them
            raise ClusterError(
                f"no dask worker started in SLURM partition {partition!r} within {timeout:g} s "
                f"(jobs: {jobs}). Raise setup_timeout, choose a less busy partition, or read "
                f"the job logs in {cluster.acme_log_directory}"
            )
        time.sleep(0.1)
