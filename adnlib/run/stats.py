"""Paired comparisons of variants over seeds: mean ± std of AUROC, a stratified bootstrap CI and DeLong's test.

Every run of a category scores the same test images, and runs with the same seed are paired (same flow
initialisation, data order, angles), so a variant is compared with the baseline image by image and seed by seed.

* DeLong (the fast algorithm of Sun & Xu 2014; midranks, so a tie counts 1/2): the AUROCs of k score vectors on the
  same images and their covariance Σ = S10/n1 + S01/n0, from the structural components V10 (one per anomalous image:
  the fraction of normal images it outscores) and V01 (one per normal image: the fraction of anomalous images that
  outscore it). A difference, or a difference averaged over seeds, is a linear combination c of the AUROCs with
  variance cᵀΣc; its normal p-value covers the sampling of test images only.
* The paired bootstrap resamples test images with replacement within each class (class counts kept) and, with
  several seeds, the seeds too, with the same indices for both variants so pairs stay paired; the percentile
  interval of the seed-averaged ΔAUROC covers test-image resampling and seed-to-seed spread.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

_CHUNK = 4_000_000  # resampled scores ranked at once by the bootstrap (bounds its memory)
_TINY = 1e-12  # a standard error or difference below this is zero (floating-point dust)
COMPARISON_COLUMNS = ["category", "variant", "delta", "delta_std", "ci_low", "ci_high", "p_delong", "n_seeds",
                      "n_images", "beyond_noise"]
SUMMARY_COLUMNS = ["category", "variant", "mean", "std", "n_seeds"]


def _checked(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """labels (n,) 0/1 -> bool (n,); scores (n,) or (k, n) -> float (k, n); ValueError on anything else."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional (n,), got shape {labels.shape}")
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.shape[1] != labels.shape[0]:
        raise ValueError(f"scores must have shape (n,) or (k, n) with n = {labels.shape[0]} labels, "
                         f"got shape {np.shape(scores)}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    n1 = int(np.sum(labels == 1))
    if n1 == 0 or n1 == labels.shape[0]:
        raise ValueError(f"AUROC needs both classes, got {n1} anomalous and {labels.shape[0] - n1} normal images")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return labels == 1, scores


def _resampled_auroc(scores: np.ndarray, images: np.ndarray, n1: int) -> np.ndarray:
    """AUROC of every row of scores (S, n) on every image set images (B, n), anomalous images in the first n1
    columns -> (S, B): (sum of the anomalous midranks - n1(n1+1)/2) / (n1 n0)."""
    ranks = rankdata(scores[:, images], axis=-1)
    n0 = images.shape[1] - n1
    return (ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _aurocs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores (k, n) -> (k,), with the same arithmetic as the bootstrap's replicates."""
    order = np.concatenate([np.flatnonzero(labels), np.flatnonzero(~labels)])
    return _resampled_auroc(scores, order[None], int(labels.sum()))[:, 0]


def delong(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """DeLong AUROCs and their covariance: labels (n,) 0/1, scores (k, n) or (n,) -> aucs (k,), covariance (k, k).

    Fast DeLong (Sun & Xu 2014) with midranks: ties between an anomalous and a normal image count 1/2.
    """
    labels, scores = _checked(labels, scores)
    pos, neg = scores[:, labels], scores[:, ~labels]
    n1, n0 = pos.shape[1], neg.shape[1]
    if min(n1, n0) < 2:
        raise ValueError(f"DeLong's covariance needs at least 2 images of each class, got {n1} anomalous and "
                         f"{n0} normal")
    both = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (both[:, :n1] - rankdata(pos, axis=1)) / n0  # per anomalous image: normal images below it (ties 1/2)
    v01 = 1.0 - (both[:, n1:] - rankdata(neg, axis=1)) / n1  # per normal image: anomalous images above it
    covariance = np.atleast_2d(np.cov(v10)) / n1 + np.atleast_2d(np.cov(v01)) / n0
    return v10.mean(axis=1), covariance


def _normal_test(delta: float, variance: float) -> dict:
    """Two-sided normal test of delta with that variance; no spread and no difference -> p = 1."""
    se = float(np.sqrt(max(variance, 0.0)))
    if se < _TINY:
        z = 0.0 if abs(delta) < _TINY else float(np.copysign(np.inf, delta))
    else:
        z = delta / se
    return dict(delta=float(delta), se=se, z=float(z), p=float(2 * norm.sf(abs(z))))


def delong_test(labels, scores_a, scores_b) -> dict:
    """DeLong's paired two-sided test of AUROC(a) - AUROC(b) on the same images: labels, scores_a, scores_b (n,)
    -> dict(delta, se, z, p)."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must both have shape (n,), got {a.shape} and {b.shape}")
    aucs, covariance = delong(labels, np.stack([a, b]))
    c = np.array([1.0, -1.0])
    return _normal_test(float(aucs[0] - aucs[1]), float(c @ covariance @ c))


def _paired_arrays(labels, scores_a, scores_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, a = _checked(labels, scores_a)
    _, b = _checked(labels, scores_b)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must have the same shape (S, n), got {a.shape} and {b.shape}")
    return labels, a, b


def _draw(rng: np.random.Generator, labels: np.ndarray, n_seeds: int, n_boot: int,
          resample_seeds: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices of n_boot replicates: images (n_boot, n), the n1 anomalous ones first, each class drawn with
    replacement from itself; seeds (n_boot, S), drawn with replacement if resample_seeds and S > 1."""
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    images = np.concatenate([rng.choice(pos, size=(n_boot, pos.size)), rng.choice(neg, size=(n_boot, neg.size))],
                            axis=1)
    if resample_seeds and n_seeds > 1:
        seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    else:
        seeds = np.broadcast_to(np.arange(n_seeds), (n_boot, n_seeds))
    return images, seeds


def _replicates(n1: int, a: np.ndarray, b: np.ndarray, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Per replicate, the mean over its drawn seeds of AUROC(a_s) - AUROC(b_s) on its resampled images -> (B,)."""
    step = max(1, _CHUNK // (2 * a.size))
    out = np.empty(len(images))
    for start in range(0, len(images), step):
        part = slice(start, start + step)
        diff = _resampled_auroc(a, images[part], n1) - _resampled_auroc(b, images[part], n1)  # (S, chunk)
        out[part] = np.take_along_axis(diff.T, seeds[part], axis=1).mean(axis=1)
    return out


def _bootstrap(labels, a, b, n_boot: int, rng: np.random.Generator, resample_seeds: bool = True) -> np.ndarray:
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    images, seeds = _draw(rng, labels, a.shape[0], n_boot, resample_seeds)
    return _replicates(int(labels.sum()), a, b, images, seeds)


def _interval(delta: float, replicates: np.ndarray, level: float) -> dict:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return dict(delta=float(delta), low=float(low), high=float(high), se=float(np.std(replicates, ddof=1)),
                n_boot=len(replicates))


def paired_bootstrap(labels, scores_a, scores_b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     resample_seeds: bool = True) -> dict:
    """Stratified paired bootstrap of the seed-averaged ΔAUROC: labels (n,), scores_a and scores_b (S, n) or (n,),
    row s of a paired with row s of b -> dict(delta, low, high, se, n_boot), percentile interval at `level`.

    Each replicate resamples the images within each class (class counts kept) and, if resample_seeds and S > 1,
    the seed indices (the same for a and b); its statistic is the mean over drawn seeds of the AUROC difference.
    """
    labels, a, b = _paired_arrays(labels, scores_a, scores_b)
    replicates = _bootstrap(labels, a, b, n_boot, np.random.default_rng(seed), resample_seeds)
    return _interval(float(np.mean(_aurocs(labels, a) - _aurocs(labels, b))), replicates, level)


def auroc_interval(labels, scores, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """AUROC of one score vector with a stratified bootstrap percentile interval over the images: labels (n,),
    scores (n,) -> dict(auroc, low, high, se, n_boot)."""
    labels, a = _checked(labels, scores)
    baseline = np.zeros_like(a)  # AUROC 0.5 in every replicate: the difference is AUROC − 0.5
    replicates = _bootstrap(labels, a, baseline, n_boot, np.random.default_rng(seed), resample_seeds=False) + 0.5
    interval = _interval(float(_aurocs(labels, a)[0]), replicates, level)
    return {"auroc": interval.pop("delta"), **interval}


def _require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it needs {list(columns)}")
    if (frame["category"] == "mean").any():
        raise ValueError("'mean' is reserved for the mean over categories; no category may be called that")


def _seed_stats(category, variant, values) -> dict:
    values = np.asarray(values, dtype=float)
    return dict(category=category, variant=variant, mean=float(values.mean()) if values.size else np.nan,
                std=float(values.std(ddof=1)) if values.size > 1 else np.nan, n_seeds=int(values.size))


def seed_summary(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) over seeds of `value` (an AUROC in [0, 1]), in %.

    runs: one row per run with columns category, variant, seed, <value>. Returns columns category, variant, mean,
    std, n_seeds: a row per (category, variant), then per variant a row with category "mean": for each seed the
    mean over the variant's categories (only seeds present in all of them), then mean/std over those seeds.
    """
    _require_columns(runs, ("category", "variant", "seed", value), "runs")
    frame = runs[["category", "variant", "seed", value]].copy()
    twice = frame.duplicated(["category", "variant", "seed"])
    if twice.any():
        row = frame[twice].iloc[0]
        raise ValueError(f"run {row['category']}/{row['variant']}/seed {row['seed']} is listed more than once")
    values = frame[value].to_numpy(dtype=float)
    outside = ~((values >= 0) & (values <= 1))
    if outside.any():
        raise ValueError(f"{value!r} must be an AUROC in [0, 1] (seed_summary reports it in %), got "
                         f"{values[outside][0]}")
    frame["percent"] = 100 * values
    rows = [_seed_stats(category, variant, run["percent"])
            for (category, variant), run in frame.groupby(["category", "variant"], sort=False)]
    for variant, run in frame.groupby("variant", sort=False):
        per_seed = run.pivot(index="seed", columns="category", values="percent").dropna()
        rows.append(_seed_stats("mean", variant, per_seed.mean(axis=1)))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _runs(frame: pd.DataFrame, category) -> dict:
    """{(variant, seed): DataFrame of label, score indexed by path} for one category."""
    runs = {}
    for (variant, seed), run in frame.groupby(["variant", "seed"], sort=True):
        twice = run["path"].duplicated()
        if twice.any():
            raise ValueError(f"category {category!r}: run {variant}/seed {seed} scores image "
                             f"{run['path'][twice].iloc[0]!r} more than once")
        runs[(variant, seed)] = run.set_index("path")[["label", "score"]]
    return runs


def _aligned(runs: dict, category) -> tuple[np.ndarray, np.ndarray, list]:
    """Align every run of a category on the image paths -> labels (n,), scores (R, n), run keys (R,)."""
    keys = list(runs)
    reference = runs[keys[0]].sort_index()
    for key in keys[1:]:
        run = runs[key]
        for path, have, lack in ((reference.index.difference(run.index), keys[0], key),
                                 (run.index.difference(reference.index), key, keys[0])):
            if len(path):
                raise ValueError(f"category {category!r}: image {path[0]!r} is scored by run {have[0]}/seed "
                                 f"{have[1]} but not by run {lack[0]}/seed {lack[1]}; paired runs must score the "
                                 "same test images")
        disagree = run["label"].reindex(reference.index).to_numpy() != reference["label"].to_numpy()
        if disagree.any():
            raise ValueError(f"category {category!r}: runs {keys[0][0]}/seed {keys[0][1]} and {key[0]}/seed "
                             f"{key[1]} disagree on the label of image {reference.index[disagree][0]!r}")
    scores = np.stack([runs[key]["score"].reindex(reference.index).to_numpy(dtype=float) for key in keys])
    return reference["label"].to_numpy(), scores, keys


def _compare(category, variant, baseline, labels, scores, keys, n_boot, level, seed) -> tuple[dict, dict]:
    """One category, one variant against the baseline -> (its table row, the parts the 'mean' row pools)."""
    seeds = sorted({s for v, s in keys if v == variant} & {s for v, s in keys if v == baseline})
    if not seeds:
        raise ValueError(f"category {category!r}: variant {variant!r} shares no seed with the baseline "
                         f"{baseline!r}; nothing to pair")
    a = scores[[keys.index((variant, s)) for s in seeds]]
    b = scores[[keys.index((baseline, s)) for s in seeds]]
    labels, a, b = _paired_arrays(labels, a, b)
    per_seed = _aurocs(labels, a) - _aurocs(labels, b)
    rng = np.random.default_rng([seed, zlib.crc32(str(category).encode())])  # one stream per category
    replicates = _bootstrap(labels, a, b, n_boot, rng)
    interval = _interval(float(per_seed.mean()), replicates, level)
    n_seeds = len(seeds)
    c = np.concatenate([np.full(n_seeds, 1 / n_seeds), np.full(n_seeds, -1 / n_seeds)])
    variance = float(c @ delong(labels, np.concatenate([a, b]))[1] @ c)
    parts = dict(delta=interval["delta"], variance=variance, replicates=replicates, n_images=labels.size,
                 per_seed=dict(zip(seeds, per_seed)))
    return _row(category, variant, interval, per_seed, _normal_test(interval["delta"], variance)["p"],
                n_seeds, labels.size), parts


def _row(category, variant, interval: dict, per_seed, p: float, n_seeds: int, n_images: int) -> dict:
    per_seed = np.asarray(per_seed, dtype=float)
    return dict(category=category, variant=variant, delta=100 * interval["delta"],
                delta_std=100 * float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                ci_low=100 * interval["low"], ci_high=100 * interval["high"], p_delong=p, n_seeds=n_seeds,
                n_images=n_images, beyond_noise=bool(interval["low"] > 0 or interval["high"] < 0))


def _mean_row(variant, parts: list[dict], level: float) -> dict:
    """Category 'mean': the mean of the categories' deltas, their replicates averaged replicate by replicate
    (categories resampled independently), DeLong variance sum_c var_c / C^2."""
    count = len(parts)
    delta = float(np.mean([p["delta"] for p in parts]))
    interval = _interval(delta, np.mean([p["replicates"] for p in parts], axis=0), level)
    variance = sum(p["variance"] for p in parts) / count ** 2
    common = sorted(set.intersection(*(set(p["per_seed"]) for p in parts)))
    per_seed = [np.mean([p["per_seed"][s] for p in parts]) for s in common]
    return _row("mean", variant, interval, per_seed, _normal_test(delta, variance)["p"], len(common),
                sum(p["n_images"] for p in parts))


def paired_comparison(scores: pd.DataFrame, baseline: str = "differnet", *, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """ΔAUROC of every variant against the baseline, per category and for the mean over categories.

    scores: one row per test image per run, columns category, variant, seed, path, label, score. In each category
    the seeds run by both the variant and the baseline are paired, and images are aligned by path (ValueError if
    none is paired, or if the runs' images or labels differ). Returns columns category, variant, delta (mean over
    paired seeds of AUROC(variant) - AUROC(baseline), ×100), delta_std (std over seeds of the per-seed Δ, ×100,
    NaN for one seed), ci_low, ci_high (×100, stratified paired bootstrap, images and seeds resampled), p_delong
    (DeLong's two-sided p of the seed-averaged Δ, variance cᵀΣc over the 2S AUROCs), n_seeds, n_images,
    beyond_noise (the CI excludes 0). The CI covers test-image resampling and seed-to-seed spread; DeLong's p
    covers the test images only.

    Each variant also gets a row with category "mean" over its categories: delta is the mean of their deltas; the
    CI averages, replicate by replicate, bootstraps that resample within every category independently; p uses
    var = sum_c var_c / C^2 (categories independent); delta_std and n_seeds use the seeds paired in every category;
    n_images is the total. The bootstrap of a category draws from Generator([seed, crc32(category)]).
    """
    _require_columns(scores, ("category", "variant", "seed", "path", "label", "score"), "scores")
    rows, pooled = [], {}
    for category, frame in scores.groupby("category", sort=False):
        labels, matrix, keys = _aligned(_runs(frame, category), category)
        for variant in pd.unique(frame["variant"]):
            if variant == baseline:
                continue
            row, parts = _compare(category, variant, baseline, labels, matrix, keys, n_boot, level, seed)
            rows.append(row)
            pooled.setdefault(variant, []).append(parts)
    rows += [_mean_row(variant, parts, level) for variant, parts in pooled.items()]
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table.attrs.update(level=level, n_boot=n_boot, baseline=baseline)
    return table


def _p_text(p: float) -> str:
    return "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _delta_text(delta, low, high, beyond) -> str:
    if pd.isna(delta):
        return ""
    return f"{delta:+.1f} [{low:+.1f}, {high:+.1f}]" + ("*" if bool(beyond) else "")


def format_comparison(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """A printable table from seed_summary and paired_comparison: one row per (category, variant) of the summary,
    AUROC as "mean ± std" (%), ΔAUROC with its CI (a '*' where the CI excludes 0) and DeLong's p ("<0.001")."""
    merged = summary.merge(comparison, on=["category", "variant"], how="left", suffixes=("", "_pair"))
    order = {v: i for i, v in enumerate(("differnet", "se", "cbam"))}  # the baseline first, as in the paper
    merged = merged.assign(_mean_last=merged["category"] == "mean",
                           _variant=merged["variant"].map(lambda v: order.get(v, len(order))))
    merged = merged.sort_values(["_mean_last", "category", "_variant"], kind="stable").reset_index(drop=True)
    level = comparison.attrs.get("level", 0.95)
    return pd.DataFrame({
        "category": merged["category"],
        "variant": merged["variant"],
        "AUROC %": [f"{m:.1f}" + ("" if pd.isna(s) else f" ± {s:.1f}") if not pd.isna(m) else ""
                    for m, s in zip(merged["mean"], merged["std"])],
        f"ΔAUROC [{level:.0%} CI]": [_delta_text(*r) for r in zip(merged["delta"], merged["ci_low"],
                                                                     merged["ci_high"], merged["beyond_noise"])],
        "p (DeLong)": [_p_text(p) for p in merged["p_delong"]],
        "seeds": merged["n_seeds"],
    })
