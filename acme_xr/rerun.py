"""The run's own call, kept with it so that ``acme-xr resume DIR`` can finish it.

When a run starts, its function, its arguments (as the calls receive them, after any edit
of ACME's ``pmap.argv``) and the options that shape its results are pickled into
``<output_dir>/acme_xr_call.pkl`` with :func:`acme_xr.shipping.dumps`: cloudpickle (a
script's own function travels by value), dask's serializers where cloudpickle fails. So
whatever a worker could receive can be stored, up to ``acme_xr.resume.max-recorded-size``
(default 1GB: inputs bigger than that are not stored twice). A resume leaves the file as it
is.

What cannot be pickled is not stored (logged): the run goes on, and ``acme-xr resume``
then says to resume from the script. Options that name this process's objects (a running
``Client`` as ``cluster=``, a log file) are not stored: a resume starts its own cluster.

Examples
--------
>>> import tempfile
>>> from acme_xr import ParallelMap
>>> pmap = ParallelMap(abs, [-1, -2], verbose=False)
>>> d = tempfile.mkdtemp()
>>> record_call(d, pmap)
True
>>> call = load_call(d)
>>> call.func is abs, call.args, call.options["n_inputs"]
(True, ([-1, -2],), 2)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes, parse_bytes

from . import config
from .errors import InputError, ResultsLayoutError

if TYPE_CHECKING:
    from .map import ParallelMap

__all__ = ["CALL_NAME", "RecordedCall", "record_call", "load_call"]

log = logging.getLogger(__name__)

CALL_NAME = "acme_xr_call.pkl"
# the options that decide what a run computes and stores, and where it runs
_KEPT = ("write_worker_results", "result_shape", "result_dtype", "single_file",
         "write_pickle", "partition", "n_workers", "mem_per_worker", "setup_timeout",
         "storage", "retries", "call_timeout", "batch_size", "seed")


@dataclass
class RecordedCall:
    """A run's function, arguments and options, as :func:`record_call` stored them.

    ``ParallelMap(call.func, *call.args, **call.kwargs, **call.options)`` is the run again.
    """

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]


def record_call(output_dir: str, pmap: ParallelMap) -> bool:
    """Store ``pmap``'s call in ``output_dir`` unless one is there; False when it could not be
    pickled (logged; nothing is written)."""
    from .shipping import dumps

    path = os.path.join(output_dir, CALL_NAME)
    if os.path.exists(path):
        return True
    o = pmap.options
    options = {k: getattr(o, k) for k in _KEPT}
    options["result_dtype"] = o.result_dtype.str
    options["n_inputs"] = pmap.n_inputs
    if isinstance(o.cluster, str):
        options["cluster"] = o.cluster
    plan = pmap.plan
    call = RecordedCall(plan.func, tuple(a.value for a in plan.args),
                        {k: a.value for k, a in plan.kwargs.items()}, options)
    try:
        blob = dumps(call)
    except Exception as exc:  # any pickling failure: the run itself must go on
        log.warning("the function and inputs of this run could not be stored with it "
                    "(%s: %s): `acme-xr resume` cannot finish it; resume it from your script "
                    "with resume=True", type(exc).__name__, exc)
        return False
    from .storage.atomic import atomic_path

    limit = parse_bytes(config.get("resume.max-recorded-size"))
    if len(blob) > limit:
        log.warning("the function and inputs of this run pickle to %s, more than "
                    "acme_xr.resume.max-recorded-size (%s): not stored with the run; resume it "
                    "from your script with resume=True", format_bytes(len(blob)),
                    format_bytes(limit))
        return False
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(blob)
    except OSError as exc:  # the run's own files say what a full disk means
        log.warning("cannot store this run's function and inputs in %s: %s", path, exc)
        return False
    return True


def load_call(run_dir: str) -> RecordedCall:
    """The call stored with the run in ``run_dir``.

    Raises
    ------
    InputError
        The run has none (started before acme_xr stored it, or its function or inputs could
        not be pickled), or it cannot be unpickled here (e.g. a module it needs is missing).
    """
    path = os.path.join(run_dir, CALL_NAME)
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise InputError(
            f"{run_dir} has no recorded function and inputs ({CALL_NAME}): it was started by "
            "ACME or an older acme_xr, or its function could not be pickled. Resume it from "
            "your script: ParallelMap(..., output_dir=..., resume=True)") from None
    except OSError as exc:
        raise ResultsLayoutError(f"cannot read {path}: {exc}") from exc
    try:
        call = pickle.loads(blob)
    except Exception as exc:  # unpickling runs arbitrary code: any failure is the same story
        raise InputError(
            f"cannot load the recorded function and inputs of {run_dir} ({type(exc).__name__}: "
            f"{exc}): install what they need here (e.g. the module the function lives in), "
            "or resume from your script with resume=True") from exc
    if not isinstance(call, RecordedCall):
        raise InputError(f"{path} holds no recorded acme_xr call ({type(call).__name__})")
    return dataclasses.replace(call, args=tuple(call.args), kwargs=dict(call.kwargs))
