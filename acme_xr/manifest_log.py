"""The manifest's append-only log of per-call records (``manifest.calls``, format 4).

Byte layout (all integers little-endian; docs/layout.md has the field-by-field table)::

    file   := "AXRCALLS" u32 version(=4) u32 reserved(=0)  block*
    block  := u64 L  u32 crc32c(payload)  u32 crc32c(the 8 bytes of L)  payload[L]
    payload:= u32 M  meta[M] (UTF-8 JSON)  zero padding to 8  column data

Each flush appends one block with the records of the calls that changed since the last
one; later blocks win. A block whose length or checksum does not match (a torn tail after
a crash) ends the log: what it held is found again by the scan/resume path. A finished run
keeps one block, written to a temporary name and renamed into place.

Column encodings (a block's meta ``{"columns": {name: encoding}}``): ``{"const": v}``
(every call the same: no bytes), ``{"dtype", "offset"}`` (``k`` values of that dtype at
that payload offset), with ``"none_where": other`` for checksums stored as ``<u4``: -1
where column ``other`` is negative. The meta's ``"index"`` is such an encoding of the call
indices, or ``{"range": n}`` (calls 0..n-1).

Examples
--------
>>> import numpy as np
>>> cols = encode_columns({"status": np.array([1, 1, 1], np.int8),
...                        "size": np.array([10, 300, -1])})
>>> cols.meta["columns"]["status"], cols.meta["columns"]["size"]["dtype"]
({'const': 1}, '<i2')
>>> meta, arrays = decode_block(block_bytes({"n": 3}, cols)[16:])
>>> arrays["size"].tolist()
[10, 300, -1]
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .storage.atomic import atomic_path, fsync_directory
from .storage.checksums import checksum

__all__ = ["LOG_NAME", "MAGIC", "HEADER", "Columns", "encode_columns", "block_bytes",
           "decode_block", "read_blocks", "append_block", "write_log", "LogEnd"]

LOG_NAME = "manifest.calls"
MAGIC = b"AXRCALLS"
VERSION = 4
HEADER = MAGIC + struct.pack("<II", VERSION, 0)
_BLOCK = struct.Struct("<QII")  # payload length, CRC-32C of payload, CRC-32C of the length
_INTS = (np.int8, np.int16, np.int32, np.int64)


@dataclass
class Columns:
    """Encoded columns: the ``columns`` meta entries and the bytes they point into."""

    meta: dict[str, Any] = field(default_factory=lambda: {"columns": {}})
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, name: str, values: np.ndarray, ref: np.ndarray | None = None,
            ref_name: str | None = None) -> dict[str, Any]:
        enc = _encoding(values, ref, ref_name)
        if "const" not in enc:
            data = np.ascontiguousarray(values if "none_where" not in enc else
                                        np.where(values < 0, 0, values)).astype(enc["dtype"])
            enc["offset"] = self.size
            raw = data.tobytes()
            raw += b"\0" * (-len(raw) % 8)
            self.chunks.append(raw)
            self.size += len(raw)
        self.meta["columns"][name] = enc
        return enc


def _encoding(values: np.ndarray, ref: np.ndarray | None, ref_name: str | None) -> dict[str, Any]:
    if len(values) and values.dtype.kind in "iu":
        lo, hi = int(values.min()), int(values.max())
        if lo == hi:
            return {"const": lo}
        if (ref is not None and hi < 2**32 and lo >= -1
                and bool(((values < 0) == (ref < 0)).all())):
            return {"dtype": "<u4", "none_where": ref_name}
        for t in _INTS:
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                return {"dtype": np.dtype(t).newbyteorder("<").str}
    if len(values) and values.dtype.kind == "f":
        bits = values.astype("<f8").view("<i8")
        if (bits == bits[0]).all():
            first = float(values[0])
            return {"const": None if first != first else first}
    return {"dtype": values.dtype.newbyteorder("<").str if values.dtype.kind != "b"
            else "|b1"}


def encode_columns(columns: dict[str, np.ndarray],
                   refs: dict[str, str] | None = None) -> Columns:
    """Encode ``columns`` (name -> 1-D array, one entry per call of the block); ``refs``
    names, for checksum columns, the column whose negative entries mean "none"."""
    out = Columns()
    for name, values in columns.items():
        ref_name = (refs or {}).get(name)
        out.add(name, values, columns.get(ref_name) if ref_name else None, ref_name)
    return out


def block_bytes(meta: dict[str, Any], columns: Columns) -> bytes:
    """One whole block (length, checksums, payload) of ``meta`` and ``columns``."""
    meta = {**meta, "columns": columns.meta["columns"]}
    text = json.dumps(meta, separators=(",", ":"), allow_nan=True).encode()
    head = struct.pack("<I", len(text)) + text
    head += b"\0" * (-len(head) % 8)
    payload = b"".join([head, *columns.chunks])
    length = struct.pack("<Q", len(payload))
    return _BLOCK.pack(len(payload), checksum(payload), checksum(length)) + payload


def decode_block(payload: bytes | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The meta and the columns (decoded to arrays of ``meta["n"]`` entries) of a payload."""
    (m,) = struct.unpack_from("<I", payload, 0)
    meta = json.loads(bytes(payload[4:4 + m]))
    base = 4 + m + (-(4 + m) % 8)
    n = int(meta["n"])
    arrays: dict[str, np.ndarray] = {}
    for name, enc in meta["columns"].items():
        if "const" in enc:
            value = enc["const"]
            arrays[name] = np.full(n, np.nan if value is None else value)
            continue
        dtype = np.dtype(enc["dtype"])
        start = base + int(enc["offset"])
        arrays[name] = np.frombuffer(payload, dtype, n, start)
    for name, enc in meta["columns"].items():
        if "none_where" in enc:
            col = arrays[name].astype(np.int64)
            col[arrays[enc["none_where"]] < 0] = -1
            arrays[name] = col
    return meta, arrays


@dataclass
class LogEnd:
    """Where a log's valid blocks end, and whether bytes (a torn block) follow."""

    offset: int
    torn: bool
    blocks: int


def read_blocks(data: bytes) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]] | LogEnd]:
    """Yield each valid block of a log's bytes, decoded, then a :class:`LogEnd`.

    Raises
    ------
    ValueError
        The bytes do not start with the log's header (not a manifest log, or a newer one).
    """
    if data[:8] != MAGIC:
        raise ValueError(f"not an acme_xr calls log (starts with {data[:8]!r})")
    version = struct.unpack_from("<I", data, 8)[0]
    if version != VERSION:
        raise ValueError(f"calls log version {version}, this acme_xr reads {VERSION}")
    view = memoryview(data)
    pos, blocks = len(HEADER), 0
    while pos + _BLOCK.size <= len(data):
        length, crc, length_crc = _BLOCK.unpack_from(data, pos)
        if checksum(view[pos:pos + 8]) != length_crc:
            break
        end = pos + _BLOCK.size + length
        if end > len(data):
            break
        payload = view[pos + _BLOCK.size:end]
        if checksum(payload) != crc:
            break
        yield decode_block(payload)
        pos, blocks = end, blocks + 1
    yield LogEnd(pos, pos != len(data), blocks)


def append_block(path: str, block: bytes, end: int) -> int:
    """Append ``block`` to the log at ``path`` whose valid bytes end at ``end``; durably.

    Returns the new end. On failure (a full disk) the file is cut back to ``end``, so a
    later append starts on a block boundary.
    """
    with open(path, "r+b") as fh:
        try:
            fh.seek(end)
            fh.write(block)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            fh.truncate(end)
            raise
    return end + len(block)


def write_log(path: str, block: bytes) -> int:
    """Replace the log at ``path`` by one holding ``block`` only (write-and-rename, durable);
    return its size."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(HEADER)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_directory(os.path.dirname(path) or ".")
    return len(HEADER) + len(block)
