"""Validation of :class:`~acme_xr.ParallelMap`'s own keywords.

Pure checks of values and types (no file system, no cluster), so that every bad keyword is
reported before anything is created or started. Each error names the keyword, the bad
value, what is allowed and how to fix it.

Examples
--------
>>> opts = validate_options(n_workers=4)
>>> opts.n_workers, opts.write_worker_results
(4, True)
>>> validate_options(stop_client="sometimes")
Traceback (most recent call last):
...
acme_xr.errors.InputError: stop_client='sometimes' is not valid: give 'auto', True or False
"""

from __future__ import annotations

import importlib.util
import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.utils import parse_bytes

from .cluster import check_n_workers
from .errors import InputError, InputTypeError, StorageError
from .lease import check_cluster
from .seeds import check_seed

__all__ = ["Options", "validate_options", "STORAGES", "storage_names"]

# the storage backends of acme_xr itself (storage= accepts every registered one: see
# storage_names)
STORAGES = ("hdf5", "zarr")

# backends chosen by ACME's flags rather than by storage= (acme_xr.storage.registry.mode_of)
_FLAG_CHOSEN = {"single_file": "single_file=True", "pickle": "write_pickle=True",
                "memory": "write_worker_results=False"}


def storage_names() -> tuple[str, ...]:
    """What ``storage=`` accepts: the registered backends that write to disk (``pickle``
    and ``single_file`` are chosen by their own flags, memory by
    ``write_worker_results=False``)."""
    from .storage.registry import backend_class, names

    flags = ("pickle", "single_file", "memory")
    return tuple(n for n in names() if n not in flags and backend_class(n).on_disk)


@dataclass(frozen=True)
class Options:
    """The validated keywords of one :class:`~acme_xr.ParallelMap` (see its docstring)."""

    n_inputs: int | str = "auto"
    write_worker_results: bool = True
    cleanup_threshold_days: float | None = None
    output_dir: str | None = None
    result_shape: tuple[float | None, ...] | None = None
    result_dtype: np.dtype = np.dtype("float64")
    single_file: bool = False
    write_pickle: bool = False
    partition: str = "auto"
    n_workers: int | str | tuple[int, int] = "auto"
    mem_per_worker: str = "auto"
    setup_timeout: float = 60
    setup_interactive: bool = True
    stop_client: bool | str = "auto"
    verbose: bool | None = None
    dryrun: bool = False
    logfile: bool | str | None = None
    storage: str = "hdf5"
    retries: int = 0
    call_timeout: float | None = None
    resume: bool | str = False
    batch_size: int | str = "auto"
    seed: np.random.SeedSequence | None = None
    cluster: Any = None

    @property
    def stacking_axis(self) -> int | None:
        return None if self.result_shape is None else self.result_shape.index(None)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(
            f"{name} must be True or False, not {value!r} ({type(value).__name__})")
    return bool(value)


def _resume(value: Any) -> bool | str:
    if isinstance(value, str):
        if value == "force":
            return value
        raise InputError(
            f"resume={value!r} is not valid: give True (resume the same run), False (start a "
            "new one) or 'force' (resume even when the function or inputs differ)")
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(
            f"resume must be True, False or 'force', not {value!r} ({type(value).__name__})")
    return bool(value)


def _int(name: str, value: Any, minimum: int, allow: tuple[Any, ...] = ()) -> Any:
    """A count, checked the way ACME checks its counts (``acme.shared._scalar_parser``).

    The exception types follow ACME so that code catching them keeps working: a value
    that is not a number at all (``None``, a dict, a bool, a string the keyword does not
    take) is a TypeError; a number that is not whole or too small is a ValueError, and so
    is a wrong string for a keyword that takes a string such as ``"auto"``.
    """
    if (value is None or isinstance(value, str)) and value in allow:
        return value
    allowed = " or ".join([repr(a) for a in allow] + [f"a whole number >= {minimum}"])
    if isinstance(value, str) and any(isinstance(a, str) for a in allow):
        raise InputError(f"{name}={value!r} is not valid: give {allowed}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be {allowed}, not {value!r} ({type(value).__name__})")
    number = int(value) if isinstance(value, numbers.Integral) else float(value)
    if not np.isfinite(number) or int(number) != number or number < minimum:
        raise InputError(f"{name}={value!r} is not valid: give {allowed}")
    return int(number)


def _days(value: Any) -> float | None:
    # ACME compares the age of a directory in days with it, so fractions of days work too
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(
            f"cleanup_threshold_days must be None or a number of days >= 0, not {value!r} "
            f"({type(value).__name__})")
    days = float(value)
    if not days >= 0:  # also NaN
        raise InputError(
            f"cleanup_threshold_days={value!r} is not valid: give a number of days >= 0 "
            "(0 removes every earlier ACME_* run directory here)")
    return int(days) if days.is_integer() else days


def _writable_dir(name: str, path: str) -> None:
    """Refuse a directory that can never be created, before anything is written.

    Only looks: walks up to the nearest existing ancestor, which must be a directory this
    process may write to (ACME creates the directory at once and raises an OSError).
    """
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise StorageError(f"{name}={path!r} is a file, not a directory: give a "
                               "directory path", filename=full)
        return
    parent = os.path.dirname(full)
    while not os.path.exists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise StorageError(f"cannot create {name}={path!r}: {parent} is a file, not a "
                           "directory; give a path inside a directory", filename=full)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot create {name}={path!r}: no permission to write in "
                           f"{parent}; give a directory you may write to", filename=full)


def _seconds(name: str, value: Any, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    what = "a number of seconds > 0" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be {what}, not {value!r} ({type(value).__name__})")
    seconds = float(value)
    if not seconds > 0 or not np.isfinite(seconds):
        raise InputError(f"{name}={value} is not valid: give {what}")
    return seconds


def _result_shape(value: Any, write_worker_results: bool) -> tuple[float | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)):
        raise InputTypeError(
            f"result_shape must be None or a tuple such as (None, 100), not {value!r} "
            f"({type(value).__name__})"
        )
    if sum(v is None for v in value) != 1:
        raise InputError(
            f"result_shape={tuple(value)} must contain exactly one None, which marks the axis "
            "along which the calls are stacked, e.g. (None, 100)"
        )
    out: list[float | None] = []
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, (float, np.floating)) and np.isinf(v) and v > 0:
            out.append(np.inf)
        elif isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0:
            out.append(int(v))
        else:
            raise InputError(
                f"result_shape={tuple(value)} holds {v!r}: entries must be whole numbers >= 0, "
                "one None (the stacking axis) and at most one np.inf (any length)"
            )
    if sum(1 for v in out if v is not None and np.isinf(v)) > 1:
        raise InputError(f"result_shape={tuple(value)} holds more than one np.inf; use at most one")
    if not write_worker_results and any(v is not None and np.isinf(v) for v in out):
        raise InputError(
            f"result_shape={tuple(value)}: np.inf (any length) needs write_worker_results=True; "
            "in memory the stacked array needs fixed sizes"
        )
    return tuple(out)


def validate_options(**kw: Any) -> Options:
    """Check ParallelMap's own keywords; return them as an :class:`Options`.

    Raises
    ------
    InputTypeError
        A keyword has the wrong type.
    InputError
        A keyword has a bad value or contradicts another.
    """
    o = Options()
    values = {**o.__dict__, **kw}
    unknown = set(kw) - set(o.__dict__)
    if unknown:  # programming error inside acme_xr, not the user's
        raise TypeError(f"unknown options {sorted(unknown)}")

    for name in ("write_worker_results", "single_file", "write_pickle", "setup_interactive",
                 "dryrun"):
        values[name] = _bool(name, values[name])
    if values["verbose"] is not None:
        values["verbose"] = _bool("verbose", values["verbose"])
    if values["stop_client"] != "auto" or not isinstance(values["stop_client"], str):
        if isinstance(values["stop_client"], str):
            raise InputError(
                f"stop_client={values['stop_client']!r} is not valid: give 'auto', True or False"
            )
        values["stop_client"] = _bool("stop_client", values["stop_client"])
    values["resume"] = _resume(values["resume"])
    values["n_inputs"] = _int("n_inputs", values["n_inputs"], 1, allow=("auto",))
    values["cleanup_threshold_days"] = _days(values["cleanup_threshold_days"])
    # a (minimum, maximum) pair: adaptive workers; cluster: a kind, Client or Cluster
    values["n_workers"] = (check_n_workers(values["n_workers"])
                           if isinstance(values["n_workers"], (tuple, list)) else
                           _int("n_workers", values["n_workers"], 1, allow=("auto",)))
    values["cluster"] = check_cluster(values["cluster"])
    values["batch_size"] = _int("batch_size", values["batch_size"], 1, allow=("auto",))
    values["retries"] = _int("retries", values["retries"], 0)
    values["call_timeout"] = _seconds("call_timeout", values["call_timeout"], allow_none=True)
    values["seed"] = check_seed(values["seed"])
    st = values["setup_timeout"]
    if isinstance(st, (bool, np.bool_)) or not isinstance(st, numbers.Real):
        raise InputTypeError(
            f"setup_timeout must be a number of seconds >= 0, not {st!r} ({type(st).__name__})")
    if not float(st) >= 0:  # also NaN
        raise InputError(f"setup_timeout={st!r} is not valid: give a number of seconds >= 0")

    od = values["output_dir"]
    if od is not None:
        if not isinstance(od, (str, os.PathLike)) or not str(od).strip():
            raise InputTypeError(
                f"output_dir must be None or a directory path, not {od!r} ({type(od).__name__})"
            )
        values["output_dir"] = os.fspath(od)
        _writable_dir("output_dir", values["output_dir"])
    lf = values["logfile"]
    if lf is not None and not isinstance(lf, (bool, str, os.PathLike)):
        raise InputTypeError(
            f"logfile must be None, True, False or a file name, not {lf!r} ({type(lf).__name__})"
        )
    if isinstance(lf, os.PathLike):
        values["logfile"] = os.fspath(lf)
    if isinstance(values["logfile"], str) and os.path.isdir(
            os.path.expanduser(values["logfile"])):
        raise StorageError(f"logfile={values['logfile']!r} is a directory: give a file name",
                           filename=values["logfile"])

    if not isinstance(values["partition"], str):
        raise InputTypeError(
            f"partition must be 'auto' or the name of a SLURM partition, not "
            f"{values['partition']!r} ({type(values['partition']).__name__})"
        )
    if not values["partition"].strip():
        raise InputError("partition='' is not valid: give 'auto' (no SLURM) or the name of a "
                         "SLURM partition")
    mem = values["mem_per_worker"]
    if not isinstance(mem, str):
        raise InputTypeError(
            f"mem_per_worker must be 'auto' or a memory size such as '4GB', not {mem!r} "
            f"({type(mem).__name__})"
        )
    if mem != "auto":
        try:
            parse_bytes(mem)
        except ValueError as exc:
            raise InputError(
                f"mem_per_worker={mem!r} is not a memory size: write e.g. '4GB' or '500MiB'"
            ) from exc

    values["result_shape"] = _result_shape(values["result_shape"], values["write_worker_results"])
    try:
        values["result_dtype"] = np.dtype(values["result_dtype"])
    except (TypeError, ValueError) as exc:  # ValueError: e.g. ("f8", -1)
        raise InputTypeError(
            f"result_dtype={values['result_dtype']!r} is not a NumPy dtype: write e.g. 'float', "
            "'float32' or 'int64'"
        ) from exc

    # every backend registered (acme_xr.storage.registry) that keeps results on disk
    on_disk = storage_names()
    if values["storage"] not in on_disk:
        # ACME's flags choose three backends: a name of one of them says which flag
        flag = _FLAG_CHOSEN.get(values["storage"]) if isinstance(values["storage"], str) else None
        raise InputError(
            f"storage={values['storage']!r} is not valid: give one of "
            f"{', '.join(map(repr, on_disk))}"
            + (f"; that mode is chosen with {flag}, leaving storage= at its default"
               if flag else "")
        )
    if values["storage"] == "zarr" and importlib.util.find_spec("zarr") is None:
        raise InputError(
            "storage='zarr' needs the zarr package: pip install 'acme_xr[zarr]' (or zarr>=3.1)"
        )
    if values["write_pickle"] and values["single_file"]:
        raise InputError(
            "write_pickle=True and single_file=True exclude each other: pickles are one file "
            "per call; drop one of them"
        )
    if values["storage"] != "hdf5" and (values["write_pickle"] or values["single_file"]):
        what = "one store" if values["storage"] == "zarr" else "its own layout"
        raise InputError(
            f"storage={values['storage']!r} already writes {what}: drop "
            "write_pickle/single_file"
        )
    if values["resume"] and values["output_dir"] is None:
        raise InputError(
            f"resume={values['resume']!r} needs output_dir=<the run directory to resume>")
    if values["resume"] and not values["write_worker_results"]:
        raise InputError(f"resume={values['resume']!r} needs write_worker_results=True: only "
                         "written calls persist")
    return Options(**values)
