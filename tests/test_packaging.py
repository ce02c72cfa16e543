"""Packaging: dependencies in step, importing has no side effects, the command works."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_lists_the_pyproject_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {_name(r) for r in pyproject["project"]["dependencies"]}
    if any(r.startswith("dask[distributed]") for r in pyproject["project"]["dependencies"]):
        wanted.add("distributed")  # conda-forge packages the extra separately
    wanted |= {_name(r) for r in pyproject["project"]["optional-dependencies"]["zarr"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    listed = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert listed == wanted


def test_python_311_is_the_minimum_and_the_references_libraries_are_installed() -> None:
    # VirtualiZarr and kerchunk (write_references, acme-xr export) need Python >= 3.11; 3.10
    # is past its end of life: the minimum is raised rather than references made an extra
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11"
    deps = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert {"virtualizarr", "kerchunk", "icechunk", "fastparquet"} <= deps
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python>=3.11" in env["dependencies"]
    readme = (ROOT / "README.md").read_text()
    assert "(>= 3.11)" in readme and ">= 3.10" not in readme


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, logging; hook = sys.excepthook; import acme_xr;"
        "assert sys.excepthook is hook;"
        "assert not logging.getLogger().handlers;"
        "h = logging.getLogger('acme_xr').handlers;"
        "assert len(h) == 1 and isinstance(h[0], logging.NullHandler), h;"
        "assert 'distributed' not in sys.modules, 'distributed imported';"
        "assert 'xarray' not in sys.modules, 'xarray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_command_line_version() -> None:
    out = subprocess.run([sys.executable, "-m", "acme_xr", "--version"], check=True,
                         capture_output=True, text=True).stdout
    import acme_xr

    assert out.strip() == f"acme_xr {acme_xr.__version__}"


def test_the_installed_version_is_the_package_version() -> None:
    from importlib.metadata import version

    import acme_xr

    assert version("acme_xr") == acme_xr.__version__


def test_a_run_in_memory_imports_no_storage_library() -> None:
    # h5py is a tenth of a second of every cold start (client and each worker): runs that
    # keep results in memory must not pay it
    code = (
        "import sys\n"
        "from distributed import Client, LocalCluster\n"
        "from acme_xr import ParallelMap\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "if __name__ == '__main__':\n"
        "    with Client(LocalCluster(n_workers=1, dashboard_address=None)) as client:\n"
        "        out = ParallelMap(double, [1, 2, 3], write_worker_results=False,\n"
        "                          verbose=False).compute()\n"
        "        assert list(out) == [2, 4, 6], out\n"
        "        lib = ('h5py', 'zarr', 'xarray')\n"
        "        seen = client.run(lambda: [m for m in lib if m in sys.modules])\n"
        "        assert seen and all(v == [] for v in seen.values()), seen\n"
        "        assert not [m for m in lib if m in sys.modules], 'imported by the client'\n"
    )
    script = Path(tempfile.mkdtemp()) / "memory_run.py"
    script.write_text(code)
    subprocess.run([sys.executable, str(script)], check=True, cwd=script.parent, timeout=120)
