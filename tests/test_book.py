"""The course book in a real browser: notebooks executed headless, built into HTML offline, served on 127.0.0.1
and opened in Chromium (the one tools/browser.py finds, driven by Playwright with `executable_path`).

Every page must load without a page error, every image must load, the widgets (notebook 03's attention viewer,
notebook 04's threshold slider) must render from their saved state, and no request may leave the local server.
A screenshot of each page is kept in pytest's temporary folder (`screens` in tests/conftest.py).
"""
import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import launch_chromium, load_tool, serve_folder

from adnlib.teach.hosting import PLACEHOLDER
from adnlib.teach.notebooks import NOTEBOOK_DIR, NOTEBOOKS

book_tool, hosted = load_tool("book.py"), load_tool("hosted.py")  # the repository's tools/
build_book, page_notebook = book_tool.build_book, book_tool.page_notebook
launch_urls, repository_url = hosted.launch_urls, hosted.repository_url

PAGE_TIMEOUT_MS = 60_000
FORMULA = "A formula beside the widgets: $\\mathrm{AUROC} = P(s_{+} > s_{-})$ and $$\\mathrm{TPR}(t) = P(s > t)$$"


@pytest.fixture(scope="module")
def executed(course_run, tmp_path_factory):
    """All seven notebooks, executed with smoke parameters (the session's course run, conftest.course_run), copied
    so that this module can edit them."""
    run = tmp_path_factory.mktemp("executed")
    for name in NOTEBOOKS:
        shutil.copy(course_run / f"{name}.ipynb", run)
    # formulas on a page with widgets: the widget bundle calls MathJax 2's API, the book loads MathJax 3
    executed = run / "04_auroc_evaluation.ipynb"
    nb = json.loads(executed.read_text())
    nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": FORMULA})
    executed.write_text(json.dumps(nb))
    return run


@pytest.fixture(scope="module")
def book(executed, tmp_path_factory):
    """The book built from `executed`."""
    return build_book(executed, tmp_path_factory.mktemp("book"))


@pytest.mark.slow(seconds=60)  # shares the executed notebooks with the browser test
def test_headless_progress_is_one_text_line_per_run_not_a_widget(executed):
    # catches tqdm.auto's widgets in headless runs (each an empty band in the book) and nested bars printed as
    # lines of their own: notebook 05 loads its models inside a "models" loop: that loop is one line
    nb = json.loads((executed / "05_gradcam_comparison.ipynb").read_text())
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert not [m for m in state.values() if m.get("model_name") in ("FloatProgressModel", "IntProgressModel")]
    stderr = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                     for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr")
    finals = {line.rsplit("\r", 1)[-1].split(":")[0] for line in stderr.split("\n") if "100%" in line}
    assert "models" in finals, finals
    lines = [part.strip() for part in stderr.replace("\r", "\n").split("\n")]
    assert not [line for line in lines if line.startswith(("epoch ", "se on ", "cbam on "))], lines
    nb = json.loads((executed / "03_training_attentdiffernet.ipynb").read_text())  # a grid: one line per grid
    stderr = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                     for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr")
    assert not [line for line in stderr.replace("\r", "\n").split("\n") if line.strip().startswith("epoch ")]


@pytest.fixture(scope="module")
def site(book):
    """The built site on an HTTP server bound to 127.0.0.1 (a free port), stopped after the tests."""
    with serve_folder(book) as url:
        yield url


def _visit(browser, url: str, name: str, screens: Path) -> dict:
    """Open a page, wait for it and its widgets, record errors, outside requests and images; screenshot it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside, failed = [], [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda response: failed.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    page.on("request", lambda request: outside.append(request.url)
            if urlparse(request.url).hostname not in ("127.0.0.1", None) and not request.url.startswith("data:")
            else None)
    page.goto(url, wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
    widgets = page.locator(".widget-slider, .jupyter-widgets .widget-hslider, .slider-container, .widget-dropdown")
    formulas = page.locator("mjx-container")
    if name in WIDGET_PAGES:
        widgets.first.wait_for(state="attached", timeout=PAGE_TIMEOUT_MS)
    if name == "04_auroc_evaluation":
        formulas.first.wait_for(state="attached", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.currentSrc || e.src, e.complete, "
                                               "e.naturalWidth, e.getBoundingClientRect().width])")
    figures = page.eval_on_selector_all("div.cell_output img", "els => els.map(e => [e.naturalWidth, "
                                        "e.getBoundingClientRect().width, e.getBoundingClientRect().right])")
    # outputs (figures, tables, text) whose content is wider than what the page shows of them: scrolled out of view
    scrolled = page.eval_on_selector_all("div.cell_output", "els => els.filter(e => e.querySelector('img') && "
                                         "e.scrollWidth > e.clientWidth + 1).length")
    progress = page.locator(".widget-hprogress, .widget-progress, progress").count()
    overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    column = page.evaluate("(document.querySelector('article') || document.body).getBoundingClientRect().width")
    links = dict(page.eval_on_selector_all("a", "els => els.map(e => [e.textContent.trim(), e.href])"))
    text = page.inner_text("body")
    folded = page.locator("details.hide.above-input").count()  # myst-nb's dropdown for cells tagged hide-input
    page.screenshot(path=str(screens / f"{name}.png"), full_page=False)
    found = {"errors": errors, "outside": outside, "failed": failed, "images": images, "widgets": widgets.count(),
             "formulas": formulas.count(), "links": links, "text": text, "folded": folded, "figures": figures,
             "progress": progress, "overflow": overflow, "column": column, "scrolled": scrolled}
    page.close()
    return found


WIDGET_PAGES = ("03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison")
# What a student page must not show: the machine's paths, developer notes (issue numbers, dated measurement logs,
# the test suite's files)
MACHINE_PATHS = re.compile(r"(?<![\w.])/(?:tmp|work|root|home|Users|private|var/folders)/")
DEVELOPER_NOTES = re.compile(r"\(issue \d+\)|\bissue \d+\b|tests/test_\w+\.py|20\d\d-\d\d-\d\d")


@pytest.mark.slow(seconds=90)  # reads the course run, builds the book, loads every page in Chromium
def test_every_page_loads_offline_with_figures_that_fit_and_no_machine_paths(site, book, screens):
    # catches figures wider than the reading column (scrolled out of view, or shrunk unreadably), pages with the
    # machine's absolute paths or developer notes, widgets that do not render, requests leaving the site
    from playwright.sync_api import sync_playwright
    pages = {"index": "index.html", **{name: f"{name}.html" for name in NOTEBOOKS}}
    assert all((book / page).is_file() for page in pages.values())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            results = {name: _visit(browser, f"{site}/{page}", name, screens) for name, page in pages.items()}
        finally:
            browser.close()
    for name, found in results.items():
        assert not found["errors"], (name, found["errors"])
        assert not found["outside"], (name, found["outside"][:5])  # nothing requested outside the site
        assert not found["failed"], (name, found["failed"][:5])  # every file the page asks for is in the site
        broken = [src for src, complete, width, _ in found["images"] if not complete or width == 0]
        assert not broken, (name, broken)
        assert found["overflow"] <= 0, name  # the page itself never scrolls sideways
        assert not MACHINE_PATHS.search(found["text"]), (name, MACHINE_PATHS.search(found["text"]))
        assert "PosixPath(" not in found["text"], name  # a cell that ends with a call returning a path
        if name != "index":  # (the front page names the run it shows, with its date)
            assert not DEVELOPER_NOTES.search(found["text"]), (name, DEVELOPER_NOTES.search(found["text"]))
    assert (book / "_static" / "mathjax" / "es5" / "tex-mml-chtml.js").is_file()  # the formula's renderer, local
    for name in NOTEBOOKS:
        found = results[name]
        text = found["text"]
        assert found["column"] >= 900, name  # the wider reading column at a 1280 px window
        assert found["figures"], name
        # every figure fits the column at its own size: drawn for it, neither shrunk (a 10 pt label stays about
        # 10 pt) nor cut off at the column's edge
        too_wide = [(natural, shown) for natural, shown, _ in found["figures"] if natural > found["column"]]
        assert not too_wide, (name, too_wide)
        shrunk = [(natural, shown) for natural, shown, _ in found["figures"] if shown < 0.95 * natural]
        assert not shrunk, (name, shrunk)
        assert found["scrolled"] == 0, (name, found["scrolled"])
        assert "parameters (set by make demo)" in text, name  # the injected cell's note (curly apostrophe)
        assert "# Parameters" not in text, name  # papermill's injected cell is gone
        assert found["folded"] >= 1, name  # the solutions, folded
        assert text.count("UserWarning") <= 1, name  # each warning once, without file paths
        assert ".py:" not in "".join(line for line in text.splitlines() if "Warning" in line), name
        assert found["progress"] == 0, name  # headless progress is one text line per run, no widget bands
        assert "What this run shows" in text, name
        assert re.search(r"The run shown on this page took \d+ s\.", text), name  # beside the typical time
    # the saved widget state is rendered: the attention viewer's sliders, the threshold slider, the CAM browser;
    # each labelled as interactive in JupyterLab only
    for name in WIDGET_PAGES:
        assert results[name]["widgets"] >= 1, name
        assert "Interactive in JupyterLab" in results[name]["text"] or "interactive in JupyterLab" in \
            results[name]["text"], name
    assert results["04_auroc_evaluation"]["formulas"] == 2  # typeset by the local MathJax, beside the widgets
    assert "Syllabus" in results["index"]["text"]
    # the launch links: the notebook's own Colab / Kaggle addresses, as links (the badge images are remote); none
    # while the course names no repository (the placeholder's links lead nowhere)
    for name in NOTEBOOKS:
        if repository_url() == PLACEHOLDER:
            assert "Open in Colab" not in results[name]["links"], results[name]["links"]
            continue
        urls = launch_urls(name, repository_url())
        assert results[name]["links"].get("Open in Colab") == urls["colab"], results[name]["links"]
        assert results[name]["links"].get("Open in Kaggle") == urls["kaggle"]


def _executed(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}


def test_a_page_drops_placeholder_badges_the_injected_cell_and_folds_solutions():
    # catches pages that show papermill's injected cell with temporary paths, badges leading to OWNER/REPOSITORY,
    # or solutions printed in full although JupyterLab folds them
    badges = ("[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research."
              "google.com/github/OWNER/REPOSITORY/blob/main/notebooks/x.ipynb)")
    nb = _executed([
        {"cell_type": "markdown", "metadata": {}, "source": f"# 0 · Title\n\n{badges}\n\n**What you will learn.**"},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "preset = 'demo'", "outputs": []},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
         "source": '# Parameters\npreset = "smoke"\ndata_root = "/tmp/pytest-7/data/demo"\nepochs = 1\n'},
        {"cell_type": "code", "metadata": {"jupyter": {"source_hidden": True}}, "source": "# Solutions", "outputs": []},
    ])
    page = page_notebook(nb)
    first, _, note, solution = page["cells"]
    assert "Open in" not in first["source"]
    assert "**What you will learn.**" in first["source"]
    assert note["cell_type"] == "markdown"
    assert note["source"] == ('> **This run\'s parameters** (set by `make demo`): `preset = "smoke"`, '
                              '`data_root = "…/demo"`, `epochs = 1`.')
    assert "hide-input" in solution["metadata"]["tags"]
    assert nb["cells"][3]["metadata"] == {"jupyter": {"source_hidden": True}}  # the executed notebook is not changed
    warning = ("/x/site-packages/adnlib/model/weights.py:80: UserWarning: random backbone weights\n"
               "  warnings.warn(message)\n")
    stderr = {"output_type": "stream", "name": "stderr", "text": warning + "epoch 1: done\n"}
    warned = page_notebook(_executed([{"cell_type": "code", "metadata": {}, "source": "a", "outputs": [stderr]},
                                      {"cell_type": "code", "metadata": {}, "source": "b",
                                       "outputs": [{**stderr, "text": warning}]}]))
    assert warned["cells"][0]["outputs"][0]["text"] == "UserWarning: random backbone weights\nepoch 1: done\n"
    assert warned["cells"][1]["outputs"] == []  # the same warning again: not repeated
    # a headless progress bar (adnlib.progress) arrives as several stderr outputs: one line on the page, its last
    bar = [{"output_type": "stream", "name": "stderr", "text": f"\rse on disc: {k}/8"} for k in (0, 4, 8)]
    shown = page_notebook(_executed([{"cell_type": "code", "metadata": {}, "source": "c",
                                      "outputs": [*bar, {"output_type": "stream", "name": "stderr", "text": "\n"}]}]))
    assert [o["text"] for o in shown["cells"][0]["outputs"]] == ["se on disc: 8/8\n"]
    # a warning printed while a bar's line is open lands on that line (notebook 06's grid): still shown once, and the
    # bar's superseded state with it is dropped
    grid = [{"output_type": "stream", "name": "stderr", "text": f"\rgrid cells:  {p}%|##   | {k}/6 [00:0{k}]"}
            for k, p in ((3, 50), (4, 67), (6, 100))]
    noisy = [grid[0], {**stderr, "text": warning}, grid[1], {**stderr, "text": warning}, grid[2],
             {**stderr, "text": "\n"}]
    once = page_notebook(_executed([{"cell_type": "code", "metadata": {}, "source": "d", "outputs": noisy}]))
    assert [o["text"] for o in once["cells"][0]["outputs"]] == [
        "UserWarning: random backbone weights\ngrid cells:  100%|##   | 6/6 [00:06]\n"]
    # other text left open before a warning keeps its own line (only a bar's superseded state is dropped)
    texty = [{**stderr, "text": "loading "}, {**stderr, "text": warning.replace("random", "other")}]
    kept = page_notebook(_executed([{"cell_type": "code", "metadata": {}, "source": "e", "outputs": texty}]))
    assert kept["cells"][0]["outputs"][0]["text"] == "loading\nUserWarning: other backbone weights\n"
    real = page_notebook(_executed([{"cell_type": "markdown", "metadata": {},
                                     "source": badges.replace("OWNER/REPOSITORY", "someone/course")}]))
    assert real["cells"][0]["source"].startswith("[Open in Colab](https://colab.research.google.com/github/someone")


def test_the_front_page_lists_each_notebooks_goals_needs_and_run_time():
    # catches a front page that is the README again, or entries whose goals, prerequisites or time are not the
    # notebook's own
    _syllabus_entry = book_tool._syllabus_entry
    first = ("# 02 · Training side by side\n\n[badges]\n\n**What you will learn.**\n- one step, written out;\n"
             "- what makes a comparison\n  *paired*.\n\n**Prerequisites.** Notebooks 00 and\n01.\n\n**Runtime.**")
    nb = {"cells": [{"cell_type": "markdown", "source": first}], "metadata": {"papermill": {"duration": 170.4}}}
    entry = _syllabus_entry("02_training", nb)
    assert entry.startswith("### [02 · Training side by side](02_training.ipynb)")
    assert "- one step, written out;\n- what makes a comparison\n  *paired*." in entry
    assert "*Needs:* Notebooks 00 and 01." in entry
    assert "*Ran in 170 s* in the run shown here." in entry


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_course_notebook_has_goals_and_needs_on_the_front_page(name):
    # catches a syllabus parser that knows one heading style only (00 and 01 write "**What you will learn**",
    # 03 and 05 "### What you will learn" with "*" bullets)
    _syllabus_entry = book_tool._syllabus_entry
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    entry = _syllabus_entry(name, nb)
    assert "You will learn:\n\n- " in entry, entry
    assert "*Needs:* " in entry, entry
    assert "**Runtime" not in entry, entry  # the runtime table stays on the notebook's page


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_needs_only_earlier_notebooks(name):
    # catches a course whose order is circular (an attention notebook that needs the training notebook after it,
    # as before the renumbering): its prerequisites, and the output folders its code reads, are of earlier notebooks
    import re

    _syllabus_entry = book_tool._syllabus_entry
    from adnlib.teach.notebooks import RUN_ORDER
    assert list(NOTEBOOKS) == sorted(NOTEBOOKS)
    assert RUN_ORDER == NOTEBOOKS
    own = int(name[:2])
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    needs = _syllabus_entry(name, nb).split("*Needs:* ", 1)[1].split("\n", 1)[0]
    required = [s for s in re.split(r"(?<=[.;])\s", needs) if not re.search(r"introduces|looks inside", s)]
    assert all(int(n) < own for s in required for n in re.findall(r"\b0(\d)\b", s)), needs  # pointers ahead aside
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    reads = {int(other[:2]) for other in NOTEBOOKS if other != name and f'"{other}"' in code}
    assert all(n < own for n in reads), (name, reads)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_ends_its_teaching_with_a_conclusion(name):
    # catches a notebook that stops after its last figure: the conclusion comes before the exercises and
    # points to the next notebook (the last one says it is the last)
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    heads = ["".join(c["source"]).split("\n", 1)[0] for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert heads.index("## Conclusion") + 1 == heads.index("## Exercises"), heads
    conclusion = next("".join(c["source"]) for c in nb["cells"] if "".join(c["source"]).startswith("## Conclusion"))
    following = NOTEBOOKS[NOTEBOOKS.index(name) + 1:]
    assert (f"notebook {following[0][:2]}" in conclusion) if following else ("last notebook" in conclusion)


def _numbered_sections(name: str) -> set[int]:
    import re
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    return {int(m.group(1)) for c in nb["cells"] if c["cell_type"] == "markdown"
            for m in re.finditer(r"^## (\d+)\.", "".join(c["source"]), re.M)}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_section_reference_names_a_section_that_exists(name):
    # catches a "section 9" in a notebook of eight sections, or a "notebook 02's section 8" that renumbering or a
    # merged section left behind (a reference to another notebook is checked against that notebook's headings)
    import re
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    wrong = []
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        for match in re.finditer(r"[Ss]ections? (\d+)((?:, \d+)*(?:,? and \d+)?)", text):
            numbers = [int(match.group(1)), *map(int, re.findall(r"\d+", match.group(2)))]
            other = re.findall(r"notebook (0\d)", text[max(0, match.start() - 40):match.start()])
            target = next(n for n in NOTEBOOKS if n.startswith(other[-1])) if other else name
            wrong += [f"{text[max(0, match.start() - 40):match.end()]!r}" for n in numbers
                      if n not in _numbered_sections(target)]
    assert not wrong, wrong
