"""Issue 15: benchmarks/gpu.py, the device benchmark, smoke-tested on CPU at tiny sizes (no GPU here), and the
demo generator's size options that its whole run uses."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_benchmark
from PIL import Image

from adnlib.data.demo import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--img-size", "256", "--batch-images", "2", "--rotations", "1", "--steps", "1",
        "--score-images", "1", "--score-rotations", "2", "--workers", "0", "--fc-hidden", "64"]


@pytest.fixture(scope="module")
def gpu_bench():
    return load_benchmark("gpu.py", "gpu_bench")


# Catches a train_step (or a reference) that drifts from the official protocol: rotation, normalisation, loss.
def test_first_step_loss_equals_the_official_way(gpu_bench):
    args = gpu_bench.parse_args(TINY)
    images = (torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    angles = torch.tensor([[-37.5, 121.0], [90.0, 3.25]])
    losses = gpu_bench.first_step_losses(args, torch.device("cpu"), images, angles)
    assert math.isfinite(losses["ours"])
    assert losses["abs_diff"] < 1e-4 * max(1.0, abs(losses["official"]))


# Catches a size option that changes the default demo data's layout, or ignores its sizes and counts.
def test_demo_size_options(tmp_path):
    root = make_demo_dataset(tmp_path, image_size=96, n_train=2, n_test_good=1, n_test_per_defect=1,
                             categories=("disc",))
    assert not (root / "weave").exists()
    assert len(list((root / "disc" / "train" / "good").glob("*.png"))) == 2
    assert len(list((root / "disc" / "test").rglob("*.png"))) == 4
    mask = np.asarray(Image.open(next((root / "disc" / "ground_truth").rglob("*.png"))))
    assert mask.shape == (96, 96)
    assert set(np.unique(mask)) <= {0, 255}
    assert Image.open(root / "disc" / "train" / "good" / "000.png").size == (96, 96)


# Catches a main that crashes on a code path (official loader, amp, report) or writes wrong/missing JSON.
@pytest.mark.slow
def test_main_smoke_writes_json(gpu_bench, tmp_path, capsys):
    out_file = tmp_path / "gpu.json"
    gpu_bench.main(TINY + ["--json", str(out_file)])  # without --whole-run: minutes of the suite's budget
    out = json.loads(out_file.read_text())
    assert [(r["path"], r["precision"]) for r in out["rows"]] == [
        ("official way", "float32"), ("adnlib", "float32"), ("adnlib", "amp (bf16 backbone)")]
    for r in out["rows"]:
        for key in ("train_ratio", "score_ratio", "train_images_per_s", "score_images_per_s"):
            assert math.isfinite(r[key]), (r["path"], key)
            assert r[key] > 0, (r["path"], key)
    assert math.isfinite(out["rows"][2]["amp_score_change"])
    assert out["first_step_loss"]["abs_diff"] < 1e-4 * max(1.0, abs(out["first_step_loss"]["official"]))
    assert out["machine"]["device"] == "cpu"
    assert out["machine"]["torch"] == torch.__version__
    assert "| official way | float32 |" in capsys.readouterr().out
