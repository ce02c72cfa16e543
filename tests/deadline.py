"""Fail a test that hangs instead of blocking the suite."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class HungError(BaseException):
    """The code under test did not finish in time (a BaseException, as KeyboardInterrupt
    is, so that no ``except Exception`` of the code under test swallows it)."""


@contextlib.contextmanager
def fails_after(seconds: int) -> Iterator[None]:
    """Raise HungError in the main thread after ``seconds`` (a generous bound that proves
    "no hang", not a timing requirement); a run interrupted so cancels its tasks as on any
    error."""

    def alarm(signum: int, frame: Any) -> None:
        raise HungError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
