"""Storage backends by name: adding one is one module plus one line here (or a
:func:`register` call in the module that defines it).

A run picks its backend with :func:`mode_of`; the manifest records the name
(``header["storage"]``), and readers look it up with :func:`backend_class`. Built-in
backends are imported when first asked for: a run in memory never imports h5py or zarr.

Examples
--------
>>> names()[:5]
('hdf5', 'single_file', 'pickle', 'zarr', 'memory')
>>> backend_class("pickle").__name__
'PickleFiles'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ..options import Options
    from .base import StorageBackend

__all__ = ["register", "backend_class", "names", "mode_of", "DEFAULT"]

DEFAULT = "hdf5"

# name -> "module:class" of the built-in backends (imported on first use)
_BUILTIN = {
    "hdf5": "acme_xr.storage.per_call:HdfPayloads",
    "single_file": "acme_xr.storage.single_file:SingleFile",
    "pickle": "acme_xr.storage.pickle_files:PickleFiles",
    "zarr": "acme_xr.storage.zarr_run:ZarrRun",
    "memory": "acme_xr.storage.memory:InMemory",
}
_REGISTERED: dict[str, type[StorageBackend]] = {}


def register(cls: type[StorageBackend]) -> type[StorageBackend]:
    """Make ``cls`` the backend named ``cls.name`` (usable as a class decorator).

    Raises
    ------
    ValueError
        ``cls.name`` is empty or a built-in backend's name.
    """
    if not cls.name or cls.name in _BUILTIN:
        raise ValueError(f"backend name {cls.name!r} of {cls.__qualname__} is empty or a "
                         f"built-in one ({', '.join(_BUILTIN)}): give the class another name")
    _REGISTERED[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a backend registered with :func:`register` (tests)."""
    _REGISTERED.pop(name, None)


def names() -> tuple[str, ...]:
    """Names of every backend: the built-in ones first."""
    return (*_BUILTIN, *_REGISTERED)


def backend_class(name: str) -> type[StorageBackend]:
    """The backend class called ``name``.

    Raises
    ------
    InputError
        No backend has that name.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise InputError(f"storage={name!r} is not a storage backend: give one of "
                         f"{', '.join(map(repr, names()))}")
    module, cls = _BUILTIN[name].split(":")
    found: type[StorageBackend] = getattr(importlib.import_module(module), cls)
    return found


def mode_of(options: Options) -> str:
    """The backend a run's options ask for (ACME's flags pick three of them)."""
    if not options.write_worker_results:
        return "memory"
    if options.write_pickle:
        return "pickle"
    if options.single_file:
        return "single_file"
    return options.storage


def backend_for(options: Options, output_dir: str, stem: str, **kwargs: Any) -> StorageBackend:
    """The backend instance of a run (``kwargs``: ``checksums``, ``n_calls``)."""
    return backend_class(mode_of(options))(
        output_dir=output_dir, stem=stem, result_shape=options.result_shape,
        result_dtype=options.result_dtype, **kwargs)
