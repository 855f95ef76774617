"""Do the demo's attention gates move? SE (or CBAM) trained with the demo preset on one demo category, for several
attention learning rates (`Config.attention_lr`; None = the flow's 2e-4, faithful) and seeds. Prints, per rate and
seed, the largest first-to-last-epoch change of a block's mean gate and the change of the mean gate over all blocks,
then per rate the mean ± std over seeds of that change (is it beyond the seed-to-seed spread?) and the AUROCs.

    ADNLIB_OFFLINE=1 python benchmarks/attention_lr.py                        # 3 rates x 3 seeds, ~8 min on 2 cores
    ADNLIB_OFFLINE=1 python benchmarks/attention_lr.py --rates none 1e-2 --seeds 0 1
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _rate(text: str) -> float | None:
    return None if text == "none" else float(text)


def _one_run(variant: str, rate: float | None, seed: int, data: Path, out: Path) -> dict:
    from adnlib.config import preset
    from adnlib.run.train import train
    config = preset("demo", variant=variant, weights="none", device="cpu", seed=seed, attention_lr=rate)
    history = train(config, data, "disc", out, overwrite=True, progress=False)
    h, auroc = history.history, history.metrics["auroc"]
    gates = [c for c in h.columns if c.startswith("gate_mean_")]
    first, last = h[gates].iloc[0].to_numpy(), h[gates].iloc[-1].to_numpy()
    return {"max_shift": float(np.abs(last - first).max()), "mean_shift": float(last.mean() - first.mean()),
            "auroc": float(auroc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=_rate, default=[None, 2e-3, 1e-2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variant", default="se", choices=("se", "cbam"))
    args = parser.parse_args()
    from adnlib.data.demo import make_demo_dataset
    with tempfile.TemporaryDirectory() as folder:
        data = make_demo_dataset(Path(folder) / "demo")
        for rate in args.rates:
            rows = []
            for seed in args.seeds:
                rows.append(_one_run(args.variant, rate, seed, data, Path(folder) / f"{rate}-{seed}"))
                print(f"attention_lr={rate} seed={seed}: largest block shift {rows[-1]['max_shift']:.4f}, "
                      f"mean gate shift {rows[-1]['mean_shift']:+.4f}, AUROC {rows[-1]['auroc']:.3f}", flush=True)
            shifts = np.array([r["mean_shift"] for r in rows])
            spread = shifts.std(ddof=1) if len(shifts) > 1 else float("nan")
            print(f"== attention_lr={rate}: mean gate shift {shifts.mean():+.4f} ± {spread:.4f} over "
                  f"{len(rows)} seeds (|mean| / std = {abs(shifts.mean()) / spread:.1f}); largest block shift "
                  f"{min(r['max_shift'] for r in rows):.4f}–{max(r['max_shift'] for r in rows):.4f}; AUROC "
                  + ", ".join(f"{r['auroc']:.3f}" for r in rows), flush=True)


if __name__ == "__main__":
    main()
