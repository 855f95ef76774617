"""The course on Colab and Kaggle, at run time: what the notebooks' setup cell calls there (installed with adnlib).

Every notebook has one setup cell (tagged `hosted-setup`) right after its parameters. On your own machine it does
nothing. On Colab or Kaggle it pip-installs adnlib with its notebook extras from the repository, pinning the torch
and torchvision the platform already has (`install_command`: they are never reinstalled), then calls `prepare()`:
data and output folders from $ADNLIB_DATA / $ADNLIB_RUNS (set to the platform's working folder when unset), the demo
data generated there (seconds, offline), and a hint to switch to a GPU runtime when there is none.

Writing the badges and the setup cells into the notebooks is repository authoring, not a library's job: the
repository's `tools/hosted.py` does it (`python tools/hosted.py --repository https://github.com/<you>/<repo>`).
"""
from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

from adnlib.errors import AdnlibError

SETUP_TAG = "hosted-setup"
PLACEHOLDER = "https://github.com/OWNER/REPOSITORY"  # what a copy that names no public repository carries
KEEP = ("torch", "torchvision")  # the platform's builds (CUDA-matched there): pinned, never reinstalled
FOLDERS = {"colab": Path("/content"), "kaggle": Path("/kaggle/working")}
GPU_HINT = {"colab": "Runtime > Change runtime type > T4 GPU, then run the notebook again",
            "kaggle": "Settings > Accelerator > GPU (and Settings > Internet on), then run the notebook again"}


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


def github_path(repository: str) -> str:
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


def install_command(repository: str, branch: str = "main", python: str = sys.executable,
                    versions: dict[str, str] | None = None) -> list[str]:
    """The pip command the setup cell runs: adnlib[notebooks] from the repository, torch and torchvision pinned to
    the versions installed (`versions`, default: read from the environment), so pip keeps them."""
    if repository == PLACEHOLDER:
        raise HostedError("this copy of the course names no public repository: run python tools/hosted.py "
                          "--repository https://github.com/<owner>/<name> (see README, 'Colab and Kaggle')")
    github_path(repository)
    check_branch(branch)
    versions = versions or {name: metadata.version(name) for name in KEEP}
    return [python, "-m", "pip", "install", "--quiet", f"adnlib[notebooks] @ git+{repository}@{branch}",
            *(f"{name}=={versions[name]}" for name in KEEP)]


def prepare(platform: str | None = None, checkpoints: str = "") -> dict[str, Path]:
    """On a hosted platform: set $ADNLIB_DATA and $ADNLIB_RUNS (unless set) under its working folder, generate the
    demo data there if missing, and print a GPU hint when no GPU is present; with `checkpoints` (the course's
    published runs, written into the setup cell by tools/hosted.py) set $ADNLIB_CHECKPOINTS unless it is set, so
    that notebooks 03-06 load the course. -> {'data': path, 'runs': path}."""
    from adnlib.data.demo import make_demo_dataset

    platform = platform or detect_platform()
    if platform not in FOLDERS:
        raise HostedError(f"prepare() is for Colab or Kaggle; this is {platform or 'your own machine'}")
    base = FOLDERS[platform]
    os.environ.setdefault("ADNLIB_DATA", str(base / "adnlib-data" / "demo"))
    os.environ.setdefault("ADNLIB_RUNS", str(base / "adnlib-runs"))
    if checkpoints:
        os.environ.setdefault("ADNLIB_CHECKPOINTS", checkpoints)
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


__all__ = ["SETUP_TAG", "PLACEHOLDER", "KEEP", "HostedError", "detect_platform", "github_path", "check_branch",
           "install_command", "prepare"]
