"""Sphinx configuration of the acme_xr documentation (``make docs``; CI builds it with -W)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# the work tree's acme_xr, also where another copy is installed
sys.path.insert(0, str(HERE.parent))

import acme_xr  # noqa: E402

project = "acme_xr"
author = "acme_xr developers"
copyright = "2026, acme_xr developers"
release = version = acme_xr.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinxarg.ext",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]
templates_path = ["_templates"]

# Markdown pages link to each other's sections as page.md#section-title
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
autodoc_member_order = "bysource"
# methods are documented by the class template (autoclass :members:), not by numpydoc's tables
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
# a public function whose parameters or return value go undocumented fails the -W build;
# the exceptions' constructor arguments are their documented attributes
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "RT03", "SS01"}
numpydoc_validation_exclude = {r"^acme_xr\.errors\.", r"\.__init__$"}

html_theme = "pydata_sphinx_theme"
html_title = f"acme_xr {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
# no network in CI: nothing that fetches inventories or fonts at build time


def api_page_names() -> set[str]:
    """The public names docs/api.md documents (autosummary entries, automodule targets)."""
    text = (HERE / "api.md").read_text()
    listed = set(re.findall(r"^\s{3}(\w+)\s*$", text, flags=re.M))
    return listed | set(re.findall(r"automodule:: acme_xr\.(\w+)", text))


def _check_api_lists_all(app: Any) -> None:
    """Every public name (``acme_xr.__all__``) is on the API page, and nothing else is."""
    from sphinx.util import logging

    listed = api_page_names()
    public = set(acme_xr.__all__) - {"__version__"}
    if listed != public:
        logging.getLogger(__name__).warning(
            "docs/api.md lists %s but acme_xr.__all__ has %s: missing %s, not public %s",
            sorted(listed), sorted(public), sorted(public - listed), sorted(listed - public))


def setup(app: Any) -> None:
    app.connect("builder-inited", _check_api_lists_all)
