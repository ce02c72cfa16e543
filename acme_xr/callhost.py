"""Run calls in a child process that can be killed: how ``call_timeout`` stops a call.

A thread cannot be stopped from outside, and a dask worker process is daemonic, so it may
not start :mod:`multiprocessing` children. With ``call_timeout`` set, each worker thread
therefore runs its calls in a child started with :mod:`subprocess` (``python -c`` importing
:func:`main` below). The child receives the :class:`~acme_xr.worker.Runner` once, then one
request per call on its stdin and answers each on its stdout (length-prefixed pickles); it
runs the function *and* writes the payload, so results never cross the pipe in disk mode.

A call that does not answer in time -- whether it loops in Python or sleeps in C code -- is
ended with SIGKILL, together with anything it started (the child leads its own process
group), and the next call gets a fresh child. A child that dies on its own (segfault, out
of memory) fails only the call it was running. The child dies with its worker: Linux's
``PR_SET_PDEATHSIG`` plus a watchdog thread that notices when its parent is gone.

Examples
--------
>>> from acme_xr.inputs import distribute
>>> from acme_xr.worker import Runner, WriteSpec
>>> def nap(seconds):
...     import time
...     time.sleep(seconds)
...     return seconds
>>> plan = distribute(nap, ([0.0, 60.0],), {})
>>> runner = Runner.from_plan(plan, WriteSpec("memory"), call_timeout=0.5)
>>> out = runner.run([0, 1], [(0.0,), (60.0,)])     # the second call is stopped after 0.5 s
>>> out.status, out.errors[1]["type"]
([1, 2], 'acme_xr.errors.CallTimeoutError')
>>> runner.close_children()
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from . import config
from .capture import installed
from .errors import CallCrashedError, CallTimeoutError, InputTypeError
from .shipping import dumps, ships

__all__ = ["CallHost", "HostPool", "close_pools", "close_pools_soon", "main"]

_HEADER = struct.Struct("!Q")
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from acme_xr.callhost import main; main(int(sys.argv[2]))")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every live pool of this process, so that a run can close its children explicitly
_POOLS: weakref.WeakValueDictionary[str, HostPool] = weakref.WeakValueDictionary()


class _CrashedError(Exception):
    """The child closed its end of the pipe: it exited or was killed."""


def _send(fd: int, obj: Any) -> None:
    _send_bytes(fd, dumps(obj))  # as the worker got it: dask's serializers where pickle fails


def _send_bytes(fd: int, data: bytes) -> None:
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, sel: selectors.BaseSelector | None,
                deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if sel is not None and deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError
        chunk = os.read(fd, min(n - len(buf), 1 << 22))
        if not chunk:
            raise _CrashedError
        buf += chunk
    return bytes(buf)


def _recv(fd: int, sel: selectors.BaseSelector | None = None, deadline: float | None = None) -> Any:
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, sel, deadline))
    return pickle.loads(_read_exact(fd, n, sel, deadline))


def _unshippable(what: str, exc: BaseException) -> InputTypeError:
    return InputTypeError(
        f"{what} cannot be sent to the process that runs calls under call_timeout: "
        f"{type(exc).__name__}: {exc}. Pass something that can be pickled (for an open "
        "file, its name) and open it inside the function, or run without call_timeout"
    )


def _whole_culprit(runner: Any) -> str:
    """Name the first of the runner's values that cannot be sent to a child."""
    try:
        names = list(inspect.signature(runner.func).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        names = []
    for p, (split, value) in enumerate(runner.positional):
        if not split and not ships(value):
            name = repr(names[p]) if p < len(names) else f"#{p}"
            return f"argument {name} ({type(value).__name__})"
    for name, (split, value) in runner.keyword.items():
        if not split and not ships(value):
            return f"argument {name!r} ({type(value).__name__})"
    return f"the function {getattr(runner.func, '__qualname__', runner.func)!r}"


class CallHost:
    """One child process that runs calls for one worker thread (parent side)."""

    def __init__(self, runner_blob: bytes) -> None:
        self.blob = runner_blob
        self.proc: subprocess.Popen[bytes] | None = None
        self.sel: selectors.BaseSelector | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, _PACKAGE_PARENT, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
            start_new_session=True,  # own process group: a kill takes its children too
        )
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
        try:
            _send(proc.stdin.fileno(), ("init", list(sys.path), self.blob))
            deadline = time.monotonic() + config.get_seconds("call-host.start-timeout")
            _recv(proc.stdout.fileno(), self.sel, deadline)
        except (OSError, TimeoutError, _CrashedError) as exc:
            code = self.kill()
            raise CallCrashedError(
                f"the process that runs calls under call_timeout did not start "
                f"(exit code {code}); see the worker's log for its error output"
            ) from exc

    def call(self, i: int, split: Any, timeout: float, attempt: int) -> tuple[Any, ...]:
        """Run call ``i`` in the child; return ``(Attempt, templates, warnings)``."""
        from .worker import Attempt

        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            try:
                self.start()
            except CallCrashedError as exc:  # this call fails (and may be retried)
                return Attempt.failed(exc, 0.0), {}, []
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        t0 = time.perf_counter()
        failure: Exception
        try:
            request = dumps(("call", i, split))
        except Exception as exc:  # nothing was sent: the child waits for the next call
            return Attempt.failed(_unshippable(f"a value of call {i}", exc), 0.0), {}, []
        try:
            _send_bytes(self.proc.stdin.fileno(), request)
            return _recv(self.proc.stdout.fileno(), self.sel, time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            failure = CallTimeoutError(
                f"call {i} ran longer than call_timeout={timeout:g} s and was stopped "
                f"(attempt {attempt})"
            )
        except (_CrashedError, OSError):
            code = self.kill()
            how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exited with code {code}")
            failure = CallCrashedError(
                f"the process running call {i} {how} (attempt {attempt}): the call crashed "
                "it (segfault, os._exit, out of memory?)"
            )
        return Attempt.failed(failure, time.perf_counter() - t0), {}, []

    def kill(self) -> int | None:
        """End the child and everything it started; return its exit code."""
        proc, self.proc = self.proc, None
        if self.sel is not None:
            self.sel.close()
            self.sel = None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        return code

    def close(self) -> None:
        """Let an idle child exit on its own (end of input); kill it if it does not."""
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        self.kill()


class HostPool:
    """The children of one runner on one worker process: one per worker thread."""

    def __init__(self, runner: Any) -> None:
        self.blob = b""
        self.error: Exception | None = None
        try:
            self.blob = dumps(runner)
        except Exception as exc:  # every call of the run fails with this, clearly
            self.error = _unshippable(_whole_culprit(runner), exc)
        self.timeout = float(runner.call_timeout)
        self.hosts: dict[int, CallHost] = {}
        self.lock = threading.Lock()
        self.token = runner.token

    @classmethod
    def for_runner(cls, runner: Any) -> HostPool:
        pool = cls(runner)
        _POOLS[runner.token] = pool
        # the children go when the worker drops the runner at the end of the run
        weakref.finalize(runner, pool.close)
        return pool

    def call(self, i: int, split: Any, attempt: int, out: Any) -> Any:
        if self.error is not None:
            from .worker import Attempt

            return Attempt.failed(self.error, 0.0)
        me = threading.get_ident()
        with self.lock:
            host = self.hosts.get(me)
            if host is None:
                host = self.hosts[me] = CallHost(self.blob)
        a, templates, warnings = host.call(i, split, self.timeout, attempt)
        out.templates.update(templates)
        out.warnings.extend(warnings)
        return a

    def pids(self) -> list[int]:
        with self.lock:
            return [h.pid for h in self.hosts.values() if h.pid is not None]

    def close(self) -> None:
        with self.lock:
            hosts, self.hosts = list(self.hosts.values()), {}
        for h in hosts:
            h.close()


def close_pools(token: str | None = None) -> int:
    """Close the children of the run ``token`` (all runs: None) in this process.

    Run on every worker through ``client.run`` at the end of a run. Returns how many
    pools were closed.
    """
    pools = [p for t, p in list(_POOLS.items()) if token is None or t == token]
    for p in pools:
        p.close()
    return len(pools)


async def close_pools_soon(token: str | None = None) -> None:
    """:func:`close_pools` off the worker's event loop; a coroutine, so that the client can
    ask for it without waiting (``client.run(..., wait=False)``)."""
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, close_pools, token)


# -- the child ---------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: dies with the parent thread
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="acme_xr-parent-watch", daemon=True).start()


def main(parent: int) -> None:
    """Serve calls for the worker process ``parent`` until it closes our stdin."""

    # the protocol owns the original stdin/stdout; the user's prints go to stderr
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    _die_with_parent(parent)
    try:
        kind, path, blob = _recv(rfd)
    except _CrashedError:
        return
    sys.path[:] = path
    runner = pickle.loads(blob)
    _send(wfd, ("ready", os.getpid()))
    with installed():  # each call's prints and warnings go back with its Attempt
        _serve(runner, rfd, wfd)


def _serve(runner: Any, rfd: int, wfd: int) -> None:
    from .worker import Attempt, BatchResult, error_record

    while True:
        try:
            kind, i, split = _recv(rfd)
        except _CrashedError:
            return
        out = BatchResult([i])
        a = runner.attempt(i, split, out)
        try:
            _send(wfd, (a, out.templates, out.warnings))
        except Exception as exc:  # a return value that cannot be pickled back
            a = Attempt(False, a.seconds, error=error_record(exc))
            _send(wfd, (a, {}, []))
