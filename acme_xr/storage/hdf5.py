"""HDF5 payload files (the results container is :mod:`acme_xr.storage.container`).

A payload file holds one call's results. Its root group holds exactly one dataset per
variable, ``result_0``, ``result_1``, ... as the specification says, and no other dataset;
everything else that labels them (names, dimension names, coordinates, attributes of xarray
returns, masks of masked arrays) is an attribute or lives in the subgroup ``_acme_xr``, whose
members' names never contain "result" (see :mod:`acme_xr.storage.hdf5_read` for the full
layout, and :func:`acme_xr.open_payload` to open one payload as a labelled Dataset). The root
attribute ``_acme_xr_format`` records the payload format (2).

Types HDF5 lacks follow the netCDF/CF conventions xarray decodes: booleans as ``uint8`` with
``dtype="bool"``, datetimes as ``int64`` with ``units``/``calendar``, strings as
variable-length UTF-8; structured arrays are HDF5 compound datasets.

Examples
--------
>>> import os, tempfile, numpy as np
>>> from acme_xr.storage.values import to_variables
>>> path = os.path.join(tempfile.mkdtemp(), "f_0.h5")
>>> sums = write_payload(path, to_variables((np.arange(3.0), 7)))
>>> [m[0] for m in describe_payload(path)]
['result_0', 'result_1']
>>> import h5py
>>> sorted(h5py.File(path, "r"))
['result_0', 'result_1']
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5f, h5p, h5s, h5t

from .atomic import atomic_path, write_bytes
from .checksums import Sums, checksum, file_sums, pread_exact
from .hdf5_read import (
    COORDS_ATTR,
    DIMS_ATTR,
    DTYPE_ATTR,
    FORMAT_ATTR,
    META_GROUP,
    NAME_ATTR,
    NAMES_ATTR,
    PAYLOAD_FORMAT,
    VarMeta,
    decode,
    describe_payload,
    find_dataset,
    payload_format,
    read_mask,
    read_payload,
    read_variables,
    scan_group,
    user_attrs,
)
from .values import Coord, NotStorable, Variable

__all__ = [
    "write_payload",
    "write_plain",
    "describe_payload",
    "read_payload",
    "read_variables",
    "scan_group",
    "write_variables",
    "decode",
    "find_dataset",
    "read_mask",
    "payload_format",
    "user_attrs",
    "VarMeta",
    "PAYLOAD_FORMAT",
    "META_GROUP",
]

_STRING = h5py.string_dtype("utf-8")


def _encode(arr: np.ndarray) -> tuple[np.ndarray, dict[str, Any], Any]:
    """Return (data to write, attributes that describe it, h5py dtype or None).

    Types netCDF lacks are written the way xarray decodes them and marked with
    ``_acme_xr_dtype`` so that acme_xr can undo exactly its own encodings.
    """
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8), {"dtype": "bool", DTYPE_ATTR: "bool"}, None
    if kind == "U":
        return arr.astype(object), {}, _STRING
    if kind in "Mm":
        unit, count = np.datetime_data(arr.dtype)
        # units CF has no name for (years, months, weeks, multiples) stay numpy's: the
        # _acme_xr_dtype marker is what acme_xr decodes
        name = _UNIT_NAMES.get(unit, unit) if count == 1 else f"{count}{unit}"
        if kind == "M":
            attrs = {"units": f"{name} since 1970-01-01", "calendar": "proleptic_gregorian"}
        else:
            attrs = {"units": name, "dtype": f"timedelta64[{unit}]"}
        attrs[DTYPE_ATTR] = arr.dtype.str
        return arr.view(np.int64), attrs, None
    return arr, {}, None


_UNIT_NAMES = {
    "D": "days", "h": "hours", "m": "minutes", "s": "seconds",
    "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
}


def _create(grp: h5py.Group, name: str, arr: np.ndarray) -> h5py.h5d.DatasetID:
    """Create and fill one dataset with the low-level API (a third cheaper than h5py's)."""
    data, _attrs, h5dtype = _encode(arr)
    if h5dtype is not None:
        return grp.create_dataset(name, data=data, dtype=h5dtype).id
    if not data.flags.c_contiguous:
        data = data.copy(order="C")  # np.ascontiguousarray would make 0-d arrays 1-d
    tid = h5t.py_create(data.dtype, logical=True)
    space = h5s.create_simple(data.shape) if data.ndim else h5s.create(h5s.SCALAR)
    did = h5d.create(grp.id, name.encode(), tid, space, dcpl=_dcpl())
    if data.size:
        did.write(h5s.ALL, h5s.ALL, data)
    return did


@functools.cache
def _dcpl() -> h5p.PropDCID:
    """Dataset creation without modification times (as h5py does): the same values give
    the same bytes, which the payload templates below rely on."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    return dcpl


def _set_attrs(obj: h5py.HLObject, attrs: dict[str, Any], what: str) -> None:
    """Set ``attrs`` on ``obj``; an attribute HDF5 refuses is refused loudly (the call is
    then pickled, with a warning naming the call and this reason), never stored changed."""
    for key, value in attrs.items():
        try:
            obj.attrs[key] = value
        except (TypeError, ValueError) as exc:
            raise NotStorable(
                f"attribute {key!r} of {what} ({type(value).__name__} {value!r:.60}) cannot be "
                f"an HDF5 attribute: {exc}"
            ) from exc


def write_payload(path: str, variables: Sequence[Variable], *,
                  checksums: bool = False) -> Sums:
    """Write one call's variables to a new HDF5 file at ``path``, atomically.

    Return the file's :class:`~acme_xr.storage.checksums.Sums`: its size and, per
    variable, the (offset, length) of its data bytes in the file (None for a variable whose
    data is not one contiguous, unfiltered block), which byte-range readers use. With
    ``checksums`` also the CRC-32C of the whole file and of each variable's data bytes;
    without, each is -1.

    Raises
    ------
    NotStorable
        When the variables contradict each other (one dimension with two sizes).
    """
    if sum(v.data.nbytes for v in variables) <= _IMAGE_MAX_BYTES:
        spans: list[tuple[int, int] | None] = []
        image: bytes | bytearray | None = _from_template(variables, spans)
        if image is None:
            spans.clear()
            image = _file_image(variables, spans)
        write_bytes(path, image)
        if checksums:
            return Sums.of_image(image, tuple(spans))
        return _unchecked(len(image), spans)
    with atomic_path(path) as tmp:
        with h5py.File(_new_file(tmp.encode())) as fh:
            _fill(fh, variables)
            fh.flush()
            spans = _spans(fh, variables)
        # too large to build in memory: checksum what reached the file (from the page cache)
        return _sums_of_file(tmp, spans) if checksums else _unchecked(
            os.path.getsize(tmp), spans)


def _unchecked(size: int, spans: Sequence[tuple[int, int] | None]) -> Sums:
    """Sums without checksums (-1): the size and data spans still let a reader find the
    bytes of each variable, and tell a file rewritten since (another size) from it."""
    return Sums(size, -1, tuple(None if s is None else (s[0], s[1], -1) for s in spans))


def _spans(fh: h5py.Group, variables: Sequence[Variable]) -> list[tuple[int, int] | None]:
    """(offset, length) of each variable's data bytes in the file, None when they are not
    one contiguous block (HDF5's get_offset is undefined then)."""
    out: list[tuple[int, int] | None] = []
    for var in variables:
        did = fh[var.storage_key].id
        offset = did.get_offset()
        out.append(None if offset is None else (offset, did.get_storage_size()))
    return out


def _sums_of_file(path: str, spans: Sequence[tuple[int, int] | None]) -> Sums:
    size, crc = file_sums(path)
    per_var: list[tuple[int, int, int] | None] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for span in spans:
            if span is None:
                per_var.append(None)
                continue
            data = pread_exact(fd, span[0], span[1])
            per_var.append((span[0], span[1], checksum(data)))
    finally:
        os.close(fd)
    return Sums(size, crc, tuple(per_var))


def _new_file(name: bytes, fapl: h5p.PropFAID | None = None) -> h5f.FileID:
    """Create an HDF5 file whose root group records no times (see :func:`_dcpl`)."""
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    return h5f.create(name, h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)


# Small payloads are built in memory and written with one write(): HDF5 writing a file
# itself issues several small writes and metadata flushes, ~20% of a small payload's cost
# on this disk (measured: 0.54 vs 0.65 ms per file). Large ones go straight to the file,
# so that a payload never needs twice its size in memory.
_IMAGE_MAX_BYTES = 4 * 2**20
_images = itertools.count()


def _file_image(variables: Sequence[Variable],
                spans: list[tuple[int, int] | None] | None = None) -> bytes:
    """The bytes of an HDF5 file holding ``variables``, built in memory (core driver).

    With ``spans``, also appends where each variable's raw data is in the image, as
    (offset, length) (None when it is not stored in one contiguous block).
    """
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_fapl_core(64 * 1024, False)  # grow by 64 KiB; no file behind it
    # the name only identifies the in-memory file; unique so that threads never share one
    name = f"acme_xr-image-{os.getpid()}-{next(_images)}".encode()
    fid = _new_file(name, fapl)
    with h5py.File(fid) as fh:
        _fill(fh, variables)
        fh.flush()
        if spans is not None:
            spans.extend(_spans(fh, variables))
        return fid.get_file_image()  # type: ignore[no-any-return]


# Payload templates. Calls of one run mostly return the same structure (names, dims,
# dtypes, shapes) with other numbers, and then their HDF5 files differ only in the bytes of
# the data: after one image is built with HDF5, the next calls copy it and overwrite those
# bytes, ~10x cheaper than building a file with HDF5 each time. Only for variables without
# coordinates or attributes whose data HDF5 stores contiguously, unconverted (checked on
# the image itself when the template is made); everything else is built by HDF5.
_TEMPLATE_MAX_BYTES = 64 * 1024
_TEMPLATES_KEPT = 32
_templates: dict[tuple[Any, ...], tuple[bytes, tuple[int, ...]] | None] = {}


def _raw(var: Variable) -> np.ndarray | None:
    """The array whose bytes HDF5 stores for ``var``, if a template may hold it."""
    if var.coords or var.attrs or not var.data.size or var.data.dtype.kind not in "biufcMm":
        return None
    data, _attrs, h5dtype = _encode(var.data)
    return None if h5dtype is not None else np.ascontiguousarray(data)


def _from_template(variables: Sequence[Variable],
                   spans: list[tuple[int, int] | None]) -> bytes | bytearray | None:
    """The image of ``variables`` from a template, or None (built with HDF5 instead); on
    success ``spans`` gets each variable's (offset, length) in the image."""
    raws = []
    for var in variables:
        raw = _raw(var)
        if raw is None:
            return None
        raws.append(raw)
    # labelled: an xarray return records its dims (an attribute) where a plain one does not
    key = tuple((v.name, v.dims, v.data.dtype.str, v.data.shape, v.labelled)
                for v in variables)
    try:
        template = _templates[key]
    except KeyError:
        template = _make_template(variables, raws)
        if len(_templates) >= _TEMPLATES_KEPT:
            _templates.clear()
        _templates[key] = template
        if template is None:
            return None
        spans.extend((o, r.nbytes) for o, r in zip(template[1], raws, strict=True))
        return template[0]
    if template is None:
        return None
    image = bytearray(template[0])
    for offset, raw in zip(template[1], raws, strict=True):
        image[offset:offset + raw.nbytes] = raw.tobytes()
        spans.append((offset, raw.nbytes))
    return image


@functools.cache
def _plain_dims(ndim: int) -> tuple[str, ...]:
    """The dimension names of a plain array returned alone (see values._one)."""
    return tuple(f"result_0_dim_{d}" for d in range(ndim))


def write_plain(path: str, data: np.ndarray, *, checksums: bool = False) -> Sums | None:
    """Write the payload of a call that returned one plain numeric array from the template
    of its dtype and shape, atomically; None (nothing written) when there is no template.

    The bytes are those :func:`write_payload` writes for ``to_variables(data)`` (the
    template was made by it): only the cost differs. ``data`` must be a non-empty array
    of an integer, floating-point or complex dtype.
    """
    template = _templates.get(
        (("result_0", _plain_dims(data.ndim), data.dtype.str, data.shape, False),))
    if template is None:
        return None
    raw = data.tobytes()  # C order, as the template's array
    offset = template[1][0]
    image = bytearray(template[0])
    image[offset:offset + len(raw)] = raw
    write_bytes(path, image)
    if checksums:
        return Sums.of_image(image, ((offset, len(raw)),))
    return _unchecked(len(image), [(offset, len(raw))])


def _make_template(variables: Sequence[Variable], raws: Sequence[np.ndarray],
                   ) -> tuple[bytes, tuple[int, ...]] | None:
    spans: list[tuple[int, int] | None] = []
    image = _file_image(variables, spans)
    if len(image) > _TEMPLATE_MAX_BYTES:
        return None
    found = []
    for span, raw in zip(spans, raws, strict=True):
        # the data must be exactly the array's bytes at one place, or no template
        if span is None or span[1] != raw.nbytes or (
                image[span[0]:span[0] + raw.nbytes] != raw.tobytes()):
            return None
        found.append(span[0])
    return image, tuple(found)


def write_variables(grp: h5py.Group, variables: Sequence[Variable]) -> None:
    """Write ``variables`` into an open group (used to gather calls into one file)."""
    _fill(grp, variables)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _check_sizes(variables: Sequence[Variable]) -> None:
    sizes: dict[str, int] = {}
    for var in variables:
        for dim, n in zip(var.dims, var.data.shape, strict=True):
            if sizes.setdefault(dim, n) != n:
                raise NotStorable(f"dimension {dim!r} has sizes {sizes[dim]} and {n}")


def _fill(fh: h5py.Group, variables: Sequence[Variable]) -> None:
    """Write ``variables`` into group ``fh`` in the payload layout (format 2).

    The group's datasets are exactly the variables' keys ``result_<j>``; their names,
    dimension names and coordinate names are attributes, and coordinates and masks are
    datasets of the subgroup ``_acme_xr`` (whose member names never contain "result").
    """
    _check_sizes(variables)
    fh.attrs[FORMAT_ATTR] = PAYLOAD_FORMAT
    names = [v.name for v in variables]
    if any(v.name != v.storage_key for v in variables):
        fh.attrs[NAMES_ATTR] = _json({v.storage_key: v.name for v in variables})
    coords: dict[str, Coord] = {}
    for var in variables:
        for c in var.coords:
            coords.setdefault(c.name, c)
    if set(coords) & set(names):
        raise NotStorable(f"variable {sorted(set(coords) & set(names))[0]!r} has the name of "
                          "a coordinate")
    meta = None
    if coords or any(v.mask is not None for v in variables):
        meta = fh.create_group(META_GROUP, track_order=False)
    for n, c in enumerate(coords.values()):
        assert meta is not None
        _create(meta, f"coord_{n}", c.data)
        _set_attrs(meta[f"coord_{n}"], {**c.attrs, **_encode(c.data)[1], NAME_ATTR: c.name,
                                        DIMS_ATTR: _json(list(c.dims))}, f"coordinate {c.name}")
    for var in variables:
        key = var.storage_key
        try:
            _create(fh, key, var.data)
        except (TypeError, ValueError) as exc:  # a dtype or value h5py has no conversion for
            raise NotStorable(f"{var.name} (dtype {var.data.dtype}) cannot be an HDF5 dataset: "
                              f"{exc}") from exc
        extra = _encode(var.data)[1]
        if var.labelled:
            extra[DIMS_ATTR] = _json(list(var.dims))
        if var.coords:
            extra[COORDS_ATTR] = _json([c.name for c in var.coords])
        if var.mask is not None:
            assert meta is not None
            _create(meta, _mask_name(key), var.mask)
        if var.attrs or extra:
            _set_attrs(fh[key], {**var.attrs, **extra}, var.name)


def _mask_name(key: str) -> str:
    return "mask_" + key.removeprefix("result_")
