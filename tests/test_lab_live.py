"""The widgets, live: JupyterLab on 127.0.0.1 (with a token), notebooks 03 and 04 opened in Chromium (the one
tools/browser.py finds, driven by Playwright), run with the smoke parameters; moving the attention viewer's slider
(03) and the threshold slider (04) must redraw the figure the widget shows. The server and its kernels are stopped
also when the test fails.
"""
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import papermill as pm
import pytest
from conftest import launch_chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from adnlib.teach.notebooks import NOTEBOOK_DIR

SMOKE = {"preset": "smoke", "weights": "none", "device": "cpu", "checkpoints": "", "epochs": 1}
PARAMETERS = {"03_training_attentdiffernet": SMOKE,
              "04_auroc_evaluation": {**SMOKE, "variants": ["differnet"], "n_rotations": 2, "max_rotations": 4}}
START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = int(os.environ.get("ADNLIB_LAB_RUN_TIMEOUT_MS", 900_000))  # the notebook, training included
REDRAW_TIMEOUT_MS = 120_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, tiny_root):
    """Prepared notebooks (parameters injected, not executed; the cut-down data: 8 training images) and a JupyterLab
    server on them."""
    for name, parameters in PARAMETERS.items():
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"), prepare_only=True,
                            parameters={"data_root": str(tiny_root), "output_dir": str(tmp_path / name),
                                        **parameters}, progress_bar=False)
    settings = tmp_path / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)  # every cell rendered, whichever windowing mode this Lab version defaults to
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--ServerApp.root_dir={tmp_path}", f"--IdentityProvider.token={token}",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.workspaces_dir={tmp_path / '.workspaces'}",  # no tabs restored from earlier sessions
               f"--LabApp.user_settings_dir={tmp_path / '.settings'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root; jupyter refuses that unless told
        command.append("--allow-root")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "JUPYTER_PLATFORM_DIRS": "1"}
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start within {START_TIMEOUT_S} s (exit {server.poll()})")
                time.sleep(1)
        yield base, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _run_all(page) -> None:
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # a notebook prepared outside Lab asks which kernel to start: the preferred one (Python 3)
    select = page.locator(".jp-Dialog button.jp-mod-accept")
    try:
        select.wait_for(state="visible", timeout=20_000)
        select.click()
    except PlaywrightTimeout:
        pass  # no dialog: the kernel starts on its own
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.locator(".jp-Notebook:visible").first.click()
    page.keyboard.press("Control+Shift+C")  # the command palette
    page.keyboard.type("Run All Cells")
    page.keyboard.press("Enter")


# per notebook: the widget's own slider, the key (the viewer's block slider starts at its maximum, the threshold
# slider at the F1-best threshold, often the lowest score), and what it redraws: an image's src or an HTML text.
# Both are looked up inside the one output that holds the slider: later cells' progress bars are HTML widgets too.
# The text is read as textContent: where Lab skips rendering cells scrolled out of view, innerText is empty.
WATCH = {"03_training_attentdiffernet": ("ArrowLeft", ".widget-image", "el => el.getAttribute('src')"),
         "04_auroc_evaluation": ("ArrowRight", ".widget-html", "el => el.textContent.trim()")}


def _move_slider_and_watch(page, name: str) -> tuple[str, str]:
    """Press a key on the notebook's slider -> (what the widget showed before, after)."""
    key, shown_selector, read = WATCH[name]
    output = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-slider")).first
    output.wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    slider = output.locator(".widget-slider").first
    shown = output.locator(shown_selector).first
    shown.wait_for(state="attached", timeout=REDRAW_TIMEOUT_MS)
    shown.scroll_into_view_if_needed(timeout=REDRAW_TIMEOUT_MS)
    page.wait_for_function(f"el => !!({read})(el)", arg=shown.element_handle(), timeout=REDRAW_TIMEOUT_MS)
    before = shown.evaluate(read)
    slider.scroll_into_view_if_needed(timeout=REDRAW_TIMEOUT_MS)
    slider.locator(".noUi-handle, [role='slider'], input").first.focus()
    page.keyboard.press(key)
    page.wait_for_function(f"([el, old]) => ({read})(el) !== old", arg=[shown.element_handle(), before],
                           timeout=REDRAW_TIMEOUT_MS)
    return before, shown.evaluate(read)


@pytest.mark.slow(seconds=55)  # a Lab server, Chromium, and the notebook run in the live kernel
@pytest.mark.parametrize("name", list(PARAMETERS))
def test_moving_a_slider_redraws_the_figure(lab, name, screens):
    from playwright.sync_api import sync_playwright
    base, token = lab
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/lab/tree/{name}.ipynb?token={token}", timeout=120_000)
            try:
                _run_all(page)
                before, after = _move_slider_and_watch(page, name)
            finally:  # what the page showed, for the CI artefacts (and for a failure)
                page.screenshot(path=str(screens / f"{name}.png"), full_page=False)
            assert before
            assert after
            assert before != after
            assert not errors, errors
        finally:
            browser.close()
