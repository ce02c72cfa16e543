"""Capture what the user function prints and warns, call by call, for the run's log.

While a batch runs, ``sys.stdout`` and ``sys.stderr`` are wrapped by a tee that passes every
write on to the stream it wraps (so the output still reaches the terminal, or the worker
job's log) and, when the writing thread is inside a :class:`CallOutput` block, also keeps
it for that call; ``warnings.showwarning`` is wrapped the same way. Installing is counted
(:func:`installed`): the first batch of a process installs, the last one to end restores.
Per call this costs one small object and two thread-local assignments, no thread and no
file; output from other threads (dask's own) is passed on untouched.

Only Python-level output is seen: what C code or a subprocess writes to the file
descriptors directly is not captured. A warning repeated at the same place is shown (and
captured) as Python's warning filters say: by default once per process.

Examples
--------
>>> import warnings
>>> with installed():
...     with CallOutput() as out:
...         print("hello")
...         warnings.warn("careful")
hello
>>> [(stream, text.strip()) for stream, text in out.parts][0]
('stdout', 'hello')
>>> out.parts[-1][0], "UserWarning: careful" in out.parts[-1][1]
('warning', True)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["CallOutput", "installed", "Output", "MAX_OUTPUT"]

# characters of one call's output kept for the run's log (the terminal sees all of it)
MAX_OUTPUT = 100_000

# (stream, text) pieces: stream is "stdout", "stderr" or "warning"
Output = list[tuple[str, str]]

_state = threading.local()
_lock = threading.Lock()
_users = 0
_saved: tuple[Any, Any, Any] | None = None


class _Tee:
    """A text stream that writes through to ``stream`` and keeps a copy for the call that
    the writing thread runs (if any)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        parts = getattr(_state, "parts", None)
        if parts is not None and text:
            parts.append((self._name, text))
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer, ...
        return getattr(self._stream, name)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    parts = getattr(_state, "parts", None)
    # called after the last batch ended (a caller kept this hook, e.g. logging's
    # captureWarnings): Python's own
    original = _saved[2] if _saved is not None else getattr(
        warnings, "_showwarning_orig", warnings.showwarning)
    if original is _show_warning:  # never ourselves
        original = _print_warning
    if parts is not None:
        parts.append(("warning", warnings.formatwarning(message, category, filename, lineno,
                                                        line)))
        if file is None:  # shown as usual, but not captured a second time as stderr
            err = sys.stderr
            file = err._stream if isinstance(err, _Tee) else err
    original(message, category, filename, lineno, file, line)


def _print_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                   file: TextIO | None = None, line: str | None = None) -> None:
    target = file if file is not None else sys.stderr
    if target is not None:
        target.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Wrap ``sys.stdout``, ``sys.stderr`` and ``warnings.showwarning`` while the block
    runs (nested and concurrent blocks share one installation)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = (sys.stdout, sys.stderr, warnings.showwarning)
            if sys.stdout is not None:
                sys.stdout = _Tee(sys.stdout, "stdout")  # type: ignore[assignment]
            if sys.stderr is not None:
                sys.stderr = _Tee(sys.stderr, "stderr")  # type: ignore[assignment]
            warnings.showwarning = _show_warning
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                out, err, show = _saved
                # a stream the user's code put in place since stays
                if isinstance(sys.stdout, _Tee):
                    sys.stdout = out
                if isinstance(sys.stderr, _Tee):
                    sys.stderr = err
                if warnings.showwarning is _show_warning:
                    warnings.showwarning = show
                _saved = None


class CallOutput:
    """Keep what this thread prints and warns while the block runs (in :attr:`parts`)."""

    # once per call: no __init__, no varargs (each Python call costs ~0.1 us here)
    __slots__ = ("parts", "_outer")
    parts: Output
    _outer: Output | None

    def __enter__(self) -> CallOutput:
        self._outer = getattr(_state, "parts", None)
        self.parts = _state.parts = []
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _state.parts = self._outer

    @property
    def output(self) -> Output | None:
        """The pieces merged per stream run, or None when nothing was written; at most
        :data:`MAX_OUTPUT` characters are kept (they travel to the client and its log)."""
        if not self.parts:
            return None
        merged: Output = []
        kept = 0
        for stream, text in self.parts:
            if kept + len(text) > MAX_OUTPUT:
                left = sum(len(t) for _, t in self.parts) - kept
                merged.append(("stderr", f"[acme_xr: {left} more characters of this call's "
                                         "output are not kept in the log]\n"))
                break
            kept += len(text)
            if merged and merged[-1][0] == stream and stream != "warning":
                merged[-1] = (stream, merged[-1][1] + text)
            else:
                merged.append((stream, text))
        return merged
