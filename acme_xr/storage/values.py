"""Turn a call's return value into named, typed variables that any storage can write.

The convention (the specification's): return value ``k`` of the user function is stored as
``result_k``. A function returning a tuple returns several values; anything else is one
value. Each :class:`Variable` has a ``key`` (where storage puts it: ``result_0``,
``result_1``, ... in the order of the values) and a ``name`` (what
:func:`acme_xr.open_results` calls it). Special cases:

* an :class:`xarray.DataArray` keeps its dimension names, coordinates and attributes;
* an :class:`xarray.Dataset` contributes its data variables in ``data_vars`` order, each
  stored under the next ``result_<j>`` key with its own name recorded (a function
  ``return xr.Dataset({"power": ..., "phase": ...})`` gives the keys ``result_0`` and
  ``result_1`` and the names ``power`` and ``phase``), with its coordinates and attributes;
* a :class:`numpy.ma.MaskedArray` keeps its mask (:attr:`Variable.mask`);
* numbers, strings, bytes, NumPy arrays (structured ones too) and lists that convert to a
  non-object array are stored as they are; dimensions of plain arrays are named
  ``result_k_dim_j``;
* anything else (``None``, dicts, arbitrary objects, ragged lists), and attributes that
  storage could not give back exactly, cannot go into HDF5 or zarr: :func:`to_variables`
  raises :class:`NotStorable` naming the value, and the call is pickled instead.

Attributes whose names start with ``_acme_xr_`` are acme_xr's own (see :data:`MASKED_ATTR`,
:data:`FIELDS_ATTR`, :data:`DATASET_ATTRS_ATTR`): they travel with the variable's attributes
into the payload and the run manifest, and readers remove them.

Examples
--------
>>> import numpy as np
>>> [v.key for v in to_variables((1.5, np.zeros((2, 3))))]
['result_0', 'result_1']
>>> to_variables(np.zeros((2, 3)))[0].dims
('result_0_dim_0', 'result_0_dim_1')
>>> to_variables(np.ma.masked_array([1, 2], mask=[0, 1]))[0].mask.tolist()
[False, True]
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Coord", "NotStorable", "Variable", "to_variables", "token", "dtype_of",
           "own_attrs", "MASKED_ATTR", "FIELDS_ATTR", "DATASET_ATTRS_ATTR", "RESERVED_PREFIX"]

RESERVED_PREFIX = "_acme_xr_"
# the layout of HDF5 payloads (see acme_xr.storage.hdf5_read); the manifest records it
PAYLOAD_FORMAT = 2
# True on a variable whose call returned a masked array: its mask is stored beside it
MASKED_ATTR = "_acme_xr_masked"
# the fields of a structured dtype (JSON of ``dtype.descr``): a dtype string cannot hold them
FIELDS_ATTR = "_acme_xr_fields"
# the attributes of the xarray.Dataset a variable came from (JSON)
DATASET_ATTRS_ATTR = "_acme_xr_dataset_attrs"


class NotStorable(TypeError):  # noqa: N818 - reads as the condition it signals
    """A return value that HDF5/zarr cannot hold exactly (the call is pickled instead)."""


@dataclass(frozen=True)
class Coord:
    """A coordinate of an xarray return value."""

    name: str
    dims: tuple[str, ...]
    data: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variable:
    """One named result of one call.

    ``key`` is the dataset name in storage (``result_<j>``); empty means ``name``.
    ``mask`` is the boolean mask of a masked array (True: masked), else None.
    """

    name: str
    data: np.ndarray
    dims: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    coords: tuple[Coord, ...] = ()
    # True when the call returned an xarray object (dims/coords/attrs are the user's).
    labelled: bool = False
    key: str = ""
    mask: np.ndarray | None = None

    @property
    def storage_key(self) -> str:
        """Where storage keeps this variable (``result_<j>``)."""
        return self.key or self.name


_STORABLE_KINDS = frozenset("biufcSUMmV")


# HDF5 compound types hold numbers and fixed-length bytes (h5py has no conversion for
# unicode or time fields)
_FIELD_KINDS = frozenset("biufcSV")


def _check_dtype(dtype: np.dtype, what: str, field: bool = False) -> None:
    if dtype.kind not in (_FIELD_KINDS if field else _STORABLE_KINDS):
        where = "a field of a structured array" if field else "HDF5"
        raise NotStorable(f"{what} has dtype {dtype}, which {where} cannot hold")
    if dtype.subdtype is not None:  # a field that is an array of its own
        _check_dtype(dtype.subdtype[0], what, field)
    elif dtype.kind == "V":
        if dtype.names is None:
            raise NotStorable(f"{what} has the raw dtype {dtype}: only structured arrays "
                              "with named fields are stored")
        for fname, spec in (dtype.fields or {}).items():
            _check_dtype(spec[0], f"field {fname!r} of {what}", field=True)


def _as_array(value: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(data, mask or None) of one value."""
    mask = None
    if isinstance(value, np.ma.MaskedArray):
        if value.dtype.names is not None:
            raise NotStorable(f"{what} is a masked structured array: a mask per field cannot "
                              "be stored")
        arr = np.asarray(np.ma.getdata(value))
        mask = np.ma.getmaskarray(value).copy()
    elif isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (numbers.Number, str, bytes, np.generic, list)):
        if _trailing_nul(value):
            raise NotStorable(f"{what} holds bytes that end in NUL, which numpy's bytes "
                              "arrays (and HDF5, zarr) drop")
        try:
            arr = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise NotStorable(f"{what} is a ragged list: {exc}") from exc
    else:
        raise NotStorable(f"{what} is a {type(value).__name__}, which HDF5 cannot hold")
    _check_dtype(arr.dtype, what)
    if arr.dtype.kind == "U" and arr.size:
        _check_text(arr, what)
    return arr, mask


def _check_text(arr: np.ndarray, what: str) -> None:
    """Strings go to HDF5 as NUL-terminated UTF-8: refuse what would come back changed."""
    text = "".join(arr.ravel().tolist())
    if "\x00" in text:
        raise NotStorable(f"{what} holds a string with a NUL character, which HDF5 strings end at")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotStorable(f"{what} holds a string that is not valid UTF-8: {exc}") from exc


# attribute values that come back from HDF5 and from the run manifest (JSON) with the
# same value: anything else would come back changed, so it is refused instead
_ATTR_SCALARS = (str, bool, int, float, np.bool_, np.integer, np.floating)
_INT64 = np.iinfo(np.int64)


def _attr_ok(value: Any) -> bool:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return bool(_INT64.min <= int(value) <= _INT64.max)
    if isinstance(value, _ATTR_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        if not value:
            return False
        kinds = {type(v) for v in value}
        return (all(isinstance(v, _ATTR_SCALARS) and _attr_ok(v) for v in value)
                and (kinds <= {str} or not any(issubclass(k, str) for k in kinds)))
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.size > 0 and value.dtype.kind in "biufU"
    return False


def check_attrs(attrs: dict[Any, Any], what: str) -> dict[str, Any]:
    """``attrs`` if storage gives every one of them back exactly; else :class:`NotStorable`
    naming the attribute."""
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise NotStorable(f"attribute {key!r} of {what} has a name that is not a str")
        if key.startswith(RESERVED_PREFIX):
            raise NotStorable(f"attribute {key!r} of {what}: names starting with "
                              f"{RESERVED_PREFIX!r} are acme_xr's own")
        if not _attr_ok(value):
            raise NotStorable(
                f"attribute {key!r} of {what} is {type(value).__name__} {value!r:.60}, which "
                "HDF5 attributes and the run manifest cannot hold exactly (give a str, a "
                "number, a bool, or a non-empty 1-D list/array of one of them)"
            )
    return dict(attrs)


def _from_dataarray(name: str, key: str, da: Any, extra: dict[str, Any]) -> Variable:
    coords = []
    for c in da.coords:
        data, _ = _as_array(da[c].values, f"coordinate {c}")
        coords.append(Coord(str(c), tuple(map(str, da[c].dims)), data,
                            check_attrs(da[c].attrs, f"coordinate {c}")))
    data, _ = _as_array(da.values, name)
    return Variable(
        name=name,
        data=data,
        dims=tuple(map(str, da.dims)),
        attrs={**check_attrs(da.attrs, name), **extra},
        coords=tuple(coords),
        labelled=True,
        key=key,
    )


def _reserved(data: np.ndarray, mask: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if mask is not None:
        out[MASKED_ATTR] = True
    if data.dtype.names is not None:
        out[FIELDS_ATTR] = json.dumps(data.dtype.descr)
    return out


def _one(k: int, j: int, value: Any) -> list[Variable]:
    """The variables of return value ``k``; their keys count on from ``result_<j>``."""
    xr = _xarray_if_loaded(value)
    if xr is not None and isinstance(value, xr.DataArray):
        var = _from_dataarray(f"result_{k}", f"result_{j}", value, {})
        return [_with_reserved(var)]
    if xr is not None and isinstance(value, xr.Dataset):
        extra = {}
        if value.attrs:
            extra[DATASET_ATTRS_ATTR] = json.dumps(
                _jsonable(check_attrs(value.attrs, f"the Dataset of return value {k}")))
        return [_with_reserved(_from_dataarray(str(var), f"result_{j + m}", value[var], extra))
                for m, var in enumerate(value.data_vars)]
    name = f"result_{k}"
    arr, mask = _as_array(value, f"return value {k}")
    return [Variable(name, arr, tuple(f"{name}_dim_{d}" for d in range(arr.ndim)),
                     _reserved(arr, mask), key=f"result_{j}", mask=mask)]


def _with_reserved(var: Variable) -> Variable:
    extra = _reserved(var.data, None)
    if not extra:
        return var
    return Variable(var.name, var.data, var.dims, {**var.attrs, **extra}, var.coords,
                    var.labelled, var.key, var.mask)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _xarray_if_loaded(value: Any) -> Any:
    # Only look at xarray when the value could be one: keeps plain calls cheap.
    module = type(value).__module__
    if module.startswith("xarray"):
        import xarray

        return xarray
    return None


def to_variables(result: Any) -> list[Variable]:
    """Split one call's return value into :class:`Variable` objects.

    Parameters
    ----------
    result : object
        What the user function returned.

    Returns
    -------
    list of Variable
        Keyed ``result_0``, ``result_1``, ... in order.

    Raises
    ------
    NotStorable
        When any part of the value (or one of its attributes) cannot be stored in HDF5/zarr
        exactly, or two variables would share a name.
    """
    values = result if isinstance(result, tuple) else (result,)
    out: list[Variable] = []
    for k, value in enumerate(values):
        out.extend(_one(k, len(out), value))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise NotStorable(f"return values give the variable names {names} more than once")
    _check_run_names(out)
    return out


# names open_results gives the run itself: a result using one would be shadowed or broken
RUN_NAMES = ("call", "status")


def _check_run_names(variables: list[Variable]) -> None:
    names = {v.name for v in variables}
    for v in variables:
        for kind, used in (("variable", [v.name]), ("dimension", list(v.dims)),
                           ("coordinate", [c.name for c in v.coords])):
            clash = [n for n in used if n in RUN_NAMES]
            if clash:
                raise NotStorable(
                    f"the {kind} name {clash[0]!r} of {v.name!r} is the name open_results "
                    f"gives the run's own {clash[0]} axis or labels; rename it")
        if f"{v.name}_mask" in names and v.name != f"{v.name}_mask":
            raise NotStorable(
                f"the variables {v.name!r} and {v.name + '_mask'!r} clash: open_results names "
                f"the gaps of {v.name!r} {v.name + '_mask'!r}; rename the second")


def _trailing_nul(value: Any) -> bool:
    if isinstance(value, bytes):
        return value.endswith(b"\x00")
    if isinstance(value, list):
        return any(_trailing_nul(v) for v in value)
    return False


def own_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` without acme_xr's reserved ``_acme_xr_*`` entries."""
    return {k: v for k, v in attrs.items() if not str(k).startswith(RESERVED_PREFIX)}


def dtype_of(dtype: str | np.dtype, attrs: dict[str, Any] | None) -> np.dtype:
    """The exact dtype of a variable from its dtype string and attributes (structured dtypes
    are recorded as fields, since their dtype string is only ``|V<n>``)."""
    fields = (attrs or {}).get(FIELDS_ATTR)
    if fields:
        return np.dtype([_field(f) for f in json.loads(fields)])
    return np.dtype(dtype)


def _field(f: list[Any]) -> tuple[Any, ...]:
    base = [_field(x) for x in f[1]] if isinstance(f[1], list) else f[1]
    return (f[0], base, *(tuple(x) for x in f[2:]))


def token(arr: np.ndarray) -> str:
    """A short content hash of an array (dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    if arr.dtype.kind in "OU":
        h.update(repr(arr.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
