"""Sphinx configuration for the bpmf documentation.

The source folder is the repository root (``make docs`` runs ``sphinx-build -c docs . ...``),
so the README, the benchmark notes, the changelog and the notebooks are rendered from where
they live instead of being copied; ``docs/`` holds this file, the landing page and the API
pages. Notebooks are rendered as committed (without outputs): they are never executed here.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import bpmf  # noqa: E402

project = "bpmf"
author = "bpmf developers"
copyright = "bpmf developers"  # noqa: A001
version = release = bpmf.__version__

root_doc = "docs/index"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# Only these files are documents (the README is included by docs/index.md, not a page of its own).
include_patterns = [
    "docs/**",
    "bench/README.md",
    "CHANGELOG.md",
    "data/README.md",
    "notebooks/README.md",
    "notebooks/*.ipynb",
]
exclude_patterns = ["docs/_build", "docs/_extra", "**/.ipynb_checkpoints"]

# autodoc / numpydoc
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# MyST and notebooks
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"
suppress_warnings = ["myst.header"]

intersphinx_mapping = {}  # the build runs without network access

html_theme = "pydata_sphinx_theme"
html_title = f"bpmf {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False
# docs/index.md is the landing page; a root index.html forwards to it.
html_extra_path = ["_extra"]
