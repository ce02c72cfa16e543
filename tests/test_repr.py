"""repr() and the notebook HTML of a ParallelMap: state, calls, directory, progress, failures."""

from __future__ import annotations

import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.manifest import Manifest


def ident(i: int) -> int:
    return i


def picky(i: int) -> int:
    if i % 3 == 1:
        raise ValueError(f"bad <input> {i}")
    return i


def text_of(html: str) -> str:
    return "".join(ET.fromstring(html).itertext())  # also: the HTML is well-formed


def test_before_the_run_the_directory_given_is_known(tmp_path: Any) -> None:
    pmap = ParallelMap(ident, list(range(5)), output_dir="run")
    assert pmap.output_dir == os.path.join(str(tmp_path), "run")  # absolute, at once
    assert repr(pmap) == f"ParallelMap(ident, 5 calls, not started, output_dir={pmap.output_dir!r})"
    assert "not started" in text_of(pmap._repr_html_())
    memory = ParallelMap(ident, list(range(5)), write_worker_results=False)
    assert memory.output_dir is None
    assert repr(memory) == "ParallelMap(ident, 5 calls, not started, in memory)"


def test_a_complete_run(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(ident, list(range(8)), output_dir=str(tmp_path / "run"))
    pmap.compute()
    assert repr(pmap) == (f"ParallelMap(ident, 8 calls, complete, 8 done, 0 failed, 0 not run, "
                          f"output_dir={str(tmp_path / 'run')!r})")
    html = pmap._repr_html_()
    text = text_of(html)
    assert "complete" in text and "8 done, 0 failed, 0 not run" in text
    assert f"acme_xr.open_results({str(tmp_path / 'run')!r})" in text
    assert '<progress value="8" max="8">' in html
    assert str(tmp_path / "run" / "ident.log") in text


def test_a_failed_run_names_its_first_failures(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(picky, list(range(12)), output_dir=str(tmp_path / "run"))
    with pytest.raises(Exception, match="4 of 12 calls failed"):
        pmap.compute()
    lines = repr(pmap).splitlines()
    assert lines[0].startswith("ParallelMap(picky, 12 calls, failed, 8 done, 4 failed, 0 not run")
    assert lines[1:] == ["  call 1: ValueError: bad <input> 1", "  call 4: ValueError: bad <input> 4",
                         "  call 7: ValueError: bad <input> 7", "  ... and 1 more failed"]
    html = pmap._repr_html_()
    assert "bad &lt;input&gt; 1" in html and "bad <input> 7" in text_of(html)


def stops_at_3(i: int) -> int:
    if i == 3:
        raise KeyboardInterrupt  # as a Ctrl-C arriving in call 3
    return i


@pytest.mark.parametrize("disk", [True, False])
def test_an_interrupted_run_says_so_and_how_to_finish_it(tmp_path: Any, caplog: Any,
                                                         disk: bool) -> None:
    out = str(tmp_path / "run")
    pmap = ParallelMap(stops_at_3, list(range(6)), output_dir=out if disk else None,
                       write_worker_results=disk)
    caplog.set_level(logging.INFO, logger="acme_xr")
    with pytest.raises(KeyboardInterrupt):
        pmap.compute(debug=True)
    where = f"output_dir={out!r}" if disk else "in memory"
    assert repr(pmap) == f"ParallelMap(stops_at_3, 6 calls, interrupted, 3 done, 0 failed, " \
                         f"3 not run, {where})"
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(
        "interrupted: ")]
    assert message.startswith("interrupted: 3 of 6 calls finished")
    if disk:
        assert f"acme-xr resume {out}" in message
    else:  # nothing computed is lost: the finished values are on the ParallelMap
        assert pmap.results[:3] == [0, 1, 2] and pmap.results[3:] == [None] * 3


def slow_ident(i: int) -> int:
    time.sleep(0.2)
    return i


def test_while_running_it_shows_the_progress(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(slow_ident, list(range(20)), output_dir=str(tmp_path / "run"),
                       batch_size=1)
    worker = threading.Thread(target=pmap.compute)
    worker.start()
    seen = []
    deadline = time.monotonic() + 120
    while worker.is_alive() and time.monotonic() < deadline:
        seen.append(repr(pmap))
        time.sleep(0.05)
    worker.join(timeout=120)
    running = [r for r in seen if ", running, " in r]
    assert running, seen[-3:]
    assert any(not r.split(", running, ")[1].startswith("0 done") for r in running)
    assert "complete, 20 done" in repr(pmap)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=40),
       st.sampled_from(["running", "complete", "failed", "interrupted"]),
       st.text(st.characters(exclude_categories=["C", "Zl", "Zp"]), max_size=30))
def test_the_counts_and_failures_shown_are_the_manifests(status: list[int], state: str,
                                                         message: str) -> None:
    pmap = ParallelMap(ident, list(range(len(status))), output_dir="/data/run")
    m = pmap.manifest = Manifest.new(len(status), {"func": {"name": "ident"}})
    m.state = state
    m.status[:] = np.array(status)
    for i in np.flatnonzero(m.status == 2):
        m.errors[int(i)] = {"type": "ValueError", "message": message}
    done, failed = status.count(1), status.count(2)
    text = repr(pmap)
    assert text.splitlines()[0] == (
        f"ParallelMap(ident, {len(status)} calls, {state}, {done} done, {failed} failed, "
        f"{status.count(0)} not run, output_dir='/data/run')")
    assert len(text.splitlines()) == 1 + min(failed, 3) + (failed > 3)
    html = pmap._repr_html_()
    assert f'<progress value="{done + failed}" max="{len(status)}">' in html
    shown = text_of(html)
    for i in list(np.flatnonzero(m.status == 2))[:3]:
        words = " ".join(message.split())
        assert f"call {i}ValueError:{' ' + words if words else ''}"[:120] in shown
