"""The one interface every storage mode implements (modelled on zarr-python's ``abc.Store``).

A run talks to its storage only through a :class:`StorageBackend`; each mode is one module
of :mod:`acme_xr.storage` with one subclass, registered by name in
:mod:`acme_xr.storage.registry`. The life of a run, and who calls what:

===============================  ==========  =============================================
method                           where       what
===============================  ==========  =============================================
:meth:`~StorageBackend.prepare`  client      create the run's storage, before any task
:meth:`~StorageBackend.write_batch`  worker  keep a batch of calls' results; return one
                                             :class:`Written` (the outcome record) each
:meth:`~StorageBackend.stored`   worker      resume check: what call ``i`` already has
:meth:`~StorageBackend.stage`    worker      with ``batched``: check a call's result, keep
                                             its values until the batch's end, then
:meth:`~StorageBackend.write_rows`  worker   write them at once (zarr: whole chunks);
                                             :meth:`~StorageBackend.stored_batch` answers
                                             the resume check once per batch
:meth:`~StorageBackend.collected`  client    see each batch's outcomes as they arrive
:meth:`~StorageBackend.finalize`  client     after the calls: merge, consolidate, container
:meth:`~StorageBackend.locations`  client    where the manifest says call ``i``'s data is
:meth:`~StorageBackend.reader_options`  reader  what :class:`~acme_xr.callstack.CallStackArray`
                                             needs beyond the manifest
:meth:`~StorageBackend.rebuild`  reader      rebuild a lost manifest by scanning
===============================  ==========  =============================================

The unit a worker hands over is a *batch* (the calls of one dask task), so that a backend
can write one chunk per batch; the default :meth:`~StorageBackend.write_batch` writes call
by call with :meth:`~StorageBackend.write_call`, which every backend defines. A backend
with ``batched = True`` (zarr) has the worker stage each call (:meth:`~StorageBackend.stage`:
a call whose result is refused still fails alone, and is retried alone) and write the
batch's values in one :meth:`~StorageBackend.write_rows` at the batch's end.

Examples
--------
>>> import tempfile
>>> from acme_xr.storage.registry import backend_class
>>> backend = backend_class("hdf5")(output_dir=tempfile.mkdtemp(), stem="f")
>>> backend.prepare()
>>> [w.fmt for w in backend.write_batch([(0, 1.5), (1, 2.5)], templates={}, warnings=[])]
['h5', 'h5']
>>> backend.stored(1, templates={}).fmt
'h5'
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from ..errors import ResultShapeError, StorageError
from .checksums import Sums, file_sums
from .values import Variable

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = ["StorageBackend", "Written", "payload_name", "storage_error", "check_shape",
           "check_shape_of", "describe"]


def payload_name(stem: str, i: int | str, ext: str = "h5") -> str:
    """File name of call ``i``'s payload: ``<stem>_<i>.<ext>`` (the one place it is spelt).

    >>> payload_name("f", 3), payload_name("f", 3, "pickle")
    ('f_3.h5', 'f_3.pickle')
    """
    return f"{stem}_{i}.{ext}"


def storage_error(path: str, exc: OSError) -> StorageError:
    """A :class:`StorageError` naming ``path`` (not the temporary name) and the OS reason."""
    reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
    return StorageError(f"cannot write {path}: {reason}", errno=exc.errno, filename=path)


def check_shape(spec: tuple[float | None, ...], variables: Sequence[Variable]) -> None:
    """Raise :class:`ResultShapeError` unless ``result_0`` fits ACME's ``result_shape``."""
    check_shape_of(spec, variables[0].data.shape)


def check_shape_of(spec: tuple[float | None, ...], first: tuple[int, ...]) -> None:
    """:func:`check_shape` of a ``result_0`` of shape ``first``."""
    expected = [s for s in spec if s is not None]
    fits = len(first) == len(expected) and all(
        np.isinf(e) or int(e) == n for e, n in zip(expected, first, strict=True)
    )
    if not fits:
        want = tuple("any" if np.isinf(e) else int(e) for e in expected)
        raise ResultShapeError(
            f"result_0 has shape {first}, but result_shape={spec} asks for {want} per call; "
            "return arrays of that shape or change result_shape"
        )


def describe(variables: Sequence[Variable], templates: dict[str, dict[str, Any]]) -> tuple:
    """The per-variable ``meta`` of a :class:`Written` record (adds coordinate templates)."""
    from ..manifest import var_meta

    return tuple(
        var_meta(v.name, v.data.shape, v.data.dtype, v.dims, v.attrs,
                 v.coords if v.labelled else None, templates)
        for v in variables
    )


class Written(NamedTuple):
    """What a backend wrote for one call: the outcome record the worker returns and the
    manifest keeps.

    ``fmt``: where the values went (``"h5"``, ``"pickle"``, ``"zarr"``, ``"memory"`` or a
    new backend's own word); ``meta``: per-variable description (name, shape, dtype, dims,
    attributes, coordinates; :func:`acme_xr.manifest.var_meta`), None when only the file
    itself describes it (pickles); ``sums``: size, checksums and per-variable spans of the
    call's own file (None: not recorded, or no file of its own).
    """

    fmt: str | None
    meta: Any = None
    sums: Sums | None = None


@dataclass(frozen=True)
class StorageBackend(ABC):
    """One storage mode. Instances are small and picklable: the worker gets one.

    Parameters
    ----------
    output_dir : str
        Absolute run directory ("" for memory).
    stem : str
        The function's name: file names start with it.
    result_shape : tuple, optional
        ACME's ``result_shape`` (``None`` marks the stacking axis).
    result_dtype : numpy.dtype
        ACME's ``result_dtype`` of a stacked ``result_0``.
    checksums : bool
        Record sizes and checksums of what is written (decided on the client).
    n_calls : int
        Number of calls of the run.
    """

    # the name the registry, the manifest's "storage" and ``storage=`` use
    name: ClassVar[str] = ""
    # False: results travel back to the client (no files; no resume)
    on_disk: ClassVar[bool] = True
    # True: the worker stages a batch's values (stage) and hands them over at the batch's
    # end in one write_rows (zarr's whole chunks), and asks stored_batch once per batch
    batched: ClassVar[bool] = False

    output_dir: str = ""
    stem: str = "result"
    result_shape: tuple[float | None, ...] | None = None
    result_dtype: np.dtype = field(default_factory=lambda: np.dtype("float64"))
    checksums: bool = True
    n_calls: int = 0

    # -- paths ---------------------------------------------------------------------------
    @property
    def payload_dir(self) -> str:
        """Directory of the per-call files."""
        return self.output_dir

    def payload(self, i: int, ext: str = "h5") -> str:
        """Path of call ``i``'s own file."""
        if ext == "h5":  # every call's: the path joined once per process, not per call
            before, after = self._h5_paths
            return f"{before}{i}{after}"
        return os.path.join(self.payload_dir, payload_name(self.stem, i, ext))

    @cached_property
    def _h5_paths(self) -> tuple[str, str]:
        return self.payload_template("h5")

    @property
    def container(self) -> str | None:
        """The HDF5 results container ``<func>.h5`` (None when the mode writes none)."""
        return None

    @property
    def store(self) -> str | None:
        """One store holding every call (None when the mode has none)."""
        return None

    def locations(self) -> dict[str, Any]:
        """Manifest header entries saying where call ``i``'s variables are (relative paths):
        ``payload`` (file pattern), ``group`` (pattern inside it, None: the root),
        ``stacked`` and ``container``; a mode may add its own (``store``)."""
        container = None if self.container is None else os.path.basename(self.container)
        return {"payload": payload_name(self.stem, "{i}"),
                "group": None, "stacked": None, "container": container}

    # -- before any task (client) --------------------------------------------------------
    def prepare(self) -> None:
        """Create what the run's storage needs before the first task runs."""
        os.makedirs(self.payload_dir, exist_ok=True)

    # -- on the worker -------------------------------------------------------------------
    @abstractmethod
    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        """Keep call ``i``'s return value; describe it.

        ``templates``: the batch's coordinate templates (``var_meta`` adds to them);
        ``warnings``: where to say that a value was kept another way (e.g. pickled).

        Raises
        ------
        StorageError
            The value could not be written (the message names the path).
        """

    def write_batch(self, calls: Sequence[tuple[int, Any]],
                    templates: dict[str, dict[str, Any]], warnings: list[str]) -> list[Written]:
        """Keep the results of a batch of ``(call index, return value)``; one record each.

        The default writes call by call; a backend writing one chunk per batch overrides it.
        """
        return [self.write_call(i, result, templates, warnings) for i, result in calls]

    def stored(self, i: int, templates: dict[str, dict[str, Any]]) -> Written | None:
        """The record of what call ``i`` already has in storage (resume, a re-run task), or
        None. Only whole, readable results count."""
        return None

    def stored_batch(self, indices: Sequence[int],
                     templates: dict[str, dict[str, Any]]) -> list[Written | None]:
        """:meth:`stored` of each call of a batch (a backend may answer in one look)."""
        return [self.stored(i, templates) for i in indices]

    def holds_no_results(self) -> bool:
        """Whether no call of the run has anything stored yet (checked on the client when
        the run starts): then a batch submitted for the first time needs no resume check
        on its worker unless dask runs it again (:meth:`claim_batch`). False: unknown."""
        return False

    def claim_batch(self, key: str) -> bool:
        """Mark the batch of dask task ``key`` as started (on the worker); False when it was
        started before (dask runs a task again after its worker died) or cannot be
        marked: then its calls are checked with :meth:`stored_batch`."""
        return False

    def stage(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
              warnings: list[str]) -> tuple[Written, Any]:
        """With ``batched``: check call ``i``'s result and return its record plus what to
        hand to :meth:`write_rows` (None: written already). The default writes it now."""
        return self.write_call(i, result, templates, warnings), None

    def write_rows(self, batch: Sequence[int], rows: Sequence[tuple[int, Any]]) -> None:
        """With ``batched``: write the staged values ``rows`` of the calls ``batch``."""
        return None

    def write_file(self, writer: Callable[..., Sums | None], path: str, value: Any) -> Sums | None:
        """Run ``writer(path, value, checksums=...)``, an OS error named as a StorageError."""
        try:
            return writer(path, value, checksums=self.checksums)
        except StorageError:
            raise
        except OSError as exc:
            raise storage_error(path, exc) from exc

    def found_sums(self, path: str) -> Sums | None:
        """Sums of a file found on disk (with ``checksums``)."""
        if not self.checksums:
            return None
        try:
            return Sums(*file_sums(path))
        except OSError:
            return None

    # -- on the client -------------------------------------------------------------------
    #: the payload formats (``Written.fmt``) whose records :meth:`collected` is shown; None:
    #: every format. A million-call run builds no record per call for a backend that looks
    #: at a few (a zarr store looks only at calls kept as HDF5 payloads).
    collected_formats: ClassVar[tuple[str, ...] | None] = None

    def collected(self, written: Sequence[Written], manifest: Manifest) -> None:
        """See the records of a batch as they reach the client (e.g. create arrays): the
        calls done, of the formats in :attr:`collected_formats`."""
        return None

    def file_of(self, manifest: Manifest, i: int) -> str | None:
        """Final path of call ``i``'s results (None when it has none)."""
        from ..manifest import DONE

        if manifest.status[i] != DONE:
            return None
        return self.payload(i, "pickle" if manifest.fmt[i] == "pickle" else "h5")

    def finalize(self, manifest: Manifest) -> str | None:
        """After the calls: write what completes the run (container, merge); its path."""
        return None

    def results(self, manifest: Manifest) -> list[Any]:
        """What ``compute()`` returns in disk mode: each call's file, in call order."""
        if type(self).file_of is not StorageBackend.file_of:  # a backend's own file_of
            return [self.file_of(manifest, i) for i in range(manifest.n_inputs)]
        return self.payload_files(manifest, range(manifest.n_inputs))

    def payload_files(self, manifest: Manifest, calls: Sequence[int]) -> list[str | None]:
        """:meth:`file_of` of the base class for each of ``calls``, built at once (a path
        join and two column look-ups per call cost ~6 us; 1.2 s of a million-call run)."""
        from ..manifest import DONE

        index = np.asarray(calls, np.int64)
        done = (np.asarray(manifest.status)[index] == DONE).tolist()
        pickled = manifest.fmt.equals("pickle")[index].tolist()
        h5, pkl = self.payload_template("h5"), self.payload_template("pickle")
        return [None if not d else f"{pkl[0]}{i}{pkl[1]}" if p else f"{h5[0]}{i}{h5[1]}"
                for i, d, p in zip(index.tolist(), done, pickled, strict=True)]

    def payload_template(self, ext: str = "h5", directory: bool = True) -> tuple[str, str]:
        """(before, after) the call index in :meth:`payload`'s paths (``directory=False``:
        in the file names): ``f"{before}{i}{after}" == payload(i, ext)``."""
        marker = "\0"  # no path holds a NUL
        spelt = payload_name(self.stem, marker, ext)
        if directory:
            spelt = os.path.join(self.payload_dir, spelt)
        before, after = spelt.split(marker)
        return before, after

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def reader_options(cls, manifest: Manifest) -> dict[str, Any]:
        """Keywords of :class:`~acme_xr.callstack.CallStackArray` beyond the manifest's
        locations: ``in_store`` marks the calls read from the run's store."""
        return {"in_store": np.zeros(manifest.n_inputs, bool)}

    @classmethod
    def damaged(cls, run_dir: str, manifest: Manifest) -> dict[int, tuple[str, str]]:
        """Calls whose data in a store of the run's own is damaged: call -> (path, what is
        wrong). Payload files are checked by :mod:`acme_xr.integrity` for every backend."""
        return {}

    @classmethod
    def rebuild(cls, run_dir: str, files: dict[str, dict[int, str]]) -> Manifest | None:
        """The manifest of a run of this mode in ``run_dir`` rebuilt by scanning, or None
        when the directory holds no such run (``files``: stem -> {call: extension} of the
        payload-named files found). Per-call files are scanned by :mod:`acme_xr.scan`."""
        return None
