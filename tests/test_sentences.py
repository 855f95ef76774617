"""The sentences that notebooks print as results (adnlib.teach.analysis): every branch of each helper, on small
synthetic tables, with the numbers in the sentence checked against the numbers they were computed from. No
training, no notebooks: each test runs in milliseconds."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from adnlib.run.stats import delong_test
from adnlib.teach.analysis import (
    _same_images,
    attention_gap,
    attention_gap_text,
    ceiling_text,
    cold_start_text,
    f1_threshold,
    gate_movement_text,
    last_vs_best,
    last_vs_best_takeaway,
    last_vs_best_text,
    rotations_takeaway,
    score_spread,
    score_spread_text,
    shrinkage_summary,
    shrinkage_text,
    threshold_summary,
    threshold_takeaway,
)

# --- helpers ----------------------------------------------------------------------------------------------------
LABELS = np.array([0] * 20 + [1] * 20)
_RNG = np.random.default_rng(0)
WEAK = np.r_[_RNG.normal(0, 1, 20), _RNG.normal(0.3, 1, 20)]  # AUROC about 0.69 on LABELS
STRONG = np.r_[_RNG.normal(0, 1, 20), _RNG.normal(3.0, 1, 20)]  # AUROC about 0.98 on LABELS


def _scores(scores, labels=LABELS, root="/x/disc/test", start=0):
    """A run's scores.csv: path, label, defect_type, score (good/NNN.png for normal, chip/NNN.png for defective)."""
    kinds = ["good" if label == 0 else "chip" for label in labels]
    return pd.DataFrame({"path": [f"{root}/{kind}/{start + i:03d}.png" for i, kind in enumerate(kinds)],
                         "label": np.asarray(labels), "defect_type": kinds, "score": np.asarray(scores, float)})


def _auroc(scores, labels=LABELS) -> float:
    return float(roc_auc_score(labels, scores))


def _curve(auroc, low, high, counts=(1, 2, 4)):
    """An `auroc_vs_rotations` table."""
    return pd.DataFrame({"n_rotations": list(counts), "auroc": auroc, "auroc_low": low, "auroc_high": high,
                         "fresh_mean": auroc, "fresh_std": [0.01] * len(counts)})


def _metrics(auroc, auroc_best, best_epoch, epochs=5):
    return {"auroc": auroc, "auroc_best": auroc_best, "best_epoch": best_epoch, "epochs": epochs}


def _history(aurocs):
    """A history.csv with an AUROC per evaluated epoch (NaN where the epoch was not evaluated)."""
    return pd.DataFrame({"epoch": np.arange(1, len(aurocs) + 1), "loss": np.linspace(1.0, 0.5, len(aurocs)),
                         "auroc": aurocs})


# --- attention_gap / _same_images -------------------------------------------------------------------------------
def test_attention_gap_without_open_gates_has_only_the_gaps():
    # catches a gap taken the wrong way round (reference − variant), in fractions instead of points, the reference
    # listed against itself, or "recovered" invented without an open-gate run
    metrics = {"differnet": {"auroc": 0.90, "epochs": 7}, "se": {"auroc": 0.85, "epochs": 7},
               "cbam": {"auroc": 0.93, "epochs": 7}}
    gaps = attention_gap(metrics)
    assert set(gaps) == {"se", "cbam", "epochs"}
    assert gaps["se"] == pytest.approx(-5.0)
    assert gaps["cbam"] == pytest.approx(3.0)
    assert gaps["epochs"] == 7.0
    assert set(attention_gap(metrics, reference="se")) == {"differnet", "cbam", "epochs"}


def test_attention_gap_with_open_gates_but_no_se_run_adds_nothing():
    # catches a KeyError (or an invented "recovered") when the open-gate run exists but no standard SE run does
    metrics = {"differnet": {"auroc": 0.90, "epochs": 3}, "cbam": {"auroc": 0.88, "epochs": 3}}
    gaps = attention_gap(metrics, {"auroc": 0.95})
    assert "recovered" not in gaps
    assert "se, open gates" not in gaps


def test_attention_gap_open_gates_without_scores_is_not_tested():
    # catches "recovered" computed against the reference instead of standard SE, a p invented without scores,
    # and a sentence that claims a test it did not run
    metrics = {"differnet": {"auroc": 0.90, "epochs": 3}, "se": {"auroc": 0.80, "epochs": 3}}
    gaps = attention_gap(metrics, {"auroc": 0.86})
    assert gaps["se, open gates"] == pytest.approx(-4.0)
    assert gaps["recovered"] == pytest.approx(6.0)
    assert "recovered_p" not in gaps
    text = attention_gap_text(gaps)
    assert text.startswith("Against differnet after the last epoch (epoch 3): SE -10.0 AUROC points.")
    assert " SE with open gates ends -4.0 against differnet and +6.0 against SE with standard gates" in text
    assert text.endswith(" (not tested: the runs' scores were not given).")
    assert "DeLong" not in text


@pytest.mark.parametrize("missing", ["scores", "se scores", "open scores"])
def test_attention_gap_tests_only_when_both_score_tables_are_given(missing):
    # catches a paired test attempted (or a KeyError) when the standard SE run's or the open-gate run's scores are
    # missing
    metrics = {"differnet": {"auroc": 0.90, "epochs": 3}, "se": {"auroc": _auroc(WEAK), "epochs": 3}}
    scores = None if missing == "scores" else {"differnet": _scores(STRONG)}
    if missing == "open scores":
        scores["se"] = _scores(WEAK)
    open_scores = None if missing == "open scores" else _scores(STRONG)
    gaps = attention_gap(metrics, {"auroc": _auroc(STRONG)}, scores=scores, open_scores=open_scores)
    assert "recovered" in gaps
    assert "recovered_p" not in gaps


def test_two_runs_on_different_images_are_not_paired():
    # catches DeLong's paired test run on two runs that scored different images (paired by row position)
    metrics = {"differnet": {"auroc": 0.90, "epochs": 3}, "se": {"auroc": _auroc(WEAK), "epochs": 3}}
    other = _scores(STRONG, start=100)  # same labels and count, other file names
    gaps = attention_gap(metrics, {"auroc": _auroc(STRONG)}, scores={"se": _scores(WEAK)}, open_scores=other)
    assert "recovered" in gaps
    assert np.isnan(gaps["recovered_p"])  # given, but not paired: said so, not tested
    assert attention_gap_text(gaps).endswith("(not tested: the two runs scored different test images, or their "
                                             "scores cannot be tested).")
    assert _same_images(_scores(WEAK), other) is None


def test_same_images_pairs_by_path_inside_the_split_not_by_row():
    # catches pairing by row position (a shuffled scores.csv would pair other images), by the full path (runs made
    # on other machines, or with Windows separators, would never pair), or labels not checked
    a = _scores(WEAK)
    b = _scores(STRONG, root=r"C:\data\disc\test").sample(frac=1.0, random_state=1)
    b["path"] = b["path"].str.replace("/", "\\")
    paired = _same_images(a, b)
    assert paired is not None
    assert len(paired) == len(a)
    by_image = paired.set_index("image")
    assert by_image.loc["chip/025.png", "score_a"] == pytest.approx(WEAK[25])
    assert by_image.loc["chip/025.png", "score_b"] == pytest.approx(STRONG[25])
    assert by_image.loc["good/003.png", "score_b"] == pytest.approx(STRONG[3])
    relabelled = b.copy()
    relabelled.loc[relabelled["path"].str.endswith("000.png"), "label"] = 1
    assert _same_images(a, relabelled) is None  # same files, other labels
    assert _same_images(pd.concat([a, a.iloc[:1]]), b) is None  # an image scored twice


def test_attention_gap_p_is_delongs_paired_test_over_the_same_images():
    # catches a p from unpaired scores, from another pair of runs (e.g. SE against the reference), or from rows
    # matched by position after one file was reordered
    metrics = {"differnet": {"auroc": 0.95, "epochs": 3}, "se": {"auroc": _auroc(WEAK), "epochs": 3}}
    shuffled = _scores(STRONG).sample(frac=1.0, random_state=2)
    gaps = attention_gap(metrics, {"auroc": _auroc(STRONG)}, scores={"se": _scores(WEAK)}, open_scores=shuffled)
    expected = delong_test(LABELS, STRONG, WEAK)["p"]
    assert gaps["recovered_p"] == pytest.approx(expected)
    assert gaps["recovered"] == pytest.approx(100 * (_auroc(STRONG) - _auroc(WEAK)))


def test_identical_open_gate_scores_are_within_the_noise():
    # catches a move of 0 points (p = 1) read as a finding about the cold start
    auroc = _auroc(WEAK)
    metrics = {"differnet": {"auroc": 0.90, "epochs": 4}, "se": {"auroc": auroc, "epochs": 4}}
    gaps = attention_gap(metrics, {"auroc": auroc}, scores={"se": _scores(WEAK)}, open_scores=_scores(WEAK))
    assert gaps["recovered"] == 0.0
    assert gaps["recovered_p"] == pytest.approx(1.0)
    text = attention_gap_text(gaps)
    assert (f" SE with open gates ends {gaps['se, open gates']:+.1f} against differnet and +0.0 against SE with "
            "standard gates") in text
    assert text.endswith(": no change, so starting the gates open made no difference in this run.")
    assert "cold start, not what attention can do" not in text


def test_a_significant_recovery_while_se_is_behind_is_the_cold_start():
    # catches the positive, beyond-noise outcome not recognised (e.g. `p >= level` inverted), the p printed from
    # another number, or the verdict given while SE is ahead
    metrics = {"differnet": {"auroc": 0.95, "epochs": 3}, "se": {"auroc": _auroc(WEAK), "epochs": 3}}
    gaps = attention_gap(metrics, {"auroc": _auroc(STRONG)}, scores={"se": _scores(WEAK)},
                         open_scores=_scores(STRONG))
    p = gaps["recovered_p"]
    assert p < 0.05  # the synthetic runs differ beyond the test images' noise
    text = attention_gap_text(gaps)
    assert f"SE {100 * (_auroc(WEAK) - 0.95):+.1f} AUROC points." in text
    assert f"{gaps['recovered']:+.1f} against SE with standard gates, more than the test images' noise" in text
    assert f"p = {p:.2g}; one seed" in text
    assert text.endswith("in this run part of SE's gap is the cold start, not what attention can do.")


def test_a_significant_recovery_while_se_is_ahead_helped_further():
    # catches "part of SE's gap is the cold start" said when SE has no gap (it is ahead of the reference)
    metrics = {"differnet": {"auroc": 0.60, "epochs": 3}, "se": {"auroc": _auroc(WEAK), "epochs": 3}}
    gaps = attention_gap(metrics, {"auroc": _auroc(STRONG)}, scores={"se": _scores(WEAK)},
                         open_scores=_scores(STRONG))
    assert gaps["se"] > 0
    text = attention_gap_text(gaps)
    assert text.endswith(f"p = {gaps['recovered_p']:.2g}; one seed, so training noise is not in it): open gates "
                         "helped SE further here.")
    assert "cold start" not in text


def test_a_significant_drop_with_open_gates_did_not_help():
    # catches a significant drop described as a recovery (the sign of the move ignored)
    metrics = {"differnet": {"auroc": 0.99, "epochs": 3}, "se": {"auroc": _auroc(STRONG), "epochs": 3}}
    gaps = attention_gap(metrics, {"auroc": _auroc(WEAK)}, scores={"se": _scores(STRONG)},
                         open_scores=_scores(WEAK))
    assert gaps["recovered"] < 0
    assert gaps["recovered_p"] < 0.05
    text = attention_gap_text(gaps)
    assert f"{gaps['recovered']:+.1f} against SE with standard gates, lower, beyond the test images' noise" in text
    assert text.endswith("starting the gates open did not help SE in this run.")
    assert "helped" not in text


def _gaps(se=-4.0, recovered=2.0, p=0.01):
    return {"se": se, "cbam": -1.0, "epochs": 5.0, "se, open gates": se + recovered, "recovered": recovered,
            "recovered_p": p}


@pytest.mark.parametrize("p,recovered,said", [
    (0.05, 2.0, "within"),  # p exactly at the level is not below it
    (0.0499, 2.0, "cold start"),
    (0.2, 2.0, "within"),
    (float("nan"), 2.0, "not tested"),  # a NaN p is never "beyond the noise"
    (0.001, 0.04, "no change"),  # beyond the noise but a move smaller than the printed precision
    (0.001, -0.04, "no change"),
    (0.001, 0.05, "cold start"),
])
def test_within_the_noise_is_p_at_or_above_the_level_or_a_tiny_move(p, recovered, said):
    # catches `p >= level` written `p > level`, a NaN p read as significant, the `abs(move) < 0.05` guard dropped
    # (a +0.0 move called a cold start), or the guard applied without abs (a -0.04 move called a drop)
    text = attention_gap_text(_gaps(recovered=recovered, p=p))
    assert ("within the test images' noise" in text) == (said == "within")
    assert ("part of SE's gap is the cold start" in text) == (said == "cold start")
    assert ("no change, so starting the gates open made no difference" in text) == (said == "no change")
    assert ("not tested" in text) == (said == "not tested")
    assert (f"p = {p:.2g}" in text) == (said in ("within", "cold start"))


def test_the_level_of_the_test_is_the_callers():
    # catches a level hard-coded at 0.05 whatever the caller passes
    assert "within the test images' noise" in attention_gap_text(_gaps(p=0.02), level=0.01)
    assert "cold start, not what" in attention_gap_text(_gaps(p=0.02), level=0.05)


def test_se_exactly_level_with_the_reference_has_no_gap_to_explain():
    # catches `gaps["se"] < 0` written `<= 0`: a SE level with the reference has no gap for the cold start to explain
    text = attention_gap_text(_gaps(se=0.0, recovered=2.0, p=0.001))
    assert text.endswith("open gates helped SE further here.")


def test_attention_gap_text_lists_se_and_cbam_against_the_named_reference():
    # catches the reference's name or the epoch hard-coded, the sign dropped from a gap, or the open-gate sentence
    # added without an open-gate run
    text = attention_gap_text({"se": -2.345, "cbam": 1.26, "epochs": 12.0}, reference="baseline")
    assert text == "Against baseline after the last epoch (epoch 12): SE -2.3, CBAM +1.3 AUROC points."
    assert attention_gap_text({"se": 0.5}) == "Against differnet after the last epoch: SE +0.5 AUROC points."


# --- rotations_takeaway -----------------------------------------------------------------------------------------
def test_no_move_at_all_says_so_even_with_a_zero_width_interval():
    # catches a crash or a "rotations matter" verdict when AUROC = 1 at both ends (interval of width 0, move 0)
    text = rotations_takeaway({"se": _curve([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], counts=(1, 4, 8)),
                               "differnet": _curve([0.7, 0.7003, 0.7004], [0.6, 0.6, 0.6], [0.8, 0.8, 0.8],
                                                   counts=(1, 4, 8))})
    assert text.startswith("From 1 to 8 test rotations the AUROC did not move (by less than 0.05 points for every "
                           "variant)")
    assert "rotations matter" not in text


def test_one_variant_that_moved_is_enough_to_say_the_auroc_moved():
    # catches `all(... < 0.05)` written `any(...)`: one still variant hiding another's move
    text = rotations_takeaway({"se": _curve([0.7, 0.7, 0.7], [0.6, 0.6, 0.6], [0.8, 0.8, 0.8]),
                               "cbam": _curve([0.7, 0.7, 0.7006], [0.6, 0.6, 0.6], [0.8, 0.8, 0.8])})
    assert "did not move" not in text
    assert "the largest move of the AUROC was +0.1 points (cbam)" in text


def test_moves_within_half_their_interval_are_the_images_noise():
    # catches the largest move picked without abs (a -5 point move hidden behind +2), the wrong ends of the table
    # (second row instead of last), or the interval widths printed from another row
    curves = {"se": _curve([0.80, 0.70, 0.82], [0.6, 0.6, 0.70], [0.9, 0.9, 0.90], counts=(1, 2, 16)),
              "cbam": _curve([0.80, 0.90, 0.75], [0.6, 0.6, 0.60], [0.9, 0.9, 0.90], counts=(1, 2, 16))}
    text = rotations_takeaway(curves)
    assert text == ("From 1 to 16 test rotations the largest move of the AUROC was -5.0 points (cbam); every such "
                    "move is at most half the interval over the test images (20.0–30.0 points wide): on this test set "
                    "the images, not the rotations, limit what the AUROC can tell.")


def test_a_move_of_exactly_half_the_interval_is_still_within():
    # catches `abs(move) <= width / 2` written `<` (or the half dropped); binary-exact numbers: 12.5 and 25
    text = rotations_takeaway({"se": _curve([0.5, 0.6, 0.625], [0.3, 0.3, 0.5], [0.9, 0.9, 0.75])})
    assert "the largest move of the AUROC was +12.5 points (se); every such move is at most half the interval" in text


def test_a_move_larger_than_half_its_own_interval_matters():
    # catches a move judged against another variant's interval (the widest, or the largest mover's) instead of its
    # own: se's 12-point move is within half of its 30, cbam's 8 is beyond half of its 10
    curves = {"se": _curve([0.50, 0.6, 0.62], [0.4, 0.4, 0.45], [0.8, 0.8, 0.75]),
              "cbam": _curve([0.80, 0.8, 0.88], [0.6, 0.6, 0.83], [0.9, 0.9, 0.93])}
    text = rotations_takeaway(curves)
    assert text == ("From 1 to 4 test rotations the largest move of the AUROC was +12.0 points (se); at least one "
                    "move is larger than half its interval over the test images: the rotations matter here.")
    assert "rotations matter" not in rotations_takeaway({"se": curves["se"]})
    assert "rotations matter" in rotations_takeaway({"cbam": curves["cbam"]})


# --- last_vs_best -----------------------------------------------------------------------------------------------
def _scores_with_auroc(labels, n_swapped):
    """Scores that rank every defective image above every normal one except n_swapped pairs."""
    scores = np.where(np.asarray(labels) == 1, 10.0, 0.0) + np.arange(len(labels)) * 0.01
    normal, defective = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    for k in range(n_swapped):
        scores[normal[k]], scores[defective[k]] = scores[defective[k]], scores[normal[k]]
    return scores


def test_last_vs_best_table_holds_the_runs_numbers():
    # catches the optimism taken the wrong way round, in fractions, an interval from another run's scores, or a
    # count of all history rows instead of the evaluated ones
    labels = np.array([0] * 10 + [1] * 10)
    metrics = {"differnet": _metrics(0.80, 0.80, 5), "se": _metrics(0.70, 0.74, 3)}
    scores = {"differnet": _scores(_scores_with_auroc(labels, 0), labels),
              "se": _scores(_scores_with_auroc(labels, 3), labels)}
    histories = {v: _history([np.nan, 0.6, np.nan, 0.7, 0.8]) for v in metrics}
    table = last_vs_best(metrics, scores, histories)
    assert table.loc["se", "optimism_of_best_%"] == pytest.approx(4.0)
    assert table.loc["differnet", "optimism_of_best_%"] == 0.0
    assert table.loc["se", "auroc_last_%"] == pytest.approx(70.0)
    assert table.loc["se", "evaluations"] == 3
    assert table.loc["differnet", "last_95%_low"] == table.loc["differnet", "last_95%_high"] == 100.0
    assert table.loc["se", "last_95%_low"] < table.loc["se", "last_95%_high"]
    assert "evaluations" not in last_vs_best(metrics).columns  # no histories: no column of Nones
    assert "last_95%_low" not in last_vs_best(metrics).columns


def test_one_evaluation_per_run_has_nothing_to_select():
    # catches "best is higher" claimed for runs evaluated once (the best is the last epoch by construction), or the
    # once-evaluated case missed because the count came from the wrong column
    metrics = {"differnet": _metrics(0.80, 0.80, 5), "se": _metrics(0.70, 0.70, 5)}
    histories = {v: _history([np.nan] * 4 + [0.8]) for v in metrics}
    table = last_vs_best(metrics, histories=histories)
    text = last_vs_best_text(table)
    assert text.startswith("Each run was evaluated once (at its last epoch), so there was nothing to select")
    assert "interval" not in text
    assert last_vs_best_takeaway(table) == ("Each run was evaluated once, so its best evaluation is its last epoch "
                                            "(nothing was selected).")


def test_best_equal_to_last_for_every_variant():
    # catches "higher than the last epoch" said when no variant's best beat its last, or the count of evaluations
    # left out of the takeaway
    metrics = {"differnet": _metrics(0.80, 0.80, 5), "se": _metrics(0.70, 0.70, 5)}
    histories = {v: _history([0.5, 0.6, 0.65, 0.68, 0.7]) for v in metrics}
    table = last_vs_best(metrics, histories=histories)
    text = last_vs_best_text(table)
    assert text.startswith("In this run the best evaluation **is** the last one for every variant")
    assert "interval" not in text
    assert last_vs_best_takeaway(table) == ("The test-selected best of 5 evaluations equalled the last epoch for every "
                                            "variant here.")


def test_a_best_above_the_last_names_only_the_variants_it_beat_with_their_points():
    # catches every variant listed (a `> 0.005` filter dropped), the points or epoch taken from another row, the
    # takeaway naming the smallest gap (idxmin) or the first row, and the interval widths from other columns
    labels = np.array([0] * 10 + [1] * 10)
    metrics = {"differnet": _metrics(1.00, 1.00, 5), "se": _metrics(0.91, 0.95, 2), "cbam": _metrics(0.94, 0.955, 4)}
    scores = {"differnet": _scores(_scores_with_auroc(labels, 0), labels),
              "se": _scores(_scores_with_auroc(labels, 3), labels),
              "cbam": _scores(_scores_with_auroc(labels, 2), labels)}
    histories = {v: _history([0.5, 0.9, np.nan, 0.95, 0.94]) for v in metrics}
    table = last_vs_best(metrics, scores, histories)
    gaps = table["optimism_of_best_%"]
    widths = table["last_95%_high"] - table["last_95%_low"]
    assert widths["differnet"] == 0.0  # AUROC 1: the bootstrap interval has no width
    text = last_vs_best_text(table)
    assert (f"higher than the last epoch for se by {gaps['se']:.1f} points (best at epoch 2), cbam by "
            f"{gaps['cbam']:.1f} points (best at epoch 4): numbers a deployed model would not reach") in text
    assert "differnet by" not in text
    assert (f" Each last AUROC's 95 % interval over the test images is {widths.min():.0f}–{widths.max():.0f} points "
            "wide (table)") in text
    takeaway = last_vs_best_takeaway(table)
    assert takeaway == (f"The test-selected best of 4 evaluations beat the last epoch by up to {gaps.max():.1f} points "
                        f"(se); one seed's 95 % interval over the test images is {widths.min():.0f}–"
                        f"{widths.max():.0f} points wide.")
    assert gaps.max() == pytest.approx(4.0)


def test_without_histories_or_scores_the_sentences_leave_out_what_was_not_measured():
    # catches " of None evaluations" (or a KeyError) without histories, and an interval sentence without scores
    table = last_vs_best({"se": _metrics(0.70, 0.74, 3)})
    assert last_vs_best_text(table) == (
        "In this run the test-selected best is higher than the last epoch for se by 4.0 points (best at epoch 3): "
        "numbers a deployed model would not reach, because nothing but the test labels picked that epoch.")
    assert last_vs_best_takeaway(table) == "The test-selected best beat the last epoch by up to 4.0 points (se)."
    equal = last_vs_best({"se": _metrics(0.70, 0.70, 5)})
    assert last_vs_best_takeaway(equal) == "The test-selected best equalled the last epoch for every variant here."


# --- threshold_takeaway -----------------------------------------------------------------------------------------
def test_threshold_takeaway_counts_agree_with_the_confusion_matrix():
    # catches false alarms and misses swapped, `score > threshold` instead of `>=` (the threshold's own image), or
    # the totals of the wrong class
    frame = pd.DataFrame({"label": [0, 0, 0, 0, 0, 1, 1, 1], "score": [0.1, 0.2, 0.5, 0.7, 0.3, 0.5, 0.9, 0.2]})
    text = threshold_takeaway({"threshold": 0.5}, frame, "se")
    counts = threshold_summary(frame, 0.5)
    assert (counts["fp"], counts["fn"]) == (2, 1)
    assert text.startswith("se's F1-best threshold, picked on the test images themselves, flags 2 of 5 normal images "
                           "and misses 1 of 3 defective ones: an optimistic operating point")


def test_threshold_takeaway_on_the_f1_best_threshold():
    # catches a sentence that disagrees with `threshold_summary` at the threshold `f1_threshold` picks
    frame = pd.DataFrame({"label": LABELS, "score": WEAK})
    summary = f1_threshold(frame)
    counts = threshold_summary(frame, summary["threshold"])
    text = threshold_takeaway(summary, frame, "cbam")
    assert f"flags {counts['fp']} of 20 normal images and misses {counts['fn']} of 20 defective ones" in text


# --- score_spread -----------------------------------------------------------------------------------------------
def test_score_spread_is_the_range_against_the_median():
    # catches the range divided by a signed median (negative log-likelihoods), by the mean, or a division by zero
    spread = score_spread({"se": pd.DataFrame({"score": [-101.0, -100.0, -99.0, -100.5]}),
                           "zero": pd.DataFrame({"score": [-1.0, 0.0, 1.0]})}).set_index("variant")
    assert spread.loc["se", "min"] == -101.0
    assert spread.loc["se", "max"] == -99.0
    assert spread.loc["se", "median"] == pytest.approx(-100.25)
    assert spread.loc["se", "relative_range"] == pytest.approx(2.0 / 100.25)
    assert spread.loc["zero", "relative_range"] == np.inf


def test_only_nearly_constant_scores_get_a_sentence():
    # catches `< limit` written `<=` (a range of exactly 1 % called constant), every variant described, the limit
    # parameter ignored, or the numbers printed from another column
    spread = score_spread({"se": pd.DataFrame({"score": [1000.0, 1000.2, 1000.5]}),
                           "cbam": pd.DataFrame({"score": [99.5, 100.0, 100.5]}),  # exactly 1 %
                           "differnet": pd.DataFrame({"score": [1.0, 5.0, 9.0]})})
    text = score_spread_text(spread)
    relative = 0.5 / 1000.2
    assert text == (f"SE's test scores are nearly constant: they span 1000–1000.5, {100 * relative:.2g} % of their "
                    "value, so its AUROC rests on the last digits of its scores and a small change of the model can "
                    "reorder them.")
    assert "CBAM" in score_spread_text(spread, limit=0.0101)
    assert score_spread_text(spread, limit=0.0001) == ""


def test_no_nearly_constant_scores_give_no_sentence():
    # catches a warning printed for well-spread scores
    assert score_spread_text(score_spread({"se": pd.DataFrame({"score": [1.0, 2.0, 3.0]})})) == ""


# --- gate_movement_text -----------------------------------------------------------------------------------------
def _movement(shift, epochs=3, first=0.5):
    return pd.DataFrame([{"variant": "se", "quantity": "gate_mean_block2_scale0", "first_epoch": first,
                          "last_epoch": first + shift, "shift": shift, "epochs": epochs}])


@pytest.mark.parametrize("shift,trained", [(0.0099, False), (0.01, True), (0.2, True)])
def test_gate_movement_text_against_the_tolerance(shift, trained):
    # catches `shift < tolerance` written `<=` (a shift of exactly the tolerance called untrained), or the verdict
    # inverted
    text = gate_movement_text(_movement(shift))
    assert text.startswith(f"**se**: the gate that moved most, `gate_mean_block2_scale0`, went from 0.5000 to "
                           f"{0.5 + shift:.4f} from the first epoch to the last (3 epochs) ")
    assert ("(less than 0.01): its attention blocks **barely trained**" in text) == (not trained)
    assert ("(at least 0.01): training changed the gates" in text) == trained


def test_gate_movement_text_one_epoch_and_a_callers_tolerance():
    # catches a verdict given from one history row, the tolerance parameter ignored, or a run left out
    movement = pd.concat([_movement(0.3, epochs=1), _movement(0.03).assign(variant="cbam")], ignore_index=True)
    lines = gate_movement_text(movement, tolerance=0.05).split("\n\n")
    assert len(lines) == 2
    assert lines[0].startswith("**se**: one epoch only, so the history cannot show how far the gates moved")
    assert "barely trained" not in lines[0]
    assert lines[1].startswith("**cbam**:")
    assert "(less than 0.05): its attention blocks **barely trained**" in lines[1]
    assert gate_movement_text(movement.iloc[:0]) == ""  # DifferNet alone: no gates, no sentence


# --- cold_start_text --------------------------------------------------------------------------------------------
def test_cold_start_text_every_branch():
    # catches the ratio inverted, the AUROC of the last row rather than of the last evaluation, an evaluation
    # invented for a run without an auroc column (or with none evaluated), and the loss of the last epoch
    histories = {"differnet": pd.DataFrame({"epoch": [1, 2, 3], "loss": [2.5, 1.0, 0.9],
                                            "feature_norm": [30.0, 30.0, 30.0], "auroc": [np.nan, 0.9, np.nan]}),
                 "se": pd.DataFrame({"epoch": [1, 2], "loss": [0.1234, 0.0], "feature_norm": [4.0, 5.0]}),
                 "cbam": pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4], "feature_norm": [10.0, 10.0],
                                       "auroc": [np.nan, np.nan]})}
    lines = cold_start_text(histories).split("\n\n")
    assert lines == ["**differnet**: embedding norm 30 at epoch 1; AUROC 90.0 % at epoch 2, loss at epoch 1 2.500.",
                     "**se**: its embedding at epoch 1 is 7.5x smaller than differnet's; not evaluated, loss at "
                     "epoch 1 0.123.",
                     "**cbam**: its embedding at epoch 1 is 3.0x smaller than differnet's; not evaluated, loss at "
                     "epoch 1 0.500."]


def test_cold_start_text_without_the_reference_gives_each_norm():
    # catches a KeyError (or a ratio to a run that is not there) when the reference was not trained
    text = cold_start_text({"se": pd.DataFrame({"epoch": [1], "loss": [0.2], "feature_norm": [4.25],
                                                "auroc": [0.75]})}, reference="differnet")
    assert text == "**se**: embedding norm 4.25 at epoch 1; AUROC 75.0 % at epoch 1, loss at epoch 1 0.200."


# --- ceiling_text -----------------------------------------------------------------------------------------------
def _auroc_table(reference_values, mean=None):
    table = pd.DataFrame({"differnet": reference_values, "se": [80.0] * len(reference_values)},
                         index=[f"c{i}" for i in range(len(reference_values))])
    table.loc["mean"] = table.mean() if mean is None else mean
    return table


def test_ceiling_text_every_branch():
    # catches `>= ceiling` written `>` (99.5 itself), the mean row counted as a category, "the other 1 categories",
    # the remaining count off by one, a missing reference column raising, or a room of 0 said as "at most 0.0"
    assert ceiling_text(_auroc_table([80.0, 90.0]), reference="cbam") == ""
    assert ceiling_text(_auroc_table([80.0, 99.49], mean=100.0)) == (
        "No category has differnet at the ceiling (all below 99.5 %): every row leaves room for a gain.")
    text = ceiling_text(_auroc_table([99.5, 80.0, 90.0, 100.0]))
    assert text == ("differnet is at the **ceiling** on `c0` (99.5 %), `c3` (100.0 %): a variant can gain at most "
                    "0.5 points there, so those rows can show a loss but hardly a gain, and the mean row averages "
                    "them with the others. The question of a gain rests on the other 2 categories.")
    assert ceiling_text(_auroc_table([100.0, 70.0])).endswith(
        "no variant can gain anything there, so those rows can show a loss but no gain, and the mean row averages "
        "them with the others. The question of a gain rests on the one other category.")
    assert ceiling_text(_auroc_table([100.0, 99.8])).endswith(
        "No category here leaves room for a gain: this data cannot show one.")
    assert "`c0`" in ceiling_text(_auroc_table([99.0, 80.0]), ceiling=98.0)


# --- shrinkage_text ---------------------------------------------------------------------------------------------
def _norms(**first_last):
    return {v: pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "feature_norm": list(fl)})
            for v, fl in first_last.items()}


@pytest.mark.parametrize("last,verb", [(9.5, "shrank"), (9.7, "kept its size"), (10.3, "kept its size"),
                                       (10.5, "grew")])
def test_shrinkage_is_judged_against_twice_the_references_drift(last, verb):
    # catches the threshold taken as the reference's drift once instead of twice (2 %: -3 % would be "shrank") or
    # as the fixed 1 % whatever the reference did
    histories = _norms(differnet=(10.0, 10.2), se=(10.0, last))  # reference +2 %: threshold 4 %
    text = shrinkage_text(shrinkage_summary(histories))
    assert f"**se**: the embedding {verb}" in text
    assert f"({100 * (last / 10 - 1):+.1f} % from the first to the last epoch; differnet's frozen one moved +2.0 %)." \
        in text
    assert ("**differnet**: the embedding of the frozen reference changed (+2.0 % from the first to the last epoch): "
            "the noise the other rows are judged against.") in text


@pytest.mark.parametrize("last,verb", [(9.85, "shrank"), (9.95, "kept its size"), (10.15, "grew")])
def test_without_the_reference_the_threshold_is_one_percent(last, verb):
    # catches a KeyError without the reference run, or a threshold other than 1 % then
    text = shrinkage_text(shrinkage_summary(_norms(se=(10.0, last))))
    assert text.startswith(f"**se**: the embedding {verb}")
    assert text.endswith(f"({100 * (last / 10 - 1):+.1f} % from the first to the last epoch).")
    assert "frozen" not in text


def test_shrinkage_text_names_the_attention_quantity_that_moved_most():
    # catches the gate that moved most picked by signed change (a falling gate hidden behind a slightly rising one)
    history = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "feature_norm": [10.0, 5.0],
                            "gate_mean_block1_scale0": [0.5, 0.52], "spatial_mean_block2_scale0": [0.6, 0.3]})
    text = shrinkage_text(shrinkage_summary({"cbam": history}))
    assert text == ("**cbam**: the embedding shrank (-50.0 % from the first to the last epoch); the attention "
                    "quantity that moved most is `spatial_mean_block2_scale0`, from 0.6000 to 0.3000.")


def test_the_sentences_defects_a_reviewer_found_stay_fixed():
    # catches a duplicated image in the open-gate run paired (DeLong over 41 rows), a gap of 0.01 printed as "0.0",
    # a larger embedding called "0.5x smaller", constant zero scores not called constant, and a variant other than
    # SE/CBAM dropped from the gap sentence
    from adnlib.teach.analysis import cold_start_text, score_spread, score_spread_text
    doubled = pd.concat([_scores(STRONG), _scores(STRONG).iloc[:1]], ignore_index=True)
    assert _same_images(_scores(WEAK), doubled) is None
    table = last_vs_best({"se": _metrics(0.8, 0.8001, 2)})
    assert "by 0.01 points" in last_vs_best_text(table)
    history = pd.DataFrame({"epoch": [1], "loss": [1.0], "auroc": [0.5]})
    text = cold_start_text({"differnet": history.assign(feature_norm=4.0), "se": history.assign(feature_norm=8.0)})
    assert "**se**: its embedding at epoch 1 is 2.0x larger than differnet's" in text
    assert "about the size of differnet's (1.00x)" in cold_start_text(
        {"differnet": history.assign(feature_norm=4.0), "se": history.assign(feature_norm=4.0)})
    assert "nearly constant" in score_spread_text(score_spread({"se": pd.DataFrame({"score": [0.0, 0.0, 0.0]})}))
    assert attention_gap_text({"eca": -2.0, "epochs": 3.0}) == (
        "Against differnet after the last epoch (epoch 3): ECA -2.0 AUROC points.")


def test_gate_responses_are_judged_per_variant_not_pooled():
    # catches SE's and CBAM's gate counts summed into one verdict: a variant below chance must not be called
    # "beyond chance" because the other one is (the demo: SE blocks 2-3 beyond chance, CBAM's not)
    from adnlib.teach.analysis import gate_response_text, gate_takeaway
    se = pd.DataFrame({"block": [1, 2, 3], "outside_band": [0, 119, 151], "shuffled_max": [0, 24, 48],
                       "max_abs_shift": [0.001, 0.007, 0.006]})
    cbam = pd.DataFrame({"block": [1, 2, 3], "outside_band": [0, 6, 1], "shuffled_max": [1, 40, 31],
                         "max_abs_shift": [0.002, 0.03, 0.02]})
    text = gate_response_text({"se": se, "cbam": cbam}, 10, 15)
    assert "**SE**: 270 gates, up to 72 by chance: more than chance (blocks 2, 3), but the largest shift" in text
    assert "**CBAM**: 7 gates, up to 72 by chance: **no more than chance**" in text
    takeaway = gate_takeaway({"se": se, "cbam": cbam}, {"se": pd.DataFrame({"gate_shift_mean": [0.01]})})
    assert "SE beyond chance but by at most 0.007, too little to matter; CBAM no more than chance" in takeaway
    strong = se.assign(max_abs_shift=[0.001, 0.05, 0.006])
    assert "**SE**: 270 gates, up to 72 by chance: **more than chance** (blocks 2, 3), and the largest shift of a " \
           "mean gate is **0.0500**" in gate_response_text({"se": strong}, 10, 15)
