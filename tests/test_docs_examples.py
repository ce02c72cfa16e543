"""Every example in the README and the docs runs as a script, as a reader would run it.

The scripts are ``docs/examples/*.py`` (shown in the pages with ``literalinclude``) and every
```` ```python ```` block of README.md and docs/*.md that is a whole script (it has the
``if __name__ == "__main__":`` guard). A block that is not a whole script must say so in its
first line (``# fragment: why``): an unmarked block fails here, so none is silently skipped.
Each script runs as ``python script.py`` in a directory of its own, a few at a time.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUARD = re.compile(r"""^if __name__ == (["'])__main__\1:""", re.M)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?:python|py|python3)[ \t]*\n(?P<code>.*?)^(?P=indent)```",
                   re.M | re.S)
FRAGMENT = "# fragment"
TIMEOUT = 300  # a hang is a failure, not a stuck CI run; a script takes ~5-10 s


@dataclass(frozen=True)
class Block:
    """One ```python block of a Markdown file."""

    source: Path
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"

    @property
    def is_fragment(self) -> bool:
        return self.code.lstrip().startswith(FRAGMENT)

    @property
    def is_script(self) -> bool:
        return GUARD.search(self.code) is not None


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def python_blocks(path: Path, text: str | None = None) -> list[Block]:
    text = path.read_text() if text is None else text
    return [Block(path, text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group("code")))
            for m in FENCE.finditer(text)]


def example_files() -> list[Path]:
    return sorted((DOCS / "examples").glob("*.py"))


def scripts() -> dict[str, str]:
    """Name -> code of every script the docs and the README show."""
    out = {str(p.relative_to(ROOT)): p.read_text() for p in example_files()}
    for path in markdown_files():
        out.update({b.name: b.code for b in python_blocks(path)
                    if b.is_script and not b.is_fragment})
    return out


def _run(code: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True)
    script = workdir / "example.py"
    script.write_text(code)
    # the work tree's acme_xr; tests/ for example_backend, which docs/developer.md imports
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "example.py"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The selected scripts, started a few at a time: each waits mostly for its cluster."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_script_runs"
                and hasattr(item, "callspec")]
    code = scripts()
    base = tmp_path_factory.mktemp("docs_examples")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures: dict[str, Future[subprocess.CompletedProcess[str]]] = {
            name: pool.submit(_run, code[name], base / f"run{i}")
            for i, name in enumerate(selected)}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(scripts()))
def test_script_runs(name: str, runs: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    proc = runs[name].result()
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-5000:]}")


def test_every_python_block_is_a_script_or_a_marked_fragment() -> None:
    unmarked = [b.name for path in markdown_files() for b in python_blocks(path)
                if not b.is_script and not b.is_fragment]
    assert not unmarked, (
        "these ```python blocks are neither whole scripts (with the "
        "`if __name__ == \"__main__\":` guard) nor marked `# fragment: why` in their first "
        f"line: {unmarked}")


def test_every_fragment_is_valid_python() -> None:
    # a fragment is not run, but it is still copied: it must at least parse
    broken = []
    for path in markdown_files():
        for block in python_blocks(path):
            try:
                ast.parse(block.code)
            except SyntaxError as exc:
                broken.append(f"{block.name}: {exc}")
    assert not broken, broken


def test_every_example_has_the_guard_and_is_shown_in_a_page() -> None:
    pages = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    assert example_files()
    for path in example_files():
        assert GUARD.search(path.read_text()), f"{path.name} has no __main__ guard"
        assert f"literalinclude}} examples/{path.name}" in pages, (
            f"docs/examples/{path.name} is included in no page")


def test_the_readme_starts_with_a_runnable_quickstart() -> None:
    # the first ```python block is what a new user copies (and the CI walkthrough runs)
    first = python_blocks(ROOT / "README.md")[0]
    assert first.is_script and not first.is_fragment, first.code
    assert "open_results" in first.code
    assert first.name in scripts()


def test_the_api_page_lists_every_public_name() -> None:
    # make docs fails on the same check; this one runs without Sphinx installed
    import acme_xr

    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["api_page_names"]() == set(acme_xr.__all__) - {"__version__"}


def test_fragment_and_script_blocks_are_recognised() -> None:
    text = textwrap.dedent('''\
        ```python
        # fragment: needs a cluster
        x = 1
        ```
        * in a list:

          ```python
          def f():
              pass

          if __name__ == "__main__":
              f()
          ```
        ```pycon
        >>> 1
        ```
        ''')
    blocks = python_blocks(ROOT / "docs" / "probe.md", text)
    assert [(b.is_fragment, b.is_script) for b in blocks] == [(True, False), (False, True)]
    assert blocks[1].code.startswith("def f():\n    pass\n")
