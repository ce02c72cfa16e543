"""ParallelMap: run a function once per input on a dask cluster and keep every result.

See :class:`ParallelMap` for an example.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .acme_compat import AcmeAttributes
from .collect import Collector, ManifestWriter
from .dryrun import confirm, dry_run
from .engine import execute
from .errors import InputError, InputTypeError
from .guard import check_main_guard
from .inputs import distribute
from .interrupt import interrupted_message, redelivered
from .layout import RunLayout, remove_old_runs
from .lease import ClusterLease
from .manifest import DONE, Manifest
from .options import validate_options
from .reprs import html_repr, text_repr
from .rerun import record_call
from .run_lifecycle import _check_resumable as _check_resumable  # tests import it from here
from .run_lifecycle import (
    _deferred_interrupts,
    finish_run,
    logfile_path,
    open_manifest,
    previous_run,
    record_interruption,
    run_fingerprint,
    run_header,
)
from .run_outcome import memory_results, memory_values, run_outcome
from .runlock import RunLock, process_record
from .runlog import run_logging
from .shipping import ship_runner
from .storage.memory import StackedResults
from .storage.zarr_batch import chunk_batcher
from .worker import Runner, WriteSpec, split_values_for

__all__ = ["ParallelMap"]

log = logging.getLogger(__name__)


class ParallelMap(AcmeAttributes):
    """Run ``func`` once per input in parallel and keep every call's results.

    A drop-in successor of ACME's ``ParallelMap``: same keywords, defaults and argument
    distribution rules, so ``from acme import ParallelMap`` can become
    ``from acme_xr import ParallelMap``.

    Parameters
    ----------
    func : callable
        The function to run.
    *args, **kwargs
        Its arguments. A list/tuple/range of length ``n_inputs`` or an array that squeezes
        to 1-D with ``n_inputs`` elements is split (element ``i`` to call ``i``); anything
        else goes whole to every call. Each call gets them as given: by position or by name.
    n_inputs : int or "auto"
        Number of calls; inferred from the arguments when unambiguous.
    write_worker_results : bool
        True: every call's return values go to ``<func>_<i>.h5`` in ``output_dir`` and
        :meth:`compute` returns the file names. False: :meth:`compute` returns the values.
    cleanup_threshold_days : int, optional
        With the default output directory, delete ``ACME_*`` run directories in the current
        directory older than this many days first (0: all of them).
    output_dir : str, optional
        Run directory; default ``ACME_YYYYMMDD-hhmmss-ffffff`` in the current directory.
        It must not hold files unless ``resume=True``.
    result_shape : tuple, optional
        Shape of the stacked ``result_0`` with one ``None`` for the call axis, e.g.
        ``(None, 100)``; ``np.inf`` marks an axis of any length. The container then holds
        a virtual dataset ``result_0`` over all payloads. In memory mode :meth:`compute`
        returns ``result_0`` stacked (and each further return value stacked on a leading
        call axis, see :class:`~acme_xr.storage.memory.StackedResults`).
    result_dtype : str
        dtype of that dataset (default ``"float"``).
    single_file : bool
        Gather all calls into ``<func>.h5`` (groups ``comp_<i>``) instead of one file each.
    write_pickle : bool
        Pickle each call's return value to ``<func>_<i>.pickle`` instead of HDF5.
    partition : str
        SLURM partition, or the queue of the batch system ``cluster`` names: with
        ``cluster=None``, anything but ``"auto"`` runs the workers as SLURM jobs (as ACME).
    n_workers : int, (int, int) or "auto"
        Workers to start (auto: one per core, at most one per call; on a batch system, one
        worker job per call, at most ``acme_xr.jobqueue.max-auto-workers``, default 32).
        A pair ``(minimum, maximum)`` makes them adaptive (``cluster.adapt``).
    mem_per_worker : str
        Memory per worker, e.g. ``"4GB"`` ("auto": dask's default; on a batch system the
        site's ``jobqueue.<kind>.memory``, else 2GB per core). It is the job's memory.
    setup_timeout : float
        Seconds to wait for the first worker to come up; also how long a run waits when
        every worker is gone (killed, walltime) before it stops with ``ClusterError``.
    setup_interactive : bool
        Ask at the terminal when a decision is needed (after a dry run).
    stop_client : bool or "auto"
        "auto": close a cluster acme_xr started, leave a running one alone; True: close
        either; False: close neither.
    verbose : bool, optional
        None: progress (a bar on a terminal or in a notebook, else a plain line every
        ``acme_xr.progress.interval``) and what the run does (cluster, dashboard link,
        summary); True: also how calls are scheduled and batched and one line per
        finished batch, with plain progress lines instead of the bar; False: warnings and
        errors only. Console lines carry the time. What the function prints and warns
        shows as usual and also goes to the run's log, each line with its call index.
    dryrun : bool
        First run one call here and report its time and memory.
    logfile : bool or str, optional
        None/True: ``<func>.log`` in the run directory; False: none; str: that file.
    storage : {"hdf5", "zarr"} or str
        Payload format (``"zarr"``: one store ``<func>.zarr`` for all calls), or the name of
        a storage backend registered with :func:`acme_xr.storage.registry.register`.
    retries : int
        Run a call that raises (or times out) up to this many more times before it counts
        as failed. The manifest records each call's number of attempts.
    call_timeout : float, optional
        Stop a call that runs longer than this many seconds (running the function and
        writing its results); it counts as failed with ``CallTimeoutError`` (or is retried).
        The calls then run in a child process of each worker, which is killed on timeout,
        so even a call stuck in C code stops. Not applied with ``compute(debug=True)``.
    resume : bool or "force"
        Continue the run in ``output_dir``: only calls without a valid payload run. The
        function (its code, closure values, the globals it uses, partial arguments, bound
        instance), the inputs (all their bytes) and the storage options must be those of
        the recorded run (else ``ResumeMismatchError``; ``FingerprintError`` when something
        cannot be fingerprinted). ``"force"`` resumes even when the function or the inputs
        differ or cannot be fingerprinted, with a warning naming what differs. Without it,
        an ``output_dir`` that holds files is refused (``RunExistsError``).
    batch_size : int or "auto"
        Calls per dask task ("auto": sized so that a task runs ~0.2 s).
    cluster : str, distributed.Client or dask Cluster, optional
        Where the calls run. None: a running dask client, else a local cluster (or SLURM
        with a ``partition``), as ACME. ``"local"``, ``"slurm"``, ``"pbs"``, ``"sge"``,
        ``"lsf"``, ``"htcondor"``: start that cluster (see :func:`acme_xr.cluster_setup`
        and docs/clusters.md for the settings order). A Client or Cluster: use it; it is
        left running unless ``stop_client=True``.
    seed : int or numpy.random.SeedSequence, optional
        Give every call its own reproducible random stream: ``func`` must then have a
        parameter ``rng``, which receives ``numpy.random.default_rng(SeedSequence(seed,
        spawn_key=(i,)))`` in call ``i`` (the ``i``-th child of ``SeedSequence(seed)``;
        of a SeedSequence given here, its child ``i``). The numbers a call draws depend on
        the seed and the call index only, not on batching, workers, retries (each attempt
        starts the stream anew) or resuming, which needs the same seed. A seed for a
        function without an ``rng`` parameter raises ``InputError``; passing ``rng``
        yourself as well raises ``SignatureError``.

    Attributes
    ----------
    n_inputs : int
        Number of calls.
    results_container : str or None
        The results container file after :meth:`compute`.
    results : list or numpy.ndarray or None
        What :meth:`compute` returned; after a :class:`~acme_xr.errors.ComputeError`, the
        results of the calls that succeeded (None at the failed ones).
    output_dir : str or None
        The run directory (absolute): the one given, from construction on; the default
        one once :meth:`compute` starts; None in memory mode.
    manifest : acme_xr.manifest.Manifest or None
        The run's record (state, per-call status, errors) once :meth:`compute` started.
    argv, kwargv : list, dict
        ACME's view of the arguments: per positional argument (per keyword) a list of one
        value per call, or ``[value]`` for a value every call gets. Edits before
        :meth:`compute` change what the calls receive (see :mod:`acme_xr.acme_compat`).
    n_calls : int
        ACME's name for ``n_inputs``.
    daemon, config
        ACME's ``pmap.daemon.client`` (None until :meth:`compute` starts or adopts a
        client) and ``pmap.config.output_dir`` / ``.n_calls``.

    Notes
    -----
    ``repr(pmap)`` and, in a notebook, ``pmap._repr_html_()`` show the function, the
    number of calls, the run's state (not started, running, complete, failed,
    interrupted), the calls done, failed and not run, the run directory and the first
    failures. The finished run is this object after :meth:`compute` (see
    :mod:`acme_xr.reprs`); its results open with ``open_results(pmap.output_dir)``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> def f(trial, channel):
    ...     return np.full(4, trial * channel)
    >>> run = os.path.join(tempfile.mkdtemp(), "run1")
    >>> with ParallelMap(f, 3, channel=range(8), output_dir=run, verbose=False) as pmap:
    ...     files = pmap.compute()
    >>> [os.path.basename(p) for p in files[:2]], os.path.basename(pmap.results_container)
    (['f_0.h5', 'f_1.h5'], 'f.h5')
    >>> repr(pmap).replace(run, "RUN")
    "ParallelMap(f, 8 calls, complete, 8 done, 0 failed, 0 not run, output_dir='RUN')"
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *args: Any,
        n_inputs: int | str = "auto",
        write_worker_results: bool = True,
        cleanup_threshold_days: int | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        result_shape: tuple[Any, ...] | None = None,
        result_dtype: str = "float",
        single_file: bool = False,
        write_pickle: bool = False,
        partition: str = "auto",
        n_workers: int | str | tuple[int, int] = "auto",
        mem_per_worker: str = "auto",
        setup_timeout: float = 60,
        setup_interactive: bool = True,
        stop_client: bool | str = "auto",
        verbose: bool | None = None,
        dryrun: bool = False,
        logfile: bool | str | None = None,
        storage: str = "hdf5",
        retries: int = 0,
        call_timeout: float | None = None,
        resume: bool | str = False,
        batch_size: int | str = "auto",
        seed: int | np.random.SeedSequence | None = None,
        cluster: Any = None,
        **kwargs: Any,
    ) -> None:
        self.options = validate_options(
            n_inputs=n_inputs,
            write_worker_results=write_worker_results,
            cleanup_threshold_days=cleanup_threshold_days,
            output_dir=output_dir,
            result_shape=result_shape,
            result_dtype=result_dtype,
            single_file=single_file,
            write_pickle=write_pickle,
            partition=partition,
            n_workers=n_workers,
            mem_per_worker=mem_per_worker,
            setup_timeout=setup_timeout,
            setup_interactive=setup_interactive,
            stop_client=stop_client,
            verbose=verbose,
            dryrun=dryrun,
            logfile=logfile,
            storage=storage,
            retries=retries,
            call_timeout=call_timeout,
            resume=resume,
            batch_size=batch_size,
            seed=seed,
            cluster=cluster,
        )
        # the plan also sets ACME's pmap.argv / pmap.kwargv (see acme_compat)
        self.plan = distribute(func, args, kwargs, self.options.n_inputs,
                               seed=self.options.seed)
        self.func = func
        self.n_inputs = self.plan.n_inputs
        self.results_container: str | None = None
        self.results: Any = None
        # known now when given (the default one is named when the run starts)
        self.output_dir: str | None = (
            os.path.abspath(os.path.expanduser(self.options.output_dir))
            if self.options.output_dir is not None and self.options.write_worker_results
            else None)
        self.manifest: Manifest | None = None
        self.logfile: str | None = None
        self._lease: ClusterLease | None = None
        self._last_client: Any = None  # pmap.daemon.client after the run

    def __repr__(self) -> str:
        return text_repr(self)

    def _repr_html_(self) -> str:
        return html_repr(self)

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> ParallelMap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Close the cluster acme_xr started for this run, as ``stop_client`` says."""
        if self._lease is not None:
            self._lease.release()

    def report(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the run's HTML report after :meth:`compute` and return its path.

        One self-contained file (figures embedded): the run's metadata, calls done, failed
        and pending, a per-call duration histogram, a timeline of the calls per worker and
        the failures with their tracebacks (see :mod:`acme_xr.report`). The figures need
        matplotlib (``pip install "acme_xr[report]"``); without it the tables remain.

        Parameters
        ----------
        path : str or path, optional
            The HTML file to write (replaced if it exists). Default:
            ``<output_dir>/report.html``; in memory mode ``acme_xr_<func>_report.html`` in
            the current directory.

        Returns
        -------
        str
            The absolute path of the report.

        Raises
        ------
        InputError
            :meth:`compute` has not run yet.
        OSError
            ``path`` cannot be written.

        Examples
        --------
        >>> import tempfile
        >>> with ParallelMap(abs, [-1, 2], write_worker_results=False, verbose=False) as pmap:
        ...     _ = pmap.compute(debug=True)  # in this thread: no cluster
        >>> pmap.report(tempfile.mktemp(suffix=".html")).endswith(".html")
        True
        """
        from .report import write_report

        if self.manifest is None:
            raise InputError("pmap.report() needs a run: call pmap.compute() first")
        if self.output_dir is None and path is None:
            path = f"acme_xr_{self.stem}_report.html"
        return write_report(self.output_dir or "in memory", path, manifest=self.manifest)

    @property
    def stem(self) -> str:
        name = getattr(self.func, "__name__", "func")
        if name == "<lambda>":
            return "func"
        # it names the run's files: a "/" in a function's __name__ is no directory
        for sep in {os.sep, os.altsep or os.sep, "\0"}:
            name = name.replace(sep, "_")
        return name

    # -- the run -------------------------------------------------------------------------
    def compute(self, debug: bool = False) -> Any:
        """Run every call; return the file names (disk) or the return values (memory).

        Parameters
        ----------
        debug : bool
            Run the calls one after another in this thread, without dask, so that an
            error surfaces as the function's own exception and a debugger can step in.

        Returns
        -------
        list or numpy.ndarray or None
            Disk mode: the payload file of each call, in call order (``[<func>.h5]`` with
            ``single_file``). Memory mode: the return values in call order (a stacked
            array with ``result_shape``). None when the user declines after a dry run.

        Raises
        ------
        ComputeError
            Some calls failed; every other call ran and was kept (see ``.results``).
        StorageError
            The output directory cannot be created or written, or the disk filled up: the
            message names the path; the calls that finished are kept and recorded.
        RunExistsError, ResumeMismatchError
            ``output_dir`` holds another run (and ``resume`` is False / does not fit).
        RunLockedError
            Another process is running in ``output_dir`` (it holds ``.acme_xr.lock``).
        MainGuardError
            A script calls this at module level outside ``if __name__ == "__main__":``
            while acme_xr would start local worker processes (they re-import the script);
            also in a worker's import of such a script. Raised before anything is created.
        KeyboardInterrupt
            After a Ctrl-C: pending calls are cancelled, a cluster acme_xr started is
            closed, finished payloads are kept and the manifest (state ``"interrupted"``)
            says which calls completed; ``resume=True`` finishes the run.
        """
        if not isinstance(debug, bool):
            raise InputTypeError(f"debug must be True or False, not {debug!r}")
        self._sync_plan()  # edits of pmap.argv/kwargv: checked before anything is created
        o = self.options
        # only a local cluster's spawned workers re-import the script
        check_main_guard(lambda: not debug and self._cluster_lease().spawns_local_workers)
        layout = (RunLayout.resolve(o, self.stem, self.n_inputs) if o.write_worker_results
                  else None)
        resuming = layout.check(bool(o.resume)) if layout is not None else False
        # refuse a run that does not fit the one to resume before any I/O
        # (checked again under the run's lock, which is where resume="force" warns)
        previous = (self._previous_run(layout, warn=False) if layout is not None and resuming
                    else None)
        logfile = logfile_path(o.logfile, layout, self.stem)
        self._shipped: tuple[Runner, bytes] | None = None
        if not debug:
            self._cluster_lease().check()  # e.g. a bad partition: fail before any I/O
            # a function or argument no worker can receive: refused before any I/O too
            runner = self._runner(layout)
            self._shipped = (runner, ship_runner(self.plan, runner))

        if o.dryrun:
            report = dry_run(self.plan)
            message = report.describe(self.n_inputs)
            log.warning(message) if o.verbose is False else print(f"acme_xr: {message}")
            if not confirm(o.setup_interactive):
                return None

        if layout is not None and o.output_dir is None and o.cleanup_threshold_days is not None:
            remove_old_runs(os.getcwd(), o.cleanup_threshold_days)
        self.logfile = logfile
        with redelivered(), self._locked_run(layout, previous) as previous, \
                run_logging(logfile, o.verbose):
            manifest = self._open_manifest(layout, previous)
            if layout is not None:  # who holds the run (named to a second process)
                manifest.header["process"] = process_record()
            writer = None
            if layout is not None:
                writer = ManifestWriter(manifest, layout.output_dir)
            values = (None if layout is not None else
                      memory_values(self.n_inputs, o.result_shape, o.result_dtype))
            try:
                if writer is not None:  # in here: a Ctrl-C during it says the same
                    writer.write()
                    record_call(writer.directory, self)  # for `acme-xr resume DIR`
                self._run(manifest, writer, layout, values, debug)
            except BaseException as exc:
                # Ctrl-C, a full disk, a lost cluster: keep what finished, then re-raise
                record_interruption(manifest, exc)
                with _deferred_interrupts():
                    if isinstance(exc, KeyboardInterrupt) and self._lease is not None:
                        self._lease.release(hurry=True)
                    self._finish(manifest, writer, layout, interrupted=True)
                if isinstance(exc, KeyboardInterrupt):
                    if values is not None:  # memory mode: what finished is not lost
                        self.results = memory_results(values)
                    log.warning("%s", interrupted_message(manifest, self.stem, self.output_dir))
                raise
            manifest.state = "failed" if manifest.counts["failed"] else "complete"
            with _deferred_interrupts():
                problems = self._finish(manifest, writer, layout, interrupted=False)
        return self._outcome(manifest, layout, values, problems)

    # -- steps ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked_run(self, layout: RunLayout | None,
                    previous: Manifest | None) -> Iterator[Manifest | None]:
        """Hold the run directory's lock while the block runs; yield the run to resume.

        The lock is taken before the first write (it creates the directory), and what
        another process did since the first checks counts: the directory is checked and
        the run to resume read again under the lock.
        """
        if layout is None:
            yield None
            return
        with RunLock(layout.output_dir):
            if layout.check(bool(self.options.resume), holding_lock=True):
                previous = self._previous_run(layout)
            else:
                previous = None
            layout.create()
            self.output_dir = layout.output_dir
            yield previous

    def _cluster_lease(self) -> ClusterLease:
        if self._lease is None:
            o = self.options
            self._lease = ClusterLease(self.n_inputs, o.n_workers, o.mem_per_worker,
                                       o.partition, o.setup_timeout, o.stop_client,
                                       cluster=o.cluster, quiet=o.verbose is False)
        return self._lease

    def _header(self, layout: RunLayout | None) -> dict[str, Any]:
        return run_header(self.func, self.plan, self.options, self.stem, layout,
                          self._fingerprint())

    def _fingerprint(self) -> dict[str, Any]:
        # hashing every argument value costs time with big arrays: once per ParallelMap
        if getattr(self, "_fingerprints", None) is None:
            self._fingerprints = run_fingerprint(self.func, self.plan)
        return dict(self._fingerprints)

    def _previous_run(self, layout: RunLayout, warn: bool = True) -> Manifest:
        """The manifest of the run to resume, checked against this one (``warn``: say what
        ``resume="force"`` overrides)."""
        return previous_run(layout, self.n_inputs, self._header(layout), self.options.resume,
                            warn=warn)

    def _open_manifest(self, layout: RunLayout | None, previous: Manifest | None) -> Manifest:
        self.manifest = open_manifest(layout, previous, self.n_inputs, self._header(layout))
        return self.manifest

    def _runner(self, layout: RunLayout | None) -> Runner:
        o = self.options
        if layout is None:
            spec = WriteSpec("memory", result_shape=o.result_shape)
        else:
            spec = WriteSpec.of(layout.backend)
        return Runner.from_plan(self.plan, spec, retries=o.retries, call_timeout=o.call_timeout)

    def _run(
        self, manifest: Manifest, writer: ManifestWriter | None, layout: RunLayout | None,
        values: list[Any] | StackedResults | None, debug: bool,
    ) -> None:
        todo = [int(i) for i in np.flatnonzero(manifest.status != DONE)]
        if not todo:
            log.info("nothing to run: all %d calls are done", self.n_inputs)
            return
        runner, blob = self._shipped if self._shipped is not None else (
            self._runner(layout), None)
        self._shipped = None  # the blob may hold big arguments: only execute() keeps it
        sink = Collector(manifest, values, writer, len(todo), self.options.verbose,
                         backend=runner.spec.backend)
        log.info("running %d calls of %s%s", len(todo), self.stem,
                 f", results in {layout.output_dir}" if layout else "")
        t0 = time.perf_counter()
        try:
            if debug:
                runner.reraise = True  # and no call_timeout: a debugger may take its time
                for i in todo:
                    sink.add(runner.run([i], split_values_for(self.plan, [i])))
                    sink.tick()
                return
            lease = self._cluster_lease()
            client = self._last_client = lease.acquire()
            batch_size = (None if self.options.batch_size == "auto"
                          else int(self.options.batch_size))
            batcher = chunk_batcher(runner.spec.backend, manifest, todo,
                                    lease.n_worker_slots(), batch_size)
            execute(
                client, self.plan, runner, todo, sink.add, sink.batch_failed,
                slots=lease.n_worker_slots(),
                batch_size=batch_size,
                tick=sink.tick,
                # all workers gone (killed, walltime) and none back: stop, do not hang
                no_worker_timeout=max(float(self.options.setup_timeout), 1.0),
                # spawned local workers start with this process's sys.path
                share_sys_path=lease.started_kind != "local",
                # a cluster that outlives the run: its cancelled tasks end before _finish
                settle=not lease.will_stop,
                runner_blob=blob,
                batcher=batcher,
            )
        finally:
            sink.close()
            counts = manifest.counts
            log.info("%d calls done, %d failed, %d not run, in %.2f s", counts["done"],
                     counts["failed"], counts["pending"], time.perf_counter() - t0)

    def _finish(self, manifest: Manifest, writer: ManifestWriter | None,
                layout: RunLayout | None, interrupted: bool) -> list[Exception]:
        """Stop the cluster and finish the run's files (see :func:`finish_run`); return the
        problems met, which are logged, not raised."""

        def keep_container(container: str | None) -> None:
            self.results_container = container

        return finish_run(manifest, writer, layout, self._lease, interrupted, keep_container)

    def _outcome(self, manifest: Manifest, layout: RunLayout | None,
                 values: list[Any] | StackedResults | None, problems: list[Exception]) -> Any:
        self.results, error = run_outcome(manifest, layout, values, problems, self.logfile)
        if error is not None:
            raise error
        return self.results
