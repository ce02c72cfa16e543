"""What the manifest knows of one result variable across calls (:class:`VarRecord`), and the
per-call description a worker sends of it (:func:`var_meta`).

A record keeps its per-call entries column-wise: shapes as a :class:`~acme_xr.columns.CodedColumn`
(a table of distinct shapes and one int32 code per call), data spans as an ``(n, 3)`` int64
array; what differs from the run-level values only in a few calls (dims, dtypes, raw dtypes
that conflict) as small dicts ``{call: value}``.

Examples
--------
>>> rec = VarRecord("<f8", ("x",), [(2,), None])
>>> rec.shapes[0], rec.shapes[1]
((2,), None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .columns import CodedColumn
from .storage.checksums import Sums
from .storage.ranges import stored_dtype
from .storage.values import Coord, token

__all__ = ["VarRecord", "var_meta", "jsonable", "promote", "fields_of", "sums_table",
           "MASKS_KNOWN"]

# a variable's attribute: every call that stored a mask is recorded (see Manifest.record_batch)
MASKS_KNOWN = "_acme_xr_masks_known"


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
    """What the manifest knows of one result variable across calls.

    ``shapes`` may be given as a list (one shape tuple or None per call); it is kept as a
    :class:`~acme_xr.columns.CodedColumn`.
    """

    dtype: str
    dims: tuple[str, ...]
    shapes: CodedColumn
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

    def __post_init__(self) -> None:
        if not isinstance(self.shapes, CodedColumn):
            self.shapes = CodedColumn(len(self.shapes), [
                None if s is None else tuple(s) for s in self.shapes])

    def set_span(self, i: int, span: tuple[int, int, int] | None) -> None:
        if span is None:
            if self.spans is not None:
                self.spans[i] = -1
            self.raw_calls.pop(i, None)
            return
        if self.spans is None:
            self.spans = np.full((len(self.shapes), 3), -1, np.int64)
        self.spans[i] = span

    def record_spans(self, idx: np.ndarray, spans: np.ndarray | None, dtype: str) -> None:
        """Record (offset, length, checksum) rows ``spans`` of the calls ``idx`` (a row of
        -1: none); ``dtype`` is the calls' own dtype, which says the bytes' dtype."""
        has = None if spans is None or not spans.shape[1] else spans[:, 1] >= 0
        if has is None or not has.any():
            if self.spans is not None:
                self.spans[idx] = -1
            if self.raw_calls:
                for i in idx.tolist():
                    self.raw_calls.pop(i, None)
            return
        assert spans is not None
        if self.spans is None:
            self.spans = np.full((len(self.shapes), 3), -1, np.int64)
        self.spans[idx] = spans
        raw = stored_dtype(np.dtype(dtype))  # the writer's encoding of this dtype
        raw_str = "" if raw is None else raw.str
        if self.raw is None:
            self.raw = raw_str
        if raw_str == self.raw:
            if self.raw_calls:
                for i in idx.tolist():
                    self.raw_calls.pop(i, None)
        else:
            self.raw_calls.update(dict.fromkeys(idx[has].tolist(), raw_str))

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

    def unchecked(self) -> bool:
        """Whether some recorded span has no checksum (a format 3 manifest)."""
        return self.spans is not None and bool(
            ((self.spans[:, 1] >= 0) & (self.spans[:, 2] < 0)).any())

    def head(self) -> dict[str, Any]:
        """The run-level part of the record (no per-call entry), as JSON types."""
        out: dict[str, Any] = {"dtype": self.dtype, "dims": list(self.dims)}
        if self.attrs:
            out["attrs"] = jsonable(self.attrs)
        if self.labelled:
            out["labelled"] = True
        if self.coords:
            out["coords"] = dict(self.coords)
        if self.raw is not None:
            out["raw_dtype"] = self.raw
        return out

    @classmethod
    def of_head(cls, d: dict[str, Any], n: int) -> VarRecord:
        """A record with the run-level part ``d`` (see :meth:`head`) and no call's entry."""
        return cls(dtype=d["dtype"], dims=tuple(d["dims"]), shapes=CodedColumn(n),
                   attrs=d.get("attrs", {}), labelled=d.get("labelled", False),
                   coords=d.get("coords", {}), raw=d.get("raw_dtype"))


def fields_of(attrs: dict[str, Any] | None) -> Any:
    return (attrs or {}).get("_acme_xr_fields")  # storage.values.FIELDS_ATTR


def promote(a: str, b: str) -> str | None:
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

def sums_table(sums: Sequence[Sums | None] | None, k: int, nv: int) -> np.ndarray:
    """The sums of ``k`` calls as one int64 array of shape (k, 2 + 3 * nv): per call the
    file's size and checksum, then (offset, length, checksum) of each of ``nv`` variables;
    -1 where not recorded. One array built at once: the common case (every call with the
    sums of every variable) costs one tuple per call."""
    width = 2 + 3 * nv
    if sums is None:
        return np.full((k, width), -1, np.int64)
    try:  # a call without sums or spans makes these ragged or of objects: the careful way
        files = np.array([s[:2] for s in sums], np.int64)  # type: ignore[index]
        spans = np.array([s[2] for s in sums], np.int64)  # type: ignore[index]
        if files.shape == (k, 2) and spans.shape == (k, nv, 3):
            return np.concatenate([files, spans.reshape(k, 3 * nv)], axis=1)
    except (TypeError, ValueError):
        pass
    out = np.full((k, width), -1, np.int64)
    for j, s in enumerate(sums):
        if s is None:
            continue
        out[j, :2] = s.size, s.file
        for v, span in enumerate(s.variables[:nv]):
            if span is not None:
                out[j, 2 + 3 * v:5 + 3 * v] = span
    return out
