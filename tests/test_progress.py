"""Progress bars (adnlib.progress): tqdm.auto normally; in a headless notebook run one plain line per loop."""
import os

import pytest

from adnlib.progress import PLAIN_PROGRESS_ENV, progress_bar


def test_headless_runs_show_the_outer_bar_only(monkeypatch, capsys):
    # catches nested bars (epochs inside a training run) printed in headless runs: each adds a line, and as widgets
    # each was an empty band in the book
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    for _ in progress_bar(range(3), desc="outer"):
        for _ in progress_bar(range(4), desc="inner", leave=False):
            pass
    err = capsys.readouterr().err
    assert "outer" in err
    assert "3/3" in err
    assert "inner" not in err


def test_a_bar_alone_is_shown_and_kept_in_headless_runs(monkeypatch, capsys):
    # catches the leave=False of a top-level bar (a scoring loop) wiping the only line of a long cell
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    for _ in progress_bar(range(2), desc="scoring", leave=False):
        pass
    assert capsys.readouterr().err.rstrip().rsplit("\r", 1)[-1].startswith("scoring: 100%")


@pytest.mark.parametrize("plain", ["", "1"])
def test_disable_is_respected(monkeypatch, capsys, plain):
    # catches the headless branch dropping `disable` (a CLI run with --no-progress printing bars)
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, plain)
    assert list(progress_bar(range(2), desc="quiet", disable=True)) == [0, 1]
    assert "quiet" not in capsys.readouterr().err


def _fail_inside_a_loop():
    bar = progress_bar(range(3), desc="interrupted")
    for _ in bar:
        raise RuntimeError("a run diverged")


def test_a_loop_that_raised_does_not_quieten_later_bars(monkeypatch, capsys):
    # catches nesting judged from bars that an exception left open (the traceback, kept by IPython as
    # sys.last_traceback, holds the frame and its bar): every later bar of the kernel would count as nested and stay
    # silent
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    with pytest.raises(RuntimeError) as kept:
        _fail_inside_a_loop()
    assert kept.tb is not None  # the frame, and its bar, stay alive while this test runs
    for _ in progress_bar(range(2), desc="next run"):
        pass
    assert "next run" in capsys.readouterr().err


def test_a_grid_callback_that_raises_closes_the_grid_bar(monkeypatch, tmp_path):
    # catches the grid's bar created outside its `with` (a raising on_cell for a reused cell left it open)
    from tqdm.std import tqdm

    from adnlib.config import preset
    from adnlib.run import grid
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    monkeypatch.setattr(grid, "_plan", lambda *args: [type("Cell", (), {"action": "reuse"})()])
    monkeypatch.setattr(grid, "reused_row", lambda cell: {"cell": "disc/differnet/seed0", "status": "reused"})
    monkeypatch.setattr(grid, "_check_request", lambda base, data_root, categories, *args: categories)

    def fail(*args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as kept:  # the traceback kept, as IPython keeps it
        grid.run_grid(preset("smoke"), tmp_path, ["disc"], ["differnet"], tmp_path / "grid", on_cell=fail)
    assert kept.tb is not None
    assert not [bar for bar in list(tqdm._instances) if not bar.disable]


@pytest.mark.parametrize("caller, expected", [(None, "1"), ("0", "0")])
def test_the_headless_kernel_gets_plain_progress_unless_the_caller_chose(monkeypatch, caller, expected):
    # catches the engine dropping the variable (widget bands in the book again) or overriding a caller's 0
    import asyncio

    from papermill.clientwrap import PapermillNotebookClient

    from adnlib.teach.nbengine import HeadlessClient
    seen = {}

    async def start(self, **kwargs):
        seen.update(kwargs["env"])

    monkeypatch.setattr(PapermillNotebookClient, "async_start_new_kernel", start)
    if caller is None:
        monkeypatch.delenv(PLAIN_PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PLAIN_PROGRESS_ENV, caller)
    client = HeadlessClient.__new__(HeadlessClient)  # no notebook needed: only the kernel's start is exercised
    asyncio.run(client.async_start_new_kernel())
    assert seen[PLAIN_PROGRESS_ENV] == expected
    assert seen.get("PATH") == os.environ.get("PATH")  # the rest of the environment is passed on
