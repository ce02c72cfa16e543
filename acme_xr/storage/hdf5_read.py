"""Read HDF5 payloads (and ``single_file`` groups) of every payload format back.

Format 2 (this version; the group attribute ``_acme_xr_format`` says which): the group's
datasets are exactly ``result_0``, ``result_1``, ... Each one's attributes are the user's
attributes plus acme_xr's:

* ``_acme_xr_dims``: JSON list of dimension names (xarray returns; plain arrays have
  ``<name>_dim_<j>``);
* ``_acme_xr_coords``: JSON list of the names of its coordinates;
* ``_acme_xr_dtype`` (with CF ``units``/``calendar``/``dtype``): how a bool or a time was
  encoded;
* ``_acme_xr_masked``, ``_acme_xr_fields``, ``_acme_xr_dataset_attrs``: see
  :mod:`acme_xr.storage.values`.

The group attribute ``_acme_xr_names`` (JSON ``{key: name}``) names the variables whose name
is not their key (the data variables of an :class:`xarray.Dataset` return). The subgroup
``_acme_xr`` holds ``coord_<n>`` (one per coordinate; attributes ``_acme_xr_name``,
``_acme_xr_dims``) and ``mask_<j>`` (the mask of ``result_<j>``).

Format 1 (acme_xr before payload formats were recorded): variables, dimension scales and
coordinates all in the root group; read with the netCDF dimension-scale conventions.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .values import PAYLOAD_FORMAT, Coord, Variable

__all__ = ["describe_payload", "read_payload", "read_variables", "scan_group", "decode",
           "find_dataset", "read_mask", "payload_format", "user_attrs", "VarMeta",
           "PAYLOAD_FORMAT"]

# (name, shape, dtype string, dims) of one variable in one payload.
VarMeta = tuple[str, tuple[int, ...], str, tuple[str, ...]]

FORMAT_ATTR = "_acme_xr_format"
NAMES_ATTR = "_acme_xr_names"
NAME_ATTR = "_acme_xr_name"
DIMS_ATTR = "_acme_xr_dims"
COORDS_ATTR = "_acme_xr_coords"
META_GROUP = "_acme_xr"
DTYPE_ATTR = "_acme_xr_dtype"
NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable."
_ENCODING_ATTRS = frozenset({"units", "calendar", "dtype", DTYPE_ATTR})
_LAYOUT_ATTRS = frozenset({FORMAT_ATTR, NAMES_ATTR, NAME_ATTR, DIMS_ATTR, COORDS_ATTR})
_INTERNAL_ATTRS = frozenset(
    {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates",
     "coordinates"}
)


def payload_format(grp: h5py.Group) -> int:
    """The payload format of a group: 2 (recorded) or 1 (acme_xr 0.1 and ACME)."""
    return int(grp.attrs.get(FORMAT_ATTR, 1))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decoded_dtype(ds: h5py.Dataset) -> str:
    marked = ds.attrs.get(DTYPE_ATTR)
    if marked is not None:
        return "|b1" if _text(marked) == "bool" else _text(marked)
    info = h5py.check_string_dtype(ds.dtype)
    if info is not None and info.length is None:  # variable-length: written from str
        return "<U0"
    return ds.dtype.str  # type: ignore[no-any-return]


def user_attrs(ds: h5py.Dataset) -> dict[str, Any]:
    """The attributes of a dataset minus netCDF bookkeeping and acme_xr's own encodings
    (acme_xr's reserved ``_acme_xr_masked``/``_fields``/``_dataset_attrs`` stay)."""
    encoded = DTYPE_ATTR in ds.attrs
    out = {}
    for key, value in ds.attrs.items():
        if key in _INTERNAL_ATTRS or key in _LAYOUT_ATTRS or (encoded and key in _ENCODING_ATTRS):
            continue
        out[key] = value.decode("utf-8") if isinstance(value, bytes) else value
    return out


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


def _keys(grp: h5py.Group) -> list[str]:
    """The ``result_<j>`` datasets of a format-2 group, in order of ``j``."""
    keys = [k for k in grp if _is_key(k)]
    return sorted(keys, key=lambda k: int(k[7:]))


def _names(grp: h5py.Group) -> dict[str, str]:
    raw = grp.attrs.get(NAMES_ATTR)
    return json.loads(_text(raw)) if raw is not None else {}


def find_dataset(grp: h5py.Group, name: str) -> h5py.Dataset:
    """The dataset holding variable (or coordinate) ``name`` in a payload group (any format).

    Raises
    ------
    KeyError
        The group has no such variable.
    """
    if FORMAT_ATTR not in grp.attrs:
        return grp[name]
    names = _names(grp)
    for key, vname in names.items():
        if vname == name:
            return grp[key]
    if not names and name in grp and name != META_GROUP:
        return grp[name]
    meta = grp.get(META_GROUP)
    for key, obj in (meta.items() if meta is not None else ()):
        if key.startswith("coord_") and _text(obj.attrs[NAME_ATTR]) == name:
            return obj
    raise KeyError(name)


def read_mask(grp: h5py.Group, ds: h5py.Dataset) -> np.ndarray | None:
    """The stored mask of variable dataset ``ds`` (format 2), or None when it has none."""
    key = os.path.basename(ds.name)
    meta = grp.get(META_GROUP)
    name = "mask_" + key.removeprefix("result_")
    if meta is None or name not in meta:
        return None
    return np.asarray(meta[name][()]).astype(bool)


def _coords_v2(grp: h5py.Group) -> dict[str, Coord]:
    meta = grp.get(META_GROUP)
    out: dict[str, Coord] = {}
    if meta is None:
        return out
    for key, obj in meta.items():
        if key.startswith("coord_"):
            name = _text(obj.attrs[NAME_ATTR])
            dims = tuple(json.loads(_text(obj.attrs[DIMS_ATTR])))
            out[name] = Coord(name, dims, decode(obj, np.dtype(_decoded_dtype(obj))),
                              user_attrs(obj))
    return out


_Entry = tuple[h5py.Dataset, str, tuple[str, ...], dict[str, Any], tuple[Coord, ...], bool]


def _entries_v2(grp: h5py.Group) -> Iterator[_Entry]:
    names = _names(grp)
    coords = _coords_v2(grp) if META_GROUP in grp else {}
    for key in _keys(grp):
        ds = grp[key]
        name = names.get(key, key)
        attrs = user_attrs(ds)
        labelled = DIMS_ATTR in ds.attrs
        dims = (tuple(json.loads(_text(ds.attrs[DIMS_ATTR]))) if labelled
                else tuple(f"{name}_dim_{j}" for j in range(ds.ndim)))
        own = tuple(coords[c] for c in json.loads(_text(ds.attrs.get(COORDS_ATTR, "[]"))))
        yield ds, name, dims, attrs, own, labelled


def _entries(grp: h5py.Group) -> Iterator[_Entry]:
    """(dataset, name, dims, attrs, coordinates, labelled?) of each variable of a group."""
    if FORMAT_ATTR in grp.attrs:
        yield from _entries_v2(grp)
        return
    for ds, dims, attrs, own, labelled in _legacy_variables(grp):
        yield ds, os.path.basename(ds.name), dims, attrs, own, labelled


def describe_payload(path: str) -> list[VarMeta]:
    """Name, shape, decoded dtype and dims of every data variable in a payload file."""
    with h5py.File(path, "r") as fh:
        return [(name, tuple(ds.shape), _decoded_dtype(ds), dims)
                for ds, name, dims, _a, _c, _l in _entries(fh)]


def read_payload(path: str) -> dict[str, np.ndarray]:
    """Read every data variable of a payload file into memory, decoded, by name.

    Masked variables come back as :class:`numpy.ma.MaskedArray`.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from acme_xr.storage.values import to_variables
    >>> from acme_xr.storage.hdf5 import write_payload
    >>> p = os.path.join(tempfile.mkdtemp(), "f_0.h5")
    >>> _ = write_payload(p, to_variables(("text", True)))
    >>> read_payload(p)
    {'result_0': array('text', dtype='<U4'), 'result_1': array(True)}
    """
    with h5py.File(path, "r") as fh:
        out = {}
        for v in read_variables(fh):
            out[v.name] = v.data if v.mask is None else np.ma.masked_array(v.data, v.mask)
        return out


def read_variables(grp: h5py.Group) -> list[Variable]:
    """Rebuild the :class:`Variable` objects a payload group was written from.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from acme_xr.storage.values import to_variables
    >>> from acme_xr.storage.hdf5 import write_payload
    >>> p = os.path.join(tempfile.mkdtemp(), "f_0.h5")
    >>> _ = write_payload(p, to_variables(np.eye(2)))
    >>> with h5py.File(p) as fh:
    ...     [(v.key, v.name, v.dims) for v in read_variables(fh)]
    [('result_0', 'result_0', ('result_0_dim_0', 'result_0_dim_1'))]
    """
    entries = list(_entries(grp))
    # format 1 kept a Dataset return's variables under their names: give them free
    # result_<j> keys, so that writing them again (single_file merges) gives format 2
    used = {os.path.basename(e[0].name) for e in entries}
    free = (f"result_{j}" for j in itertools.count() if f"result_{j}" not in used)
    out = []
    for ds, name, dims, attrs, own, labelled in entries:
        data = decode(ds, np.dtype(_decoded_dtype(ds)))
        key = os.path.basename(ds.name)
        if not _is_key(key):
            key = next(free)
        out.append(Variable(name, data, dims, attrs, own, labelled, key=key,
                            mask=read_mask(grp, ds)))
    return out


def _is_key(name: str) -> bool:
    return name.startswith("result_") and name[7:].isdigit()


def scan_group(grp: h5py.Group, templates: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    """Describe a payload group for the manifest without reading its data variables."""
    from ..manifest import var_meta

    return tuple(
        var_meta(name, tuple(ds.shape), np.dtype(_decoded_dtype(ds)), dims,
                 attrs, own if labelled else None, templates)
        for ds, name, dims, attrs, own, labelled in _entries(grp)
    )


# -- format 1: dimension scales and coordinates in the variables' group ------------------

def _dims_of(ds: h5py.Dataset) -> tuple[str, ...]:
    names = []
    for j, dim in enumerate(ds.dims):
        if len(dim):
            names.append(os.path.basename(dim[0].name))
        else:
            names.append(f"{os.path.basename(ds.name)}_dim_{j}")
    return tuple(names)


def _is_data_variable(obj: Any) -> bool:
    return isinstance(obj, h5py.Dataset) and obj.attrs.get("CLASS") != b"DIMENSION_SCALE"


def _coordinate_names(grp: h5py.Group) -> set[str]:
    names: set[str] = set()
    for obj in grp.values():
        if isinstance(obj, h5py.Dataset) and "coordinates" in obj.attrs:
            names.update(_text(obj.attrs["coordinates"]).split())
    return names


def _is_coordinate_scale(ds: h5py.Dataset) -> bool:
    name = ds.attrs.get("NAME", b"")
    return (ds.attrs.get("CLASS") == b"DIMENSION_SCALE"
            and not bytes(name).startswith(NOT_A_VARIABLE))


def _legacy_coords(grp: h5py.Group) -> dict[str, Coord]:
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


def _legacy_variables(grp: h5py.Group) -> Iterator[tuple[h5py.Dataset, tuple[str, ...],
                                                         dict[str, Any], tuple[Coord, ...],
                                                         bool]]:
    coords = _legacy_coords(grp)
    for name, obj in grp.items():
        if name in coords or not _is_data_variable(obj):
            continue
        dims = _dims_of(obj)
        attrs = user_attrs(obj)
        own = tuple(c for c in coords.values() if set(c.dims) <= set(dims))
        labelled = bool(own) or bool(attrs) or any(
            d != f"{name}_dim_{j}" for j, d in enumerate(dims))
        yield obj, dims, attrs, own, labelled
