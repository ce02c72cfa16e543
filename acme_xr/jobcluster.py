"""acme_xr's dask-jobqueue clusters: started, watched until the first worker connects, closed.

:mod:`acme_xr.jobqueue` decides the settings; this module makes the cluster of dask-jobqueue's
class for the kind, adapted to ``n_workers``, with two additions (subclasses named
``_Acme<Class>``): a job the batch system refuses is recorded and reported as a
:class:`~acme_xr.errors.ClusterError` at once, and closing waits, on SLURM, until ``squeue``
no longer lists the jobs, then removes a temporary log directory.

Examples
--------
>>> import dask
>>> from acme_xr.jobqueue import job_settings
>>> with dask.config.set({"acme_xr.jobqueue.dashboard-address": None}):
...     cluster = jobqueue_cluster("pbs", job_settings("pbs", {"queue": "short"}), local=True)
>>> "#PBS -q short" in cluster.job_script()
True
>>> cluster.close()
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from . import config
from .errors import ClusterError, InputError
from .jobqueue import (
    _NO_QUEUE,
    SUBMIT,
    _check_kind,
    _classes,
    _presets,
    check_submit_command,
    job_settings,
    site_value,
)

__all__ = ["cluster_class", "jobqueue_cluster", "start_jobqueue"]

log = logging.getLogger(__name__)


def cluster_class(kind: str) -> Any:
    """acme_xr's subclass of dask-jobqueue's cluster class for ``kind`` (same name with
    ``_Acme`` in front): its jobs record a refused submission instead of raising it in the
    event loop, and ``close()`` runs ``acme_after_close`` (SLURM: wait until squeue no
    longer lists the jobs) and removes a temporary log directory."""
    return _acme_classes()[_check_kind(kind)]


@functools.cache
def _acme_classes() -> dict[str, Any]:
    from distributed.core import Status

    out: dict[str, Any] = {}
    for kind, base in _classes().items():
        job_base = base.job_cls

        class _Job(job_base):  # type: ignore[misc, valid-type]
            submit_errors: list[str] = []

            async def start(self) -> None:
                try:
                    await super().start()
                except Exception as exc:  # noqa: BLE001 - "Command exited with non-zero ..."
                    text = str(exc)
                    reason = text.split("stderr:", 1)[-1].strip() or text
                    self.submit_errors.append(reason)
                    self.status = Status.failed  # lets the cluster close without this job
                    log.warning("the batch system refused a dask worker job: %s", reason)

        class _Cluster(base):  # type: ignore[misc, valid-type]
            acme_log_directory: str | None = None
            acme_remove_logs = False
            acme_after_close: Callable[[list[str]], None] | None = None

            def job_ids(self) -> list[str]:
                """Batch job ids of the workers this cluster submitted and still tracks."""
                return [str(w.job_id) for w in self.workers.values()
                        if getattr(w, "job_id", None)]

            def close(self, timeout: float | None = None) -> Any:
                jobs = self.job_ids()
                try:
                    return super().close(timeout)
                finally:
                    if self.acme_after_close is not None:
                        self.acme_after_close(jobs)
                    if self.acme_remove_logs and self.acme_log_directory:
                        _remove_log_directory(self.acme_log_directory)

        _Job.__name__ = _Job.__qualname__ = f"_Acme{job_base.__name__}"
        _Cluster.__name__ = _Cluster.__qualname__ = f"_Acme{base.__name__}"
        _Cluster.job_cls = _Job
        out[kind] = _Cluster
    return out


def _remove_log_directory(path: str, patience: float = 5.0) -> None:
    """Remove a job log directory, also when the batch system still writes a job's last
    output into it after the job ended (one ``rmtree`` then leaves the directory behind)."""
    deadline = time.monotonic() + patience
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def log_directory(kind: str, local: bool) -> tuple[str | None, bool]:
    """Where worker jobs write their output, and whether it is ours to remove at close.

    None when the site's jobqueue.yaml names one (dask-jobqueue uses it).
    """
    configured = config.get("jobqueue.log-directory")
    if configured:
        path = os.path.abspath(os.path.expanduser(str(configured)))
        os.makedirs(path, exist_ok=True)
        return path, False
    if site_value(kind, "log_directory") is not None:
        return None, False
    if local:
        return tempfile.mkdtemp(prefix=f"acme_xr-{kind}-"), True
    # compute nodes do not see the submit host's /tmp, but usually share the home directory
    import datetime

    base = os.path.join(os.path.expanduser("~"), ".acme_xr", f"{kind}-logs")
    os.makedirs(base, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
    return tempfile.mkdtemp(prefix=stamp, dir=base), True


def jobqueue_cluster(kind: str, settings: dict[str, Any], local: bool = False) -> Any:
    """Make (not yet scale) acme_xr's dask-jobqueue cluster of ``kind`` with ``settings``
    from :func:`job_settings`; ``local``: every node is this machine (logs go to /tmp).

    Returns the cluster and the list its jobs append refused submissions to.
    """
    cls = cluster_class(kind)
    kwargs = dict(settings)
    errors: list[str] = []
    # a job class per cluster, so that each cluster sees its own refusals
    kwargs["job_cls"] = type(cls.job_cls.__name__, (cls.job_cls,), {"submit_errors": errors})
    log_dir, remove = (kwargs["log_directory"], False) if kwargs.get("log_directory") \
        else log_directory(kind, local)
    if log_dir is not None:
        kwargs["log_directory"] = log_dir
    try:
        cluster = cls(**kwargs)
    except BaseException:
        if remove and log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)
        raise
    cluster.acme_log_directory, cluster.acme_remove_logs = log_dir, remove
    cluster.acme_submit_errors = errors
    return cluster


def start_jobqueue(
    kind: str,
    n_workers: tuple[int, int],
    partition: str = "auto",
    mem_per_worker: str | None = None,
    cores: int | None = None,
    timeout: float = 60,
    **cluster_kwargs: Any,
) -> Any:
    """Start worker jobs of ``kind`` (checked arguments: see :func:`acme_xr.cluster_setup`);
    return a client once the first worker has connected."""
    kind = _check_kind(kind)
    explicit = dict(cluster_kwargs)
    if cores is not None:
        explicit["cores"] = cores
    if mem_per_worker not in (None, "auto"):
        explicit["memory"] = str(mem_per_worker).replace(" ", "")
    if partition != "auto":
        if kind in _NO_QUEUE:
            raise InputError(f"partition={partition!r}: {kind} has no queues to choose; leave "
                             "partition='auto' and give job_extra_directives instead")
        explicit["queue"] = partition
    check_submit_command(kind)
    local = False
    if kind == "slurm":
        from .slurm import prepare

        queue = explicit.get("queue") or _presets(kind).get("queue") or site_value(kind, "queue")
        local = prepare(queue)
    settings = job_settings(kind, explicit)
    if settings.get("interface") is None and site_value(kind, "interface") is None:
        interface = config.get("jobqueue.interface")
        if interface == "auto":
            # a one-node cluster on this machine: keep scheduler and workers on the loopback
            interface = "lo" if local else None
        if interface is not None:
            settings["interface"] = interface
    cluster = jobqueue_cluster(kind, settings, local)
    if kind == "slurm":
        from .slurm import _wait_until_gone

        cluster.acme_after_close = _wait_until_gone
    from distributed import Client

    client = None
    try:
        client = Client(cluster)
        # adapt(), also with a fixed size, submits a new job when one ends (unlike scale())
        cluster.adapt(minimum=n_workers[0], maximum=n_workers[1])
        if n_workers[0] > 0:  # with 0, jobs start only once there is work
            _wait_for_first_worker(client, cluster, kind, partition, timeout)
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        raise
    log.info("%s cluster: %s worker job(s) of %s core(s) and %s, logs in %s", kind,
             "-".join(map(str, sorted(set(n_workers)))), settings.get("cores"),
             settings.get("memory"), cluster.acme_log_directory)
    return client


def _wait_for_first_worker(client: Any, cluster: Any, kind: str, partition: str,
                           timeout: float) -> None:
    queue = "SLURM partition" if kind == "slurm" else f"{kind.upper()} queue"
    where = f"{queue} {partition!r}" if partition != "auto" else f"the {kind.upper()} cluster"
    submit = SUBMIT[kind]
    errors = cluster.acme_submit_errors
    deadline = time.monotonic() + timeout
    while True:
        if errors:
            raise ClusterError(
                f"{submit} refused the dask worker jobs for {where}: {errors[0]} -- ask "
                "for what the queue allows (mem_per_worker, cores, walltime)")
        if time.monotonic() > deadline:
            if kind == "slurm":
                from .slurm import describe_jobs

                jobs = describe_jobs(cluster.job_ids())
            else:
                jobs = ", ".join(cluster.job_ids()) or "none submitted"
            cluster.acme_remove_logs = False  # the error points to them
            raise ClusterError(
                f"no dask worker started in {where} within {timeout:g} s (jobs: {jobs}). Raise "
                f"setup_timeout, choose a less busy queue, or read the job logs in "
                f"{cluster.acme_log_directory}")
        try:  # short waits, so that a refused job is reported at once
            client.wait_for_workers(1, timeout=0.2)
            return
        except TimeoutError:  # dask.distributed.TimeoutError is the builtin
            continue
