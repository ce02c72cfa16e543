"""The hashing behind :mod:`acme_xr.fingerprint`: values and code to one digest.

A sha256 over a tagged, length-prefixed stream of what a value holds: array bytes (no
copy of a contiguous array), containers element by element, functions by normalised code,
closures, defaults and the globals they use, classes by their members, installed
packages by name and version, other objects by what they pickle to (``__reduce_ex__``).
"""

from __future__ import annotations

import builtins
import copyreg
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .errors import FingerprintError

__all__ = ["Hasher"]

_SLAB = 64 << 20  # bytes hashed per copy of a non-contiguous array
_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})
# class attributes that Python or abc/typing add and that hold no user code
_CLASS_NOISE = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__",
                          "_abc_impl", "__firstlineno__", "__static_attributes__",
                          "__slotnames__"})  # copyreg caches it at the first pickle
_ATOMS = (bool, int, float, complex)


class Hasher:
    """A sha256 over a tagged, length-prefixed stream, so that different values never
    produce the same stream. Objects are hashed once each (digest memoised by id) and a
    reference cycle becomes a marker, so recursive code and self-referencing data end."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._memo: dict[int, bytes] = {}
        self._stack: list[int] = []
        self._alive: list[Any] = []  # memoised ids must not be reused by new objects
        self._path: list[str] = []

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]

    def raw(self, tag: str, nbytes: int) -> None:
        self._h.update(f"{tag}:{nbytes}:".encode())

    def blob(self, tag: str, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.raw(tag, view.nbytes)
        self._h.update(view)

    def text(self, tag: str, value: str) -> None:
        self.blob(tag, value.encode("utf-8", "surrogatepass"))

    @contextmanager
    def at(self, where: str) -> Iterator[None]:
        self._path.append(where)
        try:
            yield
        finally:
            self._path.pop()

    def fail(self, obj: Any, reason: str) -> FingerprintError:
        where = ", ".join(self._path) or "a value"
        return FingerprintError(
            f"cannot fingerprint {_describe(obj)} in {where}: {reason}. acme_xr cannot tell "
            "whether it is the same as in the recorded run, so it does not resume; pass "
            "resume='force' to resume anyway, or make the object picklable")

    def node(self, obj: Any, hash_into: Callable[[Any], None]) -> None:
        """Hash ``obj`` with ``hash_into`` as its own digest, once per object."""
        key = id(obj)
        if key in self._memo:
            self.blob("node", self._memo[key])
            return
        if key in self._stack:
            self.text("cycle", str(len(self._stack) - self._stack.index(key)))
            return
        outer, self._h = self._h, hashlib.sha256()
        self._stack.append(key)
        try:
            hash_into(obj)
            digest = self._h.digest()
        except RecursionError as exc:
            raise self.fail(obj, "it is nested too deeply") from exc
        finally:
            self._stack.pop()
            self._h = outer
        self._memo[key] = digest
        self._alive.append(obj)
        self.blob("node", digest)

    def digest_of(self, obj: Any) -> bytes:
        outer, self._h = self._h, hashlib.sha256()
        try:
            self.value(obj)
            return self._h.digest()
        finally:
            self._h = outer

    # -- values --------------------------------------------------------------------------
    def value(self, obj: Any) -> None:  # noqa: C901 - one dispatch table
        t = type(obj)
        if obj is None or obj is Ellipsis or obj is NotImplemented:
            self.text("const", repr(obj))
        elif t in _ATOMS:
            self.text(t.__name__, repr(obj))  # repr of a float round-trips exactly
        elif t is str:
            self.text("str", obj)
        elif t in (bytes, bytearray):
            self.blob(t.__name__, obj)
        elif t is range:
            self.text("range", f"{obj.start}:{obj.stop}:{obj.step}")
        elif isinstance(obj, np.ndarray):
            self.node(obj, self._array)
        elif isinstance(obj, np.generic):
            self.text("scalar", "")
            self._array(np.asarray(obj))
        elif t is tuple and all(type(v) in _ATOMS or type(v) is str for v in obj):
            self._container(obj)  # cannot hold a cycle: no node needed (fast for many)
        elif t in (list, tuple, dict, set, frozenset, memoryview, slice,
                   types.MappingProxyType):
            self.node(obj, self._container)
        elif isinstance(obj, types.ModuleType):
            self._module(obj, frozenset())
        elif isinstance(obj, type):
            self.node(obj, self._class)
        elif isinstance(obj, (types.FunctionType, functools.partial, types.MethodType,
                              types.BuiltinFunctionType, staticmethod, classmethod, property)):
            self.node(obj, self._callable)
        elif isinstance(obj, types.CodeType):
            self._code(obj, None)
        elif _tokenizable(obj):
            self._tokenize(obj)
        else:
            self.node(obj, self._instance)

    def _container(self, obj: Any) -> None:
        t = type(obj)
        if t is memoryview:
            self.blob("memoryview", obj.tobytes())
        elif t is slice:
            self.text("slice", "")
            self.value((obj.start, obj.stop, obj.step))
        elif t in (dict, types.MappingProxyType):
            self.raw(t.__name__, len(obj))
            for k, v in obj.items():
                self.value(k)
                self.value(v)
        elif t in (set, frozenset):  # iteration order changes with PYTHONHASHSEED
            self.raw(t.__name__, len(obj))
            for d in sorted(self.digest_of(v) for v in obj):
                self.blob("item", d)
        elif all(type(v) in _ATOMS or type(v) is str for v in obj):  # fast: long lists
            # a str's repr escapes the separator, so no two lists join alike
            self.text(f"{t.__name__}-atoms", "\x1f".join(f"{type(v).__name__}={v!r}"
                                                          for v in obj))
        else:
            self.raw(t.__name__, len(obj))
            for v in obj:
                self.value(v)

    def _array(self, arr: np.ndarray) -> None:
        self.text("ndarray", f"{arr.dtype!r}{arr.shape}")
        if type(arr) is not np.ndarray:
            self.value(type(arr))
            if isinstance(arr, np.ma.MaskedArray):
                self._array(np.ma.getmaskarray(arr))
                self.value(arr.fill_value)
            self.value(getattr(arr, "__dict__", None))
            arr = arr.view(np.ndarray)
        if arr.dtype.hasobject:
            self.value(arr.tolist())
            return
        self.raw("bytes", arr.nbytes)
        if arr.flags.c_contiguous:
            self._h.update(arr.reshape(-1).view(np.uint8).data)  # no copy
            return
        rows = max(1, _SLAB // max(1, arr[:1].nbytes))
        for start in range(0, len(arr), rows):  # C order, a slab at a time
            slab = np.ascontiguousarray(arr[start:start + rows])
            self._h.update(slab.reshape(-1).view(np.uint8).data)

    def _tokenize(self, obj: Any) -> None:
        from dask.base import tokenize

        try:
            token = tokenize(obj, ensure_deterministic=True)
        except Exception as exc:  # noqa: BLE001 - dask raises several kinds
            raise self.fail(obj, f"dask cannot tokenize it deterministically ({exc})") from exc
        self.value(type(obj))
        self.text("token", token)

    def _instance(self, obj: Any) -> None:
        self.value(type(obj))
        try:  # as pickle does: a reducer registered with copyreg first (re.Pattern)
            registered = copyreg.dispatch_table.get(type(obj))
            reduced = registered(obj) if registered is not None else obj.__reduce_ex__(4)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises
            raise self.fail(obj, f"it cannot be pickled ({type(exc).__name__}: {exc})") from exc
        if isinstance(reduced, str):  # a module-level singleton, pickled by name
            self.text("global", reduced)
            return
        parts = list(reduced) + [None] * (5 - len(reduced))
        with self.at(f"the state of {_describe(obj)}"):
            for part in parts[:3]:
                self.value(part)
            for items in parts[3:5]:  # list items, dict items: iterators
                self.value(None if items is None else list(items))

    # -- code ----------------------------------------------------------------------------
    def _callable(self, obj: Any) -> None:
        if isinstance(obj, functools.partial):
            self.text("partial", "")
            with self.at("a functools.partial"):
                self.value(obj.func)
                self.value(obj.args)
                self.value(sorted(obj.keywords.items()))
                self.value(getattr(obj, "__dict__", None))
        elif isinstance(obj, (staticmethod, classmethod)):
            self.text(type(obj).__name__, "")
            self.value(obj.__func__)
        elif isinstance(obj, property):
            self.text("property", "")
            self.value((obj.fget, obj.fset, obj.fdel))
        elif isinstance(obj, types.MethodType):
            self.text("method", "")
            self.value(obj.__func__)
            with self.at(f"the instance of the bound method {obj.__func__.__qualname__}"):
                self.value(obj.__self__)
        elif isinstance(obj, types.BuiltinFunctionType):
            owner = obj.__self__
            if owner is None or isinstance(owner, types.ModuleType):
                self._installed(obj, getattr(obj, "__module__", None) or "builtins")
            else:  # e.g. a_list.append: the bound object counts
                self.text("builtin-method", obj.__name__)
                self.value(owner)
        else:
            self._function(obj)

    def _function(self, func: types.FunctionType) -> None:
        if _package(func.__module__) is not None:
            self._installed(func, func.__module__)
            if hasattr(func, "__wrapped__"):  # an installed decorator around user code
                self.value(func.__wrapped__)
            return
        code = func.__code__
        names = _global_names(code)
        self._code(code, func.__doc__)
        with self.at(f"the default values of {func.__qualname__}"):
            self.value(func.__defaults__)
            self.value(func.__kwdefaults__)
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            self.text("free", name)
            try:
                content = cell.cell_contents
            except ValueError:  # a cell not yet filled
                self.text("empty", "")
                continue
            with self.at(f"the closure variable {name!r} of {func.__qualname__}"):
                if isinstance(content, types.ModuleType):
                    self._module(content, names)
                else:
                    self.value(content)
        for name in sorted(names):
            if name in func.__globals__:
                self.text("global", name)
                with self.at(f"the global {name!r} used by {func.__qualname__}"):
                    obj = func.__globals__[name]
                    if isinstance(obj, types.ModuleType):
                        self._module(obj, names)
                    else:
                        self.value(obj)
            elif hasattr(builtins, name):
                self.text("builtin", name)
            elif isinstance(sys.modules.get(name), types.ModuleType):  # imported inside
                self._module(sys.modules[name], names)

    def _code(self, code: types.CodeType, doc: str | None) -> None:
        consts = list(code.co_consts)
        if _has_docstring(code, doc):
            consts[0] = None
        self.blob("code", code.co_code)
        self.raw("consts", len(consts))
        for c in consts:
            if isinstance(c, types.CodeType):
                self._code(c, None)
            else:
                self.value(c)
        self.text("names", " ".join(code.co_names))
        self.text("vars", " ".join((*code.co_varnames, "|", *code.co_cellvars, "|",
                                    *code.co_freevars)))
        self.text("counts", f"{code.co_argcount} {code.co_posonlyargcount} "
                            f"{code.co_kwonlyargcount} {code.co_flags}")

    def _class(self, cls: type) -> None:
        if _package(cls.__module__) is not None:
            self._installed(cls, cls.__module__)
            return
        self.text("class", cls.__qualname__)
        self.value(cls.__bases__)
        for name, member in sorted(vars(cls).items()):
            if name in _CLASS_NOISE:
                continue
            self.text("member", name)
            if isinstance(member, (types.MemberDescriptorType, types.GetSetDescriptorType)):
                continue  # __slots__ entries: their names are all there is
            with self.at(f"the class attribute {cls.__qualname__}.{name}"):
                self.value(member)

    def _module(self, module: types.ModuleType, names: frozenset[str]) -> None:
        package = _package(module.__name__, module)
        if package is not None:
            self.text("package", f"{package} {module.__name__}")
            return
        if id(module) in self._stack:
            self.text("cycle", module.__name__)
            return
        # the user's own module: what of it the code can reach by the names it uses
        self._stack.append(id(module))
        try:
            namespace = vars(module)
            for name in sorted(names & namespace.keys()):
                self.text("attribute", name)
                member = namespace[name]
                if isinstance(member, types.ModuleType):
                    self._module(member, names)
                else:
                    self.value(member)
        finally:
            self._stack.pop()

    def _installed(self, obj: Any, module: str) -> None:
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
        self.text("installed", f"{_package(module) or 'unknown'} {module}.{name}")


def _describe(obj: Any) -> str:
    kind = type(obj)
    text = repr(obj) if kind.__repr__ is not object.__repr__ else ""
    text = text if len(text) <= 60 and " at 0x" not in text else ""
    return f"the {kind.__module__}.{kind.__qualname__} object" + (f" {text}" if text else "")


def _global_names(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return frozenset(names)


def _has_docstring(code: types.CodeType, doc: str | None) -> bool:
    consts = code.co_consts
    if not consts or not isinstance(consts[0], str):
        return False
    flag = getattr(inspect, "CO_HAS_DOCSTRING", 0)  # Python >= 3.14 says so
    if flag:
        return bool(code.co_flags & flag)
    if sys.version_info < (3, 13):  # a function's first constant is its docstring or None
        return bool(code.co_flags & inspect.CO_NEWLOCALS) and code.co_name not in _COMPREHENSIONS
    return doc is not None and consts[0] == doc


def _tokenizable(obj: Any) -> bool:
    """Whether dask has a deterministic tokenizer of its own for ``obj`` (pandas, xarray)."""
    if hasattr(type(obj), "__dask_tokenize__"):
        return True
    if "dask" not in sys.modules:
        return False
    from dask.base import normalize_token

    try:
        return normalize_token.dispatch(type(obj)) is not normalize_token.dispatch(object)
    except TypeError:
        return False


@functools.cache
def _install_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs))


def _package(module: str | None, obj: types.ModuleType | None = None) -> str | None:
    """``"<name> <version>"`` when ``module`` (or the module object ``obj``) belongs to an
    installed package or the standard library, None when it is the user's own code."""
    if module is None or module == "__main__":  # a script, python -c, a notebook: the user's
        return None
    top = module.partition(".")[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return f"python {sys.version_info[0]}.{sys.version_info[1]}"
    mod = obj if obj is not None and module == top else sys.modules.get(top)
    if mod is None:
        return None
    files = tuple(f for f in (getattr(mod, "__file__", None), *getattr(mod, "__path__", []))
                  if isinstance(f, str))
    version = getattr(mod, "__version__", None)
    # keyed by what a re-import may change, so that a reloaded package is seen anew
    return _installed_package(top, files, version if isinstance(version, str) else None)


@functools.cache
def _installed_package(top: str, files: tuple[str, ...], version: str | None) -> str | None:
    paths = [os.path.realpath(f) for f in files]
    parts = {p for f in paths for p in f.split(os.sep)}
    if not paths or not ("site-packages" in parts or "dist-packages" in parts
                         or any(f.startswith(_install_dirs()) for f in paths)):
        return None
    if version is None:
        from importlib import metadata

        dists = _distributions().get(top, [])
        try:
            version = metadata.version(dists[0]) if dists else "unknown"
        except metadata.PackageNotFoundError:
            version = "unknown"
    return f"{top} {version}"


@functools.cache
def _distributions() -> Any:
    from importlib import metadata

    return metadata.packages_distributions()  # scans every installed package: once
