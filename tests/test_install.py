"""Installing acme_xr: the wheel builds without deprecation warnings and carries its licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_without_deprecation_warnings_and_carries_the_license(
        tmp_path: Path) -> None:
    # a copy, so that the build's build/ and *.egg-info stay out of the work tree; -v shows the
    # build backend's own output, where setuptools prints its deprecations
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "acme_xr", src / "acme_xr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", ".", "-w", str(tmp_path)],
        cwd=src, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    warned = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert not warned, "\n".join(warned)

    (wheel,) = tmp_path.glob("acme_xr-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(metadata).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    license_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert f"License-Expression: {license_}" in meta
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert license_ == "BSD-3-Clause"
