"""Is the suite's verdict calibrated? Size and power of the ORH verdict beside the old one, on simulated studies.

Each simulated study is a category: a fresh test set (n1 anomalous, n0 normal images) scored by S paired seeds of a
baseline and a variant, judged three ways from the same scores:

* ORH (DeLong): the verdict of `adnlib.run.stats.paired_comparison` (Obuchowski–Rockette with Hillis's ddf_H,
  seeds as random readers, images as random cases, DeLong's covariances), through the same library functions it
  calls (`auroc_covariance` -> `orh_analysis`);
* ORH (jackknife): the same with `covariance="jackknife"`;
* old: the verdict this suite used before, s²/S + cᵀΣc with a Welch–Satterthwaite t (`old_verdict` below, kept here
  so that the comparison stays runnable).

Two models generate the scores:

* Roe & Metz (1997): score of image k by seed j under test i (variant, baseline), for truth t (normal, anomalous),
  μ_it + R_jt + (TR)_ijt + C_kt + (TC)_ikt + (RC)_jkt + ε_ijkt, independent normal effects (a fresh draw per truth
  state), μ = 0 for normal images, δ for anomalous ones. The four variance structures of Roe & Metz's Table 1 (also
  Hillis et al. 2005, Hillis 2018): data correlation H (σ²_C, σ²_TC, σ²_RC, σ²_ε = 0.3, 0.3, 0.2, 0.2) or L (0.1, 0.1,
  0.2, 0.6); reader variance L (σ²_R = σ²_TR = 0.0055) or H (0.011, 0.03, 0.056 at AUC 0.702, 0.855, 0.961); δ =
  0.75, 1.5, 2.5 for AUC Φ(δ/√2) = 0.702, 0.855, 0.961. The expected AUROC over seeds and images is Φ(δ/√V),
  V = 2 + 2(σ²_R + σ²_TR) (Hillis 2018), so the true difference is known. A seed is a reader: R is the seed's effect
  shared by both variants, TR the variant-by-seed interaction, RC and ε the seed's own view of each image.
* training noise (the model this file used first): a run's score of image i is x_i + δ·label_i + σ_m·ε_i, x_i the
  image (shared by every run), δ ~ N(g, τ²) drawn per (variant, seed); τ sets the seed-to-seed spread of the AUROC.

Reported per setting: the rate of '*' (p < 0.05) with no true difference ("false *") and with a true gain
("power"), each ± its Monte-Carlo standard error, and ORH's coverage of the true difference.

    python benchmarks/stats_calibration.py                      # quick look: 200 studies per setting (1-3 min)
    python benchmarks/stats_calibration.py --sims 4000          # the table in benchmarks/README.md (2 cores)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm, t

from adnlib.run import stats

LEVEL = 0.95
METHODS = ("old", "ORH", "ORH jk")  # old verdict, ORH with DeLong's covariances, ORH with the jackknife's
DATA_CORRELATION = {"H": (0.3, 0.3, 0.2, 0.2), "L": (0.1, 0.1, 0.2, 0.6)}  # σ²_C, σ²_TC, σ²_RC, σ²_ε (sum 1)
READER_VARIANCE = {"L": {0.702: 0.0055, 0.855: 0.0055, 0.961: 0.0055},  # σ²_R = σ²_TR, by AUC
                   "H": {0.702: 0.011, 0.855: 0.03, 0.961: 0.056}}
SEPARATION = {0.702: 0.75, 0.855: 1.5, 0.961: 2.5}  # Roe & Metz's δ: AUC Φ(δ/√2)
MODEL_NOISE = 0.5  # training-noise model: σ_m, how differently two runs see the same image
BASE_AUROC = 0.85  # training-noise model: the baseline's expected AUROC


# --- the old verdict, kept for the comparison ----------------------------------------------------------------------

def old_verdict(theta: np.ndarray, covariance: np.ndarray, level: float = LEVEL) -> dict:
    """The suite's previous verdict: theta (2, S) AUROCs (variant, baseline), covariance (2S, 2S) DeLong's ->
    dict(p, low, high): se² = s²/S + cᵀΣc (s² the variance of the per-seed Δ, cᵀΣc DeLong's variance of their
    mean), Welch–Satterthwaite df (s²/S + cᵀΣc)² / ((s²/S)² / (S − 1)), t interval and test."""
    per_seed = theta[0] - theta[1]
    n_seeds, delta = per_seed.size, float(per_seed.mean())
    contrast = np.r_[np.full(n_seeds, 1 / n_seeds), np.full(n_seeds, -1 / n_seeds)]
    image_variance = max(float(contrast @ covariance @ contrast), 0.0)
    seed_variance = float(per_seed.var(ddof=1)) / n_seeds
    variance = seed_variance + image_variance
    if variance <= 0:
        return dict(p=float(abs(delta) < 1e-12), low=delta, high=delta)
    df = np.inf if seed_variance <= 0 else variance ** 2 / (seed_variance ** 2 / (n_seeds - 1))
    se = float(np.sqrt(variance))
    half = float(t.ppf((1 + level) / 2, df)) * se
    return dict(p=float(2 * t.sf(abs(delta) / se, df)), low=delta - half, high=delta + half)


def judge(labels: np.ndarray, scores: np.ndarray, truth: float) -> dict:
    """One study: labels (n,), scores (2, S, n) (variant, baseline), the true Δ of expected AUROCs -> {method:
    (star, covered)}, star = p < 1 − LEVEL, covered = the interval holds truth."""
    rows = scores.reshape(-1, scores.shape[-1])
    aucs, delong_cov = stats.auroc_covariance(labels, rows, "delong")
    theta = aucs.reshape(2, -1)
    results = {"old": old_verdict(theta, delong_cov), "ORH": stats.orh_analysis(theta, delong_cov, LEVEL),
               "ORH jk": stats.orh_analysis(theta, stats.auroc_covariance(labels, rows, "jackknife")[1], LEVEL)}
    return {m: (r["p"] < 1 - LEVEL, r["low"] <= truth <= r["high"]) for m, r in results.items()}


# --- the Roe & Metz model ------------------------------------------------------------------------------------------

def roe_metz_parameters(structure: str, auc: float, probit_gain: float) -> dict:
    """Variance components and separations of a Roe–Metz setting: structure "HL" etc. (data correlation, reader
    variance), auc one of SEPARATION's, probit_gain the variant's gain in Φ⁻¹(expected AUROC) -> dict(components
    (σ_R, σ_TR, σ_C, σ_TC, σ_RC, σ_ε) as standard deviations, delta (variant, baseline), truth: the true
    difference of expected AUROCs)."""
    reader = READER_VARIANCE[structure[1]][auc]
    spread = np.sqrt(2 + 4 * reader)  # √V, V = 2 + 2(σ²_R + σ²_TR)
    baseline = SEPARATION[auc]
    variant = spread * (baseline / spread + probit_gain)
    return dict(components=np.sqrt([reader, reader, *DATA_CORRELATION[structure[0]]]),
                delta=(variant, baseline),
                truth=float(norm.cdf(variant / spread) - norm.cdf(baseline / spread)))


def roe_metz_study(rng: np.random.Generator, params: dict, n_seeds: int, n1: int, n0: int) -> np.ndarray:
    """Scores (2, S, n1 + n0) of one Roe–Metz study, anomalous images first; every effect drawn afresh per truth
    state (Roe & Metz 1997)."""
    sd_r, sd_tr, sd_c, sd_tc, sd_rc, sd_e = params["components"]
    blocks = []
    for count, means in ((n1, params["delta"]), (n0, (0.0, 0.0))):
        scores = (np.asarray(means)[:, None, None] + sd_r * rng.normal(size=(1, n_seeds, 1))
                  + sd_tr * rng.normal(size=(2, n_seeds, 1)) + sd_c * rng.normal(size=(1, 1, count))
                  + sd_tc * rng.normal(size=(2, 1, count)) + sd_rc * rng.normal(size=(1, n_seeds, count))
                  + sd_e * rng.normal(size=(2, n_seeds, count)))
        blocks.append(scores)
    return np.concatenate(blocks, axis=2)


# --- the training-noise model --------------------------------------------------------------------------------------

def _scale(tau: float) -> float:
    return float(np.sqrt(2 + 2 * MODEL_NOISE ** 2 + tau ** 2))


def expected_auroc(d: float, g: float, tau: float) -> float:
    """E over training runs of the population AUROC, Φ((d + g) / √(2 + 2σ_m² + τ²))."""
    return float(norm.cdf((d + g) / _scale(tau)))


def population_spread(d: float, tau: float, draws: int = 200_000) -> float:
    """The std over training runs of the population AUROC Φ((d + δ) / √(2 + 2σ_m²)), δ ~ N(0, τ²), in points."""
    delta = np.random.default_rng(0).normal(0, tau, draws)
    return 100 * float(norm.cdf((d + delta) / _scale(0.0)).std())


def training_noise_parameters(spread_points: float, gain_points: float) -> dict:
    """d, τ and the variant's shift g for a seed-to-seed spread (points) and a true gain (points), and the truth."""
    tau = 0.0 if spread_points == 0 else brentq(lambda x: population_spread(0.0, x) - spread_points, 1e-4, 5)
    d = brentq(lambda x: expected_auroc(x, 0.0, tau) - BASE_AUROC, -5, 10)
    tau = 0.0 if spread_points == 0 else brentq(lambda x: population_spread(d, x) - spread_points, 1e-4, 5)
    d = brentq(lambda x: expected_auroc(x, 0.0, tau) - BASE_AUROC, -5, 10)
    g = 0.0 if gain_points == 0 else brentq(
        lambda x: expected_auroc(d, x, tau) - BASE_AUROC - gain_points / 100, -2, 2)
    return dict(d=d, tau=tau, g=g, truth=expected_auroc(d, g, tau) - expected_auroc(d, 0.0, tau))


def training_noise_study(rng: np.random.Generator, params: dict, n_seeds: int, n1: int, n0: int) -> np.ndarray:
    """Scores (2, S, n1 + n0) of one training-noise study (variant shift g, baseline 0), anomalous images first."""
    labels = np.r_[np.ones(n1), np.zeros(n0)]
    images = rng.normal(size=labels.size) + params["d"] * labels
    separation = rng.normal(np.array([params["g"], 0.0])[:, None], params["tau"], size=(2, n_seeds))
    return images + separation[..., None] * labels + MODEL_NOISE * rng.normal(size=(2, n_seeds, labels.size))


# --- the experiment ------------------------------------------------------------------------------------------------

def _parameters(setting: dict, null: bool) -> dict:
    if setting["model"] == "Roe-Metz":
        return roe_metz_parameters(setting["structure"], setting["auc"], 0.0 if null else setting["gain"])
    return training_noise_parameters(setting["spread"], 0.0 if null else setting["gain"])


def rates(setting: dict, sims: int, seed: int) -> dict:
    """Rates (%) of '*' per method with no difference ("false * <method>") and with the gain ("power <method>"), and
    of intervals holding the true difference under no difference ("coverage <method>"), over `sims` studies of one
    setting -> the setting's dict with those columns, "gain (points)" and "sims"."""
    study = roe_metz_study if setting["model"] == "Roe-Metz" else training_noise_study
    labels = np.r_[np.ones(setting["n1"], int), np.zeros(setting["n0"], int)]
    out = dict(setting)
    for null in (True, False):
        params = _parameters(setting, null)
        rng = np.random.default_rng([seed, setting["index"], int(null)])
        counts = np.zeros((len(METHODS), 2))
        for _ in range(sims):
            verdict = judge(labels, study(rng, params, setting["seeds"], setting["n1"], setting["n0"]),
                            params["truth"])
            counts += [verdict[m] for m in METHODS]
        for m, (star, covered) in zip(METHODS, counts / sims):
            out[f"{'false *' if null else 'power'} {m}"] = 100 * star
            if null:
                out[f"coverage {m}"] = 100 * covered
        if not null:
            out["gain (points)"] = 100 * params["truth"]
    out["sims"] = sims
    return out


def settings(images, seeds, probit_gain: float, spreads, gain_points: float) -> list[dict]:
    """Every Roe–Metz setting (4 structures × 3 AUCs × images × seeds), then the training-noise ones (spreads ×
    seeds, 25 + 50 images)."""
    out = [dict(model="Roe-Metz", structure=s, auc=a, n1=n1, n0=n0, seeds=j, gain=probit_gain)
           for s in ("HL", "LL", "HH", "LH") for a in SEPARATION for n1, n0 in images for j in seeds]
    out += [dict(model="training noise", spread=sp, n1=25, n0=50, seeds=j, gain=gain_points)
            for sp in spreads for j in seeds]
    return [dict(s, index=i) for i, s in enumerate(out)]


def _task(job: tuple) -> dict:
    return rates(*job)


def calibration_table(jobs: list[dict], sims: int, seed: int = 0, workers: int = 2, progress=None) -> pd.DataFrame:
    """rates() of every setting, on `workers` processes (1: in this process), one row per setting."""
    tasks = [(job, sims, seed) for job in jobs]
    rows, start = [], time.perf_counter()
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: `workers` workers on as many cores
        with multiprocessing.get_context("spawn").Pool(workers) as pool:  # spawned: they read OMP_NUM_THREADS
            for row in pool.imap_unordered(_task, tasks):
                rows.append(row)
                if progress:
                    progress(len(rows), len(tasks), time.perf_counter() - start)
    else:
        rows = [_task(task) for task in tasks]
    return pd.DataFrame(rows).sort_values("index").reset_index(drop=True)


def monte_carlo_error(rate_percent: float, sims: int) -> float:
    """The standard error (points) of a rate measured over `sims` studies."""
    p = rate_percent / 100
    return 100 * float(np.sqrt(p * (1 - p) / sims))


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown: rates as 'rate ± Monte-Carlo standard error' (%), one line per setting."""
    lines = []
    for model, part in table.groupby("model", sort=False):
        keys = (["structure", "auc", "n1", "n0", "seeds"] if model == "Roe-Metz" else ["spread", "seeds"])
        head = keys + ["gain (points)"] + [f"false * {m}" for m in METHODS] + [f"power {m}" for m in METHODS] + [
            "coverage ORH"]
        lines += [f"\n{model}\n", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for _, row in part.iterrows():
            cells = [f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in keys]
            cells.append(f"{row['gain (points)']:.1f}")
            cells += [f"{row[c]:.1f} ± {monte_carlo_error(row[c], row['sims']):.1f}" for c in head[len(keys) + 1:]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=200, help="studies per setting and hypothesis (Monte-Carlo "
                        "standard error of a 5%% rate: 1.5 points at 200, 0.34 at 4000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--images", nargs="+", default=["25+50", "45+69"], help="anomalous+normal test images")
    parser.add_argument("--probit-gain", type=float, default=0.2, help="Roe–Metz true gain, in Φ⁻¹(expected AUROC): "
                        "+6.5, +4.2 and +1.4 AUROC points at 0.702, 0.855 and 0.961")
    parser.add_argument("--spreads", type=float, nargs="*", default=[0.0, 2.5, 5.0],
                        help="training-noise model: seed-to-seed spreads of the AUROC (points); none to skip it")
    parser.add_argument("--gain", type=float, default=2.0, help="training-noise model: true gain (AUROC points)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images = [tuple(int(x) for x in pair.split("+")) for pair in args.images]
    jobs = settings(images, args.seeds, args.probit_gain, args.spreads, args.gain)
    start = time.perf_counter()
    table = calibration_table(jobs, args.sims, args.seed, args.workers, progress=lambda done, total, elapsed: print(
        f"\rsetting {done}/{total}, {elapsed:.0f} s", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print(f"{args.sims} simulated studies per setting and hypothesis, level {LEVEL:.0%}; cells: rate ± Monte-Carlo "
          f"standard error (%); {time.perf_counter() - start:.0f} s on {args.workers} process(es)")
    print(markdown(table))


if __name__ == "__main__":
    main()
