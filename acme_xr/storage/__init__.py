"""Storage backends of acme_xr: HDF5 payload files (default), one HDF5 file, pickles, zarr
and memory, each one module behind the interface of :mod:`acme_xr.storage.base`, found by
name in :mod:`acme_xr.storage.registry` (see docs/developer.md)."""

from __future__ import annotations

__all__: list[str] = []
