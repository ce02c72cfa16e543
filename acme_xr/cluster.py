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
import numbers
import os
import sys
from collections.abc import Iterator
from typing import Any

from dask.utils import parse_bytes

from . import config
from .errors import ClusterError, InputError, InputTypeError
from .guard import check_main_guard
from .runlog import ALREADY_SHOWN

__all__ = ["cluster_setup", "local_cluster_setup", "cluster_cleanup", "available_cores",
           "check_n_workers"]

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


def check_n_workers(value: Any, allow_auto: bool = True) -> int | str | tuple[int, int]:
    """Check ``n_workers``: a whole number >= 1, ``"auto"``, or a ``(minimum, maximum)``
    pair of them for adaptive workers (``cluster.adapt(minimum, maximum)``).

    Examples
    --------
    >>> check_n_workers(4), check_n_workers((1, 4)), check_n_workers([2, 2])
    (4, (1, 4), (2, 2))
    >>> check_n_workers((4, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    acme_xr.errors.InputError: n_workers=(4, 1) is not valid: give a whole number >= 1, ...
    """
    allowed = ("a whole number >= 1, 'auto' or (minimum, maximum) with 0 <= minimum <= "
               "maximum and maximum >= 1, e.g. (1, 4)")
    if isinstance(value, str) and allow_auto and value == "auto":
        return value
    if isinstance(value, (tuple, list)):
        if (len(value) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                    for v in value)
                and 0 <= value[0] <= value[1] and value[1] >= 1):
            return int(value[0]), int(value[1])
        raise InputError(f"n_workers={tuple(value)!r} is not valid: give {allowed}")
    if isinstance(value, str):
        raise InputError(f"n_workers={value!r} is not valid: give {allowed}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"n_workers must be {allowed}, not {value!r} "
                             f"({type(value).__name__})")
    if not float(value).is_integer() or value < 1:
        raise InputError(f"n_workers={value!r} is not valid: give {allowed}")
    return int(value)  # type: ignore[call-overload]


def _bounds(n_workers: int | tuple[int, int]) -> tuple[int, int]:
    return n_workers if isinstance(n_workers, tuple) else (n_workers, n_workers)


def _announce(client: Any, quiet: bool = False) -> None:
    """Say where the new cluster's dashboard is, as ACME does (nothing without one)."""
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (disabled, or bokeh missing)
        link = None
    if not link:
        return
    if not quiet:
        print(f"acme_xr: dask dashboard at {link}")
    # printed: the run's console handler leaves the line to the log file
    log.info("dask dashboard: %s", link, extra={ALREADY_SHOWN: not quiet})


def local_cluster_setup(
    n_workers: int | tuple[int, int] | None = None,
    mem_per_worker: str | None = None,
    interactive: bool = False,
    **cluster_kwargs: Any,
) -> Any:
    """Start a local dask cluster of worker processes and return a client of it.

    Parameters
    ----------
    n_workers : int or (int, int), optional
        Worker processes to start (default: one per available CPU core); a pair
        ``(minimum, maximum)`` makes the cluster adaptive.
    mem_per_worker : str, optional
        Memory limit of each worker, e.g. ``"4GB"`` (default: dask's share of the machine).
    interactive : bool
        If True, first ask at the terminal whether a script calling this guards its code
        with ``if __name__ == "__main__":`` (worker processes re-import the main module);
        answering no returns None.
    **cluster_kwargs
        Passed to :class:`distributed.LocalCluster`.

    Returns
    -------
    distributed.Client or None
        A client of the new cluster, also dask's default client; None when the question
        asked with ``interactive=True`` was answered no.

    Examples
    --------
    >>> client = local_cluster_setup(n_workers=2, mem_per_worker="1GB")  # doctest: +ELLIPSIS
    acme_xr: dask dashboard at http://.../status
    >>> len(client.scheduler_info(n_workers=-1)["workers"])
    2
    >>> cluster_cleanup(client)
    """
    return _local(n_workers, mem_per_worker, interactive, **cluster_kwargs)


def _local(n_workers: Any, mem_per_worker: str | None, interactive: bool,
           quiet: bool = False, timeout: float = 60, quiet_interrupts: bool = False,
           **cluster_kwargs: Any) -> Any:
    n = (available_cores(),) * 2
    if n_workers is not None:
        n = _bounds(check_n_workers(n_workers, allow_auto=False))  # type: ignore[arg-type]
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

    known_procs = set(multiprocessing.active_children())
    kwargs = {"threads_per_worker": int(config.get("local.threads-per-worker")),
              "processes": True, "memory_limit": memory,
              "dashboard_address": config.get("local.dashboard-address"), **cluster_kwargs}
    cluster = client = None
    try:
        # the scheduler first, the workers after: a Ctrl-C (or an error) half-way through
        # then finds the cluster object here to close, instead of worker processes that
        # outlive the call (in a notebook, until the kernel dies)
        cluster = LocalCluster(n_workers=0, **kwargs)
        client = Client(cluster)
        if quiet_interrupts:  # a Ctrl-C is the client's to handle: no worker tracebacks
            from .interrupt import PLUGIN_NAME, quiet_workers_plugin

            client.register_plugin(quiet_workers_plugin(), name=PLUGIN_NAME)
        if n[0] == n[1]:
            cluster.scale(n[0])
        else:
            cluster.adapt(minimum=n[0], maximum=n[1])
        if n[0] > 0:  # with 0, workers start only once there is work
            try:
                client.wait_for_workers(n[0], timeout=timeout)
            except TimeoutError as exc:  # a worker that cannot start must not hang the run
                raise ClusterError(
                    f"only {len(cluster.workers)} of {n[0]} local dask workers started within "
                    f"{timeout:g} s: see the errors above, or raise setup_timeout") from exc
        log.info("started %s", cluster)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        with (_silenced("distributed", "tornado.application") if interrupted
              else contextlib.nullcontext()):
            if interrupted:  # Ctrl-C: the user wants out now, not a graceful start-up
                _kill_new(known_procs)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=2 if interrupted else None)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=2 if interrupted else 10)
            _kill_new(known_procs)
        raise
    _announce(client, quiet)
    return client


def kill_local_workers(client: Any) -> None:
    """SIGKILL the worker processes of the LocalCluster behind ``client`` (its nannies,
    in this process, then close at once instead of waiting for each worker to stop)."""
    import signal

    from distributed.core import Status

    nannies = list(getattr(getattr(client, "cluster", None), "workers", {}).values())
    for nanny in nannies:
        # what Nanny.close_gracefully says first: the process we kill is not replaced
        nanny.status = Status.closing_gracefully
        pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _kill_new(known: set[Any]) -> None:
    """Kill the worker processes started since ``known`` was taken."""
    import multiprocessing

    for proc in set(multiprocessing.active_children()) - known:
        proc.kill()
        proc.join(5)


@contextlib.contextmanager
def _silenced(*names: str) -> Iterator[None]:
    """Keep these loggers quiet while the block runs (a cluster torn down half-started
    logs a traceback for every worker it was starting)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def cluster_setup(
    kind: str = "local",
    n_workers: int | tuple[int, int] | None = None,
    partition: str = "auto",
    mem_per_worker: str | None = None,
    cores: int | None = None,
    timeout: float = 60,
    **cluster_kwargs: Any,
) -> Any:
    """Start a dask cluster of ``kind`` and return a client of it (also the default client).

    ``"local"`` starts a :class:`distributed.LocalCluster`; ``"slurm"``, ``"pbs"``, ``"sge"``,
    ``"lsf"`` and ``"htcondor"`` submit worker jobs with dask-jobqueue's class of that name
    (``SLURMCluster``, ...) and return once the first worker has connected; the other jobs
    join while work runs, and a job that ends (walltime, cancelled, preempted) is replaced.

    Each setting of the worker jobs comes from the first of: the keyword given here; the
    setting ``acme_xr.jobqueue.<kind>.<key>`` in dask.config; the site's ``jobqueue.yaml``
    (``jobqueue.<kind>.<key>``); acme_xr's fallbacks (one core and one process per job,
    ``acme_xr.jobqueue.memory-per-core`` (2GB) of memory per core, the job name
    ``acme_xr-worker``, ``--lifetime`` a little shorter than the walltime); dask-jobqueue's
    defaults. See docs/clusters.md.

    Parameters
    ----------
    kind : str
        ``"local"``, ``"slurm"``, ``"pbs"``, ``"sge"``, ``"lsf"`` or ``"htcondor"``.
    n_workers : int or (int, int), optional
        Workers (worker jobs) to keep running; ``(minimum, maximum)``: adaptive, dask scales
        between the two with the load. Default: one per core (local), one job otherwise.
    partition : str
        The queue of the worker jobs (SLURM: the partition, checked against ``sinfo``);
        ``"auto"``: the site's ``jobqueue.<kind>.queue`` or the system's default queue.
    mem_per_worker : str, optional
        Memory of each worker, e.g. ``"4GB"``: the job's memory and the worker's limit.
    cores : int, optional
        Cores (dask threads) per worker job.
    timeout : float
        Seconds to wait for the first worker job to connect.
    **cluster_kwargs
        Passed to the cluster class (``walltime``, ``account``, ``job_extra_directives``,
        ``interface``, ...).

    Returns
    -------
    distributed.Client
        A client of the new cluster, also dask's default client: a ParallelMap started
        after it runs there. Close both with :func:`acme_xr.cluster_cleanup`.

    Raises
    ------
    InputError, InputTypeError
        An unknown ``kind``, a bad ``n_workers``, ``cores``, ``mem_per_worker`` or
        ``timeout``, an unknown SLURM partition: before any cluster starts.
    ClusterError
        No batch system here, the jobs were refused, or no worker connected in ``timeout``
        seconds (the jobs are cancelled then).

    Examples
    --------
    >>> client = cluster_setup("local", n_workers=(1, 2))  # doctest: +ELLIPSIS
    acme_xr: dask dashboard at http://.../status
    >>> client.submit(sum, [1, 2]).result()
    3
    >>> cluster_cleanup(client)
    >>> client = cluster_setup("pbs", n_workers=(0, 10), walltime="04:00:00")  # doctest: +SKIP
    """
    return _setup(kind, n_workers, partition, mem_per_worker, cores, timeout, **cluster_kwargs)


def _setup(kind: Any, n_workers: Any, partition: Any, mem_per_worker: Any, cores: Any,
           timeout: Any, quiet: bool = False, quiet_interrupts: bool = False,
           **cluster_kwargs: Any) -> Any:
    from .jobcluster import start_jobqueue
    from .jobqueue import _check_kind

    if not (isinstance(kind, str) and kind.lower() == "local"):
        kind = _check_kind(kind)
    else:
        kind = "local"
    if n_workers is not None:
        n_workers = check_n_workers(n_workers, allow_auto=False)
    if not isinstance(partition, str) or not partition.strip():
        raise InputError(f"partition={partition!r} is not valid: give 'auto' or the name of a "
                         "queue (SLURM partition)")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
        raise InputError(f"cores={cores!r} is not valid: give a whole number >= 1")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InputError(f"timeout={timeout!r} is not valid: give a number of seconds >= 0")
    if mem_per_worker not in (None, "auto"):
        try:
            parse_bytes(mem_per_worker)
        except (TypeError, ValueError) as exc:
            raise InputError(f"mem_per_worker={mem_per_worker!r} is not a memory size: write "
                             "e.g. '4GB'") from exc
    if kind == "local":
        if partition != "auto":
            raise InputError(f"partition={partition!r} needs a batch system: give cluster="
                             "'slurm' (or 'pbs', ...), or leave partition='auto'")
        if cores is not None:
            cluster_kwargs.setdefault("threads_per_worker", cores)
        return _local(n_workers, mem_per_worker, False, quiet=quiet, timeout=max(timeout, 1),
                      quiet_interrupts=quiet_interrupts, **cluster_kwargs)
    client = start_jobqueue(kind, _bounds(n_workers or 1), partition, mem_per_worker, cores,
                            timeout, **cluster_kwargs)
    _announce(client, quiet)
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
