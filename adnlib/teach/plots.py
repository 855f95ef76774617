"""Figures for the teaching notebooks: each function draws one figure and returns it (save it with `save_figure`).

Every figure has a title and labelled axes. Functions take plain arrays or the tables that `adnlib.run.train`,
`adnlib.run.evaluate` and `adnlib.teach.analysis` return, so a notebook cell is one call.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from adnlib.model.transforms import IMAGENET_MEAN, IMAGENET_STD

VARIANT_COLORS = {"differnet": "#4c72b0", "se": "#dd8452", "cbam": "#55a868"}
VARIANT_LABELS = {"differnet": "DifferNet", "se": "AttentDifferNet (SE)", "cbam": "AttentDifferNet (CBAM)"}


EXTRA_COLORS = ("#8172b3", "#c44e52", "#937860", "#da8bc3", "#8c8c8c")  # runs other than the three variants


def _label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def _colors(names) -> dict[str, str]:
    """A colour per run: the variant's own, else one of EXTRA_COLORS, so that, e.g., "se, open gates" never shares
    DifferNet's colour (matplotlib's default cycle starts with the same blue)."""
    extra = iter(EXTRA_COLORS * 4)
    return {name: VARIANT_COLORS.get(name) or next(extra) for name in names}


def _columns_by_block(history: pd.DataFrame, prefix: str) -> dict[int, list[str]]:
    """{block: its columns <prefix>block<i>_scale<s>, one per scale}, blocks in order."""
    import re
    blocks: dict[int, list[str]] = {}
    for column in history.columns:
        found = re.fullmatch(rf"{prefix}block(\d+)_scale\d+", column)
        if found and history[column].notna().any():
            blocks.setdefault(int(found.group(1)), []).append(column)
    return dict(sorted(blocks.items()))


def _epoch_ticks(ax, histories) -> None:
    """Epoch axis: every epoch as a tick when there are few, else integer ticks."""
    from matplotlib.ticker import MaxNLocator
    epochs = sorted({int(e) for h in histories for e in h["epoch"]})
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _score_axis(ax, values, axis: str = "x") -> str:
    """Log scale with plain tick labels when scores span more than a factor 20, else linear; returns the label."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    values = np.asarray(values, dtype=float)
    if values.min() > 0 and values.max() / values.min() > 20:
        getattr(ax, f"set_{axis}scale")("log")
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        target.set_minor_formatter(NullFormatter())
        return "anomaly score (log scale)"
    return "anomaly score"


def save_figure(fig, output_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save `fig` as output_dir/<name>.png (folders created; atomic, never through a link) and return the path."""
    from adnlib.io import atomic_write
    path = Path(output_dir) / f"{name}.png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def _show_image(ax, image, title: str | None = None) -> None:
    """uint8 (3,H,W) / float [0,1] (3,H,W) tensor, or a PIL image / HxWx3 array, without axes."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float() / 255 if image.dtype == torch.uint8 else image
        image = image.permute(1, 2, 0).clamp(0, 1).numpy()
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised (3,H,W) -> [0,1] for display."""
    mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = x.new_tensor(IMAGENET_STD)[:, None, None]
    return (x.float() * std + mean).clamp(0, 1)


# --- data ---------------------------------------------------------------------------------------------------
def dataset_grid(root: str | Path, categories: list[str], n_good: int = 3, per_defect: int = 1):
    """Rows = categories; columns = `n_good` normal test images, then `per_defect` image(s) of each defect type."""
    from adnlib.data.datasets import find_samples, load_image
    rows = []
    for category in categories:
        samples = find_samples(root, category, "test")
        good = [s for s in samples if s.label == 0][:n_good]
        defects = sorted({s.defect_type for s in samples if s.label == 1})
        bad = [s for d in defects for s in [t for t in samples if t.defect_type == d][:per_defect]]
        rows.append((category, good + bad))
    n_cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.9 * n_cols, 2.2 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")
    for r, (category, samples) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            if c < len(samples):
                s = samples[c]
                _show_image(ax, load_image(s.path), "normal" if s.label == 0 else f"defect: {s.defect_type}")
                ax.title.set_color("black" if s.label == 0 else "crimson")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(category, fontsize=11)
    fig.suptitle("Test images per category: normal (black titles) and defective (red titles)")
    return fig


def scored_images(frame: pd.DataFrame, threshold: float | None = None, max_images: int = 8):
    """Images with their anomaly scores; frame has columns path, score (and label, defect_type if known).

    Titles are red for anomalous images (label 1), or, given a threshold, for images flagged by it.
    """
    from adnlib.data.datasets import load_image
    frame = frame.head(max_images)
    fig, axes = plt.subplots(1, len(frame), figsize=(2.1 * len(frame), 3.0), squeeze=False, layout="constrained")
    for ax, (_, row) in zip(axes[0], frame.iterrows()):
        kind = row.get("defect_type", Path(row["path"]).parent.name)
        title = f"{kind}\nscore {row['score']:.3g}"
        _show_image(ax, load_image(row["path"]), title)
        flagged = row["score"] >= threshold if threshold is not None else row.get("label", 0) == 1
        ax.title.set_color("crimson" if flagged else "black")
    fig.suptitle("Anomaly score = mean z² over rotated copies (higher = more anomalous)"
                 + ("; red: flagged" if threshold is not None else "; red: defective"))
    return fig


# --- normalizing flows (notebook 01) -----------------------------------------------------------------------
def toy_flow_panels(data: torch.Tensor, z: torch.Tensor, samples: torch.Tensor, density: tuple, kind: str = "toy"):
    """Four panels: data x, the same points mapped to z, samples z -> x, and contours of the learned p(x)."""
    xx, yy, p = density
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.3))
    limits = (float(xx.min()), float(xx.max()))
    axes[0].scatter(data[:, 0], data[:, 1], s=3, alpha=0.5)
    axes[0].set_title(f"training data x ({kind})")
    axes[1].scatter(z[:, 0], z[:, 1], s=3, alpha=0.5, color="tab:orange")
    for r in (1, 2, 3):
        axes[1].add_patch(plt.Circle((0, 0), r, fill=False, ls="--", color="gray", lw=0.8))
    axes[1].set_title("x → z: data in latent space\n(circles: 1, 2, 3 σ of N(0, I))")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="tab:green")
    axes[2].set_title("z → x: samples z ~ N(0, I) mapped back")
    contour = axes[3].contourf(xx, yy, p, levels=20, cmap="viridis")
    fig.colorbar(contour, ax=axes[3], label="p(x)")
    axes[3].set_title("learned density p(x)")
    for ax in axes:
        ax.set_xlabel("dimension 1")
        ax.set_ylabel("dimension 2")
        ax.set_aspect("equal")
        if ax is not axes[1]:
            ax.set_xlim(limits)
            ax.set_ylim(limits)
        else:
            ax.set_xlim(-4, 4)
            ax.set_ylim(-4, 4)
    fig.tight_layout()
    return fig


def loss_curve(losses, title: str = "training loss", xlabel: str = "step", smooth: int = 20):
    """A loss curve with a moving average of `smooth` steps."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, label="per step")
    if len(losses) >= smooth:
        ax.plot(np.arange(smooth - 1, len(losses)), np.convolve(losses, np.ones(smooth) / smooth, "valid"),
                label=f"moving average ({smooth})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NLL per dimension")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def clamp_functions(clamp: float = 3.0, s_range: float = 12.0):
    """The log-scale s of a coupling block after clamping: DifferNet's soft clamp, FrEIA's ATAN default, none."""
    from adnlib.model.flow import SoftAtanClamp
    s = torch.linspace(-s_range, s_range, 400)
    differnet = clamp * SoftAtanClamp(clamp)(s)
    freia = clamp * 0.636 * torch.atan(s)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(s, s, color="gray", ls=":", label="no clamp: s")
    ax.plot(s, freia, label=f"FrEIA 'ATAN': {clamp:g}·0.636·atan(s)")
    ax.plot(s, differnet, lw=2.2, label=f"DifferNet: {clamp:g}·0.636·atan(s/{clamp:g})")
    ax.axhline(clamp * 0.636 * math.pi / 2, color="k", lw=0.6, ls="--")
    ax.axhline(-clamp * 0.636 * math.pi / 2, color="k", lw=0.6, ls="--")
    ax.set_ylim(-s_range * 0.8, s_range * 0.8)
    ax.set_xlabel("raw log-scale s from the subnet")
    ax.set_ylabel("log-scale used: x₂ · exp(·)")
    ax.set_title(f"Soft clamp (α = {clamp:g}): bounded by ±α·0.636·π/2 ≈ ±{clamp * 0.999:.2f}")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def scaled_inputs(scaled: list[torch.Tensor]):
    """The normalised inputs (3,H,W) the backbone sees at each scale, shown at their true relative size."""
    full = scaled[0].shape[-1]
    fig, axes = plt.subplots(1, len(scaled), figsize=(3.2 * len(scaled), 3.5), squeeze=False)
    for i, (ax, x) in enumerate(zip(axes[0], scaled)):
        size = x.shape[-1]
        offset = (full - size) / 2  # centre the smaller input on the full-size canvas: same pixel scale
        ax.imshow(denormalize(x).permute(1, 2, 0).cpu().numpy(),
                  extent=(offset, offset + size, offset + size, offset))
        ax.set_xlim(0, full)
        ax.set_ylim(full, 0)
        ax.set_title(f"scale {i}: {size}×{x.shape[-2]} px", fontsize=9)
        ax.set_xlabel("pixels")
    axes[0, 0].set_ylabel("pixels")
    fig.suptitle("Multi-scale input, drawn at the same pixel scale: the same image at S, S/2, S/4 "
                 "(nearest resize, as the official code)", fontsize=10)
    fig.tight_layout()
    return fig


def embedding_vector(y: torch.Tensor, n_scales: int, title: str | None = None):
    """The embedding (D,) of one image, coloured by scale (each scale = 256 spatially averaged AlexNet channels)."""
    y = y.detach().cpu().float().numpy().ravel()
    per = len(y) // n_scales
    fig, ax = plt.subplots(figsize=(11, 3.2))
    for s in range(n_scales):
        idx = np.arange(s * per, (s + 1) * per)
        ax.bar(idx, y[idx], width=1.0, label=f"scale {s} (dims {s * per}–{(s + 1) * per - 1})")
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("mean activation")
    ax.set_title(title or f"The {len(y)}-d embedding of one image: {n_scales} × 256 averaged AlexNet channels")
    ax.set_xlim(0, len(y))
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def latent_normality(z: np.ndarray, labels: np.ndarray, max_points: int = 20000, seed: int = 0):
    """Histograms of z values (all dimensions pooled) for normal vs anomalous test images, and a normal QQ plot."""
    from scipy import stats
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    grid = np.linspace(-6, 6, 300)
    ranges = []
    for label, name, color in ((0, "normal test images", "tab:blue"), (1, "anomalous test images", "tab:red")):
        values = z[labels == label].ravel()
        if len(values) == 0:
            continue
        values = rng.choice(values, min(max_points, len(values)), replace=False)
        ranges.append(np.percentile(np.abs(values), 99.5))
        axes[0].hist(np.clip(values, -12, 12), bins=120, range=(-12, 12), density=True, alpha=0.45, color=color,
                     label=f"{name} (std {values.std():.2f})")
        (osm, osr), _ = stats.probplot(values, dist="norm")
        axes[1].plot(osm, osr, ".", ms=2, color=color, label=name)
    axes[0].plot(grid, stats.norm.pdf(grid), "k", lw=1.5, label="N(0, 1)")
    axes[0].set_xlim(-max(6, min(12, max(ranges, default=6))), max(6, min(12, max(ranges, default=6))))
    axes[0].set_xlabel("z value (all dimensions pooled)")
    axes[0].set_ylabel("density")
    axes[0].set_title("Latent values: normal images should follow N(0, 1)")
    axes[0].legend(fontsize=9)
    axes[1].plot([-5, 5], [-5, 5], "k--", lw=1, label="perfect N(0, 1)")
    axes[1].set_xlabel("theoretical N(0, 1) quantile")
    axes[1].set_ylabel("observed z quantile")
    axes[1].set_title("Normal QQ plot of z")
    axes[1].legend(fontsize=9)
    fig.tight_layout()
    return fig


# --- training (notebook 02) ---------------------------------------------------------------------------------------
def training_curves(histories: dict[str, pd.DataFrame]):
    """Loss per epoch and AUROC per evaluation, one line per variant, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = _colors(histories)
    for variant, h in histories.items():
        color = colors[variant]
        axes[0].plot(h["epoch"], h["loss"], marker=".", color=color, label=_label(variant))
        evaluated = h.dropna(subset=["auroc"]) if "auroc" in h else h.iloc[:0]
        axes[1].plot(evaluated["epoch"], 100 * evaluated["auroc"], marker="o", color=color, label=_label(variant))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("NLL loss per dimension")
    axes[0].set_title("Training loss (lower = higher likelihood of normal images)")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("image AUROC on the test set (%)")
    axes[1].set_title("AUROC at each evaluation")
    for ax in axes:
        ax.legend(fontsize=9)
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, histories.values())
    fig.tight_layout()
    return fig


def feature_shrinkage(histories: dict[str, pd.DataFrame]):
    """Do attention gates shrink the features? Embedding norm per epoch relative to epoch 1 (the variants start at
    very different sizes), the mean channel gate of each attention block, and CBAM's mean spatial map per block."""
    spatial = any(c.startswith("spatial_mean_") for h in histories.values() for c in h.columns)
    fig, axes = plt.subplots(1, 3 if spatial else 2, figsize=(17 if spatial else 12, 4.2))
    colors = _colors(histories)
    for variant, h in histories.items():
        color = colors[variant]
        first = float(h["feature_norm"].iloc[0])
        axes[0].plot(h["epoch"], h["feature_norm"] / first, marker=".", color=color,
                     label=f"{_label(variant)} (epoch {int(h['epoch'].iloc[0])}: {first:.3g})")
        for ax, prefix in zip(axes[1:], ("gate_mean_", "spatial_mean_")):
            styles = iter(["-", "--", ":", "-."])
            for block, columns in _columns_by_block(h, prefix).items():  # one line per block: mean over scales
                ax.plot(h["epoch"], h[columns].mean(axis=1), ls=next(styles, "-"), marker=".", color=color,
                        label=f"{_label(variant)}, block {block}"
                              + (f" (mean of {len(columns)} scales)" if len(columns) > 1 else ""))
    axes[0].axhline(1.0, color="k", lw=0.6, ls=":")
    axes[0].set_ylabel("embedding norm / its value at the first epoch")
    axes[0].set_title("Embedding size during training (below 1 = shrinking)")
    axes[1].set_ylabel("mean channel gate (0 = closed, 1 = open)")
    axes[1].set_title("Channel gates (mean over each epoch's batches)")
    if spatial:
        axes[2].set_ylabel("mean spatial map (0 = masked, 1 = kept)")
        axes[2].set_title("CBAM spatial maps (mean over each epoch's batches)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, histories.values())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# --- evaluation (notebook 04) -------------------------------------------------------------------------------------
def rotated_copies_scores(image: torch.Tensor, angles, scores, title: str = ""):
    """An image's rotated test copies with the score of each copy; the image's score is their mean."""
    from adnlib.model.transforms import rotate_batch, to_unit
    angles = torch.as_tensor(np.asarray(angles), dtype=torch.float32)
    copies = rotate_batch(to_unit(image[None]).repeat(len(angles), 1, 1, 1), angles)
    n = len(angles)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(2 * cols, 2.2 * rows + 2.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1] * rows + [1.2])
    for i in range(n):
        _show_image(fig.add_subplot(grid[i // cols, i % cols]), copies[i],
                    f"{float(angles[i]):.0f}°: {float(scores[i]):.3g}")
    ax = fig.add_subplot(grid[rows, :])
    ax.plot(np.arange(n), np.asarray(scores, dtype=float), "o-", color="tab:purple", label="score of each copy")
    ax.axhline(float(np.mean(scores)), color="k", ls="--", label=f"image score = mean = {float(np.mean(scores)):.3g}")
    ax.set_xticks(np.arange(n), [f"{float(a):.0f}°" for a in angles], fontsize=9)
    ax.set_xlabel("rotation angle of the copy")
    ax.set_ylabel("mean z² of the copy")
    ax.legend(fontsize=9)
    fig.suptitle(title or "Test-time augmentation: rotated copies and their scores")
    fig.tight_layout()
    return fig


def score_distributions(scores: dict[str, pd.DataFrame]):
    """Per variant: score histogram per label (left) and scores per defect type (right), log scale."""
    import seaborn as sns
    n = len(scores)
    fig, axes = plt.subplots(n, 2, figsize=(12, 3.3 * n), squeeze=False)
    for row, (variant, frame) in enumerate(scores.items()):
        frame = frame.assign(label=np.where(frame["label"] == 1, "anomalous", "normal"))
        palette = {"normal": "tab:blue", "anomalous": "tab:red"}
        log = frame["score"].min() > 0 and frame["score"].max() / frame["score"].min() > 20
        sns.histplot(data=frame, x="score", hue="label", hue_order=["normal", "anomalous"], log_scale=log,
                     bins=15, element="step", palette=palette, ax=axes[row, 0])
        axes[row, 0].set_title(f"{_label(variant)}: scores per label")
        axes[row, 0].set_xlabel(_score_axis(axes[row, 0], frame["score"], "x"))
        axes[row, 0].set_ylabel("number of images")
        order = ["good"] + sorted(d for d in frame["defect_type"].unique() if d != "good")
        sns.boxplot(data=frame, x="defect_type", y="score", order=order, color="white", ax=axes[row, 1],
                    showfliers=False, log_scale=log)
        sns.stripplot(data=frame, x="defect_type", y="score", order=order, hue="label", palette=palette,
                      ax=axes[row, 1], legend=False)
        axes[row, 1].set_title(f"{_label(variant)}: scores per defect type")
        axes[row, 1].set_xlabel("test folder (defect type)")
        axes[row, 1].set_ylabel(_score_axis(axes[row, 1], frame["score"], "y"))
    fig.tight_layout()
    return fig


def roc_curves(rocs: dict[str, dict]):
    """ROC curve per variant; rocs[variant] = {'fpr': [...], 'tpr': [...], 'auroc': float}."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for variant, roc in rocs.items():
        ax.plot(roc["fpr"], roc["tpr"], color=VARIANT_COLORS.get(variant), lw=2,
                label=f"{_label(variant)} (AUROC {100 * roc['auroc']:.1f}%)")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance (AUROC 50%)")
    ax.set_xlabel("false positive rate (normal images flagged)")
    ax.set_ylabel("true positive rate (defects found)")
    ax.set_title("ROC curves on the test set")
    ax.set_aspect("equal")
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return fig


def auroc_per_defect(per_defect: pd.DataFrame):
    """Bars of AUROC (%) per defect type (each defect vs all normal test images); columns: variant, defect, auroc."""
    import seaborn as sns
    frame = per_defect.assign(variant=per_defect["variant"].map(_label), auroc=100 * per_defect["auroc"])
    fig, ax = plt.subplots(figsize=(8.5, 4))
    sns.barplot(data=frame, x="defect_type", y="auroc", hue="variant", ax=ax,
                palette={_label(k): c for k, c in VARIANT_COLORS.items()})
    ax.axhline(50, color="k", ls=":", lw=1)
    ax.set_ylim(0, 105)
    ax.set_xlabel("defect type")
    ax.set_ylabel("AUROC vs normal images (%)")
    ax.set_title("Which defects are easy? AUROC per defect type")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars: any bar can be short
    fig.tight_layout()
    return fig


def confusion_matrix_plot(matrix: np.ndarray, summary: dict, title: str = ""):
    """2×2 confusion matrix [[TN, FP], [FN, TP]] as a heatmap with the threshold's precision / recall / F1."""
    import seaborn as sns
    fig, ax = plt.subplots(figsize=(4.6, 4))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=["normal", "anomalous"], yticklabels=["normal", "anomalous"])
    ax.set_xlabel("predicted (score ≥ threshold → anomalous)")
    ax.set_ylabel("true label")
    ax.set_title(title or (f"threshold {summary['threshold']:.3g}: F1 {summary['f1']:.2f}, precision "
                           f"{summary['precision']:.2f}, recall {summary['recall']:.2f}"), fontsize=9)
    fig.tight_layout()
    return fig


def auroc_vs_rotations_plot(curves: dict[str, pd.DataFrame]):
    """AUROC (%) against the number of test rotations (log2 axis): the test as scored with its interval over the
    test images (error bars), and ±1 std over repeated tests with fresh random angles (band)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for variant, frame in curves.items():
        color = VARIANT_COLORS.get(variant)
        ax.errorbar(frame["n_rotations"], 100 * frame["auroc"], marker="o", color=color, label=_label(variant),
                    yerr=[100 * (frame["auroc"] - frame["auroc_low"]), 100 * (frame["auroc_high"] - frame["auroc"])],
                    capsize=3)
        ax.fill_between(frame["n_rotations"], 100 * (frame["fresh_mean"] - frame["fresh_std"]),
                        100 * (frame["fresh_mean"] + frame["fresh_std"]), color=color, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(curves[next(iter(curves))]["n_rotations"],
                  [str(n) for n in curves[next(iter(curves))]["n_rotations"]])
    ax.set_xlabel("number of rotated copies per test image")
    ax.set_ylabel("image AUROC (%)")
    ax.set_title("AUROC vs test rotations (bars: 95 % interval over test images;\n"
                 "band: ±1 std over repeated tests with fresh random angles)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def threshold_explorer(frame: pd.DataFrame, start: float | None = None):
    """An ipywidgets slider over the score threshold that updates a confusion table; returns the widget.

    Built and displayed without waiting for input, so a headless (papermill) run goes straight on.
    """
    import ipywidgets as widgets

    from adnlib.teach.analysis import threshold_summary
    low, high = float(np.log10(frame["score"].min())), float(np.log10(frame["score"].max()))
    start = float(np.log10(start)) if start else (low + high) / 2
    slider = widgets.FloatSlider(value=start, min=low, max=high, step=(high - low) / 200 or 0.01,
                                 description="log10(threshold)", continuous_update=True, readout_format=".2f",
                                 style={"description_width": "initial"}, layout=widgets.Layout(width="60%"))
    text = widgets.HTML()

    def update(change=None):
        s = threshold_summary(frame, 10 ** slider.value)
        text.value = (f"<b>threshold {s['threshold']:.4g}</b> — defects found {s['tp']}/{s['tp'] + s['fn']} "
                      f"(recall {s['recall']:.2f}), normal images flagged {s['fp']}/{s['fp'] + s['tn']} "
                      f"(FPR {s['fpr']:.2f}), precision {s['precision']:.2f}, F1 {s['f1']:.2f}")

    slider.observe(update, names="value")
    update()
    return widgets.VBox([slider, text])


# --- benchmark report (notebook 06) -------------------------------------------------------------------------------
def comparison_bars(table: pd.DataFrame, title: str = "Image AUROC per category", paper_label: str = "paper"):
    """Grouped bars per category: our variants (solid) and the paper's DifferNet / AttentDifferNet (hatched).

    table: `adnlib.teach.paper.comparison_table`; paper_label names the paper columns in the legend
    (`adnlib.teach.paper.paper_source`).
    """
    ours = [c for c in table.columns if c.startswith("ours_")]
    paper = [c for c in ("paper_DifferNet", "paper_AttentDifferNet") if c in table.columns
             and table[c].notna().any()]
    columns = ours + paper
    categories = table["category"].tolist()
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(min(18, max(9, 1.6 * len(categories) * len(columns) / 3)), 4.3))
    x = np.arange(len(categories))
    for i, column in enumerate(columns):
        name = column.split("_", 1)[1]
        is_paper = column.startswith("paper_")
        color = VARIANT_COLORS.get({"DifferNet": "differnet", "AttentDifferNet": "se"}.get(name, name), "gray")
        label = f"{paper_label}: {name}" if is_paper else f"ours: {_label(name)}"
        values = table[column].to_numpy(dtype=float)
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, np.nan_to_num(values), width, color=color,
               alpha=0.45 if is_paper else 0.95, hatch="//" if is_paper else None, edgecolor="k", lw=0.4,
               label=label)
    ax.set_xticks(x, categories, rotation=20, ha="right")
    lowest = np.nanmin(table[columns].to_numpy(dtype=float))
    if lowest >= 50:  # AUROC's natural baseline is chance (50%): start there so that differences are visible
        ax.set_ylim(50, 100.5)
        ax.set_ylabel("image AUROC (%), axis from chance = 50%")
    else:
        ax.set_ylim(0, 100.5)
        ax.axhline(50, color="k", ls=":", lw=1)
        ax.set_ylabel("image AUROC (%)")
    ax.set_xlabel("category")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def forest_plot(comparison: pd.DataFrame, title: str = "Paired difference with DifferNet"):
    """ΔAUROC (points) per category and variant with its interval (`adnlib.run.stats.paired_comparison`): one
    row per category, the mean over categories last; filled markers where the row's verdict is 'beyond noise'
    (>= 3 seeds, Holm-corrected), dashed bars where the interval covers the test images only (too few seeds)."""
    variants = list(dict.fromkeys(comparison["variant"]))
    categories = [c for c in dict.fromkeys(comparison["category"]) if c != "mean"] + ["mean"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(categories) * max(1, len(variants))))
    offsets = np.linspace(-0.2, 0.2, len(variants)) if len(variants) > 1 else [0.0]
    for offset, variant in zip(offsets, variants):
        rows = comparison[comparison["variant"] == variant].set_index("category").reindex(categories)
        y = np.arange(len(categories))[::-1] + offset
        color = VARIANT_COLORS.get(variant)
        bars = ax.errorbar(rows["delta"], y, xerr=[rows["delta"] - rows["ci_low"], rows["ci_high"] - rows["delta"]],
                           fmt="none", ecolor=color, capsize=3, label=f"{_label(variant)} − DifferNet")
        images_only = (rows["interval"] == "test images only").to_numpy() if "interval" in rows else None
        if images_only is not None and images_only.all():
            bars[2][0].set_linestyle("--")
        beyond = rows["beyond_noise"].fillna(False).astype(bool).to_numpy()
        ax.scatter(rows["delta"][beyond], y[beyond], color=color, zorder=3)
        ax.scatter(rows["delta"][~beyond], y[~beyond], facecolor="white", edgecolor=color, zorder=3)
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.set_yticks(np.arange(len(categories))[::-1], categories)
    level = comparison.attrs.get("level", 0.95)
    images_only = "interval" in comparison and (comparison["interval"] == "test images only").all()
    ax.set_xlabel(f"ΔAUROC (points) with its {level:.0%} interval; "
                  + ("dashed: test images only, too few seeds for a verdict" if images_only
                     else "filled: beyond noise (Holm-corrected)"))
    ax.set_title(title)
    ax.legend(fontsize=9, loc="best")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def paper_means_bars():
    """The papers' headline mean AUROC per dataset: DifferNet vs AttentDifferNet (and DifferNet's own 94.9)."""
    from adnlib.teach.paper import headline_table
    table = headline_table()
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(table))
    width = 0.27
    for i, (column, color) in enumerate(zip(table.columns, ("#4c72b0", "#dd8452", "#8172b3"))):
        values = table[column].to_numpy(dtype=float)
        bars = ax.bar(x + (i - 1) * width, np.nan_to_num(values), width, color=color, label=column)
        for bar, v in zip(bars, values):
            if not np.isnan(v):
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.3, f"{v:.1f}", ha="center", fontsize=9)
    ax.set_xticks(x, table.index)
    ax.set_ylim(80, 100)
    ax.set_xlabel("dataset")
    ax.set_ylabel("mean image AUROC (%), axis from 80%")
    ax.set_title("Reported in the papers (AttentDifferNet = SE variant)")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


__all__ = ["forest_plot",
           "save_figure", "denormalize", "dataset_grid", "scored_images", "toy_flow_panels", "loss_curve",
           "clamp_functions", "scaled_inputs", "embedding_vector", "latent_normality", "training_curves",
           "feature_shrinkage", "rotated_copies_scores", "score_distributions", "roc_curves", "auroc_per_defect",
           "confusion_matrix_plot", "auroc_vs_rotations_plot", "threshold_explorer", "comparison_bars",
           "paper_means_bars"]
