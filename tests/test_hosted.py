"""Colab and Kaggle: the platform detection, the install command the setup cell runs (checked by running the
cell's own text with a faked Colab, and by a pip dry run against this repository, offline), the data folders, and
that every notebook's badges and setup cell agree with pyproject.toml's repository address."""
import json
import os
import subprocess
import sys
import types
from importlib import metadata

import nbformat
import pytest
from conftest import CommandRecorder, load_tool

from adnlib.teach import hosting
from adnlib.teach.hosting import PLACEHOLDER, SETUP_TAG, HostedError, detect_platform, install_command
from adnlib.teach.notebooks import NOTEBOOK_DIR, NOTEBOOKS

hosted = load_tool("hosted.py")  # the repository's authoring tool (tools/hosted.py)
badge_markdown, badges_as_links, launch_urls = hosted.badge_markdown, hosted.badges_as_links, hosted.launch_urls
repository_url, setup_cell_source = hosted.repository_url, hosted.setup_cell_source
from adnlib.teach.paths import REPOSITORY

URL = "https://github.com/someone/attentdiffernet-course"


def test_detect_platform_checks_kaggle_first():
    colab = {"google.colab": types.ModuleType("google.colab")}
    assert detect_platform({}, {}) is None
    assert detect_platform({}, colab) == "colab"
    assert detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, {}) == "kaggle"
    assert detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, colab) == "kaggle"  # Kaggle images carry it too
    assert detect_platform() is None  # this machine


def test_install_command_pins_the_installed_torch():
    command = install_command(URL, "v1", python="py", versions={"torch": "2.9.0+cu126", "torchvision": "0.24.0"})
    assert command == ["py", "-m", "pip", "install", "--quiet", f"adnlib[notebooks] @ git+{URL}@v1",
                       "torch==2.9.0+cu126", "torchvision==0.24.0"]
    here = install_command(URL)
    assert here[0] == sys.executable
    assert f"torch=={metadata.version('torch')}" in here
    with pytest.raises(HostedError, match="names no public repository"):
        install_command(PLACEHOLDER)
    with pytest.raises(HostedError, match="not a GitHub repository"):
        install_command("https://gitlab.com/a/b")


def test_launch_urls_and_badges():
    urls = launch_urls("03_training_attentdiffernet", URL + ".git", "dev")
    blob = "someone/attentdiffernet-course/blob/dev/notebooks/03_training_attentdiffernet.ipynb"
    assert urls == {"colab": f"https://colab.research.google.com/github/{blob}",
                    "kaggle": f"https://kaggle.com/kernels/welcome?src=https://github.com/{blob}"}
    links = badges_as_links(f"# Title\n\n{badge_markdown('03_training_attentdiffernet', URL, 'dev')}\n")
    assert links == f"# Title\n\n[Open in Colab]({urls['colab']}) [Open in Kaggle]({urls['kaggle']})\n"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_badges_and_setup_cell_follow_pyproject(name):
    """Catches a notebook edited by hand (or added) without `python tools/hosted.py`."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    repository = repository_url()
    assert badge_markdown(name, repository) in nb.cells[0].source.splitlines()[:3]
    setup = [i for i, c in enumerate(nb.cells) if SETUP_TAG in c.metadata.get("tags", [])]
    parameters = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert setup == [parameters[0] + 1], "one setup cell, right after the parameters (before any adnlib import)"
    assert nb.cells[setup[0]].source == setup_cell_source(repository)
    assert all("import adnlib" not in c.source and "from adnlib" not in c.source for c in nb.cells[:setup[0]])


def _run_setup_cell(source, monkeypatch, *, colab: bool, run=None):
    """Execute the cell's text as a kernel would, with subprocess.run and prepare() recorded."""
    run, prepared = run or CommandRecorder(), []
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(hosting, "prepare", lambda **kwargs: prepared.append(True))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, "setup-cell", "exec"), {})
    return run.commands, prepared


def test_setup_cell_runs_the_install_command_only_on_a_platform(monkeypatch):
    source = setup_cell_source(URL, "dev")
    commands, prepared = _run_setup_cell(source, monkeypatch, colab=False)
    assert commands == []
    assert prepared == []
    commands, prepared = _run_setup_cell(source, monkeypatch, colab=True)
    assert commands == [(install_command(URL, "dev"), {"check": True})]
    assert prepared == [True]


def test_setup_cell_without_a_repository_stops_before_pip(monkeypatch):
    run = CommandRecorder()
    with pytest.raises(RuntimeError, match="names no public repository"):
        _run_setup_cell(setup_cell_source(PLACEHOLDER), monkeypatch, colab=True, run=run)
    assert run.commands == []


@pytest.mark.slow
def test_install_command_resolves_to_adnlib_alone(tmp_path):
    """pip, offline, on this repository: the requirement names our package and its notebook extras, and with the
    pins nothing but adnlib would be installed (torch and torchvision are kept)."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    command = install_command(URL)
    command[5] = f"adnlib[notebooks] @ git+file://{REPOSITORY}@{commit.stdout.strip()}"  # this clone, not GitHub
    report = tmp_path / "report.json"
    subprocess.run([*command, "--dry-run", "--no-index", "--no-build-isolation", "--report", str(report)],
                   check=True, timeout=120, capture_output=True)
    installs = json.loads(report.read_text())["install"]
    assert [(i["metadata"]["name"], i["requested_extras"]) for i in installs] == [("adnlib", ["notebooks"])]


def test_prepare_sets_folders_generates_demo_data_and_hints_at_a_gpu(tmp_path, monkeypatch, capsys):
    made = []
    monkeypatch.setattr("adnlib.data.demo.make_demo_dataset", lambda root: made.append(root))
    monkeypatch.setitem(hosting.FOLDERS, "colab", tmp_path)
    monkeypatch.delenv("ADNLIB_DATA", raising=False)
    monkeypatch.delenv("ADNLIB_RUNS", raising=False)
    monkeypatch.setattr(hosting, "_has_gpu", lambda: False)
    folders = hosting.prepare("colab")
    assert folders == {"data": tmp_path / "adnlib-data" / "demo", "runs": tmp_path / "adnlib-runs"}
    assert made == [folders["data"]]
    assert folders["runs"].is_dir()
    assert "Change runtime type" in capsys.readouterr().out
    # the user's own data (ADNLIB_DATA with a category in it) is neither replaced nor added to
    own = tmp_path / "mvtec"
    (own / "bottle" / "train").mkdir(parents=True)
    monkeypatch.setenv("ADNLIB_DATA", str(own))
    monkeypatch.setattr(hosting, "_has_gpu", lambda: True)
    assert hosting.prepare("kaggle")["data"] == own
    assert made == [folders["data"]]
    assert "GPU" not in capsys.readouterr().out
    with pytest.raises(HostedError, match="own machine"):
        hosting.prepare(None)


def test_set_repository_rewrites_pyproject_badges_and_cells(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in NOTEBOOKS:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    (tmp_path / "pyproject.toml").write_text((REPOSITORY / "pyproject.toml").read_text())
    changed = hosted.set_repository(URL, root=tmp_path)
    assert len(changed) == len(NOTEBOOKS) + 1
    assert repository_url(tmp_path / "pyproject.toml") == URL
    nb = nbformat.read(tmp_path / "notebooks" / f"{NOTEBOOKS[0]}.ipynb", as_version=4)
    assert badge_markdown(NOTEBOOKS[0], URL) in nb.cells[0].source
    assert PLACEHOLDER not in nb.cells[0].source
    assert [c.source for c in nb.cells if SETUP_TAG in c.metadata.get("tags", [])] == [setup_cell_source(URL)]
    assert hosted.set_repository(URL, root=tmp_path) == []  # idempotent: one badge line, one setup cell
    assert hosted.main(["--repository", "https://example.org/x"]) == 2


def test_a_course_default_reaches_every_setup_cell_and_the_environment(tmp_path, monkeypatch):
    # catches published checkpoints that hosted students never get (notebooks 03-06 would train for hours on a
    # GPU-less session), an address spliced into code, and a second setting that piles up in pyproject.toml
    (tmp_path / "notebooks").mkdir()
    for name in NOTEBOOKS:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    (tmp_path / "pyproject.toml").write_text((REPOSITORY / "pyproject.toml").read_text())
    course = f"{URL}/releases/download/course-v1/manifest.json"
    hosted.set_repository(URL, root=tmp_path, checkpoints=course)
    assert hosted.checkpoints_url(tmp_path / "pyproject.toml") == course
    hosted.set_repository(URL, root=tmp_path)  # kept when not given again, written once
    assert (tmp_path / "pyproject.toml").read_text().count("Course-checkpoints") == 1
    for name in NOTEBOOKS:
        nb = nbformat.read(tmp_path / "notebooks" / f"{name}.ipynb", as_version=4)
        cell = next(c.source for c in nb.cells if SETUP_TAG in c.metadata.get("tags", []))
        assert cell == setup_cell_source(URL, "main", course)
        assert f'prepare(checkpoints="{course}")' in cell
    with pytest.raises(HostedError, match="--checkpoints must be an http"):
        setup_cell_source(URL, "main", 'x"); import os; os.system("id')
    monkeypatch.setitem(hosting.FOLDERS, "colab", tmp_path / "colab")
    monkeypatch.setattr("adnlib.data.demo.make_demo_dataset", lambda root: None)
    monkeypatch.setattr(hosting, "_has_gpu", lambda: True)
    for variable in ("ADNLIB_DATA", "ADNLIB_RUNS", "ADNLIB_CHECKPOINTS"):
        monkeypatch.delenv(variable, raising=False)
    hosting.prepare("colab", checkpoints=course)
    assert os.environ["ADNLIB_CHECKPOINTS"] == course
    hosted.set_repository(URL, root=tmp_path, checkpoints="")  # removed again
    assert hosted.checkpoints_url(tmp_path / "pyproject.toml") == ""
