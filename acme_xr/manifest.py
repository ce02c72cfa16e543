"""The run manifest: one JSON file that describes a whole run.

It records what ran (function, inputs fingerprint, acme_xr version, options), the layout
(payload file pattern, container, storage kind) and, per call, the status, start time, duration,
attempts, host, error and the shape/dtype/dims of every result variable. It holds enough to
open the run as a labelled dataset without touching any payload file.

Per-call columns are stored column-wise (one JSON list per field) so that a manifest of
100,000 calls stays a few MB and parses in a fraction of a second.

Format version 2 adds what lets each payload prove itself: per call the file's ``size`` and
``checksum`` (of the whole file), and per variable the ``data`` spans: offset, length and
checksum of the variable's data bytes in each call's file (-1 where not recorded: older
runs, pickles, calls in a zarr store or a single_file container). A column whose entries
are all equal is ``{"all": value}``; checksums are ``{"u4_base64": ...}`` (little-endian
uint32, 0 where not recorded). The header's ``checksum``
names the algorithm (``"crc32c"``). Version 1 manifests still open (nothing is checked).

With the spans, a variable records ``raw_dtype``: the dtype of the bytes at the spans (the
payload's encoding: ``|u1`` for booleans, ``<i8`` for times, the call's own byte order),
``""`` where they are no plain array (strings, structured); ``raw_dtypes`` lists the calls
whose bytes have another one. :meth:`VarRecord.range` combines them for byte-range readers.
Version 3 is written only when a size or span is recorded without its checksum
(``acme_xr.payload.checksums`` off): the checksum columns then hold -1 there, which readers
of version 2 would take for a checksum. Other manifests stay version 2.

Examples
--------
>>> m = Manifest.new(n_inputs=2, header={"func": {"name": "f"}})
>>> m.status.tolist()
[0, 0]
>>> Manifest.from_dict(m.to_dict()).n_inputs
2
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ManifestCorruptError, ResultsLayoutError, StorageError
from .storage.atomic import write_json
from .storage.checksums import Sums, pack_crcs, pack_ints, unpack_file_sums, unpack_spans
from .storage.ranges import stored_dtype
from .storage.values import Coord, token

__all__ = [
    "MANIFEST_NAME", "PENDING", "DONE", "FAILED", "VarRecord", "Manifest", "jsonable", "var_meta",
]

MANIFEST_NAME = "manifest.json"
FORMAT = "acme_xr-manifest"
# 2: per-call payload sizes and checksums (calls.size, calls.checksum, variables' data
# spans; header "checksum" names the algorithm, "payload_format" the payload layout)
# 3: sizes and spans may be recorded without a checksum (-1); written only then
FORMAT_VERSION = 3
# a variable's attribute: every call that stored a mask is recorded (see record_done)
MASKS_KNOWN = "_acme_xr_masks_known"

PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = ("pending", "done", "failed")


def now_iso() -> str:
    """Current local time with offset, ISO 8601."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """Convert NumPy scalars/arrays (and containers of them) to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "Mm":
            return value.astype(np.int64).tolist()
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def var_meta(
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    dims: tuple[str, ...],
    attrs: dict[str, Any] | None,
    coords: tuple[Coord, ...] | None,
    templates: dict[str, dict[str, Any]],
) -> tuple[Any, ...]:
    """The manifest's description of one variable of one call.

    Returns ``(name, shape, dtype, dims, attrs, coord_tokens)``; ``coords`` is None for
    plain (unlabelled) results. Each coordinate is identified by a content token, and its
    values are added to ``templates`` once, so that coordinates shared by every call are
    stored once and those that differ between calls are recognised.
    """
    tokens = None
    if coords is not None:
        tokens = {}
        for c in coords:
            tok = token(c.data) + ":" + ",".join(c.dims)
            tokens[c.name] = tok
            if tok not in templates:
                templates[tok] = {
                    "name": c.name,
                    "dims": list(c.dims),
                    "dtype": c.data.dtype.str,
                    "values": jsonable(c.data),
                    "attrs": jsonable(c.attrs),
                }
    dtype_str = "<U0" if np.dtype(dtype).kind == "O" else np.dtype(dtype).str
    return (name, tuple(shape), dtype_str, tuple(dims), jsonable(attrs) if attrs else None, tokens)


@dataclass
class VarRecord:
    """What the manifest knows of one result variable across calls."""

    dtype: str
    dims: tuple[str, ...]
    shapes: list[tuple[int, ...] | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    labelled: bool = False
    # coordinate name -> template token (constant across calls) or None (varies)
    coords: dict[str, str | None] = field(default_factory=dict)
    # calls whose dims differ from ``dims`` (reported when the run is opened)
    dims_conflicts: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # calls whose dtype no common dtype holds exactly together with ``dtype`` (reported
    # when the run is opened: stacking them would change their values)
    dtype_conflicts: dict[int, str] = field(default_factory=dict)
    # per call: offset, length and checksum of the data bytes in its file (-1: unknown)
    spans: np.ndarray | None = None
    # dtype of the bytes at the spans ("": no plain array; None: not recorded, the
    # manifest predates it) and the calls whose bytes have another one
    raw: str | None = None
    raw_calls: dict[int, str] = field(default_factory=dict)

    def set_span(self, i: int, span: tuple[int, int, int] | None) -> None:
        if span is None:
            if self.spans is not None:
                self.spans[i] = -1
            self.raw_calls.pop(i, None)
            return
        if self.spans is None:
            self.spans = np.full((len(self.shapes), 3), -1, np.int64)
        self.spans[i] = span

    def span(self, i: int) -> tuple[int, int, int] | None:
        """(offset, length, checksum) of call ``i``'s data bytes, or None."""
        if self.spans is None or self.spans[i, 1] < 0:
            return None
        offset, length, crc = self.spans[i].tolist()
        return offset, length, crc

    def set_raw(self, i: int, dtype: str) -> None:
        """Record the dtype of call ``i``'s bytes at its span ("" when no plain array)."""
        if self.raw is None:
            self.raw = dtype
        if dtype == self.raw:
            self.raw_calls.pop(i, None)
        else:
            self.raw_calls[i] = dtype

    def range(self, i: int) -> tuple[int, int, np.dtype] | None:
        """Where call ``i``'s values are in its payload file, as one plain array.

        Returns
        -------
        (offset, length, dtype) or None
            ``length`` bytes at ``offset`` are the C-ordered values of shape
            ``shapes[i]`` in ``dtype``: the stored dtype, which may differ from the
            decoded :attr:`dtype` (the run's common dtype; ``|u1`` for booleans, ``<i8``
            for datetimes, the call's own width and byte order). None when the call has
            no such bytes: no value, no span recorded (chunked or empty data, a zarr store,
            a single_file container, a manifest that predates ranges) or bytes that are no
            plain array (variable-length strings, structured values).

        Examples
        --------
        >>> rec = VarRecord("<f8", ("x",), [(2,)])
        >>> rec.set_span(0, (2048, 16, -1)); rec.set_raw(0, ">f8")
        >>> rec.range(0)
        (2048, 16, dtype('>f8'))
        """
        shape = self.shapes[i]
        if shape is None or self.spans is None or self.spans[i, 1] <= 0:
            return None
        raw = self.raw_calls.get(i, self.raw)
        if not raw:
            return None
        dtype = np.dtype(raw)
        offset, length = int(self.spans[i, 0]), int(self.spans[i, 1])
        if length != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            return None  # not the bytes of this shape: never guess
        return offset, length, dtype

    def to_dict(self) -> dict[str, Any]:
        present = [s for s in self.shapes if s is not None]
        out: dict[str, Any] = {"dtype": self.dtype, "dims": list(self.dims)}
        if present and all(s == present[0] for s in present):
            out["shape"] = list(present[0])
            out["present"] = _runs([s is not None for s in self.shapes])
        else:
            out["shapes"] = [None if s is None else list(s) for s in self.shapes]
        if self.attrs:
            out["attrs"] = jsonable(self.attrs)
        if self.labelled:
            out["labelled"] = True
        if self.coords:
            out["coords"] = dict(self.coords)
        if self.dims_conflicts:
            out["dims_conflicts"] = {str(k): list(v) for k, v in self.dims_conflicts.items()}
        if self.dtype_conflicts:
            out["dtype_conflicts"] = {str(k): v for k, v in self.dtype_conflicts.items()}
        if self.spans is not None and (self.spans[:, 1] >= 0).any():
            out["data"] = {"offset": pack_ints(self.spans[:, 0]),
                           "length": pack_ints(self.spans[:, 1]),
                           "checksum": _pack_crcs(self.spans[:, 2], self.spans[:, 1])}
            if self.raw is not None:
                out["raw_dtype"] = self.raw
            if self.raw_calls:
                out["raw_dtypes"] = {str(k): v for k, v in sorted(self.raw_calls.items())}
        return out

    def unchecked(self) -> bool:
        """Whether some recorded span has no checksum (a format 3 manifest)."""
        return self.spans is not None and bool(
            ((self.spans[:, 1] >= 0) & (self.spans[:, 2] < 0)).any())

    @classmethod
    def from_dict(cls, d: dict[str, Any], n: int) -> VarRecord:
        spans = unpack_spans(d.get("data"), n)
        # spans of a manifest that predates raw dtypes: their bytes' dtype is unknown
        raw = d.get("raw_dtype", None if spans is None else "")
        if "shapes" in d:
            shapes = [None if s is None else tuple(s) for s in d["shapes"]]
        else:
            shape = tuple(d["shape"])
            mask = _unruns(d["present"], n)
            shapes = [shape if p else None for p in mask]
        return cls(
            dtype=d["dtype"],
            dims=tuple(d["dims"]),
            shapes=shapes,
            attrs=d.get("attrs", {}),
            labelled=d.get("labelled", False),
            coords=d.get("coords", {}),
            dims_conflicts={int(k): tuple(v) for k, v in d.get("dims_conflicts", {}).items()},
            dtype_conflicts={int(k): v for k, v in d.get("dtype_conflicts", {}).items()},
            spans=spans,
            raw=raw,
            raw_calls={int(k): v for k, v in d.get("raw_dtypes", {}).items()},
        )


def _runs(mask: list[bool]) -> list[list[int]]:
    """Compress a boolean mask to [start, stop) runs of True."""
    out: list[list[int]] = []
    start = None
    for i, flag in enumerate(mask):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append([start, i])
            start = None
    if start is not None:
        out.append([start, len(mask)])
    return out


def _unruns(runs: list[list[int]], n: int) -> list[bool]:
    mask = [False] * n
    for start, stop in runs:
        mask[start:stop] = [True] * (stop - start)
    return mask


@dataclass
class Manifest:
    """In-memory manifest of a run; see the module docstring."""

    n_inputs: int
    header: dict[str, Any]
    status: np.ndarray
    duration: np.ndarray
    attempts: np.ndarray
    fmt: list[str | None]
    host: list[str | None]
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, VarRecord] = field(default_factory=dict)
    coord_templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = "running"
    created: str = field(default_factory=now_iso)
    # per call: size and checksum of its payload file (-1: not recorded)
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    checksum: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # per call: UNIX time (s) at which its last attempt started (NaN: not recorded)
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def __post_init__(self) -> None:
        if len(self.start) != self.n_inputs:
            self.start = np.full(self.n_inputs, np.nan)
        if len(self.size) != self.n_inputs:
            self.size = np.full(self.n_inputs, -1, np.int64)
        if len(self.checksum) != self.n_inputs:
            self.checksum = np.full(self.n_inputs, -1, np.int64)

    @classmethod
    def new(cls, n_inputs: int, header: dict[str, Any]) -> Manifest:
        """A manifest with every call pending."""
        return cls(
            n_inputs=n_inputs,
            header=dict(header),
            status=np.zeros(n_inputs, np.int8),
            duration=np.full(n_inputs, np.nan),
            attempts=np.zeros(n_inputs, np.int32),
            fmt=[None] * n_inputs,
            host=[None] * n_inputs,
        )

    # -- updates -------------------------------------------------------------------------
    def record_done(self, i: int, fmt: str | None, meta: Any, host: str | None,
                    sums: Sums | None = None) -> None:
        """Record call ``i`` as done; ``meta`` is a sequence of per-variable descriptions
        ``(name, shape, dtype, dims, attrs, coord_tokens)`` (see :mod:`acme_xr.worker`),
        ``sums`` the size and checksums of its payload file (None: not recorded)."""
        self.status[i] = DONE
        self.fmt[i] = fmt
        self.host[i] = host
        self.errors.pop(i, None)
        self.size[i] = -1 if sums is None else sums.size
        self.checksum[i] = -1 if sums is None else sums.file
        spans = sums.variables if sums is not None else ()
        for k, (name, shape, dtype, dims, attrs, coords) in enumerate(meta or ()):
            rec = self.variables.get(name)
            if rec is None:
                rec = VarRecord(dtype=dtype, dims=tuple(dims), shapes=[None] * self.n_inputs,
                                attrs=dict(attrs or {}), labelled=coords is not None,
                                coords=dict(coords or {}))
                # "_acme_xr_masked" is kept as the union over the calls (older manifests
                # kept the first call's): a reader then knows the mask of an unmasked result
                rec.attrs[MASKS_KNOWN] = True
                self.variables[name] = rec
            if (attrs or {}).get("_acme_xr_masked"):  # storage.values.MASKED_ATTR
                rec.attrs["_acme_xr_masked"] = True
            elif dtype != rec.dtype or _fields(attrs) != _fields(rec.attrs):
                # structured layouts of one size share a dtype string: compare the fields
                same_fields = _fields(attrs) == _fields(rec.attrs)
                common = _promote(rec.dtype, dtype) if same_fields else None
                if common is None:
                    rec.dtype_conflicts[i] = dtype
                else:
                    rec.dtype = common
            if tuple(dims) != rec.dims:
                rec.dims_conflicts[i] = tuple(dims)
            rec.shapes[i] = tuple(shape)
            span = spans[k] if k < len(spans) else None
            rec.set_span(i, span)
            if span is not None:  # the writer's encoding of this call's own dtype
                raw = stored_dtype(np.dtype(dtype))
                rec.set_raw(i, "" if raw is None else raw.str)
            for cname, tok in (coords or {}).items():
                if rec.coords.get(cname, tok) != tok:
                    rec.coords[cname] = None

    def record_failed(self, i: int, error: dict[str, Any], host: str | None) -> None:
        """Record call ``i`` as failed with ``error`` = {type, message, traceback}."""
        self.status[i] = FAILED
        self.fmt[i] = None
        self.host[i] = host
        self.forget_sums(i)
        self.errors[i] = dict(error)

    def forget(self, i: int) -> None:
        """Mark call ``i`` pending again (its payload is gone or invalid)."""
        self.status[i] = PENDING
        self.fmt[i] = None
        self.forget_sums(i)
        for rec in self.variables.values():
            rec.shapes[i] = None

    def forget_sums(self, i: int) -> None:
        """Drop what was recorded of call ``i``'s payload file (it was moved or merged)."""
        self.size[i] = -1
        self.checksum[i] = -1
        for rec in self.variables.values():
            rec.set_span(i, None)

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
        return {name: int((self.status == code).sum()) for code, name in enumerate(STATUS_NAMES)}

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        hosts = sorted({h for h in self.host if h is not None})
        host_ix = {h: k for k, h in enumerate(hosts)}
        return {
            "format": FORMAT,
            # the oldest version that holds it: readers of version 2 open most runs
            "format_version": FORMAT_VERSION if self._unchecked() else 2,
            **self.header,
            "n_inputs": self.n_inputs,
            "state": self.state,
            "created": self.created,
            "updated": now_iso(),
            "counts": self.counts,
            "variables": {k: v.to_dict() for k, v in self.variables.items()},
            "coord_templates": self.coord_templates,
            "calls": {
                "status": self.status.tolist(),
                "duration": _floats(self.duration),
                "start": _floats(self.start),
                "attempts": self.attempts.tolist(),
                "format": self.fmt,
                "hosts": hosts,
                "host": [None if h is None else host_ix[h] for h in self.host],
                **self._sums_columns(),
            },
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
        }

    def _sums_columns(self) -> dict[str, Any]:
        if not (self.size >= 0).any():
            return {}
        return {"size": pack_ints(self.size), "checksum": _pack_crcs(self.checksum, self.size)}

    def _unchecked(self) -> bool:
        """Whether a size or span is recorded without its checksum (format 3)."""
        return bool(((self.size >= 0) & (self.checksum < 0)).any()) or any(
            rec.unchecked() for rec in self.variables.values())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise ResultsLayoutError(f"not an acme_xr manifest (format={d.get('format')!r})")
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ResultsLayoutError(
                f"the run manifest has format_version {version!r}, newer than this acme_xr "
                f"reads ({FORMAT_VERSION}): upgrade acme_xr to open it")
        n = int(d["n_inputs"])
        calls = d["calls"]
        hosts = calls.get("hosts", [])
        reserved = {"format", "format_version", "n_inputs", "state", "created", "updated",
                    "counts", "variables", "coord_templates", "calls", "errors"}
        return cls(
            n_inputs=n,
            header={k: v for k, v in d.items() if k not in reserved},
            status=np.asarray(calls["status"], np.int8),
            duration=_unfloats(calls["duration"]),
            start=_unfloats(calls.get("start", [None] * n)),
            attempts=np.asarray(calls["attempts"], np.int32),
            fmt=list(calls["format"]),
            host=[None if h is None else hosts[h] for h in calls["host"]],
            errors={int(k): v for k, v in d.get("errors", {}).items()},
            variables={k: VarRecord.from_dict(v, n) for k, v in d.get("variables", {}).items()},
            coord_templates=d.get("coord_templates", {}),
            state=d.get("state", "unknown"),
            created=d.get("created", ""),
            **unpack_file_sums(calls, n),
        )

    def write(self, directory: str) -> str:
        """Write the manifest atomically and durably into ``directory``; return its path.

        A crash at any moment (of the process or of the machine) leaves the previous
        manifest or this one, whole.
        """
        path = os.path.join(directory, MANIFEST_NAME)
        try:
            write_json(path, self.to_dict(), fsync=True)
        except OSError as exc:
            raise StorageError(f"cannot write the run manifest {path}: {exc}") from exc
        return path

    @classmethod
    def read(cls, directory: str) -> Manifest:
        """Read ``<directory>/manifest.json``.

        Raises
        ------
        FileNotFoundError
            There is none.
        ManifestCorruptError
            It is damaged: empty, truncated, not JSON, or not a whole acme_xr manifest.
        ResultsLayoutError
            It cannot be read (e.g. no permission).
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
        try:
            return cls.from_dict(d)
        except ResultsLayoutError:  # whole, but of a newer format: never rebuilt over
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestCorruptError(
                f"the run manifest {path} is incomplete or damaged ({type(exc).__name__}: "
                f"{exc})") from exc


def _pack_crcs(crcs: np.ndarray, recorded: np.ndarray) -> Any:
    """Checksums as base64 when every recorded entry has one, else as ints with -1 (format
    3: base64 has no room for "none")."""
    if ((recorded >= 0) & (crcs < 0)).any():
        return pack_ints(crcs)
    return pack_crcs(crcs)


def _floats(values: np.ndarray) -> list[float | None]:
    """Durations to microseconds, NaN (not run) as null; vectorised: this runs at every
    manifest flush over every call."""
    rounded = np.round(values, 6)
    out: list[float | None] = rounded.tolist()
    if np.isnan(rounded).any():
        out = [None if x != x else x for x in out]
    return out


def _unfloats(values: list[float | None]) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in values], float)


def _fields(attrs: dict[str, Any] | None) -> Any:
    return (attrs or {}).get("_acme_xr_fields")  # storage.values.FIELDS_ATTR


def _promote(a: str, b: str) -> str | None:
    """The dtype that holds every value of dtypes ``a`` and ``b`` exactly, or None.

    Widening within a kind (int32 and int64, float32 and float64), float to complex and
    integers to a float with mantissa enough for them are exact; anything else (int64 and
    float64, int64 and uint64, bool and int, datetimes of different units, strings and
    numbers, structured layouts that differ) is not, and is reported, never cast.
    """
    da, db = np.dtype(a), np.dtype(b)
    if da.kind == db.kind == "U":  # <U0: an older manifest, whose strings open as objects
        return "<U0" if "<U0" in (a, b) else np.result_type(da, db).str
    if da.kind == db.kind == "S":
        return np.result_type(da, db).str
    if da.newbyteorder("=") == db.newbyteorder("=") and da.kind != "V":
        return da.newbyteorder("=").str
    if not (da.kind in "iufc" and db.kind in "iufc"):
        return None
    common = np.result_type(da, db)
    for d in (da, db):
        if d.kind in "iu" and common.kind in "fc":
            mantissa = np.finfo(common).nmant + 1
            if d.itemsize * 8 - (d.kind == "i") > mantissa:
                return None
        elif d.kind in "iu" and common.kind not in "iu":
            return None
    return common.str
