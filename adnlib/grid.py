"""Run or collect the grid categories × variants and tabulate AUROC (the benchmark report's engine)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .config import Config
from .train import train


def run_grid(base: Config, data_root: str | Path, categories: list[str], variants: list[str],
             out_dir: str | Path, *, progress: bool = True, resume: bool = True) -> pd.DataFrame:
    """Train every (category, variant) into out_dir/<category>/<variant>; finished cells are reused."""
    out_dir = Path(out_dir)
    for category in categories:
        for variant in variants:
            cell = out_dir / category / variant
            if (cell / "metrics.json").exists() and resume:
                continue
            interrupted = resume and (cell / "checkpoint.pt").exists()
            train(base.replace(variant=variant), data_root, category, cell, progress=progress,
                  resume=interrupted, overwrite=not interrupted)
    return collect_grid(out_dir)


def collect_grid(out_dir: str | Path) -> pd.DataFrame:
    """One row per finished run found under out_dir: category, variant, auroc, auroc_best, weights, seconds."""
    rows = []
    for path in sorted(Path(out_dir).glob("*/*/metrics.json")):
        m = json.loads(path.read_text())
        rows.append({k: m.get(k) for k in ("category", "variant", "auroc", "auroc_best", "best_epoch", "epochs",
                                           "backbone_weights", "train_seconds")})
    return pd.DataFrame(rows)


def auroc_table(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Categories × variants table of AUROC in %, with a 'mean' row."""
    table = runs.pivot(index="category", columns="variant", values=value) * 100
    order = [v for v in ("differnet", "se", "cbam") if v in table.columns]
    table = table[order]
    table.loc["mean"] = table.mean()
    return table.round(2)
