"""Run or collect the grid categories × variants × seeds and tabulate AUROC (the benchmark report's engine).

A cell is out_dir/<category>/<variant>/seed<k>. Cells with the same seed are paired: the same flow
initialisation, data order, training and test rotations (docs/protocol.md §9), so `adnlib.run.stats` can compare
the variants on the same test images.

Each cell is trained by `adnlib.run.cell.run_cell`, an idempotent unit (reuse a finished run, resume an interrupted
one, else train; attempts recorded in the cell's attempts.json). Two engines call it: 'serial' (`run_serial`, in
this process) and 'ray' (`adnlib.run.cluster.run_ray`, a Ray task per cell on a local or remote Ray cluster; Ray is
imported only there). Both stream each finished cell's row, retry a failing cell and let the others finish.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from adnlib.config import Config
from adnlib.errors import AdnlibError, ConfigError, OutputExistsError, OutputWriteError
from adnlib.io import one_line
from adnlib.progress import progress_bar
from adnlib.run.cell import (  # noqa: F401 - cell_differences, cell_dir: public here as before
    CELL_COLUMNS,
    NOT_RETRIED,
    GridCell,
    RefusedCell,
    UnverifiedCell,
    cell_action,
    cell_differences,
    cell_dir,
    cell_row,
    error_text,
    reused_row,
    run_cell,
)
from adnlib.run.lock import folder_lock
from adnlib.run.outputs import check_output_folder, run_peak_bytes

ENGINES = ("serial", "ray")


class GridError(AdnlibError, RuntimeError):
    """Some cells of a grid failed (after the others finished): .runs holds the finished cells' rows (collect_grid),
    .cells every cell's outcome (a CELL_COLUMNS table, with the failures' errors)."""

    def __init__(self, message: str, runs: pd.DataFrame, cells: pd.DataFrame):
        super().__init__(message)
        self.runs, self.cells = runs, cells


class _Expected:
    """What each cell of a grid would use now (adnlib.run.identity.expected_identity), computed once per category
    (the data's fingerprint) and per seed (the backbone 'auto' resolves to)."""

    def __init__(self, data_root: str | Path):
        self.data_root, self.data = data_root, {}

    def __call__(self, config: Config, category: str) -> dict:
        from adnlib.data.datasets import data_record
        from adnlib.model.weights import resolve_backbone
        from adnlib.seeds import stream_seed
        if category not in self.data:
            self.data[category] = data_record(self.data_root, category)
        return {"protocol": config.protocol(), "data": self.data[category],
                "backbone": resolve_backbone(config.weights, stream_seed(config.seed, "random_backbone"))}


def _plan(base: Config, out_dir: Path, cells: list[tuple[str, str, int]], resume: bool, rerun: bool,
          lock_wait: float = 0, data_root: str | Path | None = None) -> list:
    """A GridCell per (category, variant, seed), with its action 'reuse' | 'resume' | 'train'; refuses cells saved
    with another config, or (with data_root) trained on another backbone or other data than the request would use
    now, and finished cells whose checkpoint is missing or replaced (unless rerun: they are retrained), before
    anything trains. Each cell is looked at under its write lock: a cell another process is writing raises
    FolderLockedError (after lock_wait seconds) instead of being planned from a half-written folder."""
    plan, refused, unverified = [], [], []
    expected = _Expected(data_root) if data_root is not None else None
    for category, variant, seed in cells:
        folder = cell_dir(out_dir, category, variant, seed)
        config = base.replace(variant=variant, seed=seed)
        try:
            with folder_lock(folder, wait=lock_wait, command="grid (planning)"):
                action = cell_action(folder, config, resume=resume, rerun=rerun,
                                     expected=expected(config, category) if expected and resume else None)
        except UnverifiedCell as exc:
            unverified.append(str(exc))
            continue
        except RefusedCell as exc:
            refused.append(str(exc))
            continue
        plan.append(GridCell(category, variant, seed, folder, action))
    if refused:
        raise OutputExistsError(f"grid cell(s) saved with another config, backbone or data: {'; '.join(refused)}. "
                                "Pass --rerun (rerun=True) to retrain them, or choose another output folder")
    if unverified:
        raise OutputExistsError(f"finished grid cell(s) that cannot be reused: {'; '.join(unverified)}. Pass "
                                "--rerun (rerun=True) to retrain them, or choose another output folder")
    return plan


def run_serial(base: Config, data_root: str | Path, cells: list[GridCell], *, run_id: str,
               done: Callable[[dict], None], max_retries: int = 2, progress: bool = True,
               lock_wait: float = 0) -> None:
    """The serial engine: each cell in turn in this process, an error retried up to max_retries times (resuming
    the cell's checkpoint) unless another attempt would only repeat it (cell.NOT_RETRIED); a cell that still
    fails is reported to `done` as a 'failed' row and the next cell starts. KeyboardInterrupt stops the grid, and
    so does OutputWriteError (a full or read-only disk: the cell resumes when the grid is run again)."""
    for cell in cells:
        for attempt in range(max_retries + 1):
            try:
                row = run_cell(base, data_root, cell, run_id=run_id, progress=progress, lock_wait=lock_wait)
                break
            except OutputWriteError:  # a full or read-only disk: every other cell would fail the same way
                raise
            except Exception as exc:  # noqa: BLE001 - reported as the cell's row; the grid goes on
                if attempt == max_retries or isinstance(exc, NOT_RETRIED):
                    row = cell_row(cell, "failed", attempts=attempt + 1, error=error_text(exc))
                    break
        done(row)


def run_grid(base: Config, data_root: str | Path, categories: list[str] | None, variants: list[str],
             out_dir: str | Path, *, seeds: list[int] | None = None, progress: bool = True, resume: bool = True,
             rerun: bool = False, engine: str = "serial", address: str | None = None, gpus_per_cell: float = 0,
             cpus_per_cell: float = 1, max_retries: int = 2, on_cell: Callable[[dict, int, int], None] | None = None,
             on_failure: str = "raise", lock_wait: float = 0) -> pd.DataFrame:
    """Train every (category, variant, seed) into out_dir/<category>/<variant>/seed<k> and return their rows
    (collect_grid). categories: None for every category under data_root. seeds: default [base.seed]; runs with
    one seed are paired across variants (the same flow initialisation, batches and angles).

    resume=True (default): a finished cell whose saved config equals the requested one (base with the cell's
    variant and seed) is reused, an interrupted one is resumed; a cell saved with another config is refused with
    an OutputExistsError naming every such cell and field, before anything trains, unless rerun=True, which
    retrains it from scratch. resume=False retrains every cell.

    engine: 'serial' (in this process) or 'ray' (a Ray task per cell, adnlib.run.cluster: address None starts a
    local Ray, 'auto' | 'HOST:PORT' | 'ray://HOST:10001' joins a cluster; gpus_per_cell and cpus_per_cell are the
    task's resources). A failing cell is retried up to max_retries times, resuming its checkpoint; the others go on.
    on_cell(row, finished, total) is called as each cell finishes (a CELL_COLUMNS dict). The returned table's
    attrs["cells"] lists every cell's row; with failed cells, on_failure='raise' (default) raises GridError once
    the others have finished, 'report' returns the finished ones.

    Before anything trains, out_dir is checked (writable, room for one cell's checkpoints: OutputWriteError) and
    every cell is planned under its write lock (adnlib.run.lock; FolderLockedError when another process writes
    it, after waiting up to lock_wait seconds). A finished cell is reused only if its checkpoint.pt is the file its
    metrics.json records (sha256); a cell holding a checkpoint past the requested epochs is refused (a resume never
    lowers them). Each cell trains under its lock (on Ray too: a retried cell cannot race its own zombie).
    """
    out_dir = Path(out_dir)
    categories = _check_request(base, data_root, categories, out_dir, variants, engine, on_failure,
                                (address, gpus_per_cell, cpus_per_cell))
    seeds = list(dict.fromkeys(seeds)) if seeds else [base.seed]
    plan = _plan(base, out_dir, [(c, v, s) for c in categories for v in variants for s in seeds], resume, rerun,
                 lock_wait, data_root)
    rows = []
    bar = progress_bar(total=len(plan), desc="grid cells", disable=not progress)

    def done(row: dict) -> None:
        rows.append(row)
        bar.update()
        bar.set_postfix_str(f"{row['cell']} {row['status']}")
        if on_cell is not None:
            on_cell(row, len(rows), len(plan))

    todo, run_id = [c for c in plan if c.action != "reuse"], uuid.uuid4().hex[:12]
    with bar:  # closed also when a callback raises: a bar left open would quieten every later headless bar
        for cell in (c for c in plan if c.action == "reuse"):
            done(reused_row(cell))
        if engine == "ray":
            from adnlib.run.cluster import run_ray
            run_ray(base, data_root, todo, run_id=run_id, done=done, address=address, gpus_per_cell=gpus_per_cell,
                    cpus_per_cell=cpus_per_cell, max_retries=max_retries)
        else:
            run_serial(base, data_root, todo, run_id=run_id, done=done, max_retries=max_retries, progress=progress,
                       lock_wait=lock_wait)
    return _result(out_dir, categories, variants, seeds, rows, on_failure)


def adopt_cells(source: str | Path, out_dir: str | Path, base: Config, data_root: str | Path, categories: list[str],
                variants: list[str], seeds: list[int] | None = None) -> list[str]:
    """Copy into out_dir the finished cells of another grid folder (e.g. notebook 03's runs) that run_grid would
    reuse there: the same protocol (base with the cell's variant and seed), the backbone the request resolves to
    now, the data found in data_root now, and checkpoints that are the files their metrics.json records. Cells
    already in out_dir are left alone, and so are cells that differ (run_grid then trains them): each refusal is
    one warning saying why. Each copy lands whole (a staging folder renamed). -> adopted 'cat/variant/seed<k>'."""
    source, out_dir = Path(source), Path(out_dir)
    expected = _Expected(data_root)
    cells = [(c, v, s) for c in categories for v in variants for s in (dict.fromkeys(seeds) if seeds else [base.seed])]
    return [f"{c}/{v}/seed{s}" for c, v, s in cells
            if _adopt(cell_dir(source, c, v, s), cell_dir(out_dir, c, v, s), base.replace(variant=v, seed=s),
                      expected)]


def adopt_run(run_dir: str | Path, out_dir: str | Path, base: Config, data_root: str | Path, category: str,
              variant: str) -> bool:
    """Copy one finished training run (a `train()` output folder, e.g. notebook 00's) into out_dir as the grid cell
    <category>/<variant>/seed<base.seed>, under the conditions of adopt_cells. -> adopted?"""
    config = base.replace(variant=variant)
    return _adopt(Path(run_dir), cell_dir(out_dir, category, variant, base.seed), config,
                  _Expected(data_root), category)


class _NotAdopted(Exception):
    """Why a run was not adopted (the warning's text)."""


def _adopt(origin: Path, target: Path, config: Config, expected: _Expected, category: str | None = None) -> bool:
    """Copy one finished cell if run_grid would reuse it for `config` (on its category: `category`, else the
    cell's folder name), holding both cells' write locks (a cell being written on either side is skipped, never
    half-copied). A target holding nothing but a lock file (left by an interrupted grid's planning) counts as
    empty. A run that is there but not taken is one warning saying why; a missing one is silent."""
    import warnings

    from adnlib.run.lock import LOCK_NAME
    category = category or target.parent.parent.name
    if not (origin / "metrics.json").is_file():
        return False
    if target.exists() and any(p.name != LOCK_NAME for p in target.iterdir()):
        return False  # taken already (run_grid reuses or refuses what is there)
    try:
        _adopt_locked(origin, target, config, expected(config, category))
    except _NotAdopted as exc:
        warnings.warn(f"not reused: {exc}; it is trained here instead", stacklevel=3)
        return False
    return True


def _adopt_locked(origin: Path, target: Path, config: Config, expected: dict) -> None:
    from adnlib.run.lock import LOCK_NAME, FolderLockedError
    try:
        with folder_lock(origin):
            if cell_action(origin, config, expected=expected) != "reuse":
                raise _NotAdopted(f"{origin} (it is not finished)")
            with folder_lock(target):  # created only now: nothing is made for a cell that is not taken
                if any(p.name != LOCK_NAME for p in target.iterdir()):
                    raise _NotAdopted(f"{origin} ({target} holds a run already)")
                _copy_cell(origin, target)
    except (OutputExistsError, FolderLockedError) as exc:  # another config, backbone or data; damaged; in use
        raise _NotAdopted(one_line(exc)) from exc


def _copy_cell(origin: Path, target: Path) -> None:
    """The result files of `origin` into `target` through a staging folder beside it, metrics.json last (without it
    the cell does not count as finished); the staging folder is removed whatever happens."""
    import os
    import shutil

    from adnlib.run.lock import LOCK_NAME
    staging = target.parent / f".{target.name}.adopting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(origin, staging, ignore=shutil.ignore_patterns(LOCK_NAME, "attempts.json"))
        for name in sorted((p.name for p in staging.iterdir()), key=lambda name: name == "metrics.json"):
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_request(base: Config, data_root, categories, out_dir: Path, variants: list[str], engine: str,
                   on_failure: str, ray_options: tuple) -> list[str]:
    """Everything a grid can check before any cell: its options, Ray, the categories (None: every one under
    data_root), the weights file, the device's precision, the output folder -> the categories."""
    from adnlib.data.datasets import category_dir, list_categories
    from adnlib.errors import DatasetError
    if on_failure not in ("raise", "report"):
        raise ConfigError(f"on_failure must be 'raise' or 'report', not {on_failure!r}")
    if engine not in ENGINES:
        raise ConfigError(f"unknown grid engine {engine!r}; choose {' or '.join(ENGINES)}")
    address, gpus_per_cell, cpus_per_cell = ray_options
    if engine == "serial" and (address or gpus_per_cell or cpus_per_cell != 1):
        raise ConfigError("--address, --gpus-per-cell and --cpus-per-cell are options of --engine ray")
    if engine == "ray":
        from adnlib.run.cluster import require_ray
        require_ray()  # before anything: say what to install
    categories = list(categories) if categories else list_categories(data_root)
    if not categories:
        raise DatasetError(f"no categories found under {data_root}")
    for category in categories:
        category_dir(data_root, category)  # fail before training anything
    from adnlib.model.weights import check_weights
    check_weights(base.weights)  # a bad weights file: one error now, not every cell failing on it max_retries times
    if engine == "serial":  # on Ray the workers' devices count, not this machine's
        from adnlib.run.device import check_precision, resolve_device
        check_precision(base.amp, resolve_device(base.device))
    _check_out_dir(out_dir, base, variants)
    return categories


def _check_out_dir(out_dir: Path, base: Config, variants: list[str]) -> None:
    """Before any cell: out_dir is a folder, writable, with room for the largest cell's checkpoints."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output folder {out_dir} is a file")
    check_output_folder(out_dir, max(run_peak_bytes(base.replace(variant=v)) for v in variants),
                        largest="one cell's checkpoint.pt (twice while it is replaced) and best.pt")


def _result(out_dir: Path, categories, variants, seeds, rows: list[dict], on_failure: str) -> pd.DataFrame:
    runs = collect_grid(out_dir, categories, variants, seeds)
    runs.attrs["cells"] = rows  # plain records: pandas compares attrs when it combines frames
    cells = pd.DataFrame(rows, columns=CELL_COLUMNS)
    failed = cells[cells["status"] == "failed"]
    if len(failed) and on_failure == "raise":
        errors = "; ".join(f"{c}: {e}" for c, e in zip(failed["cell"], failed["error"]))
        raise GridError(f"{len(failed)} of {len(cells)} grid cells failed ({errors}); the others finished", runs, cells)
    return runs


GRID_COLUMNS = ["category", "variant", "seed", "auroc", "auroc_best", "best_epoch", "epochs", "backbone_weights",
                "attention_init", "train_seconds", "protocol", "backbone", "data"]  # the last 3: PROVENANCE_COLUMNS


def _cell_paths(out_dir: Path, categories, variants, seeds) -> list[Path]:
    found = sorted(out_dir.glob("*/*/seed*/metrics.json"))
    return [p for p in found if (categories is None or p.parent.parent.parent.name in categories)
            and (variants is None or p.parent.parent.name in variants)
            and (seeds is None or p.parent.name in {f"seed{s}" for s in seeds})]


def _records(out_dir: Path, categories, variants, seeds) -> dict[Path, dict]:
    return {path: json.loads(path.read_text()) for path in _cell_paths(out_dir, categories, variants, seeds)}


def collect_grid(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                 seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per finished cell under out_dir: category, variant, seed, auroc, auroc_best, weights, seconds, and
    what the run used (adnlib.run.identity.provenance_columns: protocol, backbone, data).

    With categories, variants and/or seeds, only those cells; otherwise every finished cell found there.
    """
    from adnlib.run.identity import provenance_columns
    rows = [{**{k: m.get(k) for k in GRID_COLUMNS}, **provenance_columns(m)}
            for m in _records(Path(out_dir), categories, variants, seeds).values()]
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


def collect_scores(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                   seeds: list[int] | None = None, which: str = "scores.csv") -> pd.DataFrame:
    """The per-image test scores of the finished cells, one long table: category, variant, seed, path, label,
    score (the last evaluation's, scores.csv; `which="scores_best.csv"` for the selected one), and each run's
    provenance columns (protocol, backbone, data)."""
    from adnlib.run.identity import PROVENANCE_COLUMNS, provenance_columns
    frames = []
    for path, m in _records(Path(out_dir), categories, variants, seeds).items():
        scores = pd.read_csv(path.parent / which)[["path", "label", "score"]]
        frames.append(scores.assign(category=m["category"], variant=m["variant"], seed=m["seed"],
                                    **provenance_columns(m)))
    columns = ["category", "variant", "seed", "path", "label", "score", *PROVENANCE_COLUMNS]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def auroc_table(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Categories × variants table of AUROC in % (the mean over seeds where a cell has several), with a 'mean'
    row."""
    table = runs.pivot_table(index="category", columns="variant", values=value, aggfunc="mean") * 100
    order = [v for v in ("differnet", "se", "cbam") if v in table.columns]
    table = table[order]
    table.loc["mean"] = table.mean()
    return table.round(2)


def compare_variants(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                seeds: list[int] | None = None, *,
                baseline: str = "differnet") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Is a variant's gain larger than the noise? The finished cells of a grid folder -> (summary: mean ± std of
    AUROC in % over seeds per category and variant; comparison: each variant against `baseline` on the same test
    images and seeds, ΔAUROC in points with its 95 % interval and the ORH verdict, `adnlib.run.stats
    .paired_comparison`), the comparison None when the baseline or another variant is missing.
    RunMismatchError (one line naming two cells and the fields) when the cells differ in protocol, backbone or
    data (adnlib.run.identity.check_records): runs that differ are never compared.

    >>> summary, comparison = adnlib.compare_variants("runs/compare")  # doctest: +SKIP
    >>> comparison[comparison.category == "mean"][["variant", "delta", "verdict"]]  # doctest: +SKIP
    """
    from adnlib.run.identity import check_records
    from adnlib.run.stats import paired_comparison, seed_summary
    records = _records(Path(out_dir), categories, variants, seeds)
    check_records({f"{m.get('category')}/{m.get('variant')}/seed{m.get('seed')}": m for m in records.values()},
                  what=f"grid {out_dir}")
    runs = collect_grid(out_dir, categories, variants, seeds)
    summary = seed_summary(runs)
    present = set(runs["variant"])
    if baseline not in present or len(present) < 2:
        return summary, None
    return summary, paired_comparison(collect_scores(out_dir, categories, variants, seeds), baseline)
