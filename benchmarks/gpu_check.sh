#!/usr/bin/env bash
# One-shot GPU check (a few minutes on any recent NVIDIA GPU): the paper config's training and scoring throughput
# on CUDA, with and without AMP (bfloat16 autocast for the backbone; the flow stays float32).
#
#   bash benchmarks/gpu_check.sh                 # from the repository root, with the project's environment active
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# Prints one table (training: transformed images/s at 24 images x 4 rotations = 96 tensors per step, 448 px;
# scoring: 4 images x 64 rotations per batch) plus peak GPU memory, and how far AMP moves the scores. Training
# runs adnlib.run.train.train_step, the step `adnlib train` runs (benchmarks/gpu_check.py).
# Random backbone weights (no download): speed does not depend on their values.
# Knobs (environment): DEVICE (cuda), IMG_SIZE (448), BATCH_IMAGES (24), ROTATIONS (4), TRAIN_STEPS (10),
# SCORE_IMAGES (4), SCORE_ROTATIONS (64), SCORE_BATCHES (5), COMPILE (0; 1 adds torch.compile runs, slower start),
# AMP_AUROC_EPOCHS (8; 0 skips): trains one demo category in float32 and with --amp (paired) and prints the AUROC
# and score change --amp makes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export ADNLIB_OFFLINE=1
timeout "${TIMEOUT:-420}" "$PYTHON" benchmarks/gpu_check.py
