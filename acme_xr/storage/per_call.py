"""The default backend: one HDF5 payload ``<func>_<i>.h5`` per call and the results
container ``<func>.h5`` (links to every payload; with ``result_shape`` a virtual dataset).

A value HDF5 cannot hold exactly is pickled to ``<func>_<i>.pickle`` instead, with a
warning naming the call (:func:`acme_xr.storage.pickled.fallback_value`).

Examples
--------
>>> import tempfile
>>> backend = HdfPayloads(output_dir=tempfile.mkdtemp(), stem="f")
>>> backend.prepare()
>>> backend.write_call(0, [1, 2], templates={}, warnings=[]).fmt
'h5'
>>> os.path.basename(backend.payload(0))
'f_0.h5'
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ResultShapeError
from . import pickled
from .atomic import TMP_SUFFIX
from .base import StorageBackend, Written, check_shape, describe, payload_name
from .values import NotStorable, Variable, to_variables

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .container import LiveContainer

# h5py and the HDF5 writer are imported where they are used: their import is a tenth of a
# second of a cold start

__all__ = ["HdfPayloads"]

log = logging.getLogger(__name__)


# The fast path of the commonest call, one plain numeric array (or number) returned
# alone: the second call of a dtype and shape skips building Variables and describing
# them (the same record, the same object: pickled once per batch) and copies the payload
# of the first (hdf5.write_plain). Keyed by (dtype, shape, result_shape): the first call
# of each went the whole way, checks included.
_PLAIN_KEPT = 32
# list the payload directory for a batch's resume check while it holds up to ~16 entries
# per call of the batch (see HdfPayloads.stored_batch)
_LIST_BYTES_PER_CALL = 512
_plain_meta: dict[tuple[Any, ...], Any] = {}
_PLAIN_SCALARS = (int, float, complex, np.integer, np.floating, np.complexfloating)


def _plain_array(result: Any) -> np.ndarray | None:
    """``result`` as an array when it is one non-empty plain numeric array or number
    (what :func:`~acme_xr.storage.values.to_variables` stores as it is), else None."""
    if type(result) is np.ndarray:  # not a subclass (masked arrays keep their mask)
        arr = result
    elif isinstance(result, _PLAIN_SCALARS) and not isinstance(result, bool):
        arr = np.asarray(result)
    else:
        return None
    return arr if arr.dtype.kind in "iufc" and arr.size else None


@functools.cache
def _hdf5() -> Any:
    """:mod:`acme_xr.storage.hdf5`, imported on first use (a worker of a run in memory never
    needs h5py) and then without an import statement per call (~1 us)."""
    from . import hdf5

    return hdf5


@dataclass(frozen=True)
class HdfPayloads(StorageBackend):
    """``<func>_<i>.h5`` per call plus the container ``<func>.h5`` (the default)."""

    name = "hdf5"

    @property
    def container(self) -> str | None:
        return os.path.join(self.output_dir, f"{self.stem}.h5")

    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        plain = _plain_array(result)
        if plain is not None:
            key = (plain.dtype.str, plain.shape, self.result_shape)
            meta = _plain_meta.get(key)
            if meta is not None:
                sums = self.write_file(_hdf5().write_plain, self.payload(i, "h5"), plain)
                if sums is not None:
                    return Written("h5", meta, sums)
        try:
            variables = to_variables(result)
            if self.result_shape is not None:
                check_shape(self.result_shape, variables)
            written = self.write_variables(i, variables, templates)
            if plain is not None:
                if len(_plain_meta) >= _PLAIN_KEPT:
                    _plain_meta.clear()
                _plain_meta[key] = written.meta
            return written
        except NotStorable as exc:
            # only NotStorable: storage turns what HDF5 cannot convert into it, naming the
            # variable; any other TypeError is a real failure of the call (with its traceback).
            # The pickle holds the same object ACME's emergency pickling dumps, so ACME's
            # readers load it
            sums = self.write_file(pickled.write_pickle, self.payload(i, "pickle"),
                                   pickled.fallback_value(result))
            warnings.append(f"call {i}: {exc}")
            return Written("pickle", None, sums)

    def write_variables(self, i: int, variables: list[Variable],
                        templates: dict[str, dict[str, Any]]) -> Written:
        """Write call ``i``'s payload file."""
        from . import hdf5  # here: a worker of a run in memory never needs h5py

        sums = self.write_file(hdf5.write_payload, self.payload(i, "h5"), variables)
        return Written("h5", describe(variables, templates), sums)

    def stored(self, i: int, templates: dict[str, dict[str, Any]]) -> Written | None:
        """Payloads are renamed into place only once complete, so an existing file is a
        whole one; an HDF5 file that cannot be read anyway (damaged later) counts as
        missing, and the call's next run replaces it. The sums are the file's size and
        checksum as found (no per-variable sums)."""
        h5 = self.payload(i, "h5")
        if os.path.exists(h5):
            import h5py

            from . import hdf5

            try:
                with h5py.File(h5, "r") as fh:
                    meta = hdf5.scan_group(fh, templates)
                return Written("h5", meta, self.found_sums(h5))
            except (OSError, KeyError, ValueError):
                return None
        pk = self.payload(i, "pickle")
        if os.path.exists(pk) and os.path.getsize(pk) > 0:
            return Written("pickle", None, self.found_sums(pk))
        return None

    def stored_batch(self, indices: Sequence[int],
                     templates: dict[str, dict[str, Any]]) -> list[Written | None]:
        """:meth:`stored` of each call of a batch; the calls without a payload file are
        told apart by one listing of the directory when it is small beside the batch
        (two ``stat`` calls of missing files cost ~7-22 us per call here, listing ~0.5 us
        per entry), else by :meth:`stored` call by call."""
        names = self._listing(len(indices))
        if names is None:
            return [self.stored(i, templates) for i in indices]
        return [self.stored(i, templates)
                if payload_name(self.stem, i) in names
                or payload_name(self.stem, i, "pickle") in names else None
                for i in indices]

    def holds_no_results(self) -> bool:
        """No payload-named file (``<func>_*``) in the payload directory: a new run."""
        prefix = payload_name(self.stem, "")[:-len(".h5")]
        try:
            with os.scandir(self.payload_dir) as entries:
                return not any(e.name.startswith(prefix) for e in entries)
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def claim_batch(self, key: str) -> bool:
        """An empty marker ``.acme_xr-batch-<key>`` + :data:`TMP_SUFFIX` (removed with the
        run's temporaries when it ends), created only if it did not exist."""
        marker = os.path.join(self.payload_dir, f".acme_xr-batch-{key}{TMP_SUFFIX}")
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError:  # started before (FileExistsError), or the disk refuses: check
            return False
        return True

    def _listing(self, n_calls: int) -> set[str] | None:
        """The names in the payload directory, or None when listing it would cost more
        than asking about ``n_calls`` files one by one (judged by the directory's size:
        ~32 bytes per entry on ext4, less elsewhere)."""
        try:
            if os.stat(self.payload_dir).st_size > _LIST_BYTES_PER_CALL * n_calls:
                return None
            return set(os.listdir(self.payload_dir))
        except OSError:
            return None

    def finalize(self, manifest: Manifest) -> str | None:
        """Write the container of the calls done.

        Raises
        ------
        ResultShapeError
            The results cannot be stacked as ``result_shape``/``result_dtype`` ask (HDF5
            has no conversion, e.g. from integers to complex numbers); the container is
            then written with its links only.
        """
        from .container import write_container

        links = self._links(self._done_payloads(manifest))
        assert self.container is not None
        virtual = (self.result_shape, self.result_dtype) if self.result_shape else None
        try:
            try:
                self._live.finish(links, n_calls=manifest.n_inputs, virtual=virtual)
            except (ValueError, TypeError):
                write_container(self.container, links, n_calls=manifest.n_inputs)
                raise
        except (ValueError, TypeError) as exc:
            raise self.shape_error(manifest, exc) from exc
        return self.container

    # the container is written while the calls run (LiveContainer): the calls done so far
    # are linked at most this often (seconds), each time after one look at the manifest's
    # columns, and at most once per 50 times that look took (~2 ms at a million calls):
    # what is left for the end is the last fraction of a second's links
    _LINK_EVERY: ClassVar[float] = 0.05
    # links per look at most (~0.1 s): a resumed run's calls done before are linked over
    # several looks, not in one stall of the client while batches wait
    _LINKS_PER_LOOK: ClassVar[int] = 20_000
    #: link the calls done into the container while the run goes on (a subclass whose
    #: finalize writes no container of links says False)
    live_container: ClassVar[bool] = True
    # collected() looks at the manifest's columns, not at records built per call
    collected_formats: ClassVar[tuple[str, ...] | None] = ()

    @cached_property
    def _live(self) -> LiveContainer:
        from .container import LiveContainer

        assert self.container is not None
        return LiveContainer(self.container)

    def collected(self, written: Sequence[Written], manifest: Manifest) -> None:
        """Link the calls done so far into the container being written (the client waits
        for batches most of the time; the links cost ~5.5 us each, 1.1 s at the end of a
        200,000-call run otherwise). A failure here is left to :meth:`finalize`."""
        if not self.live_container or self.container is None or self._live.off:
            return
        now = time.monotonic()
        if now - self._live.last < max(self._LINK_EVERY, 50 * self._live.look):
            return
        self._live.last = now
        try:
            new = self._live.unlinked(self._done_payloads(manifest))[:self._LINKS_PER_LOOK]
            self._live.look = time.monotonic() - now
            self._live.add(self._links(new))
        except OSError as exc:
            log.debug("the results container is written at the end instead: %s", exc)
            self._live.discard()
            self._live.off = True

    @staticmethod
    def _done_payloads(manifest: Manifest) -> np.ndarray:
        from ..manifest import DONE

        return np.flatnonzero((manifest.status == DONE) & manifest.fmt.equals("h5"))

    def _links(self, calls: np.ndarray) -> list[tuple[int, str]]:
        """(call, payload file name) of ``calls``: the container's links."""
        before, after = self.payload_template("h5", directory=False)
        return [(i, f"{before}{i}{after}") for i in calls.tolist()]

    def shape_error(self, manifest: Manifest, exc: Exception) -> ResultShapeError:
        """The error of results that do not stack as ``result_shape`` asks."""
        rec = manifest.variables.get("result_0")
        return ResultShapeError(
            f"cannot stack result_0 (dtype {rec.dtype if rec else '?'}) into "
            f"result_shape={self.result_shape} with result_dtype={self.result_dtype} in "
            f"{self.container}: {exc}. Every payload is complete; run again with a "
            "result_dtype the results convert to (for example their own dtype)"
        )
