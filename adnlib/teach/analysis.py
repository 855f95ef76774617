"""Numbers behind the teaching notebooks' figures: per-rotation scores, AUROC vs rotations, thresholds, latents.

Everything here works on a trained model or on score tables from `adnlib.run.evaluate`; the plots that show these
numbers are in `adnlib.teach.plots`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score
from torch.utils.data import DataLoader

from adnlib.model.transforms import rotated_copies, to_unit
from adnlib.progress import progress_bar
from adnlib.run.evaluate import image_angles, rotation_key


# --- scores per rotated copy ------------------------------------------------------------------------------
@torch.inference_mode()
def copy_scores(model, images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Score of each rotated copy: images (B,3,S,S) uint8 or [0,1], angles (B,n) -> (B,n) mean of z² over dims.

    The image's anomaly score is the mean of its row (what `model.score` returns).
    """
    model.eval()
    copies = rotated_copies(to_unit(images), angles.to(images.device))
    z, _ = model(model.prepare(copies))
    return (z.float() ** 2).mean(dim=1).reshape(angles.shape)


def rotation_score_matrix(model, dataset, n_rotations: int, *, mode: str | None = None,
                          device: torch.device | str = "cpu", seed: int = 0, evaluation: int = 0,
                          batch_size: int | None = None,
                          progress: bool = True) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Per-copy scores of every test image: (N, n) scores, (N, n) angles in degrees, and the sample table.

    Angles are those `adnlib.run.evaluate.score_dataset` uses with the same seed and evaluation (fixed evenly
    spaced, or random keyed by (seed, evaluation, image)), so the row mean equals the image's score with
    `n_rotations` rotations.
    """
    mode = mode or model.config.test_rotations
    split_dir = Path(dataset.root) / dataset.category / dataset.split
    keys = [rotation_key(s.path, split_dir) for s in dataset.samples]
    loader = DataLoader(dataset, batch_size=batch_size or model.config.test_batch_size, shuffle=False)
    scores, angles_all = [], []
    for images, _, idx in progress_bar(loader, desc=f"scoring {n_rotations} rotations per image", disable=not progress):
        angles = torch.stack([image_angles(keys[i], n_rotations, mode, model.config.rotation_degrees, seed, evaluation)
                              for i in idx.tolist()])
        scores.append(copy_scores(model, images.to(device), angles).cpu())
        angles_all.append(angles)
    frame = pd.DataFrame({"path": [str(s.path) for s in dataset.samples],
                          "label": [s.label for s in dataset.samples],
                          "defect_type": [s.defect_type for s in dataset.samples]})
    return torch.cat(scores).double().numpy(), torch.cat(angles_all).numpy(), frame


def rotation_subset(n_total: int, n: int, mode: str = "fixed") -> np.ndarray:
    """Columns of a rotation score matrix that form an n-rotation test.

    fixed: every (n_total/n)-th column — exactly the evenly spaced angles of an n-rotation test when n divides
    n_total; random: the first n columns (random angles are exchangeable).
    """
    if not 1 <= n <= n_total:
        raise ValueError(f"n must be between 1 and {n_total}, not {n}")
    if mode == "fixed":
        if n_total % n:
            raise ValueError(f"with fixed angles, n ({n}) must divide the number of computed rotations ({n_total})")
        return np.arange(0, n_total, n_total // n)
    return np.arange(n)


def scores_from_matrix(matrix: np.ndarray, samples: pd.DataFrame, n: int, mode: str = "fixed") -> pd.DataFrame:
    """Score table [path, label, defect_type, score] using n of the computed rotations per image."""
    frame = samples.copy()
    frame["score"] = matrix[:, rotation_subset(matrix.shape[1], n, mode)].mean(axis=1)
    return frame


def rotation_counts(n_max: int, mode: str = "fixed") -> list[int]:
    """1, 2, 4, ... up to n_max, and n_max itself; with fixed angles only counts that divide n_max."""
    counts, c = [], 1
    while c <= n_max:
        if mode != "fixed" or n_max % c == 0:
            counts.append(c)
        c *= 2
    return counts if counts[-1] == n_max else counts + [n_max]


def auroc_vs_rotations(matrix: np.ndarray, labels, counts: list[int] | None = None, mode: str = "fixed",
                       repeats: int = 20, seed: int = 0, pool: np.ndarray | None = None,
                       n_boot: int = 1000) -> pd.DataFrame:
    """AUROC with 1, 2, 4, ... test rotations: the test as scored, its interval over test images, and the spread
    over repeated tests with other random angles.

    matrix (N, n_total): per-copy scores of the test as scored (`rotation_score_matrix`). pool (N, P): per-copy
    scores at P random angles per image, P at least twice the largest count: each repetition draws n of them
    afresh, so even at the largest count the repetitions use different angles (without a pool the repetitions
    draw from `matrix`, whose spread at n = n_total is zero by construction). Returns one row per count:
    n_rotations, auroc, auroc_low, auroc_high (95 % stratified bootstrap over the test images,
    `adnlib.run.stats.auroc_interval`), fresh_mean, fresh_std (over `repeats` draws).
    """
    from adnlib.run.stats import auroc_interval
    labels = np.asarray(labels)
    n_total = matrix.shape[1]
    counts = counts or rotation_counts(n_total, mode)
    source = matrix if pool is None else pool
    if pool is not None and pool.shape[1] < 2 * max(counts):
        raise ValueError(f"the pool needs at least {2 * max(counts)} rotations per image, not {pool.shape[1]}")
    rng = np.random.default_rng(seed)
    rows = []
    for n in counts:
        scored = matrix[:, rotation_subset(n_total, n, mode)].mean(axis=1)
        interval = auroc_interval(labels, scored, n_boot=n_boot, seed=seed)
        fresh = [roc_auc_score(labels, source[:, rng.choice(source.shape[1], n, replace=False)].mean(axis=1))
                 for _ in range(repeats)]
        rows.append({"n_rotations": n, "auroc": interval["auroc"], "auroc_low": interval["low"],
                     "auroc_high": interval["high"], "fresh_mean": float(np.mean(fresh)),
                     "fresh_std": float(np.std(fresh))})
    return pd.DataFrame(rows)


def rotations_text(curves: dict[str, pd.DataFrame]) -> str:
    """Sentences from `auroc_vs_rotations` tables: per variant, how much the AUROC moves between the fewest and
    the most rotations, and how wide the spread over fresh angles is at both ends."""
    lines = []
    for variant, c in curves.items():
        first, last = c.iloc[0], c.iloc[-1]
        interval = f"{100 * last['auroc_low']:.1f}–{100 * last['auroc_high']:.1f}"
        lines.append(f"**{variant}**: AUROC {100 * first['auroc']:.1f} % with {int(first['n_rotations'])} "
                     f"rotation(s), {100 * last['auroc']:.1f} % with {int(last['n_rotations'])} "
                     f"(95 % interval over the test images {interval}); "
                     f"spread over fresh angles ±{100 * first['fresh_std']:.1f} points at {int(first['n_rotations'])}, "
                     f"±{100 * last['fresh_std']:.1f} at {int(last['n_rotations'])}.")
    return "\n\n".join(lines)


def rotations_takeaway(curves: dict[str, pd.DataFrame]) -> str:
    """One short sentence for a takeaways box: how far the AUROC moved from the fewest to the most test rotations,
    against the interval over the test images at the most (the larger noise on a small test set)."""
    moves = {v: 100 * (c.iloc[-1]["auroc"] - c.iloc[0]["auroc"]) for v, c in curves.items()}
    widths = {v: 100 * (c.iloc[-1]["auroc_high"] - c.iloc[-1]["auroc_low"]) for v, c in curves.items()}
    largest = max(moves, key=lambda v: abs(moves[v]))
    first, last = (int(next(iter(curves.values())).iloc[i]["n_rotations"]) for i in (0, -1))
    if all(abs(move) < 0.05 for move in moves.values()):
        return (f"From {first} to {last} test rotations the AUROC did not move (by less than 0.05 points for every "
                "variant): on this test set more rotations changed no ranking of the images that matters.")
    within = all(abs(moves[v]) <= widths[v] / 2 for v in curves)
    return (f"From {first} to {last} test rotations the largest move of the AUROC was {moves[largest]:+.1f} points "
            f"({largest}); " + ("every such move is at most half the interval over the test images "
                                f"({min(widths.values()):.1f}–{max(widths.values()):.1f} points wide): on this test "
                                "set the images, not the rotations, limit what the AUROC can tell."
                                if within else "at least one move is larger than half its interval over the test "
                                "images: the rotations matter here."))


def threshold_takeaway(summary: dict, frame: pd.DataFrame, variant: str) -> str:
    """One short sentence for a takeaways box: what the F1-best threshold (picked on the test images) does."""
    normal, defective = int((frame["label"] == 0).sum()), int((frame["label"] == 1).sum())
    flagged = frame["score"] >= summary["threshold"]
    false_alarms = int((flagged & (frame["label"] == 0)).sum())
    missed = int((~flagged & (frame["label"] == 1)).sum())
    return (f"{variant}'s F1-best threshold, picked on the test images themselves, flags {false_alarms} of {normal} "
            f"normal images and misses {missed} of {defective} defective ones: an optimistic operating point, since "
            "a real line must choose its threshold before seeing the test labels.")


# --- thresholds -----------------------------------------------------------------------------------------------
def f1_threshold(frame: pd.DataFrame) -> dict[str, float]:
    """The score threshold with the best F1 (anomalous = score >= threshold), with its precision and recall.

    Chosen on the same images it is evaluated on: an optimistic, teaching-only number.
    """
    precision, recall, thresholds = precision_recall_curve(frame["label"], frame["score"])
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return {"threshold": float(thresholds[best]), "f1": float(f1[best]), "precision": float(precision[best]),
            "recall": float(recall[best])}


def confusion(frame: pd.DataFrame, threshold: float) -> np.ndarray:
    """2×2 confusion matrix [[TN, FP], [FN, TP]] of 'anomalous if score >= threshold'."""
    return confusion_matrix(frame["label"], (frame["score"] >= threshold).astype(int), labels=[0, 1])


def threshold_summary(frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Counts and rates at one threshold: tp, fp, tn, fn, precision, recall (TPR), fpr, f1."""
    (tn, fp), (fn, tp) = confusion(frame, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": float(threshold), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
            "precision": precision, "recall": recall, "fpr": fp / (fp + tn) if fp + tn else 0.0,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


# --- latent codes ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def latent_codes(model, dataset, *, device: torch.device | str = "cpu", batch_size: int = 8,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """z (N, D) of the unrotated images of a dataset and their labels (N,): is the latent standard normal?"""
    model.eval()
    zs, labels = [], []
    for images, label, _ in progress_bar(DataLoader(dataset, batch_size=batch_size), desc="latent codes",
                                 disable=not progress):
        z, _ = model(model.prepare(images.to(device)))
        zs.append(z.float().cpu())
        labels.append(label)
    return torch.cat(zs).numpy(), torch.cat(labels).numpy()


# --- training runs ---------------------------------------------------------------------------------------------
def load_run(folder: str | Path) -> tuple[dict, pd.DataFrame]:
    """metrics.json and history.csv of a training run folder (as written by `adnlib.run.train.train`)."""
    folder = Path(folder)
    return json.loads((folder / "metrics.json").read_text()), pd.read_csv(folder / "history.csv")


def last_vs_best(metrics: dict[str, dict], scores: dict[str, pd.DataFrame] | None = None,
                 histories: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per variant: AUROC of the last epoch, the best evaluation (selected on the test set) and the gap, in
    %. scores: {variant: the run's scores.csv} adds the last AUROC's 95 % interval over the test images
    (stratified bootstrap, `adnlib.run.stats.auroc_interval`): what one seed on this test set can tell apart.
    histories: {variant: history.csv} adds how many evaluations the best was chosen from."""
    from adnlib.run.stats import auroc_interval
    rows = []
    for variant, m in metrics.items():
        row = {"variant": variant, "auroc_last_%": 100 * m["auroc"], "auroc_best_%": 100 * m["auroc_best"],
               "best_epoch": m["best_epoch"], "epochs": m["epochs"],
               "evaluations": int(histories[variant]["auroc"].notna().sum()) if histories else None,
               "optimism_of_best_%": 100 * (m["auroc_best"] - m["auroc"])}
        if scores is not None and variant in scores:
            interval = auroc_interval(scores[variant]["label"], scores[variant]["score"])
            row["last_95%_low"], row["last_95%_high"] = 100 * interval["low"], 100 * interval["high"]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    if table["evaluations"].isna().all():
        table = table.drop(columns="evaluations")
    return table.round(2)


def _points(value: float) -> str:
    """AUROC points as a sentence gives them: one decimal, two below 0.05 (never a '0.0' for a difference)."""
    return f"{value:.1f}" if abs(value) >= 0.05 else f"{value:.2f}"


def last_vs_best_text(table: pd.DataFrame) -> str:
    """What `last_vs_best`'s table shows, from its numbers: whether the test-selected best differs from the last
    epoch (by how much, for which variant), and how wide one run's interval over the test images is."""
    gaps = table["optimism_of_best_%"]
    if "evaluations" in table and int(table["evaluations"].max()) == 1:
        first = ("Each run was evaluated once (at its last epoch), so there was nothing to select: evaluate more "
                 "often (`eval_every`) to see how optimistic the best evaluation gets.")
    elif (gaps <= 0.005).all():
        first = ("In this run the best evaluation **is** the last one for every variant: the selection on the test "
                 "set added nothing here (it can only make the best number higher, never lower).")
    else:
        shown = ", ".join(f"{v} by {_points(g)} points (best at epoch {int(table.loc[v, 'best_epoch'])})"
                          for v, g in gaps.items() if g > 0.005)
        first = (f"In this run the test-selected best is higher than the last epoch for {shown}: numbers a "
                 "deployed model would not reach, because nothing but the test labels picked that epoch.")
    if "last_95%_low" not in table:
        return first
    widths = table["last_95%_high"] - table["last_95%_low"]
    return (first + f" Each last AUROC's 95 % interval over the test images is {widths.min():.0f}–{widths.max():.0f}"
            " points wide (table): that is how uncertain each AUROC is on its own. Whether two variants differ is a "
            "question for a paired test on the same images (DeLong's, notebook 06), whose interval of the difference "
            "is usually narrower.")


def last_vs_best_takeaway(table: pd.DataFrame) -> str:
    """One short sentence for a takeaways box from `last_vs_best`'s table."""
    gaps = table["optimism_of_best_%"]
    evaluations = int(table["evaluations"].max()) if "evaluations" in table else None
    n = f" of {evaluations} evaluations" if evaluations else ""
    if evaluations == 1:
        text = "Each run was evaluated once, so its best evaluation is its last epoch (nothing was selected)"
    elif (gaps <= 0.005).all():
        text = f"The test-selected best{n} equalled the last epoch for every variant here"
    else:
        variant = gaps.idxmax()
        text = f"The test-selected best{n} beat the last epoch by up to {_points(gaps.max())} points ({variant})"
    if "last_95%_low" in table:
        widths = table["last_95%_high"] - table["last_95%_low"]
        text += f"; one seed's 95 % interval over the test images is {widths.min():.0f}–{widths.max():.0f} points wide"
    return text + "."


def attention_gap(metrics: dict[str, dict], open_metrics: dict | None = None, reference: str = "differnet",
                  scores: dict[str, pd.DataFrame] | None = None, open_scores: pd.DataFrame | None = None
                  ) -> dict[str, float]:
    """Last-epoch AUROC gaps in points: {variant: variant − reference} for every other variant, "epochs" (the
    reference's), and with `open_metrics` (SE trained with open gates, paired) "se, open gates" and "recovered"
    (open-gate SE − standard SE, in points). With the runs' scores.csv (scores: {variant: frame}, open_scores) also
    "recovered_p": DeLong's paired test of that change over the same test images (NaN: they scored other images,
    or the scores cannot be tested)."""
    from adnlib.run.stats import delong_test
    gaps = {v: 100 * (m["auroc"] - metrics[reference]["auroc"]) for v, m in metrics.items() if v != reference}
    gaps["epochs"] = float(metrics[reference]["epochs"])
    if open_metrics is not None and "se" in metrics:
        gaps["se, open gates"] = 100 * (open_metrics["auroc"] - metrics[reference]["auroc"])
        gaps["recovered"] = 100 * (open_metrics["auroc"] - metrics["se"]["auroc"])
        if scores is not None and "se" in scores and open_scores is not None:
            paired = _same_images(scores["se"], open_scores)
            try:  # NaN: the runs scored other images, or their scores cannot be tested (a class too small, a NaN)
                gaps["recovered_p"] = (float("nan") if paired is None else
                                       delong_test(paired["label"], paired["score_b"], paired["score_a"])["p"])
            except ValueError:
                gaps["recovered_p"] = float("nan")
    return gaps


def _same_images(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame | None:
    """Two runs' scores.csv side by side (score_a, score_b) by image (`image_key`, so runs made on other machines
    pair too), or None when they did not score the same images."""
    from adnlib.run.stats import image_key
    keys = [image_key(frame["path"]) for frame in (a, b)]
    left = pd.DataFrame({"image": keys[0], "label": a["label"].to_numpy(), "score_a": a["score"].to_numpy()})
    right = pd.DataFrame({"image": keys[1], "label_b": b["label"].to_numpy(), "score_b": b["score"].to_numpy()})
    if set(left["image"]) != set(right["image"]) or left["image"].duplicated().any() \
            or right["image"].duplicated().any():
        return None
    both = left.merge(right, on="image")
    return both if (both["label"] == both["label_b"]).all() else None


_GAP_KEYS = ("epochs", "se, open gates", "recovered", "recovered_p")  # attention_gap's entries that are not variants


def attention_gap_text(gaps: dict[str, float], reference: str = "differnet", level: float = 0.05) -> str:
    """A takeaway from `attention_gap`: attention ahead or behind the reference by how much and, for SE trained
    with open gates, how far that moved SE and whether the move is beyond the test images' noise (DeLong's paired
    p below `level`); a conclusion about the cold start only when it is. One seed: training noise is not tested."""
    parts = [f"{v.upper()} {g:+.1f}" for v, g in gaps.items() if v not in _GAP_KEYS]
    if not parts:  # no variant beside the reference: nothing to say
        return ""
    epochs = f" (epoch {int(gaps['epochs'])})" if "epochs" in gaps else ""
    text = f"Against {reference} after the last epoch{epochs}: {', '.join(parts)} AUROC points."
    if "recovered" not in gaps or "se" not in gaps:
        return text
    moved = gaps["recovered"]
    text += (f" SE with open gates ends {gaps['se, open gates']:+.1f} against {reference} and {moved:+.1f} against "
             "SE with standard gates")
    if "recovered_p" not in gaps:
        return text + " (not tested: the runs' scores were not given)."
    p = gaps["recovered_p"]
    if np.isnan(p):
        return text + (" (not tested: the two runs scored different test images, or their scores cannot be "
                       "tested).")
    test = f"DeLong's paired test over the same test images, p = {p:.2g}; one seed, so training noise is not in it"
    if abs(moved) < 0.05:
        return text + ": no change, so starting the gates open made no difference in this run."
    if not p < level:
        return text + (f": within the test images' noise ({test}), so this run cannot say whether the cold start "
                       "explains any of SE's gap.")
    if moved > 0 and gaps["se"] < 0:
        return text + (f", more than the test images' noise ({test}): in this run part of SE's gap is the cold "
                       "start, not what attention can do.")
    if moved > 0:
        return text + f", more than the test images' noise ({test}): open gates helped SE further here."
    return text + (f", lower, beyond the test images' noise ({test}): starting the gates open did not help SE "
                   "in this run.")


def shrinkage_summary(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per variant: embedding norm and gate means at the first and last epoch, and their ratio last/first.

    A ratio well below 1 for an attention variant means its gates shrink the features while DifferNet's
    (frozen) embedding keeps its size: the likelihood can be raised by scaling the input down.
    """
    rows = []
    for variant, h in histories.items():
        columns = ["feature_norm"] + [c for c in h.columns if c.startswith(("gate_mean_", "spatial_mean_"))]
        for column in columns:
            if h[column].notna().any():
                first, last = float(h[column].iloc[0]), float(h[column].iloc[-1])
                rows.append({"variant": variant, "quantity": column, "first_epoch": first, "last_epoch": last,
                             "last/first": last / first if first else np.nan})
    return pd.DataFrame(rows).round(4)


def shrinkage_text(shrink: pd.DataFrame, reference: str = "differnet") -> str:
    """A sentence per variant from `shrinkage_summary`: how the embedding norm changed from the first to the last
    epoch, and which attention quantity moved most. `reference`'s backbone is frozen, so its own change (the
    training images' rotations differ per epoch) is the noise of this measure: a change counts as shrinking or
    growing only beyond 1 % and twice that noise."""
    norms = shrink[shrink["quantity"] == "feature_norm"].set_index("variant")["last/first"]
    noise = abs(100 * (float(norms[reference]) - 1)) if reference in norms else 0.0
    threshold = max(1.0, 2 * noise)
    lines = []
    for variant, part in shrink.groupby("variant", sort=False):
        norm = part[part["quantity"] == "feature_norm"].iloc[0]
        change = 100 * (norm["last/first"] - 1)
        verb = ("shrank" if change < -threshold else "grew" if change > threshold
                else "kept its size, within the noise of this measure")
        if variant == reference:  # no verdict: its drift is what the others are judged against
            verb = "of the frozen reference changed"
        sentence = f"**{variant}**: the embedding {verb} ({change:+.1f} % from the first to the last epoch"
        sentence += (f"; {reference}'s frozen one moved {100 * (float(norms[reference]) - 1):+.1f} %)"
                     if reference in norms and variant != reference else ")")
        gates = part[part["quantity"] != "feature_norm"]
        if len(gates):
            moved = gates.assign(shift=(gates["last_epoch"] - gates["first_epoch"]).abs()).nlargest(1, "shift").iloc[0]
            sentence += (f"; the attention quantity that moved most is `{moved['quantity']}`, from "
                         f"{moved['first_epoch']:.4f} to {moved['last_epoch']:.4f}")
        lines.append(sentence + (": the noise the other rows are judged against." if variant == reference else "."))
    return "\n\n".join(lines)


# A gate is a sigmoid in [0, 1]: a block whose mean gate moves less than this over a run has not learnt anything
# that can show in a comparison (the demo preset once moved SE's gates by 0.0005 in 8 epochs).
GATES_MOVED = 0.01


def gate_movement(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per attention run: the block gate that moved most from the first to the last epoch -> columns variant,
    quantity, first_epoch, last_epoch, shift (absolute). Runs without gate columns (DifferNet) are left out."""
    rows = []
    for variant, h in histories.items():
        columns = [c for c in h.columns if c.startswith(("gate_mean_", "spatial_mean_")) and h[c].notna().any()]
        if not columns:
            continue
        shifts = {c: abs(float(h[c].dropna().iloc[-1]) - float(h[c].dropna().iloc[0])) for c in columns}
        top = max(shifts, key=shifts.get)
        rows.append({"variant": variant, "quantity": top, "first_epoch": float(h[top].dropna().iloc[0]),
                     "last_epoch": float(h[top].dropna().iloc[-1]), "shift": shifts[top], "epochs": len(h)})
    return pd.DataFrame(rows)


def gate_movement_text(movement: pd.DataFrame, tolerance: float = GATES_MOVED) -> str:
    """Whether each run's attention learnt anything that a comparison could show, from `gate_movement`."""
    lines = []
    for _, row in movement.iterrows():
        if row["epochs"] < 2:  # each history row is an epoch's mean: one row shows no movement at all
            lines.append(f"**{row['variant']}**: one epoch only, so the history cannot show how far the gates moved "
                         "(it records each epoch's mean, not the start); train at least two epochs to see it.")
            continue
        head = (f"**{row['variant']}**: the gate that moved most, `{row['quantity']}`, went from "
                f"{row['first_epoch']:.4f} to {row['last_epoch']:.4f} from the first epoch to the last "
                f"({int(row['epochs'])} epochs) ")
        if row["shift"] < tolerance:
            lines.append(head + f"(less than {tolerance}): its attention blocks **barely trained**, so this run "
                         "cannot show what *trained* attention does: whatever separates it from DifferNet here, "
                         "it is not something the gates learnt. More steps or a higher attention learning rate are "
                         "needed before it can speak to the paper's question.")
        else:
            lines.append(head + f"(at least {tolerance}): training changed the gates; whether that helps is for "
                         "the AUROCs, and for several seeds (notebook 06 run with `seeds = [0, 1, 2]`), to decide.")
    return "\n\n".join(lines)


# A mean gate that differs by less than this between normal and defective images (gates lie in 0..1) changes what
# the flow sees by under 1 %: too small to matter for detection, whether or not it is beyond chance.
GATE_RESPONSE_SMALL = 0.01


def _gate_response(frame: pd.DataFrame, small: float) -> tuple[str, int, int, float, list[int]]:
    """One variant's `attention_viz.gate_difference` table -> (outcome, observed, chance, largest shift, blocks beyond
    chance); outcome: 'chance' (no more than chance), 'small' (beyond chance, every shift under `small`), 'responds'."""
    observed, chance = int(frame["outside_band"].sum()), int(frame["shuffled_max"].sum())
    largest = float(frame["max_abs_shift"].max())
    blocks = [int(row.block) for row in frame.itertuples() if row.outside_band > row.shuffled_max]
    outcome = "chance" if observed <= chance else "small" if largest < small else "responds"
    return outcome, observed, chance, largest, blocks


def gate_response_text(differences: dict[str, pd.DataFrame], n_normal: int, n_defective: int,
                       small: float = GATE_RESPONSE_SMALL) -> str:
    """Do the trained gates respond to defects? Per variant, from `attention_viz.gate_difference`: the count of
    channels whose mean gate on the defective images leaves the normal images' 10–90 % band, against the largest
    count that shuffled labels give (chance; both summed over the blocks), the blocks beyond chance, and the largest
    shift of a mean gate. Three outcomes per variant, each said as it is: no more than chance; beyond chance but
    too small to matter (under `small`); beyond chance and not small."""
    lines = [f"On {n_normal} normal and {n_defective} defective images: the channel gates whose mean over the "
             "defective images leaves the normal images' 10–90 % band, against the most that shuffling the "
             "normal/defective labels gives by chance (both summed over the blocks)."]
    for variant, frame in differences.items():
        outcome, observed, chance, largest, blocks = _gate_response(frame, small)
        count = f"**{variant.upper()}**: {observed} gates, up to {chance} by chance"
        where = f" (block{'s' if len(blocks) > 1 else ''} {', '.join(map(str, blocks))})" if blocks else ""
        size = f"the largest shift of a mean gate is **{largest:.4f}** (gates lie in 0–1)"
        lines.append(
            f"{count}: **no more than chance**, so its crossings do not show that its gates respond to defects; "
            f"{size}." if outcome == "chance" else
            f"{count}: more than chance{where}, but {size}, under {small:.0%} of the gates' range: a response that "
            "exists on these images but is too small to change much of what the flow sees, which is why its two "
            "curves in the figure lie on top of each other." if outcome == "small" else
            f"{count}: **more than chance**{where}, and {size}: some of its gates do respond differently to the "
            "defective images. They learnt from normal images only, so this is a side effect of what describes "
            "normal images, not a defect detector; whether it helps is for the AUROC to say.")
    return "\n\n".join(lines)


def gate_shift_text(shifts: dict[str, pd.DataFrame], statistics: dict[str, pd.DataFrame],
                    activity: dict[str, pd.DataFrame]) -> str:
    """How far training moved the gates (`attention_viz.gate_shift`), against how much the gates differ from channel
    to channel (`gate_statistics`), and which blocks' hidden units never fire (`excitation_activity`)."""
    largest = max(float(frame["gate_shift_max"].max()) for frame in shifts.values())
    typical = float(pd.concat(shifts.values())["gate_shift_mean"].mean())
    spread = max(float(pd.concat(statistics.values())["gate_std_over_channels"].mean()), 1e-12)
    dead = [f"{variant.upper()} block {row.block}" for variant, frame in activity.items()
            for row in frame.itertuples() if row.never_active == row.hidden_units]
    share = typical / spread
    verdict = ("the pattern of the gates in the figure is still mostly the blocks' random initialisation" if share < 0.1
               else "training changed the gates a little, but their pattern is still mostly the random "
               "initialisation" if share < 0.5 else "training has visibly reshaped the pattern of the gates")
    return (f"Training moved a channel gate by **{typical:.2g}** on average and by at most **{largest:.2g}** from its "
            f"initial value, while the gates differ from channel to channel by about **{spread:.2g}** (standard "
            f"deviation over channels): the typical change is {share:.0%} of that spread, so {verdict}. "
            + (f"Blocks whose hidden units never fire on these images (their gates are the constant sigmoid of a "
               f"bias for every image, and a silent ReLU passes no gradient): {', '.join(dead)}." if dead else
               "Every block has hidden units that fire on these images."))


# Scores whose whole range is below this fraction of their typical value are nearly constant: their ranking, and
# so their AUROC, rests on differences in the last digits that any small change of the model can reorder.
NEARLY_CONSTANT = 0.01


def score_spread(scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per variant: the range of its test scores (min, max) against their median -> columns variant, min, max,
    median, relative_range ((max − min) / |median|)."""
    rows = []
    for variant, frame in scores.items():
        values = frame["score"].to_numpy(dtype=float)
        median = float(np.median(values))
        rows.append({"variant": variant, "min": float(values.min()), "max": float(values.max()), "median": median,
                     "relative_range": float((values.max() - values.min()) / abs(median)) if median
                     else 0.0 if values.max() == values.min() else np.inf})
    return pd.DataFrame(rows)


def score_spread_text(spread: pd.DataFrame, limit: float = NEARLY_CONSTANT) -> str:
    """A sentence for each variant whose test scores are nearly constant (`score_spread`); "" when none is."""
    flat = spread[spread["relative_range"] < limit]
    return " ".join(f"{row.variant.upper()}'s test scores are nearly constant: they span {row.min:.5g}–{row.max:.5g},"
                    f" {100 * row.relative_range:.2g} % of their value, so its AUROC rests on the last digits of its "
                    "scores and a small change of the model can reorder them." for row in flat.itertuples())


def gate_takeaway(differences: dict[str, pd.DataFrame], shifts: dict[str, pd.DataFrame],
                  small: float = GATE_RESPONSE_SMALL) -> str:
    """One short sentence for a takeaways box: how far training moved the gates and, per variant, whether they
    respond to defects (the outcomes of `gate_response_text`, briefly)."""
    typical = float(pd.concat(shifts.values())["gate_shift_mean"].mean())
    said = []
    for variant, frame in differences.items():
        outcome, _, _, largest, _ = _gate_response(frame, small)
        said.append(f"{variant.upper()} " + ("no more than chance" if outcome == "chance" else
                                             f"beyond chance but by at most {largest:.3f}, too little to matter"
                                             if outcome == "small" else f"beyond chance, by up to {largest:.3f}"))
    return (f"Training moved a channel gate by {typical:.2g} on average; between normal and defective images the "
            f"trained gates differ: {'; '.join(said)} (section 8).")


def cold_start_text(histories: dict[str, pd.DataFrame], reference: str = "differnet") -> str:
    """Sentences from paired histories: each run's embedding size at epoch 1 relative to `reference`'s, and the
    AUROC at the last evaluation, so that the gate initialisations can be compared."""
    first = {name: float(h["feature_norm"].iloc[0]) for name, h in histories.items()}
    lines = []
    for name, h in histories.items():
        evaluated = h.dropna(subset=["auroc"]) if "auroc" in h else h.iloc[:0]
        auroc = (f"AUROC {100 * evaluated['auroc'].iloc[-1]:.1f} % at epoch {int(evaluated['epoch'].iloc[-1])}"
                 if len(evaluated) else "not evaluated")
        size = (_relative_size(first[name], first[reference], reference)
                if name != reference and reference in first else f"embedding norm {first[name]:.3g} at epoch 1")
        lines.append(f"**{name}**: {size}; {auroc}, loss at epoch 1 {float(h['loss'].iloc[0]):.3f}.")
    return "\n\n".join(lines)


def _relative_size(norm: float, reference_norm: float, reference: str) -> str:
    """'its embedding at epoch 1 is 6.1x smaller than differnet's' (or larger, or about the same size)."""
    if norm <= 0 or reference_norm <= 0:
        return f"its embedding norm at epoch 1 is {norm:.3g} ({reference}'s {reference_norm:.3g})"
    ratio = reference_norm / norm
    if 1 / 1.05 <= ratio <= 1.05:
        return f"its embedding at epoch 1 is about the size of {reference}'s ({ratio:.2f}x)"
    return (f"its embedding at epoch 1 is {ratio:.1f}x smaller than {reference}'s" if ratio > 1 else
            f"its embedding at epoch 1 is {1 / ratio:.1f}x larger than {reference}'s")


# An AUROC (in %) at or above this leaves no room for a gain: a category there is at the ceiling.
CEILING = 99.5


def ceiling_text(table: pd.DataFrame, reference: str = "differnet", ceiling: float = CEILING) -> str:
    """Which categories of an `auroc_table` (categories × variants, in %, with a 'mean' row) have `reference` at the
    ceiling, where no variant can do better, and what that means for the mean row."""
    rows = table.drop(index="mean", errors="ignore")
    if reference not in rows.columns:
        return ""
    top = [(category, float(value)) for category, value in rows[reference].items() if value >= ceiling]
    if not top:
        return (f"No category has {reference} at the ceiling (all below {ceiling} %): every row leaves room for a "
                "gain.")
    listed = ", ".join(f"`{category}` ({value:.1f} %)" for category, value in top)
    left = len(rows) - len(top)
    room = max(100 - v for _, v in top)
    gain = ("no variant can gain anything there, so those rows can show a loss but no gain" if room == 0 else
            f"a variant can gain at most {room:.2g} points there, so those rows can show a loss but hardly a gain")
    return (f"{reference} is at the **ceiling** on {listed}: {gain}, and the mean row averages them with the others. "
            + ("The question of a gain rests on the one other category." if left == 1 else
               f"The question of a gain rests on the other {left} categories."
               if left else "No category here leaves room for a gain: this data cannot show one."))


def gain_verdict(comparison: pd.DataFrame, weights: str = "") -> str:
    """Markdown sentences, one per variant, computed from `adnlib.run.stats.paired_comparison`'s mean rows: the
    gain over the comparison's baseline (its `attrs["baseline"]`) with its interval, and a verdict only where the
    run has the seeds to give one. The verdict is the table's `beyond_noise` (after Holm's correction over the
    variants), never a raw p."""
    from adnlib.run.stats import MIN_SEEDS_FOR_VERDICT
    level = comparison.attrs.get("level", 0.95)
    baseline = comparison.attrs.get("baseline", "differnet")
    lines = []
    for _, row in comparison[comparison["category"] == "mean"].iterrows():
        n_seeds = int(row["n_seeds"])
        head = (f"**{row['variant']} − {baseline}** over the categories: {row['delta']:+.1f} AUROC points, "
                f"{level:.0%} interval [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}] "
                f"({n_seeds} seed{'s' if n_seeds != 1 else ''}, {int(row['n_images'])} test images). ")
        if n_seeds < MIN_SEEDS_FOR_VERDICT or pd.isna(row["p_holm"]):
            tail = (f"With fewer than {MIN_SEEDS_FOR_VERDICT} seeds this interval covers only the sampling of test "
                    "images, not the spread from one training run to the next, so it gives **no verdict**: run "
                    f"at least {MIN_SEEDS_FOR_VERDICT} seeds to ask whether the difference is larger than the noise.")
        elif row["beyond_noise"]:
            direction = "better" if row["delta"] > 0 else "worse"
            tail = (f"p = {row['p_holm']:.3g} (ORH: seeds and test images both counted as noise; Holm-corrected "
                    f"over the variants): here {row['variant']} is {direction} than {baseline} by more than the "
                    "noise that these training seeds and test images show.")
        else:
            tail = (f"p = {row['p_holm']:.3g} (ORH: seeds and test images both counted as noise; Holm-corrected "
                    "over the variants): with these seeds and test images the difference cannot be told apart from "
                    "noise (which is not evidence that there is none).")
        lines.append(head + tail)
    if "random" in weights:
        lines.append("These models use **random** backbone weights, not ImageNet's: the numbers say nothing about "
                     "the paper's claim.")
    return "\n\n".join(lines) if lines else f"No variant was compared with {baseline}."


__all__ = ["gain_verdict", "shrinkage_text", "cold_start_text", "rotations_text",
           "copy_scores", "rotation_score_matrix", "rotation_subset", "scores_from_matrix", "rotation_counts",
           "auroc_vs_rotations", "f1_threshold", "confusion", "threshold_summary", "latent_codes",
           "load_run", "last_vs_best", "shrinkage_summary"]
