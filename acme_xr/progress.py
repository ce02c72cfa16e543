"""A run's progress on the console, and each finished batch's detail in the run's log.

:class:`Progress` is told of every finished batch. Once the run has taken
``acme_xr.progress.delay`` (2 s), it shows, unless ``verbose=False``:

* on a terminal or in a notebook, a bar (tqdm) with the calls done, failed, the rate and
  the time left; it stays after the run, followed by the run's one-line summary;
* anywhere else (output piped to a file or a batch job's log), and with ``verbose=True``,
  one plain log line every ``acme_xr.progress.interval`` (5 s) instead of the bar's
  carriage-return frames.

With ``verbose=True`` each batch is also logged (calls, worker, counts, seconds). What each
call printed and warned (see :mod:`acme_xr.capture`) goes to the run's log file, one line
per line of output with the call's index; the terminal saw it already as it happened.

Examples
--------
>>> import io
>>> bar = Progress(10, verbose=None, stream=io.StringIO())
>>> bar.update(4, failed=1)
>>> bar.done, bar.failed, bar.interactive
(4, 1, False)
>>> bar.line()
'5 of 10 calls finished (4 done, 1 failed), 0 s elapsed'
>>> bar.close()
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from . import config
from .capture import Output
from .manifest import DONE, FAILED
from .runlog import ALREADY_SHOWN

if TYPE_CHECKING:
    from .worker import BatchResult

__all__ = ["Progress", "log_output"]

log = logging.getLogger(__name__)
calls_log = logging.getLogger("acme_xr.calls")



def _is_interactive(stream: Any) -> bool:
    """A terminal, or a Jupyter kernel's output (where tqdm draws a widget)."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _seconds(s: float) -> str:
    s = max(0, round(s))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _calls(indices: list[int]) -> str:
    if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1:
        return f"{indices[0]}-{indices[-1]}"
    shown = ", ".join(map(str, indices[:5]))
    return shown + (f", ... ({len(indices)} calls)" if len(indices) > 5 else "")


def log_output(i: int, output: Output) -> None:
    """Log what call ``i`` printed and warned, line by line, to the run's log file."""
    for stream, text in output:
        for line in text.rstrip("\n").splitlines():
            calls_log.info("call %d %s: %s", i, stream, line, extra={ALREADY_SHOWN: True})


class Progress:
    """Progress of ``total`` calls: a bar on a terminal, plain lines elsewhere.

    Parameters
    ----------
    total : int
        Calls this run has to finish.
    verbose : bool or None
        ParallelMap's ``verbose``: False shows nothing; True plain lines and per-batch
        detail; None a bar (or plain lines where the output is no terminal).
    stream : file, optional
        Where the bar goes (default ``sys.stderr``, as the log's console lines).
    """

    def __init__(self, total: int, verbose: bool | None, stream: TextIO | None = None) -> None:
        self.total = total
        self.show = verbose is not False
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = verbose is None and _is_interactive(self.stream)
        self.done = self.failed = 0
        self.started = time.monotonic()
        self.delay = config.get_seconds("progress.delay")
        self.interval = config.get_seconds("progress.interval")
        self.next_line = self.started + self.delay
        # (time, calls finished) at the first finished batch: the rate of the time left is
        # measured from there, not from the start, which includes the cluster's start
        self.first: tuple[float, int] | None = None
        self.bar: Any = None

    def batch(self, result: BatchResult) -> None:
        """Count a finished batch, log its detail (``verbose=True``) and its calls' output."""
        done = result.status.count(DONE)  # a list: counted in C (a batch may hold 10^5 calls)
        failed = result.status.count(FAILED)
        if self.verbose:
            found = sum(1 for s, n in zip(result.status, result.attempts, strict=True)
                        if s == DONE and n == 0)
            log.debug("batch of calls %s on %s: %d done, %d failed%s%s in %.2f s",
                      _calls(result.indices), result.host or "?", done - found, failed,
                      f", {found} found done" if found else "",
                      f", {len(result.indices) - done - failed} not run"
                      if len(result.indices) > done + failed else "", result.elapsed)
        for i, output in result.output.items():
            log_output(i, output)
        self.update(done, failed)

    def update(self, done: int, failed: int = 0) -> None:
        """Count ``done`` more calls done and ``failed`` more failed."""
        if self.first is None:
            self.first = (time.monotonic(), done + failed)
        self.done += done
        self.failed += failed
        if not self.show:
            return
        if self.bar is not None:
            if failed:
                self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self.bar.update(done + failed)
            return
        now = time.monotonic()
        if now < self.next_line:
            return
        if self.interactive:
            from tqdm.auto import tqdm  # ~0.1 s to import: only once a bar is shown

            self.bar = tqdm(total=self.total, initial=self.done + self.failed, unit="call",
                            leave=True, file=self.stream, dynamic_ncols=True,
                            postfix=f"{self.failed} failed" if self.failed else None)
            return
        self.next_line = now + self.interval
        log.info("%s", self.line())

    def line(self) -> str:
        """The progress as one plain line."""
        finished = self.done + self.failed
        now = time.monotonic()
        left = ""
        if self.first is not None and finished > self.first[1] and now > self.first[0]:
            rate = (finished - self.first[1]) / (now - self.first[0])
            left = f", about {_seconds((self.total - finished) / rate)} left"
        elapsed = now - self.started
        return (f"{finished} of {self.total} calls finished ({self.done} done, "
                f"{self.failed} failed), {_seconds(elapsed)} elapsed{left}")

    def close(self) -> None:
        """End the bar; it stays on the screen."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
