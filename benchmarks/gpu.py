"""Device benchmark (issue 15): adnlib against the official DifferNet code's way on one GPU, in one process.

On a CUDA machine (about 10 minutes in all, of which the whole runs take most; without --whole-run ~2 minutes):

    ADNLIB_OFFLINE=1 python benchmarks/gpu.py --device cuda --whole-run --json runs/gpu.json

CPU smoke test (what tests/test_gpu_bench.py runs, seconds):

    python benchmarks/gpu.py --device cpu --img-size 256 --batch-images 2 --rotations 1 --steps 1 \
        --score-images 1 --score-rotations 2 --workers 0

What it measures, side by side on --device:
1. A training step and scoring, the official way (per-image PIL `RandomRotation` + ToTensor + Normalize in a
   DataLoader with --workers workers; AlexNet features with requires_grad=True, so every backward pass computes
   conv weight gradients; torch's default Adam: `bench_common`'s reference) against adnlib's
   (`adnlib.run.train.training_batch` + `train_step` with `model.make_optimizer()`, `model.score`), in float32
   and with amp (`preset(..., amp=True)`: bfloat16 autocast for the backbone). Images/s, the ratio to the
   official way, peak GPU memory (`torch.cuda.max_memory_allocated`, n/a on CPU) and the largest relative change
   of a score that amp makes (the untrained model, same seed, images and angles). Also the first-step loss of
   both ways on the same images and angles in float32 (they must agree to ~1e-5).
2. --whole-run: `adnlib.run.train.train` with the paper preset for DifferNet and SE on a generated MVTec-sized
   category (200 train / 80 test images; --whole-run-size shrinks it), wall time split into data loading,
   training (the epochs' seconds) and evaluation (wall - training - data: scoring, checkpoints, set-up).
3. One markdown table, the machine (GPU, driver, torch, CUDA) and the issue's targets, PASS/FAIL.

Random backbone weights (weights="none"): speed does not depend on their values. Paths run one after another,
each with its own model, so that each peak memory is its own; a dedicated GPU is not shared, so no interleaving.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, gpu_check beside this file
os.environ.setdefault("ADNLIB_OFFLINE", "1")

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    ReferenceDifferNet,
    adnlib_train_step,
    official_transform,
    reference_optimizer,
    reference_scores,
    reference_train_step,
)
from gpu_check import peak_gb, sync  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.transforms import functional as TF  # noqa: E402

from adnlib.config import preset  # noqa: E402
from adnlib.data.demo import make_demo_dataset  # noqa: E402
from adnlib.model.network import AttentDifferNet  # noqa: E402
from adnlib.model.transforms import IMAGENET_MEAN, IMAGENET_STD, random_angles  # noqa: E402
from adnlib.run.train import _read_data, train, train_step  # noqa: E402

TARGET_RATIO = 5.0  # issue 15: >= 5x the official way's training throughput
TARGET_WHOLE_RUN_S = 180.0  # issue 15: the paper protocol on one MVTec-sized category, DifferNet, under 3 minutes
PAPER = {"img_size": 448, "batch_images": 24, "rotations": 4, "score_rotations": 64}


def identity(t):
    return t


class OfficialData(Dataset):
    """The official code's dataset: item i = n rotated copies of image i, each through the official transform."""

    def __init__(self, pil_images: list, n: int, transform):
        self.pil, self.n, self.transform = pil_images, n, transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.stack([self.transform(self.pil[i]) for _ in range(self.n)])


def official_loader(pil_images: list, n: int, batch: int, workers: int) -> DataLoader:
    """A DataLoader over `OfficialData` as the official code's (workers persist between epochs here)."""
    data = OfficialData(pil_images, n, official_transform(180.0))
    return DataLoader(data, batch_size=batch, shuffle=False, num_workers=workers, persistent_workers=workers > 0)


def machine(device: torch.device) -> dict:
    """GPU name, driver, torch and CUDA versions (n/a where they do not apply)."""
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda or "n/a",
            "gpu": "n/a", "gpu_memory_gb": "n/a", "driver": "n/a"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}")
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "n/a"
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def build(args, device: torch.device, amp: bool = False) -> AttentDifferNet:
    """The paper config at --img-size, random weights; seeded, so every path starts from the same flow."""
    config = preset("paper", weights="none", device=str(device), img_size=args.img_size, amp=amp,
                    n_train_rotations=args.rotations, **flow_overrides(args))
    torch.manual_seed(0)
    return AttentDifferNet(config)


def flow_overrides(args) -> dict:
    """--fc-hidden (smoke tests only: the flow's size, the paper's when 0)."""
    return {"fc_hidden": args.fc_hidden} if args.fc_hidden else {}


def timed_steps(fn, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls of fn after one warm-up call (allocations, cuDNN autotuning, optimizer state)."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - start


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_official(args, device: torch.device, images: torch.Tensor) -> dict:
    """The official way: loader (PIL rotations in workers) -> device -> backbone with conv grads -> flow -> Adam."""
    reset_peak(device)
    model = build(args, device)
    ref = ReferenceDifferNet(model.backbone.features, model.flow, args.img_size, model.config.n_scales)
    ref = ref.to(device).train()
    optimizer = reference_optimizer(ref.flow, model.config)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    train_loader = official_loader(pil, args.rotations, len(pil), args.workers)
    score_loader = official_loader(pil[:args.score_images], args.score_rotations, 1, args.workers)
    losses = []

    def step():  # one epoch of the loader = one batch of all the images; the official `inputs.view(-1, 3, S, S)`
        for batch in train_loader:
            x = batch.to(device).flatten(0, 1)
            losses.append(reference_train_step(ref, optimizer, list(x), 1, identity))

    def score():  # the official test loop: one image (its score_rotations copies) per batch, no_grad
        for batch in score_loader:
            reference_scores(ref, list(batch.to(device).flatten(0, 1)), 1, identity)

    train_s = timed_steps(step, args.steps, device)
    peak_train = peak_gb(device)
    ref.eval()
    score_s = timed_steps(score, 1, device)
    row = {"path": "official way", "precision": "float32",
           "train_images_per_s": args.steps * len(images) * args.rotations / train_s,
           "score_images_per_s": args.score_images * args.score_rotations / score_s,
           "peak_train_gb": peak_train, "peak_gb": peak_gb(device), "loss": losses[-1]}
    return row


def run_ours(args, device: torch.device, images: torch.Tensor, amp: bool) -> tuple[dict, torch.Tensor]:
    """adnlib: `training_batch` + `train_step` (fused Adam), `model.score` (config.test_batch_size images per
    batch) -> (row, the untrained model's scores of the scoring images at fixed angles)."""
    reset_peak(device)
    model = build(args, device, amp).to(device).eval()
    test = images[:args.score_images].to(device)
    angles = random_angles(len(test) * args.score_rotations, 180.0, torch.Generator().manual_seed(1))
    angles = angles.reshape(len(test), args.score_rotations)
    untrained = model.score(test, angles=angles).float().cpu()
    model.train()
    optimizer = model.make_optimizer()
    gen = torch.Generator().manual_seed(2)
    losses = []

    def step():  # images come from the host each step, as the epoch loop's `images.to(run.device)`
        losses.append(adnlib_train_step(model, optimizer, images.to(device), args.rotations, gen))

    def score():
        b = model.config.test_batch_size
        for i in range(0, len(test), b):
            model.score(test[i:i + b], angles=angles[i:i + b])

    train_s = timed_steps(step, args.steps, device)
    peak_train = peak_gb(device)
    model.eval()
    score_s = timed_steps(score, 1, device)
    row = {"path": "adnlib", "precision": "amp (bf16 backbone)" if amp else "float32",
           "train_images_per_s": args.steps * len(images) * args.rotations / train_s,
           "score_images_per_s": args.score_images * args.score_rotations / score_s,
           "peak_train_gb": peak_train, "peak_gb": peak_gb(device), "loss": losses[-1]}
    return row, untrained


def first_step_losses(args, device: torch.device, images: torch.Tensor, angles: torch.Tensor) -> dict:
    """Faithfulness: the first training step's loss, ours (`train_step`) and the official way (PIL rotations by
    the same angles, ToTensor, Normalize, `reference_train_step`), from the same flow, in float32."""
    model = build(args, device).to(device).train()
    ref = ReferenceDifferNet(model.backbone.features, copy.deepcopy(model.flow), args.img_size,
                             model.config.n_scales).to(device).train()
    ours = train_step(model, model.make_optimizer(), images.to(device), angles).item()
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    x = [TF.normalize(TF.to_tensor(TF.rotate(p, float(a))), IMAGENET_MEAN, IMAGENET_STD).to(device)
         for p, row in zip(pil, angles) for a in row]
    official = reference_train_step(ref, reference_optimizer(ref.flow, model.config), x, 1, identity)
    return {"ours": ours, "official": official, "abs_diff": abs(ours - official)}


def step_and_score(args, device: torch.device) -> dict:
    """Section 1: the three paths, the amp score change and the first-step losses."""
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch_images, 3, args.img_size, args.img_size, generator=gen) * 255).to(torch.uint8)
    rows = [run_official(args, device, images)]
    scores = {}
    for amp in (False, True):
        row, scores[amp] = run_ours(args, device, images, amp)
        rows.append(row)
    for row in rows:
        row["train_ratio"] = row["train_images_per_s"] / rows[0]["train_images_per_s"]
        row["score_ratio"] = row["score_images_per_s"] / rows[0]["score_images_per_s"]
    change = (scores[True] - scores[False]).abs() / scores[False].abs().clamp_min(1e-12)
    rows[2]["amp_score_change"] = change.max().item()
    angles = random_angles(2 * args.rotations, 180.0, torch.Generator().manual_seed(3)).reshape(2, args.rotations)
    faithful = first_step_losses(args, device, images[:2], angles)
    return {"rows": rows, "first_step_loss": faithful}


def whole_run(args, device: torch.device, workdir: Path) -> list[dict]:
    """Section 2: `train` with the paper preset for DifferNet and SE on a generated MVTec-sized category."""
    n = args.whole_run_size
    root = make_demo_dataset(workdir / "data", image_size=args.img_size, n_train=n,
                             n_test_good=max(1, n // 10), n_test_per_defect=max(1, n // 10), categories=("disc",))
    overrides = {"epochs": args.whole_run_epochs} if args.whole_run_epochs else {}
    rows = []
    for variant in ("differnet", "se"):
        config = preset("paper", variant=variant, device=str(device), weights="none", img_size=args.img_size,
                        **overrides, **flow_overrides(args))
        started = time.perf_counter()
        _read_data(config, root, "disc", False)  # what train() reads first, timed alone (the OS cache is warm after)
        load_s = time.perf_counter() - started
        reset_peak(device)
        started = time.perf_counter()
        result = train(config, root, "disc", workdir / variant, progress=False)
        wall = time.perf_counter() - started
        train_s = float(result.history["seconds"].sum())
        rows.append({"variant": variant, "epochs": config.epochs, "n_train": result.metrics["n_train"],
                     "n_test": result.metrics["n_test_normal"] + result.metrics["n_test_anomalous"],
                     "wall_s": wall, "train_s": train_s, "metrics_train_s": result.metrics["train_seconds"],
                     "data_s": load_s, "eval_s": max(0.0, wall - train_s - load_s), "peak_gb": peak_gb(device),
                     "auroc": result.metrics["auroc"]})
        del result
        shutil.rmtree(workdir / variant, ignore_errors=True)
    return rows


def targets(out: dict, args) -> list[dict]:
    """The issue's targets against the results (only meaningful at the defaults: paper sizes, full epochs)."""
    checks = []
    for row in out["rows"][1:]:
        checks.append({"target": f"adnlib {row['precision']} training >= {TARGET_RATIO:.0f}x the official way",
                       "measured": f"{row['train_ratio']:.2f}x", "passed": row["train_ratio"] >= TARGET_RATIO})
    for row in out.get("whole_run", []):
        if row["variant"] == "differnet":
            checks.append({"target": f"paper protocol, one MVTec-sized category, DifferNet < {TARGET_WHOLE_RUN_S:.0f}s",
                           "measured": f"{row['wall_s']:.0f} s", "passed": row["wall_s"] < TARGET_WHOLE_RUN_S})
    faithful = out["first_step_loss"]
    checks.append({"target": "first-step loss, adnlib = official way (float32, same images and angles) to 1e-4",
                   "measured": f"{faithful['abs_diff']:.1e}", "passed": faithful["abs_diff"] < 1e-4})
    return checks


def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def report(out: dict, args) -> None:
    """One markdown table per section, the machine, the targets."""
    m = out["machine"]
    print(f"\n## adnlib device benchmark: {m['gpu']} ({m['device']}), driver {m['driver']}, torch {m['torch']}, "
          f"CUDA {m['cuda']}")
    print(f"\npaper config at {args.img_size} px; training {args.batch_images} images x {args.rotations} rotations "
          f"per step, {args.steps} timed steps; scoring {args.score_images} images x {args.score_rotations} "
          f"rotations; official loader workers {args.workers}\n")
    print("| path | precision | training images/s | ratio to official | scoring images/s | ratio to official "
          "| peak GPU GB training | peak GPU GB incl. scoring | amp score change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in out["rows"]:
        print(f"| {r['path']} | {r['precision']} | {r['train_images_per_s']:.2f} | {r['train_ratio']:.2f}x | "
              f"{r['score_images_per_s']:.2f} | {r['score_ratio']:.2f}x | {fmt(r['peak_train_gb'])} | "
              f"{fmt(r['peak_gb'])} | {fmt(r.get('amp_score_change'), '.1e')} |")
    f = out["first_step_loss"]
    print(f"\nFirst-step loss, float32, same images and angles: adnlib {f['ours']:.6f}, official way "
          f"{f['official']:.6f} (|diff| {f['abs_diff']:.1e})")
    if out.get("whole_run"):
        print("\n| whole run (paper preset) | epochs | train/test images | wall s | training s | evaluation s "
              "| data s | peak GPU GB | AUROC (random weights) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in out["whole_run"]:
            print(f"| {r['variant']} | {r['epochs']} | {r['n_train']}/{r['n_test']} | {r['wall_s']:.1f} | "
                  f"{r['train_s']:.1f} | {r['eval_s']:.1f} | {r['data_s']:.1f} | {fmt(r['peak_gb'])} | "
                  f"{r['auroc']:.3f} |")
    at_paper = all(getattr(args, k) == v for k, v in PAPER.items()) and not args.fc_hidden
    print("\n### Targets (issue 15)" + ("" if at_paper else " -- small sizes: not the targets' setting") + "\n")
    for c in out["targets"]:
        print(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['target']}: measured {c['measured']}")
    sys.stdout.flush()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--img-size", type=int, default=PAPER["img_size"])
    p.add_argument("--batch-images", type=int, default=PAPER["batch_images"], help="images per training step")
    p.add_argument("--rotations", type=int, default=PAPER["rotations"], help="rotations per training image")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per path (after one warm-up)")
    p.add_argument("--score-images", type=int, default=8)
    p.add_argument("--score-rotations", type=int, default=PAPER["score_rotations"])
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the official way")
    p.add_argument("--whole-run", action="store_true", help="also train the paper preset (DifferNet, SE) end to end")
    p.add_argument("--whole-run-size", type=int, default=200, help="training images (test: 40%% as many)")
    p.add_argument("--whole-run-epochs", type=int, default=0, help="0: the paper preset's 192")
    p.add_argument("--fc-hidden", type=int, default=0, help="flow hidden width; 0: the paper's (smoke tests: 64)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Run the sections, print the tables, write --json; -> the results."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu.py: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    started = time.perf_counter()
    out = {"machine": machine(device), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    out.update(step_and_score(args, device))
    if args.whole_run:
        with tempfile.TemporaryDirectory() as tmp:
            out["whole_run"] = whole_run(args, device, Path(tmp))
    out["targets"] = targets(out, args)
    out["seconds"] = time.perf_counter() - started
    report(out, args)
    print(f"\nTotal {out['seconds']:.0f} s.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
