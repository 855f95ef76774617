"""Where data, outputs and caches go (adnlib/locations.py), and how the browser tests find Chromium
(tools/browser.py). Nothing here writes outside tmp_path."""
import sys

import pytest
from conftest import load_tool

from adnlib import locations

book = load_tool("book.py")  # tools/book.py, imported before any test moves locations.CANDIDATE


@pytest.fixture
def installed_layout(tmp_path, monkeypatch):
    """adnlib as if installed: its parent folder is no checkout; the user's folders under tmp_path."""
    monkeypatch.setattr(locations, "CANDIDATE", tmp_path / "site-packages")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in ("ADNLIB_RUNS", "ADNLIB_CACHE", "ADNLIB_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_this_checkout_is_recognised():
    assert locations.in_repository()
    assert locations.default_demo_root() == locations.CANDIDATE / "data" / "demo"
    assert locations.notebook_dir() == locations.CANDIDATE / "notebooks"


def test_a_folder_with_notebooks_and_pyproject_but_another_adnlib_is_no_checkout(tmp_path, monkeypatch):
    # catches a check that looks only for the files: site-packages may hold a notebooks/ folder of another package
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setattr(locations, "CANDIDATE", tmp_path)
    assert not locations.in_repository()


def test_installed_defaults_are_the_users_folders(installed_layout):
    tmp = installed_layout
    assert not locations.in_repository()
    assert locations.default_demo_root() == tmp / "xdg-data" / "adnlib" / "demo"
    assert locations.runs_root() == tmp / "runs"  # the current folder
    assert locations.cache_dir() == tmp / "xdg-cache" / "adnlib"
    assert locations.notebook_dir() == locations.PACKAGE / "notebooks"  # the wheel's copy


def test_environment_variables_win(installed_layout, monkeypatch):
    monkeypatch.setenv("ADNLIB_RUNS", str(installed_layout / "my-runs"))
    monkeypatch.setenv("ADNLIB_CACHE", str(installed_layout / "my-cache"))
    assert locations.runs_root() == installed_layout / "my-runs"
    assert locations.cache_dir() == installed_layout / "my-cache"


def test_repository_authoring_refuses_outside_a_checkout(installed_layout):
    with pytest.raises(locations.NoRepositoryError, match="the book works on a checkout of the adnlib repository"):
        locations.require_repository("the book")


def test_the_book_refuses_outside_a_checkout_with_one_error_line(installed_layout, capsys):
    assert book.main(["--run", str(installed_layout)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the book works on a checkout")
    assert len(err.strip().splitlines()) == 1


# --- tools/browser.py -------------------------------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path, monkeypatch):
    """tools/browser.py with no Chromium anywhere (an empty PATH, no Debian or Playwright browser) and installs
    recorded instead of run."""
    module = load_tool("browser.py")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("ADNLIB_CHROMIUM", raising=False)
    monkeypatch.setattr(module, "DEBIAN", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(module, "_playwright_chromium", lambda playwright=None: None)
    module.installs = []
    monkeypatch.setattr(module, "_install", lambda: module.installs.append(True))
    return module


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_chromium_on_the_path_is_found_without_installing(browser, tmp_path):
    chromium = _executable(tmp_path / "bin" / "chromium")
    assert browser.ensure() == chromium
    assert browser.installs == []


def test_a_named_chromium_wins_and_a_missing_one_is_not_replaced(browser, tmp_path, monkeypatch):
    _executable(tmp_path / "bin" / "chromium")
    named = _executable(tmp_path / "elsewhere" / "chrome")
    monkeypatch.setenv("ADNLIB_CHROMIUM", named)
    assert browser.find() == named
    monkeypatch.setenv("ADNLIB_CHROMIUM", str(tmp_path / "missing"))
    assert browser.ensure() is None
    assert browser.installs == []  # the user named a browser: nothing else is installed in its place


def test_no_chromium_tries_an_install_then_says_what_to_install(browser, capsys):
    assert browser.main([]) == 2
    assert browser.installs == [True]
    err = capsys.readouterr().err
    assert err.startswith("error: no Chromium for the browser tests: install Debian's chromium")
    assert len(err.strip().splitlines()) == 1
    assert sys.executable in err  # the Playwright command names this interpreter
