"""The course as a website: an HTML book built from the executed notebooks of a headless run (no second execution).

`build_book(run_dir, out_dir)` assembles a Sphinx source folder (a syllabus as the front page: each notebook's
goals, prerequisites and run time; one page per executed notebook, in course order), builds it with myst-nb and the
book theme, and returns the HTML folder. Pages request nothing outside the site: myst-nb's widget JavaScript
(require.js and `@jupyter-widgets/html-manager`, which it loads from CDNs by default) and MathJax (Sphinx's default
is a CDN) are taken from the npm registry once, at build time, into the user's cache (`<cache>/book-vendor`,
adnlib/locations.py: $ADNLIB_CACHE or ~/.cache/adnlib), with their licence files, and served from the site's
`_static/`. That `npm pack` is the book's one network use; later builds (and the tests) reuse the cache.

The book is repository authoring (its front page quotes the README), so it lives in the repository's tools/, not in
the installed package.

    python tools/book.py [--run runs/<stamp>] [--out runs/book]     # `make book`
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from hosted import badges_as_links  # tools/hosted.py, beside this file

from adnlib.errors import AdnlibError
from adnlib.locations import cache_dir, require_repository
from adnlib.teach.hosting import PLACEHOLDER
from adnlib.teach.notebooks import NOTEBOOKS

# Pinned: the html-manager that ipywidgets 8 embeds (ipywidgets._version.__html_manager_version__ is ^1.0.1)
VENDOR_PACKAGES = {"requirejs": "2.3.7", "@jupyter-widgets/html-manager": "1.0.15", "mathjax": "3.2.2"}
VENDOR_FILES = {"requirejs": ["require.js", "LICENSE"],
                # the AMD bundle myst-nb loads, its fonts and licences (not the other bundles or the 14 MB source map)
                "@jupyter-widgets/html-manager": ["dist/embed-amd.js", "dist/*.txt", "dist/*.woff*", "dist/*.ttf",
                                                  "dist/*.eot", "dist/*.svg", "LICENSE"],
                # the notebooks' formulas: Sphinx would load MathJax from a CDN
                "mathjax": ["es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/*", "LICENSE"]}
NPM_TIMEOUT_S = 300


class BookError(AdnlibError, RuntimeError):
    """The book cannot be built (no executed notebooks, no widget JavaScript, a Sphinx error)."""


def latest_run(runs: Path | None = None) -> Path:
    """The newest folder under `runs` (default: the repository's runs/) that holds executed course notebooks (what
    `make demo` writes)."""
    runs = runs or require_repository("the book") / "runs"
    candidates = [p for p in runs.iterdir() if p.is_dir() and any((p / f"{n}.ipynb").exists() for n in NOTEBOOKS)] \
        if runs.is_dir() else []
    if not candidates:
        raise BookError(f"no executed notebooks under {runs}: run `make demo` first (the book shows its results)")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def vendor_widget_js(cache: Path) -> Path:
    """require.js and the html-manager bundle (with licences) in `cache`, fetched with `npm pack` once."""
    done = cache / "vendor.json"
    if done.exists() and json.loads(done.read_text()) == VENDOR_PACKAGES:
        return cache
    if shutil.which("npm") is None:
        raise BookError("npm is needed once to fetch the widget JavaScript (require.js, @jupyter-widgets/"
                        f"html-manager) from the npm registry into {cache}; install Node.js/npm")
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, version in VENDOR_PACKAGES.items()]
        try:
            out = subprocess.run(["npm", "pack", "--silent", *specs], cwd=tmp, capture_output=True, text=True,
                                 timeout=NPM_TIMEOUT_S, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise BookError(f"npm pack {' '.join(specs)} failed: {getattr(exc, 'stderr', '') or exc}") from exc
        tarballs = [Path(tmp) / line.strip() for line in out.stdout.splitlines() if line.strip().endswith(".tgz")]
        for name, tarball in zip(VENDOR_PACKAGES, tarballs):
            _extract(tarball, cache / name.replace("/", "__"), VENDOR_FILES[name])
    done.write_text(json.dumps(VENDOR_PACKAGES))
    return cache


def _extract(tarball: Path, target: Path, patterns: list[str]) -> None:
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            relative = Path(member.name).relative_to("package")
            if member.isfile() and any(relative.match(p) for p in patterns):
                member.name = relative.as_posix()
                archive.extract(member, target, filter="data")


CONF = '''project = "AttentDifferNet course"
author = "adnlib contributors"
extensions = ["myst_nb"]
html_theme = "sphinx_book_theme"
html_title = "AttentDifferNet: a course in image-level anomaly detection"
html_static_path = ["_static"]
html_theme_options = {{"use_download_button": True, "home_page_in_toc": True, "show_toc_level": 2}}
nb_execution_mode = "off"  # the notebooks were executed by `make demo`; the book only renders them
# paths relative to _static/: served by the site itself, instead of myst-nb's default CDN addresses
nb_ipywidgets_js = {{"requirejs/require.js": {{}},
                    "html-manager/dist/embed-amd.js": {{"data-jupyter-widgets-cdn": "_static/html-manager/"}}}}
myst_enable_extensions = ["dollarmath"]
mathjax_path = "mathjax/es5/tex-mml-chtml.js"  # served by the site (Sphinx's default is a CDN address)
html_js_files = ["mathjax-widgets.js", "adnlib-book.js"]  # the first before MathJax (deferred): widgets typeset
#                                                           through MathJax 2's API; the second: click to zoom
html_css_files = ["adnlib-book.css"]
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
'''


# The reading column is widened (the page's own table of contents, mostly empty for a notebook, gives way): about
# 960 px at a 1280 px window. Figures are drawn to fit it (at most 940 px at the notebooks' 100 dpi: a 10 pt label
# stays about 10 pt); one that is wider anyway is shrunk to the column rather than scrolled out of view, and a click
# opens it at full size (adnlib-book.js). Code keeps its lines whole (a line is never broken inside a token or its
# indentation lost); a longer one scrolls inside its cell. Text output wraps only at spaces; tables scroll.
BOOK_CSS = """div.cell_output table { display: block; overflow-x: auto; max-width: 100%; }
div.cell_input pre { white-space: pre; overflow-x: auto; }
div.cell_output pre { white-space: pre-wrap; overflow-wrap: normal; word-break: normal; overflow-x: auto; }
div.cell_output img { max-width: 100% !important; height: auto; cursor: zoom-in; }
div.cell_output .jupyter-widgets img { max-width: 100% !important; height: auto !important; }
.bd-sidebar-secondary { display: none !important; }
.bd-main .bd-content .bd-article-container, .bd-page-width { max-width: 100% !important; }
"""

# A click on a figure opens it alone at its full size (in the same tab: back returns to the page).
ZOOM_JS = """document.addEventListener("click", function (event) {
  var image = event.target;
  if (image.tagName === "IMG" && image.closest("div.cell_output") && !image.closest(".jupyter-widgets")) {
    window.location.href = image.currentSrc || image.src;
  }
});
"""


# @jupyter-widgets/html-manager typesets widget labels with MathJax 2's API, `MathJax.Hub.Queue(["Typeset", ...])`,
# whenever `window.MathJax` exists; the book loads MathJax 3, which has no `Hub`, so a page with both widgets and
# formulas raised "Cannot read properties of undefined (reading 'Queue')". This runs before MathJax (which Sphinx
# loads deferred) and gives every object assigned to window.MathJax a `Hub.Queue` that MathJax 3 carries out.
MATHJAX_WIDGETS_JS = """(function () {
  var hub = {Queue: function (command) {
    var mathjax = window.MathJax;
    if (Array.isArray(command) && command[0] === "Typeset" && mathjax && mathjax.typesetPromise) {
      mathjax.typesetPromise([command[2]]).catch(function (error) { console.warn(error); });
    }
  }};
  var current = window.MathJax;
  function withHub(value) {
    if (value && typeof value === "object" && !value.Hub) { value.Hub = hub; }
    return value;
  }
  Object.defineProperty(window, "MathJax", {configurable: true, enumerable: true,
    get: function () { return current; }, set: function (value) { current = withHub(value); }});
  withHub(current);
})();
"""


# A section heading of a notebook's first cell, in either of the course's forms: "**Prerequisites.** text" or
# "### Prerequisites"
SECTION = re.compile(r"^(?:#{2,4}\s*|\*\*)(What you will learn|Prerequisites|Runtime)\.?(?:\*\*)?[ \t]*(.*)$")


def _sections(markdown: str) -> dict[str, str]:
    """{heading: its text} for the 'What you will learn', 'Prerequisites' and 'Runtime' parts of a first cell."""
    found: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        match = SECTION.match(line.strip())
        if match:
            current = match.group(1)
            found[current] = [match.group(2)] if match.group(2) else []
        elif current is not None:
            found[current].append(line)
    return {k: "\n".join(v).strip() for k, v in found.items()}


def _syllabus_entry(name: str, nb: dict) -> str:
    """One notebook on the front page: its title, what it teaches, its prerequisites, and how long it ran here."""
    first = _source(nb["cells"][0]) if nb["cells"] else ""
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("# ")), name)
    parts, sections = [f"### [{title}]({name}.ipynb)", ""], _sections(first)
    if sections.get("What you will learn"):
        goals = re.sub(r"^\* ", "- ", sections["What you will learn"], flags=re.M)
        parts += ["You will learn:", "", goals, ""]
    if sections.get("Prerequisites"):
        needs = " ".join(re.sub(r"^\s*[*-] ", "", sections["Prerequisites"], flags=re.M).split())  # one paragraph
        parts += [f"*Needs:* {needs}", ""]
    seconds = nb.get("metadata", {}).get("papermill", {}).get("duration")
    if isinstance(seconds, (int, float)):
        parts += [f"*Ran in {seconds:.0f} s* in the run shown here.", ""]
    return "\n".join(parts)


def _front_page(notebooks: list[str], run_dir: Path) -> str:
    """A syllabus: the course's aim, then each notebook in order with its goals, prerequisites and run time."""
    readme = (require_repository("the book") / "README.md").read_text()
    aim = readme.split("\n## ")[0].split("\n", 1)[1].strip()  # the README's opening paragraph
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(run_dir.stat().st_mtime))
    entries = "\n".join(_syllabus_entry(n, json.loads((run_dir / f"{n}.ipynb").read_text())) for n in notebooks)
    toc = "\n".join(notebooks)
    return (f"# AttentDifferNet: a course\n\n{aim}\n\n## Syllabus\n\nTake the notebooks in order: each needs "
            f"only earlier ones (its *Needs* line says which). The pages are the notebooks as executed by "
            f"`make demo` ({run_dir.name}, {stamp}), with their figures and widgets; the README in the repository "
            f"has the set-up and the command line."
            f"\n\n{entries}\n```{{toctree}}\n:maxdepth: 1\n:hidden:\n:caption: Notebooks\n\n{toc}\n```\n")


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _shown(value: str) -> str:
    """A parameter's value for the page: a path as its last component (temporary folders mean nothing to a
    reader), anything else as given."""
    text = value.strip()
    if len(text) > 2 and text[0] == text[-1] and text[0] in "'\"" and "/" in text:
        return f'"…/{text[1:-1].rstrip("/").rsplit("/", 1)[-1]}"'
    return text


def _parameters_note(injected: dict) -> dict:
    """papermill's injected-parameters cell as a short markdown note of the values this run used."""
    pairs = [line.split("=", 1) for line in _source(injected).splitlines()
             if "=" in line and not line.lstrip().startswith("#")]
    listed = ", ".join(f"`{name.strip()} = {_shown(value)}`" for name, value in pairs)
    return {"cell_type": "markdown", "metadata": {"tags": ["run-parameters"]},
            "source": f"> **This run's parameters** (set by `make demo`): {listed or 'the defaults above'}."}


# "/site-packages/adnlib/model/weights.py:80: UserWarning: message" and the source line Python prints under it
WARNING_LINE = re.compile(r"^\S*\.py:\d+: (\w*Warning): (.*)$")
# a warning printed while a line was open (a headless progress bar's) lands after that line's text
WARNING_AFTER_TEXT = re.compile(r"^(.+?)(\S*\.py:\d+: \w*Warning: .*)$")
PROGRESS_TEXT = re.compile(r"\d+%\||\d+(?:\.\d+)?(?:it/s|s/it)\b")  # tqdm's bar or rate: a bar's state


def _joined_streams(outputs: list[dict]) -> list[dict]:
    """Consecutive outputs of one stream as one: a progress bar's updates arrive as separate outputs, and only
    joined does each bar come out as one line (its last update) in _quiet_warnings."""
    joined: list[dict] = []
    for output in outputs:
        last = joined[-1] if joined else None
        if (output.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == output.get("name")):
            text = _source({"source": last.get("text", "")}) + _source({"source": output.get("text", "")})
            joined[-1] = {**last, "text": text}
        else:
            joined.append(output)
    return joined


def _quiet_warnings(outputs: list[dict], seen: set[str]) -> list[dict]:
    """stderr outputs with each warning once per notebook (`seen` holds those shown), without file paths or the
    source line Python prints under it."""
    kept = []
    for output in outputs:
        if output.get("output_type") != "stream" or output.get("name") != "stderr":
            kept.append(output)
            continue
        lines, skip_source = [], False
        text = _source({"source": output.get("text", "")})
        for line in (part.rsplit("\r", 1)[-1] for part in text.rstrip("\n").split("\n")):  # \r updates: the last
            after_text = None if WARNING_LINE.match(line) else WARNING_AFTER_TEXT.match(line)
            if after_text:  # a bar's state there is superseded by its later updates; other text keeps its line
                if not PROGRESS_TEXT.search(after_text.group(1)):
                    lines.append(after_text.group(1).rstrip())
                line = after_text.group(2)
            found = WARNING_LINE.match(line)
            if found:
                message = f"{found.group(1)}: {found.group(2)}"
                skip_source = True
                if message not in seen:
                    seen.add(message)
                    lines.append(message)
            elif skip_source and line.startswith("  "):
                skip_source = False
            else:
                skip_source = False
                lines.append(line)
        if any(line.strip() for line in lines):
            kept.append({**output, "text": "\n".join(lines) + "\n"})
    return kept


def _with_run_time(markdown: str, nb: dict) -> str:
    """The first cell with the time the run shown took after its Runtime paragraph, so that a page never states a
    typical time that its own run contradicts without saying so."""
    seconds = nb.get("metadata", {}).get("papermill", {}).get("duration")
    if not isinstance(seconds, (int, float)):
        return markdown
    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        if SECTION.match(line.strip()) and "Runtime" in line:
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].strip()), len(lines))
            lines[end - 1] += f" The run shown on this page took {seconds:.0f} s."
            return "\n".join(lines)
    return markdown


def page_notebook(nb: dict) -> dict:
    """An executed notebook as a book page: the Colab/Kaggle badges as links, or dropped while the course names no
    repository (the placeholder address leads nowhere); papermill's injected-parameters cell replaced by a short
    note of its values; the run's own duration after the Runtime paragraph; each warning once, without file paths;
    solutions folded (cells hidden in JupyterLab get myst-nb's `hide-input` tag: a dropdown)."""
    cells, seen = [], set()
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            cell = {**cell, "outputs": _quiet_warnings(_joined_streams(cell.get("outputs", [])), seen)}
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            cells.append(_parameters_note(cell))
            continue
        if index == 0 and cell["cell_type"] == "markdown":
            source = _source(cell)
            if PLACEHOLDER.split("github.com/", 1)[1] in source:
                source = "\n".join(line for line in source.splitlines() if "[![Open in" not in line)
            cell = {**cell, "source": _with_run_time(badges_as_links(source), nb)}
        if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") and "hide-input" not in tags:
            cell = {**cell, "metadata": {**cell["metadata"], "tags": [*tags, "hide-input"]}}
        cells.append(cell)
    return {**nb, "cells": cells}


def assemble(run_dir: Path, src: Path, vendor: Path) -> list[str]:
    """Sphinx source folder: conf.py, index.md, the executed notebooks, the widget JavaScript -> page names."""
    notebooks = [n for n in NOTEBOOKS if (run_dir / f"{n}.ipynb").exists()]
    if not notebooks:
        raise BookError(f"{run_dir} holds no executed course notebooks")
    shutil.rmtree(src, ignore_errors=True)
    (src / "_static").mkdir(parents=True)
    (src / "conf.py").write_text(CONF.format())
    (src / "index.md").write_text(_front_page(notebooks, run_dir))
    for name in notebooks:
        nb = page_notebook(json.loads((run_dir / f"{name}.ipynb").read_text()))
        (src / f"{name}.ipynb").write_text(json.dumps(nb, ensure_ascii=False))
    shutil.copytree(vendor / "requirejs", src / "_static" / "requirejs")
    shutil.copytree(vendor / "@jupyter-widgets__html-manager", src / "_static" / "html-manager")
    shutil.copytree(vendor / "mathjax", src / "_static" / "mathjax")
    (src / "_static" / "mathjax-widgets.js").write_text(MATHJAX_WIDGETS_JS)
    (src / "_static" / "adnlib-book.css").write_text(BOOK_CSS)
    (src / "_static" / "adnlib-book.js").write_text(ZOOM_JS)
    return notebooks


def build_book(run_dir: str | Path | None = None, out_dir: str | Path | None = None,
               vendor_cache: str | Path | None = None, quiet: bool = True) -> Path:
    """Build the HTML book from `run_dir` (default: the latest run) into out_dir/html (default: the repository's
    runs/book/html) -> that folder. The widget JavaScript comes from `vendor_cache` (default: the user's cache)."""
    repository = require_repository("the book")
    run_dir = Path(run_dir) if run_dir else latest_run()
    out_dir = Path(out_dir) if out_dir else repository / "runs" / "book"
    vendor = vendor_widget_js(Path(vendor_cache) if vendor_cache else cache_dir() / "book-vendor")
    assemble(run_dir, out_dir / "src", vendor)
    html = out_dir / "html"
    shutil.rmtree(html, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q" if quiet else "-v", str(out_dir / "src"), str(html)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BookError(f"sphinx-build failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    # the widget bundle asks for its fonts relative to the module path it was loaded as, from the site's root:
    # @jupyter-widgets/html-manager/dist/ or, depending on the order in which require.js resolves it,
    # @jupyter-widgets/ (both seen in Chromium)
    for fonts in (html / "@jupyter-widgets" / "html-manager" / "dist", html / "@jupyter-widgets"):
        fonts.mkdir(parents=True, exist_ok=True)
        for font in (html / "_static" / "html-manager" / "dist").glob("*"):
            if font.suffix in (".woff", ".woff2", ".ttf", ".eot", ".svg"):
                shutil.copy(font, fonts / font.name)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/book.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="folder of executed notebooks (default: the newest under runs/)")
    parser.add_argument("--out", type=Path, help="the book's folder (default: runs/book in the repository)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        html = build_book(args.run, args.out)
    except AdnlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pages = len(list(html.glob("*.html")))
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file()) / 2 ** 20
    print(f"book: {pages} pages, {size:.1f} MB in {html} ({time.perf_counter() - started:.0f} s); serve it with "
          f"`python -m http.server --bind 127.0.0.1 --directory {html} 8000`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
