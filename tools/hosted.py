"""Point the course at the repository it is published in: the notebooks' Open in Colab / Open in Kaggle badges and
their setup cell (a repository-authoring tool; not part of the installed package).

The repository's address is written once, in pyproject.toml (`[project.urls] Repository`); the badges and the
setup cells are generated from it. After you publish the course (or fork it), point everything at your copy:

    python tools/hosted.py --repository https://github.com/<you>/<repo> [--branch main]
    python tools/hosted.py --checkpoints https://github.com/<you>/<repo>/releases/download/course-v1/manifest.json

--checkpoints names the course's published runs (`adnlib course`, docs/teaching.md): kept beside the repository's
address in pyproject.toml (`[project.urls] Course-checkpoints`), written into every setup cell, which sets
$ADNLIB_CHECKPOINTS on Colab and Kaggle (unless set), so notebooks 03-06 load the course instead of training;
`--checkpoints ""` removes it. Without --repository it regenerates the cells from pyproject.toml's address. What
the setup cell does on Colab and Kaggle is `adnlib.teach.hosting` (installed with adnlib).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path

from adnlib.locations import NoRepositoryError, require_repository
from adnlib.teach.hosting import PLACEHOLDER, SETUP_TAG, HostedError, check_branch, github_path

REPOSITORY = Path(__file__).resolve().parents[1]
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
BADGE_LINE = re.compile(r"^\[!\[Open in Colab\].*$", re.MULTILINE)


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


def checkpoints_url(pyproject: Path = REPOSITORY / "pyproject.toml") -> str:
    """The course's published runs (pyproject.toml's [project.urls] Course-checkpoints), or "" when none."""
    if pyproject.is_file():
        match = re.search(r'^Course-checkpoints\s*=\s*"([^"]*)"', pyproject.read_text(), re.MULTILINE)
        if match:
            return match[1]
    return ""


def check_checkpoints(url: str) -> str:
    """A course manifest's address for the setup cells: "" (none) or an http(s) URL without spaces or quotes."""
    if url and not re.fullmatch(r"https?://[^\s\"'\\]+", url):
        raise HostedError(f"--checkpoints must be an http(s) address of a course manifest, not {url!r}")
    return url


def launch_urls(notebook: str, repository: str, branch: str = "main") -> dict[str, str]:
    """{'colab': url, 'kaggle': url} opening notebooks/<notebook>.ipynb of the repository on each platform."""
    blob = f"{github_path(repository)}/blob/{check_branch(branch)}/notebooks/{notebook}.ipynb"
    return {"colab": f"https://colab.research.google.com/github/{blob}",
            "kaggle": f"https://kaggle.com/kernels/welcome?src=https://github.com/{blob}"}


def badge_markdown(notebook: str, repository: str, branch: str = "main") -> str:
    """The badge line of a notebook's first cell (Markdown)."""
    urls = launch_urls(notebook, repository, branch)
    return f"[![Open in Colab]({COLAB_BADGE})]({urls['colab']}) [![Open in Kaggle]({KAGGLE_BADGE})]({urls['kaggle']})"


def badges_as_links(markdown: str) -> str:
    """The badges as plain links (the book's pages load no image from outside the site)."""
    return re.sub(r"\[!\[(Open in \w+)\]\([^)]*\)\]\(([^)]*)\)", r"[\1](\2)", markdown)


def setup_cell_source(repository: str, branch: str = "main", checkpoints: str = "") -> str:
    """The setup cell (the same in every notebook). It runs before adnlib is importable on a hosted platform, so it
    spells out `install_command` itself; tests/test_hosted.py checks the two agree. The address, the branch and the
    course's checkpoints are checked (HostedError) and written as string literals (JSON, valid Python), never
    spliced into code: pip gets one argument built from them."""
    if repository != PLACEHOLDER:
        github_path(repository)
    course = f"checkpoints={json.dumps(check_checkpoints(checkpoints))}" if checkpoints else ""
    repository, branch = json.dumps(repository), json.dumps(check_branch(branch))
    return f'''# Colab / Kaggle only: install adnlib from the repository (keeping the platform's torch), make the demo
# data, check for a GPU. On your own machine this cell does nothing (`make setup` installed everything).
import os
import sys

if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "google.colab" in sys.modules:
    import subprocess
    from importlib import invalidate_caches
    from importlib.metadata import version

    # written by python tools/hosted.py --repository URL --branch NAME
    repository, branch = {repository}, {branch}
    if repository == "{PLACEHOLDER}":
        raise RuntimeError("this copy of the course names no public repository (README: Colab and Kaggle)")
    pins = [f"{{name}}=={{version(name)}}" for name in ("torch", "torchvision")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    f"adnlib[notebooks] @ git+{{repository}}@{{branch}}", *pins], check=True)
    invalidate_caches()  # the package installed a moment ago becomes importable in this kernel
    from adnlib.teach.hosting import prepare

    prepare({course})'''


def set_repository(repository: str, branch: str = "main", root: Path = REPOSITORY,
                   checkpoints: str | None = None) -> list[Path]:
    """Point pyproject.toml, every notebook's badges and its setup cell at `repository` (and the course's published
    runs at `checkpoints`: None keeps pyproject.toml's, "" removes it) -> the files changed."""
    import nbformat

    from adnlib.teach.notebooks import NOTEBOOKS

    github_path(repository)  # all checked before any file is touched
    check_branch(branch)
    checkpoints = check_checkpoints(checkpoints_url(root / "pyproject.toml") if checkpoints is None else checkpoints)
    changed = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    new = re.sub(r'^Repository\s*=\s*"[^"]*"', f'Repository = "{repository}"', text, flags=re.MULTILINE)
    new = re.sub(r'^Course-checkpoints\s*=\s*"[^"]*"\n', "", new, flags=re.MULTILINE)
    if checkpoints:
        new = re.sub(r'^(Repository\s*=\s*"[^"]*"\n)', rf'\1Course-checkpoints = "{checkpoints}"\n', new,
                     flags=re.MULTILINE)
    if new != text:
        pyproject.write_text(new)
        changed.append(pyproject)
    for name in NOTEBOOKS:
        path = root / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        if _sync_notebook(nb, name, repository, branch, checkpoints):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def _sync_notebook(nb, name: str, repository: str, branch: str, checkpoints: str = "") -> bool:
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
        setup[0].source = setup_cell_source(repository, branch, checkpoints)
        setup[0].metadata["tags"] = [SETUP_TAG, "hide-input"]
    else:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
        cell = nbformat.v4.new_code_cell(setup_cell_source(repository, branch, checkpoints), id=SETUP_TAG)
        cell.metadata["tags"] = [SETUP_TAG, "hide-input"]  # the book folds it away (myst-nb's tag)
        if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
            del cell["id"]
        nb.cells.insert(at, cell)
    return nbformat.writes(nb) != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/hosted.py",
                                     description="Point the notebooks' Colab/Kaggle badges and setup cells (and "
                                                 "pyproject.toml) at the repository you publish the course in.")
    parser.add_argument("--repository", default=None, help="https://github.com/<owner>/<name> (default: "
                                                              "pyproject.toml's, i.e. regenerate the cells)")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--checkpoints", default=None, help="the manifest URL of the course's published runs "
                                                            "(adnlib course); '' removes it (default: keep)")
    args = parser.parse_args(argv)
    try:
        require_repository("python tools/hosted.py")  # it rewrites the checkout's notebooks and pyproject
        # --repository '' is refused (it used to keep the old address silently); absent: pyproject.toml's
        repository = args.repository if args.repository is not None else repository_url()
        changed = set_repository(repository, args.branch, checkpoints=args.checkpoints)
    except (HostedError, NoRepositoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"updated {p.relative_to(REPOSITORY)}" for p in changed) or "already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
