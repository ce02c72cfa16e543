"""Batch systems through dask-jobqueue: the job scripts acme_xr's settings make.

PBS, SGE, LSF and HTCondor cannot run here (no qsub, bsub or condor_submit on this machine,
and no way to install their servers): these tests build the cluster object -- a real
scheduler, no job submitted -- and check ``cluster.job_script()`` line by line, with the
site's settings read from a ``jobqueue.yaml`` file as dask reads it. SLURM runs for real
in tests/test_slurm.py, which checks the same settings on its jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
import yaml

from acme_xr import ParallelMap, cluster_setup
from acme_xr.errors import InputError, InputTypeError
from acme_xr.jobcluster import jobqueue_cluster
from acme_xr.jobqueue import _classes, job_settings

from .processes import live_children

SITE_YAML = """
jobqueue:
  pbs:
    account: lab42
    queue: workq
    memory: 6GB
    cores: 2
    walltime: "02:00:00"
    interface: ib0
    job-extra-directives: ["-l software=matlab"]
    scheduler-options: {interface: lo}
  sge:
    project: proj7
    queue: all.q
    memory: 4GB
    walltime: "01:00:00"
    resource-spec: "h_vmem=4G"
    interface: ib0
    job-extra-directives: ["-pe smp 1"]
    scheduler-options: {interface: lo}
  lsf:
    project: proj9
    queue: normal
    memory: 8GB
    cores: 4
    walltime: "03:00"
    interface: ib0
    job-extra-directives: ["-R select[avx]"]
    scheduler-options: {interface: lo}
  htcondor:
    memory: 3GB
    disk: 10GB
    interface: ib0
    job-extra-directives: {"+AccountingGroup": '"lab42"'}
    scheduler-options: {interface: lo}
  slurm:
    account: lab42
    queue: small
    memory: 500MB
    walltime: "00:10:00"
    job-extra-directives: ["--qos=normal"]
"""


def site_config(path: Path) -> dict[str, Any]:
    """The config dask has once a site's jobqueue.yaml at ``path`` is loaded: its values
    over dask-jobqueue's defaults."""
    _classes()  # dask-jobqueue's defaults are in dask.config once it is imported
    site = yaml.safe_load(path.read_text())
    return dask.config.merge({"jobqueue": dask.config.get("jobqueue")}, site)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A site's jobqueue.yaml in effect, job logs in tmp_path."""
    path = tmp_path / "jobqueue.yaml"
    path.write_text(SITE_YAML)
    with dask.config.set(site_config(path)), \
            dask.config.set({"acme_xr.jobqueue.log-directory": str(tmp_path / "logs")}):
        yield tmp_path / "logs"


def script(kind: str, **explicit: Any) -> list[str]:
    """The lines of a worker job script of ``kind`` (no job is submitted)."""
    cluster = jobqueue_cluster(kind, job_settings(kind, explicit))
    try:
        return [line for line in cluster.job_script().splitlines() if line.strip()]
    finally:
        cluster.close()


def directives(lines: list[str], prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in lines if line.startswith(prefix)]


def worker_args(lines: list[str]) -> list[str]:
    (command,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    return command.split("distributed.cli.dask_worker", 1)[1].strip(" '\"").split()


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_pbs_job_script(site: Path) -> None:
    lines = script("pbs")
    assert lines[0] == "#!/usr/bin/env bash"
    assert directives(lines, "#PBS") == [
        "-N acme_xr-worker",                     # acme_xr's job name (the site set none)
        "-q workq",                              # site queue
        "-A lab42",                              # site account
        "-l select=1:ncpus=2:mem=5723MB",        # site cores and memory (6GB = 5723 MiB)
        "-l walltime=02:00:00",                  # site walltime
        f"-e {site}/",
        f"-o {site}/",
        "-l software=matlab",                    # site job-extra-directives, last
    ]
    args = worker_args(lines)
    assert flag(args, "--nthreads") == "2" and flag(args, "--interface") == "ib0"
    # retires 5 minutes before the 2 h walltime, staggered: the job ends before PBS kills it
    assert flag(args, "--lifetime") == "6900s" and flag(args, "--lifetime-stagger") == "75s"
    assert lines[-1].startswith(sys.executable)


def test_sge_job_script(site: Path) -> None:
    lines = script("sge")
    assert directives(lines, "#$") == [
        "-N acme_xr-worker",
        "-q all.q",
        "-P proj7",                              # SGE's project is the account
        "-l h_vmem=4G",                          # site resource-spec
        "-l h_rt=01:00:00",                      # site walltime
        f"-e {site}/",
        f"-o {site}/",
        "-cwd",
        "-j y",
        "-pe smp 1",
    ]
    args = worker_args(lines)
    assert flag(args, "--nthreads") == "1"       # acme_xr's one core (the site set none)
    assert flag(args, "--memory-limit") == "3.73GiB"  # site memory 4GB
    assert flag(args, "--lifetime") == "3300s" and flag(args, "--interface") == "ib0"


def test_lsf_job_script(site: Path) -> None:
    lines = script("lsf")
    assert directives(lines, "#BSUB") == [
        "-J acme_xr-worker",
        f"-e {site}/dummy-name-%J.err",
        f"-o {site}/dummy-name-%J.out",
        "-q normal",
        '-P "proj9"',
        "-n 4",                                  # site cores
        '-R "span[hosts=1]"',
        "-M 8000000",                            # site memory in KB (LSF_UNIT_FOR_LIMITS)
        "-W 03:00",                              # LSF's walltime is hours:minutes
        "-R select[avx]",
    ]
    args = worker_args(lines)
    assert flag(args, "--nthreads") == "4"
    # 3 h read as LSF's H:M, not as minutes:seconds
    assert flag(args, "--lifetime") == "10500s"


def test_htcondor_job_script(site: Path) -> None:
    lines = script("htcondor")
    assert lines[0] == "#!/usr/bin/env condor_submit"
    assert "MY.DaskWorkerCores = 1" in lines     # acme_xr's one core
    assert "MY.DaskWorkerMemory = 3000000000" in lines  # site memory
    assert "MY.DaskWorkerDisk = 10000000000" in lines   # site disk
    assert "RequestMemory = floor(MY.DaskWorkerMemory / 1048576)" in lines
    assert f"LogDirectory = {site}" in lines
    assert '+AccountingGroup = "lab42"' in lines  # site job-extra-directives
    assert lines[-1] == "Queue"
    args = worker_args(lines)
    assert flag(args, "--interface") == "ib0"
    assert "--lifetime" not in args  # HTCondor jobs have no walltime to retire before


def test_slurm_job_script_takes_the_site_account_and_queue_unchanged(site: Path) -> None:
    lines = script("slurm")
    assert directives(lines, "#SBATCH") == [
        "-J acme_xr-worker",
        f"-e {site}/acme_xr-worker-%J.err",
        f"-o {site}/acme_xr-worker-%J.out",
        "-p small",
        "-A lab42",
        "-n 1",
        "--cpus-per-task=1",
        "--mem=477M",
        "-t 00:10:00",
        "--qos=normal",
    ]
    assert flag(worker_args(lines), "--lifetime") == "450s"


@pytest.mark.parametrize("kind, keyword, prefix, line", [
    ("pbs", "account", "#PBS", "-A preset"),
    ("slurm", "account", "#SBATCH", "-A preset"),
    ("sge", "project", "#$", "-P preset"),
])
def test_an_acme_xr_preset_beats_the_site_and_a_keyword_beats_both(
        site: Path, kind: str, keyword: str, prefix: str, line: str) -> None:
    with dask.config.set({f"acme_xr.jobqueue.{kind}.{keyword}": "preset"}):
        assert line in directives(script(kind), prefix)
        explicit = directives(script(kind, **{keyword: "mine"}), prefix)
    assert line.replace("preset", "mine") in explicit and line not in explicit


def test_partition_is_the_queue_of_the_chosen_system(site: Path) -> None:
    settings = job_settings("pbs", {"queue": "long"})
    assert settings["queue"] == "long"
    assert "-q long" in directives(script("pbs", queue="long"), "#PBS")


def test_acme_xrs_fallbacks_apply_only_where_the_site_says_nothing() -> None:
    _classes()
    plain = job_settings("pbs")
    assert (plain["cores"], plain["processes"], plain["memory"]) == (1, 1, "2GB")
    assert plain["job_name"] == "acme_xr-worker"
    # dask-jobqueue's default walltime (30 min): retire 5 minutes before
    assert plain["worker_extra_args"] == ["--lifetime", "1500s", "--lifetime-stagger", "75s"]
    with dask.config.set({"jobqueue.pbs.memory": "9GB", "jobqueue.pbs.cores": 3,
                          "jobqueue.pbs.name": "site-worker",
                          "jobqueue.pbs.worker-extra-args": ["--lifetime", "1h"]}):
        site = job_settings("pbs")
    # not passed: dask-jobqueue reads them from the site's settings
    assert not {"memory", "cores", "job_name", "worker_extra_args"} & set(site)


def test_the_packaged_settings_set_no_jobqueue_value() -> None:
    """acme_xr's YAML must not mask a site's jobqueue.yaml: it sets nothing below
    ``jobqueue`` and no per-kind preset below ``acme_xr.jobqueue``."""
    import acme_xr

    path = os.path.join(os.path.dirname(acme_xr.__file__), "acme_xr.yaml")
    packaged = yaml.safe_load(open(path, encoding="utf-8"))
    assert set(packaged) == {"acme_xr"}
    presets = set(packaged["acme_xr"]["jobqueue"]) & {"slurm", "pbs", "sge", "lsf", "htcondor"}
    assert presets == set()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"kind": "k8s"}, InputError, r"cluster='k8s' .* 'local', 'slurm', 'pbs', 'sge', 'lsf', 'htcondor'"),
    ({"kind": 3}, InputError, r"cluster=3"),
    ({"kind": "pbs", "n_workers": (3, 1)}, InputError, r"n_workers=\(3, 1\).*\(minimum, maximum\)"),
    ({"kind": "pbs", "n_workers": (1, 2, 3)}, InputError, r"n_workers=\(1, 2, 3\)"),
    ({"kind": "pbs", "n_workers": 0}, InputError, r"n_workers=0"),
    ({"kind": "pbs", "n_workers": "many"}, InputError, r"n_workers='many'"),
    ({"kind": "pbs", "n_workers": 1.5}, InputError, r"n_workers=1.5"),
    ({"kind": "pbs", "n_workers": None, "cores": 0}, InputError, r"cores=0"),
    ({"kind": "pbs", "mem_per_worker": "lots"}, InputError, r"mem_per_worker='lots'.*'4GB'"),
    ({"kind": "pbs", "timeout": -1}, InputError, r"timeout=-1"),
    ({"kind": "local", "partition": "debug"}, InputError, r"partition='debug'.*cluster='slurm'"),
    ({"kind": "htcondor", "partition": "q"}, InputError, r"partition='q'.*htcondor has no queues"),
])
def test_cluster_setup_refuses_bad_input_before_any_cluster_starts(
        kwargs: dict[str, Any], error: type, match: str) -> None:
    before = len(live_children())
    with pytest.raises(error, match=match):
        cluster_setup(**kwargs)
    assert len(live_children()) <= before


def double(x: int) -> int:
    return 2 * x


@pytest.mark.parametrize("kwargs, error, match", [
    ({"cluster": "k8s"}, InputError, r"cluster='k8s'"),
    ({"cluster": 42}, InputTypeError, r"cluster must be None, a kind"),
    ({"n_workers": (0, 0)}, InputError, r"n_workers=\(0, 0\)"),
    ({"n_workers": (2, 1)}, InputError, r"n_workers=\(2, 1\)"),
    ({"cluster": "local", "partition": "debug"}, InputError, r"partition='debug'"),
])
def test_parallelmap_refuses_a_bad_cluster_before_any_file(
        tmp_path: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ParallelMap(double, [1, 2], **kwargs).compute()
    assert os.listdir(tmp_path) == []


def test_walltimes_are_read_in_each_systems_notation() -> None:
    from acme_xr.jobqueue import walltime_seconds

    assert walltime_seconds("slurm", "2-03:00") == (2 * 24 + 3) * 3600
    assert walltime_seconds("slurm", "90") == 90 * 60
    assert walltime_seconds("slurm", "10:30") == 10 * 60 + 30
    assert walltime_seconds("lsf", "10:30") == 10 * 3600 + 30 * 60
    assert walltime_seconds("pbs", "bogus") is None
    assert re.fullmatch(r"\d+s", job_settings("slurm", {"walltime": "5"})
                        ["worker_extra_args"][1])


@pytest.mark.parametrize("kind, command", [("pbs", "qsub"), ("sge", "qsub"), ("lsf", "bsub"),
                                           ("htcondor", "condor_submit")])
def test_a_batch_system_without_its_submit_command_fails_before_any_file(
        tmp_path: Path, kind: str, command: str) -> None:
    from acme_xr.errors import ClusterError

    if shutil.which(command) is not None:
        pytest.skip(f"`{command}` exists on this machine: the error cannot happen here")
    with pytest.raises(ClusterError, match=rf"cluster='{kind}' .*`{command}`.*cluster='local'"):
        ParallelMap(double, [1, 2], cluster=kind).compute()
    assert os.listdir(tmp_path) == []


def test_adaptive_from_zero_workers_starts_them_when_work_comes(tmp_path: Path) -> None:
    out = ParallelMap(double, list(range(6)), n_workers=(0, 2), write_worker_results=False,
                      verbose=False).compute()
    assert out == [0, 2, 4, 6, 8, 10]
