"""The Chromium that the browser tests (tests/test_book.py, tests/test_lab_live.py) drive through Playwright.

`find()` is the one lookup, used by the tests (tests/conftest.py) and by `ensure()`:
$ADNLIB_CHROMIUM, else Debian's chromium (on the PATH or /usr/bin/chromium), else Playwright's own download.

`python tools/browser.py` (run by `make test` and `.ci/run` before any test) provides one when none is found:
Playwright's own download (`python -m playwright install chromium`, where the machine reaches its server), else, as
root with apt, Debian's chromium (`apt-get install chromium`); otherwise one line says what to install and the exit
status is 2. It prints the browser it found or installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEBIAN = "/usr/bin/chromium"
PLAYWRIGHT_TIMEOUT_S = 300  # the download (~170 MB); a machine that cannot reach it fails or times out
APT_TIMEOUT_S = 900
ADVICE = ("install Debian's chromium (sudo apt-get install chromium) or Playwright's "
          f"({sys.executable} -m playwright install chromium), or name one in ADNLIB_CHROMIUM")


def _playwright_chromium(playwright=None) -> str | None:
    """Playwright's own Chromium, when it was downloaded (the path Playwright would launch). `playwright`: a
    running sync Playwright to ask (a second one cannot start inside it: "Sync API inside the asyncio loop")."""
    if playwright is not None:
        path = playwright.chromium.executable_path
        return path if Path(path).is_file() else None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as running:
        path = running.chromium.executable_path
    return path if Path(path).is_file() else None


def find(playwright=None) -> str | None:
    """The Chromium executable to drive, or None when there is none on this machine. `playwright`: the running
    sync Playwright of a test, if any (asked for its own Chromium instead of starting another)."""
    named = os.environ.get("ADNLIB_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    debian = shutil.which("chromium") or (DEBIAN if Path(DEBIAN).is_file() else None)
    return debian or _playwright_chromium(playwright)


def _run(command: list[str], timeout: int, env: dict | None = None) -> bool:
    """Run an install step quietly; whether it succeeded within its time."""
    try:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                              env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _install() -> None:
    """Try Playwright's download, then (as root with apt) Debian's package."""
    print("no Chromium found for the browser tests: trying Playwright's download", file=sys.stderr)
    if _run([sys.executable, "-m", "playwright", "install", "chromium"], PLAYWRIGHT_TIMEOUT_S) and find():
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("Playwright's download failed: installing Debian's chromium (apt-get install chromium)", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], APT_TIMEOUT_S, env)
        _run(["apt-get", "install", "-y", "-qq", "chromium"], APT_TIMEOUT_S, env)


def ensure() -> str | None:
    """The Chromium to drive, installed first when none is found; None when none could be provided."""
    found = find()
    if found is None and not os.environ.get("ADNLIB_CHROMIUM"):  # a named browser that is missing is not replaced
        _install()
        found = find()
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse
    argparse.ArgumentParser(prog="python tools/browser.py", description=__doc__.split("\n\n")[0]).parse_args(argv)
    found = ensure()
    if found is None:
        print(f"error: no Chromium for the browser tests: {ADVICE}", file=sys.stderr)
        return 2
    print(f"browser for the tests: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
