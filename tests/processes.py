"""Which processes a test (or the script a test runs) has below it."""

from __future__ import annotations

import psutil


def live_children() -> set[int]:
    """Live processes below this one, minus multiprocessing's resource tracker (it lives as
    long as the interpreter once any process was spawned)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE or "resource_tracker" in " ".join(p.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        out.add(p.pid)
    return out
