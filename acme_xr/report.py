"""The HTML report of a run: one self-contained file (figures embedded as base64 PNG).

It shows the run's metadata (function, options, versions, created, state), the calls done,
failed and pending, per-call duration statistics, a duration histogram, a timeline of the
calls per worker, the failures with their tracebacks and what is known of memory. The
figures need matplotlib (``pip install "acme_xr[report]"``); without it the report has the
tables and says how to get the figures. Everything comes from the run's manifest: no payload
is opened. Every string from the run is escaped (a function name or an error message may
hold ``<``).

Examples
--------
>>> m = Manifest.new(3, {"func": {"name": "f"}})
>>> m.record_failed(1, {"type": "ValueError", "message": "x < 0", "traceback": ""}, "h/w1")
>>> page = render_report(m, "run1", figures=False)
>>> "x &lt; 0" in page, page.count("<img")
(True, 0)
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import numpy as np

from .errors import ResultsLayoutError
from .manifest import DONE, FAILED, MANIFEST_NAME, PENDING, Manifest

__all__ = ["FIGURE_WIDTH", "HISTOGRAM_HEIGHT", "REPORT_NAME", "duration_stats", "render_report",
           "run_manifest",
           "timeline_height", "write_report"]

REPORT_NAME = "report.html"
#: Pixel sizes of the embedded figures (the timeline grows with the number of workers).
FIGURE_WIDTH, HISTOGRAM_HEIGHT = 900, 300
_DPI = 100
# workers in the timeline (one row each)
_MAX_ROWS = 40
# failures listed with their tracebacks; the rest are counted
_MAX_FAILURES = 200
_MEMORY_NOTE = ("Memory is not recorded: acme_xr keeps no per-call or per-worker memory "
                "figures yet. A dry run (ParallelMap(..., dryrun=True)) measures one call.")
_NO_FIGURES = ('The figures need matplotlib: <code>pip install "acme_xr[report]"</code>, '
               "then run <code>acme-xr report</code> again.")
_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
pre{background:#f8f8f8;padding:.5em;overflow-x:auto;font-size:85%}
.failed{color:#b00020}.note{color:#555}"""


def timeline_height(n_workers: int) -> int:
    """Pixel height of the timeline figure of a run on ``n_workers`` workers."""
    return 120 + 25 * min(max(n_workers, 1), _MAX_ROWS)


def run_manifest(path: str | os.PathLike[str]) -> tuple[str, Manifest]:
    """The run directory for ``path`` and its manifest (rebuilt by scanning, not saved, when
    the run has none: an ACME run, or one whose process died before writing it).

    Raises
    ------
    ResultsLayoutError
        ``path`` does not exist or holds no run.
    ManifestCorruptError
        The run's manifest is damaged (``open_results`` rebuilds it by scanning).
    """
    from .scan import load_manifest, locate_run, refresh_pending

    run_dir = locate_run(path)
    if not os.path.exists(os.path.join(run_dir, MANIFEST_NAME)):
        return run_dir, load_manifest(run_dir, save=False)
    try:
        manifest = Manifest.read(run_dir)
    except FileNotFoundError as exc:  # removed since: the same as never there
        raise ResultsLayoutError(f"{run_dir} holds no run manifest any more") from exc
    if manifest.state == "running":  # calls written since the running process's last flush
        refresh_pending(manifest, run_dir)
    return run_dir, manifest


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 manifest: Manifest | None = None) -> str:
    """Write the HTML report of the run in ``run``; return its path.

    Parameters
    ----------
    run : str or path
        The run directory (or its container file).
    out : str or path, optional
        Where to write it; default ``<run>/report.html``. Replaced if it exists.
    manifest : Manifest, optional
        The run's manifest, when the caller holds it (a run in memory has no directory:
        then ``run`` only names it and ``out`` is needed).

    Returns
    -------
    str
        The absolute path of the report.

    Raises
    ------
    ResultsLayoutError, ManifestCorruptError
        No run in ``run``, or a damaged manifest (see :func:`run_manifest`).
    OSError
        ``out`` cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> m = Manifest.new(2, {"func": {"name": "f"}})
    >>> path = write_report("in memory", os.path.join(tempfile.mkdtemp(), "r.html"), manifest=m)
    >>> open(path).read().startswith("<!DOCTYPE html>")
    True
    """
    if manifest is None:
        run_dir, manifest = run_manifest(run)
    else:
        run_dir = os.fspath(run)
    path = os.path.abspath(os.fspath(out) if out is not None
                           else os.path.join(run_dir, REPORT_NAME))
    page = render_report(manifest, run_dir)
    from .storage.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    return path


def render_report(manifest: Manifest, run_dir: str, figures: bool | None = None) -> str:
    """The report's HTML. ``figures``: None draws them when matplotlib is installed."""
    name = str(manifest.header.get("func", {}).get("name") or "?")
    if figures is None:
        try:
            import matplotlib  # noqa: F401
            figures = True
        except ImportError:
            figures = False
    parts = [f"<h1>acme_xr run of {_e(name)}</h1>", f"<p>{_e(run_dir)}</p>",
             _summary(manifest), "<h2>Run</h2>", _metadata(manifest)]
    parts.append("<h2>Durations</h2>")
    parts.append(_table(["", "seconds"], _duration_rows(manifest)))
    if figures:
        parts += [_img(_histogram(manifest), "per-call duration histogram"),
                  "<h2>Timeline</h2>"]
        timeline = _timeline(manifest)
        parts.append(_img(timeline, "calls per worker over time") if timeline else
                     '<p class="note">No start times recorded (a manifest written before '
                     "acme_xr recorded them): no timeline.</p>")
    else:
        parts.append(f'<p class="note">{_NO_FIGURES}</p>')
    parts += ["<h2>Workers</h2>", _workers(manifest), "<h2>Memory</h2>",
              f'<p class="note">{_e(_MEMORY_NOTE)}</p>', _failures(manifest)]
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>acme_xr report: {_e(name)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]], raw: int = -1) -> str:
    """An HTML table; every cell escaped except column ``raw`` (already HTML)."""
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c if k == raw else _e(c)}</td>"
                                    for k, c in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def _summary(m: Manifest) -> str:
    c = m.counts
    failed = f'<span class="failed">{c["failed"]} failed</span>' if c["failed"] else "0 failed"
    return (f"<p><b>{m.n_inputs}</b> calls: {c['done']} done, {failed}, {c['pending']} "
            f"pending. State: <b>{_e(m.state)}</b>.</p>")


def _metadata(m: Manifest) -> str:
    h = m.header
    func = h.get("func", {})
    rows: list[list[Any]] = [
        ["function", func.get("qualname") or func.get("name")],
        ["module", func.get("module")],
        ["state", m.state], ["created", getattr(m, "created", "")],
        ["acme_xr version", h.get("acme_xr_version")],
        ["storage", h.get("storage")], ["calls", m.n_inputs],
    ]
    for key in ("versions", "options", "seed", "result_shape", "result_dtype", "interruption",
                "forced_resumes", "process", "rebuilt"):
        if h.get(key) is not None:
            rows.append([key, _short(h[key])])
    return _table(["", "run"], rows)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


def _durations(m: Manifest) -> np.ndarray:
    d = np.asarray(m.duration, float)
    return d[np.isfinite(d)]


def duration_stats(m: Manifest) -> dict[str, float | None]:
    """min, median, mean, max and total of the recorded per-call durations (s)."""
    d = _durations(m)
    if not d.size:
        return dict.fromkeys(("min", "median", "mean", "max", "total"))
    return {"min": float(d.min()), "median": float(np.median(d)), "mean": float(d.mean()),
            "max": float(d.max()), "total": float(d.sum())}


def _duration_rows(m: Manifest) -> list[list[Any]]:
    return [[k, "-" if v is None else f"{v:.4g}"] for k, v in duration_stats(m).items()]


def _hosts(m: Manifest) -> list[str]:
    return [str(m.host[i]) if m.host[i] is not None else "?" for i in range(m.n_inputs)]


def _by_worker(m: Manifest) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(workers, calls that ran, each one's worker index): one pass, not one per worker."""
    ran = np.flatnonzero(np.asarray(m.status) != PENDING)
    hosts = _hosts(m)
    workers, row = np.unique(np.asarray([hosts[i] for i in ran], dtype=object).astype(str),
                             return_inverse=True)
    return [str(w) for w in workers], ran, row.reshape(-1)


def _workers(m: Manifest) -> str:
    workers, ran, row = _by_worker(m)
    if not workers:
        return '<p class="note">No call has run yet.</p>'
    status = np.asarray(m.status)[ran]
    busy = np.bincount(row, np.nan_to_num(np.asarray(m.duration, float)[ran]), len(workers))
    calls = np.bincount(row, minlength=len(workers))
    failed = np.bincount(row, status == FAILED, len(workers))
    rows = [[w, int(calls[k]), int(failed[k]), f"{busy[k]:.3g}"]
            for k, w in enumerate(workers)]
    return _table(["worker (host/name)", "calls", "failed", "busy s"], rows)


def _failures(m: Manifest) -> str:
    failed = [int(i) for i in m.indices(FAILED)]
    if not failed:
        return "<h2>Failures</h2><p>None.</p>"
    hosts = _hosts(m)
    rows = []
    for i in failed[:_MAX_FAILURES]:
        err = m.errors.get(i, {})
        tb = err.get("traceback") or ""
        rows.append([i, err.get("type", "?"), err.get("message", ""),
                     int(m.attempts[i]), hosts[i],
                     f"<details><summary>traceback</summary><pre>{_e(tb)}</pre></details>"
                     if tb else ""])
    more = (f"<p>... and {len(failed) - _MAX_FAILURES} more failed calls.</p>"
            if len(failed) > _MAX_FAILURES else "")
    return (f'<h2 class="failed">Failures ({len(failed)})</h2>'
            + _table(["call", "error", "message", "attempts", "worker", ""], rows, raw=5)
            + more)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _figure(height: int) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(FIGURE_WIDTH / _DPI, height / _DPI), dpi=_DPI,
                  layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # never bbox_inches="tight": a fixed size
    return buf.getvalue()


def _histogram(m: Manifest) -> bytes:
    fig = _figure(HISTOGRAM_HEIGHT)
    ax = fig.add_subplot()
    series, labels, colours = [], [], []
    for code, label, colour in ((DONE, "done", "tab:blue"), (FAILED, "failed", "tab:red")):
        d = np.asarray(m.duration, float)[m.indices(code)]
        d = d[np.isfinite(d)]
        if d.size:
            series.append(d)
            labels.append(f"{label} ({d.size})")
            colours.append(colour)
    if series:  # stacked on shared bins: a few short failures stay visible
        n = sum(d.size for d in series)
        ax.hist(series, bins=min(50, max(5, int(np.sqrt(n)))), stacked=True, color=colours,
                label=labels)
    ax.set_xlabel("duration of a call (s)")
    ax.set_ylabel("calls")
    if series:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no durations recorded", ha="center", transform=ax.transAxes)
    return _png(fig)


def _timeline(m: Manifest) -> bytes | None:
    workers, ran, row = _by_worker(m)
    start = np.asarray(m.start, float)[ran]
    known = np.isfinite(start)
    if not known.any():
        return None
    ran, row, start = ran[known], row[known], start[known]
    shown = min(len(workers), _MAX_ROWS)
    width = np.maximum(np.nan_to_num(np.asarray(m.duration, float)[ran]), 1e-3)
    status = np.asarray(m.status)[ran]
    fig = _figure(timeline_height(shown))
    ax = fig.add_subplot()
    from matplotlib.collections import PolyCollection

    x0 = start - float(start.min())
    for code, colour in ((DONE, "tab:blue"), (FAILED, "tab:red")):
        pick = np.flatnonzero((row < shown) & (status == code))
        if pick.size:  # one rectangle per call, built at once (broken_barh: ~40 us each)
            left, right, y = x0[pick], x0[pick] + width[pick], row[pick].astype(float)
            verts = np.stack([np.column_stack([left, y - 0.4]), np.column_stack([left, y + 0.4]),
                              np.column_stack([right, y + 0.4]),
                              np.column_stack([right, y - 0.4])], axis=1)
            # an (n, 4, 2) array, which set_verts takes whole (its stub says Sequence)
            ax.add_collection(PolyCollection(verts, facecolors=colour,  # type: ignore[arg-type]
                                             edgecolors="none"))
    ax.set_xlim(0, float((x0 + width).max()) * 1.02)
    ax.set_ylim(-0.6, shown - 0.4)
    ax.set_yticks(range(shown), [w[-40:] for w in workers[:shown]], fontsize=7)
    more = f"; {len(workers) - shown} more workers not shown" if len(workers) > shown else ""
    ax.set_xlabel(f"seconds since the first call started (blue: done, red: failed){more}")
    return _png(fig)
