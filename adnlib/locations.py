"""Where adnlib keeps data, outputs and caches, from a repository checkout or from an installed package.

In a checkout of the repository (an editable install, or the source folder on the path) the demo data is the
repository's data/demo and outputs go to its runs/, as the README's `make` targets expect. Installed from a wheel
(`pip install adnlib`, Colab), nothing is written next to the package: the demo data goes to the user's data folder
(platformdirs: ~/.local/share/adnlib/demo on Linux) and outputs to ./runs in the current folder.
$ADNLIB_DATA (a dataset root) and $ADNLIB_RUNS (an output root) win over both; $ADNLIB_CACHE names the cache
(default: the user's cache folder, ~/.cache/adnlib on Linux).
"""
from __future__ import annotations

import os
from pathlib import Path

from adnlib.errors import AdnlibError

PACKAGE = Path(__file__).resolve().parent
CANDIDATE = PACKAGE.parent  # the repository root when this package is the source folder of a checkout


class NoRepositoryError(AdnlibError, RuntimeError):
    """A repository-authoring command ran from an installed package, without a checkout of the repository."""


def in_repository() -> bool:
    """Whether this adnlib is the source folder of a repository checkout (not a copy in site-packages)."""
    return (CANDIDATE / "pyproject.toml").is_file() and (CANDIDATE / "notebooks").is_dir() \
        and (CANDIDATE / "adnlib").resolve() == PACKAGE


def require_repository(what: str) -> Path:
    """The repository root, for commands that edit or build the repository itself (`what` names the command);
    NoRepositoryError with one line saying so when adnlib runs from an installed package."""
    if not in_repository():
        raise NoRepositoryError(f"{what} works on a checkout of the adnlib repository (git clone it and run it "
                                f"there); this adnlib is installed at {PACKAGE}, outside any checkout")
    return CANDIDATE


def _user_dir(kind: str) -> Path:
    import platformdirs  # small; imported here so that importing adnlib stays cheap
    return Path(platformdirs.user_data_dir("adnlib") if kind == "data" else platformdirs.user_cache_dir("adnlib"))


def default_demo_root() -> Path:
    """The generated demo data's folder: <repository>/data/demo in a checkout, else <user data folder>/demo."""
    return CANDIDATE / "data" / "demo" if in_repository() else _user_dir("data") / "demo"


class LocationError(AdnlibError, NotADirectoryError):
    """$ADNLIB_DATA or $ADNLIB_RUNS names something that is not a folder."""


def env_folder(name: str) -> Path | None:
    """The folder named by the environment variable `name` (None when unset or empty); LocationError (one line)
    when it names a file or anything but a folder (a folder that does not exist yet is fine: it is made when
    written)."""
    named = os.environ.get(name)
    if not named:
        return None
    path = Path(named).expanduser()
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == path else f"lies under the file {blocking}"
        raise LocationError(f"${name} = {named} {where}, not a folder: point it at a folder (or unset it)")
    return path


def runs_root() -> Path:
    """Where outputs go when none is named: $ADNLIB_RUNS, else <repository>/runs in a checkout, else ./runs."""
    named = env_folder("ADNLIB_RUNS")
    if named is not None:
        return named
    return (CANDIDATE if in_repository() else Path.cwd()) / "runs"


def cache_dir() -> Path:
    """Downloads kept between runs (the book's widget JavaScript): $ADNLIB_CACHE, else the user's cache folder."""
    named = os.environ.get("ADNLIB_CACHE")
    return Path(named).expanduser() if named else _user_dir("cache")


def notebook_dir() -> Path:
    """The course notebooks: <repository>/notebooks in a checkout, else the copy shipped in the wheel."""
    return CANDIDATE / "notebooks" if in_repository() else PACKAGE / "notebooks"


__all__ = ["NoRepositoryError", "LocationError", "env_folder", "in_repository", "require_repository",
           "default_demo_root", "runs_root", "cache_dir", "notebook_dir"]
