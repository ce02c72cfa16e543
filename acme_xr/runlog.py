"""Per-run logging: a timestamped log file in the output directory, and console messages.

Nothing is configured at import time. During a run, :func:`run_logging` attaches a file
handler (when the run has a log file) and, unless the application has configured logging
itself, a console handler; both are removed when the run ends.

Examples
--------
>>> import logging, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "f.log")
>>> with run_logging(path, verbose=False):
...     logging.getLogger("acme_xr.map").info("hello")
>>> "hello" in open(path).read()
True
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["run_logging", "PACKAGE_LOGGER"]

PACKAGE_LOGGER = "acme_xr"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_CONSOLE_FORMAT = "acme_xr %(asctime)s %(levelname)s: %(message)s"
# a record that says this went to the terminal already (see acme_xr.progress)
ALREADY_SHOWN = "acme_xr_already_shown"


class _LogFileHandler(logging.FileHandler):
    """A log file that, once it cannot be written (disk full), says so once and goes
    quiet, instead of printing a traceback for every message."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self.broken = True
        sys.stderr.write(f"acme_xr: cannot write the log file {self.baseFilename} ({exc}); "
                         "its further messages are lost\n")


@contextlib.contextmanager
def run_logging(logfile: str | None, verbose: bool | None) -> Iterator[None]:
    """Log the package's messages to ``logfile`` (and the console) while the block runs.

    Parameters
    ----------
    logfile : str or None
        File to append to; None for no file.
    verbose : bool or None
        None: progress information on the console; True: also debug messages (scheduling,
        batching, each batch); False: only warnings and errors on the console. Console
        lines carry the time (``acme_xr 14:02:17 INFO: ...``), the file's the date too.
        What the user function printed (logger ``acme_xr.calls``) goes to the file only:
        the terminal showed it as it was printed.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    added: list[logging.Handler] = []
    console_level = (logging.DEBUG if verbose else logging.INFO if verbose is None
                     else logging.WARNING)
    if logfile is not None:
        fh = _LogFileHandler(logfile, encoding="utf-8")
        fh.setFormatter(logging.Formatter(_FORMAT))
        fh.setLevel(logging.DEBUG if verbose else logging.INFO)
        added.append(fh)
    if not logging.getLogger().handlers:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(logging.Formatter(_CONSOLE_FORMAT, datefmt="%H:%M:%S"))
        ch.setLevel(console_level)
        # what the user function printed is on the terminal already (acme_xr.capture)
        ch.addFilter(lambda record: not getattr(record, ALREADY_SHOWN, False))
        added.append(ch)
    old_level = logger.level
    levels = [h.level for h in added] or [console_level]
    logger.setLevel(min(levels))
    for h in added:
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in added:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
