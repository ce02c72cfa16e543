"""Find a run on disk and its manifest; rebuild the manifest by scanning when there is none.

Three kinds of directory open the same way:

* an acme_xr run (``manifest.json`` present; also one that is still running);
* an acme_xr run whose process died before writing its manifest (payloads ``<func>_<i>.h5``):
  the manifest is rebuilt by opening each payload once and written, so the next open is O(1);
* a run written by ACME itself: ``<func>.h5`` plus ``<func>_payload/<func>_<i>.h5`` (also with
  ACME's ``result_shape`` virtual-dataset container), or ACME's ``single_file`` container with
  groups ``comp_<i>``. Its manifest is rebuilt the same way (and cached in the directory when
  it is writable).

Examples
--------
>>> import os, tempfile
>>> run = tempfile.mkdtemp()
>>> open(os.path.join(run, "f_0.h5"), "wb").close()
>>> locate_run(os.path.join(run, "f_0.h5")) == run
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

import h5py

from ._version import __version__
from .errors import ManifestCorruptError, ResultsLayoutError, ResumeMismatchError, StorageError
from .manifest import MANIFEST_NAME, PENDING, Manifest
from .runlock import is_locked
from .storage.base import payload_name
from .storage.hdf5 import scan_group
from .storage.registry import backend_class, names

__all__ = ["locate_run", "holds_run", "load_manifest", "manifest_to_resume", "refresh_pending",
           "payload_location", "payload_files", "rebuilt_manifest", "common_header"]

log = logging.getLogger(__name__)

_PAYLOAD = re.compile(r"^(?P<stem>.+)_(?P<i>\d+)\.(?P<ext>h5|pickle)$")


def locate_run(path: str | os.PathLike[str]) -> str:
    """The run directory for ``path`` (a run directory or its container / manifest file)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ResultsLayoutError(f"{path} does not exist: give a run directory or its <func>.h5")
    if holds_run(path):
        return path
    raise ResultsLayoutError(
        f"{path} holds no acme_xr or ACME run: expected {MANIFEST_NAME}, <func>_<i>.h5 payloads, "
        "an ACME <func>.h5 with <func>_payload/ or a layout a registered storage backend's "
        "rebuild recognises"
    )


def holds_run(path: str) -> bool:
    """Whether the directory ``path`` holds a run that can be opened (its manifest, or what
    a manifest can be rebuilt from).

    The cheap built-in checks come first; only then is every registered backend's
    :meth:`~acme_xr.storage.base.StorageBackend.rebuild` asked, so that a custom layout
    whose manifest is lost (docs/developer.md) is found like the built-in ones.
    """
    if (os.path.exists(os.path.join(path, MANIFEST_NAME)) or payload_files(path)
            or _acme_stem(path)):
        return True
    files = payload_files(path)
    for name in names():
        # a damaged store of a backend's own is still its run: load_manifest says what is wrong
        try:
            if backend_class(name).rebuild(path, files) is not None:
                return True
        except ResultsLayoutError:
            return True
    return False


def payload_files(directory: str) -> dict[str, dict[int, str]]:
    """stem -> {call index: extension} of payload-named files directly in ``directory``."""
    found: dict[str, dict[int, str]] = {}
    with os.scandir(directory) as it:
        for entry in it:
            m = _PAYLOAD.match(entry.name)
            if m and entry.is_file():
                found.setdefault(m["stem"], {})[int(m["i"])] = m["ext"]
    return found


def _acme_stem(directory: str) -> str | None:
    """The function name of an ACME run in ``directory``, if it is one."""
    for name in sorted(os.listdir(directory)):
        if name.endswith("_payload") and os.path.isdir(os.path.join(directory, name)):
            return name[: -len("_payload")]
    for name in sorted(os.listdir(directory)):
        if name.endswith(".h5") and not _PAYLOAD.match(name):
            with contextlib.suppress(OSError), h5py.File(os.path.join(directory, name), "r") as fh:
                if any(k.startswith("comp_") for k in fh):
                    return name[:-3]
    return None


def payload_location(header: dict[str, Any], run_dir: str, i: int) -> tuple[str, str | None]:
    """(file, group or None) holding call ``i``'s variables."""
    path = os.path.join(run_dir, header["payload"].format(i=i))
    group = header.get("group")
    return path, (group.format(i=i) if group else None)


def load_manifest(run_dir: str, save: bool = True) -> Manifest:
    """Read the run's manifest, or rebuild it by scanning (and save it when ``save`` and
    possible).

    A damaged manifest (truncated, not JSON, not a manifest: see
    :class:`~acme_xr.errors.ManifestCorruptError`) is rebuilt the same way, with a warning:
    the payloads are what counts. The rebuilt manifest's header says ``"rebuilt": True``;
    what only the old header held (the function and inputs fingerprints, the input
    labels) is lost.

    Raises
    ------
    ResultsLayoutError
        The manifest is missing or damaged and there are no payloads to rebuild it from.
    """
    path = os.path.join(run_dir, MANIFEST_NAME)
    if os.path.exists(path):
        try:
            return Manifest.read(run_dir)
        except ManifestCorruptError as exc:
            log.warning("%s: rebuilding it by scanning the payloads of the run (the recorded "
                        "function, inputs and input labels are lost with it)", exc)
    manifest = _rebuild(run_dir)
    if not save or is_locked(run_dir):  # a running process owns its manifest
        return manifest
    try:
        manifest.write(run_dir)
        log.info("rebuilt the manifest of %s by scanning its payloads; saved it", run_dir)
    except StorageError as exc:
        log.info("rebuilt the manifest of %s by scanning; could not save it: %s", run_dir, exc)
    return manifest


def manifest_to_resume(run_dir: str, n_inputs: int, header: dict[str, Any],
                       force: bool = False) -> Manifest:
    """The manifest of the acme_xr run in ``run_dir`` that a resume continues.

    A damaged manifest is rebuilt from the payloads, but the function and inputs
    fingerprints are lost with its header, so nothing can show that the resume runs the
    same function on the same inputs. Then only ``force`` continues: with a new manifest
    (``n_inputs`` calls, this run's ``header``) in which every call with a valid payload
    is done. Nothing is written.

    Raises
    ------
    ResumeMismatchError
        The run's identity is lost and ``force`` is False.
    """
    try:
        manifest: Manifest | None = load_manifest(run_dir, save=False)
    except ResultsLayoutError as exc:  # damaged, and no payload to rebuild it from
        log.warning("%s", exc)
        manifest = None
    if manifest is not None and not manifest.header.get("rebuilt"):
        return manifest
    if not force:
        raise ResumeMismatchError(
            f"cannot resume {run_dir}: its manifest was damaged or lost, and the recorded function "
            "and inputs are lost with it, so acme_xr cannot check that this is the same "
            "run. Pass resume=\"force\" to continue it anyway (every call with a valid "
            "payload is kept), or start a new run in another output_dir"
        )
    fresh = Manifest.new(n_inputs, header)
    found = refresh_pending(fresh, run_dir)
    log.warning("resuming %s with resume=\"force\" although its manifest was damaged: %d "
                "calls with a valid payload are kept", run_dir, found)
    return fresh


def _container_calls(path: str) -> tuple[int, bool]:
    """(number of comp_<i> entries, whether they are groups inside the file) of a container."""
    if not os.path.exists(path):
        return 0, False
    with h5py.File(path, "r") as fh:
        comps = [k for k in fh if k.startswith("comp_")]
        internal = bool(comps) and not isinstance(fh.get(comps[0], getlink=True), h5py.ExternalLink)
        return len(comps), internal


def _rebuild(run_dir: str) -> Manifest:
    files = payload_files(run_dir)
    for name in names():  # a backend that knows its own layout (e.g. a zarr store) first
        rebuilt = backend_class(name).rebuild(run_dir, files)
        if rebuilt is not None:
            return rebuilt
    header: dict[str, Any]
    if files:  # an acme_xr run that died before its first manifest write
        stem = max(files, key=lambda s: len(files[s]))
        calls = files[stem]
        n = max(calls) + 1
        header = {"payload": payload_name(stem, "{i}"), "group": None, "source": "acme_xr"}
    else:
        found = _acme_stem(run_dir)
        if found is None:
            raise ResultsLayoutError(
                f"cannot rebuild the manifest of {run_dir} by scanning: it holds no "
                "<func>_<i>.h5/.pickle payloads, no zarr store and no results container; "
                "restore its manifest.json from a copy, or run it again")
        stem = found
        n_links, internal = _container_calls(os.path.join(run_dir, f"{stem}.h5"))
        if internal:
            header = {"payload": f"{stem}.h5", "group": "comp_{i}", "source": "acme"}
            calls = {i: "h5" for i in range(n_links)}
        else:
            sub = f"{stem}_payload"
            calls = payload_files(os.path.join(run_dir, sub)).get(stem, {})
            header = {"payload": f"{sub}/{payload_name(stem, '{i}')}", "group": None,
                      "source": "acme"}
        n = max(n_links, max(calls, default=-1) + 1)
        if n == 0:
            raise ResultsLayoutError(f"the ACME run in {run_dir} holds no calls")
    header.update({
        "storage": "single_file" if header["group"] else "hdf5",
        "container": f"{stem}.h5",
        **common_header(stem),
    })
    return rebuilt_manifest(run_dir, n, header, calls)


def rebuilt_manifest(run_dir: str, n: int, header: dict[str, Any],
                     calls: dict[int, str]) -> Manifest:
    """The manifest (state ``"rebuilt"``) of ``n`` calls, ``calls`` ({call: extension} of
    the payload files found) scanned; a backend's :meth:`rebuild` may use it."""
    manifest = Manifest.new(n, header)
    manifest.state = "rebuilt"
    for i, ext in sorted(calls.items()):
        # an acme_xr pickle is the call's result unless an HDF5 payload sits in its place
        if ext == "pickle" and header["source"] == "acme_xr" and (
                header["payload"].endswith(".pickle") or not _exists(run_dir, header, i)):
            manifest.record_done(i, "pickle", None, None)
            continue
        _scan_into(manifest, run_dir, i)
    return manifest


def common_header(stem: str) -> dict[str, Any]:
    """Header entries of a rebuilt manifest (the version, the function's name)."""
    return {"acme_xr_version": __version__,
            "func": {"name": stem, "qualname": None, "module": None},
            "stacked": None, "coords": {}, "rebuilt": True}


def _exists(run_dir: str, header: dict[str, Any], i: int) -> bool:
    return os.path.exists(payload_location(header, run_dir, i)[0])


def _scan_into(manifest: Manifest, run_dir: str, i: int) -> bool:
    """Describe call ``i``'s payload into the manifest; False when it cannot be read."""
    path, group = payload_location(manifest.header, run_dir, i)
    try:
        with h5py.File(path, "r") as fh:
            grp = fh[group] if group else fh
            meta = scan_group(grp, manifest.coord_templates)
    except (OSError, KeyError):
        return False
    manifest.record_done(i, "h5", meta, None)
    return True


def refresh_pending(manifest: Manifest, run_dir: str) -> int:
    """Pick up calls the manifest lists as pending whose payload exists by now.

    For a run that is still going (or was killed between manifest writes). The manifest
    file is not changed: it belongs to the running process. Returns the number found.
    """
    if manifest.header.get("group") or not manifest.header.get("payload"):
        return 0
    pending = manifest.indices(PENDING)
    if not len(pending):
        return 0
    stem_dir = os.path.dirname(payload_location(manifest.header, run_dir, 0)[0])
    present = set()
    with os.scandir(stem_dir) as it:
        for entry in it:
            m = _PAYLOAD.match(entry.name)
            if m:
                present.add((int(m["i"]), m["ext"]))
    found = 0
    for i in pending:
        i = int(i)
        if (i, "h5") in present and _scan_into(manifest, run_dir, i):
            found += 1
        elif (i, "pickle") in present:
            manifest.record_done(i, "pickle", None, None)
            found += 1
    return found
