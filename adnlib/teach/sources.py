"""Where a notebook's trained runs come from: its `checkpoints` parameter, the same in notebooks 03-06.

* ``"auto"`` (the default): the course named by $ADNLIB_CHECKPOINTS when it is set (a teacher's published runs, e.g.
  written into the Colab/Kaggle setup cells by `tools/hosted.py --checkpoints`), else the runs of an earlier notebook
  (notebook 03's `runs/` for notebooks 04-06; none for notebook 03 itself, which trains);
* a folder (a relative one is looked for where the kernel runs, then in the repository): a course folder
  (`adnlib course --out`), a grid folder (`adnlib grid --out`, `make compare`) or notebook 03's `runs/`:
  <category>/<variant>/seed<k>/ run folders;
* a manifest (a path ending in .json, or an http(s) URL: `adnlib course` writes one): only the runs the notebook
  uses are downloaded (each file checked against its sha256, `adnlib.run.fetch.fetch_runs`) and laid out as run
  folders in the cache;
* ``""``: nothing is loaded; the notebook trains what it needs.

A run from a course must have been trained on the notebook's data: its metrics.json records a fingerprint of the
images, and `RunSource.run` refuses a run of other images in one line (a teacher's MVTec AD runs scored on a
student's demo data would be numbers about nothing).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from adnlib.errors import AdnlibError
from adnlib.io import one_line

CHECKPOINTS_ENV = "ADNLIB_CHECKPOINTS"
NOTEBOOK_RUNS = "03_training_attentdiffernet"  # the notebook whose runs/ the later notebooks read by default


class SourceError(AdnlibError, ValueError):
    """A `checkpoints` value that names nothing usable, or runs trained on other data."""


@dataclass
class RunSource:
    """Trained runs to load: `folder` holds <category>/<variant>/seed<k>/ (None: train everything here)."""
    folder: Path | None
    origin: str  # how the notebook names it: "notebook 03's runs", "the course at ..."
    course: bool = False  # a teacher's course (given or from $ADNLIB_CHECKPOINTS), not an earlier notebook's output
    data_root: Path | None = None
    _checked: dict = field(default_factory=dict, repr=False)

    def run(self, category: str, variant: str, seed: int, *, name: str | None = None) -> Path | None:
        """The finished run folder (checkpoint.pt and metrics.json) of (category, variant, seed), or of the named
        run ('open-gates/disc/se/seed0'), or None. Raises SourceError for a run trained on other images."""
        if self.folder is None:
            return None
        found = self.folder / name if name else self.folder / category / variant / f"seed{seed}"
        if not ((found / "checkpoint.pt").is_file() and (found / "metrics.json").is_file()):
            return None
        if self.data_root is not None:
            self._check_data(found, category)
        return found

    def require(self, keys, *, names: dict[str, str] | None = None) -> list[Path]:
        """A course's runs of keys [(category, variant, seed), ...] and of the named runs ({name: its category}, to
        check its data), or SourceError naming the missing ones: a course is read, never completed here (a run
        trained with this notebook's preset beside the course's would compare two protocols). -> the keys' run
        folders, in order."""
        keys = list(keys)
        if not keys:
            raise SourceError(f"{self.origin}: no run asked for (no category of the data in it?)")
        found = [self.run(category, variant, seed) for category, variant, seed in keys]
        missing = [f"{c}/{v}/seed{s}" for (c, v, s), run in zip(keys, found) if run is None]
        missing += [name for name, category in (names or {}).items()
                    if self.run(category, "", 0, name=name) is None]
        if missing:
            unpublished = self.folder is not None and any((self.folder / m / "checkpoint.pt").is_file()
                                                          and not (self.folder / m / "metrics.json").is_file()
                                                          for m in missing)
            raise SourceError(one_line(
                f"{self.origin} has no finished run for {', '.join(missing[:4])}"
                f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}"
                f"{' (checkpoints without their metrics.json: a version 1 manifest?)' if unpublished else ''}: "
                "choose the categories, variants and seeds it has, or checkpoints = '' to train everything here"))
        return found

    def label(self, run: Path) -> str:
        """A short name of a run for tables: '<origin>: disc/se/seed0' (never a machine's absolute path)."""
        relative = run.relative_to(self.folder).as_posix() if self.folder else run.name
        return f"{self.short_origin}: {relative}"

    @property
    def short_origin(self) -> str:
        return "course" if self.course else "notebook 03" if NOTEBOOK_RUNS in str(self.folder) else "folder"

    def _check_data(self, run: Path, category: str) -> None:
        from adnlib.data.datasets import data_record
        from adnlib.run.identity import data_differences, describe
        if category not in self._checked:
            self._checked[category] = data_record(self.data_root, category)
        saved = json.loads((run / "metrics.json").read_text()).get("data")
        differences = data_differences(saved, self._checked[category])
        if differences:
            what = describe(differences, "there", "here")
            raise SourceError(f"{self.origin}: {run.relative_to(self.folder).as_posix()} was trained on other "
                              f"images than {category} under {self.data_root} ({what}); set data_root to the "
                              "dataset the runs were trained on, or checkpoints = '' to train here")


def run_source(checkpoints: str | os.PathLike | None, earlier: Path | None = None, *, data_root=None,
               categories=None, variants=None, seeds=None, names=None) -> RunSource:
    """The RunSource a notebook's `checkpoints` parameter names (module doc). earlier: the folder "auto" falls back
    to (an earlier notebook's runs; it may not exist yet). categories / variants / seeds / names: what the
    notebook needs from a manifest (only that is downloaded). data_root: check each run's data against it."""
    value = "" if checkpoints is None else str(checkpoints)
    data_root = Path(data_root) if data_root is not None else None
    if value == "auto":
        from_env = os.environ.get(CHECKPOINTS_ENV, "")
        if from_env:
            return _course(from_env, f"${CHECKPOINTS_ENV}", data_root, categories, variants, seeds, names)
        if earlier is not None:
            label = "notebook 03's runs" if earlier.parent.name == NOTEBOOK_RUNS else f"the runs in {earlier.name}"
            return RunSource(earlier, label, False, data_root)
        return RunSource(None, "none (trained here)")
    if not value:
        return RunSource(None, "none (trained here)")
    return _course(value, "checkpoints", data_root, categories, variants, seeds, names)


def _local(value: str) -> str:
    """A relative path as given when it exists, else relative to the repository in a checkout: a notebook's kernel
    starts in notebooks/, and the docs name folders such as runs/compare from the repository's root."""
    from adnlib.teach.paths import REPOSITORY, in_repository
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or not in_repository() or not (REPOSITORY / path).exists():
        return value
    return str(REPOSITORY / path)


def _course(value: str, where: str, data_root, categories, variants, seeds, names) -> RunSource:
    from adnlib.errors import CheckpointError
    from adnlib.run.fetch import fetch_runs
    if not value.startswith(("http://", "https://")):
        value = _local(value)
    if value.startswith(("http://", "https://")) or value.endswith(".json"):
        try:
            folder = fetch_runs(value, categories=categories, variants=variants, seeds=seeds,
                                names=list(names) if names and any(v is not None for v in (categories, variants, seeds))
                                else None)  # names alone would leave the grid out: no filter takes everything
        except CheckpointError as exc:
            raise SourceError(f"{where}: {exc}") from exc
        return RunSource(folder, f"the course at {value}", True, data_root)
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise SourceError(f"{where} = {value!r}: not a folder of runs, a manifest (.json) or an http(s) URL; "
                          "'auto' uses the earlier notebook's runs and '' trains here")
    return RunSource(folder, f"the runs in {folder.name}", True, data_root)


def training_config(runs: list[Path], *, device: str, seed: int):
    """The Config to train more runs beside a course's (notebook 03's exercises): the course's protocol
    (`recorded_config`) on this device, with the backbone the runs used ('imagenet', random weights drawn from the
    seed as 'none' draws them, or the weights file the teacher named)."""
    config = recorded_config(runs)
    backbone = json.loads((runs[0] / "metrics.json").read_text()).get("backbone") or {}
    weights = {"imagenet": "imagenet", "random": "none"}.get(backbone.get("source"), backbone.get("file")
                                                             or config.weights)
    return config.replace(device=device, seed=seed, weights=weights)


def recorded_config(runs: list[Path]):
    """The one Config the runs were trained with apart from variant and seed (a course's protocol), or SourceError
    when they differ in what they used (protocol, resolved backbone, data: `identity.check_records`, the check
    every comparison of runs passes through): a report over them would compare runs that differ."""
    from adnlib.config import Config
    from adnlib.run.identity import RunMismatchError, check_records
    records = {"/".join(run.parts[-3:]): json.loads((run / "metrics.json").read_text()) for run in runs}
    try:
        check_records(records, what="course")
    except RunMismatchError as exc:
        raise SourceError(str(exc)) from exc
    return Config.from_dict(next(iter(records.values()))["config"])
