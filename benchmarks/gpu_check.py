"""One-shot GPU check (run by gpu_check.sh): the paper config's training and scoring throughput on CUDA, float32
and AMP (bfloat16 autocast for the backbone; the flow stays float32), optionally torch.compile.

Training runs `adnlib.run.train.training_batch` + `adnlib.run.train.train_step`, the calls of `adnlib.run.train`'s epoch
loop, and compiles as `adnlib.run.train` does (`model.embedding.compile()`, in place). Random backbone weights (no
download): speed does not depend on their values. Knobs (environment): DEVICE (cuda), IMG_SIZE (448),
BATCH_IMAGES (24), ROTATIONS (4), TRAIN_STEPS (10), SCORE_IMAGES (4), SCORE_ROTATIONS (64), SCORE_BATCHES (5),
COMPILE (0; 1 adds an AMP + compile run, slower start), AMP_AUROC_EPOCHS (8; 0 skips the AUROC comparison).

What --amp does to the results: one demo-data category trained twice, paired (same seed, so the same flow
initialisation, batches and angles), in float32 and with --amp; the AUROC of each and the largest relative change
of a test score. Runs on CPU too (DEVICE=cpu, small sizes) as a smoke test.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("ADNLIB_OFFLINE", "1")

import torch  # noqa: E402

from adnlib.config import preset  # noqa: E402
from adnlib.model.network import AttentDifferNet  # noqa: E402
from adnlib.model.transforms import random_angles  # noqa: E402
from adnlib.run.train import train, train_step, training_batch  # noqa: E402

env = os.environ.get


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")


def measure(label: str, amp: bool, compile_: bool, device: torch.device, images: torch.Tensor, sizes: dict,
            generator: torch.Generator) -> tuple[tuple, torch.Tensor]:
    """-> (table row, the untrained model's scores of the test images)."""
    config = preset("paper", weights="none", device=str(device), img_size=sizes["img_size"], amp=amp,
                    compile=compile_, n_train_rotations=sizes["rotations"])
    model = AttentDifferNet(config).to(device).eval()
    test = images[:sizes["score_images"]]
    angles = random_angles(len(test) * sizes["score_rotations"], 180.0, torch.Generator().manual_seed(1))
    angles = angles.reshape(len(test), sizes["score_rotations"])
    scores = model.score(test, angles=angles).float().cpu()  # untrained, same seed: compares AMP's effect
    model.train()
    if compile_:
        model.embedding.compile()  # as adnlib.run.train: in place, the state-dict keys unchanged
    optimizer = model.make_optimizer()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):  # warm-up: cuDNN autotuning, allocations, optimizer state (compilation)
        train_step(model, optimizer, *training_batch(images, config, generator))
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes["steps"]):
        loss = train_step(model, optimizer, *training_batch(images, config, generator))
    sync(device)
    train_rate = sizes["steps"] * len(images) * sizes["rotations"] / (time.perf_counter() - start)
    peak_train = peak_gb(device)
    model.eval()
    model.score(test, angles=angles)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes["score_batches"]):
        model.score(test, angles=angles)
    sync(device)
    score_rate = sizes["score_batches"] * len(test) * sizes["score_rotations"] / (time.perf_counter() - start)
    return (label, train_rate, score_rate, peak_train, peak_gb(device), loss.item()), scores


def main() -> None:
    device = torch.device(env("DEVICE", "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: CUDA is not available here (torch {torch.__version__})")
    sizes = {"img_size": int(env("IMG_SIZE", 448)), "rotations": int(env("ROTATIONS", 4)),
             "steps": int(env("TRAIN_STEPS", 10)), "score_images": int(env("SCORE_IMAGES", 4)),
             "score_rotations": int(env("SCORE_ROTATIONS", 64)), "score_batches": int(env("SCORE_BATCHES", 5))}
    b = int(env("BATCH_IMAGES", 24))
    runs = [("float32", False, False), ("AMP bf16", True, False)]
    if env("COMPILE", "0") == "1":
        runs += [("AMP bf16 + compile", True, True)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: {name}, torch {torch.__version__}, paper config at {sizes['img_size']} px")
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(b, 3, sizes["img_size"], sizes["img_size"], generator=generator) * 255).to(torch.uint8)
    images = images.to(device)
    rows, scores = [], {}
    for label, amp, compile_ in runs:
        row, scores[label] = measure(label, amp, compile_, device, images, sizes, generator)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report(rows, scores, b, sizes)
    epochs = int(env("AMP_AUROC_EPOCHS", 8))
    if epochs:
        amp_auroc(device, epochs)


def amp_auroc(device: torch.device, epochs: int, category: str = "disc") -> None:
    """Train the demo preset on one demo category in float32 and with --amp (paired) and print what changed."""
    from adnlib.data.demo import DEFAULT_DEMO_ROOT, make_demo_dataset
    root = make_demo_dataset(DEFAULT_DEMO_ROOT)
    results = {}
    for amp in (False, True):
        config = preset("demo", variant="se", weights="auto", epochs=epochs, device=str(device), amp=amp)
        started = time.perf_counter()
        results[amp] = train(config, root, category, progress=False)
        print(f"demo/{category}/se, {results[amp].metrics['precision']}: AUROC {results[amp].metrics['auroc']:.4f} "
              f"(best {results[amp].metrics['auroc_best']:.4f}), {time.perf_counter() - started:.0f} s, "
              f"weights {results[amp].model.backbone_weights}")
    a, b = (results[amp].scores["score"].to_numpy() for amp in (False, True))
    change = float((abs(b - a) / abs(a).clip(1e-12)).max())
    delta = results[True].metrics["auroc"] - results[False].metrics["auroc"]
    print(f"--amp vs float32 after {epochs} epochs (paired): AUROC {100 * delta:+.2f} points, largest relative "
          f"change of a test score {change:.2e}")


def report(rows: list, scores: dict, b: int, sizes: dict) -> None:
    print(f"\n| run | training, transformed images/s ({b}x{sizes['rotations']} per step) | scoring, transformed "
          f"images/s ({sizes['score_images']}x{sizes['score_rotations']} per batch) | peak GPU memory training GB "
          "| peak incl. scoring GB |")
    print("|---|---:|---:|---:|---:|")
    for label, train_rate, score_rate, peak_train, peak_all, _ in rows:
        print(f"| {label} | {train_rate:.1f} | {score_rate:.1f} | {peak_train:.2f} | {peak_all:.2f} |")
    base = rows[0]
    for label, train_rate, score_rate, *_ in rows[1:]:
        print(f"\n{label} vs float32: training {train_rate / base[1]:.2f}x, scoring {score_rate / base[2]:.2f}x")
    ref = scores["float32"]
    for label, s in scores.items():
        if label != "float32":
            rel = ((s - ref).abs() / ref.abs().clamp_min(1e-12)).max().item()
            print(f"{label}: largest relative change of a score vs float32 (untrained, same seed and angles): "
                  f"{rel:.2e}")


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0],
                            epilog="Knobs are environment variables (see the module's docstring).").parse_args()
    main()
