"""Pickle what goes to a worker (or to a call's child process) the way dask ships data.

cloudpickle handles almost everything, and is tried first. Some objects cannot be pickled
but dask has its own serializer for them (``distributed.protocol``: an open read-only
``h5py.File``/``Dataset`` travels as its file and object name and is reopened on arrival;
netCDF4, sparse, cupy, ...). ACME passes its arguments through ``client.submit``, so such
objects reach its calls; :func:`dumps` makes them reach acme_xr's calls too, wherever they
sit (a whole argument, one element of a split one, a closure cell of the function).

The bytes :func:`dumps` returns are always a plain pickle: ``pickle.loads`` rebuilds the
object, so the receiving side needs nothing special.

Examples
--------
>>> import pickle
>>> pickle.loads(dumps({"a": [1, 2.5]}))
{'a': [1, 2.5]}
"""

from __future__ import annotations

import functools
import io
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from .errors import InputTypeError

if TYPE_CHECKING:
    from .inputs import CallPlan
    from .worker import Runner

__all__ = ["dumps", "Shipped", "ship_runner", "ship_values"]

# types that never need dask's serializers: checked first, so that the slow path stays cheap
_PLAIN = frozenset({int, float, complex, bool, str, bytes, bytearray, type(None), tuple, list,
                    dict, set, frozenset, range, slice, type})
# numpy buffers up to this size stay inside the pickle; bigger ones travel out of band
_IN_BAND = 1 << 16


@functools.cache
def _dask_ships(kind: Any) -> bool:
    """Whether dask has a serializer of its own (not pickle) for objects of type ``kind``."""
    if kind in _PLAIN:
        return False
    from distributed.protocol.serialize import dask_serialize

    try:
        dask_serialize.dispatch(kind)  # also imports a lazily registered serializer
    except TypeError:
        return False
    return True


class _DaskAwarePickler(cloudpickle.Pickler):
    """cloudpickle, except that objects dask has a serializer for are serialized by dask
    and referenced from the pickle by their position in ``parts``."""

    def __init__(self, file: io.BytesIO, parts: list[tuple[dict[str, Any], list[bytes]]]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.parts = parts

    def persistent_id(self, obj: Any) -> int | None:  # type: ignore[override]
        kind: Any = type(obj)
        if kind in _PLAIN or not _dask_ships(kind):
            return None
        from distributed.protocol import serialize

        header, frames = serialize(obj, serializers=("dask",), on_error="raise")
        self.parts.append((header, [bytes(f) for f in frames]))
        return len(self.parts) - 1


class _PartsUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, objects: list[Any]) -> None:
        super().__init__(file)
        self.objects = objects

    def persistent_load(self, pid: Any) -> Any:
        return self.objects[pid]


def _rebuild(main: bytes, parts: list[tuple[dict[str, Any], list[bytes]]]) -> Any:
    """Inverse of the slow path of :func:`dumps` (runs where the pickle is loaded)."""
    from distributed.protocol import deserialize

    objects = [deserialize(header, frames) for header, frames in parts]
    return _PartsUnpickler(io.BytesIO(main), objects).load()


class _ViaDask:
    def __init__(self, main: bytes, parts: list[tuple[dict[str, Any], list[bytes]]]) -> None:
        self.main = main
        self.parts = parts

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.main, self.parts))


def dumps(obj: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle ``obj``; what cloudpickle cannot pickle goes through dask's serializers.

    Parameters
    ----------
    obj : object
        What to pickle.
    buffers : list, optional
        If given, large buffers (numpy arrays) are appended to it instead of being copied
        into the pickle (``pickle.loads(data, buffers=buffers)`` then rebuilds ``obj``).

    Raises
    ------
    Exception
        Whatever cloudpickle raised, when dask cannot serialize the object either.
    """
    callback = None
    if buffers is not None:
        out = buffers

        def callback(buf: pickle.PickleBuffer) -> bool:
            if buf.raw().nbytes <= _IN_BAND:
                return True
            out.append(buf)
            return False

    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=callback)
    except Exception as first:
        if buffers is not None:
            buffers.clear()
        parts: list[tuple[dict[str, Any], list[bytes]]] = []
        fh = io.BytesIO()
        try:
            _DaskAwarePickler(fh, parts).dump(obj)
        except Exception:
            raise first from None  # cloudpickle's message says best what is wrong
        return pickle.dumps(_ViaDask(fh.getvalue(), parts), protocol=pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes, *buffers: Any) -> Any:
    return pickle.loads(data, buffers=buffers)


class Shipped:
    """``obj`` pickled once with :func:`dumps`; pickling the Shipped costs only a copy of
    the bytes (large buffers go out of band), and unpickling gives ``obj`` back.

    Pickling happens when the Shipped is made, so an object that cannot be shipped fails
    there, where the caller can name it.

    Examples
    --------
    >>> import pickle
    >>> pickle.loads(pickle.dumps(Shipped([1, "a"]), protocol=5))
    [1, 'a']
    """

    __slots__ = ("data", "buffers")

    def __init__(self, obj: Any) -> None:
        self.buffers: list[pickle.PickleBuffer] = []
        self.data = dumps(obj, self.buffers)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if int(protocol) < 5:  # no out-of-band buffers: load them into the bytes
            return (_loads, (self.data, *[bytes(b.raw()) for b in self.buffers]))
        return (_loads, (self.data, *self.buffers))


def unshipped(obj: Any) -> Any:
    """``obj``, or what a :class:`Shipped` holds when it arrives still wrapped (a client
    and worker in one process exchange objects without pickling them)."""
    if isinstance(obj, Shipped):
        return _loads(obj.data, *obj.buffers)
    return obj


def _unshippable(what: str, exc: BaseException) -> InputTypeError:
    return InputTypeError(
        f"{what} cannot be sent to the dask workers: {type(exc).__name__}: {exc}. Neither "
        "pickle nor dask can serialize it; pass something that can be (for an open file, "
        "its name) and open it inside the function"
    )


def ship_runner(plan: CallPlan, runner: Runner) -> bytes:
    """The runner, pickled once for every worker; an error names what cannot travel."""
    try:
        return dumps(runner)
    except Exception as exc:
        for a in (*plan.args, *plan.kwargs.values()):
            if not a.split and not ships(a.value):
                raise _unshippable(f"argument {a.name!r} ({type(a.value).__name__})",
                                   exc) from exc
        raise _unshippable(f"the function {getattr(plan.func, '__qualname__', plan.func)!r} "
                           "(or something it refers to)", exc) from exc


def ship_values(plan: CallPlan, indices: list[int]) -> Shipped:
    """The split arguments' values of calls ``indices``; an error names the argument."""
    split = plan.split_arguments
    values = [tuple(a.at(i) for a in split) for i in indices]
    try:
        return Shipped(values)
    except Exception as exc:
        for i in indices:
            for a in split:
                if not ships(a.at(i)):
                    raise _unshippable(f"element {i} of argument {a.name!r} "
                                       f"({type(a.at(i)).__name__})", exc) from exc
        raise _unshippable(f"the values of calls {indices[:5]}", exc) from exc


def ships(value: Any) -> bool:
    """Whether ``value`` can travel to another process (see :func:`dumps`)."""
    try:
        dumps(value)
    except Exception:  # noqa: BLE001 - any failure means: this one cannot travel
        return False
    return True
