"""SLURM workers through dask-jobqueue.

Examples
--------
On a machine with SLURM (``sbatch`` on the PATH):

.. code-block:: python

    client = slurm_cluster_setup("debug", n_workers=4, mem_per_worker="1GB")
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from typing import Any

from .errors import ClusterError

__all__ = ["slurm_cluster_setup"]

log = logging.getLogger(__name__)


def slurm_cluster_setup(
    partition: str,
    n_workers: int = 1,
    mem_per_worker: str | None = None,
    timeout: float = 60,
    cores: int = 1,
    **cluster_kwargs: Any,
) -> Any:
    """Start ``n_workers`` dask workers as SLURM jobs in ``partition``; return a client.

    Parameters
    ----------
    partition : str
        SLURM partition (queue) of the worker jobs.
    n_workers : int
        Worker jobs to submit.
    mem_per_worker : str, optional
        Memory of each job, e.g. ``"4GB"`` (default: 1GB per core).
    timeout : float
        Seconds to wait for the first worker; the run starts as soon as one is up.
    cores : int
        Cores per job.
    **cluster_kwargs
        Passed to :class:`dask_jobqueue.SLURMCluster` (e.g. ``walltime``, ``account``).

    Raises
    ------
    ClusterError
        SLURM is not available here or no worker came up within ``timeout``.
    """
    if shutil.which("sbatch") is None:
        raise ClusterError(
            f"partition={partition!r} asks for SLURM workers, but there is no 'sbatch' on this "
            "machine; leave partition='auto' to run on a local cluster"
        )
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    kwargs: dict[str, Any] = {
        "queue": partition,
        "cores": cores,
        "processes": 1,
        "memory": mem_per_worker or f"{cores}GB",
        "log_directory": tempfile.mkdtemp(prefix="acme_xr-slurm-"),
        "scheduler_options": {"dashboard_address": ":0"},
    }
    kwargs.update(cluster_kwargs)
    cluster = SLURMCluster(**kwargs)
    cluster.scale(n_workers)
    client = Client(cluster)
    deadline = time.monotonic() + timeout
    while not client.scheduler_info(n_workers=-1).get("workers"):
        if time.monotonic() > deadline:
            client.close()
            cluster.close()
            raise ClusterError(
                f"no SLURM worker started in partition {partition!r} within {timeout:g} s; "
                "check `squeue` and the job logs, or raise setup_timeout"
            )
        time.sleep(0.2)
    log.info("SLURM cluster with %d worker job(s) requested in %s", n_workers, partition)
    return client
