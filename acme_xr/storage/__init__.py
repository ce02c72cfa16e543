"""Storage backends of acme_xr: HDF5 payload files (default), pickles and zarr."""

from __future__ import annotations

__all__: list[str] = []
