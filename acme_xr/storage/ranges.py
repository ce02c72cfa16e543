"""Read payloads by byte range: plain ``pread`` at the offsets the writer recorded.

A payload variable whose data HDF5 stores as one contiguous, unfiltered block (what
:func:`~acme_xr.storage.hdf5.write_payload` writes for numbers, booleans and times) is, at
its recorded (offset, length), exactly the C-ordered bytes of an array of the stored dtype.
Reading those bytes with ``os.pread`` costs ~10-15 us per file here, against ~0.5 ms for
opening, reading and closing the file with h5py, and needs neither the HDF5 library nor its
global lock: blocks read in parallel from threads and processes alike.

Each read opens the file, compares its size (``fstat`` on the same descriptor) with the size
recorded at writing, reads the bytes, closes it, and compares their CRC-32C with the
recorded one, if any; a block's bytes then become its array with one copy. A payload that is
not the one its call wrote raises :class:`~acme_xr.errors.PayloadCorruptError` naming the
file and the call, as the h5py path does (:func:`acme_xr.integrity.check_read`). Calls
without a recorded range (chunked, compressed, variable-length or empty data, masked floats,
ACME-written runs, a single_file container, the zarr store, manifests that predate ranges)
are read with h5py or zarr as before; so is everything when ``acme_xr.read.byte-ranges`` is
false.

Examples
--------
>>> import os, tempfile, numpy as np
>>> from acme_xr.manifest import VarRecord
>>> from acme_xr.storage.hdf5 import write_payload
>>> from acme_xr.storage.values import to_variables
>>> path = os.path.join(tempfile.mkdtemp(), "f_0.h5")
>>> sums = write_payload(path, to_variables(np.arange(3, dtype=">i4")))
>>> rec = VarRecord(">i4", ("x",), [(3,)])
>>> rec.set_span(0, sums.variables[0]); rec.set_raw(0, stored_dtype(np.dtype(">i4")).str)
>>> table = Ranges.of(rec, np.array([sums.size]), "result_0")
>>> table.read(0, path).tolist()
[0, 1, 2]
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import TYPE_CHECKING

import google_crc32c
import numpy as np

from ..errors import PayloadCorruptError

if TYPE_CHECKING:
    from ..manifest import VarRecord

__all__ = ["Ranges", "stored_dtype", "read_counts", "count"]

_O_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def stored_dtype(dtype: np.dtype) -> np.dtype | None:
    """The dtype of the bytes a payload stores for values of ``dtype``, when they are one
    plain array (None: variable-length strings, bytes, structured and object values, and
    float widths HDF5 does not store as numpy lays them out).

    Mirrors the encodings of :mod:`acme_xr.storage.hdf5`: booleans as ``uint8``, datetimes
    and timedeltas as native ``int64``, numbers as they are (their own byte order).

    Examples
    --------
    >>> [str(stored_dtype(np.dtype(t))) for t in ("?", ">f8", "M8[ns]", "U3")]
    ['uint8', '>f8', 'int64', 'None']
    """
    kind = dtype.kind
    if kind == "b":
        return np.dtype(np.uint8)
    if kind in "Mm":
        return np.dtype(np.int64)
    if kind in "iu" or (kind == "f" and dtype.itemsize in (2, 4, 8)) or (
            kind == "c" and dtype.itemsize in (8, 16)):
        return dtype
    return None


def read_counts() -> dict[str, int]:
    """Calls read in this process so far, by way: ``"range"`` (pread) and ``"h5py"``.

    A diagnostic (tests and benchmarks use it to see which path a read took).

    Examples
    --------
    >>> sorted(read_counts()) == [] or set(read_counts()) <= {"range", "h5py"}
    True
    """
    with _counts_lock:
        return dict(_counts)


def count(way: str, n: int) -> None:
    """Add ``n`` calls read by ``way`` to :func:`read_counts`."""
    if n:
        with _counts_lock:
            _counts[way] += n


class Ranges:
    """Where one variable's bytes are in each call's payload file: the table a block
    reader reads from (numpy columns, built once when the run is opened).

    Parameters
    ----------
    spans : numpy.ndarray
        Per call: (offset, length, checksum), -1 where not recorded.
    sizes : numpy.ndarray
        Per call: the recorded size of its payload file, -1 where not recorded.
    codes : numpy.ndarray
        Per call: index into ``dtypes`` of the dtype of its bytes, -1 where they are no
        plain array.
    dtypes : list of numpy.dtype
    name : str
        The variable's name (for error messages).
    """

    def __init__(self, spans: np.ndarray, sizes: np.ndarray, codes: np.ndarray,
                 dtypes: list[np.dtype], name: str) -> None:
        self.spans = spans
        self.sizes = sizes
        self.codes = codes
        self.dtypes = dtypes
        self.name = name
        # a range is used only with the file's recorded size: a payload rewritten since
        # (another layout, another size) is then never read at a stale offset
        self.usable = (spans[:, 1] > 0) & (codes >= 0) & (sizes >= 0)

    @classmethod
    def of(cls, rec: VarRecord, sizes: np.ndarray | None, name: str) -> Ranges | None:
        """The table of variable ``rec`` (None: no call has a usable range)."""
        if rec.spans is None or sizes is None or not rec.raw and not rec.raw_calls:
            return None
        if not hasattr(os, "pread"):  # not on Windows: h5py reads everything there
            return None
        dtypes: list[np.dtype] = []

        def code(raw: str | None) -> int:
            if not raw:
                return -1
            dt = np.dtype(raw)
            if dt not in dtypes:
                dtypes.append(dt)
            return dtypes.index(dt)

        codes = np.full(len(rec.shapes), code(rec.raw), np.int16)
        for i, raw in rec.raw_calls.items():
            codes[i] = code(raw)
        table = cls(rec.spans, np.asarray(sizes, np.int64), codes, dtypes, name)
        return table if table.usable.any() else None

    def dtype(self, c: int) -> np.dtype:
        """The dtype of call ``c``'s bytes (a call with :attr:`usable` set)."""
        return self.dtypes[self.codes[c]]

    def read(self, c: int, path: str) -> np.ndarray:
        """Call ``c``'s bytes from ``path`` as a flat array of its stored dtype.

        Raises
        ------
        PayloadCorruptError
            The file's size, the bytes read or their checksum differ from those recorded.
        MissingPayloadError
            The file is gone.
        """
        return np.frombuffer(self.read_many([c], [path])[0], self.dtype(c))

    def read_many(self, calls: list[int], paths: list[str],
                  part: tuple[int, int] | None = None) -> list[bytes]:
        """The bytes of each of ``calls`` (see :meth:`read`), in one loop: the per-call cost
        is what a block of thousands of tiny payloads is made of.

        ``part``: (start, length) within each call's bytes, to read only those (a few rows
        of a large array); their checksum, which covers all the bytes, is then not checked.
        """
        spans = self.spans[calls].tolist()
        if part is not None:
            spans = [(off + part[0], part[1], -1) for off, _, _ in spans]
        sizes = self.sizes[calls].tolist()
        crc32c = google_crc32c.value
        out: list[bytes] = []
        for c, path, (offset, length, crc), size in zip(calls, paths, spans, sizes,
                                                        strict=True):
            try:
                fd = os.open(path, _O_RDONLY)
            except OSError as exc:
                raise _unreadable(c, path, exc) from exc
            data = b""
            try:
                actual = os.fstat(fd).st_size
                if actual == size:
                    data = os.pread(fd, length, offset)
            except OSError as exc:
                raise _unreadable(c, path, exc) from exc
            finally:
                os.close(fd)
            if actual != size:
                from ..integrity import size_problem

                raise PayloadCorruptError.for_calls({c: (path, size_problem(actual, size))})
            if len(data) != length:  # the size matched: only a file changed meanwhile
                raise PayloadCorruptError.for_calls({c: (
                    path, f"{len(data)} of the {length} bytes of {self.name!r} at {offset} "
                          "read: truncated")})
            if crc >= 0 and crc32c(data) != crc:
                raise PayloadCorruptError.for_calls({c: (
                    path, f"the data of {self.name!r} (bytes {offset} to {offset + length}) "
                          f"have checksum {crc32c(data):08x}, {crc:08x} recorded: changed")})
            out.append(data)
        return out


def _unreadable(c: int, path: str, exc: OSError) -> PayloadCorruptError:
    from ..integrity import missing

    if isinstance(exc, FileNotFoundError):
        return missing(c, path)
    return PayloadCorruptError.for_calls({c: (path, f"cannot be read: {exc}")})
