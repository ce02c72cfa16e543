"""Catch a script that runs ParallelMap without ``if __name__ == "__main__":``.

acme_xr's local cluster starts its workers with multiprocessing's "spawn": each worker
process begins by importing the main script again, under the name ``__mp_main__``. Code at
the script's module level that is not under ``if __name__ == "__main__":`` then runs once
more in every worker: its ParallelMap starts another run (another directory, another
cluster) and the worker never comes up (dask's ``RuntimeError: Nanny failed to start``).

:func:`check_main_guard` finds that mistake in the user's process, before any directory or
cluster exists, by reading the script with :mod:`ast`; and in a worker's import of the
script it stops the ParallelMap at once.

Examples
--------
>>> check_main_guard(lambda: True)  # called from a function, not from a script's top level
>>> _guarded_lines("if __name__ == '__main__':\\n    run()\\nrun()\\n")
[(2, 2)]
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from types import FrameType

from .errors import MainGuardError

__all__ = ["check_main_guard"]

_FIX = (
    "Put the code that runs it under the guard, e.g.\n\n"
    "    if __name__ == \"__main__\":\n"
    "        with ParallelMap(f, ...) as pmap:\n"
    "            pmap.compute()\n"
)

# (path, mtime, size) -> guarded line ranges; a script is parsed once per process
_CACHE: dict[tuple[str, float, int], list[tuple[int, int]]] = {}


def check_main_guard(starts_processes: Callable[[], bool], what: str = "a ParallelMap") -> None:
    """Raise :class:`~acme_xr.errors.MainGuardError` for an unguarded ParallelMap in a script.

    Parameters
    ----------
    starts_processes : callable
        Returns True when this run would start local worker processes (no running dask
        client, no SLURM partition, not ``debug``). Only asked once an unguarded call
        was found: it may import distributed.
    what : str
        What the caller runs, for the message.

    Raises
    ------
    MainGuardError
        * in a worker's import of the main script (module ``__mp_main__``): always, since
          that code is the script's own run repeating itself;
        * in the user's process: when the call comes from the main script's module-level
          code outside ``if __name__ == "__main__":`` and ``starts_processes()`` is True.

    Notes
    -----
    Without a script file (``python -c``, an interactive session, Jupyter) nothing is
    raised: multiprocessing then does not import the main module in its workers.
    """
    frame: FrameType | None = sys._getframe(1)
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            if name == "__mp_main__":
                raise MainGuardError(
                    f"{_describe(code.co_filename, frame.f_lineno)} runs {what} while a "
                    "worker process imports the script (as __mp_main__): the script's "
                    "module-level code is not under `if __name__ == \"__main__\":`, so every "
                    "worker would start the run again. Nothing was created here. " + _FIX
                )
            if (name == "__main__" and main_file is not None
                    and _same_file(code.co_filename, main_file)):
                line = frame.f_lineno
                guarded = _guarded_ranges(code.co_filename)
                if guarded is not None and not any(a <= line <= b for a, b in guarded):
                    if starts_processes() and _workers_import_main():
                        raise MainGuardError(
                            f"{_describe(code.co_filename, line)} runs {what} at the "
                            "script's module level, outside `if __name__ == \"__main__\":`. "
                            "acme_xr's worker processes import the script again and each "
                            "would run it once more, so none of them could start. "
                            "Nothing was created or started. " + _FIX
                            + ("\n(compute(debug=True) runs the calls here without workers.)"
                               if what == "a ParallelMap" else "")
                        )
                return
        frame = frame.f_back


def _workers_import_main() -> bool:
    """Whether dask starts local workers in a way that imports the main script ("spawn",
    its default, and "forkserver"); a "fork"ed worker inherits it instead."""
    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    return str(method) != "fork"


def _describe(path: str, line: int | None) -> str:
    import linecache

    text = linecache.getline(path, line or 0).strip()
    return f"{path}, line {line}" + (f" ({text})" if text else "")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _guarded_ranges(path: str) -> list[tuple[int, int]] | None:
    """Line ranges of ``path`` under ``if __name__ == "__main__":``; None when the file
    cannot be read or parsed (then no guess is made)."""
    try:
        st = os.stat(path)
        key = (path, st.st_mtime, st.st_size)
        if key not in _CACHE:
            with open(path, "rb") as fh:
                _CACHE[key] = _guarded_lines(fh.read())
        return _CACHE[key]
    except (OSError, SyntaxError, ValueError):
        return None


def _guarded_lines(source: str | bytes) -> list[tuple[int, int]]:
    """(first, last) lines of every block that a worker's import of the script skips.

    A worker imports the script as ``__mp_main__``: a block of an ``if`` whose test is
    then false (``__name__ == "__main__"``, ``... and more``, ``__name__ in (...)``) is
    guarded, and so is the ``else`` of a test that is then true. A test whose worth
    cannot be told from the source alone counts as a guard too: a false alarm would stop
    a script that works.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If):
            in_worker = _in_worker(node.test)
            if not _mentions_name(node.test):
                continue
            for body, skipped in ((node.body, in_worker is not True),
                                  (node.orelse, in_worker is not False)):
                if body and skipped:
                    out.append((body[0].lineno, body[-1].end_lineno or body[-1].lineno))
    return out


def _mentions_name(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(test))


_WORKER_NAME = "__mp_main__"


def _in_worker(test: ast.expr) -> bool | None:
    """The truth of ``test`` in a worker's import of the script (``__name__`` is
    ``"__mp_main__"``), or None when the source alone does not tell."""
    if isinstance(test, ast.BoolOp):
        values = [_in_worker(v) for v in test.values]
        if isinstance(test.op, ast.And):
            return False if False in values else (True if all(values) else None)
        return True if True in values else (False if all(v is False for v in values) else None)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _in_worker(test.operand)
        return None if inner is None else not inner
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = _operand(test.left), _operand(test.comparators[0])
        if left is None or right is None:
            return None
        op = test.ops[0]
        try:
            if isinstance(op, ast.Eq):
                return bool(left == right)
            if isinstance(op, ast.NotEq):
                return bool(left != right)
            if isinstance(op, ast.In):
                return left in right  # type: ignore[operator]
            if isinstance(op, ast.NotIn):
                return left not in right  # type: ignore[operator]
        except TypeError:
            return None
    return None


def _operand(node: ast.expr) -> object | None:
    """The value of ``__name__`` in a worker, a constant, or a tuple/list/set of them."""
    if isinstance(node, ast.Name) and node.id == "__name__":
        return _WORKER_NAME
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_operand(e) for e in node.elts]
        return None if any(i is None for i in items) else tuple(items)
    return None
