"""Progress bars (adnlib.progress): tqdm.auto normally; in a headless notebook run one plain line per loop."""
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
