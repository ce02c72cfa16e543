"""Checksums that let a payload prove itself: its size, the CRC-32C of the whole file and of
each variable's data bytes at their (offset, length) in the file.

The worker computes them from the bytes it writes (no read back for files built in memory)
and hands them to the client in the outcome record; the manifest keeps them; readers compare
them (:func:`check_bytes`, :func:`verify_file`).

CRC-32C (Castagnoli) through ``google_crc32c`` (a dependency of zarr; SSE 4.2/ARMv8
instructions): ~7 GB/s on 2 KB and ~20 GB/s on large buffers here, 3x to 8x zlib.crc32 and
30x blake2b (measured 2026-11-30, see docs/benchmarks.md). It detects every change of up to
a few bits and any burst of up to 32 bits, which is what a flipped byte, a torn write or a
truncation leave; it is not a defence against someone forging a file on purpose.

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
>>> with open(path, "wb") as fh:
...     _ = fh.write(b"123456789")
>>> hex(checksum(b"123456789"))
'0xe3069283'
>>> file_sums(path) == (9, checksum(b"123456789"))
True
"""

from __future__ import annotations

import base64
import os
from typing import Any, NamedTuple

import google_crc32c
import numpy as np

__all__ = ["ALGORITHM", "Sums", "checksum", "file_sums", "enabled", "pack_ints", "pack_crcs",
           "unpack_ints", "unpack_spans", "unpack_file_sums"]

ALGORITHM = "crc32c"
_READ_BLOCK = 8 * 2**20


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``start``), as an unsigned 32-bit int."""
    if not isinstance(data, bytes):  # google_crc32c's C function takes bytes only
        data = bytes(data)
    return int(google_crc32c.extend(start, data))


class Sums(NamedTuple):
    """What a worker records of one payload file it wrote (a tuple: built and pickled back
    to the client once per call, where a dataclass costs ~10x more).

    ``variables`` has one entry per variable, in the variables' order: ``(offset, length,
    checksum)`` of its data bytes when they sit contiguous and unfiltered in the file, else
    None (variable-length strings, empty arrays, chunked large arrays).
    """

    size: int
    file: int
    variables: tuple[tuple[int, int, int] | None, ...] = ()

    @classmethod
    def of_image(cls, image: bytes | bytearray,
                 offsets: tuple[tuple[int, int] | None, ...] = ()) -> Sums:
        """The sums of a file whose bytes are ``image``; ``offsets``: (offset, length) of
        each variable's data, or None."""
        data = image if isinstance(image, bytes) else bytes(image)
        crc = google_crc32c.value  # the C function: ~0.3 us for 2 KB
        per_var = tuple([None if o is None else (o[0], o[1], crc(data[o[0]:o[0] + o[1]]))
                         for o in offsets])
        return cls(len(data), crc(data), per_var)


def file_sums(path: str) -> tuple[int, int]:
    """(size, CRC-32C) of the file at ``path``, read in blocks.

    Raises
    ------
    OSError
        The file cannot be read (FileNotFoundError when it is gone).
    """
    crc = 0
    size = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            block = fh.read(_READ_BLOCK)
            if not block:
                break
            crc = checksum(block, crc)
            size += len(block)
    return size, crc


def enabled() -> bool:
    """Whether new payloads are checksummed (``acme_xr.payload.checksums``, default on)."""
    from .. import config

    return bool(config.get("payload.checksums"))


def pread_exact(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of open file ``fd`` (fewer only at the end of file)."""
    parts = []
    while length > 0:
        block = os.pread(fd, length, offset)
        if not block:
            break
        parts.append(block)
        offset += len(block)
        length -= len(block)
    return b"".join(parts)


# -- how the manifest keeps them (column-wise, see acme_xr.manifest) ----------------------

def pack_ints(col: np.ndarray) -> Any:
    """A column of ints for JSON: ``{"all": v}`` when every entry is ``v``, else a list."""
    if len(col) and (col == col[0]).all():
        return {"all": int(col[0])}
    return col.tolist()


def pack_crcs(col: np.ndarray) -> dict[str, str]:
    """A column of CRC-32Cs (-1: none) as base64 of little-endian uint32 (5.3 characters a
    call, against ~11 as JSON numbers: the manifest is rewritten at every flush)."""
    return {"u4_base64": base64.b64encode(
        np.where(col < 0, 0, col).astype("<u4").tobytes()).decode("ascii")}


def unpack_ints(value: Any, n: int) -> np.ndarray:
    if isinstance(value, dict):
        if "all" in value:
            return np.full(n, value["all"], np.int64)
        return np.frombuffer(base64.b64decode(value["u4_base64"]), "<u4").astype(np.int64)
    return np.asarray(value, np.int64)


def unpack_spans(data: dict[str, Any] | None, n: int) -> np.ndarray | None:
    if data is None:
        return None
    spans = np.stack([unpack_ints(data[k], n) for k in ("offset", "length", "checksum")], 1)
    spans[spans[:, 1] < 0, 2] = -1  # no data recorded: no checksum either
    return spans


def unpack_file_sums(calls: dict[str, Any], n: int) -> dict[str, np.ndarray]:
    if "size" not in calls:
        return {}
    size = unpack_ints(calls["size"], n)
    checksum = unpack_ints(calls["checksum"], n)
    checksum[size < 0] = -1
    return {"size": size, "checksum": checksum}
