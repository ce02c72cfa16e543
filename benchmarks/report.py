"""Collect every measured figure of a benchmark run and print one table with ratios.

Each benchmark calls :func:`measure` (timed rounds through pytest-benchmark) or
:func:`record` (figures measured elsewhere, e.g. inside a subprocess). At the end of the
session ``conftest.py`` prints :func:`render` and, if asked, writes :func:`to_json`.
Nothing here asserts a time: goals are evaluated and printed as met / missed.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "GROUPS", "ROWS", "NOTES", "declare", "measure", "record", "interleaved",
           "note", "median", "render", "to_json", "goals"]


@dataclass
class Row:
    """One contender's figures in one group."""

    group: str
    contender: str
    seconds: list[float]
    n_calls: int | None = None
    nbytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    load: tuple[float, float] | None = None  # 1-minute load average before / after
    others: float | None = None  # share of all CPUs used by other processes meanwhile

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Group:
    title: str
    reference: str | None
    note: str = ""


# group key -> Group, in first-seen order; (group, contender) -> Row
GROUPS: dict[str, Group] = {}
ROWS: dict[tuple[str, str], Row] = {}
# things that could not be measured, and why
NOTES: list[str] = []
# the acme_xr commit (and uncommitted files) when the session started: others edit acme_xr/
# while benchmarks run, so the tree at the end is recorded too
TREE_AT_START: dict[str, Any] = {}


def _loadavg() -> float:
    return os.getloadavg()[0]


def _cpu_snapshot() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy, CPU seconds of this process tree)."""
    import psutil

    busy = psutil.cpu_times()
    machine = busy.user + busy.nice + busy.system + busy.irq + busy.softirq + \
        getattr(busy, "steal", 0.0)
    own = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            own += t.user + t.system
        except psutil.Error:
            pass
    reaped = os.times()
    return machine, own + reaped.children_user + reaped.children_system


def _others_share(before: tuple[float, float], after: tuple[float, float],
                  wall: float) -> float:
    """Fraction of the machine's CPU capacity that other processes used meanwhile."""
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others) / (wall * (os.cpu_count() or 1))


def declare(group: str, title: str, reference: str | None, note: str = "") -> None:
    """Name a group and the contender its ratios refer to (first declaration wins)."""
    GROUPS.setdefault(group, Group(title, reference, note))


def record(group: str, contender: str, seconds: list[float], **kw: Any) -> Row:
    """Store figures measured outside pytest-benchmark (or derived ones).

    Recording the same (group, contender) again adds rounds to its row: that is how the
    interleaved rounds of :func:`interleaved` come together.
    """
    GROUPS.setdefault(group, Group(group, None))
    row = ROWS.get((group, contender))
    if row is None:
        row = ROWS[(group, contender)] = Row(group, contender, list(seconds), **kw)
        return row
    n_old = len(row.seconds)
    row.seconds.extend(seconds)
    row.extra.update(kw.get("extra") or {})
    load, others = kw.get("load"), kw.get("others")
    if load is not None:
        row.load = load if row.load is None else (min(row.load[0], load[0]),
                                                  max(row.load[1], load[1]))
    if others is not None:
        row.others = others if row.others is None else \
            (row.others * n_old + others * len(seconds)) / len(row.seconds)
    return row


def interleaved(contenders: list[str], rounds: Callable[[str], int]) -> list[tuple[int, str]]:
    """(round, contender) pairs, round by round: each contender's rounds alternate with its
    peers' instead of running back to back, so that a slow minute on this shared machine
    hits every contender alike rather than one of them."""
    most = max(rounds(c) for c in contenders)
    return [(r, c) for r in range(most) for c in contenders if r < rounds(c)]


def measure(benchmark: Any, group: str, contender: str, target: Callable[..., Any], *,
            rounds: int, setup: Callable[[], Any] | None = None,
            teardown: Callable[..., Any] | None = None, n_calls: int | None = None,
            nbytes: int | None = None, **extra: Any) -> Row:
    """Time ``target`` for ``rounds`` rounds (fresh ``setup`` each round), then record it
    (adding to the rounds recorded before for the same group and contender)."""
    benchmark.group = group
    benchmark.extra_info.update({"contender": contender, "n_calls": n_calls, "nbytes": nbytes})
    before, cpu0, t0 = _loadavg(), _cpu_snapshot(), time.monotonic()
    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds, iterations=1,
                       warmup_rounds=0)
    after, cpu1, wall = _loadavg(), _cpu_snapshot(), time.monotonic() - t0
    seconds = list(benchmark.stats.stats.data)
    return record(group, contender, seconds, n_calls=n_calls, nbytes=nbytes, extra=extra,
                  load=(before, after), others=_others_share(cpu0, cpu1, wall))


def note(text: str) -> None:
    """Remember why something was not measured (printed under the table)."""
    if text not in NOTES:
        NOTES.append(text)


def median(group: str, contender: str) -> float | None:
    row = ROWS.get((group, contender))
    return None if row is None else row.median


# -- goals ------------------------------------------------------------------------------
@dataclass
class Goal:
    issue: str
    text: str
    # returns (measured value, description of the measured value) or None if not measured
    value: Callable[[], tuple[float, str] | None]
    ok: Callable[[float], bool]


def _ratio(num: tuple[str, str], den: tuple[str, str], fmt: str = "{:.2f}x") -> Callable[[], Any]:
    def value() -> tuple[float, str] | None:
        a, b = median(*num), median(*den)
        if a is None or b is None:
            return None
        r = a / b
        return r, f"{fmt.format(r)} ({a:.3g} s / {b:.3g} s)"

    return value


def _seconds(group: str, contender: str) -> Callable[[], Any]:
    def value() -> tuple[float, str] | None:
        m = median(group, contender)
        return None if m is None else (m, f"{m:.2f} s")

    return value


def _extra(group: str, contender: str, key: str, fmt: str) -> Callable[[], Any]:
    def value() -> tuple[float, str] | None:
        row = ROWS.get((group, contender))
        if row is None or key not in row.extra:
            return None
        v = float(row.extra[key])
        return v, fmt.format(v)

    return value


def _per_call_ratio(group: str, big: str, small: str) -> Callable[[], Any]:
    def value() -> tuple[float, str] | None:
        a, b = ROWS.get((group, big)), ROWS.get((group, small))
        if a is None or b is None or not a.n_calls or not b.n_calls:
            return None
        pa, pb = a.median / a.n_calls, b.median / b.n_calls
        return pa / pb, f"{pa / pb:.2f}x ({pa * 1e6:.0f} us / {pb * 1e6:.0f} us per call)"

    return value


def _r1(prefix: str, num: str, den: str, fmt: str = "{:.2f}x") -> Callable[[], Any]:
    """A ratio of two contenders in the issue-11 group whose name starts with ``prefix``
    (its name carries the number of calls, which ACME_XR_BENCH_R1_SCALE changes)."""
    def value() -> tuple[float, str] | None:
        group = next((g for g in GROUPS if g.startswith(prefix)), None)
        return None if group is None else _ratio((group, num), (group, den), fmt)()

    return value


def _r1_max(prefix: str, key: str | None = None) -> Callable[[], Any]:
    """The largest median (or extra ``key``) of the issue-11 rows whose group or contender
    starts with ``prefix``."""
    def value() -> tuple[float, str] | None:
        found = [(r.extra[key] if key else r.median, f"{g} / {c}") for (g, c), r in ROWS.items()
                 if g.startswith("R1") and (g.startswith(prefix) or c.startswith(prefix))
                 and (key is None or key in r.extra)]
        if not found:
            return None
        v, where = max(found)
        return float(v), f"{v:.3g} ({where})"

    return value


def _r1_goals() -> list[Goal]:
    # the contenders of benchmarks/test_r1_read_floor.py
    floor, h5py, acme_xr = "pread floor (open+pread+close)", "h5py loop", \
        "open_results(...).mean()"
    out = []
    for key in ("tiny", "cells"):
        out += [
            Goal("11", f"R1 {key}: open_results mean within 2x the pread floor",
                 _r1(f"R1 read {key}", acme_xr, floor), lambda r: r <= 2),
            Goal("11", f"R1 {key}: open_results mean >= 10x faster than the h5py loop",
                 _r1(f"R1 read {key}", h5py, acme_xr), lambda r: r >= 10),
        ]
    return out + [
        Goal("11", "R1: opening a run under 0.3 s (the slower run)",
             _r1_max("R1 open"), lambda v: v < 0.3),
        Goal("11", "R1: peak memory of open_results + means under 300 MB (RSS rise)",
             _r1_max("open_results + means", "rss_rise_MB"), lambda v: v < 300),
    ]


def goals() -> list[Goal]:
    from contenders import ACME_XR, DASK_MAP, ESI_ACME, FLOOR

    w2, w4i, w4x = "W2 write 512 MB", "W4 cold start, imports included", \
        "W4 cold start, imports excluded"
    return [
        Goal("2", "W1 HDF5 2,000 calls: acme_xr faster than esi-acme",
             _ratio(("W1 hdf5 N=2000", ESI_ACME), ("W1 hdf5 N=2000", ACME_XR)),
             lambda r: r > 1),
        Goal("5", "W1 memory 20,000 calls: >= 20x faster than raw client.map",
             _ratio(("W1 memory N=20000", DASK_MAP), ("W1 memory N=20000", ACME_XR)),
             lambda r: r >= 20),
        Goal("5", "W1 HDF5 20,000 calls: within 1.3x of 2 plain h5py processes",
             _ratio(("W1 hdf5 N=20000", ACME_XR), ("W1 hdf5 N=20000", FLOOR)),
             lambda r: r <= 1.3),
        Goal("5", "W1 HDF5 20,000 calls: >= 5x faster than esi-acme",
             _ratio(("W1 hdf5 N=20000", ESI_ACME), ("W1 hdf5 N=20000", ACME_XR)),
             lambda r: r >= 5),
        Goal("5", "W2: >= 0.8 of single-process h5py throughput",
             _ratio((w2, "h5py, 1 process"), (w2, ACME_XR), "{:.2f}"),
             lambda r: r >= 0.8),
        Goal("5", "W4 (imports included): within 1.1x of bare LocalCluster + 1 call",
             _ratio((w4i, ACME_XR), (w4i, "bare dask LocalCluster")), lambda r: r <= 1.1),
        Goal("5", "W4 (imports excluded): within 1.1x of bare LocalCluster + 1 call",
             _ratio((w4x, ACME_XR), (w4x, "bare dask LocalCluster")), lambda r: r <= 1.1),
        Goal("5", "W5: acme_xr worker RSS back within 10% of its start (after gc)",
             _extra("W5 worker RSS", ACME_XR, "after_gc/before", "{:.3f} of the start"),
             lambda r: r <= 1.10),
        Goal("5", "Scaling, memory: per-call time at 200,000 within 1.5x of 2,000",
             _per_call_ratio("W1 scaling memory", "N=200000", "N=2000"), lambda r: r <= 1.5),
        Goal("5", "Scaling, HDF5: per-call time at 200,000 within 1.5x of 2,000",
             _per_call_ratio("W1 scaling hdf5", "N=200000", "N=2000"), lambda r: r <= 1.5),
        *(Goal("10", f"W1 HDF5 {n:,} calls: checksums cost <= 5% (with / without)",
                _ratio((f"W1 checksums N={n}", "acme_xr, checksums"),
                       (f"W1 checksums N={n}", "acme_xr, no checksums"), "{:.3f}x"),
                lambda r: r <= 1.05) for n in (2000, 20000)),
        Goal("10", "write_payload of 2 KB: checksums cost <= 5% of the write",
             _ratio(("write_payload 2 KB", "checksums"), ("write_payload 2 KB", "no checksums"),
                    "{:.3f}x"),
             lambda r: r <= 1.05),
        Goal("10", "write_payload of 2 KB: the checksum work <= 5% of a write without",
             _ratio(("write_payload 2 KB", "the checksum work alone (Sums.of_image)"),
                    ("write_payload 2 KB", "no checksums"), "{:.3f}"),
             lambda r: r <= 0.05),
        *(Goal("12", f"W7 HDF5 {n:,} calls: within 2x the write+rename floor",
                _ratio((f"W7 HDF5 floor N={n:,}", "acme_xr HDF5 payloads"),
                       (f"W7 HDF5 floor N={n:,}", "write+rename floor, 2 processes")),
                lambda r: r <= 2) for n in (20_000, 200_000)),
        Goal("3", "open_results on 10,000 calls under 0.5 s",
             lambda: (lambda m: None if m is None else (m, f"{m:.3f} s"))(
                 median("I3 open 10,000 calls", "acme_xr.open_results")),
             lambda v: v < 0.5),
        Goal("3", "mean of result_0 over 10,000 calls within 1.5x of an h5py loop",
             _ratio(("I3 mean 10,000 calls", "open_results(...).mean().compute()"),
                    ("I3 mean 10,000 calls", "h5py loop")),
             lambda r: r <= 1.5),
        Goal("3", "peak memory of open + mean under 500 MB (RSS rise in a fresh process)",
             _extra("I3 peak memory", "open_results + mean", "rss_rise_MB", "{:.0f} MB"),
             lambda v: v < 500),
        *(_r1_goals() if any(g.startswith("R1") for g in GROUPS) else []),
        *(Goal("14", f"C2 {c}: the process gone within 2 s", _seconds("C2 Ctrl-C to exit", c),
               lambda v: v <= 2.0)
          for c in ("acme_xr, Ctrl-C during the run",
                    "acme_xr, Ctrl-C during the cluster's start")),
        Goal("14", "C2 capturing a call's output costs <= 1% of the floor of writing one "
             "payload (0.1 ms, DESIGN.md): <= 1 us per call",
             lambda: (lambda m: None if m is None else (m, f"{m * 1e6:.2f} us"))(
                 median("C2 capture per call", "the capture alone (difference)")),
             lambda v: v <= 1e-6),
    ]


# -- output -----------------------------------------------------------------------------
def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _derived(row: Row) -> str:
    if row.n_calls:
        return f"{row.median / row.n_calls * 1e6:.0f} us/call"
    if row.nbytes:
        return f"{row.nbytes / row.median / 1e6:.0f} MB/s"
    return ""


def _extras(row: Row) -> str:
    parts = []
    for k, v in row.extra.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    if row.others is not None:
        parts.append(f"others {row.others:.0%} CPU")
    if row.load is not None:
        parts.append(f"load {row.load[0]:.1f}->{row.load[1]:.1f}")
    return ", ".join(parts)


def render() -> list[str]:
    """The summary table and the goals, as lines."""
    if not ROWS and not NOTES:
        return []
    lines = []
    for key, grp in GROUPS.items():
        rows = [r for (g, _), r in ROWS.items() if g == key]
        if not rows:
            continue
        ref = median(key, grp.reference) if grp.reference else None
        lines.append("")
        lines.append(f"{grp.title}" + (f"   (ratio = median / median of {grp.reference})"
                                        if ref else ""))
        if grp.note:
            lines.append(f"  {grp.note}")
        lines.append(f"  {'contender':<38} {'rounds':>6} {'median':>10} {'min':>10} "
                     f"{'max':>10} {'derived':>14} {'ratio':>8}  notes")
        for r in rows:
            ratio = f"{r.median / ref:.2f}" if ref else ""
            lines.append(
                f"  {r.contender:<38} {len(r.seconds):>6} {_fmt_s(r.median):>10} "
                f"{_fmt_s(min(r.seconds)):>10} {_fmt_s(max(r.seconds)):>10} "
                f"{_derived(r):>14} {ratio:>8}  {_extras(r)}"
            )
    if NOTES:
        lines.append("")
        lines.append("Not measured:")
        lines.extend(f"  - {n}" for n in NOTES)
    lines.append("")
    lines.append("Goals (issues 2, 3, 5, 10, 11, 12, 14); medians, measured in this run:")
    for g in goals():
        v = g.value()
        status = "not measured" if v is None else ("MET" if g.ok(v[0]) else "MISSED")
        lines.append(f"  [{status:^12}] issue {g.issue}: {g.text}" +
                     ("" if v is None else f": {v[1]}"))
    return lines


def remember_tree() -> None:
    """Record the acme_xr tree at the start of the session (see :data:`TREE_AT_START`)."""
    TREE_AT_START.update(_git_state())


def _git_state() -> dict[str, Any]:
    """The acme_xr commit measured and the files of acme_xr/ that differ from it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--short", "--", "acme_xr").splitlines()}


def to_json() -> dict[str, Any]:
    """Everything measured, plus where and when."""
    import dask
    import distributed

    out_goals = []
    for g in goals():
        v = g.value()
        out_goals.append({"issue": g.issue, "goal": g.text,
                          "value": None if v is None else v[0],
                          "shown": None if v is None else v[1],
                          "met": None if v is None else bool(g.ok(v[0]))})
    return {
        "acme_xr_tree_at_start": TREE_AT_START,
        "acme_xr_tree": _git_state(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "dask": dask.__version__,
                    "distributed": distributed.__version__},
        "groups": {k: {"title": g.title, "reference": g.reference, "note": g.note}
                   for k, g in GROUPS.items()},
        "rows": [
            {"group": r.group, "contender": r.contender, "seconds": r.seconds,
             "median": r.median, "n_calls": r.n_calls, "nbytes": r.nbytes,
             "extra": r.extra, "load": r.load, "others_cpu_share": r.others}
            for r in ROWS.values()
        ],
        "goals": out_goals,
        "notes": NOTES,
    }


def to_markdown(data: dict[str, Any]) -> list[str]:
    """Markdown tables of a run written by ``--bench-json`` (for docs/benchmarks.md)."""
    rows_by_group: dict[str, list[dict[str, Any]]] = {}
    for r in data["rows"]:
        rows_by_group.setdefault(r["group"], []).append(r)
    lines = []
    for key, grp in data["groups"].items():
        rows = rows_by_group.get(key)
        if not rows:
            continue
        ref = next((r["median"] for r in rows if r["contender"] == grp["reference"]), None)
        lines += ["", f"**{grp['title']}**", "",
                  "| contender | rounds | median | min | max | derived | ratio | others' CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            row = Row(r["group"], r["contender"], r["seconds"], r["n_calls"], r["nbytes"],
                      r["extra"])
            ratio = f"{r['median'] / ref:.2f}" if ref else ""
            others = r.get("others_cpu_share")
            extra = ", ".join(f"{k} {v}" for k, v in r["extra"].items())
            derived = _derived(row) + (f" ({extra})" if extra else "")
            lines.append(
                f"| {r['contender']} | {len(r['seconds'])} | {_fmt_s(row.median)} | "
                f"{_fmt_s(min(r['seconds']))} | {_fmt_s(max(r['seconds']))} | {derived} | "
                f"{ratio} | {'' if others is None else f'{others:.0%}'} |")
    lines += ["", "| goal | issue | measured | status |", "|---|---|---|---|"]
    for g in data["goals"]:
        if g["met"] is None:
            continue  # not measured in this run
        status = "met" if g["met"] else "**missed**"
        lines.append(f"| {g['goal']} | {g['issue']} | {g['shown'] or ''} | {status} |")
    return lines


if __name__ == "__main__":
    import json
    import sys

    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as fh:
            print("\n".join(to_markdown(json.load(fh))))
