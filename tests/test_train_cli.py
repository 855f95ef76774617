import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from adnlib.config import preset
from adnlib.train import train

CLI = [sys.executable, "-m", "adnlib"]


def run_cli(*args, check=True):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_training_lowers_the_loss(demo_root):
    result = train(preset("smoke", epochs=4, eval_every=4), demo_root, "weave", progress=False)
    losses = result.history["loss"].tolist()
    assert losses[-1] < losses[0]
    assert result.metrics["backbone_weights"] == "random"


@pytest.mark.parametrize("category,floor", [("weave", 0.95), ("disc", 0.65)])
def test_smoke_training_separates_the_demo_anomalies(demo_root, category, floor):
    # Random backbone weights: measured 1.00 (weave) and ~0.70 (disc) after 3 smoke epochs.
    result = train(preset("smoke", epochs=3, eval_every=3), demo_root, category, progress=False)
    assert result.metrics["auroc"] >= floor, result.metrics


def test_same_seed_gives_identical_scores(demo_root):
    a = train(preset("smoke", variant="se"), demo_root, "disc", progress=False)
    b = train(preset("smoke", variant="se"), demo_root, "disc", progress=False)
    assert a.scores["score"].tolist() == b.scores["score"].tolist()


def test_cli_train_evaluate_score_round_trip(demo_root, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", demo_root, "--category", "disc", "--variant", "cbam", "--preset", "smoke",
                   "--epochs", "2", "--eval-every", "1", "--weights", "none", "--no-progress", "--out", out)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("auroc", "auroc_best", "variant", "category", "epochs", "backbone_weights", "train_seconds"):
        assert key in metrics
    assert summary["auroc"] == metrics["auroc"] and metrics["backbone_weights"] == "random"
    assert (out / "checkpoint.pt").exists() and (out / "best.pt").exists()
    trained = pd.read_csv(out / "scores.csv")

    proc = run_cli("evaluate", "--checkpoint", out / "checkpoint.pt", "--data", demo_root, "--category", "disc",
                   "--out", tmp_path / "eval", "--no-progress", "--device", "cpu")
    line = json.loads(proc.stdout.strip())
    assert line["auroc"] == metrics["auroc"]
    evaluated = pd.read_csv(tmp_path / "eval" / "scores.csv")
    assert evaluated["score"].tolist() == trained["score"].tolist()

    images = trained["path"].tolist()[:2] + trained["path"].tolist()[-2:]
    proc = run_cli("score", "--checkpoint", out / "checkpoint.pt", *images, "--device", "cpu")
    printed = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert [p for p, _ in printed] == images
    expected = trained.set_index("path")["score"]
    for path, score in printed:
        assert float(score) == pytest.approx(expected[path], abs=1e-6)


def test_checkpoint_loads_with_weights_only(demo_root, tmp_path):
    train(preset("smoke"), demo_root, "weave", tmp_path / "r", progress=False)
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["kind"] == "last" and ckpt["config"]["variant"] == "differnet"
    assert {"torch", "torchvision", "FrEIA", "adnlib"} <= set(ckpt["versions"])


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "/nonexistent", "--category", "disc", "--out", "x"], "dataset root not found"),
    (["train", "--data", "{demo}", "--category", "bottle", "--preset", "smoke", "--out", "{tmp}/o"],
     "categories found: disc, weave"),
    (["train", "--data", "{demo}", "--category", "disc", "--device", "tpu", "--out", "{tmp}/o"], "unknown device"),
    (["train", "--data", "{demo}", "--category", "disc", "--preset", "nope", "--out", "{tmp}/o"], "unknown preset"),
    (["train", "--data", "{demo}", "--category", "disc", "--epochs", "0", "--out", "{tmp}/o"], "at least 1"),
    (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--data", "{demo}", "--category", "disc"],
     "checkpoint not found"),
    (["score", "--checkpoint", "{tmp}/missing.pt", "{tmp}/nothing.png"], "image not found"),
])
def test_cli_bad_input_is_one_error_line_and_exit_2(demo_root, tmp_path, args, message):
    args = [a.format(demo=demo_root, tmp=tmp_path) for a in args]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
