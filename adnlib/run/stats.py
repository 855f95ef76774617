"""Paired comparisons of variants over seeds: mean ± std of AUROC, a seed-aware interval and test, DeLong's test.

Every run of a category scores the same test images, and runs with the same seed are paired (same flow
initialisation, data order, angles), so a variant is compared with the baseline image by image and seed by seed.
docs/protocol.md §9 gives the reasoning and the calibration (benchmarks/stats_calibration.py).

* DeLong (the fast algorithm of Sun & Xu 2014; midranks, so a tie counts 1/2): the AUROCs of k score vectors on the
  same images and their covariance Σ = S10/n1 + S01/n0, from the structural components V10 (one per anomalous image:
  the fraction of normal images it outscores) and V01 (one per normal image: the fraction of anomalous images that
  outscore it). A difference, or a difference averaged over seeds, is a linear combination c of the AUROCs with
  variance cᵀΣc. That variance covers the sampling of test images only: it treats the trained models as fixed.
* The seed-aware interval (`seed_interval`): the per-seed differences Δ_s of S seeds vary with the training run as
  well as with the test images, so the variance of their mean is s²/S (between seeds) + cᵀΣc (test images), with a
  t quantile whose degrees of freedom follow Welch–Satterthwaite (S − 1 when the seed part dominates, large when
  the test images dominate). A verdict ('beyond noise') needs at least MIN_SEEDS_FOR_VERDICT seeds; with fewer, the
  interval is DeLong's over the test images only, and no verdict is given.
* Several rows are several tests: the verdicts of the category rows are Holm-corrected over all category rows of
  the table, those of the 'mean' rows over the variants.
* The stratified bootstrap (`stratified_resamples`) resamples test images with replacement within each class
  (class counts kept); `auroc_interval`, `paired_bootstrap` and the pixel-level bootstrap of
  `adnlib.explain.localization_metrics` all draw from it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata, t

_CHUNK = 4_000_000  # resampled scores ranked at once by the bootstrap (bounds its memory)
_TINY = 1e-12  # a standard error or difference below this is zero (floating-point dust)
_DUST_VARIANCE = 1e-16  # a variance of AUROC differences below this is rounding (real ones are 1e-5 and more)
MIN_SEEDS_FOR_VERDICT = 3  # fewer seeds cannot estimate the between-seed variance (docs/protocol.md §9)
INTERVAL_SEEDS = "seeds + test images"
INTERVAL_IMAGES = "test images only"
COMPARISON_COLUMNS = ["category", "variant", "delta", "delta_std", "se", "df", "ci_low", "ci_high", "interval", "p",
                      "p_holm", "p_delong", "n_seeds", "n_images", "beyond_noise", "verdict"]
SUMMARY_COLUMNS = ["category", "variant", "mean", "std", "n_seeds"]
NO_ATTENTION = "differnet"  # the variant without attention blocks: its attention initialisation is moot


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


def stratified_resamples(rng: np.random.Generator, strata, n_boot: int) -> np.ndarray:
    """Indices (n_boot, n) of n_boot bootstrap resamples of n items, each stratum drawn with replacement from itself
    (its size kept): strata (n,) bool or int labels. The items of each stratum occupy a fixed block of columns
    (strata in sorted order), so that column j always holds an item of the same stratum."""
    strata = np.asarray(strata)
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    blocks = [np.flatnonzero(strata == value) for value in np.unique(strata)]
    return np.concatenate([rng.choice(block, size=(n_boot, block.size)) for block in blocks], axis=1)


def _images_first_anomalous(rng: np.random.Generator, labels: np.ndarray, n_boot: int) -> np.ndarray:
    """Stratified resamples (n_boot, n) with the n1 anomalous images in the first n1 columns."""
    return stratified_resamples(rng, ~labels, n_boot)  # False (anomalous) sorts first


def _replicates(n1: int, a: np.ndarray, b: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per replicate, the mean over seeds of AUROC(a_s) - AUROC(b_s) on its resampled images -> (B,)."""
    step = max(1, _CHUNK // (2 * a.size))
    out = np.empty(len(images))
    for start in range(0, len(images), step):
        part = slice(start, start + step)
        diff = _resampled_auroc(a, images[part], n1) - _resampled_auroc(b, images[part], n1)  # (S, chunk)
        out[part] = diff.mean(axis=0)
    return out


def _bootstrap(labels, a, b, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return _replicates(int(labels.sum()), a, b, _images_first_anomalous(rng, labels, n_boot))


def _interval(delta: float, replicates: np.ndarray, level: float) -> dict:
    _check_level(level)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return dict(delta=float(delta), low=float(low), high=float(high), se=float(np.std(replicates, ddof=1)),
                n_boot=len(replicates))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def paired_bootstrap(labels, scores_a, scores_b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Stratified paired bootstrap over the test images of the seed-averaged ΔAUROC: labels (n,), scores_a and
    scores_b (S, n) or (n,), row s of a paired with row s of b -> dict(delta, low, high, se, n_boot), percentile
    interval at `level`.

    Each replicate resamples the images within each class (class counts kept), the same images for a and b; the
    trained models are held fixed, so the interval covers test-image sampling only (`seed_interval` adds the
    between-seed part).
    """
    labels, a, b = _paired_arrays(labels, scores_a, scores_b)
    replicates = _bootstrap(labels, a, b, n_boot, np.random.default_rng(seed))
    return _interval(float(np.mean(_aurocs(labels, a) - _aurocs(labels, b))), replicates, level)


def auroc_interval(labels, scores, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """AUROC of one score vector with a stratified bootstrap percentile interval over the images: labels (n,),
    scores (n,) -> dict(auroc, low, high, se, n_boot)."""
    labels, a = _checked(labels, scores)
    baseline = np.zeros_like(a)  # AUROC 0.5 in every replicate: the difference is AUROC − 0.5
    replicates = _bootstrap(labels, a, baseline, n_boot, np.random.default_rng(seed)) + 0.5
    interval = _interval(float(_aurocs(labels, a)[0]), replicates, level)
    return {"auroc": interval.pop("delta"), **interval}


def seed_interval(per_seed, image_variance: float, level: float = 0.95,
                  min_seeds: int = MIN_SEEDS_FOR_VERDICT) -> dict:
    """Interval and test of the mean of per-seed differences: per_seed (S,) (one paired difference per training
    seed, same test images), image_variance = the test-image variance of their mean (DeLong's cᵀΣc) ->
    dict(delta, se, df, low, high, p, interval, verdict_possible).

    S >= min_seeds: se² = s²/S + image_variance (s² the sample variance of per_seed, ddof 1), df by
    Welch–Satterthwaite, (se²)² / ((s²/S)² / (S − 1)) (the image part has many degrees of freedom), interval
    delta ± t_df·se, p two-sided from t_df. Fewer seeds: se² = image_variance, a normal interval labelled
    "test images only", p NaN (no verdict: the between-seed variance is not estimated).
    """
    _check_level(level)
    per_seed = np.asarray(per_seed, dtype=float)
    n_seeds, delta = per_seed.size, float(per_seed.mean())
    image_variance = float(image_variance) if image_variance > _DUST_VARIANCE else 0.0
    if n_seeds < max(min_seeds, 2):
        se = float(np.sqrt(image_variance))
        half = float(norm.ppf((1 + level) / 2)) * se
        return dict(delta=delta, se=se, df=np.inf, low=delta - half, high=delta + half, p=np.nan,
                    interval=INTERVAL_IMAGES, verdict_possible=False)
    seed_variance = float(per_seed.var(ddof=1)) / n_seeds
    seed_variance = seed_variance if seed_variance > _DUST_VARIANCE else 0.0
    variance = seed_variance + image_variance
    df = np.inf if seed_variance <= 0 else variance ** 2 / (seed_variance ** 2 / (n_seeds - 1))
    se = float(np.sqrt(variance))
    half = float(t.ppf((1 + level) / 2, df)) * se
    if se < _TINY:
        p = 1.0 if abs(delta) < _TINY else 0.0
    else:
        p = float(2 * t.sf(abs(delta) / se, df))
    return dict(delta=delta, se=se, df=float(df), low=delta - half, high=delta + half, p=p, interval=INTERVAL_SEEDS,
                verdict_possible=True)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order; NaN stays NaN and is not counted): p (m,) -> (m,).

    The i-th smallest of the m p-values is multiplied by m − i + 1, made monotone, capped at 1 (Holm 1979)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


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

    runs: one row per run with columns category, variant, seed, <value> (and optionally attention_init). Returns
    columns category, variant, mean, std, n_seeds (and attention_init, if given: ValueError where one variant mixes
    several): a row per (category, variant), then per variant a row with category "mean": for each seed the
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
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if "attention_init" in runs.columns:
        summary["attention_init"] = [_attention_init(runs, c, v) for c, v in zip(summary["category"],
                                                                                  summary["variant"])]
    return summary


def _attention_init(runs: pd.DataFrame, category, variant) -> str:
    """The one attention initialisation of a variant's runs ('' for DifferNet); ValueError if they mix several,
    so that 'open' runs cannot pass for standard ones in a mean."""
    if variant == NO_ATTENTION:
        return ""
    rows = runs[(runs["variant"] == variant) & ((runs["category"] == category) | (category == "mean"))]
    values = sorted({str(v) for v in rows["attention_init"].fillna("standard")})
    if len(values) > 1:
        raise ValueError(f"variant {variant!r} mixes attention initialisations {values} in "
                         f"{'the categories' if category == 'mean' else repr(category)}; compare them separately")
    return values[0] if values else ""


def _aligned(frame: pd.DataFrame, category) -> tuple[np.ndarray, np.ndarray, list]:
    """Align every run of a category on the image paths -> labels (n,), scores (R, n), run keys (R,) in
    (variant, seed) order; ValueError naming the run and image where a run scores an image twice, where the runs'
    images differ, or where they disagree on a label."""
    twice = frame.duplicated(["variant", "seed", "path"])
    if twice.any():
        row = frame[twice].iloc[0]
        raise ValueError(f"category {category!r}: run {row['variant']}/seed {row['seed']} scores image "
                         f"{row['path']!r} more than once")
    groups = frame.groupby(["variant", "seed"], sort=True)
    keys = list(groups.groups)
    run = groups.ngroup().to_numpy()
    paths, column = np.unique(frame["path"].to_numpy(), return_inverse=True)
    scores = np.full((len(keys), paths.size), np.nan)
    labels = np.full((len(keys), paths.size), -1)
    filled = np.zeros((len(keys), paths.size), dtype=bool)
    scores[run, column] = frame["score"].to_numpy(dtype=float)
    labels[run, column] = frame["label"].to_numpy()
    filled[run, column] = True
    for k in range(1, len(keys)):
        for have, lack in ((0, k), (k, 0)):
            missing = filled[have] & ~filled[lack]
            if missing.any():
                raise ValueError(f"category {category!r}: image {paths[missing][0]!r} is scored by run "
                                 f"{keys[have][0]}/seed {keys[have][1]} but not by run {keys[lack][0]}/seed "
                                 f"{keys[lack][1]}; paired runs must score the same test images")
        disagree = labels[k] != labels[0]
        if disagree.any():
            raise ValueError(f"category {category!r}: runs {keys[0][0]}/seed {keys[0][1]} and {keys[k][0]}/seed "
                             f"{keys[k][1]} disagree on the label of image {paths[disagree][0]!r}")
    return labels[0], scores, keys


def _compare(category, variant, baseline, labels, scores, keys) -> dict:
    """One category, one variant against the baseline -> the paired parts: labels, a and b (S, n) of the seeds
    both ran (in seed order), the seeds."""
    seeds = sorted({s for v, s in keys if v == variant} & {s for v, s in keys if v == baseline})
    if not seeds:
        raise ValueError(f"category {category!r}: variant {variant!r} shares no seed with the baseline "
                         f"{baseline!r}; nothing to pair")
    a = scores[[keys.index((variant, s)) for s in seeds]]
    b = scores[[keys.index((baseline, s)) for s in seeds]]
    labels, a, b = _paired_arrays(labels, a, b)
    return dict(labels=labels, a=a, b=b, seeds=seeds)


def _seed_parts(part: dict, seeds: list) -> tuple[np.ndarray, float]:
    """(per-seed ΔAUROC (S,), DeLong's variance of their mean over the test images) for `seeds` of one part."""
    rows = [part["seeds"].index(s) for s in seeds]
    a, b, labels = part["a"][rows], part["b"][rows], part["labels"]
    n_seeds = len(rows)
    c = np.concatenate([np.full(n_seeds, 1 / n_seeds), np.full(n_seeds, -1 / n_seeds)])
    variance = float(c @ delong(labels, np.concatenate([a, b]))[1] @ c)
    return _aurocs(labels, a) - _aurocs(labels, b), variance


def _row(category, variant, parts: list[dict], level: float) -> dict:
    """The table row of one variant over `parts` (one per category; several for the 'mean' row): the seeds all of
    them ran, the per-seed Δ averaged over the parts, the image variance sum_c var_c / C²."""
    seeds = sorted(set.intersection(*(set(p["seeds"]) for p in parts)))
    if not seeds:
        raise ValueError(f"variant {variant!r}: no seed is paired in every category; the mean over categories "
                         "needs at least one")
    pieces = [_seed_parts(p, seeds) for p in parts]
    per_seed = np.mean([d for d, _ in pieces], axis=0)
    image_variance = sum(v for _, v in pieces) / len(pieces) ** 2
    result = seed_interval(per_seed, image_variance, level)
    p_delong = _normal_test(result["delta"], image_variance)["p"]
    return dict(category=category, variant=variant, delta=100 * result["delta"],
                delta_std=100 * float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                se=100 * result["se"], df=result["df"], ci_low=100 * result["low"], ci_high=100 * result["high"],
                interval=result["interval"], p=result["p"], p_holm=np.nan, p_delong=p_delong, n_seeds=len(seeds),
                n_images=sum(int(p["labels"].size) for p in parts), beyond_noise=False, verdict="")


def _verdicts(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """Holm over the category rows, Holm over the 'mean' rows; '*' (beyond_noise) where the adjusted p < 1 − level."""
    table = table.copy()
    for family in (table["category"] != "mean", table["category"] == "mean"):
        table.loc[family, "p_holm"] = holm(table.loc[family, "p"].to_numpy(dtype=float))
    beyond = table["p_holm"].to_numpy(dtype=float) < 1 - level
    table["beyond_noise"] = beyond
    table["verdict"] = np.where(table["p"].isna(), f"no verdict (needs {MIN_SEEDS_FOR_VERDICT} seeds)",
                                np.where(beyond, "beyond noise", "within noise"))
    return table


def paired_comparison(scores: pd.DataFrame, baseline: str = "differnet", *, level: float = 0.95) -> pd.DataFrame:
    """ΔAUROC of every variant against the baseline, per category and for the mean over categories.

    scores: one row per test image per run, columns category, variant, seed, path, label, score. In each category
    the seeds run by both the variant and the baseline are paired, and images are aligned by path (ValueError if
    none is paired, or if the runs' images or labels differ). Returns one row per (category, variant), then per
    variant a row with category "mean" (the mean over its categories, on the seeds paired in all of them), with
    columns (differences ×100, in AUROC points):

    delta: mean over paired seeds of AUROC(variant) − AUROC(baseline); delta_std: std over seeds of the per-seed Δ;
    se, df, ci_low, ci_high, interval, p: `seed_interval` ("seeds + test images" with >= 3 seeds, else
    "test images only" and p NaN); p_holm: p Holm-corrected over the category rows (over the mean rows for those);
    p_delong: DeLong's two-sided p of the seed-averaged Δ, conditional on the trained models (test images only);
    n_seeds, n_images; beyond_noise: p_holm < 1 − level; verdict: "beyond noise", "within noise" or "no verdict".
    """
    _require_columns(scores, ("category", "variant", "seed", "path", "label", "score"), "scores")
    _check_level(level)
    rows, pooled = [], {}
    for category, frame in scores.groupby("category", sort=False):
        labels, matrix, keys = _aligned(frame, category)
        for variant in pd.unique(frame["variant"]):
            if variant == baseline:
                continue
            part = _compare(category, variant, baseline, labels, matrix, keys)
            rows.append(_row(category, variant, [part], level))
            pooled.setdefault(variant, []).append(part)
    rows += [_row("mean", variant, parts, level) for variant, parts in pooled.items()]
    table = _verdicts(pd.DataFrame(rows, columns=COMPARISON_COLUMNS), level)
    table.attrs.update(level=level, baseline=baseline)
    return table


def _p_text(p: float) -> str:
    return "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _delta_text(delta, low, high, beyond) -> str:
    if pd.isna(delta):
        return ""
    return f"{delta:+.1f} [{low:+.1f}, {high:+.1f}]" + ("*" if bool(beyond) else "")


def comparison_footer(comparison: pd.DataFrame) -> str:
    """The lines that say how to read `format_comparison`'s table (interval kinds, '*', Holm, DeLong's p)."""
    level = comparison.attrs.get("level", 0.95)
    lines = [f"ΔAUROC: variant − {comparison.attrs.get('baseline', 'differnet')} in AUROC points, mean over paired "
             f"seeds, with its {level:.0%} interval. With >= {MIN_SEEDS_FOR_VERDICT} seeds the interval covers "
             "seed-to-seed training noise and the test images (t, Welch–Satterthwaite df); with fewer it covers "
             "the test images only ('images' in the interval column) and gives no verdict."]
    if "mean" in set(comparison["category"]):
        lines.append(f"* = beyond noise: p (seeds) < {1 - level:.2g} after Holm's correction over all category rows "
                     "(and, separately, over the variants' mean rows).")
    lines.append("p (DeLong | models): test images only, conditional on these trained models; not a verdict.")
    lines.append("docs/protocol.md §9; calibration: benchmarks/README.md.")
    return "\n".join(lines)


def format_comparison(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """A printable table from seed_summary and paired_comparison: one row per (category, variant) of the summary,
    AUROC as "mean ± std" (%), ΔAUROC with its interval (a '*' where beyond noise after Holm), the interval's
    kind, the seed-aware p (Holm-adjusted), DeLong's conditional p, the seeds and the attention initialisation.
    `comparison_footer` says how to read it."""
    merged = summary.merge(comparison, on=["category", "variant"], how="left", suffixes=("", "_pair"))
    order = {v: i for i, v in enumerate(("differnet", "se", "cbam"))}  # the baseline first, as in the paper
    merged = merged.assign(_mean_last=merged["category"] == "mean",
                           _variant=merged["variant"].map(lambda v: order.get(v, len(order))))
    merged = merged.sort_values(["_mean_last", "category", "_variant"], kind="stable").reset_index(drop=True)
    level = comparison.attrs.get("level", 0.95)
    kinds = {INTERVAL_SEEDS: "seeds+images", INTERVAL_IMAGES: "images"}
    table = pd.DataFrame({
        "category": merged["category"],
        "variant": merged["variant"],
        "AUROC %": [f"{m:.1f}" + ("" if pd.isna(s) else f" ± {s:.1f}") if not pd.isna(m) else ""
                    for m, s in zip(merged["mean"], merged["std"])],
        f"ΔAUROC [{level:.0%} CI]": [_delta_text(*r) for r in zip(merged["delta"], merged["ci_low"],
                                                                     merged["ci_high"], merged["beyond_noise"])],
        "interval": [kinds.get(k, "") if isinstance(k, str) else "" for k in merged["interval"]],
        "p (seeds, Holm)": [_p_text(p) for p in merged["p_holm"]],
        "p (DeLong | models)": [_p_text(p) for p in merged["p_delong"]],
        "seeds": merged["n_seeds"],
    })
    if "attention_init" in merged.columns:
        table["attention init"] = merged["attention_init"].fillna("")
    return table
