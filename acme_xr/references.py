"""Export a run as a virtual dataset that plain xarray opens without acme_xr.

:func:`write_references` writes kerchunk references (JSON or parquet) or an icechunk
repository whose chunks point at the bytes of the run's payload files: one chunk per call
along ``call``, that call's data bytes at the offset the run recorded (the manifest's
spans), so that 20,000 calls need no payload to be opened. Payloads without a recorded
range (ACME-written ones, runs without spans) are opened once with h5py for the offset of a
contiguous, unfiltered dataset; what is not one plain buffer in a file (compressed or
chunked datasets, another byte order, calls kept in a zarr store) is copied into the
references as that call's chunk. Small things are copied too: coordinates, ``status``, the
``<name>_mask`` variables, empty results (no bytes to point at), and results that are not
plain numbers (booleans, strings, times, structured values, masked arrays).

Gaps (failed or pending calls) read as :func:`acme_xr.open_results` gives them: NaN for
floating-point results (a chunk that is not there reads as the fill value, NaN); integers
read the dtype's most negative value (0 for unsigned), written as real chunks, since a
kerchunk ``fill_value`` is decoded by xarray as ``_FillValue`` and would turn the integers
into floats. ``status`` and ``<name>_mask`` name the gaps, as in ``open_results``.

Results whose shape differs between calls (ragged) do not fit a regular chunk grid: they
are left out, with a warning naming the variables and calls, and the dataset attribute
``acme_xr_left_out`` (JSON: variable -> its shapes and the calls of each shape).

Examples
--------
>>> import os, tempfile
>>> import xarray as xr
>>> from acme_xr import ParallelMap, write_references
>>> def f(x):
...     return x * 1.5
>>> base = tempfile.mkdtemp()
>>> run = os.path.join(base, "run")
>>> _ = ParallelMap(f, [1, 2, 3], output_dir=run, verbose=False).compute()
>>> refs = write_references(run, os.path.join(base, "run.json"))
>>> xr.open_dataset(refs, engine="kerchunk").result_0.values.tolist()
[1.5, 3.0, 4.5]
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Hashable, Iterator
from typing import Any

import numpy as np
import xarray as xr

from .callstack import CallStackArray
from .errors import InputError, ReferencesExistError
from .manifest import Manifest, VarRecord
from .results import build_dataset
from .scan import load_manifest, locate_run, payload_location, refresh_pending
from .storage.values import MASKED_ATTR

__all__ = ["write_references", "FORMATS", "icechunk_prefix", "quiet_icechunk_log"]

# format name -> the suffixes that choose it
FORMATS = {"json": (".json",), "parquet": (".parq", ".parquet"), "icechunk": (".icechunk",)}


def write_references(run_dir: str | os.PathLike[str], path: str | os.PathLike[str],
                     format: str | None = None) -> str:
    """Write the run in ``run_dir`` as a virtual dataset (references) at ``path``.

    Every result variable of shape ``(n_calls, *shape)`` becomes one array with one chunk
    per call, shaped ``(1, *shape)``, pointing at that call's data bytes in its payload
    (absolute paths: export after moving a run, not before). The references open with
    plain xarray, without acme_xr::

        xr.open_dataset("run.json", engine="kerchunk")          # json and parquet
        repo = icechunk.Repository.open(
            icechunk.local_filesystem_storage("run.icechunk"),
            authorize_virtual_chunk_access={icechunk_prefix(run_dir): None})
        xr.open_zarr(repo.readonly_session("main").store, consolidated=False)

    and give what :func:`acme_xr.open_results` gives: the same values, dtypes, dimensions,
    coordinates and attributes, gaps included (NaN for floating point; the dtype's most
    negative value for integers, named by ``status`` and ``<name>_mask``).

    Parameters
    ----------
    run_dir : str or path-like
        The run directory (acme_xr or ACME), or its container ``<func>.h5``.
    path : str or path-like
        Where to write; must not exist. Its suffix chooses the format when ``format`` is
        None: ``.json`` (kerchunk JSON), ``.parq`` or ``.parquet`` (kerchunk parquet, a
        directory), ``.icechunk`` (an icechunk repository, a directory).
    format : {"json", "parquet", "icechunk"}, optional
        The format, whatever the suffix.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    InputError
        ``format`` is unknown, or None and the suffix names no format.
    ReferencesExistError
        ``path`` exists (nothing is overwritten).
    ResultsLayoutError
        ``run_dir`` holds no run.

    Warns
    -----
    UserWarning
        Results whose shape differs between calls are left out (named with their calls).

    Examples
    --------
    >>> import os, tempfile
    >>> import xarray as xr
    >>> from acme_xr import ParallelMap, write_references
    >>> def f(x):
    ...     return [x, 2 * x]
    >>> base = tempfile.mkdtemp()
    >>> run = os.path.join(base, "run")
    >>> _ = ParallelMap(f, [1, 2], output_dir=run, verbose=False).compute()
    >>> out = write_references(run, os.path.join(base, "refs.parq"))
    >>> xr.open_dataset(out, engine="kerchunk").result_0.shape
    (2, 2)
    """
    out = os.path.abspath(os.fspath(path))
    fmt = _format_of(out, format)
    if os.path.lexists(out):
        raise ReferencesExistError(
            f"{out} exists: give a new path for the references (they are never written "
            "over), or remove it first")
    run = locate_run(run_dir)
    vds, chunks = virtual_dataset(run)
    try:
        with _known_warnings_quiet():
            if fmt == "icechunk":
                _write_icechunk(vds, chunks, out, run)
            else:
                _write_kerchunk(vds, chunks, out, fmt)
    except BaseException:
        # half-written references would open as a run with chunks missing
        if os.path.isdir(out):
            shutil.rmtree(out, ignore_errors=True)
        elif os.path.lexists(out):
            os.unlink(out)
        raise
    return out


@contextlib.contextmanager
def _known_warnings_quiet() -> Iterator[None]:
    """Silence what the writers' libraries warn on every export, about themselves and not
    about the run: zarr's "no Zarr V3 specification" for the ``<U`` of ``status``, and
    pandas' deprecations of the fastparquet engine kerchunk's parquet writer uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        warnings.filterwarnings("ignore", message="The 'fastparquet' engine is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The 'future.infer_string' option is "
                                "deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The 'fastparquet' engine is deprecated",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message="The 'future.infer_string' option is "
                                "deprecated", category=FutureWarning)
        yield


def quiet_icechunk_log() -> None:
    """Keep icechunk's log from warning that a local repository is "not safe for
    concurrent commits" (its Rust log writes to stdout, so ``out=$(acme-xr export ...)``
    held more than the path): a repository of references is written by one process and
    then only read. Only that warning is dropped, and not when ``ICECHUNK_LOG`` is set
    (the user chose what icechunk logs).

    Examples
    --------
    >>> quiet_icechunk_log()
    """
    if "ICECHUNK_LOG" in os.environ:
        return
    import icechunk

    icechunk.set_logs_filter("warn,icechunk::storage::object_store=error")


def _format_of(path: str, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise InputError(f"format={format!r} is not known: give one of {sorted(FORMATS)}")
        return format
    for name, suffixes in FORMATS.items():
        if path.lower().endswith(suffixes):
            return name
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise InputError(
        f"cannot tell the references format from {os.path.basename(path)!r}: end the name in "
        f"one of {known}, or give format= one of {sorted(FORMATS)}")


def icechunk_prefix(run_dir: str | os.PathLike[str]) -> str:
    """The virtual chunk container URL of a run's payloads: ``file://<abs run dir>/``.

    An icechunk repository written by :func:`write_references` reads its chunks only when
    this prefix is authorised when the repository is opened.

    Examples
    --------
    >>> icechunk_prefix("/data/run")
    'file:///data/run/'
    """
    return "file://" + os.path.abspath(os.fspath(run_dir)).rstrip("/") + "/"


# -- the virtual dataset ------------------------------------------------------------------
# per variable: call index -> the values of that call's chunk, copied into the references
Inline = dict[str, dict[int, np.ndarray]]


def virtual_dataset(run_dir: str) -> tuple[xr.Dataset, Inline]:
    """The run as a Dataset of ManifestArrays (results) and numpy arrays (the rest), and
    the chunks to copy into the references (gaps of integers, unreadable payloads)."""
    manifest = load_manifest(run_dir)
    if manifest.state in ("running", "interrupted", "rebuilt"):
        refresh_pending(manifest, run_dir)
    ds = build_dataset(run_dir, manifest)
    left_out = _ragged(ds, manifest)
    variables: dict[Hashable, xr.Variable] = {}
    coords: dict[Hashable, xr.Variable] = {}
    chunks: Inline = {}
    dropped = {f"{v}_shape" for v in left_out} | {f"{v}_mask" for v in left_out}
    for name, var in ds.variables.items():
        if name in left_out or name in dropped:
            continue
        rec = manifest.variables.get(str(name))
        target = coords if name in ds.coords else variables
        # an empty result (np.zeros(0)) has no bytes to point at: copied like small things
        if (rec is not None and name not in ds.coords and var.size
                and _virtual_kind(var, rec)):
            target[name] = _manifest_variable(run_dir, manifest, str(name), var, rec, chunks)
        elif rec is None and str(name).endswith("_mask") and _plain_mask(manifest,
                                                                          str(name)[:-5]):
            target[name] = _gap_mask(ds, str(name)[:-5], var)
        else:  # small things and what no byte range holds: copied
            target[name] = xr.Variable(var.dims, np.asarray(var.values), var.attrs)
    attrs = dict(ds.attrs)
    if left_out:
        attrs["acme_xr_left_out"] = json.dumps(left_out)
        listing = "; ".join(
            f"{v!r}: " + ", ".join(f"calls {c} have shape {tuple(s)}" for s, c in by)
            for v, by in ((v, [(d["shape"], d["calls"]) for d in info])
                          for v, info in left_out.items()))
        warnings.warn(
            f"results whose shape differs between calls do not fit a regular chunk grid and "
            f"are left out of the references ({listing}); open the run with "
            "acme_xr.open_results for them (the attribute acme_xr_left_out lists them)",
            UserWarning, stacklevel=3)
    return xr.Dataset(variables, coords, attrs), chunks


def _ragged(ds: xr.Dataset, manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """Variable -> [{shape, calls}] for results whose calls differ in shape."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rec in manifest.variables.items():
        if name not in ds.data_vars:
            continue
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, s in enumerate(rec.shapes):
            if s is not None:
                by_shape.setdefault(tuple(s), []).append(i)
        if len(by_shape) > 1:
            out[name] = [{"shape": list(s), "calls": c} for s, c in sorted(
                by_shape.items(), key=lambda kv: -len(kv[1]))]
    return out


def _virtual_kind(var: xr.Variable, rec: VarRecord) -> bool:
    """Whether the variable's calls can be chunks of plain numbers in the payloads."""
    return (var.dtype.kind in "iufc" and var.dtype == np.dtype(rec.dtype)
            and var.dtype.byteorder in "=<|" and np.little_endian
            and not rec.attrs.get(MASKED_ATTR))


def _plain_mask(manifest: Manifest, name: str) -> bool:
    rec = manifest.variables.get(name)
    return rec is not None and not rec.attrs.get(MASKED_ATTR)


def _gap_mask(ds: xr.Dataset, name: str, var: xr.Variable) -> xr.Variable:
    """``<name>_mask`` of a result that was not a masked array: True at the calls without
    values (from the manifest: reading the mask would open every payload)."""
    present = np.array([s is not None for s in _stack(ds[name].variable).shapes])
    values = np.broadcast_to(~present.reshape((-1,) + (1,) * (var.ndim - 1)), var.shape)
    return xr.Variable(var.dims, values.copy(), var.attrs)


def _stack(var: xr.Variable) -> CallStackArray:
    """The CallStackArray behind a variable of :func:`~acme_xr.results.build_dataset`."""
    lazy = getattr(var._data, "array", None)
    if not isinstance(lazy, CallStackArray):  # build_dataset wraps each in LazilyIndexedArray
        raise TypeError(f"expected a lazily indexed CallStackArray, got {type(var._data)}")
    return lazy


def _h5_range(path: str, group: str | None, name: str,
              dtype: np.dtype) -> tuple[int, int] | None:
    """(offset, length) of a contiguous, unfiltered HDF5 dataset of ``dtype``, else None
    (the payloads without a recorded range: ACME's, older runs)."""
    import h5py

    from .storage.hdf5 import find_dataset

    try:
        with h5py.File(path, "r") as fh:
            ds = find_dataset(fh[group] if group else fh, name)
            offset = ds.id.get_offset()
            if offset is None or ds.chunks is not None or ds.dtype != dtype:
                return None
            return int(offset), int(ds.id.get_storage_size())
    except (OSError, KeyError):
        return None


def _manifest_variable(run_dir: str, manifest: Manifest, name: str, var: xr.Variable,
                       rec: VarRecord, chunks: Inline) -> xr.Variable:
    from virtualizarr.manifests import ChunkManifest, ManifestArray
    from virtualizarr.manifests.utils import create_v3_array_metadata

    n = var.shape[0]
    shape = var.shape[1:]
    lazy = _stack(var)  # its fill and which calls have values
    grid = (n,) + (1,) * len(shape)
    paths = np.full(grid, "", dtype=np.dtypes.StringDType())
    offsets = np.zeros(grid, np.uint64)
    lengths = np.zeros(grid, np.uint64)
    own: dict[int, np.ndarray] = {}
    for i in range(n):
        if lazy.shapes[i] is None:
            if var.dtype.kind not in "fc":  # see the module docstring: no fill_value
                own[i] = np.full((1, *shape), lazy.fill, var.dtype)
            continue
        path, group = payload_location(manifest.header, run_dir, i)
        found = None
        if not lazy.in_store[i] and group is None:
            r = rec.range(i)
            # the references' bytes codec is little-endian: other byte orders are copied
            found = (r[:2] if r is not None and r[2] == var.dtype and r[2].byteorder != ">"
                     else None)
        if found is None and not lazy.in_store[i]:
            found = _h5_range(path, group, name, var.dtype)
        if found is None:  # not one plain buffer in a file: copy this call's values
            own[i] = np.asarray(var[i:i + 1].values)
            continue
        paths[(i,) + (0,) * len(shape)] = "file://" + path
        offsets[(i,) + (0,) * len(shape)] = found[0]
        lengths[(i,) + (0,) * len(shape)] = found[1]
    if own:
        chunks[name] = own
    fill = lazy.fill if var.dtype.kind in "fc" else np.zeros((), var.dtype)[()]
    metadata = create_v3_array_metadata(
        shape=var.shape, data_type=var.dtype, chunk_shape=(1, *shape),
        chunk_key_encoding={"name": "default", "separator": "."}, fill_value=fill,
        codecs=[{"name": "bytes", "configuration": {"endian": "little"}}],
        dimension_names=[str(d) for d in var.dims])
    manifest_ = ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths,
                                          validate_paths=False)
    return xr.Variable(var.dims, ManifestArray(metadata, manifest_), var.attrs)


# -- writers ------------------------------------------------------------------------------
def _chunk_key(i: int, ndim: int) -> str:
    return ".".join([str(i)] + ["0"] * ndim)


def _write_kerchunk(vds: xr.Dataset, chunks: Inline, out: str, fmt: str) -> None:
    from virtualizarr.writers.kerchunk import dataset_to_kerchunk_refs

    refs: dict[str, Any] = dataset_to_kerchunk_refs(vds)  # type: ignore[assignment]
    body = refs["refs"]
    for name, own in chunks.items():
        ndim = vds[name].ndim - 1
        for i, values in own.items():
            data = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).tobytes()
            body[f"{name}/{_chunk_key(i, ndim)}"] = "base64:" + base64.b64encode(data).decode()
    for key in vds.variables:
        name = str(key)
        if vds[name].size == 0 and f"{name}/.zarray" in body:
            # an empty array's chunk length 0 makes kerchunk's parquet divide by zero:
            # length 1 on its empty axes leaves a grid without chunks (its empty one goes)
            zarray = json.loads(body[f"{name}/.zarray"])
            zarray["chunks"] = [c or 1 for c in zarray["chunks"]]
            body[f"{name}/.zarray"] = json.dumps(zarray, separators=(",", ":"))
            for k in [k for k in body if k.startswith(f"{name}/") and k[len(name) + 1] != "."]:
                del body[k]
        if vds[name].dtype.kind not in "fc" and f"{name}/.zarray" in body:
            # xarray reads a v2 fill_value as _FillValue and would turn integers into
            # floats: every chunk exists, so none is needed
            zarray = json.loads(body[f"{name}/.zarray"])
            if zarray.get("fill_value") is not None and name not in vds.coords:
                zarray["fill_value"] = None
                body[f"{name}/.zarray"] = json.dumps(zarray, separators=(",", ":"))
    if fmt == "json":
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(refs, fh)
    else:
        from kerchunk.df import refs_to_dataframe

        refs_to_dataframe(refs, url=out)


def _write_icechunk(vds: xr.Dataset, chunks: Inline, out: str, run_dir: str) -> None:
    import icechunk
    import zarr

    quiet_icechunk_log()
    prefix = icechunk_prefix(run_dir)
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix)))
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(out), config=config,
                                      authorize_virtual_chunk_access={prefix: None})
    session = repo.writable_session("main")
    import virtualizarr  # noqa: F401 - registers the .vz accessor

    vds.vz.to_icechunk(session.store)
    for name, own in chunks.items():
        arr = zarr.open_array(session.store, path=name, mode="r+")
        for i, values in own.items():
            arr[i:i + 1] = values
    session.commit(f"acme_xr references of {run_dir}")
