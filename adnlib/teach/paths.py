"""Where a notebook's data and outputs live, whatever folder its kernel started in.

A notebook's `data_root = None` means $ADNLIB_DATA, else the generated demo data (made here if it is missing): the
repository's data/demo in a checkout, the user's data folder when adnlib is installed (adnlib/locations.py).
`output_dir = None` means $ADNLIB_RUNS/<notebook>, else runs/<notebook> in the repository (or in the current folder
when adnlib is installed without the repository). Relative paths a user passes are taken as given (relative to the
kernel's folder), as everywhere in Python.
"""
from __future__ import annotations

from pathlib import Path

from adnlib.data.demo import DEFAULT_DEMO_ROOT, make_demo_dataset
from adnlib.locations import CANDIDATE, env_folder, in_repository, require_repository, runs_root

REPOSITORY = CANDIDATE  # the repository root when adnlib runs from a checkout (in_repository() says whether it does)


def data_root(path: str | Path | None = None) -> Path:
    """The dataset root: `path`, else $ADNLIB_DATA, else the demo data. The demo data is generated (seconds,
    offline) when the root is the default demo folder and it does not exist yet."""
    chosen = Path(path).expanduser() if path else env_folder("ADNLIB_DATA") or DEFAULT_DEMO_ROOT
    if chosen.resolve() == DEFAULT_DEMO_ROOT.resolve():
        make_demo_dataset(chosen)
    elif chosen.exists() and not chosen.is_dir():
        from adnlib.errors import DatasetError
        raise DatasetError(f"dataset root {chosen} is a file, not a folder (data_root, or $ADNLIB_DATA): point it "
                           "at a folder in the MVTec AD layout")
    return chosen


def output_dir(notebook: str, path: str | Path | None = None) -> Path:
    """A notebook's output folder (created): `path`, else $ADNLIB_RUNS/<notebook>, else runs/<notebook> in the
    repository, else ./runs/<notebook>."""
    chosen = Path(path).expanduser() if path else runs_root() / notebook
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def shown(path: str | Path) -> str:
    """A path as a page shows it: relative to the repository (or to the home folder, as ~/...) when it lies there,
    else its last two parts; never the machine's absolute path, which means nothing to a reader of the book."""
    path = Path(path).expanduser()
    resolved = path.resolve()
    for base, prefix in ((REPOSITORY.resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            return prefix + resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return "…/" + "/".join(resolved.parts[-2:])


__all__ = ["REPOSITORY", "in_repository", "require_repository", "data_root", "output_dir", "shown"]
