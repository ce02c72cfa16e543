"""ParallelMap: run a function once per input on a dask cluster and keep every result.

See :class:`ParallelMap` for an example.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import config
from ._version import __version__
from .cluster import ClusterLease
from .dryrun import confirm, dry_run
from .engine import execute
from .errors import ComputeError, InputTypeError, ResumeMismatchError, StorageError
from .inputs import distribute, func_fingerprint, inputs_fingerprint
from .layout import RunLayout, remove_old_runs
from .manifest import DONE, FAILED, Manifest, jsonable
from .options import validate_options
from .runlog import run_logging
from .storage.atomic import remove_stale_temporaries
from .worker import BatchResult, Runner, WriteSpec, split_values_for

__all__ = ["ParallelMap"]

log = logging.getLogger(__name__)


class ParallelMap:
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
        else goes whole to every call.
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
        a virtual dataset ``result_0`` over all payloads (a stacked array in memory mode).
    result_dtype : str
        dtype of that dataset (default ``"float"``).
    single_file : bool
        Gather all calls into ``<func>.h5`` (groups ``comp_<i>``) instead of one file each.
    write_pickle : bool
        Pickle each call's return value to ``<func>_<i>.pickle`` instead of HDF5.
    partition : str
        SLURM partition: anything but ``"auto"`` runs the workers as SLURM jobs.
    n_workers : int or "auto"
        Workers to start (auto: one per core, at most one per call; on SLURM, one worker
        job per call, at most ``acme_xr.slurm.max-auto-workers``, default 32).
    mem_per_worker : str
        Memory per worker, e.g. ``"4GB"`` ("auto": dask's default; on SLURM 2GB, the
        setting ``acme_xr.slurm.memory-per-core``). On SLURM it is the job's ``--mem``.
    setup_timeout : float
        Seconds to wait for the first worker to come up.
    setup_interactive : bool
        Ask at the terminal when a decision is needed (after a dry run).
    stop_client : bool or "auto"
        "auto": close a cluster acme_xr started, leave a running one alone; True: close
        either; False: close neither.
    verbose : bool, optional
        None: progress messages; True: debug messages too; False: warnings and errors only.
    dryrun : bool
        First run one call here and report its time and memory.
    logfile : bool or str, optional
        None/True: ``<func>.log`` in the run directory; False: none; str: that file.
    storage : {"hdf5", "zarr"}
        Payload format (``"zarr"``: one store ``<func>.zarr`` for all calls).
    retries : int
        Run a call that raises up to this many more times before it counts as failed.
    call_timeout : float, optional
        Stop a call after this many seconds (it counts as failed).
    resume : bool
        Continue the run in ``output_dir``: only calls without a valid payload run.
    batch_size : int or "auto"
        Calls per dask task ("auto": sized so that a task runs ~0.2 s).

    Attributes
    ----------
    n_inputs : int
        Number of calls.
    results_container : str or None
        The results container file after :meth:`compute`.
    output_dir : str or None
        The run directory after :meth:`compute` (None in memory mode).

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
        n_workers: int | str = "auto",
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
        resume: bool = False,
        batch_size: int | str = "auto",
        **kwargs: Any,
    ) -> None:
        self.options = validate_options(
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
        )
        self.plan = distribute(func, args, kwargs, n_inputs)
        self.func = func
        self.n_inputs = self.plan.n_inputs
        self.results_container: str | None = None
        self.output_dir: str | None = None
        self.manifest: Manifest | None = None
        self.logfile: str | None = None
        self._lease: ClusterLease | None = None

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> ParallelMap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Close the cluster acme_xr started for this run, as ``stop_client`` says."""
        if self._lease is not None:
            self._lease.release()

    @property
    def stem(self) -> str:
        name = getattr(self.func, "__name__", "func")
        return "func" if name == "<lambda>" else name

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
            Some calls failed; every other call ran and was kept.
        """
        if not isinstance(debug, bool):
            raise InputTypeError(f"debug must be True or False, not {debug!r}")
        o = self.options
        layout = RunLayout.resolve(o, self.stem) if o.write_worker_results else None
        resuming = layout.check(o.resume) if layout is not None else False
        logfile = self._logfile(layout)
        if not debug:
            self._cluster_lease().check()  # e.g. a bad partition: fail before any I/O

        if o.dryrun:
            report = dry_run(self.plan)
            message = report.describe(self.n_inputs)
            log.warning(message) if o.verbose is False else print(f"acme_xr: {message}")
            if not confirm(o.setup_interactive):
                return None

        if layout is not None:
            if o.output_dir is None and o.cleanup_threshold_days is not None:
                remove_old_runs(os.getcwd(), o.cleanup_threshold_days)
            layout.create()
            self.output_dir = layout.output_dir
        self.logfile = logfile
        with run_logging(logfile, o.verbose):
            manifest = self._open_manifest(layout, resuming)
            values: list[Any] | None = None if layout is not None else [None] * self.n_inputs
            try:
                self._run(manifest, layout, values, debug)
                manifest.state = "failed" if manifest.counts["failed"] else "complete"
            except BaseException:
                manifest.state = "interrupted"
                raise
            finally:
                self._finish(manifest, layout)
        return self._outcome(manifest, layout, values)

    # -- steps ---------------------------------------------------------------------------
    def _cluster_lease(self) -> ClusterLease:
        if self._lease is None:
            o = self.options
            self._lease = ClusterLease(self.n_inputs, o.n_workers, o.mem_per_worker,
                                       o.partition, o.setup_timeout, o.stop_client)
        return self._lease

    def _logfile(self, layout: RunLayout | None) -> str | None:
        lf = self.options.logfile
        if lf is False or (lf is None and layout is None):
            return None
        if isinstance(lf, str):
            path = os.path.abspath(os.path.expanduser(lf))
            if os.path.isdir(path):
                raise StorageError(f"logfile={lf!r} is a directory: give a file name")
            return path
        if layout is not None:
            return layout.default_logfile
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return os.path.join(os.getcwd(), f"acme_xr_{self.stem}_{stamp}.log")

    def _header(self, layout: RunLayout | None) -> dict[str, Any]:
        o = self.options
        coords = {
            name: {"dtype": arr.dtype.str, "values": jsonable(arr)}
            for name, arr in self.plan.coords().items()
        }
        return {
            "acme_xr_version": __version__,
            "func": {
                "name": self.stem,
                "qualname": getattr(self.func, "__qualname__", None),
                "module": getattr(self.func, "__module__", None),
            },
            "fingerprint": {
                "func": func_fingerprint(self.func),
                "inputs": inputs_fingerprint(self.plan),
            },
            "storage": layout.mode if layout is not None else "memory",
            **(layout.locations() if layout is not None else {}),
            "result_shape": None if o.result_shape is None else [
                None if s is None else ("inf" if np.isinf(s) else int(s)) for s in o.result_shape
            ],
            "result_dtype": o.result_dtype.str,
            "coords": coords,
            "options": {"retries": o.retries, "call_timeout": o.call_timeout},
        }

    def _open_manifest(self, layout: RunLayout | None, resuming: bool) -> Manifest:
        header = self._header(layout)
        if layout is None:
            return Manifest.new(self.n_inputs, header)
        if resuming:
            manifest = Manifest.read(layout.output_dir)
            theirs, ours = manifest.header.get("fingerprint", {}), header["fingerprint"]
            differs = [k for k in ("func", "inputs") if theirs.get(k) != ours[k]]
            if differs or manifest.n_inputs != self.n_inputs:
                what = " and ".join(
                    {"func": "the function", "inputs": "the inputs"}[k] for k in differs
                ) or "the number of calls"
                raise ResumeMismatchError(
                    f"cannot resume {layout.output_dir}: {what} differ(s) from the recorded run "
                    f"of {manifest.header.get('func', {}).get('name')!r}. Resume with the same "
                    "function and arguments, or start a new run in another output_dir"
                )
            for i in manifest.indices(DONE):
                path = layout.file_of(manifest, int(i))
                if path is None or not os.path.exists(path):
                    manifest.forget(int(i))
            manifest.state = "running"
            log.info("resuming %s: %d of %d calls already done", layout.output_dir,
                     manifest.counts["done"], self.n_inputs)
        else:
            manifest = Manifest.new(self.n_inputs, header)
        self.manifest = manifest
        manifest.write(layout.output_dir)
        return manifest

    def _runner(self, layout: RunLayout | None) -> Runner:
        o = self.options
        if layout is None:
            spec = WriteSpec("memory", result_shape=o.result_shape)
        else:
            spec = WriteSpec(
                "pickle" if layout.mode == "pickle" else "hdf5",
                directory=layout.payload_dir,
                stem=self.stem,
                result_shape=o.result_shape,
            )
        return Runner.from_plan(self.plan, spec, retries=o.retries)

    def _run(
        self, manifest: Manifest, layout: RunLayout | None, values: list[Any] | None, debug: bool
    ) -> None:
        todo = [int(i) for i in np.flatnonzero(manifest.status != DONE)]
        if not todo:
            log.info("nothing to run: all %d calls are done", self.n_inputs)
            return
        runner = self._runner(layout)
        sink = _Collector(manifest, values, layout, len(todo), self.options.verbose)
        log.info("running %d calls of %s%s", len(todo), self.stem,
                 f", results in {layout.output_dir}" if layout else "")
        t0 = time.perf_counter()
        try:
            if debug:
                runner.reraise = True
                for i in todo:
                    sink.add(runner.run([i], split_values_for(self.plan, [i])))
                    sink.tick()
                return
            lease = self._cluster_lease()
            client = lease.acquire()
            execute(
                client, self.plan, runner, todo, sink.add, sink.batch_failed,
                slots=lease.n_worker_slots(),
                batch_size=None if self.options.batch_size == "auto" else int(self.options.batch_size),
                tick=sink.tick,
            )
        finally:
            sink.close()
            counts = manifest.counts
            log.info("%d calls done, %d failed, %d not run, in %.2f s", counts["done"],
                     counts["failed"], counts["pending"], time.perf_counter() - t0)

    def _finish(self, manifest: Manifest, layout: RunLayout | None) -> None:
        try:
            if layout is not None:
                self.results_container = layout.finalize(manifest)
                remove_stale_temporaries(layout.output_dir)
                manifest.write(layout.output_dir)
        finally:
            if self._lease is not None:
                self._lease.release()

    def _outcome(self, manifest: Manifest, layout: RunLayout | None, values: list[Any] | None) -> Any:
        if layout is not None:
            if layout.mode == "single_file":
                results: list[Any] = [layout.container]
            else:
                results = [layout.file_of(manifest, i) for i in range(self.n_inputs)]
        else:
            assert values is not None
            results = values
        failed = manifest.indices(FAILED)
        if len(failed):
            raise _compute_error(manifest, layout, results, self.logfile)
        if layout is None and self.options.result_shape is not None:
            return _stack(values, self.options.result_shape, self.options.result_dtype)  # type: ignore[arg-type]
        return results


class _Collector:
    """Receives batch outcomes on the client: manifest, values, progress, periodic flush."""

    def __init__(self, manifest: Manifest, values: list[Any] | None, layout: RunLayout | None,
                 total: int, verbose: bool | None) -> None:
        from tqdm.auto import tqdm

        self.manifest = manifest
        self.values = values
        self.layout = layout
        self.pickled: list[str] = []
        self.flush_every = config.get_seconds("manifest.flush-interval")
        self.last_flush = time.monotonic()
        self.bar = tqdm(total=total, unit="call", delay=config.get_seconds("progress.delay"),
                        disable=verbose is False, leave=False)

    def add(self, result: BatchResult) -> None:
        m = self.manifest
        idx = np.asarray(result.indices)
        m.duration[idx] = result.duration
        m.attempts[idx] = result.attempts
        m.coord_templates.update(result.templates)
        for k, i in enumerate(result.indices):
            if result.status[k] == 1:
                m.record_done(i, result.fmt[k], result.meta[k], result.host)
                if self.values is not None and result.values is not None:
                    self.values[i] = result.values[k]
            else:
                m.record_failed(i, result.errors[i], result.host)
                err = result.errors[i]
                log.error("call %d failed after %d attempt(s): %s: %s", i, err["attempts"],
                          err["type"], err["message"])
        if result.warnings:
            self.pickled.extend(result.warnings)
        self.bar.update(len(result.indices))

    def batch_failed(self, indices: list[int], exc: BaseException) -> None:
        """A whole batch failed outside the user function (worker crash, unpicklable func)."""
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        for i in indices:
            self.manifest.record_failed(
                i, {"type": kind, "message": str(exc), "traceback": tb, "attempts": 1}, None)
        log.error("calls %s failed as a whole: %s: %s", indices[:10], kind, exc)
        self.bar.update(len(indices))

    def tick(self) -> None:
        if self.layout is None or time.monotonic() - self.last_flush < self.flush_every:
            return
        t0 = time.monotonic()
        self.manifest.write(self.layout.output_dir)
        # never spend more than ~10% of the client's time on flushing
        self.flush_every = max(self.flush_every, 10 * (time.monotonic() - t0))
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.bar.close()
        if self.pickled:
            warnings.warn(
                f"{len(self.pickled)} call(s) returned values HDF5 cannot hold and were pickled "
                f"instead (<func>_<i>.pickle); first: {self.pickled[0]}",
                UserWarning,
                stacklevel=4,
            )


def _compute_error(manifest: Manifest, layout: RunLayout | None, results: list[Any],
                   logfile: str | None) -> ComputeError:
    failed = [int(i) for i in manifest.indices(FAILED)]
    errors = {i: manifest.errors.get(i, {}) for i in failed}
    listing = "\n".join(
        f"  call {i}: {e.get('type')}: {e.get('message')}" for i, e in list(errors.items())[:20]
    )
    if len(failed) > 20:
        listing += f"\n  ... and {len(failed) - 20} more"
    first = errors[failed[0]].get("traceback", "")
    where = []
    if layout is not None:
        where.append(f"manifest {layout.manifest}")
    if logfile:
        where.append(f"log {logfile}")
    kept = int((manifest.status == DONE).sum())
    message = (
        f"{len(failed)} of {manifest.n_inputs} calls failed ({kept} succeeded and were kept):\n"
        f"{listing}\nFirst remote traceback (call {failed[0]}):\n{first}"
        + (f"All errors are recorded in the {' and the '.join(where)}." if where else
           "The successful results are in this error's .results attribute.")
    )
    results = [None if manifest.status[i] != DONE else r for i, r in enumerate(results)]
    return ComputeError(message, failed=errors, results=results,
                        manifest=layout.manifest if layout else None, logfile=logfile)


def _stack(values: list[Any], result_shape: tuple[Any, ...], dtype: np.dtype) -> Any:
    """Memory mode with result_shape: stack result_0 along the None axis."""
    axis = result_shape.index(None)
    shape = [len(values) if s is None else int(s) for s in result_shape]
    out = np.empty(shape, dtype=dtype)
    extra: list[list[Any]] = []
    for i, value in enumerate(values):
        parts = value if isinstance(value, tuple) else (value,)
        index: list[Any] = [slice(None)] * len(shape)
        index[axis] = i
        out[tuple(index)] = parts[0]
        for k, part in enumerate(parts[1:]):
            if len(extra) <= k:
                extra.append([None] * len(values))
            extra[k][i] = part
    return out if not extra else [out, *extra]
