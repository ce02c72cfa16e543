"""The calls log of manifest format 4 after a crash: a torn last block is detected and
ignored, nothing recorded before it is lost, and its calls are found again from the
payloads (open_results) or adopted without running (resume)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap, open_results
from acme_xr.manifest import DONE, PENDING, Manifest
from acme_xr.manifest_log import HEADER, read_blocks
from acme_xr.scan import refresh_pending

N = 6


def spectrum(i: int, markers: str) -> np.ndarray:
    open(os.path.join(markers, str(i)), "w").close()
    return np.arange(3.0) + i


@pytest.fixture(scope="module")
def two_flushes(tmp_path_factory: Any) -> tuple[str, bytes, int]:
    """A finished run whose log holds two blocks: calls 0-2, then 3-5 appended (as two
    flushes of a running run leave it); (run, the log's bytes, where the last block starts)."""
    base = tmp_path_factory.mktemp("torn")
    out, markers = str(base / "run"), str(base / "markers")
    os.mkdir(markers)
    ParallelMap(spectrum, list(range(N)), markers, output_dir=out,
                verbose=False).compute(debug=True)
    m = Manifest.read(out)
    for i in range(3, N):
        m.forget(i)
    m.state = "running"
    m.write(out)  # the first flush: calls 0-2
    with open(os.path.join(out, "manifest.calls"), "rb") as fh:
        before = fh.read()
    assert refresh_pending(m, out) == 3  # calls 3-5 finish
    m.flush(out)  # the second: appends their records
    with open(os.path.join(out, "manifest.calls"), "rb") as fh:
        data = fh.read()
    assert len(data) > len(before) and data[:len(before)] == before
    return out, data, len(before)


def torn_copy(two_flushes: tuple[str, bytes, int], cut: int, where: str) -> str:
    out, data, _ = two_flushes
    shutil.copytree(out, where, dirs_exist_ok=True)
    with open(os.path.join(where, "manifest.calls"), "wb") as fh:
        fh.write(data[:cut])
    return where


def test_the_log_holds_two_blocks(two_flushes: tuple[str, bytes, int]) -> None:
    _, data, first = two_flushes
    *blocks, end = read_blocks(data)
    assert len(blocks) == 2 and end.offset == len(data) and not end.torn  # type: ignore[union-attr]
    assert len(HEADER) < first


def test_every_cut_inside_the_last_block_keeps_what_came_before(
        two_flushes: tuple[str, bytes, int], tmp_path: Any) -> None:
    out, data, first = two_flushes
    where = str(tmp_path / "run")
    shutil.copytree(out, where)
    log = os.path.join(where, "manifest.calls")
    for cut in range(first, len(data)):  # every byte offset inside the last block
        with open(log, "wb") as fh:
            fh.write(data[:cut])
        m = Manifest.read(where)
        assert m.status.tolist() == [DONE] * 3 + [PENDING] * 3, cut
        assert m.state == "running"
        assert [m.variables["result_0"].shapes[i] for i in range(3)] == [(3,)] * 3
        # a further flush does not append after the torn bytes: it rewrites the log
        assert refresh_pending(m, where) == 3
        m.flush(where)
        assert Manifest.read(where).status.tolist() == [DONE] * N, cut


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_torn_finished_run_opens_with_every_call_and_resumes_running_none(
        two_flushes: tuple[str, bytes, int], tmp_path: Any, data: Any) -> None:
    _, log, first = two_flushes
    cut = data.draw(st.integers(first, len(log) - 1), label="cut")
    where = torn_copy(two_flushes, cut, tempfile.mkdtemp(dir=tmp_path))
    header = os.path.join(where, "manifest.json")
    with open(header) as fh:
        d = json.load(fh)
    assert d["counts"]["done"] == N  # written after the last block: it counts its calls
    d["state"] = "complete"  # as if the run had ended: the log still records fewer calls
    with open(header, "w") as fh:
        json.dump(d, fh)
    assert Manifest.read(where).state == "interrupted"  # so its payloads are looked for
    ds = open_results(where)
    assert ds.status.values.tolist() == ["done"] * N
    np.testing.assert_array_equal(ds.result_0.values, [np.arange(3.0) + i for i in range(N)])
    markers = os.path.join(os.path.dirname(two_flushes[0]), "markers")  # the same inputs
    for name in os.listdir(markers):
        os.remove(os.path.join(markers, name))
    ParallelMap(spectrum, list(range(N)), markers, output_dir=where, resume=True,
                verbose=False).compute(debug=True)
    assert os.listdir(markers) == []  # nothing ran again: the payloads were adopted
    assert Manifest.read(where).status.tolist() == [DONE] * N


def test_flushes_and_the_final_write_never_interleave(tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the collector's flushes (appends) and the run's final write (compaction) through one
    # writer, from several threads at once: one at a time, and the log stays whole
    import threading
    import time

    from acme_xr import manifest_io
    from acme_xr.collect import ManifestWriter

    inside: list[int] = []  # the threads writing now (a flush may compact: nested)
    overlaps = [0]
    for name in ("flush", "write_all"):
        real = getattr(manifest_io, name)

        def watched(m: Manifest, d: str, real: Any = real) -> str:
            me = threading.get_ident()
            overlaps[0] += any(t != me for t in inside)
            inside.append(me)
            time.sleep(0.002)  # a slow disk: widens any window
            try:
                return real(m, d)  # type: ignore[no-any-return]
            finally:
                inside.remove(me)

        monkeypatch.setattr(manifest_io, name, watched)
    n = 2_000
    m = Manifest.new(n, {"func": {"name": "f"}})
    writer = ManifestWriter(m, str(tmp_path))
    writer.write()
    meta = (("result_0", (2,), "<f8", ("d",), None, None),)
    m.record_batch(list(range(n)), "h5", [meta] * n, "h/0")
    errors: list[BaseException] = []

    def flush(k: int) -> None:
        try:
            for _ in range(10):
                if k == 0:
                    m.state = "interrupted" if m.state == "running" else "running"
                writer.write()
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert errors == [] and overlaps == [0]
    with open(tmp_path / "manifest.calls", "rb") as fh:
        *_, end = read_blocks(fh.read())
    assert not end.torn  # type: ignore[union-attr]
    assert Manifest.read(str(tmp_path)).counts["done"] == n
