"""Side-by-side speed benchmark: adnlib's training and scoring paths against the official DifferNet code's way.

    ADNLIB_OFFLINE=1 python benchmarks/speed.py            # full run, paper config at 448 px (~8-12 min)
    ADNLIB_OFFLINE=1 python benchmarks/speed.py --quick    # ~2 minutes, for development
    ADNLIB_OFFLINE=1 python benchmarks/speed.py --sections auroc   # cache vs no cache AUROC, demo preset (~15 min)

Every figure that matters is a RATIO of runs made in this one process, interleaved (A B C ... then reversed, per
repetition), so that the noise of a shared machine cancels; absolute images/s are printed for orientation only.
All paths run with the same number of torch threads (--threads, default 1; see its help).

Paths
- reference: the official code's way, kept here only. Per-image PIL ``RandomRotation(180)`` on the resized PIL
  image, ToTensor, Normalize; AlexNet features whose weights require gradients (so every backward pass computes
  conv weight gradients it never uses), default (contiguous) memory format; flow + torch's default Adam.
- adnlib: the library's training step itself, `adnlib.run.train.training_batch` + `adnlib.run.train.train_step` (the
  calls `adnlib.run.train`'s epoch loop makes): `model.prepare(images, angles)` (batched PIL-exact rotations
  gathered straight into channels_last), `model.embed` with frozen convolutions (no graph for DifferNet; for
  SE/CBAM gradients only from the first attention block on, never for conv weights), the flow, `nll_loss`,
  `model.make_optimizer()` (fused Adam).
- scoring: reference = per-image PIL rotations + contiguous backbone under no_grad; adnlib = `model.score`.
- feature cache: `adnlib.run.train.FeatureCache` (K rotations per image embedded once), epochs sample from it
  (`train_step(..., embeddings=...)`).
- memory: peak RSS of a paper-config training step (24 images x 4 rotations) in a fresh process, and RSS after
  each of several steps (growth over steps = leak).

Weights are random (ADNLIB_OFFLINE=1, weights="none"): speed does not depend on their values.
Sections live in bench_train.py, bench_score.py, bench_cache.py, bench_memory.py and bench_auroc.py; what they
share (the reference, the adnlib step, the measuring tools) in bench_common.py. This file is the entry point.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules beside this file
os.environ.setdefault("ADNLIB_OFFLINE", "1")

import torch  # noqa: E402
from bench_auroc import section_auroc  # noqa: E402
from bench_cache import section_cache  # noqa: E402
from bench_memory import memory_child, section_memory  # noqa: E402
from bench_score import section_score  # noqa: E402
from bench_train import section_train  # noqa: E402

from adnlib.data.demo import make_demo_dataset  # noqa: E402

SECTIONS = {"train": section_train, "score": section_score, "cache": section_cache, "memory": section_memory,
            "auroc": section_auroc}


def check_targets(out: dict, quick: bool = False) -> None:
    checks = []  # (text, measured, passed)
    if "train" in out:
        rows = {r["path"]: r for r in out["train"]}
        r = rows["adnlib DifferNet"]
        checks.append(("DifferNet training >= 3.0x reference", f"{r['ratio']:.2f}x", r["ratio"] >= 3.0))
        for name, r in rows.items():
            if "AttentDifferNet" in name:
                checks.append((f"{name.split()[-1]} training >= 1.3x reference", f"{r['ratio']:.2f}x",
                               r["ratio"] >= 1.3))
    if "score" in out:
        r = out["score"]["rows"][1]
        checks.append(("scoring >= 1.25x reference", f"{r['ratio']:.2f}x", r["ratio"] >= 1.25))
        checks.append(("scoring >= 85% of the compute limit", f"{r['of_limit']:.0%}", r["of_limit"] >= 0.85))
    if "cache" in out:
        r = next(r for r in out["cache"] if r["path"] == "adnlib epoch from the feature cache")
        checks.append(("cached epoch >= 15x reference epoch", f"{r['ratio']:.1f}x", r["ratio"] >= 15.0))
    if "memory" in out:
        for r in out["memory"]:
            checks.append((f"{r['variant']}: no RSS growth over training steps (< 50 MB)", f"{r['growth_mb']:+.0f} MB",
                           r["growth_mb"] < 50))
    if checks:
        print("\n### Targets (issue 4)" + (" -- quick sizes: for development only, not the targets' setting" if quick
                                           else "") + "\n")
    for text, measured, passed in checks:
        print(f"- {'PASS' if passed else 'FAIL'}: {text}: measured {measured}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for development (~2 minutes)")
    p.add_argument("--sections", default="train,score,cache,memory",
                   help="comma-separated subset of train,score,cache,memory,auroc (auroc: opt-in, ~15 min)")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--images", type=int, default=24, help="images per training step in 'train' (paper: 24)")
    p.add_argument("--rotations", type=int, default=4, help="rotations per image per training step (paper: 4)")
    p.add_argument("--variants", default="se,cbam", help="attention variants to time besides DifferNet")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions in 'train' and 'score'")
    p.add_argument("--score-images", type=int, default=2)
    p.add_argument("--score-batch", type=int, default=1, help="images per scoring batch (the official code: 1)")
    p.add_argument("--score-rotations", type=int, default=64)
    p.add_argument("--cache-images", type=int, default=24, help="images per epoch in 'cache'")
    p.add_argument("--cache-batch", type=int, default=24, help="images per step in 'cache' (paper: 24)")
    p.add_argument("--cache-rotations", type=int, default=16, help="K rotations per image in the cache")
    p.add_argument("--cache-repeats", type=int, default=2)
    p.add_argument("--skip-uncached-epoch", action="store_true", help="'cache' times only reference and cached")
    p.add_argument("--memory-images", type=int, default=24)
    p.add_argument("--rotations-memory", type=int, default=4)
    p.add_argument("--memory-steps", type=int, default=4)
    p.add_argument("--memory-variants", default="se", help="variants measured besides DifferNet in 'memory'")
    p.add_argument("--auroc-preset", default="demo", help="'auroc' section (opt-in): preset to train")
    p.add_argument("--auroc-seeds", default="0,1,2")
    p.add_argument("--auroc-categories", default="disc,weave")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every path (default 1: on a shared machine, a second thread waiting on a "
                        "busy core makes runs 2-4x slower and the ratios noise; use the core count on an idle one)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-variant", default="differnet", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.rotations, args.repeats = 2, 2, 2
        args.score_images, args.score_rotations = 1, 16
        args.cache_images, args.cache_batch, args.cache_rotations, args.cache_repeats = 4, 4, 8, 2
        args.memory_images, args.memory_steps, args.memory_variants = 4, 3, ""
    args.variants = [v for v in args.variants.split(",") if v]
    args.memory_variants = [v for v in args.memory_variants.split(",") if v]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    print(f"adnlib speed benchmark: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; config 'paper' at {args.img_size} px, random weights")
    out: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_dataset(Path(tmp) / "demo")
        for name in args.sections.split(","):
            t0 = time.perf_counter()
            SECTIONS[name](args, root, out)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)")
    check_targets(out, args.quick)
    print(f"\nTotal {time.perf_counter() - started:.0f} s; load average now {os.getloadavg()[0]:.1f}.")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
