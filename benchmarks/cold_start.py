"""The attention cold start, measured: loss, feature norm and AUROC against epochs for DifferNet and for SE/CBAM
with the standard gate initialisation (gates near 0.5, faithful) and the "open" one (gates start at 0.95).

All runs share one seed, so they are paired (the same flow initialisation, data order and angles): the curves
differ only in the attention and its initialisation. Writes <out>/curves.csv, <out>/cold_start.png and prints
a table of the evaluations side by side; the figures are in benchmarks/README.md ("Attention cold start").

    ADNLIB_OFFLINE=1 python benchmarks/cold_start.py --data data/demo --category disc --epochs 40 \\
        --eval-every 4 --out runs/cold_start
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from adnlib.config import preset
from adnlib.run.train import train

RUNS = (("differnet", "standard"), ("se", "standard"), ("se", "open"), ("cbam", "standard"), ("cbam", "open"))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/demo"))
    p.add_argument("--category", default="disc")
    p.add_argument("--preset", default="demo")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="auto")
    p.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "1")))
    p.add_argument("--out", type=Path, default=Path("runs/cold_start"))
    return p.parse_args(argv)


def run_all(args: argparse.Namespace) -> pd.DataFrame:
    frames = []
    for variant, init in RUNS:
        config = preset(args.preset, variant=variant, attention_init=init, epochs=args.epochs,
                        eval_every=args.eval_every, seed=args.seed, weights=args.weights, device="cpu")
        started = time.perf_counter()
        result = train(config, args.data, args.category, args.out / f"{variant}-{init}", overwrite=True,
                       progress=False)
        print(f"{variant}/{init}: {time.perf_counter() - started:.0f} s, final AUROC {result.metrics['auroc']:.3f}, "
              f"weights {result.model.backbone_weights}", file=sys.stderr, flush=True)
        history = result.history[["epoch", "loss", "feature_norm"] + (["auroc"] if "auroc" in result.history
                                                                        else [])]
        frames.append(history.assign(run=f"{variant}/{init}", weights=result.model.backbone_weights))
    return pd.concat(frames, ignore_index=True)


def plot(curves: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run, part in curves.groupby("run", sort=False):
        style = "--" if run.endswith("/open") else "-"
        axes[0].plot(part["epoch"], part["loss"], style, label=run)
        axes[1].plot(part["epoch"], part["feature_norm"], style, label=run)
        evaluated = part.dropna(subset=["auroc"])
        axes[2].plot(evaluated["epoch"], evaluated["auroc"] * 100, style + "o", label=run)
    titles = ("training loss (NLL per dimension)", "mean L2 norm of the flow's input", "test image AUROC (%)")
    for ax, title in zip(axes, titles):
        ax.set(title=title, xlabel="epoch")
    axes[1].set_yscale("log")
    axes[2].legend()
    fig.suptitle(f"Attention cold start, paired runs (backbone weights: {curves['weights'].iloc[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    curves = run_all(args)
    curves.to_csv(args.out / "curves.csv", index=False)
    plot(curves, args.out / "cold_start.png")
    first = curves[curves["epoch"] == 1].set_index("run")[["loss", "feature_norm"]]
    print("epoch 1:\n" + first.round(3).to_string())
    table = curves.dropna(subset=["auroc"]).pivot(index="epoch", columns="run", values="auroc") * 100
    print("AUROC (%) at each evaluation:\n" + table.round(1).to_string())


if __name__ == "__main__":
    main(sys.argv[1:])
