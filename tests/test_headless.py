"""Headless notebook runs (adnlib's papermill engine): widget cells never stall, a hanging cell fails fast and is
named, and the per-cell limits follow the tags and the preset."""
import base64
import re
import time
from datetime import datetime

import nbformat
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from adnlib.teach.notebooks import CellLimits, NotebookError, run_notebook

SETUP = """import matplotlib.pyplot as plt, numpy as np, ipywidgets as widgets
from IPython.display import display
%matplotlib inline"""
# The shape of notebook 03's former viewer: an `interactive` whose callback shows a figure with plt.show(), so
# that a large PNG is captured in an Output widget at the very end of the cell.
OUTPUT_WIDGET_VIEWER = """def show(image, block):
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
    for ax in axes:
        ax.imshow(np.random.default_rng(image + block).random((256, 256)))
    plt.show()
    return fig
display(widgets.interactive(show, image=widgets.Dropdown(options=[0, 1], value=0),
                            block=widgets.IntSlider(value=3, min=1, max=3)))"""


def _notebook(tmp_path, *sources):
    nb = new_notebook(cells=[new_code_cell("output_dir = None", metadata={"tags": ["parameters"]}),
                             *[new_code_cell(s) for s in sources]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    return path


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_output_widget_cells_do_not_stall(tmp_path):
    """Each cell ends as soon as the kernel has replied: with nbclient's echo of widget outputs to the kernel, the
    reply's wake-up was lost and every such cell waited for its time limit (or for a 1 s poll slice)."""
    source = _notebook(tmp_path, SETUP, *[OUTPUT_WIDGET_VIEWER] * 4)
    run = run_notebook("probe", tmp_path / "out", source=source, limits=CellLimits(short=60, long=60))
    executed = nbformat.read(run.output, as_version=4)
    for cell in executed.cells[2:]:
        lag = _seconds(cell.metadata.papermill.end_time) - _seconds(cell.metadata.execution["shell.execute_reply"])
        assert lag < 0.5, f"the client woke {lag:.2f} s after the kernel's reply"
    # The captured figures are still saved in the Output widgets' state (a rendered site shows them).
    state = executed.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    pngs = [o for m in state.values() if m["model_name"] == "OutputModel"
            for o in m["state"].get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 4
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_hanging_cell_fails_fast_and_is_named(tmp_path):
    source = _notebook(tmp_path, "x = 1", "import time\ntime.sleep(3600)  # hangs on purpose", "y = 2")
    started = time.perf_counter()
    with pytest.raises(NotebookError) as caught:
        run_notebook("probe", tmp_path / "out", source=source, limits=CellLimits(short=4, long=4))
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    assert "probe" in message
    assert "cell 3" in message
    assert "import time" in message
    assert "4 s" in message
    assert elapsed < 40, f"a 4 s limit took {elapsed:.0f} s to fail"


def test_cell_limits_follow_tags_preset_and_environment(monkeypatch):
    short, tagged = new_code_cell("x"), new_code_cell("train()", metadata={"tags": ["long"]})
    monkeypatch.delenv("ADNLIB_CELL_TIMEOUT", raising=False)
    monkeypatch.delenv("ADNLIB_LONG_CELL_TIMEOUT", raising=False)
    demo = CellLimits.for_run({"preset": "demo"})
    assert demo(short) == 120
    assert demo(tagged) == 3600
    assert CellLimits.for_run({"preset": "paper"})(tagged) is None  # hours of CPU training are not a stall
    monkeypatch.setenv("ADNLIB_CELL_TIMEOUT", "7")
    monkeypatch.setenv("ADNLIB_LONG_CELL_TIMEOUT", "0")
    limits = CellLimits.for_run({"preset": "demo"})
    assert limits(short) == 7
    assert limits(tagged) is None
    monkeypatch.setenv("ADNLIB_CELL_TIMEOUT", "soon")
    with pytest.raises(NotebookError, match="ADNLIB_CELL_TIMEOUT"):
        CellLimits.for_run({})


def test_every_training_cell_is_tagged_long():
    """A cell that trains or runs a grid must carry the `long` tag, or the short limit would cut a healthy run."""
    from adnlib.teach.notebooks import NOTEBOOK_DIR, NOTEBOOKS
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        for index, cell in enumerate(nb.cells):
            trains = cell.cell_type == "code" and re.search(r"(?<![.\w])(train|run_grid)\(", cell.source)
            if trains and "parameters" not in cell.metadata.get("tags", []):  # solutions too: they run
                assert "long" in cell.metadata.get("tags", []), f"{name} cell {index}: {cell.source[:60]!r}"
