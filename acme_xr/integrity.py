"""Payloads that prove themselves: check a payload file against what its call recorded.

The worker records each payload's size, the checksum of the whole file and of each
variable's data bytes (:mod:`acme_xr.storage.checksums`); the manifest keeps them. Here
they are checked:

* :func:`check_read` before every read of a payload by :func:`acme_xr.open_results`: the
  size (one ``fstat``) and, when a whole variable is read, the checksum of its data bytes
  (one ``pread`` of bytes that are read anyway);
* :func:`verify_run` for ``open_results(..., verify=True)``: whole-file checksums of every
  payload of the run, every bad one listed in one error;
* :func:`drop_damaged` for ``ParallelMap(..., resume=True)``: calls whose payload is not
  what they wrote count as not done and run again.

A payload that is missing, emptied, truncated or changed raises
:class:`~acme_xr.errors.PayloadCorruptError` naming the file and the call
(:class:`~acme_xr.errors.MissingPayloadError`, a subclass, when it is gone).

Examples
--------
>>> import os, tempfile
>>> from acme_xr import ParallelMap
>>> run = os.path.join(tempfile.mkdtemp(), "run")
>>> _ = ParallelMap(abs, [-1, -2], output_dir=run, verbose=False).compute()
>>> from acme_xr.scan import load_manifest
>>> verify_run(run, load_manifest(run))
{}
>>> open(os.path.join(run, "abs_1.h5"), "wb").close()   # emptied
>>> verify_run(run, load_manifest(run))[1][1]
'0 bytes, 2056 recorded: emptied'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from .errors import MissingPayloadError, PayloadCorruptError
from .manifest import DONE, Manifest
from .scan import payload_location
from .storage.checksums import checksum, file_sums, pread_exact
from .storage.registry import DEFAULT, backend_class, names

__all__ = ["check_read", "verify_run", "unchecked_calls", "drop_damaged", "payload_path",
           "size_problem"]

log = logging.getLogger(__name__)

CORRUPT_SUFFIX = ".corrupt"


def size_problem(actual: int, recorded: int) -> str:
    """How a file of ``actual`` bytes differs from the ``recorded`` size."""
    how = ("emptied" if actual == 0 else "truncated" if actual < recorded
           else "longer than written")
    return f"{actual} bytes, {recorded} recorded: {how}"


def missing(i: int, path: str) -> MissingPayloadError:
    return MissingPayloadError(
        f"call {i}: the payload {path} listed in the run's manifest is gone; restore it, "
        "or re-run that call with ParallelMap(..., resume=True)",
        bad={i: (path, "missing")}, filename=path)


def check_read(i: int, path: str, size: int | None,
               span: tuple[int, int, int] | None = None, name: str = "") -> None:
    """Check call ``i``'s payload at ``path`` before it is read.

    Parameters
    ----------
    size : int, optional
        The recorded size of the file (None: not recorded; only its existence is checked).
    span : (offset, length, checksum), optional
        The recorded data bytes of variable ``name`` (given when the whole variable is read).

    Raises
    ------
    PayloadCorruptError
        The file differs in size, or the variable's data bytes in checksum.
    MissingPayloadError
        The file is gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise missing(i, path) from exc
    except OSError as exc:
        raise PayloadCorruptError.for_calls({i: (path, f"cannot be read: {exc}")}) from exc
    try:
        if size is not None:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise PayloadCorruptError.for_calls({i: (path, size_problem(actual, size))})
        if span is not None and span[2] >= 0:  # -1: recorded without a checksum
            offset, length, crc = span
            data = pread_exact(fd, offset, length)
            found = checksum(data)
            if len(data) != length or found != crc:
                raise PayloadCorruptError.for_calls({i: (
                    path, f"the data of {name!r} (bytes {offset} to {offset + length}) have "
                          f"checksum {found:08x}, {crc:08x} recorded: changed")})
    finally:
        os.close(fd)


def payload_path(manifest: Manifest, run_dir: str, i: int) -> str | None:
    """The file of call ``i`` whose recorded sums apply to it (None: none recorded).

    Sums describe files of their own call only: not a ``single_file`` container (rewritten
    when the run ends) and not the zarr store.
    """
    if manifest.status[i] != DONE or manifest.sums(i) is None or manifest.header.get("group"):
        return None
    path = payload_location(manifest.header, run_dir, i)[0]
    if manifest.fmt[i] == "pickle":
        path = os.path.splitext(path)[0] + ".pickle"
    return path


def _checked(manifest: Manifest, run_dir: str) -> Iterator[tuple[int, str, str | None]]:
    """(call, path, what is wrong or None) of every payload with recorded sums."""
    for i in range(manifest.n_inputs):
        path = payload_path(manifest, run_dir, i)
        if path is None:
            continue
        sums = manifest.sums(i)
        assert sums is not None
        yield i, path, file_problem(path, *sums)


def file_problem(path: str, size: int, crc: int) -> str | None:
    """What is wrong with the file at ``path`` given its recorded size and checksum."""
    try:
        # crc -1: recorded without checksums (format 3), only the size can be compared
        actual, found = (os.path.getsize(path), crc) if crc < 0 else file_sums(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read: {exc}"
    if actual != size:
        return size_problem(actual, size)
    if found != crc:
        return f"checksum {found:08x}, {crc:08x} recorded: changed"
    return None


def unchecked_calls(manifest: Manifest) -> int:
    """The number of done calls whose payload size was recorded without its checksum
    (``acme_xr.payload.checksums`` off): :func:`verify_run` compares only their size."""
    done = manifest.status == DONE
    return int(np.count_nonzero(done & (manifest.size >= 0) & (manifest.checksum < 0)))


def verify_run(run_dir: str, manifest: Manifest) -> dict[int, tuple[str, str]]:
    """Whole-file checks of every payload of a run with recorded sums.

    Also calls done without recorded sums whose payload file is gone are listed.

    Returns
    -------
    dict
        call index -> (path, what is wrong), for every bad payload (empty: all good).
    """
    bad = {i: (path, why) for i, path, why in _checked(manifest, run_dir) if why is not None}
    header = manifest.header
    if not header.get("group") and header.get("payload"):
        for i in range(manifest.n_inputs):
            if (manifest.status[i] != DONE or manifest.sums(i) is not None or i in bad
                    or manifest.fmt[i] not in ("h5", "pickle")):
                continue
            path = payload_location(header, run_dir, i)[0]
            if manifest.fmt[i] == "pickle":
                path = os.path.splitext(path)[0] + ".pickle"
            if not os.path.exists(path):
                bad[i] = (path, "missing")
    # a backend with a store of its own checks it (zarr: each chunk's CRC-32C)
    name = header.get("storage") or DEFAULT
    backend = backend_class(name if name in names() else DEFAULT)
    for i, where in backend.damaged(run_dir, manifest).items():
        bad.setdefault(i, where)
    container = header.get("container_sums")
    if header.get("group") and container:
        path = os.path.join(run_dir, header["payload"])
        problem = file_problem(path, *container)
        if problem is not None:
            for i in range(manifest.n_inputs):
                if manifest.status[i] == DONE and manifest.fmt[i] == "h5":
                    bad[i] = (path, problem)
    return bad


def drop_damaged(manifest: Manifest, run_dir: str) -> list[int]:
    """Resume: mark pending the calls whose payload is not what they wrote.

    A damaged payload is renamed ``<name>.corrupt`` (kept for a look, never read again) so
    that the call's next run cannot take it for a finished result. Returns the calls.
    """
    dropped = []
    for i, path, why in list(_checked(manifest, run_dir)):
        if why is None:
            continue
        log.warning("call %d: its payload %s is %s; the call runs again", i, path, why)
        if why != "missing":
            try:
                os.replace(path, path + CORRUPT_SUFFIX)
            except OSError as exc:
                log.warning("could not move the damaged payload %s aside: %s", path, exc)
                continue
        manifest.forget(i)
        dropped.append(i)
    return dropped
