"""adnlib installed from its wheel, without the repository: what `pip install adnlib` (or git+...) gives a researcher
or Colab. The wheel is built from a copy of this checkout's files (nothing is written into the tree), installed
with `pip install --no-deps --target` into a temporary folder that is the only adnlib on the path (torch and the
other dependencies come from this interpreter), and run from a folder outside any checkout with a temporary HOME.

Catches: data or outputs written into site-packages (a default path made from the module's location), notebooks
missing from the wheel, a default that is not the documented one (the user's data folder, ./runs).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
STEP_TIMEOUT_S = 900


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, environment, working folder, HOME) of adnlib installed from a freshly built wheel."""
    tmp = tmp_path_factory.mktemp("installed")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPOSITORY,
                            capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    source = tmp / "source"
    for name in listed:  # the checkout's files (edits included), so that the build writes nothing into the tree
        if (REPOSITORY / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(source)],
                   check=True, timeout=STEP_TIMEOUT_S, cwd=tmp)
    site = tmp / "site"
    wheel = next((tmp / "wheel").glob("adnlib-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=STEP_TIMEOUT_S, cwd=tmp)
    home, work = tmp / "home", tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADNLIB_", "XDG_", "PYTHON", "JUPYTER"))}
    env.update(PYTHONPATH=str(site), HOME=str(home), ADNLIB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
               MPLBACKEND="Agg")
    return site, env, work, home


def _run(installed, *args: str) -> subprocess.CompletedProcess:
    _, env, work, _ = installed
    done = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.mark.slow(seconds=50)  # builds and installs the wheel
def test_the_installed_package_runs_without_the_repository(installed):
    site, _, work, home = installed
    before = _files(site)
    where = _run(installed, "-c", "import adnlib, adnlib.locations as l; print(adnlib.__file__); "
                                  "print(l.in_repository()); print(l.runs_root())").stdout.splitlines()
    assert Path(where[0]).parent == site / "adnlib"  # this copy, not the checkout's
    assert where[1] == "False"
    assert Path(where[2]) == work / "runs"  # outputs default to the current folder

    _run(installed, "-m", "adnlib", "demo-data")
    demo = home / ".local" / "share" / "adnlib" / "demo"  # the user's data folder (platformdirs, Linux)
    assert (demo / "disc" / "train" / "good").is_dir()

    out = work / "model"
    _run(installed, "-m", "adnlib", "train", "--data", str(demo), "--category", "disc", "--preset", "smoke",
         "--epochs", "1", "--device", "cpu", "--weights", "none", "--no-progress", "--out", str(out))
    checkpoint = next(out.rglob("*.pt"))
    evaluated = _run(installed, "-m", "adnlib", "evaluate", "--checkpoint", str(checkpoint), "--data", str(demo),
                     "--category", "disc", "--device", "cpu", "--no-progress", "--out", str(work / "evaluated"))
    assert "auroc" in evaluated.stdout.lower()

    # one notebook from the wheel's copy, on the default data (data_root None: the user's demo data)
    _run(installed, "-m", "adnlib", "notebooks", "--out", str(work / "nb"), "--only", "00_quickstart",
         "-p", "preset", '"smoke"', "-p", "weights", '"none"', "-p", "device", '"cpu"', "-p", "epochs", "1",
         "-p", "n_show", "2")
    assert (work / "nb" / "00_quickstart.ipynb").is_file()
    assert (work / "nb" / "00_quickstart.summary.json").is_file()
    assert _files(site) == before  # nothing written next to the installed package


@pytest.mark.slow
def test_the_wheel_holds_no_repository_authoring(installed):
    # catches the book builder or the Colab/Kaggle rewriter shipped in the package (tools for whoever publishes
    # the course, not for a library user), and the runtime part of the hosted setup missing from it
    site, env, work, _ = installed
    shipped = {p.relative_to(site).as_posix() for p in (site / "adnlib").rglob("*.py")}
    assert not [f for f in shipped if Path(f).stem in ("book", "hosted", "mutation_check", "browser")], shipped
    assert "adnlib/teach/hosting.py" in shipped
    assert "adnlib/regression.py" in shipped
    for module in ("adnlib.teach.book", "adnlib.teach.hosted"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=STEP_TIMEOUT_S)
        assert done.returncode != 0, module
        assert "ModuleNotFoundError" in done.stderr, (module, done.stderr)
