"""Worker jobs on a batch system through dask-jobqueue: SLURM, PBS, SGE, LSF, HTCondor.

acme_xr never re-implements a batch system: :mod:`acme_xr.jobcluster` picks dask-jobqueue's
class by name (``"pbs"`` -> ``PBSCluster``, whose ``config_name`` is ``pbs``) and only decides
the settings it passes. They come, for each setting, from the first of

1. an explicit keyword (``partition`` is the system's queue),
2. acme_xr's presets ``acme_xr.jobqueue.<kind>.*`` in dask.config (none are packaged),
3. the site's ``jobqueue.yaml`` (``jobqueue.<kind>.*`` in dask.config),
4. acme_xr's fallbacks where dask-jobqueue has no usable default (one core and one process
   per job, ``acme_xr.jobqueue.memory-per-core`` of memory, the job name ``acme_xr-worker``,
   a worker lifetime shorter than the walltime),
5. dask-jobqueue's own defaults.

A site value (3) is one that differs from dask-jobqueue's packaged ``jobqueue.yaml``, so the
fallbacks (4) never mask what a site configured.

Examples
--------
>>> kwargs = job_settings("pbs", {"queue": "short"})
>>> kwargs["queue"], kwargs["cores"], kwargs["processes"], kwargs["job_name"]
('short', 1, 1, 'acme_xr-worker')
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import shutil
import signal
import threading
from typing import Any

import dask.config
import yaml
from dask.utils import format_bytes, parse_bytes

from . import config
from .errors import ClusterError, InputError

__all__ = ["KINDS", "SUBMIT", "job_settings", "site_value", "lifetime_args",
           "walltime_seconds", "check_submit_command"]

log = logging.getLogger(__name__)

# kind -> dask-jobqueue's class; the kind is also the class's config_name
KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
# keyword of the cluster class -> its key in jobqueue.<kind> where the two differ
_CONFIG_KEY = {"job_name": "name"}
# systems without a queue to choose (HTCondor matches jobs to machines by requirements)
_NO_QUEUE = ("htcondor",)
# the command dask-jobqueue submits worker jobs with
SUBMIT = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub",
          "htcondor": "condor_submit"}


def check_submit_command(kind: str) -> None:
    """Refuse a batch system whose submit command is not on this machine, before anything
    is created (else the first job would fail only once the run has started).

    Examples
    --------
    >>> check_submit_command("htcondor")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    acme_xr.errors.ClusterError: cluster='htcondor' submits worker jobs with `condor_submit`, ...
    """
    command = SUBMIT[_check_kind(kind)]
    if shutil.which(command) is None:
        raise ClusterError(
            f"cluster={kind!r} submits worker jobs with `{command}`, which is not on this "
            f"machine's PATH: run on a submit node of the {kind.upper()} cluster, or choose "
            "another cluster (cluster='local' runs here)")


def _check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind.lower() not in KINDS:
        valid = ", ".join(repr(k) for k in ("local", *KINDS))
        raise InputError(
            f"cluster={kind!r} is not a kind of cluster acme_xr can start: give one of {valid}, "
            "a distributed.Client or a dask Cluster object")
    return kind.lower()


@functools.cache
def _packaged_defaults() -> dict[str, Any]:
    """dask-jobqueue's own ``jobqueue.yaml`` (read, not imported: see :func:`_classes`)."""
    spec = importlib.util.find_spec("dask_jobqueue")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = os.path.join(list(spec.submodule_search_locations)[0], "jobqueue.yaml")
    with open(path, encoding="utf-8") as fh:
        return dict(yaml.safe_load(fh).get("jobqueue", {}))


def site_value(kind: str, keyword: str) -> Any:
    """The site's setting ``jobqueue.<kind>.<key>`` for a cluster keyword, or None when the
    site left dask-jobqueue's default.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"jobqueue.pbs.account": "lab42"}):
    ...     site_value("pbs", "account"), site_value("pbs", "walltime")
    ('lab42', None)
    """
    key = _CONFIG_KEY.get(keyword, keyword).replace("_", "-")
    value = dask.config.get(f"jobqueue.{kind}.{key}", None)
    default = _packaged_defaults().get(kind, {}).get(key)
    return None if value is None or value == default else value


def _presets(kind: str) -> dict[str, Any]:
    """acme_xr's presets of this kind, as keywords of the cluster class."""
    presets = dask.config.get(f"acme_xr.jobqueue.{kind}", None) or {}
    if not isinstance(presets, dict):
        raise InputError(f"the setting acme_xr.jobqueue.{kind} must be a mapping of "
                         f"dask-jobqueue settings (e.g. account: lab42), not {presets!r}")
    return {_keyword(k): v for k, v in presets.items()}


def _keyword(key: str) -> str:
    key = key.replace("-", "_")
    return "job_name" if key == "name" else key


def walltime_seconds(kind: str, walltime: Any) -> int | None:
    """A walltime in the system's notation as seconds (None: none or not understood).

    SLURM reads ``M``, ``M:S``, ``H:M:S``, ``D-H`` ... ``D-H:M:S``; LSF ``H:M`` or ``M``;
    PBS and SGE ``H:M:S``.

    Examples
    --------
    >>> walltime_seconds("slurm", "00:02:00"), walltime_seconds("slurm", "1-00:00:00")
    (120, 86400)
    >>> walltime_seconds("slurm", "5"), walltime_seconds("lsf", "01:30")
    (300, 5400)
    """
    if walltime is None:
        return None
    text = str(walltime).strip()
    days = 0
    m = re.fullmatch(r"(\d+)-(.*)", text)
    if m is not None:
        days, text = int(m.group(1)), m.group(2)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    nums = [int(p) for p in parts]
    if m is not None:  # SLURM's days-hours[:minutes[:seconds]]
        nums = nums + [0] * (3 - len(nums))
    elif len(nums) == 1:
        nums = [0, nums[0], 0]  # minutes (SLURM, LSF)
    elif len(nums) == 2:
        nums = [nums[0], nums[1], 0] if kind == "lsf" else [0, nums[0], nums[1]]
    hours, minutes, seconds = nums
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def lifetime_args(seconds: int | None) -> list[str]:
    """dask worker arguments that retire a worker before its job's walltime ends.

    A worker past its ``--lifetime`` hands its data over and exits gracefully, its job
    ends, and the adaptive cluster submits a new job: the run goes on. The margin is a
    quarter of the walltime, at most 5 minutes; ``--lifetime-stagger`` (a quarter of the
    margin) keeps the workers from retiring all at once.

    Examples
    --------
    >>> lifetime_args(3600)
    ['--lifetime', '3300s', '--lifetime-stagger', '75s']
    >>> lifetime_args(120), lifetime_args(30), lifetime_args(None)
    (['--lifetime', '90s', '--lifetime-stagger', '7s'], [], [])
    """
    if seconds is None or seconds < 60:
        return []
    margin = min(300, seconds // 4)
    return ["--lifetime", f"{seconds - margin}s", "--lifetime-stagger", f"{max(1, margin // 4)}s"]


def _fallback_memory(cores: int) -> str:
    per_core = config.get("jobqueue.memory-per-core")
    if cores == 1:  # as written: "2GB" stays 2 GB, not its rounding "1.86GiB"
        return str(per_core).replace(" ", "")
    return format_bytes(cores * parse_bytes(per_core)).replace(" ", "")


def job_settings(kind: str, explicit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keywords acme_xr passes to dask-jobqueue's class for ``kind``.

    Keys missing from the result are left to dask-jobqueue, which reads them from
    ``jobqueue.<kind>`` (the site's jobqueue.yaml or its own defaults).

    Parameters
    ----------
    kind : str
        ``"slurm"``, ``"pbs"``, ``"sge"``, ``"lsf"`` or ``"htcondor"``.
    explicit : dict, optional
        Keywords given by the caller; they win over everything.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"jobqueue.sge.memory": "8GB", "acme_xr.jobqueue.sge.project": "x"}):
    ...     s = job_settings("sge", {"cores": 2})
    >>> "memory" in s, s["project"], s["cores"]
    (False, 'x', 2)
    """
    kind = _check_kind(kind)
    _classes()  # dask-jobqueue's import puts its defaults under the site's settings
    kwargs = {**_presets(kind), **(explicit or {})}

    def unset(keyword: str) -> bool:
        return kwargs.get(keyword) is None and site_value(kind, keyword) is None

    for keyword, value in (("cores", 1), ("processes", 1), ("job_name", "acme_xr-worker")):
        if unset(keyword):
            kwargs[keyword] = value
    if unset("memory"):
        cores = kwargs.get("cores") or site_value(kind, "cores") or 1
        kwargs["memory"] = _fallback_memory(int(cores))
    if kind == "htcondor" and unset("disk"):
        kwargs["disk"] = kwargs["memory"] if kwargs.get("memory") else site_value(kind, "memory")
    # the site's extra worker arguments stay; the lifetime is added unless one is there
    extra = list(kwargs.get("worker_extra_args") or site_value(kind, "worker_extra_args") or [])
    if not any(str(a).startswith("--lifetime") for a in extra):
        walltime = kwargs.get("walltime") or dask.config.get(f"jobqueue.{kind}.walltime", None)
        lifetime = lifetime_args(walltime_seconds(kind, walltime))
        if lifetime:
            kwargs["worker_extra_args"] = extra + lifetime
    options = dict(site_value(kind, "scheduler_options") or {})
    options.update(kwargs.get("scheduler_options") or {})
    options.setdefault("dashboard_address", config.get("jobqueue.dashboard-address"))
    kwargs["scheduler_options"] = options
    return kwargs


@functools.cache
def _classes() -> dict[str, Any]:
    """dask-jobqueue's cluster classes by kind, imported on first use.

    dask-jobqueue 0.9 installs a SIGINT handler that calls ``sys.exit()`` when it is
    imported (``dask_jobqueue/runner.py``): Ctrl-C would then raise SystemExit instead of
    KeyboardInterrupt. The import therefore happens here, never at acme_xr's import, and
    the previous handler is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ClusterError(
            "start a batch-system cluster from the main thread: dask-jobqueue installs a "
            "signal handler when it is imported, which only the main thread may do")
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    finally:
        signal.signal(signal.SIGINT, previous)
    return {kind: getattr(dask_jobqueue, name) for kind, name in KINDS.items()}
