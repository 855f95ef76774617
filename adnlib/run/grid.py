"""Run or collect the grid categories × variants × seeds and tabulate AUROC (the benchmark report's engine).

A cell is out_dir/<category>/<variant>/seed<k>. Cells with the same seed are paired: the same flow
initialisation, data order, training and test rotations (docs/protocol.md §9), so `adnlib.run.stats` can compare
the variants on the same test images.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from adnlib.config import Config
from adnlib.errors import OutputExistsError

# Fields that do not change a run's numbers: a finished cell that differs only there is reused.
NOT_RESULT_FIELDS = ("num_workers",)


def _saved_config(cell: Path, name: str) -> dict[str, Any] | None:
    """The config dict a cell's metrics.json or checkpoint.pt was written with (None if it holds none)."""
    path = cell / name
    if name == "metrics.json":
        try:
            return json.loads(path.read_text()).get("config")
        except (OSError, ValueError, AttributeError) as exc:
            raise OutputExistsError(f"grid cell {cell} holds an unreadable metrics.json ({exc}); pass --rerun to "
                                    "replace it, or choose another output folder") from exc
    import torch

    from adnlib.run.checkpoint import load_checkpoint
    try:  # memory-mapped: reads the small config without loading the (up to 700 MB) weights
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_checkpoint explains what is wrong with the file
        ckpt = load_checkpoint(path)
    return ckpt.get("config") if isinstance(ckpt, dict) else None


def cell_differences(cell: str | Path, requested: Config) -> dict[str, tuple[Any, Any]] | None:
    """How the run saved in `cell` differs from `requested`, as {field: (saved, requested)}; None: nothing saved.

    A finished cell (metrics.json) is compared on every field but NOT_RESULT_FIELDS; an interrupted one
    (checkpoint.pt only) on every field a resume may not change (adnlib.run.train.RESUMABLE_CHANGES). A saved run
    without a config (an older adnlib) differs in a pseudo-field 'config'.
    """
    from adnlib.run.checkpoint import config_differences
    cell = Path(cell)
    if (cell / "metrics.json").exists():
        name, ignore = "metrics.json", NOT_RESULT_FIELDS
    elif (cell / "checkpoint.pt").exists():
        from adnlib.run.train import RESUMABLE_CHANGES
        name, ignore = "checkpoint.pt", RESUMABLE_CHANGES
    else:
        return None
    saved = _saved_config(cell, name)
    if not isinstance(saved, dict):
        return {"config": ("not recorded", "given")}
    requested_dict = requested.to_dict()
    unknown = {k: (v, None) for k, v in saved.items() if k not in requested_dict and k not in ignore}
    try:
        saved_config = Config.from_dict({k: v for k, v in saved.items() if k in requested_dict})
    except (TypeError, ValueError) as exc:  # a config this version cannot build
        return {"config": (f"invalid ({exc})", "given")}
    return {**config_differences(saved_config, requested, ignore=ignore), **unknown}


def _describe(cell: Path, diff: dict[str, tuple[Any, Any]]) -> str:
    fields = ", ".join(f"{k}: {a!r} there, {b!r} requested" for k, (a, b) in diff.items())
    return f"{cell} ({fields})"


def cell_dir(out_dir: str | Path, category: str, variant: str, seed: int) -> Path:
    """The folder of one grid cell."""
    return Path(out_dir) / category / variant / f"seed{seed}"


def _plan(base: Config, out_dir: Path, cells: list[tuple[str, str, int]], resume: bool, rerun: bool) -> list:
    """(category, variant, seed, folder, action) per cell, action 'reuse' | 'resume' | 'train'; refuses cells saved
    with another config (unless rerun) before anything trains."""
    plan, refused = [], []
    for category, variant, seed in cells:
        cell = cell_dir(out_dir, category, variant, seed)
        if cell.exists() and not cell.is_dir():
            raise OutputExistsError(f"grid cell {cell} is a file")
        diff = cell_differences(cell, base.replace(variant=variant, seed=seed)) if resume else None
        if diff is None:
            action = "train"
        elif not diff:
            action = "reuse" if (cell / "metrics.json").exists() else "resume"
        elif rerun:
            action = "train"
        else:
            refused.append(_describe(cell, diff))
            continue
        plan.append((category, variant, seed, cell, action))
    if refused:
        raise OutputExistsError(f"grid cell(s) saved with another config: {'; '.join(refused)}. Pass --rerun "
                                "(rerun=True) to retrain them, or choose another output folder")
    return plan


def run_grid(base: Config, data_root: str | Path, categories: list[str], variants: list[str],
             out_dir: str | Path, *, seeds: list[int] | None = None, progress: bool = True, resume: bool = True,
             rerun: bool = False) -> pd.DataFrame:
    """Train every (category, variant, seed) into out_dir/<category>/<variant>/seed<k> and return their rows
    (collect_grid). seeds: default [base.seed]; runs with one seed are paired across variants.

    resume=True (default): a finished cell whose saved config equals the requested one (base with the cell's
    variant and seed) is reused, an interrupted one is resumed; a cell saved with another config is refused with
    an OutputExistsError naming every such cell and field, before anything trains, unless rerun=True, which
    retrains it from scratch. resume=False retrains every cell.
    """
    from adnlib.run.train import train
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output folder {out_dir} is a file")
    seeds = list(dict.fromkeys(seeds)) if seeds else [base.seed]
    cells = [(c, v, s) for c in categories for v in variants for s in seeds]
    plan = _plan(base, out_dir, cells, resume, rerun)
    bar = tqdm(plan, desc="grid cells", disable=not progress)
    for category, variant, seed, cell, action in bar:
        bar.set_postfix_str(f"{category}/{variant}/seed{seed}")
        if action == "reuse":
            continue
        train(base.replace(variant=variant, seed=seed), data_root, category, cell, progress=progress,
              resume=action == "resume", overwrite=action == "train")
    return collect_grid(out_dir, categories, variants, seeds)


GRID_COLUMNS = ["category", "variant", "seed", "auroc", "auroc_best", "best_epoch", "epochs", "backbone_weights",
                "train_seconds"]


def _cell_paths(out_dir: Path, categories, variants, seeds) -> list[Path]:
    found = sorted(out_dir.glob("*/*/seed*/metrics.json"))
    return [p for p in found if (categories is None or p.parent.parent.parent.name in categories)
            and (variants is None or p.parent.parent.name in variants)
            and (seeds is None or p.parent.name in {f"seed{s}" for s in seeds})]


def collect_grid(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                 seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per finished cell under out_dir: category, variant, seed, auroc, auroc_best, weights, seconds.

    With categories, variants and/or seeds, only those cells; otherwise every finished cell found there.
    """
    rows = []
    for path in _cell_paths(Path(out_dir), categories, variants, seeds):
        m = json.loads(path.read_text())
        rows.append({k: m.get(k) for k in GRID_COLUMNS})
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


def collect_scores(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                   seeds: list[int] | None = None, which: str = "scores.csv") -> pd.DataFrame:
    """The per-image test scores of the finished cells, one long table: category, variant, seed, path, label,
    score (the last evaluation's, scores.csv; `which="scores_best.csv"` for the selected one)."""
    frames = []
    for path in _cell_paths(Path(out_dir), categories, variants, seeds):
        m = json.loads(path.read_text())
        scores = pd.read_csv(path.parent / which)[["path", "label", "score"]]
        frames.append(scores.assign(category=m["category"], variant=m["variant"], seed=m["seed"]))
    columns = ["category", "variant", "seed", "path", "label", "score"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def auroc_table(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Categories × variants table of AUROC in % (the mean over seeds where a cell has several), with a 'mean'
    row."""
    table = runs.pivot_table(index="category", columns="variant", values=value, aggfunc="mean") * 100
    order = [v for v in ("differnet", "se", "cbam") if v in table.columns]
    table = table[order]
    table.loc["mean"] = table.mean()
    return table.round(2)


def grid_report(out_dir: str | Path, categories: list[str] | None = None, variants: list[str] | None = None,
                seeds: list[int] | None = None, *, n_boot: int = 2000,
                baseline: str = "differnet") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(mean ± std of AUROC over seeds per category and variant, paired comparison of each variant with
    `baseline` on the same test images) of the finished cells (`adnlib.run.stats`); the comparison is None when
    the baseline or another variant is missing."""
    from adnlib.run.stats import paired_comparison, seed_summary
    runs = collect_grid(out_dir, categories, variants, seeds)
    summary = seed_summary(runs)
    present = set(runs["variant"])
    if baseline not in present or len(present) < 2:
        return summary, None
    return summary, paired_comparison(collect_scores(out_dir, categories, variants, seeds), baseline,
                                      n_boot=n_boot)
