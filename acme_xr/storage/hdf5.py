"""HDF5 payload files, the results container and its virtual dataset.

A payload file holds one call's results: one dataset per variable in the root group
(``result_0``, ``result_1``, ... as the specification says). Dimensions are netCDF-4
dimension scales, so a payload opens with ``xr.open_dataset(path, engine="h5netcdf")``
without "phony_dim" guesses. Plain arrays get dimensions ``result_k_dim_j``; xarray
return values keep their own dimension names, coordinates and attributes. Encodings follow
the netCDF/CF conventions xarray decodes: booleans as ``uint8`` with ``dtype="bool"``,
datetimes as ``int64`` with ``units``/``calendar``, strings as variable-length UTF-8.

Examples
--------
>>> import os, tempfile, numpy as np
>>> from acme_xr.storage.values import to_variables
>>> path = os.path.join(tempfile.mkdtemp(), "f_0.h5")
>>> write_payload(path, to_variables((np.arange(3.0), 7)))
>>> [m[0] for m in describe_payload(path)]
['result_0', 'result_1']
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5ds, h5f, h5p, h5s, h5t

from .atomic import atomic_path
from .values import Coord, NotStorable, Variable

__all__ = [
    "write_payload",
    "describe_payload",
    "read_payload",
    "write_container",
    "read_variables",
    "scan_group",
    "write_variables",
    "decode",
    "user_attrs",
    "VarMeta",
]

# (name, shape, dtype string, dims) of one variable in one payload.
VarMeta = tuple[str, tuple[int, ...], str, tuple[str, ...]]

_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable."
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
        unit = np.datetime_data(arr.dtype)[0]
        if kind == "M":
            attrs = {"units": f"{_UNIT_NAMES[unit]} since 1970-01-01",
                     "calendar": "proleptic_gregorian"}
        else:
            attrs = {"units": _UNIT_NAMES[unit], "dtype": f"timedelta64[{unit}]"}
        attrs[DTYPE_ATTR] = arr.dtype.str
        return arr.view(np.int64), attrs, None
    return arr, {}, None


DTYPE_ATTR = "_acme_xr_dtype"
_ENCODING_ATTRS = frozenset({"units", "calendar", "dtype", DTYPE_ATTR})
_INTERNAL_ATTRS = frozenset(
    {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates",
     "coordinates"}
)


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


def _set_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        try:
            obj.attrs[key] = value
        except (TypeError, ValueError):
            obj.attrs[key] = repr(value)


def write_payload(path: str, variables: Sequence[Variable]) -> None:
    """Write one call's variables to a new HDF5 file at ``path``, atomically.

    Raises
    ------
    NotStorable
        When the variables contradict each other (one dimension with two sizes).
    """
    if sum(v.data.nbytes for v in variables) <= _IMAGE_MAX_BYTES:
        image: bytes | bytearray | None = _from_template(variables)
        if image is None:
            image = _file_image(variables)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as out:
                out.write(image)
        return
    with atomic_path(path) as tmp:
        with h5py.File(_new_file(tmp.encode())) as fh:
            _fill(fh, variables)


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


def _file_image(variables: Sequence[Variable], offsets: list[int | None] | None = None,
                ) -> bytes:
    """The bytes of an HDF5 file holding ``variables``, built in memory (core driver).

    With ``offsets``, also appends where each variable's raw data starts in the image
    (None when it is not stored in one contiguous block).
    """
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_fapl_core(64 * 1024, False)  # grow by 64 KiB; no file behind it
    # the name only identifies the in-memory file; unique so that threads never share one
    name = f"acme_xr-image-{os.getpid()}-{next(_images)}".encode()
    fid = _new_file(name, fapl)
    with h5py.File(fid) as fh:
        _fill(fh, variables)
        fh.flush()
        if offsets is not None:
            offsets.extend(fh[v.name].id.get_offset() for v in variables)
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


def _from_template(variables: Sequence[Variable]) -> bytes | bytearray | None:
    """The image of ``variables`` from a template, or None (built with HDF5 instead)."""
    raws = []
    for var in variables:
        raw = _raw(var)
        if raw is None:
            return None
        raws.append(raw)
    key = tuple((v.name, v.dims, v.data.dtype.str, v.data.shape) for v in variables)
    try:
        template = _templates[key]
    except KeyError:
        template = _make_template(variables, raws)
        if len(_templates) >= _TEMPLATES_KEPT:
            _templates.clear()
        _templates[key] = template
        return template[0] if template is not None else None
    if template is None:
        return None
    image = bytearray(template[0])
    for offset, raw in zip(template[1], raws, strict=True):
        image[offset:offset + raw.nbytes] = raw.tobytes()
    return image


def _make_template(variables: Sequence[Variable], raws: Sequence[np.ndarray],
                   ) -> tuple[bytes, tuple[int, ...]] | None:
    offsets: list[int | None] = []
    image = _file_image(variables, offsets)
    if len(image) > _TEMPLATE_MAX_BYTES:
        return None
    found = []
    for offset, raw in zip(offsets, raws, strict=True):
        # the data must be exactly the array's bytes at one place, or no template
        if offset is None or image[offset:offset + raw.nbytes] != raw.tobytes():
            return None
        found.append(offset)
    return image, tuple(found)


def write_variables(grp: h5py.Group, variables: Sequence[Variable]) -> None:
    """Write ``variables`` into an open group (used to gather calls into one file)."""
    _fill(grp, variables)


def _fill(fh: h5py.Group, variables: Sequence[Variable]) -> None:
    """Write ``variables`` (with dimension scales and coordinates) into group ``fh``."""
    sizes: dict[str, int] = {}
    for var in variables:
        for dim, n in zip(var.dims, var.data.shape, strict=True):
            if sizes.setdefault(dim, n) != n:
                raise NotStorable(f"dimension {dim!r} has sizes {sizes[dim]} and {n}")
    coord_vars: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = {}
    for var in variables:
        for c in var.coords:
            coord_vars.setdefault(c.name, (c.dims, c.data, c.attrs))
    scales: dict[str, h5py.h5d.DatasetID] = {}
    for dim, n in sizes.items():
        if dim in coord_vars and coord_vars[dim][0] == (dim,):
            did = _create(fh, dim, coord_vars[dim][1])
            h5ds.set_scale(did, dim.encode())
        else:
            did = h5d.create(fh.id, dim.encode(), h5t.IEEE_F32BE, h5s.create_simple((n,)),
                             dcpl=_dcpl())
            h5ds.set_scale(did, _NOT_A_VARIABLE + f"{n:10}".encode())
        scales[dim] = did
    written = set(scales)
    for name, (dims, data, attrs) in coord_vars.items():
        if name not in written:
            did = _create(fh, name, data)
            for j, dim in enumerate(dims):
                h5ds.attach_scale(did, scales[dim], j)
            written.add(name)
        _set_attrs(fh[name], {**attrs, **_encode(data)[1]})
    for var in variables:
        if var.name in written:
            raise NotStorable(f"variable {var.name!r} has the name of a dimension or coordinate")
        did = _create(fh, var.name, var.data)
        for j, dim in enumerate(var.dims):
            h5ds.attach_scale(did, scales[dim], j)
        extra = _encode(var.data)[1]
        own = [c.name for c in var.coords if c.name not in var.dims]
        if own:
            extra["coordinates"] = " ".join(own)
        if var.attrs or extra:
            _set_attrs(fh[var.name], {**var.attrs, **extra})


def _dims_of(ds: h5py.Dataset) -> tuple[str, ...]:
    names = []
    for j, dim in enumerate(ds.dims):
        if len(dim):
            names.append(os.path.basename(dim[0].name))
        else:
            names.append(f"{os.path.basename(ds.name)}_dim_{j}")
    return tuple(names)


def _decoded_dtype(ds: h5py.Dataset) -> str:
    marked = ds.attrs.get(DTYPE_ATTR)
    if marked is not None:
        return "|b1" if marked == "bool" else str(marked)
    info = h5py.check_string_dtype(ds.dtype)
    if info is not None and info.length is None:  # variable-length: written from str
        return "<U0"
    return ds.dtype.str


def user_attrs(ds: h5py.Dataset) -> dict[str, Any]:
    """The attributes of a dataset minus netCDF bookkeeping and acme_xr's own encodings."""
    encoded = DTYPE_ATTR in ds.attrs
    out = {}
    for key, value in ds.attrs.items():
        if key in _INTERNAL_ATTRS or (encoded and key in _ENCODING_ATTRS):
            continue
        out[key] = value.decode("utf-8") if isinstance(value, bytes) else value
    return out


def _is_data_variable(name: str, obj: Any) -> bool:
    if not isinstance(obj, h5py.Dataset):
        return False
    if obj.attrs.get("CLASS") == b"DIMENSION_SCALE":
        return False
    return True


def _describe_group(fh: h5py.Group) -> list[VarMeta]:
    coordinate_names = _coordinate_names(fh)
    return [
        (name, tuple(obj.shape), _decoded_dtype(obj), _dims_of(obj))
        for name, obj in fh.items()
        if name not in coordinate_names and _is_data_variable(name, obj)
    ]


def describe_payload(path: str) -> list[VarMeta]:
    """Name, shape, decoded dtype and dims of every data variable in a payload file.

    Coordinates (datasets named in a variable's ``coordinates`` attribute) and dimension
    scales are not listed.
    """
    with h5py.File(path, "r") as fh:
        return _describe_group(fh)


def read_payload(path: str) -> dict[str, np.ndarray]:
    """Read every data variable of a payload file into memory, decoded.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from acme_xr.storage.values import to_variables
    >>> p = os.path.join(tempfile.mkdtemp(), "f_0.h5")
    >>> write_payload(p, to_variables(("text", True)))
    >>> read_payload(p)
    {'result_0': array('text', dtype='<U4'), 'result_1': array(True)}
    """
    with h5py.File(path, "r") as fh:
        return {name: decode(fh[name], np.dtype(dtype))
                for name, _s, dtype, _d in _describe_group(fh)}


def _coordinate_names(grp: h5py.Group) -> set[str]:
    names: set[str] = set()
    for obj in grp.values():
        if isinstance(obj, h5py.Dataset) and "coordinates" in obj.attrs:
            value = obj.attrs["coordinates"]
            names.update((value.decode() if isinstance(value, bytes) else str(value)).split())
    return names


def _is_coordinate_scale(ds: h5py.Dataset) -> bool:
    name = ds.attrs.get("NAME", b"")
    return (ds.attrs.get("CLASS") == b"DIMENSION_SCALE"
            and not bytes(name).startswith(_NOT_A_VARIABLE))


def _read_coords(grp: h5py.Group) -> dict[str, Coord]:
    coord_names = _coordinate_names(grp)
    coords: dict[str, Coord] = {}
    for name, obj in grp.items():
        if not isinstance(obj, h5py.Dataset):
            continue
        if _is_coordinate_scale(obj):
            dims: tuple[str, ...] = (name,)
        elif name in coord_names:
            dims = _dims_of(obj)
        else:
            continue
        values = decode(obj, np.dtype(_decoded_dtype(obj)))
        coords[name] = Coord(name, dims, values, user_attrs(obj))
    return coords


def _data_variables(grp: h5py.Group) -> Iterator[tuple[h5py.Dataset, tuple[str, ...],
                                                       dict[str, Any], tuple[Coord, ...], bool]]:
    """(dataset, dims, attrs, its coordinates, labelled?) of each data variable of a group."""
    coords = _read_coords(grp)
    for name, obj in grp.items():
        if name in coords or not _is_data_variable(name, obj):
            continue
        dims = _dims_of(obj)
        attrs = user_attrs(obj)
        own = tuple(c for c in coords.values() if set(c.dims) <= set(dims))
        labelled = bool(own) or bool(attrs) or any(
            d != f"{name}_dim_{j}" for j, d in enumerate(dims))
        yield obj, dims, attrs, own, labelled


def read_variables(grp: h5py.Group) -> list[Variable]:
    """Rebuild the :class:`Variable` objects a payload group was written from.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from acme_xr.storage.values import to_variables
    >>> p = os.path.join(tempfile.mkdtemp(), "f_0.h5")
    >>> write_payload(p, to_variables(np.eye(2)))
    >>> with h5py.File(p) as fh:
    ...     [(v.name, v.dims) for v in read_variables(fh)]
    [('result_0', ('result_0_dim_0', 'result_0_dim_1'))]
    """
    return [
        Variable(os.path.basename(ds.name), decode(ds, np.dtype(_decoded_dtype(ds))), dims,
                 attrs, own, labelled)
        for ds, dims, attrs, own, labelled in _data_variables(grp)
    ]


def scan_group(grp: h5py.Group, templates: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    """Describe a payload group for the manifest without reading its data variables."""
    from ..manifest import var_meta

    return tuple(
        var_meta(os.path.basename(ds.name), tuple(ds.shape), np.dtype(_decoded_dtype(ds)), dims,
                 attrs, own if labelled else None, templates)
        for ds, dims, attrs, own, labelled in _data_variables(grp)
    )


def decode(ds: h5py.Dataset, dtype: np.dtype, selection: Any = ()) -> np.ndarray:
    """Read ``ds[selection]`` and undo the encodings of :func:`write_payload`."""
    raw = ds[selection] if selection != () else ds[()]
    if dtype.kind == "U":
        raw = np.asarray(raw, dtype=object)
        flat = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw.reshape(-1)]
        return np.array(flat, dtype=str).reshape(raw.shape) if flat else np.empty(raw.shape, "U1")
    if dtype.kind == "b":
        return np.asarray(raw).astype(bool)
    if dtype.kind in "Mm":
        return np.asarray(raw).astype(np.int64).view(dtype)
    return np.asarray(raw)


def write_container(
    path: str,
    payloads: Iterable[tuple[int, str]],
    *,
    n_calls: int,
    virtual: tuple[tuple[float | None, ...], np.dtype] | None = None,
) -> None:
    """Write the results container: ``comp_<i>`` external links to each payload.

    Parameters
    ----------
    path : str
        Container file to (re)write atomically, normally ``<output_dir>/<func>.h5``.
    payloads : iterable of (int, str)
        Call index and payload file name *relative to the container's directory*.
    n_calls : int
        Number of calls of the run (the stacking axis length of the virtual dataset).
    virtual : (result_shape, dtype), optional
        With a ``result_shape`` (one ``None``: the stacking axis; ``np.inf``: unlimited),
        also write ``result_0`` as a virtual dataset over every payload's ``result_0``,
        with relative source paths so that a moved directory still reads correctly.
        Calls without a payload read as the fill value (NaN for floating-point types).
    """
    payloads = list(payloads)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as fh:
            links = fh.id.links  # the low-level call: a fifth of h5py's ExternalLink cost
            for i, rel in payloads:
                links.create_external(f"comp_{i}".encode(), rel.encode(), b"/")
            if virtual is not None:
                _virtual_dataset(fh, payloads, n_calls, *virtual)


def _virtual_dataset(
    fh: h5py.File,
    payloads: list[tuple[int, str]],
    n_calls: int,
    result_shape: tuple[float | None, ...],
    dtype: np.dtype,
) -> None:
    axis = result_shape.index(None)
    unlimited = [j for j, s in enumerate(result_shape) if s is not None and np.isinf(s)]
    shape = [n_calls if s is None else (1 if np.isinf(s) else int(s)) for s in result_shape]
    maxshape = [None if j in unlimited else n for j, n in enumerate(shape)]
    source_shape = [n for j, n in enumerate(shape) if j != axis]
    source_max = [m for j, m in enumerate(maxshape) if j != axis]
    layout = h5py.VirtualLayout(
        shape=tuple(shape), dtype=dtype, maxshape=tuple(maxshape) if unlimited else None
    )
    target: list[Any] = [
        slice(h5s.UNLIMITED) if j in unlimited else slice(None) for j in range(len(shape))
    ]
    source_sel = tuple(t for j, t in enumerate(target) if j != axis)
    for i, rel in payloads:
        target[axis] = i
        src = h5py.VirtualSource(
            rel, "result_0", shape=tuple(source_shape),
            maxshape=tuple(source_max) if unlimited else None,
        )
        layout[tuple(target)] = src[source_sel]
    fill = np.nan if np.dtype(dtype).kind in "fc" else None
    fh.create_virtual_dataset("result_0", layout, fillvalue=fill)
