"""One run's hold on a dask cluster: which cluster ``ParallelMap(cluster=...)`` uses, when
it starts one, and whether it closes it afterwards (``stop_client``).

``cluster=None`` keeps ACME's rule: a running dask client wins, else ``partition="auto"``
starts a local cluster and any other partition SLURM worker jobs. A kind (``"local"``,
``"slurm"``, ``"pbs"``, ...) always starts that cluster; a Client or a Cluster object is used
as it is and left running unless ``stop_client=True``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from . import config
from .cluster import (
    _bounds,
    _running_client,
    _setup,
    _silenced,
    available_cores,
    cluster_cleanup,
    kill_local_workers,
)
from .errors import ClusterError, InputError, InputTypeError

__all__ = ["ClusterLease", "check_cluster"]

log = logging.getLogger(__name__)


def _is_client(obj: Any) -> bool:
    from distributed import Client

    return isinstance(obj, Client)


def _is_cluster(obj: Any) -> bool:
    from distributed.deploy import Cluster

    return isinstance(obj, Cluster)


def check_cluster(value: Any) -> Any:
    """Check ParallelMap's ``cluster=``: None, a kind (``"local"``, ``"slurm"``, ``"pbs"``,
    ``"sge"``, ``"lsf"``, ``"htcondor"``), a :class:`distributed.Client` or a dask Cluster.

    Examples
    --------
    >>> check_cluster("SLURM"), check_cluster(None)
    ('slurm', None)
    >>> check_cluster("k8s")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    acme_xr.errors.InputError: cluster='k8s' is not a kind of cluster acme_xr can start: ...
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() == "local":
            return "local"
        from .jobqueue import _check_kind

        return _check_kind(value)
    if "distributed" in sys.modules and (_is_client(value) or _is_cluster(value)):
        return value
    raise InputTypeError(
        f"cluster must be None, a kind such as 'local' or 'slurm', a distributed.Client or a "
        f"dask Cluster object, not {value!r} ({type(value).__name__})")


class ClusterLease:
    """A client for the duration of one run, closed afterwards as ``stop_client`` says.

    Parameters
    ----------
    n_calls : int
        Calls of the run (a local cluster never gets more workers than that).
    n_workers, mem_per_worker, partition, setup_timeout, stop_client, cluster
        :class:`~acme_xr.ParallelMap`'s keywords.
    quiet : bool
        Do not print the dashboard link of a cluster this lease starts (it is logged).
    """

    def __init__(
        self,
        n_calls: int,
        n_workers: int | str | tuple[int, int] = "auto",
        mem_per_worker: str = "auto",
        partition: str = "auto",
        setup_timeout: float = 60,
        stop_client: bool | str = "auto",
        cluster: Any = None,
        quiet: bool = False,
    ) -> None:
        self.n_calls = n_calls
        self.n_workers = n_workers
        self.mem_per_worker = mem_per_worker
        self.partition = partition
        self.setup_timeout = setup_timeout
        self.stop_client = stop_client
        self.cluster = cluster
        self.quiet = quiet
        self.client: Any = None
        self.started = False  # this lease started the cluster
        self.started_kind: str | None = None  # ... of this kind
        self.own_client = False  # this lease made the client (of a given Cluster)
        self.planned_slots = 0

    @property
    def kind(self) -> str | None:
        """The kind of cluster :meth:`acquire` starts, or None when it uses one that runs
        (the default client, a given Client or Cluster)."""
        if isinstance(self.cluster, str):
            return self.cluster
        # without distributed imported there is no running client (and the import, ~0.5 s,
        # waits until a cluster is needed)
        if self.cluster is not None or ("distributed" in sys.modules
                                        and _running_client() is not None):
            return None
        return "local" if self.partition == "auto" else "slurm"

    @property
    def spawns_local_workers(self) -> bool:
        """Whether acquiring starts worker processes that re-import the main script."""
        return self.kind == "local"

    def check(self) -> None:
        """Check what :meth:`acquire` will need (the SLURM partition) before a run creates
        anything; raises InputError or ClusterError."""
        kind = self.kind
        if kind not in (None, "local", "slurm"):
            from .jobqueue import check_submit_command

            check_submit_command(kind)
        if kind == "slurm" and self.partition != "auto":
            from .slurm import check_partition

            check_partition(self.partition)
        elif kind == "slurm" and self.cluster == "slurm":
            from .jobqueue import check_submit_command

            check_submit_command(kind)
        elif self.kind == "htcondor" and self.partition != "auto":
            raise InputError(f"partition={self.partition!r}: htcondor has no queues to "
                             "choose; leave partition='auto'")
        elif self.kind == "local" and self.partition != "auto" and self.cluster == "local":
            raise InputError(f"partition={self.partition!r} needs a batch system: give "
                             "cluster='slurm' (or 'pbs', ...), or leave partition='auto'")

    def _n_workers(self, kind: str) -> int | tuple[int, int]:
        if self.n_workers != "auto":
            return self.n_workers  # type: ignore[return-value]
        if kind == "local":
            return max(1, min(self.n_calls, available_cores()))
        return max(1, min(int(self.n_calls), int(config.get("jobqueue.max-auto-workers"))))

    def acquire(self) -> Any:
        """Return a client with at least one worker, starting a cluster if needed."""
        if self.client is not None:
            return self.client
        kind = self.kind
        if kind is None:
            client = self._given_client()
            self.client = client
            self._wait_for_workers(client)
            return client
        n = self._n_workers(kind)
        self.client = _setup(
            kind, n, self.partition,
            None if self.mem_per_worker == "auto" else self.mem_per_worker, None,
            self.setup_timeout, quiet=self.quiet, quiet_interrupts=True)
        if kind != "local":  # the other worker jobs join while the run goes on
            self.planned_slots = n[1] if isinstance(n, tuple) else n
        elif isinstance(n, tuple):
            self.planned_slots = n[1]
        self.started, self.started_kind = True, kind
        return self.client

    def _given_client(self) -> Any:
        if self.cluster is None:
            client = _running_client()
            log.info("using the running dask client %s", client)
            return client
        if _is_client(self.cluster):
            log.info("using the dask client %s", self.cluster)
            return self.cluster
        from distributed import Client

        cluster = self.cluster
        if self.n_workers != "auto":  # the run says how many workers the cluster keeps
            lo, hi = _bounds(self.n_workers)  # type: ignore[arg-type]
            if lo == hi:
                cluster.scale(lo)
            else:
                cluster.adapt(minimum=lo, maximum=hi)
            self.planned_slots = hi
        self.own_client = True
        log.info("using the dask cluster %s", cluster)
        return Client(cluster, set_as_default=False)

    def _wait_for_workers(self, client: Any) -> None:
        try:
            client.wait_for_workers(1, timeout=self.setup_timeout)
        except TimeoutError as exc:  # dask.distributed.TimeoutError is the builtin
            raise ClusterError(
                f"the dask client {client} has no workers after {self.setup_timeout:g} s: "
                "start workers, or close it (acme_xr.cluster_cleanup()) so that acme_xr "
                "starts a local cluster"
            ) from exc

    def n_worker_slots(self) -> int:
        """Worker threads available now, or planned (batch jobs join later); at least 1."""
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return max(1, self.planned_slots, sum(int(w.get("nthreads", 1)) for w in info.values()))

    @property
    def will_stop(self) -> bool:
        """Whether :meth:`release` closes the client (else the cluster outlives the run)."""
        return self.started if self.stop_client == "auto" else bool(self.stop_client)

    def release(self, hurry: bool = False) -> None:
        """Close the client/cluster if ``stop_client`` says so; idempotent.

        ``hurry`` (after a Ctrl-C): the worker processes of a local cluster this lease
        started are killed first instead of closed one by one (~1.6 s here), as the user
        wants the prompt back; what they were writing is left as temporary files, which
        the run removes.
        """
        client, self.client = self.client, None
        if client is None:
            return
        if self.will_stop:
            hurried = hurry and self.started_kind == "local"
            # killed workers make distributed log a closed-comm traceback per connection:
            # after a Ctrl-C the user sees the run's one message, not those
            with _silenced("distributed", "tornado.application") if hurried \
                    else contextlib.nullcontext():
                if hurried:
                    kill_local_workers(client)
                try:
                    if self.own_client:
                        client.close()
                        self.cluster.close()
                    else:
                        cluster_cleanup(client)
                except Exception as exc:  # a half-dead cluster must not hide the outcome
                    log.warning("closing the dask cluster failed: %s", exc)
        elif self.own_client:  # the user's cluster lives on; our client of it does not
            with contextlib.suppress(Exception):
                client.close()
