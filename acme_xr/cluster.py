"""Client lifecycle: reuse a running dask client, or start (and later stop) a local one.

A run uses the dask :class:`~distributed.Client` that is already running when there is one
and leaves it running. Otherwise it starts a :class:`~distributed.LocalCluster` of worker
processes (never more workers than calls or CPU cores) and closes it when the run ends,
unless ``stop_client=False``.

See :func:`local_cluster_setup` and :func:`cluster_cleanup` for examples.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

from dask.utils import parse_bytes

from . import config
from .errors import ClusterError, InputError, InputTypeError
from .guard import check_main_guard

__all__ = ["local_cluster_setup", "cluster_cleanup", "ClusterLease", "available_cores"]

log = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ask_yes(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def local_cluster_setup(
    n_workers: int | None = None,
    mem_per_worker: str | None = None,
    interactive: bool = False,
) -> Any:
    """Start a local dask cluster of worker processes and return a client of it.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes to start (default: one per available CPU core).
    mem_per_worker : str, optional
        Memory limit of each worker, e.g. ``"4GB"`` (default: dask's share of the machine).
    interactive : bool
        If True, first ask at the terminal whether a script calling this guards its code
        with ``if __name__ == "__main__":`` (worker processes re-import the main module);
        answering no returns None.

    Returns
    -------
    distributed.Client or None

    Examples
    --------
    >>> client = local_cluster_setup(n_workers=2, mem_per_worker="1GB")
    >>> len(client.scheduler_info(n_workers=-1)["workers"])
    2
    >>> cluster_cleanup(client)
    """
    if n_workers is not None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
    ):
        raise InputError(f"n_workers={n_workers!r} is not valid: give a whole number >= 1 or None")
    if not isinstance(interactive, bool):
        raise InputTypeError(f"interactive must be True or False, not {interactive!r}")
    memory: Any = "auto"
    if mem_per_worker not in (None, "auto"):
        try:
            memory = parse_bytes(mem_per_worker)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"mem_per_worker={mem_per_worker!r} is not a memory size: write e.g. '4GB'"
            ) from exc
    # its spawned workers import the main script again: unguarded, they would rerun it
    check_main_guard(lambda: True, "local_cluster_setup()")
    if interactive and sys.stdin is not None and sys.stdin.isatty():
        if not _ask_yes("If you run a script: is its code inside `if __name__ == '__main__':`?"):
            return None
    import multiprocessing

    from distributed import Client, LocalCluster
    from distributed.deploy.spec import SpecCluster

    known, known_procs = set(SpecCluster._instances), set(multiprocessing.active_children())
    try:
        cluster = LocalCluster(
            n_workers=n_workers or available_cores(),
            threads_per_worker=int(config.get("local.threads-per-worker")),
            processes=True,
            memory_limit=memory,
            dashboard_address=config.get("local.dashboard-address"),
        )
        client = Client(cluster)
        log.info("started %s", cluster)
    except BaseException:
        # Ctrl-C (or an error) half-way through the start: stop the worker processes that
        # are up already, or they outlive the call (in a notebook, until the kernel dies).
        # A half-started LocalCluster cannot always close itself (nannies still starting).
        for half in set(SpecCluster._instances) - known:
            with contextlib.suppress(Exception):
                half.close(timeout=10)
        for proc in set(multiprocessing.active_children()) - known_procs:
            proc.kill()
            proc.join(5)
        raise
    return client


def cluster_cleanup(client: Any = None) -> None:
    """Close a dask client and the cluster behind it.

    Parameters
    ----------
    client : distributed.Client, optional
        The client to close; by default the current default client, if any.

    Examples
    --------
    >>> cluster_cleanup()  # closes the running client; here there is none
    """
    from distributed import Client, default_client

    if client is None:
        try:
            client = default_client()
        except ValueError:
            log.info("no running dask client to close")
            return
    if not isinstance(client, Client):
        raise InputTypeError(f"client must be a distributed.Client or None, not {client!r}")
    cluster = client.cluster
    if cluster is None:
        client.shutdown()  # connected by address: stop scheduler and workers too
        return
    client.close()
    cluster.close()
    log.info("closed %s", cluster)


def _running_client() -> Any:
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


class ClusterLease:
    """A client for the duration of one run, closed afterwards as ``stop_client`` says.

    Parameters
    ----------
    n_calls : int
        Calls of the run (a local cluster never gets more workers than that).
    n_workers, mem_per_worker, partition, setup_timeout, stop_client
        :class:`~acme_xr.ParallelMap`'s keywords.
    """

    def __init__(
        self,
        n_calls: int,
        n_workers: int | str = "auto",
        mem_per_worker: str = "auto",
        partition: str = "auto",
        setup_timeout: float = 60,
        stop_client: bool | str = "auto",
    ) -> None:
        self.n_calls = n_calls
        self.n_workers = n_workers
        self.mem_per_worker = mem_per_worker
        self.partition = partition
        self.setup_timeout = setup_timeout
        self.stop_client = stop_client
        self.client: Any = None
        self.started = False
        self.planned_slots = 0

    def check(self) -> None:
        """Check what :meth:`acquire` will need (the SLURM partition) before a run creates
        anything; raises InputError or ClusterError."""
        if self.partition != "auto" and _running_client() is None:
            from .slurm import check_partition

            check_partition(self.partition)

    def acquire(self) -> Any:
        """Return a client with at least one worker, starting a cluster if needed."""
        if self.client is not None:
            return self.client
        client = _running_client()
        if client is not None:
            log.info("using the running dask client %s", client)
            self.client = client
            self._wait_for_workers(client)
            return client
        if self.partition != "auto":
            from .slurm import auto_n_workers, slurm_cluster_setup

            n = auto_n_workers(self.n_calls) if self.n_workers == "auto" else int(self.n_workers)
            self.client = slurm_cluster_setup(
                partition=self.partition,
                n_workers=n,
                mem_per_worker=None if self.mem_per_worker == "auto" else self.mem_per_worker,
                timeout=self.setup_timeout,
            )
            self.planned_slots = n  # the other worker jobs join while the run goes on
        else:
            n = (
                min(self.n_calls, available_cores())
                if self.n_workers == "auto"
                else int(self.n_workers)
            )
            self.client = local_cluster_setup(n_workers=max(1, n),
                                              mem_per_worker=self.mem_per_worker)
        self.started = True
        return self.client

    def _wait_for_workers(self, client: Any) -> None:
        deadline = time.monotonic() + self.setup_timeout
        while not client.scheduler_info(n_workers=-1).get("workers"):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the running dask client {client} has no workers after "
                    f"{self.setup_timeout:g} s: start workers, or close it "
                    "(acme_xr.cluster_cleanup()) so that acme_xr starts a local cluster"
                )
            time.sleep(0.1)

    def n_worker_slots(self) -> int:
        """Worker threads available now, or planned (SLURM jobs join later); at least 1."""
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return max(1, self.planned_slots, sum(int(w.get("nthreads", 1)) for w in info.values()))

    @property
    def will_stop(self) -> bool:
        """Whether :meth:`release` closes the client (else the cluster outlives the run)."""
        return self.started if self.stop_client == "auto" else bool(self.stop_client)

    def release(self) -> None:
        """Close the client/cluster if ``stop_client`` says so; idempotent."""
        client, self.client = self.client, None
        if client is None:
            return
        if self.will_stop:
            try:
                cluster_cleanup(client)
            except Exception as exc:  # a half-dead cluster must not hide the run's outcome
                log.warning("closing the dask cluster failed: %s", exc)
