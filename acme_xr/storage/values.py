"""Turn a call's return value into named, typed variables that any storage can write.

The convention (the specification's): return value ``k`` of the user function is the
variable ``result_k``. A function returning a tuple returns several values; anything else
is one value. Special cases:

* an :class:`xarray.DataArray` keeps its dimension names, coordinates and attributes;
* an :class:`xarray.Dataset` contributes its data variables under their own names (a
  function ``return xr.Dataset({"power": ..., "phase": ...})`` gives the variables
  ``power`` and ``phase``), together with its coordinates and attributes;
* numbers, strings, bytes, NumPy arrays and lists that convert to a non-object array are
  stored as they are; dimensions of plain arrays are named ``result_k_dim_j``;
* anything else (``None``, dicts, arbitrary objects, ragged lists) cannot go into HDF5 or
  zarr: :func:`to_variables` raises :class:`NotStorable` and the call is pickled instead.

Examples
--------
>>> import numpy as np
>>> [v.name for v in to_variables((1.5, np.zeros((2, 3))))]
['result_0', 'result_1']
>>> to_variables(np.zeros((2, 3)))[0].dims
('result_0_dim_0', 'result_0_dim_1')
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Coord", "NotStorable", "Variable", "to_variables", "token"]


class NotStorable(TypeError):  # noqa: N818 - reads as the condition it signals
    """A return value that HDF5/zarr cannot hold (the call is pickled instead)."""


@dataclass(frozen=True)
class Coord:
    """A coordinate of an xarray return value."""

    name: str
    dims: tuple[str, ...]
    data: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variable:
    """One named result of one call."""

    name: str
    data: np.ndarray
    dims: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    coords: tuple[Coord, ...] = ()
    # True when the call returned an xarray object (dims/coords/attrs are the user's).
    labelled: bool = False


_STORABLE_KINDS = frozenset("biufcSUMm")


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (numbers.Number, str, bytes, np.generic, list)):
        try:
            arr = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise NotStorable(f"{what} is a ragged list: {exc}") from exc
    else:
        raise NotStorable(f"{what} is a {type(value).__name__}, which HDF5 cannot hold")
    if arr.dtype.kind not in _STORABLE_KINDS:
        raise NotStorable(f"{what} has dtype {arr.dtype}, which HDF5 cannot hold")
    return arr


def _from_dataarray(name: str, da: Any) -> Variable:
    coords = tuple(
        Coord(str(c), tuple(map(str, da[c].dims)), _as_array(da[c].values, f"coordinate {c}"),
              dict(da[c].attrs))
        for c in da.coords
    )
    return Variable(
        name=name,
        data=_as_array(da.values, name),
        dims=tuple(map(str, da.dims)),
        attrs=dict(da.attrs),
        coords=coords,
        labelled=True,
    )


def _one(k: int, value: Any) -> list[Variable]:
    name = f"result_{k}"
    xr = _xarray_if_loaded(value)
    if xr is not None and isinstance(value, xr.DataArray):
        return [_from_dataarray(name, value)]
    if xr is not None and isinstance(value, xr.Dataset):
        out = []
        for var in value.data_vars:
            v = _from_dataarray(str(var), value[var])
            out.append(Variable(v.name, v.data, v.dims, v.attrs, v.coords, labelled=True))
        return out
    arr = _as_array(value, f"return value {k}")
    return [Variable(name, arr, tuple(f"{name}_dim_{j}" for j in range(arr.ndim)))]


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

    Raises
    ------
    NotStorable
        When any part of the value cannot be stored in HDF5/zarr, or two variables would
        share a name.
    """
    values = result if isinstance(result, tuple) else (result,)
    out: list[Variable] = []
    for k, value in enumerate(values):
        out.extend(_one(k, value))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise NotStorable(f"return values give the variable names {names} more than once")
    return out


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
