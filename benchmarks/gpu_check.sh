#!/usr/bin/env bash
# One-shot GPU check (a few minutes on any recent NVIDIA GPU): the paper config's training and scoring throughput
# on CUDA, with and without AMP (bfloat16 autocast for the backbone; the flow stays float32).
#
#   bash benchmarks/gpu_check.sh                 # from the repository root, with the project's environment active
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# Prints one table (training: transformed images/s at 24 images x 4 rotations = 96 tensors per step, 448 px;
# scoring: 4 images x 64 rotations per batch) plus peak GPU memory, and how far AMP moves the scores.
# Random backbone weights (no download): speed does not depend on their values.
# Knobs (environment): DEVICE (cuda), IMG_SIZE (448), BATCH_IMAGES (24), ROTATIONS (4), TRAIN_STEPS (10),
# SCORE_IMAGES (4), SCORE_ROTATIONS (64), SCORE_BATCHES (5), COMPILE (0; 1 adds torch.compile runs, slower start).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export ADNLIB_OFFLINE=1
timeout "${TIMEOUT:-290}" "$PYTHON" - <<'EOF'
import os
import time

import torch

from adnlib.config import preset
from adnlib.flow import nll_loss
from adnlib.model import AttentDifferNet
from adnlib.transforms import random_angles

env = os.environ.get
device = torch.device(env("DEVICE", "cuda"))
if device.type == "cuda" and not torch.cuda.is_available():
    raise SystemExit("gpu_check: CUDA is not available here (torch %s)" % torch.__version__)
img_size, b, n = int(env("IMG_SIZE", 448)), int(env("BATCH_IMAGES", 24)), int(env("ROTATIONS", 4))
steps, score_images = int(env("TRAIN_STEPS", 10)), int(env("SCORE_IMAGES", 4))
score_rotations, score_batches = int(env("SCORE_ROTATIONS", 64)), int(env("SCORE_BATCHES", 5))
runs = [("float32", False, False), ("AMP bf16", True, False)]
if env("COMPILE", "0") == "1":
    runs += [("AMP bf16 + compile", True, True)]
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
print(f"gpu_check: {name}, torch {torch.__version__}, paper config at {img_size} px")


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize(device)


generator = torch.Generator().manual_seed(0)
images = (torch.rand(b, 3, img_size, img_size, generator=generator) * 255).to(torch.uint8).to(device)
rows, scores = [], {}
for label, amp, compile_ in runs:
    config = preset("paper", weights="none", device=str(device), img_size=img_size, amp=amp, compile=compile_)
    model = AttentDifferNet(config).to(device).eval()
    test = images[:score_images]
    angles = random_angles(score_images * score_rotations, 180.0, torch.Generator().manual_seed(1))
    angles = angles.reshape(score_images, score_rotations)
    scores[label] = model.score(test, angles=angles).float().cpu()  # untrained, same seed: compares AMP's effect
    model.train()
    if compile_:
        model.embedding = torch.compile(model.embedding)
    optimizer = model.make_optimizer()

    def train_step():  # adnlib.train's step
        angles = random_angles(b * n, 180.0, generator).reshape(b, n)
        y = model.embed(model.prepare(images, angles))
        z, log_jac_det = model.flow_forward(y)
        loss = nll_loss(z, log_jac_det)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):  # warm-up: cuDNN autotuning, allocations, optimizer state (compilation)
        train_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step()
    sync()
    train_rate = steps * b * n / (time.perf_counter() - start)
    peak_train = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")

    model.eval()
    model.score(test, angles=angles)  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(score_batches):
        model.score(test, angles=angles)
    sync()
    score_rate = score_batches * score_images * score_rotations / (time.perf_counter() - start)
    peak_all = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    rows.append((label, train_rate, score_rate, peak_train, peak_all, loss.item()))
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()

print(f"\n| run | training, transformed images/s ({b}x{n} per step) | scoring, transformed images/s "
      f"({score_images}x{score_rotations} per batch) | peak GPU memory training GB | peak incl. scoring GB |")
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
        print(f"{label}: largest relative change of a score vs float32 (untrained, same seed and angles): {rel:.2e}")
EOF
