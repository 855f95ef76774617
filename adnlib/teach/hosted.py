"""The course on Colab and Kaggle: launch badges, the setup cell that installs adnlib there, and its data folders.

Every notebook opens with two badges (Open in Colab, Open in Kaggle) and has one setup cell (tagged `hosted-setup`)
right after its parameters. On your own machine that cell does nothing. On Colab or Kaggle it pip-installs adnlib
with its notebook extras from the repository, pinning the torch and torchvision the platform already has (so they
are never reinstalled), then calls `prepare()`: data and output folders from $ADNLIB_DATA / $ADNLIB_RUNS (set to the
platform's working folder when unset), the demo data generated there (seconds, offline), and a hint to switch to a
GPU runtime when there is none.

The repository's address is written once, in pyproject.toml (`[project.urls] Repository`); the badges and the
setup cells are generated from it. After you publish the course (or fork it), point everything at your copy:

    python -m adnlib.teach.hosted --repository https://github.com/<you>/<repo> [--branch main]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

from adnlib.errors import AdnlibError
from adnlib.locations import NoRepositoryError, require_repository
from adnlib.teach.paths import REPOSITORY

SETUP_TAG = "hosted-setup"
PLACEHOLDER = "https://github.com/OWNER/REPOSITORY"  # what a copy that names no public repository carries
KEEP = ("torch", "torchvision")  # the platform's builds (CUDA-matched there): pinned, never reinstalled
FOLDERS = {"colab": Path("/content"), "kaggle": Path("/kaggle/working")}
GPU_HINT = {"colab": "Runtime > Change runtime type > T4 GPU, then run the notebook again",
            "kaggle": "Settings > Accelerator > GPU (and Settings > Internet on), then run the notebook again"}
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
BADGE_LINE = re.compile(r"^\[!\[Open in Colab\].*$", re.MULTILINE)


class HostedError(AdnlibError, ValueError):
    """The course cannot be set up on a hosted platform (no repository address, a bad address)."""


def detect_platform(environ: dict | None = None, modules: dict | None = None) -> str | None:
    """'kaggle', 'colab' or None (your own machine). Kaggle is checked first: its images may carry Colab's module."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "KAGGLE_KERNEL_RUN_TYPE" in environ:
        return "kaggle"
    if "google.colab" in modules:
        return "colab"
    return None


# GitHub's rules: an owner is 1-39 letters, digits and single inner hyphens; a repository name is letters, digits,
# '.', '_' and '-' (not '.' or '..', at most 100). The setup cell pip-installs from this address on students'
# machines, so nothing else gets through (no other host, no path, query or fragment).
_OWNER = re.compile(r"(?=[A-Za-z0-9-]{1,39}$)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ADDRESS = re.compile(r"https://github\.com/([^/]*)/([^/]*?)(?:\.git)?/?")
# Branch names: git check-ref-format's rules, and only these characters (no quotes, spaces, '#', '@' or '%', which
# would change the pip requirement the name is written into).
_BRANCH_CHARACTERS = re.compile(r"[A-Za-z0-9._/+-]+")


def _github_path(repository: str) -> str:
    """'owner/name' of a GitHub address (https://github.com/owner/name[.git][/]); HostedError for anything else."""
    match = _ADDRESS.fullmatch(repository) if isinstance(repository, str) else None
    if (not match or not _OWNER.fullmatch(match[1]) or not _NAME.fullmatch(match[2])
            or match[2] in (".", "..")):
        raise HostedError(f"not a GitHub repository address: {repository!r} (expected https://github.com/<owner>/"
                          "<name>: owner of letters, digits and single hyphens, name of letters, digits, '.', '_', "
                          "'-')")
    return f"{match[1]}/{match[2]}"


def check_branch(branch: str) -> str:
    """`branch` when it is a valid git branch name (git check-ref-format's rules) made of letters, digits and
    ``. _ / + -`` only; HostedError naming the rule it breaks otherwise."""
    text = branch if isinstance(branch, str) else ""
    parts = text.split("/")
    broken = ("it is empty" if not text else
              "only letters, digits and . _ / + - are allowed" if not _BRANCH_CHARACTERS.fullmatch(text) else
              "it may not start with '-'" if text.startswith("-") else
              "it may not contain '..'" if ".." in text else
              "it may not end with '.' or '/'" if text.endswith((".", "/")) else
              "a part between slashes may not be empty, start with '.' or end with '.lock'"
              if any(not p or p.startswith(".") or p.endswith(".lock") for p in parts) else None)
    if broken:
        raise HostedError(f"not a usable git branch name: {branch!r} ({broken})")
    return text


def repository_url(pyproject: Path = REPOSITORY / "pyproject.toml") -> str:
    """The repository's public address: pyproject.toml's [project.urls] Repository (from the installed package's
    metadata when adnlib runs from site-packages)."""
    if pyproject.is_file():
        match = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if match:
            return match[1]
    for entry in metadata.metadata("adnlib").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return url.strip()
    raise HostedError(f"no [project.urls] Repository in {pyproject}")


def install_command(repository: str, branch: str = "main", python: str = sys.executable,
                    versions: dict[str, str] | None = None) -> list[str]:
    """The pip command the setup cell runs: adnlib[notebooks] from the repository, torch and torchvision pinned to
    the versions installed (`versions`, default: read from the environment), so pip keeps them."""
    if repository == PLACEHOLDER:
        raise HostedError("this copy of the course names no public repository: run python -m adnlib.teach.hosted "
                          "--repository https://github.com/<owner>/<name> (see README, 'Colab and Kaggle')")
    _github_path(repository)
    check_branch(branch)
    versions = versions or {name: metadata.version(name) for name in KEEP}
    return [python, "-m", "pip", "install", "--quiet", f"adnlib[notebooks] @ git+{repository}@{branch}",
            *(f"{name}=={versions[name]}" for name in KEEP)]


def launch_urls(notebook: str, repository: str, branch: str = "main") -> dict[str, str]:
    """{'colab': url, 'kaggle': url} opening notebooks/<notebook>.ipynb of the repository on each platform."""
    blob = f"{_github_path(repository)}/blob/{check_branch(branch)}/notebooks/{notebook}.ipynb"
    return {"colab": f"https://colab.research.google.com/github/{blob}",
            "kaggle": f"https://kaggle.com/kernels/welcome?src=https://github.com/{blob}"}


def badge_markdown(notebook: str, repository: str, branch: str = "main") -> str:
    """The badge line of a notebook's first cell (Markdown)."""
    urls = launch_urls(notebook, repository, branch)
    return f"[![Open in Colab]({COLAB_BADGE})]({urls['colab']}) [![Open in Kaggle]({KAGGLE_BADGE})]({urls['kaggle']})"


def badges_as_links(markdown: str) -> str:
    """The badges as plain links (the book's pages load no image from outside the site)."""
    return re.sub(r"\[!\[(Open in \w+)\]\([^)]*\)\]\(([^)]*)\)", r"[\1](\2)", markdown)


def setup_cell_source(repository: str, branch: str = "main") -> str:
    """The setup cell (the same in every notebook). It runs before adnlib is importable on a hosted platform, so it
    spells out `install_command` itself; tests/test_hosted.py checks the two agree. The address and the branch are
    checked (HostedError) and written as string literals (JSON, valid Python), never spliced into code: pip gets
    one argument built from them."""
    if repository != PLACEHOLDER:
        _github_path(repository)
    repository, branch = json.dumps(repository), json.dumps(check_branch(branch))
    return f'''# Colab / Kaggle only: install adnlib from the repository (keeping the platform's torch), make the demo
# data, check for a GPU. On your own machine this cell does nothing (`make setup` installed everything).
import os
import sys

if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "google.colab" in sys.modules:
    import subprocess
    from importlib import invalidate_caches
    from importlib.metadata import version

    # written by python -m adnlib.teach.hosted --repository URL --branch NAME
    repository, branch = {repository}, {branch}
    if repository == "{PLACEHOLDER}":
        raise RuntimeError("this copy of the course names no public repository (README: Colab and Kaggle)")
    pins = [f"{{name}}=={{version(name)}}" for name in ("torch", "torchvision")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    f"adnlib[notebooks] @ git+{{repository}}@{{branch}}", *pins], check=True)
    invalidate_caches()  # the package installed a moment ago becomes importable in this kernel
    from adnlib.teach.hosted import prepare

    prepare()'''


def prepare(platform: str | None = None) -> dict[str, Path]:
    """On a hosted platform: set $ADNLIB_DATA and $ADNLIB_RUNS (unless set) under its working folder, generate the
    demo data there if missing, and print a GPU hint when no GPU is present. -> {'data': path, 'runs': path}."""
    from adnlib.data.demo import make_demo_dataset

    platform = platform or detect_platform()
    if platform not in FOLDERS:
        raise HostedError(f"prepare() is for Colab or Kaggle; this is {platform or 'your own machine'}")
    base = FOLDERS[platform]
    os.environ.setdefault("ADNLIB_DATA", str(base / "adnlib-data" / "demo"))
    os.environ.setdefault("ADNLIB_RUNS", str(base / "adnlib-runs"))
    data, runs = Path(os.environ["ADNLIB_DATA"]), Path(os.environ["ADNLIB_RUNS"])
    if not any(data.glob("*/train")):  # the user's own dataset is kept as it is
        make_demo_dataset(data)
    runs.mkdir(parents=True, exist_ok=True)
    print(f"adnlib {metadata.version('adnlib')} on {platform}: data {data}, outputs {runs}")
    if not _has_gpu():
        print(f"No GPU in this session: the demo preset still runs on the CPU, slower. For a GPU: "
              f"{GPU_HINT[platform]}.")
    return {"data": data, "runs": runs}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def set_repository(repository: str, branch: str = "main", root: Path = REPOSITORY) -> list[Path]:
    """Point pyproject.toml, every notebook's badges and its setup cell at `repository` -> the files changed."""
    import nbformat

    from adnlib.teach.notebooks import NOTEBOOKS

    _github_path(repository)  # both checked before any file is touched
    check_branch(branch)
    changed = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    new = re.sub(r'^Repository\s*=\s*"[^"]*"', f'Repository = "{repository}"', text, flags=re.MULTILINE)
    if new != text:
        pyproject.write_text(new)
        changed.append(pyproject)
    for name in NOTEBOOKS:
        path = root / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        if _sync_notebook(nb, name, repository, branch):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def _sync_notebook(nb, name: str, repository: str, branch: str) -> bool:
    """Badge line under the title of cell 0, setup cell after the parameters cell; True when anything changed."""
    import nbformat

    before = nbformat.writes(nb)
    title = nb.cells[0]
    badges = badge_markdown(name, repository, branch)
    if BADGE_LINE.search(title.source):
        title.source = BADGE_LINE.sub(lambda _: badges, title.source)
    else:
        heading, _, rest = title.source.partition("\n")
        title.source = f"{heading}\n\n{badges}\n{rest}"
    setup = [c for c in nb.cells if SETUP_TAG in c.metadata.get("tags", [])]
    if setup:
        setup[0].source = setup_cell_source(repository, branch)
        setup[0].metadata["tags"] = [SETUP_TAG, "hide-input"]
    else:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
        cell = nbformat.v4.new_code_cell(setup_cell_source(repository, branch), id=SETUP_TAG)
        cell.metadata["tags"] = [SETUP_TAG, "hide-input"]  # the book folds it away (myst-nb's tag)
        if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
            del cell["id"]
        nb.cells.insert(at, cell)
    return nbformat.writes(nb) != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnlib.teach.hosted",
                                     description="Point the notebooks' Colab/Kaggle badges and setup cells (and "
                                                 "pyproject.toml) at the repository you publish the course in.")
    parser.add_argument("--repository", default=None, help="https://github.com/<owner>/<name> (default: "
                                                              "pyproject.toml's, i.e. regenerate the cells)")
    parser.add_argument("--branch", default="main")
    args = parser.parse_args(argv)
    try:
        require_repository("python -m adnlib.teach.hosted")  # it rewrites the checkout's notebooks and pyproject
        # --repository '' is refused (it used to keep the old address silently); absent: pyproject.toml's
        repository = args.repository if args.repository is not None else repository_url()
        changed = set_repository(repository, args.branch)
    except (HostedError, NoRepositoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"updated {p.relative_to(REPOSITORY)}" for p in changed) or "already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SETUP_TAG", "PLACEHOLDER", "HostedError", "detect_platform", "repository_url", "install_command",
           "check_branch", "launch_urls", "badge_markdown", "badges_as_links", "setup_cell_source", "prepare",
           "set_repository"]
