"""Progress bars: a widget in JupyterLab and a terminal bar on the command line (tqdm.auto), and in headless
notebook runs (`adnlib notebooks`, `make demo`, papermill with `--engine adnlib`) one plain line per loop.

Why the headless mode: a tqdm widget in an executed notebook is saved as a widget view; in the HTML book it renders
as an empty band (about 400 px per training run), and every per-epoch or per-batch bar adds one. The `adnlib`
engine (adnlib.teach.nbengine) starts the kernel with PLAIN_PROGRESS_ENV=1 (unless the caller's environment sets it,
e.g. to 0 for widgets); then only the outermost bar of a
loop is shown, as text on stderr with its final state kept (the book keeps the last update of a line), and the
nested ones (epochs inside a run, batches inside a scoring) stay quiet.
"""
from __future__ import annotations

import os
import sys

PLAIN_PROGRESS_ENV = "ADNLIB_PLAIN_PROGRESS"
PLAIN_MININTERVAL_S = 15.0  # headless: at most one update per 15 s (the executed notebook stores each update)


def plain_progress() -> bool:
    """True in a headless notebook run (the kernel's environment has PLAIN_PROGRESS_ENV=1)."""
    return os.environ.get(PLAIN_PROGRESS_ENV, "") == "1"


def progress_bar(iterable=None, *, disable: bool = False, leave: bool = True, **kwargs):
    """tqdm.auto's bar; in a headless notebook run a plain text bar, shown only when no other bar is open."""
    if not plain_progress():
        from tqdm.auto import tqdm
        return tqdm(iterable, disable=disable, leave=leave, **kwargs)
    from tqdm.std import tqdm
    nested = any(not bar.disable for bar in list(getattr(tqdm, "_instances", ())))
    kwargs.setdefault("mininterval", PLAIN_MININTERVAL_S)
    kwargs.setdefault("maxinterval", 4 * PLAIN_MININTERVAL_S)  # tqdm's monitor forces a refresh after maxinterval
    return tqdm(iterable, disable=disable or nested, leave=True, file=sys.stderr, ascii=True, **kwargs)
