"""Run or collect the grid categories × variants and tabulate AUROC (the benchmark report's engine)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

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


def run_grid(base: Config, data_root: str | Path, categories: list[str], variants: list[str],
             out_dir: str | Path, *, progress: bool = True, resume: bool = True, rerun: bool = False) -> pd.DataFrame:
    """Train every (category, variant) into out_dir/<category>/<variant> and return their rows (collect_grid).

    resume=True (default): a finished cell whose saved config equals the requested one (base with the cell's
    variant) is reused, an interrupted one is resumed; a cell saved with another config is refused with an
    OutputExistsError naming every such cell and field, before anything trains, unless rerun=True, which
    retrains it from scratch. resume=False retrains every cell.
    """
    from adnlib.run.train import train
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output folder {out_dir} is a file")
    plan = []  # (category, variant, cell, action) with action 'reuse' | 'resume' | 'train'
    refused = []
    for category in categories:
        for variant in variants:
            cell = out_dir / category / variant
            if cell.exists() and not cell.is_dir():
                raise OutputExistsError(f"grid cell {cell} is a file")
            diff = cell_differences(cell, base.replace(variant=variant)) if resume else None
            if diff is None:
                action = "train"
            elif not diff:
                action = "reuse" if (cell / "metrics.json").exists() else "resume"
            elif rerun:
                action = "train"
            else:
                refused.append(_describe(cell, diff))
                continue
            plan.append((category, variant, cell, action))
    if refused:
        raise OutputExistsError(f"grid cell(s) saved with another config: {'; '.join(refused)}. Pass --rerun "
                                "(rerun=True) to retrain them, or choose another output folder")
    for category, variant, cell, action in plan:
        if action == "reuse":
            continue
        train(base.replace(variant=variant), data_root, category, cell, progress=progress,
              resume=action == "resume", overwrite=action == "train")
    return collect_grid(out_dir, categories, variants)


def collect_grid(out_dir: str | Path, categories: list[str] | None = None,
                 variants: list[str] | None = None) -> pd.DataFrame:
    """One row per finished run under out_dir: category, variant, auroc, auroc_best, weights, seconds.

    With categories and/or variants, only those cells (out_dir/<category>/<variant>) are collected; otherwise
    every finished run found there.
    """
    out_dir = Path(out_dir)
    if categories is None or variants is None:
        found = sorted(out_dir.glob("*/*/metrics.json"))
        paths = [p for p in found if (categories is None or p.parent.parent.name in categories)
                 and (variants is None or p.parent.name in variants)]
    else:
        paths = [out_dir / c / v / "metrics.json" for c in categories for v in variants]
        paths = [p for p in paths if p.exists()]
    rows = []
    for path in paths:
        m = json.loads(path.read_text())
        rows.append({k: m.get(k) for k in ("category", "variant", "auroc", "auroc_best", "best_epoch", "epochs",
                                           "backbone_weights", "train_seconds")})
    return pd.DataFrame(rows, columns=["category", "variant", "auroc", "auroc_best", "best_epoch", "epochs",
                                       "backbone_weights", "train_seconds"])


def auroc_table(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Categories × variants table of AUROC in %, with a 'mean' row."""
    table = runs.pivot(index="category", columns="variant", values=value) * 100
    order = [v for v in ("differnet", "se", "cbam") if v in table.columns]
    table = table[order]
    table.loc["mean"] = table.mean()
    return table.round(2)
