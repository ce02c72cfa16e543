"""The run manifest (format 4): a small JSON header and an append-only log of call records.

``manifest.json`` describes the run: what ran (function, inputs fingerprint, acme_xr version,
options), the layout (payload file pattern, container, storage kind), each result variable's
run-level description (dtype, dims, attributes, coordinates), the state and the counts.
``manifest.calls`` (:mod:`acme_xr.manifest_log`) holds per call the status, start time,
duration, attempts, host, payload format, error and, per variable, the shape and the data
span (offset, length, CRC-32C) in its payload file, plus the payload file's size and CRC-32C:
enough to open the run as a labelled dataset without touching any payload file.

In memory every per-call field is a numpy column; strings and shapes are coded columns
(:class:`~acme_xr.columns.CodedColumn`). :meth:`Manifest.record_batch` records a batch of
calls with vectorised assignments; :meth:`Manifest.flush` appends the records changed since
the last flush (O(new records)); :meth:`Manifest.write` compacts the log into one block.
Manifests of formats 1-3 (one JSON file, :mod:`acme_xr.manifest_json`) still open.

Examples
--------
>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> m = Manifest.new(n_inputs=2, header={"func": {"name": "f"}})
>>> m.record_batch([0, 1], "h5", [None, None], host="node/0")
>>> _ = m.write(d)
>>> back = Manifest.read(d)
>>> back.status.tolist(), back.host[1]
([1, 1], 'node/0')
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import manifest_log as mlog
from .columns import CodedColumn
from .errors import ManifestCorruptError, ResultsLayoutError
from .manifest_json import FORMAT, RESERVED, from_json
from .manifest_vars import (
    MASKS_KNOWN,
    VarRecord,
    fields_of,
    jsonable,
    promote,
    sums_table,
    var_meta,
)
from .storage.checksums import Sums

__all__ = [
    "MANIFEST_NAME", "LOG_NAME", "PENDING", "DONE", "FAILED", "VarRecord", "Manifest",
    "jsonable", "var_meta", "MASKS_KNOWN",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOG_NAME = mlog.LOG_NAME
# 2: per-call payload sizes and checksums; 3: sizes and spans may lack a checksum (-1)
# 4: per-call records in the append-only binary log manifest.calls
FORMAT_VERSION = 4

PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = ("pending", "done", "failed")
_SPAN_FIELDS = ("offset", "length", "checksum")


def now_iso() -> str:
    """Current local time with offset, ISO 8601."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _ints(n: int, fill: float, dtype: Any) -> Any:
    return field(default_factory=lambda: np.full(n, fill, dtype))


@dataclass
class Manifest:
    """In-memory manifest of a run; see the module docstring.

    Attributes
    ----------
    status : numpy.ndarray of int8, shape (n_inputs,)
        :data:`PENDING`, :data:`DONE` or :data:`FAILED` per call.
    duration, start : numpy.ndarray of float64, shape (n_inputs,)
        Seconds the call's last attempt took; UNIX time (s) it started. NaN: not run here.
    attempts : numpy.ndarray of int32, shape (n_inputs,)
    fmt, host : CodedColumn
        Payload format (``"h5"``, ``"pickle"``, ``"zarr"``) and ``"hostname/worker"`` per
        call, None where unknown; ``host[i]`` is a str or None.
    size, checksum : numpy.ndarray of int64, shape (n_inputs,)
        Size (bytes) and CRC-32C of the call's payload file; -1: not recorded.
    errors : dict
        Call -> ``{"type", "message", "traceback", "attempts"}`` of each failed call.
    """

    n_inputs: int
    header: dict[str, Any]
    status: np.ndarray
    duration: np.ndarray
    attempts: np.ndarray
    fmt: CodedColumn
    host: CodedColumn
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, VarRecord] = field(default_factory=dict)
    coord_templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = "running"
    created: str = field(default_factory=now_iso)
    size: np.ndarray = _ints(0, -1, np.int64)
    checksum: np.ndarray = _ints(0, -1, np.int64)
    start: np.ndarray = _ints(0, np.nan, np.float64)

    def __post_init__(self) -> None:
        n = self.n_inputs
        if len(self.start) != n:
            self.start = np.full(n, np.nan)
        if len(self.size) != n:
            self.size = np.full(n, -1, np.int64)
        if len(self.checksum) != n:
            self.checksum = np.full(n, -1, np.int64)
        if not isinstance(self.fmt, CodedColumn):
            self.fmt = CodedColumn(n, self.fmt)
        if not isinstance(self.host, CodedColumn):
            self.host = CodedColumn(n, self.host)
        # calls changed since the last flush, and where the log's valid bytes end
        self._dirty = np.ones(n, bool)
        self._log: tuple[str, int] | None = None
        self._flushed: dict[str, int] = {}  # table name -> entries already in the log
        self._templates_out: set[str] = set()

    @classmethod
    def new(cls, n_inputs: int, header: dict[str, Any]) -> Manifest:
        """A manifest with every call pending."""
        return cls(n_inputs=n_inputs, header=dict(header),
                   status=np.zeros(n_inputs, np.int8), duration=np.full(n_inputs, np.nan),
                   attempts=np.zeros(n_inputs, np.int32), fmt=CodedColumn(n_inputs),
                   host=CodedColumn(n_inputs))

    # -- updates -------------------------------------------------------------------------
    def record_batch(self, indices: Sequence[int] | np.ndarray,
                     fmt: str | None | Sequence[str | None], meta: Sequence[Any],
                     host: str | None | Sequence[str | None] = None,
                     sums: Sequence[Sums | None] | None = None, *,
                     duration: Any = None, start: Any = None, attempts: Any = None) -> None:
        """Record the calls ``indices`` as done, with vectorised assignments.

        Parameters
        ----------
        indices : sequence of int, length k
        fmt : str, None or sequence of k of them
            Payload format of every call, or of each.
        meta : sequence of k per-call descriptions
            Each a sequence of ``(name, shape, dtype, dims, attrs, coord_tokens)`` per
            variable (see :func:`var_meta`), or None (a pickle). Calls whose descriptions are
            equal are merged into the variables' records once.
        host : str, None or sequence of k of them
        sums : sequence of k :class:`~acme_xr.storage.checksums.Sums` or None, optional
            Size and checksums of each call's payload file (None: not recorded).
        duration, start, attempts : array_like of k, optional
            Seconds, UNIX start time (s), attempts of each call's last attempt.
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        k = len(idx)
        if not k:
            return
        self._dirty[idx] = True
        self.status[idx] = DONE
        self.fmt.codes[idx] = (self.fmt.codes_of(fmt) if isinstance(fmt, (list, tuple))
                               else self.fmt.code(fmt))
        self.host.codes[idx] = (self.host.codes_of(host) if isinstance(host, (list, tuple))
                                else self.host.code(host))
        self._times(idx, duration, start, attempts)
        if self.errors:
            for i in idx.tolist():
                self.errors.pop(i, None)
        # calls of a chunk share one description object: `is` first, == only where not
        first = meta[0]
        same = all(m_ is first or m_ == first for m_ in meta)
        nv = len(meta[0] or ()) if same else max((len(m_) for m_ in meta if m_), default=0)
        table = sums_table(sums, k, nv)
        self.size[idx] = table[:, 0]
        self.checksum[idx] = table[:, 1]
        if same:
            self._merge(idx, meta[0], table)
        else:
            for j in range(k):
                self._merge(idx[j:j + 1], meta[j], table[j:j + 1])

    def _times(self, idx: np.ndarray, duration: Any, start: Any, attempts: Any) -> None:
        if duration is not None:
            self.duration[idx] = duration
        if start is not None:
            self.start[idx] = start
        if attempts is not None:
            self.attempts[idx] = attempts

    def _merge(self, idx: np.ndarray, meta: Any, table: np.ndarray) -> None:
        """Merge one description ``meta``, shared by the calls ``idx``, into the records;
        ``table``: their sums (see :func:`~acme_xr.manifest_vars.sums_table`)."""
        for k, (name, shape, dtype, dims, attrs, coords) in enumerate(meta or ()):
            rec = self.variables.get(name)
            if rec is None:
                rec = VarRecord(dtype=dtype, dims=tuple(dims), shapes=CodedColumn(self.n_inputs),
                                attrs=dict(attrs or {}), labelled=coords is not None,
                                coords=dict(coords or {}))
                # "_acme_xr_masked" is kept as the union over the calls: a reader then
                # knows the mask of an unmasked result
                rec.attrs[MASKS_KNOWN] = True
                self.variables[name] = rec
            calls = idx.tolist()
            if (attrs or {}).get("_acme_xr_masked"):  # storage.values.MASKED_ATTR
                rec.attrs["_acme_xr_masked"] = True
            elif dtype != rec.dtype or fields_of(attrs) != fields_of(rec.attrs):
                # structured layouts of one size share a dtype string: compare the fields
                same_fields = fields_of(attrs) == fields_of(rec.attrs)
                common = promote(rec.dtype, dtype) if same_fields else None
                if common is None:
                    rec.dtype_conflicts.update(dict.fromkeys(calls, dtype))
                else:
                    rec.dtype = common
            if tuple(dims) != rec.dims:
                rec.dims_conflicts.update(dict.fromkeys(calls, tuple(dims)))
            rec.shapes.codes[idx] = rec.shapes.code(tuple(shape))
            rec.record_spans(idx, table[:, 2 + 3 * k:5 + 3 * k], dtype)
            for cname, tok in (coords or {}).items():
                if rec.coords.get(cname, tok) != tok:
                    rec.coords[cname] = None

    def record_done(self, i: int, fmt: str | None, meta: Any, host: str | None,
                    sums: Sums | None = None) -> None:
        """Record call ``i`` as done (one call of :meth:`record_batch`)."""
        self.record_batch([i], fmt, [meta], host, [sums])

    def record_failed(self, i: int | Sequence[int], error: dict[str, Any],
                      host: str | None) -> None:
        """Record call(s) ``i`` as failed with ``error`` = {type, message, traceback}."""
        idx = np.asarray(i, np.int64).reshape(-1)
        self.status[idx] = FAILED
        self.fmt.codes[idx] = -1
        self.host.codes[idx] = self.host.code(host)
        self.forget_sums(idx)
        for j in idx.tolist():
            self.errors[j] = dict(error)

    def record_times(self, indices: Any, duration: Any, start: Any, attempts: Any) -> None:
        """Record the duration, UNIX start time and attempts of the calls ``indices``."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        self._dirty[idx] = True
        self._times(idx, duration, start, attempts)

    def forget(self, i: int) -> None:
        """Mark call ``i`` pending again (its payload is gone or invalid)."""
        self.status[i] = PENDING
        self.fmt[i] = None
        self.forget_sums(i)
        for rec in self.variables.values():
            rec.shapes.codes[i] = -1

    def forget_sums(self, i: Any) -> None:
        """Drop what was recorded of call(s) ``i``'s payload file (it was moved or merged)."""
        self._dirty[i] = True
        self.size[i] = -1
        self.checksum[i] = -1
        for rec in self.variables.values():
            rec.record_spans(np.asarray(i, np.int64).reshape(-1), None, rec.dtype)


    def sums(self, i: int) -> tuple[int, int] | None:
        """(size, checksum) recorded for call ``i``'s payload file, or None."""
        if self.size[i] < 0:
            return None
        return int(self.size[i]), int(self.checksum[i])

    # -- views ---------------------------------------------------------------------------
    def indices(self, status: int) -> np.ndarray:
        """Call indices with the given status code."""
        return np.flatnonzero(self.status == status)

    @property
    def counts(self) -> dict[str, int]:
        """Number of calls per status name."""
        found = np.bincount(self.status, minlength=3)
        return {name: int(found[code]) for code, name in enumerate(STATUS_NAMES)}

    # -- writing -------------------------------------------------------------------------
    def write(self, directory: str) -> str:
        """Write the whole manifest into ``directory``: the calls log as one block
        (write-and-rename), then the header; return the header's path.

        A crash at any moment (of the process or of the machine) leaves the previous
        manifest or this one, whole.

        Raises
        ------
        StorageError
            A file cannot be written (disk full, read-only); the previous manifest stays.
        """
        from .manifest_io import write_all

        return write_all(self, directory)

    def flush(self, directory: str) -> str:
        """Bring the manifest in ``directory`` up to date by appending one block with the
        calls changed since the last write (O(changed calls)); a whole :meth:`write` when
        the log on disk is not the one this manifest last wrote or read."""
        from .manifest_io import flush

        return flush(self, directory)

    @classmethod
    def read(cls, directory: str) -> Manifest:
        """Read the manifest of the run in ``directory`` (any format, 1 to 4).

        Raises
        ------
        FileNotFoundError
            There is no ``manifest.json``.
        ManifestCorruptError
            It is damaged: empty, truncated, not JSON, or not a whole acme_xr manifest.
        ResultsLayoutError
            It cannot be read (e.g. no permission), or is of a newer format.
        """
        path = os.path.join(directory, MANIFEST_NAME)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ResultsLayoutError(f"cannot read the run manifest {path}: {exc}") from exc
        try:
            d = json.loads(raw)
        except ValueError as exc:  # JSON and UTF-8 errors alike
            what = "is empty" if not raw.strip() else f"is not valid JSON ({exc})"
            raise ManifestCorruptError(f"the run manifest {path} {what}") from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ManifestCorruptError(
                f"the run manifest {path} is not an acme_xr manifest (format={got!r})")
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ResultsLayoutError(
                f"the run manifest {path} has format_version {version!r}, newer than this "
                f"acme_xr reads ({FORMAT_VERSION}): upgrade acme_xr to open it")
        try:
            if version < 4:
                return from_json(d)
            from .manifest_io import read_v4

            return read_v4(cls, d, directory)
        except ResultsLayoutError:  # whole, but of a newer format: never rebuilt over
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestCorruptError(
                f"the run manifest {path} is incomplete or damaged ({type(exc).__name__}: "
                f"{exc})") from exc

    def header_dict(self) -> dict[str, Any]:
        """``manifest.json`` of format 4: the header, without any per-call column."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **{k: v for k, v in self.header.items() if k not in RESERVED},
            # the input labels (a value per call) are columns of the calls log
            "coords": {name: {"dtype": spec["dtype"], "values_in": LOG_NAME}
                       for name, spec in self.header.get("coords", {}).items()},
            "n_inputs": self.n_inputs,
            "state": self.state,
            "created": self.created,
            "updated": now_iso(),
            "counts": self.counts,
            "variables": {k: v.head() for k, v in self.variables.items()},
            "coord_templates": self.kept_templates(),
            "calls_log": LOG_NAME,
        }

    def kept_templates(self) -> dict[str, dict[str, Any]]:
        """The coordinate templates the manifest keeps: each coordinate that is the same in
        every call, and one description per coordinate that varies (its values are in the
        payloads, not repeated here)."""
        constant = {tok for rec in self.variables.values() for tok in rec.coords.values()
                    if tok is not None}
        varying = {c for rec in self.variables.values() for c, tok in rec.coords.items()
                   if tok is None}
        out: dict[str, dict[str, Any]] = {}
        for tok, tpl in self.coord_templates.items():
            if tok in constant:
                out[tok] = tpl
            elif tpl.get("name") in varying:
                varying.discard(tpl["name"])
                out[tok] = tpl
        return out
