"""How a :class:`~acme_xr.ParallelMap` shows itself: ``repr()`` and a notebook's HTML.

Both show the same facts: the function, the number of calls, the state of the run
(``not started``, ``running``, ``complete``, ``failed``, ``interrupted``), the calls done,
failed and not yet run, the run directory and log, and the first failures with their
messages. A finished run is the ParallelMap itself after :meth:`~acme_xr.ParallelMap.compute`
(its manifest holds the outcome); its results open with ``open_results(pmap.output_dir)``.

Examples
--------
>>> from acme_xr import ParallelMap
>>> def f(x):
...     return x
>>> print(repr(ParallelMap(f, [1, 2, 3], output_dir="/data/run1")))
ParallelMap(f, 3 calls, not started, output_dir='/data/run1')
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["describe", "text_repr", "html_repr"]

_SHOWN_FAILURES = 3


def describe(pmap: Any) -> dict[str, Any]:
    """The facts both representations show, as plain values."""
    manifest = pmap.manifest
    facts: dict[str, Any] = {
        "func": pmap.stem,
        "n_inputs": pmap.n_inputs,
        "state": "not started" if manifest is None else manifest.state,
        "output_dir": pmap.output_dir,
        "logfile": pmap.logfile,
        "counts": None,
        "failures": [],
    }
    if manifest is not None:
        facts["counts"] = dict(manifest.counts)
        for i, error in sorted(manifest.errors.items())[:_SHOWN_FAILURES]:
            facts["failures"].append((int(i), _one_line(
                f"{error.get('type')}: {error.get('message')}")))
    return facts


def _one_line(text: str, limit: int = 200) -> str:
    """A message as one printable line (a traceback's first lines, control characters)."""
    line = "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _counts(counts: dict[str, int]) -> str:
    return f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} not run"


def text_repr(pmap: Any) -> str:
    """One line (plus one per shown failure): what ``repr(pmap)`` gives."""
    f = describe(pmap)
    parts = [f["func"], f"{f['n_inputs']} calls", f["state"]]
    if f["counts"] is not None:
        parts.append(_counts(f["counts"]))
    parts.append(f"output_dir={f['output_dir']!r}" if f["output_dir"] else "in memory")
    text = f"ParallelMap({', '.join(parts)})"
    for i, message in f["failures"]:
        text += f"\n  call {i}: {message}"
    if f["counts"] is not None and f["counts"]["failed"] > len(f["failures"]):
        text += f"\n  ... and {f['counts']['failed'] - len(f['failures'])} more failed"
    return text


_STATE_COLOUR = {"complete": "#2e7d32", "failed": "#c62828", "interrupted": "#ef6c00",
                 "running": "#1565c0"}


def html_repr(pmap: Any) -> str:
    """A small table for notebooks: what ``pmap._repr_html_()`` gives."""
    f = describe(pmap)
    e = html.escape
    colour = _STATE_COLOUR.get(f["state"], "#616161")
    rows = [("function", e(f["func"])), ("calls", str(f["n_inputs"])),
            ("state", f'<b style="color:{colour}">{e(f["state"])}</b>')]
    if f["counts"] is not None:
        c = f["counts"]
        finished = c["done"] + c["failed"]
        rows.append(("progress", f'<progress value="{finished}" max="{f["n_inputs"]}">'
                                 f"</progress> {e(_counts(c))}"))
    rows.append(("output_dir", f"<code>{e(f['output_dir'])}</code>" if f["output_dir"]
                 else "in memory"))
    if f["logfile"]:
        rows.append(("log", f"<code>{e(f['logfile'])}</code>"))
    if f["output_dir"] and f["state"] in ("complete", "failed", "interrupted"):
        rows.append(("results", f"<code>acme_xr.open_results({e(repr(f['output_dir']))})"
                                "</code>"))
    for i, message in f["failures"]:
        rows.append((f"call {i}", f'<span style="color:#c62828">{e(message)}</span>'))
    body = "".join(f'<tr><th style="text-align:left">{k}</th><td style="text-align:left">'
                   f"{v}</td></tr>" for k, v in rows)
    return f"<div><b>acme_xr.ParallelMap</b><table>{body}</table></div>"
