"""The JSON run manifest of formats 1 to 3 (acme_xr before manifest format 4): read, and
written only for comparison (benchmarks/test_m1_manifest.py) and tests.

Formats 1-3 hold everything in ``manifest.json``: the header and, column-wise, one JSON list
per per-call field (``calls``), rewritten whole at every flush. Format 2 adds per-call payload
sizes and checksums and per-variable data spans; 3 is 2 with spans or sizes recorded without
a checksum (-1). docs/layout.md describes them.

Examples
--------
>>> from acme_xr.manifest import Manifest
>>> m = Manifest.new(2, {"func": {"name": "f"}})
>>> from_json(to_json(m)).n_inputs
2
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .columns import CodedColumn
from .errors import ResultsLayoutError
from .manifest_vars import VarRecord, jsonable
from .storage.checksums import pack_crcs, pack_ints, unpack_file_sums, unpack_spans

__all__ = ["FORMAT", "JSON_VERSION", "RESERVED", "to_json", "from_json", "floats", "unfloats"]

FORMAT = "acme_xr-manifest"
JSON_VERSION = 3
# header keys of a manifest that are not the run's own header entries
RESERVED = {"format", "format_version", "n_inputs", "state", "created", "updated", "counts",
            "variables", "coord_templates", "calls", "errors", "calls_log"}


def _var_to_json(rec: VarRecord) -> dict[str, Any]:
    shapes = list(rec.shapes)
    present = [s for s in shapes if s is not None]
    out: dict[str, Any] = {"dtype": rec.dtype, "dims": list(rec.dims)}
    if present and all(s == present[0] for s in present):
        out["shape"] = list(present[0])
        out["present"] = _runs([s is not None for s in shapes])
    else:
        out["shapes"] = [None if s is None else list(s) for s in shapes]
    head = rec.head()
    for key in ("attrs", "labelled", "coords"):
        if key in head:
            out[key] = head[key]
    if rec.dims_conflicts:
        out["dims_conflicts"] = {str(k): list(v) for k, v in rec.dims_conflicts.items()}
    if rec.dtype_conflicts:
        out["dtype_conflicts"] = {str(k): v for k, v in rec.dtype_conflicts.items()}
    if rec.spans is not None and (rec.spans[:, 1] >= 0).any():
        out["data"] = {"offset": pack_ints(rec.spans[:, 0]),
                       "length": pack_ints(rec.spans[:, 1]),
                       "checksum": _pack_crcs(rec.spans[:, 2], rec.spans[:, 1])}
        if rec.raw is not None:
            out["raw_dtype"] = rec.raw
        if rec.raw_calls:
            out["raw_dtypes"] = {str(k): v for k, v in sorted(rec.raw_calls.items())}
    return out


def _var_from_json(d: dict[str, Any], n: int) -> VarRecord:
    spans = unpack_spans(d.get("data"), n)
    # spans of a manifest that predates raw dtypes: their bytes' dtype is unknown
    raw = d.get("raw_dtype", None if spans is None else "")
    if "shapes" in d:
        shapes = CodedColumn(n, [None if s is None else tuple(s) for s in d["shapes"]])
    else:
        shapes = CodedColumn(n)
        shapes.codes[_unruns(d["present"], n)] = shapes.code(tuple(d["shape"]))
    return VarRecord(
        dtype=d["dtype"], dims=tuple(d["dims"]), shapes=shapes, attrs=d.get("attrs", {}),
        labelled=d.get("labelled", False), coords=d.get("coords", {}),
        dims_conflicts={int(k): tuple(v) for k, v in d.get("dims_conflicts", {}).items()},
        dtype_conflicts={int(k): v for k, v in d.get("dtype_conflicts", {}).items()},
        spans=spans, raw=raw,
        raw_calls={int(k): v for k, v in d.get("raw_dtypes", {}).items()},
    )


def to_json(m: Any) -> dict[str, Any]:
    """The manifest ``m`` as a format 2/3 JSON object (everything in one document)."""
    hosts = [h for h in m.host.table if h is not None]
    unchecked = bool(((m.size >= 0) & (m.checksum < 0)).any()) or any(
        rec.unchecked() for rec in m.variables.values())
    calls: dict[str, Any] = {
        "status": m.status.tolist(),
        "duration": floats(m.duration),
        "start": floats(m.start),
        "attempts": m.attempts.tolist(),
        "format": list(m.fmt),
        "hosts": hosts,
        "host": [None if c < 0 else c for c in m.host.codes.tolist()],
    }
    if (m.size >= 0).any():
        calls.update(size=pack_ints(m.size), checksum=_pack_crcs(m.checksum, m.size))
    return {
        "format": FORMAT,
        # the oldest version that holds it: readers of version 2 open most runs
        "format_version": JSON_VERSION if unchecked else 2,
        **jsonable(m.header),
        "n_inputs": m.n_inputs,
        "state": m.state,
        "created": m.created,
        "counts": m.counts,
        "variables": {k: _var_to_json(v) for k, v in m.variables.items()},
        "coord_templates": m.coord_templates,
        "calls": calls,
        "errors": {str(k): v for k, v in sorted(m.errors.items())},
    }


def from_json(d: dict[str, Any]) -> Any:
    """The :class:`~acme_xr.manifest.Manifest` of a format 1-3 JSON object.

    Raises
    ------
    ResultsLayoutError
        ``d`` is no acme_xr manifest, or of a newer format.
    """
    from .manifest import Manifest

    if d.get("format") != FORMAT:
        raise ResultsLayoutError(f"not an acme_xr manifest (format={d.get('format')!r})")
    version = d.get("format_version", 1)
    if not isinstance(version, int) or version > JSON_VERSION:
        raise ResultsLayoutError(f"not a JSON manifest (format_version {version!r})")
    n = int(d["n_inputs"])
    calls = d["calls"]
    hosts = calls.get("hosts", [])
    m = Manifest(
        n_inputs=n,
        header={k: v for k, v in d.items() if k not in RESERVED},
        status=np.asarray(calls["status"], np.int8),
        duration=unfloats(calls["duration"]),
        start=unfloats(calls.get("start", [None] * n)),
        attempts=np.asarray(calls["attempts"], np.int32),
        fmt=CodedColumn(n, calls["format"]),
        host=CodedColumn.of(np.asarray([-1 if h is None else h for h in calls["host"]],
                                       np.int32), hosts),
        errors={int(k): v for k, v in d.get("errors", {}).items()},
        variables={k: _var_from_json(v, n) for k, v in d.get("variables", {}).items()},
        coord_templates=d.get("coord_templates", {}),
        state=d.get("state", "unknown"),
        created=d.get("created", ""),
        **unpack_file_sums(calls, n),
    )
    if len(m.status) != n or len(m.host) != n or len(m.fmt) != n:
        raise ValueError(f"the calls' columns do not have {n} entries")
    return m


def _pack_crcs(crcs: np.ndarray, recorded: np.ndarray) -> Any:
    """Checksums as base64 when every recorded entry has one, else as ints with -1 (format
    3: base64 has no room for "none")."""
    if ((recorded >= 0) & (crcs < 0)).any():
        return pack_ints(crcs)
    return pack_crcs(crcs)


def floats(values: np.ndarray) -> list[float | None]:
    """Seconds to microseconds, NaN (not run) as null."""
    rounded = np.round(values, 6)
    out: list[float | None] = rounded.tolist()
    if np.isnan(rounded).any():
        out = [None if x != x else x for x in out]
    return out


def unfloats(values: list[float | None]) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in values], float)


def _runs(mask: list[bool]) -> list[list[int]]:
    """Compress a boolean mask to [start, stop) runs of True."""
    flags = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(flags[1:] != flags[:-1]).reshape(-1, 2)
    return edges.tolist()


def _unruns(runs: list[list[int]], n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    for start, stop in runs:
        mask[start:stop] = True
    return mask

