"""Objects that are slow to arrive: unpickling one sleeps, as a large array on a loaded
machine is slow to reach the client. Defined here, importable by the workers, so that they
pickle by reference."""

from __future__ import annotations

import time
from typing import Any


def _rebuild(value: Any, delay: float) -> SlowToUnpickle:
    time.sleep(delay)
    return SlowToUnpickle(value, delay)


class SlowToUnpickle:
    """Holds ``value``; unpickling takes ``delay`` seconds."""

    def __init__(self, value: Any, delay: float = 3.0) -> None:
        self.value = value
        self.delay = delay

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.value, self.delay))


def slow_result(i: int, delay: float) -> SlowToUnpickle:
    """A user function whose return value takes ``delay`` seconds to unpickle."""
    return SlowToUnpickle(i * 10, delay)
