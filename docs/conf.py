"""Sphinx configuration for jwst_klipprep."""

project = "jwst_klipprep"
author = "jwst_klipprep developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_numpy_docstring = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
