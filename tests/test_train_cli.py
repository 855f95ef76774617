import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from adnlib.config import preset
from adnlib.run.train import train

CLI = [sys.executable, "-m", "adnlib"]


def run_cli(*args, check=True):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_training_lowers_the_loss(demo_root):
    result = train(preset("smoke", epochs=4, eval_every=4), demo_root, "weave", progress=False)
    losses = result.history["loss"].tolist()
    assert losses[-1] < losses[0]
    assert result.metrics["backbone_weights"] == "random"


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
@pytest.mark.parametrize("category,floor", [("weave", 0.95), ("disc", 0.55)])
def test_smoke_training_separates_the_demo_anomalies(demo_root, category, floor):
    # Random backbone weights: measured 1.00 (weave) and 0.65 (disc: small, subtle defects anywhere on the disc,
    # the demo's harder category) after 3 smoke epochs; chance is 0.5.
    result = train(preset("smoke", epochs=3, eval_every=3), demo_root, category, progress=False)
    assert result.metrics["auroc"] >= floor, result.metrics


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_same_seed_gives_identical_scores(demo_root):
    a = train(preset("smoke", variant="se"), demo_root, "disc", progress=False)
    b = train(preset("smoke", variant="se"), demo_root, "disc", progress=False)
    assert a.scores["score"].tolist() == b.scores["score"].tolist()


@pytest.mark.slow
def test_cli_train_evaluate_score_round_trip(tiny_root, tmp_path):
    demo_root = tiny_root  # 8 training and 6 test images: the round trip, in seconds
    out = tmp_path / "run"
    proc = run_cli("train", "--data", demo_root, "--category", "disc", "--variant", "cbam", "--preset", "smoke",
                   "--epochs", "2", "--eval-every", "1", "--weights", "none", "--no-progress", "--out", out)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("auroc", "auroc_best", "variant", "category", "epochs", "backbone_weights", "train_seconds"):
        assert key in metrics
    assert summary["auroc"] == metrics["auroc"]
    assert metrics["backbone_weights"] == "random"
    assert (out / "checkpoint.pt").exists()
    assert (out / "best.pt").exists()
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


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_checkpoint_loads_with_weights_only(demo_root, tmp_path):
    train(preset("smoke"), demo_root, "weave", tmp_path / "r", progress=False)
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["kind"] == "last"
    assert ckpt["config"]["variant"] == "differnet"
    assert {"torch", "torchvision", "FrEIA", "adnlib"} <= set(ckpt["versions"])


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "/nonexistent", "--category", "disc", "--out", "x"], "dataset root not found"),
    (["train", "--data", "{demo}", "--category", "bottle", "--preset", "smoke", "--out", "{tmp}/o"],
     "categories found: disc, weave"),
    (["train", "--data", "{demo}", "--category", "disc", "--device", "tpu", "--out", "{tmp}/o"], "unknown device"),
    (["train", "--data", "{demo}", "--category", "disc", "--preset", "nope", "--out", "{tmp}/o"], "unknown preset"),
    (["train", "--data", "{demo}", "--category", "disc", "--epochs", "0", "--out", "{tmp}/o"], "at least 1"),
    (["train", "--data", "{demo}", "--category", "disc", "--variant", "se", "--feature-cache", "--out", "{tmp}/o"],
     "feature_cache needs a frozen backbone"),
    (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--data", "{demo}", "--category", "disc"],
     "checkpoint not found"),
    (["score", "--checkpoint", "{tmp}/missing.pt", "{tmp}/nothing.png"], "image not found"),
])
def test_cli_bad_input_is_one_error_line_and_exit_2(demo_root, tmp_path, args, message, capsys):
    """In-process (`cli.main`), each case: status 2, one `error:` line naming the problem, nothing on stdout."""
    from adnlib import cli
    args = [a.format(demo=demo_root, tmp=tmp_path) for a in args]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), captured.err
    assert message in lines[0], captured.err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_cli_bad_input_in_a_real_process(demo_root, tmp_path):
    """The same through the `adnlib` entry point: the process's exit status and its whole stderr (import-time
    warnings included) are one line."""
    proc = run_cli("train", "--data", str(demo_root), "--category", "bottle", "--preset", "smoke", "--out",
                   str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "categories found: disc, weave" in lines[0], proc.stderr


@pytest.mark.slow  # trains 4 tiny cells: ~5 s on an idle 2-core machine, more under load
def test_cli_grid_tabulates_one_value_per_requested_cell(tiny_grid_root, tmp_path, capsys, monkeypatch):
    """`adnlib grid` trains every requested (category, variant) cell once and prints the categories x variants table
    of those cells' AUROC (in %), plus a mean row. Catches a missing or extra cell, rows and columns swapped, values
    not from the cell's own metrics.json, or the preset/epochs not reaching the cells."""
    import warnings

    from adnlib import cli
    from adnlib.run.grid import collect_grid
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # cli.main replaces it
    out = tmp_path / "grid"
    args = ["grid", "--data", str(tiny_grid_root), "--categories", "weave", "disc", "--variants", "se", "differnet",
            "--preset", "smoke", "--epochs", "1", "--weights", "none", "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("image AUROC (%)")
    assert "weights: random" in printed[0]
    header = printed[1].split()
    assert header == ["variant", "differnet", "se"]  # the fixed variant order, whatever order was asked for
    table = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in printed[3:6]}
    assert printed[2].split() == ["category"]
    assert list(table) == ["disc", "weave", "mean"]

    cells = sorted(p.relative_to(out).parent.as_posix() for p in out.glob("*/*/*/metrics.json"))
    assert cells == ["disc/differnet/seed0", "disc/se/seed0", "weave/differnet/seed0", "weave/se/seed0"]
    for category in ("disc", "weave"):
        for column, variant in enumerate(header[1:]):
            metrics = json.loads((out / category / variant / "seed0" / "metrics.json").read_text())
            assert (metrics["category"], metrics["variant"], metrics["epochs"]) == (category, variant, 1)
            assert metrics["config"]["img_size"] == 128
            assert metrics["backbone_weights"] == "random"
            assert table[category][column] == pytest.approx(round(metrics["auroc"] * 100, 2), abs=0.006)
    for column in range(2):
        assert table["mean"][column] == pytest.approx((table["disc"][column] + table["weave"][column]) / 2, abs=0.01)
    rows = collect_grid(out, ["weave", "disc"], ["se", "differnet"])
    assert len(rows) == 4
    assert set(zip(rows["category"], rows["variant"])) == {
        ("weave", "se"), ("weave", "differnet"), ("disc", "se"), ("disc", "differnet")}

    # asked again: every cell is reused (nothing retrained), the same table (each cell's write lock file records
    # the grid that planned it: not a result)
    def stamps():
        return {p: p.stat().st_mtime_ns for p in out.glob("*/*/*/*") if p.name != ".adnlib.lock"}
    before = stamps()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines()[:6] == printed[:6]
    assert stamps() == before
