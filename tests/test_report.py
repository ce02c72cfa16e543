"""The HTML run report (acme_xr.report, pmap.report()): real runs on the LocalCluster, the
figures decoded as PNG images, every string from the run escaped."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import struct
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_xr import ParallelMap
from acme_xr.errors import ComputeError, InputError
from acme_xr.manifest import DONE, FAILED, PENDING, Manifest
from acme_xr.report import (
    FIGURE_WIDTH,
    HISTOGRAM_HEIGHT,
    render_report,
    timeline_height,
    write_report,
)

DATA = os.path.join(os.path.dirname(__file__), "data", "runs")
HOSTILE = "<script>alert('x')</script> & \"q\""


def flaky(i: int) -> np.ndarray:
    if i % 4 == 1:
        raise ValueError(f"call {i}: {HOSTILE}")
    return np.arange(3.0) * i


def png_sizes(page: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, read from its IHDR chunk."""
    sizes = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        png = base64.b64decode(data, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        sizes.append(struct.unpack(">II", png[16:24]))
    return sizes


def failure_rows(page: str) -> list[int]:
    section = page.split("Failures (", 1)[1]
    return [int(c) for c in re.findall(r"<tr><td>(\d+)</td><td>", section)]


@pytest.fixture
def failed_run(client: Any, tmp_path: Any) -> tuple[str, ParallelMap]:
    out = str(tmp_path / "run")
    with ParallelMap(flaky, list(range(9)), output_dir=out, verbose=False) as pmap:
        with pytest.raises(ComputeError):
            pmap.compute()
    return out, pmap


def test_report_of_a_run_with_failures(failed_run: tuple[str, ParallelMap]) -> None:
    out, pmap = failed_run
    path = pmap.report()
    assert path == os.path.join(out, "report.html")
    page = open(path, encoding="utf-8").read()
    manifest = Manifest.read(out)
    workers = {manifest.host[i] for i in range(manifest.n_inputs)}
    assert png_sizes(page) == [(FIGURE_WIDTH, HISTOGRAM_HEIGHT),
                               (FIGURE_WIDTH, timeline_height(len(workers)))]
    assert failure_rows(page) == [1, 5]
    assert HOSTILE not in page and html.escape(f"call 5: {HOSTILE}") in page
    assert "Traceback" in page  # the worker's traceback, in the failures table
    assert "Memory is not recorded" in page
    for worker in workers:
        assert html.escape(str(worker)) in page
    assert "7 done" in page and "2 failed" in page


def test_report_without_matplotlib_keeps_the_tables(
        failed_run: tuple[str, ParallelMap], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any) -> None:
    out, _ = failed_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    page = open(write_report(out, tmp_path / "r.html"), encoding="utf-8").read()
    assert png_sizes(page) == []
    assert 'pip install "acme_xr[report]"' in html.unescape(page)
    assert failure_rows(page) == [1, 5]


def test_report_of_a_run_in_memory(client: Any, tmp_path: Any) -> None:
    pmap = ParallelMap(flaky, [0, 2, 3], write_worker_results=False, verbose=False)
    with pytest.raises(InputError, match="compute"):
        pmap.report()
    with pmap:
        pmap.compute()
    page = open(pmap.report(), encoding="utf-8").read()
    assert os.path.exists(tmp_path / "acme_xr_flaky_report.html")
    assert len(png_sizes(page)) == 2 and "3 done" in page


def test_report_of_a_manifest_without_start_times(tmp_path: Any) -> None:
    # format 2, before calls.start: no timeline, said so; the histogram and failures stay
    run = shutil.copytree(os.path.join(DATA, "manifest-v2", "hdf5"), tmp_path / "v2")
    page = open(write_report(run), encoding="utf-8").read()
    assert png_sizes(page) == [(FIGURE_WIDTH, HISTOGRAM_HEIGHT)]
    assert "No start times recorded" in page
    assert failure_rows(page) == [2]


def test_report_of_an_acme_run(tmp_path: Any) -> None:
    # no manifest at all: rebuilt by scanning (not saved), durations unknown
    page = open(write_report(os.path.join(DATA, "acme-2026.6.2", "run"), tmp_path / "a.html"),
                encoding="utf-8").read()
    assert png_sizes(page) == [(FIGURE_WIDTH, HISTOGRAM_HEIGHT)]  # an empty histogram
    assert "No start times recorded" in page and "0 failed" in page
    assert not os.path.exists(os.path.join(DATA, "acme-2026.6.2", "run", "manifest.json"))


text = st.text(alphabet=st.sampled_from("<>&\"'ab /\n"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(calls=st.lists(st.tuples(st.sampled_from([PENDING, DONE, FAILED]), text, text,
                                st.floats(0, 100)), min_size=1, max_size=12),
       name=text)
def test_every_string_is_escaped_and_every_failure_listed(
        calls: list[tuple[int, str, str, float]], name: str) -> None:
    m = Manifest.new(len(calls), {"func": {"name": name, "qualname": name}})
    for i, (status, host, message, duration) in enumerate(calls):
        m.duration[i] = duration if status != PENDING else np.nan
        if status == DONE:
            m.record_done(i, "h5", None, host)
        elif status == FAILED:
            m.record_failed(i, {"type": "E" + message, "message": message,
                                "traceback": message}, host)
    page = render_report(m, "<dir>", figures=False)
    body = page.split("<body>", 1)[1]
    # the page's own markup only: no tag or entity from the run survives unescaped
    assert "<dir>" not in body and "<script" not in body
    shown = [name] + [c[1] for c in calls if c[0] != PENDING] + [
        c[2] for c in calls if c[0] == FAILED]
    for s in shown:
        if s:
            assert html.escape(s) in page
    failed = [i for i, c in enumerate(calls) if c[0] == FAILED]
    assert (failure_rows(page) if failed else []) == failed
    c = m.counts
    assert f"{c['done']} done" in page and f"{c['pending']} pending" in page
