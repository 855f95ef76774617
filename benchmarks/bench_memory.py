"""speed.py section 'memory': peak RSS of paper-config training steps (`adnlib.run.train.train_step`) in a fresh
process per variant, and the RSS after each step (growth over steps = leak)."""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_common import adnlib_train_step, load_images, peak_rss_bytes, rss_bytes

from adnlib.config import preset
from adnlib.model.network import AttentDifferNet

SPEED = Path(__file__).with_name("speed.py")


def memory_child(args) -> None:
    """Fresh process (speed.py --memory-child): peak RSS of paper-config training steps, RSS after each step
    (JSON on stdout)."""
    torch.set_num_threads(args.threads)
    config = preset("paper", weights="none", device="cpu", img_size=args.img_size, variant=args.memory_variant)
    _, images, _ = load_images(Path(args.root), args.memory_images, args.img_size)
    rss_start = rss_bytes()
    model = AttentDifferNet(config).train()
    opt = model.make_optimizer()
    gen = torch.Generator().manual_seed(5)
    rss_model = rss_bytes()
    after, seconds = [], []
    for _ in range(args.memory_steps):
        start = time.perf_counter()
        adnlib_train_step(model, opt, images, args.rotations_memory, gen)
        seconds.append(time.perf_counter() - start)
        after.append(rss_bytes())
    print(json.dumps({"variant": args.memory_variant, "rss_start": rss_start, "rss_model": rss_model,
                      "rss_after_steps": after, "seconds": seconds,
                      "peak_rss": peak_rss_bytes(),
                      "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def section_memory(args, root, out: dict) -> None:
    rows = []
    for variant in ["differnet"] + list(args.memory_variants):
        cmd = [sys.executable, str(SPEED), "--memory-child", "--root", str(root), "--img-size", str(args.img_size),
               "--memory-images", str(args.memory_images), "--rotations-memory", str(args.rotations_memory),
               "--memory-steps", str(args.memory_steps), "--memory-variant", variant, "--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"\n### Memory: fresh process per variant, {args.memory_steps} training steps of "
          f"{args.memory_images} images x {args.rotations_memory} rotations at {args.img_size} px\n")
    print("| variant | RSS after imports + data GB | + model & optimizer GB | peak RSS (VmHWM) GB | "
          "RSS after each step GB | growth after step 2 MB | s per step |")
    print("|---|---:|---:|---:|---|---:|---:|")
    gb = 2 ** 30
    for r in rows:
        after = r["rss_after_steps"]
        growth = (after[-1] - after[min(1, len(after) - 1)]) / 2 ** 20
        r["growth_mb"] = growth
        print(f"| {r['variant']} | {r['rss_start'] / gb:.2f} | {r['rss_model'] / gb:.2f} | {r['peak_rss'] / gb:.2f} | "
              f"{' '.join(f'{a / gb:.2f}' for a in after)} | {growth:+.0f} | "
              f"{statistics.median(r['seconds']):.1f} |")
    out["memory"] = rows
