"""Paired comparisons of variants over seeds: mean ± std of AUROC, the Obuchowski–Rockette–Hillis (ORH) analysis
of multi-reader multi-case (MRMC) designs, DeLong's and the jackknife's AUROC covariances.

Every run of a category scores the same test images, and runs with the same seed are paired (same flow
initialisation, data order, angles): medical imaging's MRMC design, with the seeds as the readers, the test images
as the cases and the variant and the baseline as the two tests. docs/protocol.md §9 gives the reasoning, the
references and the calibration (benchmarks/stats_calibration.py).

* DeLong (the fast algorithm of Sun & Xu 2014; midranks, so a tie counts 1/2): the AUROCs of k score vectors on the
  same images and their covariance Σ = S10/n1 + S01/n0, from the structural components V10 (one per anomalous image:
  the fraction of normal images it outscores) and V01 (one per normal image: the fraction of anomalous images that
  outscore it). `jackknife`: the same covariance estimated by leaving out one image at a time. Both cover the
  sampling of test images only: they treat the trained models as fixed.
* ORH (`orh_analysis`; Obuchowski & Rockette 1995, Hillis 2007, Hillis, Berbaum & Metz 2008): with J paired seeds,
  the AUROCs θ_ij (i = variant, baseline), MS(T) and MS(T×R) of their two-way table and the error covariances Var,
  Cov1 (same seed, other test), Cov2 (other seed, same test), Cov3 (other seed, other test) averaged from Σ, the
  random-seeds verdict is F = MS(T) / [MS(T×R) + J·max(Cov2 − Cov3, 0)] on (1, ddf_H) degrees of freedom, Hillis's
  ddf_H = [MS(T×R) + J·max(Cov2 − Cov3, 0)]² / (MS(T×R)² / (J − 1)), and the interval Δ ± t_{ddf_H}·√(2/J·[MS(T×R)
  + J·max(Cov2 − Cov3, 0)]). The fixed-seeds ("these seeds only", FRRC) result has variance 2/J·(Var − Cov1 +
  (J − 1)·max(Cov2 − Cov3, 0)) and a normal reference. A verdict ('beyond noise') needs at least
  MIN_SEEDS_FOR_VERDICT seeds; with fewer, the row shows the fixed-seeds interval, labelled "test images only", and
  no verdict.
* The mean over categories: per (test, seed) the mean AUROC over the categories is the figure of merit; its error
  covariances are Σ_c Σ^(c) / C² (each category its own, independent test images), MS(T) and MS(T×R) come from the
  averaged AUROCs.
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
_DUST_VARIANCE = 1e-16  # a variance (or mean square) of AUROCs below this is rounding (real ones are 1e-6 and more)
MIN_SEEDS_FOR_VERDICT = 3  # fewer seeds cannot estimate the between-seed variance (docs/protocol.md §9)
COVARIANCE_METHODS = ("delong", "jackknife")  # how the AUROCs' error covariances over the test images are estimated
INTERVAL_SEEDS = "seeds + test images (ORH)"
INTERVAL_IMAGES = "test images only"
COMPARISON_COLUMNS = ["category", "variant", "delta", "delta_std", "se", "df", "ci_low", "ci_high", "interval", "p",
                      "p_holm", "p_delong", "n_seeds", "n_images", "beyond_noise", "verdict", "F", "covariance",
                      "se_frrc", "ci_low_frrc", "ci_high_frrc", "p_frrc"]
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


def _structural_components(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels (n,) 0/1, scores (k, n) or (n,) -> V10 (k, n1) and V01 (k, n0), DeLong's structural components (ties
    1/2), and labels as bool (n,); ValueError below 2 images of a class (no covariance can be estimated)."""
    labels, scores = _checked(labels, scores)
    pos, neg = scores[:, labels], scores[:, ~labels]
    n1, n0 = pos.shape[1], neg.shape[1]
    if min(n1, n0) < 2:
        raise ValueError(f"an AUROC covariance needs at least 2 images of each class, got {n1} anomalous and "
                         f"{n0} normal")
    both = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (both[:, :n1] - rankdata(pos, axis=1)) / n0  # per anomalous image: normal images below it (ties 1/2)
    v01 = 1.0 - (both[:, n1:] - rankdata(neg, axis=1)) / n1  # per normal image: anomalous images above it
    return v10, v01, labels


def delong(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """DeLong AUROCs and their covariance: labels (n,) 0/1, scores (k, n) or (n,) -> aucs (k,), covariance (k, k).

    Fast DeLong (Sun & Xu 2014) with midranks: ties between an anomalous and a normal image count 1/2.
    """
    v10, v01, _ = _structural_components(labels, scores)
    covariance = np.atleast_2d(np.cov(v10)) / v10.shape[1] + np.atleast_2d(np.cov(v01)) / v01.shape[1]
    return v10.mean(axis=1), covariance


def jackknife(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and their jackknife covariance over the images: labels (n,) 0/1, scores (k, n) or (n,) -> aucs (k,),
    covariance (k, k).

    Each of the n images is left out once (both classes pooled, as OR-DBM MRMC, RJafroc and MRMCaov do), and the
    covariance of the n leave-one-out AUROCs θ_(i) is (n − 1)/n · Σ_i (θ_(i) − θ̄)(θ_(i) − θ̄)ᵀ (Efron 1982): the
    factor that reproduces those programs' Van Dyke analysis (tests/test_stats.py). The leave-one-out AUROCs come in
    closed form from the structural components: without anomalous image i (n1·AUC − V10_i)/(n1 − 1), without
    normal image j (n0·AUC − V01_j)/(n0 − 1).
    """
    v10, v01, _ = _structural_components(labels, scores)
    n1, n0 = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)
    left_out = np.concatenate([(n1 * aucs[:, None] - v10) / (n1 - 1), (n0 * aucs[:, None] - v01) / (n0 - 1)], axis=1)
    centred = left_out - left_out.mean(axis=1, keepdims=True)  # (k, n)
    n = n1 + n0
    return aucs, (n - 1) / n * (centred @ centred.T)


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
    trained models are held fixed, so the interval covers test-image sampling only (`paired_comparison`'s ORH
    analysis adds the between-seed part).
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


def or_covariances(covariance, n_readers: int) -> dict:
    """Obuchowski–Rockette error variance and covariances from the covariance (tJ, tJ) of t tests' AUROCs by J
    readers, ordered test by test (row i·J + j = test i, reader j) -> dict(var, cov1, cov2, cov3), in AUROC².

    var: mean of the diagonal; cov1: mean over pairs of the same reader in different tests; cov2: different readers,
    the same test; cov3: different readers, different tests (Obuchowski & Rockette 1995). With one reader there is no
    pair for cov2 and cov3: they are 0, so that J·max(Cov2 − Cov3, 0) and (J − 1)·max(Cov2 − Cov3, 0) vanish.
    """
    covariance = np.asarray(covariance, dtype=float)
    size = covariance.shape[0]
    if covariance.shape != (size, size) or n_readers < 1 or size % n_readers or size // n_readers < 2:
        raise ValueError(f"covariance must be (t·J, t·J) with t >= 2 tests of J = {n_readers} readers, got shape "
                         f"{covariance.shape}")
    test, reader = np.divmod(np.arange(size), n_readers)
    same_test, same_reader = test[:, None] == test[None], reader[:, None] == reader[None]
    others = same_test & ~same_reader
    return dict(var=float(np.diag(covariance).mean()), cov1=float(covariance[~same_test & same_reader].mean()),
                cov2=float(covariance[others].mean()) if others.any() else 0.0,
                cov3=float(covariance[~same_test & ~same_reader].mean()) if others.any() else 0.0)


def _mean_squares(theta: np.ndarray) -> tuple[float, float]:
    """MS(T) and MS(T×R) of the two-way table theta (t tests, J readers) of AUROCs; MS(T×R) NaN for one reader."""
    n_tests, n_readers = theta.shape
    ms_t = n_readers * float(((theta.mean(axis=1) - theta.mean()) ** 2).sum()) / (n_tests - 1)
    if n_readers < 2:
        return ms_t, np.nan
    residual = theta - theta.mean(axis=1, keepdims=True) - theta.mean(axis=0, keepdims=True) + theta.mean()
    return ms_t, float((residual ** 2).sum()) / ((n_tests - 1) * (n_readers - 1))


def _dust(value: float) -> float:
    """A variance, mean square or covariance gap below _DUST_VARIANCE is 0: rounding, not a measured spread."""
    return 0.0 if value < _DUST_VARIANCE else float(value)


def _random_readers(delta: float, ms_t: float, ms_tr: float, gap: float, n_readers: int, level: float) -> dict:
    """ORH random-readers, random-cases (RRRC) test and interval of delta (two tests) -> dict(F, df, se, low, high,
    p); degenerate cases in `orh_analysis`'s docstring."""
    if n_readers < 2:
        return dict(F=np.nan, df=np.nan, se=np.nan, low=np.nan, high=np.nan, p=np.nan)
    ms_tr = _dust(ms_tr)
    denominator = ms_tr + n_readers * gap
    if denominator <= 0:  # every seed gave the same Δ and the images add no measurable spread
        no_difference = abs(delta) < _TINY
        return dict(F=0.0 if no_difference else np.inf, df=np.inf, se=0.0, low=delta, high=delta,
                    p=1.0 if no_difference else 0.0)
    df = np.inf if ms_tr == 0 else denominator ** 2 / (ms_tr ** 2 / (n_readers - 1))
    se = float(np.sqrt(2 / n_readers * denominator))
    half = float(t.ppf((1 + level) / 2, df)) * se
    # F = MS(T)/denominator = (Δ/se)² on (1, ddf_H): the two-sided t test on ddf_H is the same test (and takes df = inf)
    return dict(F=ms_t / denominator, df=float(df), se=se, low=delta - half, high=delta + half,
                p=float(2 * t.sf(abs(delta) / se, df)))


def _fixed_readers(delta: float, covariances: dict, gap: float, n_readers: int, level: float) -> dict:
    """ORH fixed-readers, random-cases (FRRC, "these seeds only") test and interval of delta -> dict(se_frrc,
    low_frrc, high_frrc, chi2_frrc, p_frrc): variance 2/J·(Var − Cov1 + (J − 1)·max(Cov2 − Cov3, 0)), normal."""
    variance = _dust(2 / n_readers * (covariances["var"] - covariances["cov1"] + (n_readers - 1) * gap))
    test = _normal_test(delta, variance)
    half = float(norm.ppf((1 + level) / 2)) * test["se"]
    return dict(se_frrc=test["se"], low_frrc=delta - half, high_frrc=delta + half, chi2_frrc=test["z"] ** 2,
                p_frrc=test["p"])


def orh_analysis(theta, covariance, level: float = 0.95) -> dict:
    """The Obuchowski–Rockette–Hillis analysis of two tests read by the same J readers on the same cases.

    theta (2, J): the AUROCs, row 0 the variant, row 1 the baseline, column j reader (seed) j; covariance (2J, 2J):
    their error covariance over the cases (`delong` or `jackknife` of the 2J score rows, in that order) -> dict:
    delta = mean(θ_0·) − mean(θ_1·); ms_t, ms_tr; var, cov1, cov2, cov3 (`or_covariances`); the random-readers
    (RRRC) F, df (Hillis's ddf_H), se, low, high, p (NaN with one reader); the fixed-readers (FRRC) se_frrc,
    low_frrc, high_frrc, chi2_frrc, p_frrc. Units: those of theta (AUROC, not points).

    Degenerate cases, without NaN: Cov2 − Cov3 <= 0 counts as 0 (Hillis 2007's max); an MS(T×R) of 0 (every seed
    the same Δ) gives ddf_H = inf (the denominator is then the covariance term alone, estimated from the many cases);
    if the whole denominator MS(T×R) + J·max(Cov2 − Cov3, 0) is 0, F = 0, p = 1 and se = 0 where Δ = 0 (identical
    runs), else F = inf and p = 0 (a difference with no measurable spread). A fixed-readers variance of 0 likewise
    gives p = 1 (Δ = 0) or 0.
    """
    _check_level(level)
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2 or theta.shape[0] != 2:
        raise ValueError(f"theta must have shape (2, J): the variant's and the baseline's AUROCs, got {theta.shape}")
    n_readers = theta.shape[1]
    covariances = or_covariances(covariance, n_readers)
    gap = _dust(covariances["cov2"] - covariances["cov3"])
    delta = float(theta[0].mean() - theta[1].mean())
    ms_t, ms_tr = _mean_squares(theta)
    return dict(delta=delta, ms_t=ms_t, ms_tr=ms_tr, **covariances,
                **_random_readers(delta, ms_t, ms_tr, gap, n_readers, level),
                **_fixed_readers(delta, covariances, gap, n_readers, level))


def auroc_covariance(labels, scores, method: str = "delong") -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their covariance (k, k) over the images by `method` ("delong" or "jackknife")."""
    if method not in COVARIANCE_METHODS:
        raise ValueError(f"covariance must be one of {COVARIANCE_METHODS}, got {method!r}")
    return (delong if method == "delong" else jackknife)(labels, scores)


def orh_test(labels, scores_a, scores_b, *, covariance: str = "delong", level: float = 0.95) -> dict:
    """ORH comparison of paired runs on one test set: labels (n,), scores_a (variant) and scores_b (baseline) (J, n),
    row j of a paired with row j of b (the same seed) -> `orh_analysis`'s dict (AUROC units)."""
    labels, a, b = _paired_arrays(labels, scores_a, scores_b)
    aucs, matrix = auroc_covariance(labels, np.concatenate([a, b]), covariance)
    return orh_analysis(aucs.reshape(2, -1), matrix, level)


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


def _check_comparable(frame: pd.DataFrame, what: str) -> None:
    """RunMismatchError when the table carries what its runs used (PROVENANCE_COLUMNS: collect_grid and
    collect_scores add them) and those differ: runs of another protocol, backbone or data set are never pooled."""
    from adnlib.run.identity import check_comparable
    check_comparable(frame, what)


def _seed_stats(category, variant, values) -> dict:
    values = np.asarray(values, dtype=float)
    return dict(category=category, variant=variant, mean=float(values.mean()) if values.size else np.nan,
                std=float(values.std(ddof=1)) if values.size > 1 else np.nan, n_seeds=int(values.size))


def seed_summary(runs: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) over seeds of `value` (an AUROC in [0, 1]), in %.

    runs: one row per run with columns category, variant, seed, <value> (and optionally attention_init and the
    provenance columns protocol, backbone, data: runs that differ there are refused, RunMismatchError). Returns
    columns category, variant, mean, std, n_seeds (and attention_init, if given: ValueError where one variant mixes
    several): a row per (category, variant), then per variant a row with category "mean": for each seed the
    mean over the variant's categories (only seeds present in all of them), then mean/std over those seeds.
    """
    _require_columns(runs, ("category", "variant", "seed", value), "runs")
    _check_comparable(runs, "seed summary")
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


def image_key(paths: pd.Series, category: str | None = None) -> pd.Series:
    """The one definition of "the same test image" when runs are paired: its path inside the test split folder
    ("good/000.png", "crack/a/001.png" in a nested tree; the key its test rotations are drawn with), whatever root
    and separators the machine that scored it used. The split folder is the last `<category>/test` where a category
    is given and the path has one, else the last `test` folder (so a folder named `test` inside the split shortens
    the key: at worst runs are refused as scoring an image twice, never paired on other images); a path without
    one keeps its last two parts. That two runs read the same images is the data fingerprint's job (identity
    checks), not this key's."""
    def after_split(parts: list[str], anchored: bool) -> str | None:
        for i in range(len(parts) - 2, -1, -1):
            if parts[i] == "test" and (not anchored or (i > 0 and parts[i - 1] == str(category))):
                return "/".join(parts[i + 1:])
        return None

    def key(path: str) -> str:
        parts = [part for part in path.replace("\\", "/").split("/") if part]
        return ((category is not None and after_split(parts, True)) or after_split(parts, False)
                or "/".join(parts[-2:]))
    return paths.astype(str).map(key)


def _aligned(frame: pd.DataFrame, category) -> tuple[np.ndarray, np.ndarray, list]:
    """Align every run of a category on its images (`image_key`) -> labels (n,), scores (R, n), run keys (R,) in
    (variant, seed) order; ValueError naming the run and image where a run scores an image twice, where the runs'
    images differ, or where they disagree on a label."""
    frame = frame.assign(path=image_key(frame["path"], category))
    twice = frame.duplicated(["variant", "seed", "path"])
    if twice.any():
        row = frame[twice].iloc[0]
        raise ValueError(f"category {category!r}: run {row['variant']}/seed {row['seed']} scores image "
                         f"{row['path']!r} more than once (or two of its files have that path inside the split)")
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


def _pair_covariances(part: dict, seeds: list, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For `seeds` of one part (category): the AUROCs (2J,) of the variant's then the baseline's runs, their
    covariance (2J, 2J) by `method`, and DeLong's covariance (for the conditional p; the same array when method is
    "delong")."""
    rows = [part["seeds"].index(s) for s in seeds]
    scores = np.concatenate([part["a"][rows], part["b"][rows]])
    aucs, matrix = auroc_covariance(part["labels"], scores, method)
    return aucs, matrix, matrix if method == "delong" else delong(part["labels"], scores)[1]


def _pooled(parts: list[dict], seeds: list, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The figure of merit over C parts (categories): per (test, seed) the mean AUROC (2, J), and its covariances
    Σ_c Σ^(c) / C² (method's, DeLong's): each category has its own, independent test images."""
    pieces = [_pair_covariances(p, seeds, method) for p in parts]
    count = len(pieces)
    theta = np.mean([aucs for aucs, _, _ in pieces], axis=0).reshape(2, len(seeds))
    return theta, sum(m for _, m, _ in pieces) / count ** 2, sum(d for _, _, d in pieces) / count ** 2


def _row(category, variant, parts: list[dict], level: float, method: str) -> dict:
    """The table row of one variant over `parts` (one per category; several for the 'mean' row), on the seeds all
    of them ran: ORH with random seeds (>= MIN_SEEDS_FOR_VERDICT seeds) or the fixed-seeds interval (fewer)."""
    seeds = sorted(set.intersection(*(set(p["seeds"]) for p in parts)))
    if not seeds:
        raise ValueError(f"variant {variant!r}: no seed is paired in every category; the mean over categories "
                         "needs at least one")
    theta, matrix, delong_matrix = _pooled(parts, seeds, method)
    result = orh_analysis(theta, matrix, level)
    per_seed = theta[0] - theta[1]
    contrast = np.concatenate([np.full(len(seeds), 1 / len(seeds)), np.full(len(seeds), -1 / len(seeds))])
    p_delong = _normal_test(result["delta"], _dust(float(contrast @ delong_matrix @ contrast)))["p"]
    verdict = len(seeds) >= MIN_SEEDS_FOR_VERDICT
    shown = (dict(se=result["se"], df=result["df"], low=result["low"], high=result["high"], p=result["p"],
                  F=result["F"], interval=INTERVAL_SEEDS) if verdict else
             dict(se=result["se_frrc"], df=np.inf, low=result["low_frrc"], high=result["high_frrc"], p=np.nan,
                  F=np.nan, interval=INTERVAL_IMAGES))
    return dict(category=category, variant=variant, delta=100 * result["delta"],
                delta_std=100 * float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                se=100 * shown["se"], df=shown["df"], ci_low=100 * shown["low"], ci_high=100 * shown["high"],
                interval=shown["interval"], p=shown["p"], p_holm=np.nan, p_delong=p_delong, n_seeds=len(seeds),
                n_images=sum(int(p["labels"].size) for p in parts), beyond_noise=False, verdict="", F=shown["F"],
                covariance=method, se_frrc=100 * result["se_frrc"], ci_low_frrc=100 * result["low_frrc"],
                ci_high_frrc=100 * result["high_frrc"], p_frrc=result["p_frrc"])


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


def paired_comparison(scores: pd.DataFrame, baseline: str = "differnet", *, level: float = 0.95,
                      covariance: str = "delong") -> pd.DataFrame:
    """ΔAUROC of every variant against the baseline, per category and for the mean over categories: the ORH
    analysis of the paired seeds (readers) and test images (cases), docs/protocol.md §9.

    scores: one row per test image per run, columns category, variant, seed, path, label, score (and optionally the
    provenance columns protocol, backbone, data: runs that differ there are refused, RunMismatchError). In each category
    the seeds run by both the variant and the baseline are paired, and images are aligned by `image_key`, their
    path inside the test split (ValueError if none is paired, or if the runs' images or labels differ).
    covariance: "delong" (DeLong's structural components) or "jackknife" (leave one image out), the estimate of the
    AUROCs' error covariances. Returns one row per
    (category, variant), then per variant a row with category "mean" (per seed the mean AUROC over its categories,
    on the seeds paired in all of them), with columns (differences ×100, in AUROC points):

    delta: mean over paired seeds of AUROC(variant) − AUROC(baseline); delta_std: std over seeds of the per-seed Δ;
    se, df, ci_low, ci_high, p, F, interval: with >= 3 seeds ORH with random seeds and random images (df = Hillis's
    ddf_H, interval "seeds + test images (ORH)"); with fewer the fixed-seeds interval (normal, df inf), "test images
    only", p and F NaN; p_holm: p Holm-corrected over the category rows (over the mean rows for those); p_delong:
    DeLong's two-sided p of the seed-averaged Δ, conditional on the trained models (test images only); n_seeds,
    n_images; beyond_noise: p_holm < 1 − level; verdict: "beyond noise", "within noise" or "no verdict";
    covariance: the method; se_frrc, ci_low_frrc, ci_high_frrc, p_frrc: ORH with fixed seeds ("these seeds only",
    not Holm-corrected, never a verdict).
    """
    _require_columns(scores, ("category", "variant", "seed", "path", "label", "score"), "scores")
    _check_comparable(scores, "paired comparison")
    _check_level(level)
    if covariance not in COVARIANCE_METHODS:
        raise ValueError(f"covariance must be one of {COVARIANCE_METHODS}, got {covariance!r}")
    rows, pooled = [], {}
    for category, frame in scores.groupby("category", sort=False):
        labels, matrix, keys = _aligned(frame, category)
        for variant in pd.unique(frame["variant"]):
            if variant == baseline:
                continue
            part = _compare(category, variant, baseline, labels, matrix, keys)
            rows.append(_row(category, variant, [part], level, covariance))
            pooled.setdefault(variant, []).append(part)
    rows += [_row("mean", variant, parts, level, covariance) for variant, parts in pooled.items()]
    table = _verdicts(pd.DataFrame(rows, columns=COMPARISON_COLUMNS), level)
    table.attrs.update(level=level, baseline=baseline, covariance=covariance)
    return table


def _p_text(p: float) -> str:
    return "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _delta_text(delta, low, high, beyond) -> str:
    if pd.isna(delta):
        return ""
    return f"{delta:+.1f} [{low:+.1f}, {high:+.1f}]" + ("*" if bool(beyond) else "")


def comparison_footer(comparison: pd.DataFrame) -> str:
    """The lines that say how to read `format_comparison`'s table (the method, interval kinds, '*', Holm, the
    fixed-seeds result, DeLong's p)."""
    level = comparison.attrs.get("level", 0.95)
    method = {"delong": "DeLong", "jackknife": "the jackknife over images"}.get(
        comparison.attrs.get("covariance", "delong"), "DeLong")
    lines = [f"ΔAUROC: variant − {comparison.attrs.get('baseline', 'differnet')} in AUROC points, mean over paired "
             f"seeds, with its {level:.0%} interval. With >= {MIN_SEEDS_FOR_VERDICT} seeds: the Obuchowski–Rockette "
             "analysis with Hillis's degrees of freedom (ORH), seeds as random readers and test images as random "
             f"cases, so the interval covers seed-to-seed training noise and the test images (AUROC covariances over "
             f"the images by {method}); with fewer it covers the test images only ('images' in the interval column: "
             "ORH with these seeds fixed) and gives no verdict."]
    if "mean" in set(comparison["category"]):
        lines.append(f"`*` = beyond noise: p (ORH) < {1 - level:.2g} after Holm's correction over all category rows "
                     "(and, separately, over the variants' mean rows; a mean row's figure of merit is the per-seed "
                     "mean AUROC over the categories).")
    lines.append("p (DeLong | models): test images only, conditional on these trained models; not a verdict. The "
                 "fixed-seeds ORH result ('these seeds only': fixed readers, random cases) is in the comparison's "
                 "columns ending in _frrc.")
    lines.append("docs/protocol.md §9; calibration: benchmarks/README.md.")
    return "\n".join(lines)


def format_comparison(summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """A printable table from seed_summary and paired_comparison: one row per (category, variant) of the summary,
    AUROC as "mean ± std" (%), ΔAUROC with its interval (a '*' where beyond noise after Holm), the interval's
    kind, ORH's p (random seeds and images, Holm-adjusted), DeLong's conditional p, the seeds and the attention
    initialisation.
    `comparison_footer` says how to read it."""
    merged = summary.merge(comparison, on=["category", "variant"], how="left", suffixes=("", "_pair"))
    order = {v: i for i, v in enumerate(("differnet", "se", "cbam"))}  # the baseline first, as in the paper
    merged = merged.assign(_mean_last=merged["category"] == "mean",
                           _variant=merged["variant"].map(lambda v: order.get(v, len(order))))
    merged = merged.sort_values(["_mean_last", "category", "_variant"], kind="stable").reset_index(drop=True)
    level = comparison.attrs.get("level", 0.95)
    kinds = {INTERVAL_SEEDS: "seeds+images (ORH)", INTERVAL_IMAGES: "images"}
    table = pd.DataFrame({
        "category": merged["category"],
        "variant": merged["variant"],
        "AUROC %": [f"{m:.1f}" + ("" if pd.isna(s) else f" ± {s:.1f}") if not pd.isna(m) else ""
                    for m, s in zip(merged["mean"], merged["std"])],
        f"ΔAUROC [{level:.0%} CI]": [_delta_text(*r) for r in zip(merged["delta"], merged["ci_low"],
                                                                     merged["ci_high"], merged["beyond_noise"])],
        "interval": [kinds.get(k, "") if isinstance(k, str) else "" for k in merged["interval"]],
        "p (ORH, Holm)": [_p_text(p) for p in merged["p_holm"]],
        "p (DeLong | models)": [_p_text(p) for p in merged["p_delong"]],
        "seeds": merged["n_seeds"],
    })
    if "attention_init" in merged.columns:
        table["attention init"] = merged["attention_init"].fillna("")
    if not table["p (ORH, Holm)"].astype(bool).any():  # fewer than 3 seeds everywhere: no verdict, no column
        table = table.drop(columns="p (ORH, Holm)")
    return table
