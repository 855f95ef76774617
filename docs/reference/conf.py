"""Sphinx configuration of the API reference (`make api-docs`): generated from the docstrings, built offline."""
project = "adnlib"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
html_theme = "sphinx_book_theme"
html_title = "adnlib API reference"
html_theme_options = {"repository_url": "", "use_repository_button": False}
exclude_patterns = ["_build"]
