"""Manifest format 4 on disk: build the calls log's blocks from a :class:`Manifest`, append
or compact them, and read a run's header and log back.

See :mod:`acme_xr.manifest_log` for the bytes and docs/layout.md for every field.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import manifest_log as mlog
from .columns import CodedColumn
from .errors import ManifestCorruptError, StorageError
from .manifest_json import RESERVED
from .manifest_vars import VarRecord
from .storage.atomic import write_json

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["write_all", "flush", "read_v4"]

log = logging.getLogger(__name__)

_SPANS = ("offset", "length", "checksum")
_SPARSE = ("dims_conflicts", "dtype_conflicts", "raw_calls")


def _tables(m: Manifest, full: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """New table entries since the last flush: {name: [base, entries]}, and the lengths."""
    tables = {"format": m.fmt, "host": m.host,
              **{f"{name}/shape": rec.shapes for name, rec in m.variables.items()}}
    out: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for name, col in tables.items():
        base = 0 if full else m._flushed.get(name, 0)
        lengths[name] = len(col.table)
        if len(col.table) > base:
            out[name] = [base, [list(v) if isinstance(v, tuple) else v
                                for v in col.table[base:]]]
    return out, lengths


def _sparse(d: dict[int, Any], idx: np.ndarray | None) -> dict[str, Any]:
    """Entries of ``d`` for the calls ``idx`` (all when None) as JSON."""
    if idx is None:
        items: Any = d.items()
    elif len(d) <= len(idx):
        wanted = set(idx.tolist())
        items = ((i, v) for i, v in d.items() if i in wanted)
    else:
        items = ((i, d[i]) for i in idx.tolist() if i in d)
    return {str(i): list(v) if isinstance(v, tuple) else v for i, v in items}


def _block(m: Manifest, idx: np.ndarray | None) -> tuple[bytes, dict[str, int], set[str]]:
    """A block holding the calls ``idx`` (every call when None)."""
    sel: Any = slice(None) if idx is None else idx
    columns: dict[str, np.ndarray] = {}
    refs = {"checksum": "size"}
    if idx is not None:
        columns["index"] = idx
    columns.update(status=m.status[sel], duration=m.duration[sel], start=m.start[sel],
                   attempts=m.attempts[sel], format=m.fmt.codes[sel], host=m.host.codes[sel],
                   size=m.size[sel], checksum=m.checksum[sel])
    variables: dict[str, Any] = {}
    for name, rec in m.variables.items():
        columns[f"{name}/shape"] = rec.shapes.codes[sel]
        if rec.spans is not None:
            for j, part in enumerate(_SPANS):
                columns[f"{name}/{part}"] = rec.spans[sel, j]
            refs[f"{name}/checksum"] = f"{name}/length"
        variables[name] = {**rec.head(), **{
            key: _sparse(getattr(rec, key), idx) for key in _SPARSE if getattr(rec, key)}}
    inputs = {}
    if idx is None:  # the input labels: once per log, in its first (compacted) block
        for name, spec in m.header.get("coords", {}).items():
            inputs[name] = spec["dtype"]
            columns[f"input/{name}"] = _label_array(spec)
    tables, lengths = _tables(m, idx is None)
    kept = m.kept_templates()
    templates = {t: v for t, v in kept.items() if idx is None or t not in m._templates_out}
    meta = {"n": m.n_inputs if idx is None else len(idx), "range": idx is None,
            "tables": tables, "variables": variables, "templates": templates,
            "errors": _sparse(m.errors, idx), **({"inputs": inputs} if inputs else {})}
    block = mlog.block_bytes(meta, mlog.encode_columns(columns, refs))
    return block, lengths, set(kept)


def _label_array(spec: dict[str, Any]) -> np.ndarray:
    """An input label's values (JSON list or array) as an array of its dtype."""
    dtype = np.dtype(spec["dtype"])
    values = np.asarray(spec["values"])
    if dtype.kind in "Mm" and values.dtype.kind not in "Mm":  # JSON holds them as int64
        return values.astype(np.int64).view(dtype)
    return values.astype(dtype)


def _guarded(path: str, action: Any) -> Any:
    try:
        return action()
    except OSError as exc:
        header = os.path.join(os.path.dirname(path), "manifest.json")
        what = header if path == header else f"{header} (its calls log {path})"
        raise StorageError(f"cannot write the run manifest {what}: {exc}",
                           errno=exc.errno, filename=path) from exc


def _write_header(m: Manifest, directory: str) -> str:
    path = os.path.join(directory, "manifest.json")
    _guarded(path, lambda: write_json(path, m.header_dict(), fsync=True))
    return path


def write_all(m: Manifest, directory: str) -> str:
    """The whole manifest: the log compacted into one block, then the header."""
    path = os.path.join(directory, mlog.LOG_NAME)
    block, lengths, kept = _block(m, None)
    end = _guarded(path, lambda: mlog.write_log(path, block))
    m._dirty[:] = False
    m._log, m._flushed, m._templates_out = (path, end), lengths, kept
    return _write_header(m, directory)


def flush(m: Manifest, directory: str) -> str:
    """Append the changed calls' records as one block, then rewrite the header."""
    path = os.path.join(directory, mlog.LOG_NAME)
    if m._log is None or m._log[0] != path or not _size_is(path, m._log[1]):
        return write_all(m, directory)
    idx = np.flatnonzero(m._dirty)
    block, lengths, kept = _block(m, idx)
    end = _guarded(path, lambda: mlog.append_block(path, block, m._log[1]))  # type: ignore[index]
    m._dirty[idx] = False
    m._log, m._flushed, m._templates_out = (path, end), lengths, m._templates_out | kept
    return _write_header(m, directory)


def _size_is(path: str, size: int) -> bool:
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


# -- reading -----------------------------------------------------------------------------

def read_v4(cls: type[Manifest], d: dict[str, Any], directory: str) -> Manifest:
    """The manifest whose header is ``d``: the calls from its log, each block in turn.

    A torn last block (a crash while appending) and a missing log lose only the records
    they held: the run then reads as interrupted, so that its payloads are looked for.
    """
    n = int(d["n_inputs"])
    m = cls.new(n, {k: v for k, v in d.items() if k not in RESERVED})
    m.state, m.created = d.get("state", "unknown"), d.get("created", "")
    path = os.path.join(directory, d.get("calls_log", mlog.LOG_NAME))
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        data = None
    end = None
    if data is not None:
        try:
            for item in mlog.read_blocks(data):
                if isinstance(item, mlog.LogEnd):
                    end = item
                else:
                    _apply(m, *item)
        except ValueError as exc:
            raise ManifestCorruptError(
                f"the run manifest {os.path.join(directory, 'manifest.json')}: its calls log "
                f"{path} is damaged ({exc})") from exc
    # the header is written after each block: counts that differ from the log's mean a
    # crash in between (or a torn block, whose calls the log no longer records)
    lost = end is None or end.torn or end.blocks == 0 or d.get("counts", m.counts) != m.counts
    if lost:
        why = ("is missing" if data is None else "ends in a torn block"
               if end is not None and end.torn else "records other calls than its header counts")
        # a running run's reader may just see an append under way: no alarm then
        (log.info if m.state == "running" else log.warning)(
            "the calls log %s %s: the calls it does not record are looked for in the run's "
            "payloads", path, why)
        if m.state in ("complete", "failed"):
            m.state = "interrupted"
    m.coord_templates.update(d.get("coord_templates", {}))
    labels = m.header.get("coords") or {}
    for name in [k for k, spec in labels.items() if "values" not in spec]:
        del labels[name]  # its values were in a log that is lost
    m._dirty[:] = False
    if end is not None:
        m._log = (path, end.offset)
        m._flushed = {"format": len(m.fmt.table), "host": len(m.host.table),
                      **{f"{k}/shape": len(r.shapes.table) for k, r in m.variables.items()}}
        m._templates_out = set(m.coord_templates)
    return m


def _extend(col: CodedColumn, entry: list[Any] | None, shape: bool) -> None:
    if entry is None:
        return
    base, values = entry
    if base != len(col.table):
        raise ValueError(f"a table continues at {base}, expected {len(col.table)}")
    col.extend([tuple(v) for v in values] if shape else values)


def _apply(m: Manifest, meta: dict[str, Any], cols: dict[str, np.ndarray]) -> None:
    """Apply one block to ``m``: later records of a call win."""
    full = bool(meta.get("range"))
    sel: Any = slice(None) if full else cols["index"].astype(np.int64)
    calls = None if full else sel.tolist()
    tables = meta["tables"]
    if full:  # a compacted log: its tables start afresh
        m.fmt, m.host = CodedColumn(m.n_inputs), CodedColumn(m.n_inputs)
    _extend(m.fmt, tables.get("format"), False)
    _extend(m.host, tables.get("host"), False)
    m.status[sel] = cols["status"]
    m.duration[sel] = cols["duration"]
    m.start[sel] = cols["start"]
    m.attempts[sel] = cols["attempts"]
    m.fmt.codes[sel] = cols["format"]
    m.host.codes[sel] = cols["host"]
    m.size[sel] = cols["size"]
    m.checksum[sel] = cols["checksum"]
    for name, head in meta["variables"].items():
        rec = m.variables.get(name)
        if rec is None or full:
            rec = m.variables[name] = VarRecord.of_head(head, m.n_inputs)
        else:
            fresh = VarRecord.of_head(head, m.n_inputs)
            rec.dtype, rec.dims, rec.attrs = fresh.dtype, fresh.dims, fresh.attrs
            rec.labelled, rec.coords, rec.raw = fresh.labelled, fresh.coords, fresh.raw
        _extend(rec.shapes, tables.get(f"{name}/shape"), True)
        rec.shapes.codes[sel] = cols[f"{name}/shape"]
        if f"{name}/offset" in cols:
            if rec.spans is None:
                rec.spans = np.full((m.n_inputs, 3), -1, np.int64)
            for j, part in enumerate(_SPANS):
                rec.spans[sel, j] = cols[f"{name}/{part}"]
        for key in _SPARSE:
            _replace(getattr(rec, key), calls, head.get(key, {}),
                     tuple if key == "dims_conflicts" else None)
    _replace(m.errors, calls, meta.get("errors", {}), None)
    for name, dtype in meta.get("inputs", {}).items():
        m.header.setdefault("coords", {})[name] = {
            "dtype": dtype, "values": np.array(cols[f"input/{name}"], dtype)}
    m.coord_templates.update(meta.get("templates", {}))


def _replace(d: dict[int, Any], calls: list[int] | None, new: dict[str, Any],
             convert: Any) -> None:
    """The block's entries for its ``calls`` (every call when None) replace ``d``'s."""
    if calls is None:
        d.clear()
    elif d:
        for i in calls:
            d.pop(i, None)
    for k, v in new.items():
        d[int(k)] = convert(v) if convert else v
