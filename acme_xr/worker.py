"""What runs on a dask worker: call the user function for a batch of calls, write each
call's payload atomically, and hand back a small columnar :class:`BatchResult`.

In disk mode the arrays never travel back to the client: only status, shapes, dtypes,
durations and error texts do. A call whose payload already exists (the batch ran before on
a worker that died, or the run is resumed) is not run again.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> plan = distribute(lambda x: 2 * x, ([1, 2, 3],), {})
>>> runner = Runner.from_plan(plan, WriteSpec(mode="memory"))
>>> runner.run([0, 2], split_values_for(plan, [0, 2])).values
[2, 6]
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ResultShapeError
from .inputs import CallPlan
from .manifest import var_meta
from .storage import hdf5, pickled
from .storage.values import NotStorable, Variable, to_variables

__all__ = ["WriteSpec", "Runner", "BatchResult", "run_batch", "split_values_for"]

_MAX_TRACEBACK = 16_000

OK, FAILED = 1, 2


@dataclass(frozen=True)
class WriteSpec:
    """Where and how a call's results are kept.

    Parameters
    ----------
    mode : {"hdf5", "pickle", "memory"}
        One HDF5 payload per call, one pickle per call, or return values sent back.
    directory : str, optional
        Absolute directory of the payload files.
    stem : str
        File name stem, the function's name: payload ``i`` is ``<stem>_<i>.h5``.
    result_shape : tuple, optional
        ACME's ``result_shape`` (``None`` marks the stacking axis, ``np.inf`` any length);
        ``result_0`` of every call must fit it.
    """

    mode: str
    directory: str | None = None
    stem: str = "result"
    result_shape: tuple[float | None, ...] | None = None

    def payload(self, i: int, ext: str = "h5") -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{self.stem}_{i}.{ext}")


@dataclass
class BatchResult:
    """Outcome of a batch, column-wise (one entry per call in ``indices``)."""

    indices: list[int]
    status: list[int] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    fmt: list[str | None] = field(default_factory=list)
    meta: list[Any] = field(default_factory=list)
    values: list[Any] | None = None
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    host: str = ""
    elapsed: float = 0.0


def _error_record(exc: BaseException, attempts: int) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > _MAX_TRACEBACK:
        tb = tb[: _MAX_TRACEBACK // 2] + "\n[...]\n" + tb[-_MAX_TRACEBACK // 2 :]
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "message": str(exc),
        "traceback": tb,
        "attempts": attempts,
    }


def _check_shape(spec: tuple[float | None, ...], variables: Sequence[Variable]) -> None:
    expected = [s for s in spec if s is not None]
    first = variables[0].data.shape
    fits = len(first) == len(expected) and all(
        np.isinf(e) or int(e) == n for e, n in zip(expected, first)
    )
    if not fits:
        want = tuple("any" if np.isinf(e) else int(e) for e in expected)
        raise ResultShapeError(
            f"result_0 has shape {first}, but result_shape={spec} asks for {want} per call; "
            "return arrays of that shape or change result_shape"
        )


def _describe(variables: Sequence[Variable], templates: dict[str, dict[str, Any]]) -> tuple:
    return tuple(
        var_meta(v.name, v.data.shape, v.data.dtype, v.dims, v.attrs,
                 v.coords if v.labelled else None, templates)
        for v in variables
    )


@dataclass
class Runner:
    """The user function plus everything every call shares; shipped once per worker.

    ``positional``/``keyword`` hold ``(True, k)`` for the ``k``-th split argument and
    ``(False, value)`` for a value that every call gets whole.
    """

    func: Callable[..., Any]
    positional: list[tuple[bool, Any]]
    keyword: dict[str, tuple[bool, Any]]
    task_id: bool
    spec: WriteSpec
    retries: int = 0
    # debug mode: let the user's exception propagate instead of recording it
    reraise: bool = False

    @classmethod
    def from_plan(cls, plan: CallPlan, spec: WriteSpec, retries: int = 0) -> Runner:
        order = {id(a): k for k, a in enumerate(plan.split_arguments)}

        def slot(a: Any) -> tuple[bool, Any]:
            return (True, order[id(a)]) if a.split else (False, a.value)

        return cls(
            func=plan.func,
            positional=[slot(a) for a in plan.args],
            keyword={k: slot(a) for k, a in plan.kwargs.items()},
            task_id=plan.task_id,
            spec=spec,
            retries=retries,
        )

    def arguments(self, i: int, split: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(split[v] if s else v for s, v in self.positional)
        kwargs = {k: (split[v] if s else v) for k, (s, v) in self.keyword.items()}
        if self.task_id:
            kwargs["taskID"] = i
        return args, kwargs

    def existing(self, i: int) -> tuple[str, Any] | None:
        """(format, meta) of a payload call ``i`` already has on disk, else ``None``."""
        spec = self.spec
        if spec.mode not in ("hdf5", "pickle"):
            return None
        h5 = spec.payload(i, "h5")
        if spec.mode == "hdf5" and os.path.exists(h5):
            try:
                described = hdf5.describe_payload(h5)
            except OSError:
                return None  # unreadable: run the call again, the new file replaces it
            return "h5", tuple((n, s, d, dims, None, None) for n, s, d, dims in described)
        if os.path.exists(spec.payload(i, "pickle")):
            return "pickle", None
        return None

    def store(self, i: int, result: Any, out: BatchResult) -> tuple[str | None, Any]:
        """Write call ``i``'s result; return (format, meta)."""
        spec = self.spec
        if spec.mode == "memory":
            if spec.result_shape is not None:
                _check_shape(spec.result_shape, to_variables(result))
            return "memory", None
        if spec.mode == "pickle":
            pickled.write_pickle(spec.payload(i, "pickle"), result)
            return "pickle", None
        try:
            variables = to_variables(result)
            if spec.result_shape is not None:
                _check_shape(spec.result_shape, variables)
            hdf5.write_payload(spec.payload(i, "h5"), variables)
            return "h5", _describe(variables, out.templates)
        except (NotStorable, TypeError) as exc:
            pickled.write_pickle(spec.payload(i, "pickle"), result)
            out.warnings.append(f"call {i}: {exc}")
            return "pickle", None

    def run(self, indices: Sequence[int], split_values: Sequence[Sequence[Any]]) -> BatchResult:
        """Run the calls ``indices`` (with their split argument values)."""
        t_batch = time.perf_counter()
        out = BatchResult(indices=list(indices), host=_host())
        memory = self.spec.mode == "memory"
        if memory:
            out.values = []
        for i, split in zip(indices, split_values):
            found = None if memory else self.existing(i)
            if found is not None:
                out.status.append(OK)
                out.duration.append(float("nan"))
                out.attempts.append(0)
                out.fmt.append(found[0])
                out.meta.append(found[1])
                continue
            args, kwargs = self.arguments(i, split)
            attempt = 0
            while True:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    result = self.func(*args, **kwargs)
                    fmt, meta = self.store(i, result, out)
                except Exception as exc:  # the user's error is data, recorded per call
                    if self.reraise:
                        raise
                    if attempt <= self.retries:
                        continue
                    out.status.append(FAILED)
                    out.duration.append(time.perf_counter() - t0)
                    out.attempts.append(attempt)
                    out.fmt.append(None)
                    out.meta.append(None)
                    out.errors[i] = _error_record(exc, attempt)
                    if memory:
                        out.values.append(None)  # type: ignore[union-attr]
                    break
                out.status.append(OK)
                out.duration.append(time.perf_counter() - t0)
                out.attempts.append(attempt)
                out.fmt.append(fmt)
                out.meta.append(meta)
                if memory:
                    out.values.append(result)  # type: ignore[union-attr]
                break
        out.elapsed = time.perf_counter() - t_batch
        return out


def _host() -> str:
    name = socket.gethostname()
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return f"{name}/{get_worker().name}"
        except ValueError:
            pass
    return name


def run_batch(runner: Runner, indices: list[int], split_values: list[tuple[Any, ...]]) -> BatchResult:
    """The dask task: run a batch on this worker (module-level, so it pickles by name)."""
    return runner.run(indices, split_values)


def split_values_for(plan: CallPlan, indices: Sequence[int]) -> list[tuple[Any, ...]]:
    """Per-call values of the split arguments, in ``plan.split_arguments`` order."""
    split = plan.split_arguments
    return [tuple(a.at(i) for a in split) for i in indices]
