"""Every command and example in the README and docs/ runs as written: the Python examples are executed, the shell
commands parsed by the real parser (and the scripts they name answer --help), the API reference builds from the
docstrings without a warning and lists the whole public API."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import adnlib
from adnlib.cli.parser import build_parser

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
SKIP = "# not run by the tests"  # the first line of an example too costly to run here (it says why)


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.DOTALL)


def _run_examples(blocks: list[str], folder: Path) -> None:
    """Execute the Python blocks in order in `folder`, sharing their names, as a reader pasting them would."""
    names: dict = {}
    here = Path.cwd()
    os.chdir(folder)
    try:
        for block in blocks:
            if not block.startswith(SKIP):
                exec(compile(block, "example", "exec"), names)  # noqa: S102 - the docs' own examples
    finally:
        os.chdir(here)


@pytest.mark.slow(seconds=40)  # six smoke trainings, a localisation, a manifest
def test_the_api_pages_examples_run_as_written(tmp_path):
    # catches an example that drifted from the API (a renamed call, a result key that is not there)
    blocks = _blocks(REPOSITORY / "docs" / "api.md", "python")
    assert len(blocks) >= 7
    _run_examples(blocks, tmp_path)
    assert (tmp_path / "runs" / "grid" / "disc" / "se" / "seed2" / "metrics.json").is_file()
    assert (tmp_path / "release" / "manifest.json").is_file()


@pytest.mark.slow(seconds=12)  # one smoke training
def test_the_readmes_python_example_runs_as_written(tmp_path):
    blocks = _blocks(REPOSITORY / "README.md", "python")
    assert len(blocks) == 1
    _run_examples(blocks, tmp_path)
    assert (tmp_path / "runs" / "se-disc" / "checkpoint.pt").is_file()


def _shell_commands(page: Path) -> list[tuple[str, bool]]:
    """(command, whole) for the concrete commands of a page's bash blocks (continuation lines joined; synopses with
    [options] or <placeholders> and comments left out: whole), and the `adnlib ...` commands quoted inline in its
    prose (often a command's name and an option or two: not whole)."""
    commands = []
    for block in _blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#") and not re.search(r"\[|<|\.\.\.|\|", line):
                commands.append((line, True))
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    commands += [(c, False) for c in re.findall(r"`(adnlib [^`]+)`", text) if not re.search(r"\[|<|\.\.\.", c)]
    return commands


def _options(command: str) -> set[str] | None:
    """The option strings of an `adnlib` command (None: no such command)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse keeps them there
    chosen = sub.choices.get(command)
    return None if chosen is None else {o for a in chosen._actions for o in a.option_strings}  # noqa: SLF001


def _check_command(command: str, whole: bool = True) -> str | None:
    """Why `command` would not run as written (None: it would). A part of a command (whole=False) is checked for
    its command's name and options only."""
    words = shlex.split(command)
    if words[:1] == ["adnlib"] or words[:3] == ["python", "-m", "adnlib"]:
        args = words[1:] if words[0] == "adnlib" else words[3:]
        if not whole:
            options = _options(args[0]) if args else None
            unknown = [w.split("=")[0] for w in args[1:] if w.startswith("--") and w.split("=")[0] not in
                       (options or set())]
            return f"no command {args[0]!r}" if options is None else (f"unknown {unknown}" if unknown else None)
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            return f"the parser refuses it (exit {exc.code})"
        return None
    if words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPOSITORY / "Makefile").read_text(), flags=re.MULTILINE))
        return None if words[1].split("=")[0] in targets or "=" in words[1] else f"no make target {words[1]!r}"
    if words[0] == "python" and words[1].endswith(".py"):
        return None if (REPOSITORY / words[1]).is_file() else f"no script {words[1]}"
    return None  # other tools (git, gh, pip, papermill, conda) are not ours to check


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_of_a_page_parses(page, capsys):
    # catches an option that does not exist (any more), a renamed command or target, a script that moved
    problems = {c: why for c, whole in _shell_commands(page) if (why := _check_command(c, whole))}
    capsys.readouterr()
    assert not problems, problems


def test_every_page_a_page_names_exists():
    # catches a link to a page that moved or was never written
    named = r"\b((?:docs|benchmarks|tools|tests)/[\w./-]+\.(?:md|py|jpg|png))"
    missing = {(page.name, name) for page in PAGES for name in re.findall(named, page.read_text())
               if not (REPOSITORY / name).exists()}
    assert not missing, missing


SCRIPTS = sorted([*(REPOSITORY / "benchmarks").glob("*.py"), *(REPOSITORY / "tools").glob("*.py")])


@pytest.mark.slow(seconds=30)
def test_every_script_answers_help():
    # catches a --help that runs the benchmark, crashes (a KeyError, a '%' in a help string) or needs a GPU
    scripts = [s for s in SCRIPTS if "__main__" in s.read_text()]
    env = {**os.environ, "ADNLIB_OFFLINE": "1"}
    running = {s.name: subprocess.Popen([sys.executable, str(s), "--help"], cwd=REPOSITORY, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for s in scripts}
    failed = {}
    for name, process in running.items():
        out, _ = process.communicate(timeout=120)
        if process.returncode != 0 or not out.strip():
            failed[name] = (process.returncode, out[-300:])
    assert not failed, failed


@pytest.mark.slow(seconds=25)
def test_the_api_reference_builds_from_the_docstrings(tmp_path):
    # catches a public name missing from the reference, or a docstring Sphinx cannot read (warnings are errors)
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", str(REPOSITORY / "docs" /
                           "reference"), str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "html" / "index.html").read_text()
    listed = {n for n in adnlib.__all__ if n not in ("__version__", "regression")}
    assert not [n for n in listed if f"adnlib.{n}" not in page and f'id="adnlib.{n}"' not in page]
    assert "adnlib.regression.drift" in page
