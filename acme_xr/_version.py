"""The package version, in one place (pyproject.toml reads it from here).

A literal, not ``importlib.metadata``: every worker process imports the package, and the
metadata look-up alone cost ~40 ms of each cold worker's first task.
"""

from __future__ import annotations

__version__ = "0.1.0"
