"""A storage backend that only the tests register: the docs' developer page shows it.

It proves that adding a backend is one module plus its registration: HDF5 payloads kept
in ``<output_dir>/calls/`` with no results container. The contract suites
(tests/test_contract.py, tests/storage/test_backends.py) take it from the registry and run
against it like against the built-in ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from acme_xr.manifest import Manifest
from acme_xr.storage.base import payload_name
from acme_xr.storage.per_call import HdfPayloads
from acme_xr.storage.registry import register

SUBDIR = "calls"


@register
@dataclass(frozen=True)
class SubdirPayloads(HdfPayloads):
    """One HDF5 payload per call in ``<output_dir>/calls/``; no container."""

    name = "subdir"

    @property
    def payload_dir(self) -> str:
        return os.path.join(self.output_dir, SUBDIR)

    @property
    def container(self) -> str | None:
        return None  # the manifest is the index: open_results needs no container

    def locations(self) -> dict[str, Any]:
        return {**super().locations(), "payload": f"{SUBDIR}/{payload_name(self.stem, '{i}')}"}

    def finalize(self, manifest: Manifest) -> str | None:
        return None

    @classmethod
    def rebuild(cls, run_dir: str, files: dict[str, dict[int, str]]) -> Manifest | None:
        from acme_xr.scan import common_header, payload_files, rebuilt_manifest

        found = payload_files(os.path.join(run_dir, SUBDIR)) if os.path.isdir(
            os.path.join(run_dir, SUBDIR)) else {}
        if not found:
            return None
        stem = max(found, key=lambda s: len(found[s]))
        calls = found[stem]
        header = {**cls(output_dir=run_dir, stem=stem).locations(), "source": "acme_xr",
                  "storage": cls.name, **common_header(stem)}
        return rebuilt_manifest(run_dir, max(calls) + 1, header, calls)
