"""speed.py section 'auroc' (opt-in): AUROC of full `adnlib.run.train.train` runs with and without the feature cache."""
from __future__ import annotations

import statistics
import time

from adnlib.config import preset
from adnlib.run.train import train


def section_auroc(args, root, out: dict) -> None:
    """Feature cache vs fresh rotations: AUROC of full demo-preset runs (opt-in: ~1 min per run on 1 core)."""
    rows = []
    for category in args.auroc_categories.split(","):
        for seed in [int(s) for s in args.auroc_seeds.split(",")]:
            row = {"category": category, "seed": seed}
            for cached in (False, True):
                config = preset(args.auroc_preset, weights="none", device="cpu", seed=seed, feature_cache=cached)
                start = time.perf_counter()
                result = train(config, root, category, progress=False)
                key = "cached" if cached else "plain"
                row[key], row[f"{key}_s"] = result.metrics["auroc"], time.perf_counter() - start
            rows.append(row)
            print(f"  {category} seed {seed}: AUROC uncached {row['plain']:.4f}, cached {row['cached']:.4f} "
                  f"({row['plain_s']:.0f} s / {row['cached_s']:.0f} s)", flush=True)
    print(f"\n### Feature cache vs fresh rotations: AUROC, preset '{args.auroc_preset}', random backbone weights\n")
    print("| category | seed | AUROC, fresh rotations | AUROC, feature cache | difference | run s (fresh / cache) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['category']} | {r['seed']} | {r['plain']:.4f} | {r['cached']:.4f} | "
              f"{r['cached'] - r['plain']:+.4f} | {r['plain_s']:.0f} / {r['cached_s']:.0f} |")
    for category in args.auroc_categories.split(","):
        plain = [r["plain"] for r in rows if r["category"] == category]
        if len(plain) > 1:
            print(f"\n{category}: seed-to-seed std of the uncached AUROC {statistics.stdev(plain):.4f}")
    out["auroc"] = rows
