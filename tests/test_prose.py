"""Notebook sentences that describe results are computed from the run's numbers, and agree with them whatever the
outcome: each prose helper is checked on both outcomes, and notebooks 03, 04 and 06 are run with two backbone
settings (random weights, and a saved weights file passed as a path) and every generated sentence is checked
against the numbers the same run saved.
"""
import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from adnlib.teach.analysis import cold_start_text, gain_verdict, rotations_text, shrinkage_summary, shrinkage_text
from adnlib.teach.notebooks import run_notebook

FAST = {"preset": "smoke", "device": "cpu"}


def _comparison(delta, low, high, beyond, p=0.01, n_seeds=3):
    frame = pd.DataFrame([{"category": "mean", "variant": "se", "delta": delta, "delta_std": 1.0, "ci_low": low,
                           "ci_high": high, "p": p, "p_holm": p, "p_delong": 0.01, "n_seeds": n_seeds,
                           "n_images": 50, "beyond_noise": beyond}])
    frame.attrs["level"] = 0.95
    return frame


@pytest.mark.parametrize("delta,low,high,beyond,p,n_seeds,expected", [
    (2.5, 0.5, 4.5, True, 0.01, 3, "better than DifferNet"),
    (-2.5, -4.5, -0.5, True, 0.01, 3, "worse than DifferNet"),
    (1.0, -1.0, 3.0, False, 0.4, 3, "cannot be told apart from noise"),
    (2.5, 0.5, 4.5, False, np.nan, 1, "no verdict"),
])
def test_gain_verdict_covers_every_outcome(delta, low, high, beyond, p, n_seeds, expected):
    # catches a verdict written for one outcome (e.g. always "better"), a verdict from one seed, or numbers not
    # taken from the table
    text = gain_verdict(_comparison(delta, low, high, beyond, p, n_seeds), "imagenet")
    assert expected in text
    assert f"{delta:+.1f} AUROC points" in text
    assert f"[{low:+.1f}, {high:+.1f}]" in text
    assert "random" not in text
    assert "**random** backbone weights" in gain_verdict(_comparison(delta, low, high, beyond, p, n_seeds),
                                                         "random")


@pytest.mark.parametrize("last,word", [(0.5, "shrank"), (1.0, "kept its size"), (2.0, "grew")])
def test_shrinkage_text_follows_the_ratio(last, word):
    # catches a fixed claim ("SE's embedding shrinks") whatever the history says
    history = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "feature_norm": [10.0, 10.0 * last],
                            "gate_mean_block1_scale0": [0.5, 0.6]})
    text = shrinkage_text(shrinkage_summary({"se": history}))
    assert word in text and f"{100 * (last - 1):+.1f} %" in text and "from 0.500 to 0.600" in text


def test_cold_start_text_states_the_measured_ratio():
    # catches a ratio or AUROC that is not the history's (e.g. the textbook 8x instead of the measured one)
    histories = {"differnet": pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "feature_norm": [40.0, 40.0],
                                            "auroc": [np.nan, 0.9]}),
                 "se": pd.DataFrame({"epoch": [1, 2], "loss": [0.1, 0.0], "feature_norm": [5.0, 5.0],
                                     "auroc": [np.nan, 0.7]})}
    text = cold_start_text(histories)
    assert "8.0x smaller than differnet's" in text and "AUROC 70.0 % at epoch 2" in text
    assert "AUROC 90.0 % at epoch 2" in text


def test_rotations_text_reads_both_ends_of_the_table():
    curve = pd.DataFrame({"n_rotations": [1, 2, 4], "auroc": [0.6, 0.7, 0.8], "auroc_low": [0.5, 0.6, 0.65],
                          "auroc_high": [0.7, 0.8, 0.9], "fresh_mean": [0.6, 0.7, 0.8],
                          "fresh_std": [0.05, 0.03, 0.01]})
    text = rotations_text({"se": curve})
    assert "60.0 % with 1 rotation(s), 80.0 % with 4" in text and "65.0–90.0" in text
    assert "±5.0 points at 1, ±1.0 at 4" in text


# --- notebooks run with two backbone settings ------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """An AlexNet state dict saved to a file: torchvision's own initialisation with another seed, so that the
    numbers differ from the 'none' (He-initialised, seeded) random weights."""
    import torchvision
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "alexnet_other.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def _markdown_outputs(notebook) -> str:
    executed = nbformat.read(notebook, as_version=4)
    return "\n".join(o["data"]["text/markdown"] for c in executed.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))


def check_03_sentences(out, variants) -> None:
    """Every generated sentence of notebook 03's run in `out` against the numbers the run saved."""
    text = _markdown_outputs(out.parent / "03_training_attentdiffernet.ipynb")
    shrink = pd.read_csv(out / "shrinkage.csv")
    for variant in variants:
        ratio = shrink[(shrink["variant"] == variant) & (shrink["quantity"] == "feature_norm")]["last/first"].iloc[0]
        sentence = re.search(rf"\*\*{variant}\*\*: the embedding (shrank|grew|kept its size) \(([-+]\d+\.\d) %", text)
        assert sentence, text
        assert float(sentence.group(2)) == pytest.approx(100 * (ratio - 1), abs=0.051)
        word = "shrank" if 100 * (ratio - 1) < -1 else "grew" if 100 * (ratio - 1) > 1 else "kept its size"
        assert sentence.group(1) == word
    histories = {"differnet": out / "runs" / "disc" / "differnet" / "seed0" / "history.csv",
                 "se": out / "runs" / "disc" / "se" / "seed0" / "history.csv",
                 "se, open gates": out / "runs_open_gates" / "disc" / "se" / "seed0" / "history.csv"}
    histories = {k: pd.read_csv(v) for k, v in histories.items()}
    reference = histories["differnet"]["feature_norm"].iloc[0]
    for name in ("se", "se, open gates"):
        stated = re.search(rf"\*\*{re.escape(name)}\*\*: its embedding at epoch 1 is (\d+\.\d)x smaller", text)
        assert stated and float(stated.group(1)) == pytest.approx(
            reference / histories[name]["feature_norm"].iloc[0], abs=0.051)
        last = histories[name].dropna(subset=["auroc"]).iloc[-1]
        auroc = re.search(rf"\*\*{re.escape(name)}\*\*:[^\n]*AUROC (\d+\.\d) % at epoch {int(last['epoch'])}", text)
        assert auroc and float(auroc.group(1)) == pytest.approx(100 * last["auroc"], abs=0.051)


def check_04_sentences(out) -> None:
    text = _markdown_outputs(out.parent / "04_auroc_evaluation.ipynb")
    table = pd.read_csv(out / "auroc_vs_rotations.csv")
    for _, part in table.groupby("variant"):
        first, last = part.iloc[0], part.iloc[-1]
        assert (f"AUROC {100 * first['auroc']:.1f} % with {int(first['n_rotations'])} rotation(s), "
                f"{100 * last['auroc']:.1f} % with {int(last['n_rotations'])}") in text
        assert f"±{100 * last['fresh_std']:.1f} at {int(last['n_rotations'])}" in text


def check_06_sentences(out, random_weights: bool) -> None:
    text = _markdown_outputs(out.parent / "06_benchmark_report.ipynb")
    paired = pd.read_csv(out / "paired_comparison.csv").set_index("category")
    mean = paired.loc["mean"]
    assert f"{mean['delta']:+.1f} AUROC points" in text
    assert f"[{mean['ci_low']:+.1f}, {mean['ci_high']:+.1f}]" in text
    if np.isnan(mean["p"]):
        claim = "no verdict"
    else:
        claim = "by more than the noise" if mean["beyond_noise"] else "cannot be told apart from noise"
    assert claim in text
    assert ("**random** backbone weights" in text) == random_weights


@pytest.mark.slow
def test_sentences_agree_with_the_numbers_with_a_saved_weights_file(weights_file, demo_root, tmp_path):
    """The second backbone setting (the first, random weights, is checked by tests/test_notebooks.py's runs of
    03, 04 and 06): a saved AlexNet state dict passed as a path gives other numbers, and the sentences of 03 and 06
    (the verdicts that can come out either way) follow."""
    common = {"data_root": str(demo_root), **FAST, "weights": str(weights_file)}
    run_notebook("03_training_attentdiffernet", tmp_path, {**common, "variants": ["differnet", "se"], "epochs": 1,
                                                           "eval_every": 1})
    out = tmp_path / "03_training_attentdiffernet"
    assert json.loads((out / "metrics_se.json").read_text())["backbone_weights"] == str(weights_file)
    check_03_sentences(out, ["differnet", "se"])
    # (04's sentences are read straight off its table; tests/test_notebooks.py checks them with random weights)
    run_notebook("06_benchmark_report", tmp_path, {**common, "categories": ["disc"],
                                                   "variants": ["differnet", "se"]})
    check_06_sentences(tmp_path / "06_benchmark_report", random_weights=False)
