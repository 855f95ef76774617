"""Notebook sentences that describe results are computed from the run's numbers, and agree with them whatever the
outcome: each prose helper is checked on both outcomes, and notebooks 02, 04 and 06 are run with two backbone
settings (random weights, and a saved weights file passed as a path) and every generated sentence is checked
against the numbers the same run saved.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import check_03_sentences, check_06_sentences

from adnlib.teach.analysis import cold_start_text, gain_verdict, rotations_text, shrinkage_summary, shrinkage_text
from adnlib.teach.notebooks import run_notebook

FAST = {"preset": "smoke", "device": "cpu"}


def _comparison(delta, low, high, beyond, p=0.01, n_seeds=3, p_holm=None, baseline="differnet"):
    frame = pd.DataFrame([{"category": "mean", "variant": "se", "delta": delta, "delta_std": 1.0, "ci_low": low,
                           "ci_high": high, "p": p, "p_holm": p if p_holm is None else p_holm, "p_delong": 0.01,
                           "n_seeds": n_seeds, "n_images": 50, "beyond_noise": beyond}])
    frame.attrs.update(level=0.95, baseline=baseline)
    return frame


def test_the_verdict_follows_holms_correction_not_the_raw_p():
    # catches a verdict read from the raw p: 0.03 alone would be "beyond noise", but after Holm's correction over
    # two variants it is 0.06 and the table says within noise
    text = gain_verdict(_comparison(2.5, -0.2, 5.2, False, p=0.03, p_holm=0.06))
    assert "cannot be told apart from noise" in text
    assert "p = 0.06 (ORH" in text
    assert "better than" not in text


def test_the_verdict_names_the_baseline_it_was_computed_against():
    # catches "DifferNet" written whatever the comparison's baseline was
    text = gain_verdict(_comparison(2.5, 0.5, 4.5, True, baseline="cbam"))
    assert "**se − cbam**" in text
    assert "better than cbam" in text
    assert "DifferNet" not in text


@pytest.mark.parametrize("delta,low,high,beyond,p,n_seeds,expected", [
    (2.5, 0.5, 4.5, True, 0.01, 3, "better than differnet"),
    (-2.5, -4.5, -0.5, True, 0.01, 3, "worse than differnet"),
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
    assert word in text
    assert f"{100 * (last - 1):+.1f} %" in text
    assert "from 0.5000 to 0.6000" in text


@pytest.mark.parametrize("last,trained", [(0.4995, False), (0.52, True)])
def test_gate_movement_text_says_when_the_attention_did_not_train(last, trained):
    # catches a run whose gates did not move being described as trained attention (or the reverse), and a shift
    # taken from another block than the one that moved most
    from adnlib.teach.analysis import gate_movement, gate_movement_text
    histories = {"differnet": pd.DataFrame({"epoch": [1, 2], "feature_norm": [10.0, 10.0]}),
                 "se": pd.DataFrame({"epoch": [1, 2], "feature_norm": [5.0, 5.0],
                                     "gate_mean_block1_scale0": [0.5, last],
                                     "gate_mean_block2_scale0": [0.5, 0.5001]})}
    movement = gate_movement(histories)
    assert list(movement["variant"]) == ["se"]
    assert movement["quantity"].item() == "gate_mean_block1_scale0"
    assert movement["shift"].item() == pytest.approx(abs(last - 0.5))
    text = gate_movement_text(movement)
    assert f"from 0.5000 to {last:.4f} from the first epoch to the last (2 epochs)" in text
    assert ("barely trained" in text) == (not trained)
    assert ("training changed the gates" in text) == trained


def test_one_epoch_shows_no_gate_movement_and_says_so():
    # catches "barely trained" claimed from a single history row (an epoch's mean: no start to compare with)
    from adnlib.teach.analysis import gate_movement, gate_movement_text
    one = {"se": pd.DataFrame({"epoch": [1], "feature_norm": [5.0], "gate_mean_block1_scale0": [0.49]})}
    text = gate_movement_text(gate_movement(one))
    assert "one epoch only" in text
    assert "barely trained" not in text


def test_shrinkage_is_judged_against_differnets_own_drift():
    # catches -3 % called "shrank" when DifferNet's frozen embedding itself moved 2 % (the noise of the measure)
    histories = {"differnet": pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "feature_norm": [10.0, 10.2]}),
                 "se": pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "feature_norm": [5.0, 4.85]})}
    text = shrinkage_text(shrinkage_summary(histories))
    assert "**se**: the embedding kept its size, within the noise of this measure (-3.0 %" in text
    assert "differnet's frozen one moved +2.0 %" in text
    assert "**differnet**: the embedding of the frozen reference changed (+2.0 %" in text  # no verdict of its own


@pytest.mark.parametrize("weave,expected", [(100.0, "**ceiling** on `weave` (100.0 %): no variant can gain anything"),
                                            (99.7, "can gain at most 0.3 points there"),
                                            (99.4, "No category has differnet at the ceiling")])
def test_ceiling_text_names_categories_at_the_ceiling_and_only_those(weave, expected):
    # catches a ceiling that is never mentioned (the mean row silently averaging a 100 % category), or one claimed
    # for a category below it
    from adnlib.teach.analysis import ceiling_text
    table = pd.DataFrame({"differnet": [80.0, weave], "se": [82.0, 99.0]}, index=["disc", "weave"])
    table.loc["mean"] = table.mean()
    text = ceiling_text(table)
    assert expected in text
    assert "`disc`" not in text
    if weave >= 99.5:
        assert "rests on the one other category" in text  # not "the other 1 category"


def test_cold_start_text_states_the_measured_ratio():
    # catches a ratio or AUROC that is not the history's (e.g. the textbook 8x instead of the measured one)
    histories = {"differnet": pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "feature_norm": [40.0, 40.0],
                                            "auroc": [np.nan, 0.9]}),
                 "se": pd.DataFrame({"epoch": [1, 2], "loss": [0.1, 0.0], "feature_norm": [5.0, 5.0],
                                     "auroc": [np.nan, 0.7]})}
    text = cold_start_text(histories)
    assert "8.0x smaller than differnet's" in text
    assert "AUROC 70.0 % at epoch 2" in text
    assert "AUROC 90.0 % at epoch 2" in text


def test_rotations_text_reads_both_ends_of_the_table():
    curve = pd.DataFrame({"n_rotations": [1, 2, 4], "auroc": [0.6, 0.7, 0.8], "auroc_low": [0.5, 0.6, 0.65],
                          "auroc_high": [0.7, 0.8, 0.9], "fresh_mean": [0.6, 0.7, 0.8],
                          "fresh_std": [0.05, 0.03, 0.01]})
    text = rotations_text({"se": curve})
    assert "60.0 % with 1 rotation(s), 80.0 % with 4" in text
    assert "65.0–90.0" in text
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


@pytest.mark.slow(seconds=45)  # notebooks 03 and 06
def test_sentences_agree_with_the_numbers_with_a_saved_weights_file(weights_file, demo_root, tmp_path):
    """The second backbone setting (the first, random weights, is checked by tests/test_notebooks.py's course run):
    a saved AlexNet state dict passed as a path gives other numbers, and the sentences of 03 and 06 (the verdicts
    that can come out either way) follow."""
    common = {"data_root": str(demo_root), **FAST, "weights": str(weights_file)}
    # two epochs: the gate-movement sentence then compares two rows (one epoch only says it cannot tell)
    run_notebook("03_training_attentdiffernet", tmp_path, {**common, "variants": ["differnet", "se"], "epochs": 2,
                                                           "eval_every": 1, "max_images": 8, "n_show": 1})
    out = tmp_path / "03_training_attentdiffernet"
    assert json.loads((out / "metrics_se.json").read_text())["backbone_weights"] == str(weights_file)
    check_03_sentences(out, ["differnet", "se"])
    # (04's sentences are read straight off its table; tests/test_notebooks.py checks them with random weights)
    run_notebook("06_benchmark_report", tmp_path, {**common, "categories": ["disc"],
                                                   "variants": ["differnet", "se"]})
    check_06_sentences(tmp_path / "06_benchmark_report", random_weights=False)
