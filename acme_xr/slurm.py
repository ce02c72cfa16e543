"""SLURM's conveniences on top of the generic batch-system path (:mod:`acme_xr.jobqueue`).

``ParallelMap(..., partition="name")`` (or ``cluster="slurm"``) runs its calls on dask
workers that are SLURM batch jobs: :func:`check_partition` validates the partition against
``sinfo`` before anything is created, :func:`prepare` tells whether the partition is this
machine, and a closed cluster waits until ``squeue`` no longer lists its jobs. Every SLURM
command acme_xr runs itself goes through :func:`_slurm` (dask-jobqueue runs
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

import logging
import shutil
import socket
import subprocess
import time
from typing import Any

from .errors import ClusterError, InputError, InputTypeError

__all__ = ["slurm_cluster_setup", "slurm_partitions", "check_partition", "prepare"]

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



def prepare(partition: str | None) -> bool:
    """SLURM's checks before a cluster starts: ``sbatch`` exists and ``partition`` (None:
    SLURM's default one) is a partition of this cluster. Returns whether every node of it
    is this machine (a one-node cluster: scheduler and workers then use the loopback)."""
    if partition is None:
        _require_sbatch("auto")
        nodes = [n for lists in _partition_nodes().values() for n in lists]
        return _runs_here(nodes)
    return _runs_here(_partition_nodes_of(partition))


def describe_jobs(job_ids: list[str]) -> str:
    """What squeue says about the jobs, for an error message."""
    try:
        states = _queued(job_ids)
    except ClusterError as exc:
        return f"squeue failed: {exc}"
    return ", ".join(f"{j} {s}" for j, s in states.items()) or "none queued"


def slurm_cluster_setup(
    partition: str = "auto",
    n_workers: int | tuple[int, int] = 1,
    mem_per_worker: str | None = None,
    timeout: float = 60,
    cores: int | None = None,
    **cluster_kwargs: Any,
) -> Any:
    """Start dask workers as SLURM jobs in ``partition``; return a client.

    ``acme_xr.cluster_setup("slurm", ...)`` with the partition first (kept for scripts
    written against earlier acme_xr); see :func:`acme_xr.cluster_setup` for the
    settings order and the errors.

    Parameters
    ----------
    partition : str
        The SLURM partition, checked against ``sinfo``; ``"auto"``: the site's
        ``jobqueue.slurm.queue`` or SLURM's default partition.
    n_workers : int or (int, int)
        Worker jobs to keep running; ``(minimum, maximum)``: adaptive.
    mem_per_worker : str, optional
        Memory of each worker job, e.g. ``"4GB"``.
    timeout : float
        Seconds to wait for the first worker job to connect.
    cores : int, optional
        Cores (dask threads) per worker job.
    **cluster_kwargs
        Passed to dask-jobqueue's ``SLURMCluster`` (``walltime``, ``account``, ...).

    Returns
    -------
    distributed.Client
        A client of the new cluster, also dask's default client; close both with
        :func:`acme_xr.cluster_cleanup`.

    Examples
    --------
    >>> import acme_xr
    >>> client = slurm_cluster_setup("debug", n_workers=4, mem_per_worker="4GB")  # doctest: +SKIP
    >>> acme_xr.cluster_cleanup(client)  # cancels the jobs  # doctest: +SKIP
    """
    from .cluster import cluster_setup

    return cluster_setup("slurm", n_workers=n_workers, partition=partition,
                         mem_per_worker=mem_per_worker, timeout=timeout, cores=cores,
                         **cluster_kwargs)
