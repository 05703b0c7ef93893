"""Sphinx configuration of the isac documentation (``make docs``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # the working tree's isac, also without `pip install -e .`

# Importing isac needs neither a GPU nor a network; keep the build off any GPU that is present.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import isac  # noqa: E402

project = "isac"
author = "isac developers"
copyright = "isac developers, Apache-2.0"
release = version = isac.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "isac_docs",
]

exclude_patterns = ["_build"]
templates_path: list[str] = []
root_doc = "index"
default_role = "literal"  # `x` in a docstring is code, as in markdown
nitpicky = False

html_theme = "alabaster"
html_title = f"isac {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Transmit beamforming for integrated sensing and communication",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "250px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}

# autodoc: documented members in source order; the signature carries the type hints.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
autodoc_inherit_docstrings = False

# napoleon: the docstrings are Google style ("Args:", "Returns:", "Attributes:"); solver classes
# list their options in an "Options:" section and layers their tensor shapes in "Shapes:".
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_custom_sections = [("Options", "params_style"), "Shapes"]
