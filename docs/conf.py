"""Sphinx configuration of the API reference: autodoc reads the docstrings, napoleon their Google style.

    pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import acclip_optax  # pylint: disable=g-import-not-at-top,wrong-import-position

project = "acclip-optax"
release = acclip_optax.__version__
version = release
author = "the acclip-optax authors"
copyright = "the acclip-optax authors"  # pylint: disable=redefined-builtin

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]

# The reference is the .rst pages; the results and benchmark pages are Markdown read on the repository host.
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # a state's "Attributes:" as fields, not as attribute entries that would repeat
napoleon_custom_sections = [("References", "params_style")]

html_theme = "alabaster"
html_title = f"acclip-optax {release}"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):  # pylint: disable=unused-argument
  """A state's fields are described by its docstring; their generated "Alias for field number" is noise."""
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return skip


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
