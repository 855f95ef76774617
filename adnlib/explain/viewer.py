"""Figure browsers for notebooks: controls above an ``Image`` widget that shows a matplotlib figure as PNG.

Why not ``ipywidgets.interactive`` with ``plt.show()`` in the callback: that captures the figure in an ``Output``
widget, and headless clients (nbclient, under papermill) echo every captured output back to the kernel on the socket
where they await the cell's reply; a large echo can lose the reply's wake-up and stall the run until the cell times
out (see `adnlib.teach.nbengine`). An ``Image`` widget's PNG travels as widget state instead: nothing is echoed, the
first
view is drawn at once, it is saved in the executed notebook's widget state (a rendered site shows it), and in
JupyterLab moving a control redraws it.
"""
from __future__ import annotations

import io
from collections.abc import Callable

# The course's book shows a notebook's figures in a reading column about 960 px wide (a 1280x900 window), and
# Jupyter's inline backend draws a figure at 100 dpi with bbox_inches="tight" (0.1 in of padding on each side), so
# a figure W inches wide takes about 100·W + 20 px. Every figure of adnlib.teach.plots, adnlib.teach.pipeline,
# adnlib.explain.attention_viz and adnlib.explain.gradcam stays within PAGE_WIDTH_IN as rendered
# (tests/test_figures.py): at most FIGURE_WIDTH_IN wide, legends included. (Here, below adnlib.teach, so that the
# explain modules can import it too: layers import only downwards.)
PAGE_WIDTH_IN = 9.4  # 940 px at 100 dpi
FIGURE_WIDTH_IN = PAGE_WIDTH_IN - 0.2  # the widest figure size: savefig's tight box adds 0.1 in on each side


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box, like the inline backend); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure_viewer(render: Callable, controls: dict, dpi: int = 100):
    """A VBox of `controls` (name -> ipywidgets control) over an Image of ``render(**values)``; returns the box.

    `render` returns a matplotlib figure. The first view is drawn before returning, so a headless run gets it
    without waiting for input; each change of a control redraws. ``box.image`` is the Image widget and
    ``box.redraw()`` draws again (both for tests and exercises).
    """
    import ipywidgets as widgets

    # at its own size (a narrower output scrolls): shrunk to the column, its 10 pt labels became unreadable
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="none"))

    def redraw(change=None):
        image.value = figure_png(render(**{name: control.value for name, control in controls.items()}), dpi)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox(list(controls.values())), image])
    box.image, box.redraw = image, redraw
    return box
