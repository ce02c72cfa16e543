"""The steps around a run of :class:`~acme_xr.map.ParallelMap`: its record and its files.

* :func:`logfile_path` names the run's log file.
* :func:`run_fingerprint` and :func:`run_header` describe the run for its manifest.
* :func:`previous_run` reads the run to resume and refuses one that does not fit
  (:func:`_check_resumable`); :func:`open_manifest` starts the run's manifest from it or
  anew.
* :func:`record_interruption` and :func:`finish_run` leave a consistent run directory when
  the run ends, completed or not; :func:`_deferred_interrupts` holds a Ctrl-C back meanwhile.

:class:`~acme_xr.map.ParallelMap` calls these with its options, plan and layout.

Examples
--------
>>> from acme_xr.manifest import Manifest
>>> manifest = Manifest.new(2, {"func": {"name": "f"}})
>>> record_interruption(manifest, KeyboardInterrupt())
>>> manifest.state, manifest.header["interruption"]
('interrupted', {'type': 'KeyboardInterrupt', 'message': ''})
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._version import __version__
from .collect import ManifestWriter, adopt_payloads
from .errors import FingerprintError, ResultShapeError, ResumeMismatchError, StorageError
from .fingerprint import compare_identity, run_identity
from .inputs import CallPlan
from .layout import RunLayout
from .lease import ClusterLease
from .manifest import DONE, Manifest, jsonable
from .options import Options
from .seeds import seed_record
from .storage.atomic import remove_stale_temporaries
from .storage.checksums import ALGORITHM
from .storage.checksums import enabled as checksums_enabled
from .storage.values import PAYLOAD_FORMAT
from .worker import WriteSpec

__all__ = ["logfile_path", "run_fingerprint", "run_header", "previous_run", "open_manifest",
           "record_interruption", "finish_run"]

log = logging.getLogger(__name__)


def logfile_path(logfile: bool | str | None, layout: RunLayout | None, stem: str) -> str | None:
    """The run's log file, as the ``logfile`` option says, or None for none.

    Parameters
    ----------
    logfile : bool or str or None
        The option: None/True the default file, False none, str that file.
    layout : RunLayout or None
        The run's layout (its default log file is in the run directory); None in memory
        mode, where only ``logfile=True`` (or a file name) gives a log file, in the current
        directory.
    stem : str
        The function's name as the run's files carry it.

    Returns
    -------
    str or None
        The absolute path of the log file.

    Raises
    ------
    StorageError
        ``logfile`` names a directory.

    Examples
    --------
    >>> logfile_path(None, None, "f") is None    # memory mode: no log file by default
    True
    >>> os.path.basename(logfile_path(True, None, "f")).startswith("acme_xr_f_")
    True
    """
    if logfile is False or (logfile is None and layout is None):
        return None
    if isinstance(logfile, str):
        path = os.path.abspath(os.path.expanduser(logfile))
        if os.path.isdir(path):
            raise StorageError(f"logfile={logfile!r} is a directory: give a file name")
        return path
    if layout is not None:
        return layout.default_logfile
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(os.getcwd(), f"acme_xr_{stem}_{stamp}.log")


def run_fingerprint(func: Callable[..., Any], plan: CallPlan) -> dict[str, Any]:
    """The identity of the run (function and inputs) that a resume must match.

    A part that cannot be hashed is recorded as such (under ``"errors"``): this run starts,
    a resume of it is refused (unless forced). Hashing every argument value costs time with
    big arrays: the caller keeps the result.
    """
    fingerprints = run_identity(func, plan, on_error="record")
    for problem in fingerprints.get("errors", {}).values():
        log.info("this run can be resumed only with resume='force': %s", problem)
    return fingerprints


def run_header(func: Callable[..., Any], plan: CallPlan, options: Options, stem: str,
               layout: RunLayout | None, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The manifest header of a run: what ran, on what, stored how.

    Parameters
    ----------
    func : callable
        The function.
    plan : CallPlan
        Its calls (the header records the coordinates of the call axis).
    options : Options
        The run's validated options.
    stem : str
        The function's name as the run's files carry it.
    layout : RunLayout or None
        The run's layout; None in memory mode.
    fingerprint : dict
        The run's identity (:func:`run_fingerprint`).

    Returns
    -------
    dict
        JSON-serialisable.
    """
    o = options
    coords = {
        name: {"dtype": arr.dtype.str, "values": jsonable(arr)}
        for name, arr in plan.coords().items()
    }
    return {
        "acme_xr_version": __version__,
        "func": {
            "name": stem,
            "qualname": getattr(func, "__qualname__", None),
            "module": getattr(func, "__module__", None),
        },
        "fingerprint": fingerprint,
        "seed": seed_record(o.seed),
        "storage": layout.mode if layout is not None else "memory",
        **(layout.locations() if layout is not None else {}),
        "result_shape": None if o.result_shape is None else [
            None if s is None else ("inf" if np.isinf(s) else int(s)) for s in o.result_shape
        ],
        "result_dtype": o.result_dtype.str,
        "coords": coords,
        "options": {"retries": o.retries, "call_timeout": o.call_timeout},
        "payload_format": PAYLOAD_FORMAT,
        "checksum": ALGORITHM if checksums_enabled() else None,
    }


def previous_run(layout: RunLayout, n_inputs: int, header: dict[str, Any],
                 resume: bool | str, warn: bool = True) -> Manifest:
    """The manifest of the run to resume, checked against this one.

    Parameters
    ----------
    layout : RunLayout
        The run's layout (its directory holds the run to resume).
    n_inputs : int
        Number of calls of this run.
    header : dict
        This run's header (:func:`run_header`).
    resume : bool or "force"
        The ``resume`` option.
    warn : bool
        Say what ``resume="force"`` overrides.

    Returns
    -------
    Manifest
        The recorded run; after a forced resume its header holds this run's identity and,
        under ``"forced_resumes"``, what it was before.

    Raises
    ------
    ResumeMismatchError, FingerprintError
        The recorded run is another one (see :func:`_check_resumable`).
    """
    from .scan import manifest_to_resume  # h5py: a damaged manifest is rebuilt by scanning

    manifest = manifest_to_resume(layout.output_dir, n_inputs, header, force=resume == "force")
    forced = _check_resumable(manifest, header, n_inputs, layout.output_dir,
                              force=resume == "force", warn=warn)
    if forced:  # from now on the run is this one; keep what it was before
        manifest.header.setdefault("forced_resumes", []).append(
            {"differences": forced, "fingerprint": manifest.header.get("fingerprint"),
             "seed": manifest.header.get("seed")})
        manifest.header["fingerprint"] = header["fingerprint"]
        manifest.header["seed"] = header.get("seed")
    return manifest


def open_manifest(layout: RunLayout | None, previous: Manifest | None, n_inputs: int,
                  header: dict[str, Any]) -> Manifest:
    """The manifest the run records its calls in: the resumed run's, or a new one.

    Of a resumed run, calls recorded as done whose payload is missing or damaged count as
    not run. In memory mode too the run has a manifest: ``pmap.report()`` describes it.
    """
    if layout is None or previous is None:
        return Manifest.new(n_inputs, header)
    manifest = previous
    for i in manifest.indices(DONE):
        path = layout.file_of(manifest, int(i))
        if path is None or not os.path.exists(path):
            manifest.forget(int(i))
    # a payload emptied, truncated or changed since is no result: run its call again
    from .integrity import drop_damaged  # here: it needs h5py, memory runs do not

    drop_damaged(manifest, layout.output_dir)
    manifest.state = "running"
    manifest.header.pop("interruption", None)
    log.info("resuming %s: %d of %d calls already done", layout.output_dir,
             manifest.counts["done"], n_inputs)
    return manifest


def record_interruption(manifest: Manifest, exc: BaseException) -> None:
    """Mark the run as interrupted by ``exc`` (Ctrl-C, a full disk, a lost cluster)."""
    manifest.state = "interrupted"
    manifest.header["interruption"] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": str(exc),
    }


def finish_run(manifest: Manifest, writer: ManifestWriter | None, layout: RunLayout | None,
               lease: ClusterLease | None, interrupted: bool,
               keep_container: Callable[[str | None], None]) -> list[Exception]:
    """Stop the cluster (as stop_client says), then leave a consistent run directory:
    no temporary files, the container of the calls done, the final manifest.

    Nothing here raises: problems (the container or the manifest could not be written)
    are logged and returned, so that an exception on its way (Ctrl-C) reaches the user.

    Parameters
    ----------
    manifest : Manifest
        The run's record, its final state set.
    writer : ManifestWriter or None
        Writes ``manifest``; None in memory mode (nothing is written then).
    layout : RunLayout or None
        The run's layout; None in memory mode.
    lease : ClusterLease or None
        The run's cluster, if one was started or adopted.
    interrupted : bool
        The run stopped early: payloads whose outcome never reached the client are
        recorded as done first.
    keep_container : callable
        Called with the results container's path as soon as it is known (also when its
        ``result_0`` could not be written).

    Returns
    -------
    list of Exception
        The problems, logged already.
    """
    if lease is not None:
        lease.release()  # first, so that no worker of ours writes any more
    problems: list[Exception] = []
    if layout is None or writer is None:
        return problems
    try:
        if interrupted:
            adopted = adopt_payloads(manifest, WriteSpec.of(layout.backend))
            if adopted:
                log.info("%d calls finished after their outcome was last reported; "
                         "recorded as done", adopted)
        try:
            keep_container(layout.finalize(manifest))
        finally:  # after: the container being written is a temporary file until then
            remove_stale_temporaries(layout.output_dir)
    except ResultShapeError as exc:
        keep_container(layout.container)
        problems.append(exc)
    except OSError as exc:
        problems.append(exc if isinstance(exc, StorageError) else StorageError(
            f"cannot write the results container {layout.container}: {exc}",
            errno=exc.errno, filename=layout.container))
    try:
        writer.write()
    except StorageError as exc:
        problems.append(exc)
    finally:
        writer.close()
    for problem in problems:
        log.error("while %s the run: %s", "stopping" if interrupted else "finishing", problem)
    return problems


def _check_resumable(manifest: Manifest, header: dict[str, Any], n_inputs: int,
                     output_dir: str, force: bool = False, warn: bool = True) -> list[str]:
    """Refuse to resume a run recorded with another function, inputs or layout.

    Two lists say what differs: ``differs`` (the run's identity: function, inputs, seed) may be
    overridden with ``resume="force"``; ``incompatible`` (the number of calls, the storage
    layout) never: the recorded files could not be continued. Returns what ``force``
    overrode (empty when the runs are the same).
    """
    theirs, ours = manifest.header.get("fingerprint"), header["fingerprint"]
    differs = compare_identity(theirs, ours)
    if manifest.header.get("seed") != header.get("seed"):
        differs.append(f"the seed differs ({manifest.header.get('seed')!r} recorded, "
                       f"{header.get('seed')!r} now)")
    incompatible: list[str] = []
    if manifest.n_inputs != n_inputs:
        incompatible.append(
            f"the number of calls differs ({manifest.n_inputs} recorded, {n_inputs} now)")
    for key in ("storage", "payload", "result_shape", "result_dtype"):
        if manifest.header.get(key) != header.get(key):
            incompatible.append(
                f"{key} differs ({manifest.header.get(key)!r} recorded, {header.get(key)!r} now)")
    if not differs and not incompatible:
        return []
    name = manifest.header.get("func", {}).get("name")
    if force and not incompatible:
        if not warn:
            return differs
        warnings.warn(
            f"resuming {output_dir} (a run of {name!r}) with resume='force' although "
            f"{'; '.join(differs)}: the calls already done keep the recorded run's results",
            UserWarning, stacklevel=_user_stacklevel())
        return differs
    unhashable = isinstance(theirs, dict) and theirs.get("errors") or ours.get("errors")
    error = FingerprintError if unhashable and not incompatible else ResumeMismatchError
    fix = ("resume='force' cannot override the number of calls or the storage layout "
           "(storage, payload, result_shape, result_dtype): start "
           "a new run in another output_dir" if incompatible else
           "Resume with the same function, arguments and options, start a new run in another "
           "output_dir, or pass resume='force' to resume anyway (the calls already done keep "
           "the recorded run's results)")
    raise error(f"cannot resume {output_dir}: {'; '.join(differs + incompatible)} (recorded "
                f"run of {name!r}). {fix}")


def _user_stacklevel() -> int:
    """The ``stacklevel`` of a warning that points at the user's code, past acme_xr's
    frames and the context managers between them."""
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    skip = (here, os.path.dirname(contextlib.__file__) + os.sep + "contextlib.py")
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """Let the run's files be finished before a Ctrl-C takes effect.

    A first Ctrl-C while the block runs is held back and raised after it; a second one
    interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler not installed from Python: leave it alone
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)
        log.warning("stopping the cluster and saving the run's files; press Ctrl-C again "
                    "to abandon that")

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt
