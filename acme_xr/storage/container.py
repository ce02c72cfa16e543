"""The results container ``<func>.h5``: a ``comp_<i>`` external link to each call's payload
file (ACME's layout) and, with ``result_shape``, ``result_0`` as a virtual dataset over them.

HDF5 takes ~5.5 us to create one link here, whatever the library version bounds: 1.1 s at
the end of a 200,000-call run, with the workers idle. :class:`LiveContainer` writes the
links of the calls done while the run goes on (the client waits for batches most of the
time) into a temporary file, and at the end only the last calls' links and the virtual
dataset before renaming it into place (:func:`write_container` writes one at once).

Examples
--------
>>> import os, tempfile, h5py
>>> d = tempfile.mkdtemp()
>>> live = LiveContainer(os.path.join(d, "f.h5"))
>>> live.add([(0, "f_0.h5"), (1, "f_1.h5")])
>>> live.finish([(0, "f_0.h5"), (1, "f_1.h5"), (3, "f_3.h5")], n_calls=4)
>>> sorted(h5py.File(os.path.join(d, "f.h5"), "r").keys(), key=len)  # links (unresolved)
['comp_0', 'comp_1', 'comp_3']
>>> sorted(os.listdir(d))
['f.h5']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import h5py
import numpy as np
from h5py import h5s

from .atomic import _temporary_name, atomic_path

__all__ = ["write_container", "LiveContainer", "LIBVER"]

LIBVER = "latest"


class LiveContainer:
    """The results container written while the calls run (on the client).

    :meth:`add` links calls as they are done, into a temporary file next to ``path``
    (named as :func:`~acme_xr.storage.atomic.remove_stale_temporaries` removes it, if the
    client dies); :meth:`finish` links the rest, writes the virtual dataset and renames it
    into place; :meth:`discard` drops it. Never pickled: a backend shipped to the workers
    carries an empty one.

    Parameters
    ----------
    path : str
        The container's final path, ``<output_dir>/<func>.h5``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp: str | None = None
        self._fh: h5py.File | None = None
        self._linked = np.zeros(0, bool)  # call -> linked yet (no Python object per call)
        self.last = 0.0  # time.monotonic() of the last look for calls to link (the caller's)
        self.off = False  # the caller gave up on it (the container is written at the end)
        self.look = 0.0  # seconds the caller's last look for calls to link took

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    @property
    def linked(self) -> int:
        """Number of calls linked so far."""
        return int(self._linked.sum())

    def unlinked(self, calls: np.ndarray) -> np.ndarray:
        """Those of ``calls`` (int array) not linked yet."""
        calls = np.asarray(calls, np.int64)
        inside = calls < len(self._linked)
        keep = ~inside
        keep[inside] = ~self._linked[calls[inside]]
        return calls[keep]

    def add(self, payloads: Sequence[tuple[int, str]]) -> None:
        """Link the calls ``payloads`` (call, payload file name relative to the container)
        not linked yet.

        Raises
        ------
        OSError
            The temporary file could not be created or written.
        """
        new = self.unlinked(np.asarray([i for i, _ in payloads], np.int64))
        if not len(new):
            return
        if len(new) < len(payloads):
            wanted = set(new.tolist())
            payloads = [(i, rel) for i, rel in payloads if i in wanted]
        if self._fh is None:
            self._tmp = _temporary_name(self.path)
            self._fh = h5py.File(self._tmp, "w", libver=LIBVER)
        top = int(new.max()) + 1
        if top > len(self._linked):
            self._linked = np.concatenate(
                [self._linked, np.zeros(max(top - len(self._linked), len(self._linked)), bool)])
        try:
            _link(self._fh, payloads)
        except BaseException:  # e.g. a Ctrl-C half-way: which links exist is unknown now
            self.discard()
            self.off = True  # finish() writes the container at once
            raise
        self._linked[new] = True

    def finish(self, payloads: Sequence[tuple[int, str]], n_calls: int,
               virtual: tuple[tuple[float | None, ...], np.dtype] | None = None) -> None:
        """Write the container of exactly the calls ``payloads`` and rename it into place.

        Parameters are those of :func:`write_container`. A call linked before but not in
        ``payloads`` (none should be) makes it start over with the container written at
        once.

        Raises
        ------
        ValueError, TypeError
            The virtual dataset cannot be written (the temporary file is removed).
        OSError
            The container could not be written.
        """
        wanted = np.zeros(len(self._linked), bool)
        calls = np.asarray([i for i, _ in payloads], np.int64)
        wanted[calls[calls < len(wanted)]] = True
        if self._fh is None or (self._linked & ~wanted).any():
            self.discard()
            write_container(self.path, payloads, n_calls=n_calls, virtual=virtual)
            return
        assert self._tmp is not None
        try:
            self.add(payloads)
            if virtual is not None:
                _virtual_dataset(self._fh, list(payloads), n_calls, *virtual)
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._tmp = None
        self._linked = np.zeros(0, bool)

    def discard(self) -> None:
        """Close and remove the temporary file, if any."""
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
            self._fh = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None
        self._linked = np.zeros(0, bool)


def write_container(
    path: str,
    payloads: Iterable[tuple[int, str]],
    *,
    n_calls: int,
    virtual: tuple[tuple[float | None, ...], np.dtype] | None = None,
) -> None:
    """Write the results container: ``comp_<i>`` external links to each payload.

    Parameters
    ----------
    path : str
        Container file to (re)write atomically, normally ``<output_dir>/<func>.h5``.
    payloads : iterable of (int, str)
        Call index and payload file name *relative to the container's directory*.
    n_calls : int
        Number of calls of the run (the stacking axis length of the virtual dataset).
    virtual : (result_shape, dtype), optional
        With a ``result_shape`` (one ``None``: the stacking axis; ``np.inf``: unlimited),
        also write ``result_0`` as a virtual dataset over every payload's ``result_0``,
        with relative source paths so that a moved directory still reads correctly.
        Calls without a payload read as the fill value (NaN for floating-point types).
    """
    payloads = list(payloads)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=LIBVER) as fh:
            _link(fh, payloads)
            if virtual is not None:
                _virtual_dataset(fh, payloads, n_calls, *virtual)


def _link(fh: h5py.File, payloads: Iterable[tuple[int, str]]) -> None:
    links = fh.id.links  # the low-level call: a fifth of h5py's ExternalLink cost
    for i, rel in payloads:
        links.create_external(f"comp_{i}".encode(), rel.encode(), b"/")


def _virtual_dataset(
    fh: h5py.File,
    payloads: list[tuple[int, str]],
    n_calls: int,
    result_shape: tuple[float | None, ...],
    dtype: np.dtype,
) -> None:
    axis = result_shape.index(None)
    unlimited = [j for j, s in enumerate(result_shape) if s is not None and np.isinf(s)]
    shape = [n_calls if s is None else (1 if np.isinf(s) else int(s)) for s in result_shape]
    maxshape = [None if j in unlimited else n for j, n in enumerate(shape)]
    source_shape = [n for j, n in enumerate(shape) if j != axis]
    source_max = [m for j, m in enumerate(maxshape) if j != axis]
    layout = h5py.VirtualLayout(
        shape=tuple(shape), dtype=dtype, maxshape=tuple(maxshape) if unlimited else None
    )
    target: list[Any] = [
        slice(h5s.UNLIMITED) if j in unlimited else slice(None) for j in range(len(shape))
    ]
    source_sel = tuple(t for j, t in enumerate(target) if j != axis)
    for i, rel in payloads:
        target[axis] = i
        src = h5py.VirtualSource(
            rel, "result_0", shape=tuple(source_shape),
            maxshape=tuple(source_max) if unlimited else None,
        )
        layout[tuple(target)] = src[source_sel]
    fill = np.nan if np.dtype(dtype).kind in "fc" else None
    fh.create_virtual_dataset("result_0", layout, fillvalue=fill)
