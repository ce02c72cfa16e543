"""Open one payload (one call's results) as a labelled :class:`xarray.Dataset`.

A payload's root group holds only the datasets ``result_0``, ``result_1``, ... (the
specification's layout), so netCDF readers such as ``xr.open_dataset(path,
engine="h5netcdf")`` see no dimension names or coordinates in it. :func:`open_payload`
restores them from the payload's attributes and its ``_acme_xr`` group.

Examples
--------
>>> import os, tempfile
>>> import numpy as np, xarray as xr
>>> from acme_xr.storage.hdf5 import write_payload
>>> from acme_xr.storage.values import to_variables
>>> path = os.path.join(tempfile.mkdtemp(), "f_0.h5")
>>> da = xr.DataArray([1.0, 2.0], dims="time", coords={"time": [0.1, 0.2]})
>>> _ = write_payload(path, to_variables((da, 7)))
>>> ds = open_payload(path)
>>> ds.result_0.dims, ds.time.values.tolist(), int(ds.result_1)
(('time',), [0.1, 0.2], 7)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import xarray as xr

from .errors import PayloadCorruptError, ResultsLayoutError
from .storage.values import DATASET_ATTRS_ATTR, own_attrs

__all__ = ["open_payload"]


def open_payload(path: str | os.PathLike[str], group: str | None = None) -> xr.Dataset:
    """Open one payload file (or one ``comp_<i>`` group of a ``single_file`` container).

    Parameters
    ----------
    path : str or path-like
        A payload file ``<func>_<i>.h5`` (any acme_xr payload format, or ACME's).
    group : str, optional
        The group holding the call's results, e.g. ``"comp_3"`` in a ``single_file=True``
        container ``<func>.h5``.

    Returns
    -------
    xarray.Dataset
        One variable per return value under its own name (``result_<k>``, or the data
        variable names of an :class:`xarray.Dataset` return), with its dimension names,
        coordinates and attributes, in memory. A masked array return gives its values plus
        a boolean variable ``<name>_mask`` (True: masked). The attributes of a Dataset
        return are the Dataset's attributes.

    Raises
    ------
    acme_xr.errors.ResultsLayoutError
        ``path`` is not an HDF5 file, or has no such group.
    acme_xr.errors.PayloadCorruptError
        ``path`` is an emptied, truncated or damaged payload, or (when the run's
        ``manifest.json`` is beside it) its size or CRC-32C differs from what its call
        recorded.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from acme_xr import ParallelMap, open_payload
    >>> run = os.path.join(tempfile.mkdtemp(), "run")
    >>> def f(x):
    ...     return np.arange(3) * x
    >>> _ = ParallelMap(f, [1, 2], output_dir=run, verbose=False).compute()
    >>> open_payload(os.path.join(run, "f_1.h5")).result_0.values.tolist()
    [0, 2, 4]
    """
    import h5py

    from .storage.hdf5 import read_variables

    name = os.fspath(path)
    _check_against_run(name)
    try:
        fh = h5py.File(name, "r")
    except OSError as exc:
        if _looks_like_hdf5(name):
            raise PayloadCorruptError(f"{name} cannot be read: damaged ({exc})",
                                      filename=name) from exc
        raise ResultsLayoutError(f"{name} is not a readable HDF5 payload: {exc}") from exc
    with fh:
        try:
            grp = fh[group] if group else fh
        except KeyError as exc:
            if group and group not in fh:
                raise ResultsLayoutError(
                    f"{name} has no group {group!r}; its groups are {sorted(fh)[:10]}"
                ) from exc
            raise PayloadCorruptError(f"{name} cannot be read: damaged ({exc})",
                                      filename=name) from exc
        try:
            variables = read_variables(grp)
        except (OSError, KeyError, RuntimeError) as exc:  # HDF5's words for a damaged file
            raise PayloadCorruptError(f"{name} cannot be read: damaged ({exc})",
                                      filename=name) from exc
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for v in variables:
        reserved = v.attrs.get(DATASET_ATTRS_ATTR)
        if reserved:
            attrs.update(json.loads(str(reserved)))
        data_vars[v.name] = xr.Variable(v.dims, v.data, own_attrs(v.attrs))
        if v.mask is not None:
            data_vars[f"{v.name}_mask"] = xr.Variable(v.dims, np.asarray(v.mask, bool))
        for c in v.coords:
            coords.setdefault(c.name, xr.Variable(c.dims, c.data, own_attrs(c.attrs)))
    return xr.Dataset(data_vars, coords, attrs)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _looks_like_hdf5(name: str) -> bool:
    """An emptied file, or one that starts as HDF5 does: a damaged payload, not a foreign
    file."""
    try:
        with open(name, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
    except OSError:
        return False
    return head == b"" or head == _HDF5_SIGNATURE


def _check_against_run(name: str) -> None:
    """Compare a payload with the size and checksum its call recorded, when the run's
    manifest lies beside it (a payload opened on its own is checked by HDF5 alone)."""
    from .integrity import file_problem, payload_path
    from .manifest import Manifest

    run_dir = os.path.dirname(os.path.abspath(name))
    stem, ext = os.path.splitext(os.path.basename(name))
    index = stem.rpartition("_")[2]
    if not index.isdigit() or not os.path.exists(os.path.join(run_dir, "manifest.json")):
        return
    try:
        manifest = Manifest.read(run_dir)
    except (OSError, ValueError):  # a damaged manifest: nothing to compare with
        return
    i = int(index)
    if i >= manifest.n_inputs or payload_path(manifest, run_dir, i) != os.path.abspath(name):
        return
    sums = manifest.sums(i)
    assert sums is not None  # payload_path is None without them
    why = file_problem(name, *sums)
    if why is not None:
        raise PayloadCorruptError.for_calls({i: (name, why)})
