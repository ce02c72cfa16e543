"""The demo runs end to end as a command, on its own local cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import h5py


def test_demo_command(tmp_path: Any) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "acme_xr", "demo", "--output-dir", str(out), "--channels", "6",
         "--trials", "3", "--workers", "2"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # it says what it does before the cluster's start (not silent), then its dashboard
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("acme_xr demo: low-pass filter 6 channels x 3 trials")
    assert lines[1] == "starting a local dask cluster (2 workers); this takes a few seconds"
    assert re.search(r"^acme_xr: dask dashboard at http://\S+$", proc.stdout, re.M)
    assert "dask dashboard" not in proc.stderr  # once, not also as a log line
    # progress (plain lines: the output is piped), then the run opened with open_results
    assert "\r" not in proc.stdout + proc.stderr
    assert re.search(r"INFO: \d of 6 calls finished \(\d done, 0 failed\)", proc.stderr)
    assert "INFO: 6 calls done, 0 failed, 0 not run, in " in proc.stderr  # the summary
    opened = proc.stdout.index(f"acme_xr.open_results({str(out)!r}):")
    assert proc.stdout.index("<xarray.Dataset>") > opened
    assert "result_0  (call, trial, time) float64" in proc.stdout
    assert "6 calls of lowpass_channel" in proc.stdout
    assert str(out) in proc.stdout
    attenuation = float(proc.stdout.split("attenuated by ")[1].split(" dB")[0])
    assert attenuation > 20  # the low-pass really removes the 80 Hz artefact
    assert sorted(p for p in os.listdir(out) if p.startswith("lowpass_channel_")) == sorted(
        f"lowpass_channel_{i}.h5" for i in range(6))
    with h5py.File(out / "lowpass_channel_5.h5") as fh:
        assert fh["result_0"].shape == (3, 2000)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variables"]["result_0"]["dims"] == ["trial", "time"]
    # running it again replaces the previous demo run instead of failing
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "removing the previous demo run" in again.stdout
