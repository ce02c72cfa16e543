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

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ResultShapeError
from . import pickled
from .base import StorageBackend, Written, check_shape, describe
from .values import NotStorable, Variable, to_variables

if TYPE_CHECKING:
    from ..manifest import Manifest

# h5py and the HDF5 writer are imported where they are used: their import is a tenth of a
# second of a cold start

__all__ = ["HdfPayloads"]


@dataclass(frozen=True)
class HdfPayloads(StorageBackend):
    """``<func>_<i>.h5`` per call plus the container ``<func>.h5`` (the default)."""

    name = "hdf5"

    @property
    def container(self) -> str | None:
        return os.path.join(self.output_dir, f"{self.stem}.h5")

    def write_call(self, i: int, result: Any, templates: dict[str, dict[str, Any]],
                   warnings: list[str]) -> Written:
        try:
            variables = to_variables(result)
            if self.result_shape is not None:
                check_shape(self.result_shape, variables)
            return self.write_variables(i, variables, templates)
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

    def finalize(self, manifest: Manifest) -> str | None:
        """Write the container of the calls done.

        Raises
        ------
        ResultShapeError
            The results cannot be stacked as ``result_shape``/``result_dtype`` ask (HDF5
            has no conversion, e.g. from integers to complex numbers); the container is
            then written with its links only.
        """
        from ..manifest import DONE
        from . import hdf5

        done = [int(i) for i in manifest.indices(DONE) if manifest.fmt[i] == "h5"]
        assert self.container is not None
        virtual = (self.result_shape, self.result_dtype) if self.result_shape else None
        try:
            try:
                hdf5.write_container(self.container,
                                     [(i, os.path.basename(self.payload(i))) for i in done],
                                     n_calls=manifest.n_inputs, virtual=virtual)
            except (ValueError, TypeError):
                hdf5.write_container(self.container,
                                     [(i, os.path.basename(self.payload(i))) for i in done],
                                     n_calls=manifest.n_inputs)
                raise
        except (ValueError, TypeError) as exc:
            raise self.shape_error(manifest, exc) from exc
        return self.container

    def shape_error(self, manifest: Manifest, exc: Exception) -> ResultShapeError:
        """The error of results that do not stack as ``result_shape`` asks."""
        rec = manifest.variables.get("result_0")
        return ResultShapeError(
            f"cannot stack result_0 (dtype {rec.dtype if rec else '?'}) into "
            f"result_shape={self.result_shape} with result_dtype={self.result_dtype} in "
            f"{self.container}: {exc}. Every payload is complete; run again with a "
            "result_dtype the results convert to (for example their own dtype)"
        )
