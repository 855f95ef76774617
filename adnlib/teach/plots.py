"""Figures for the teaching notebooks: each function draws one figure and returns it (save it with `save_figure`).

Every figure has a title and labelled axes. Functions take plain arrays or the tables that `adnlib.run.train`,
`adnlib.run.evaluate` and `adnlib.teach.analysis` return, so a notebook cell is one call.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

# The book's column: every figure here is at most PAGE_WIDTH_IN wide as the notebooks show it (100 dpi, tight box),
# FIGURE_WIDTH_IN the widest figure size that stays within it (adnlib/explain/viewer.py; tests/test_figures.py).
from adnlib.explain.viewer import FIGURE_WIDTH_IN, PAGE_WIDTH_IN
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


def _wrap(n: int, most: int) -> tuple[int, int]:
    """(rows, columns) for n panels with at most `most` a row, the rows balanced (11 panels, 6 a row: 2 × 6)."""
    rows = max(1, math.ceil(n / most))
    return rows, max(1, math.ceil(n / rows))


def _legend_below(fig, handles=None, labels=None, ncols: int | None = None, **kwargs):
    """The figure's one legend, below its Axes (the figure's layout="constrained" makes room), so that it never
    covers data. Without handles: each label of the figure's Axes once. ncols: as many as fit the figure's width."""
    if handles is None:
        found = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, handle)
        labels, handles = list(found), list(found.values())
    if ncols is None:  # 9 pt text is about 7 px a character at 100 dpi, a handle and the spacing about 45 px
        widest = max(len(line) for label in labels for line in str(label).split("\n"))
        ncols = max(1, min(len(labels), int(100 * fig.get_figwidth() // (7 * widest + 45))))
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=9, frameon=False, **kwargs)


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
    # a line of at most 6 images, two or more lines for a category with more (MVTec's cable: 3 + 8 defects)
    per_line = _wrap(max(len(r[1]) for r in rows), 6)[1]
    lines = [math.ceil(len(samples) / per_line) for _, samples in rows]
    cell = min(1.9, FIGURE_WIDTH_IN / per_line)
    fig, axes = plt.subplots(sum(lines), per_line, figsize=(cell * per_line, (cell + 0.45) * sum(lines) + 0.4),
                             squeeze=False, layout="constrained")
    for r, (category, samples) in enumerate(rows):
        first = sum(lines[:r])
        for c in range(lines[r] * per_line):
            ax = axes[first + c // per_line, c % per_line]
            if c < len(samples):
                s = samples[c]
                _show_image(ax, load_image(s.path), "normal" if s.label == 0 else f"defect:\n{s.defect_type}")
                ax.title.set_color("black" if s.label == 0 else "crimson")
            else:
                ax.axis("off")
        axes[first, 0].set_ylabel(textwrap.fill(category, 18), fontsize=11)
    fig.suptitle("Test images per category: normal (black titles) and defective (red titles)", fontsize=11)
    return fig


def scored_images(frame: pd.DataFrame, threshold: float | None = None, max_images: int = 8):
    """Images with their anomaly scores; frame has columns path, score (and label, defect_type if known).

    Titles are red for anomalous images (label 1), or, given a threshold, for images flagged by it.
    """
    from adnlib.data.datasets import load_image
    frame = frame.head(max_images)
    lines, per_line = _wrap(len(frame), 6)
    cell = min(2.1, FIGURE_WIDTH_IN / per_line)
    fig, axes = plt.subplots(lines, per_line, figsize=(cell * per_line, (cell + 0.5) * lines + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(frame):]:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, frame.iterrows()):
        kind = row.get("defect_type", Path(row["path"]).parent.name)
        title = f"{kind}\nscore {row['score']:.3g}"
        _show_image(ax, load_image(row["path"]), title)
        flagged = row["score"] >= threshold if threshold is not None else row.get("label", 0) == 1
        ax.title.set_color("crimson" if flagged else "black")
    fig.suptitle("Anomaly score = mean z² over rotated copies (higher = more anomalous)\n"
                 + ("red: flagged by the threshold" if threshold is not None else "red: defective"), fontsize=11)
    return fig


# --- normalizing flows (notebook 01) -----------------------------------------------------------------------
def toy_flow_panels(data: torch.Tensor, z: torch.Tensor, samples: torch.Tensor, density: tuple, kind: str = "toy"):
    """Four panels: data x, the same points mapped to z, samples z -> x, and contours of the learned p(x)."""
    xx, yy, p = density
    fig, grid = plt.subplots(2, 2, figsize=(FIGURE_WIDTH_IN, 8.6), layout="constrained")  # 2 × 2: fits the column
    axes = grid.ravel()
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
    return fig


def loss_curve(losses, title: str = "training loss", xlabel: str = "step", smooth: int = 20):
    """A loss curve with a moving average of `smooth` steps."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.9), layout="constrained")
    ax.plot(losses, alpha=0.35, label="per step")
    if len(losses) >= smooth:
        ax.plot(np.arange(smooth - 1, len(losses)), np.convolve(losses, np.ones(smooth) / smooth, "valid"),
                label=f"moving average ({smooth})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NLL per dimension")
    ax.set_title(title, fontsize=11)
    _legend_below(fig)
    return fig


def clamp_functions(clamp: float = 3.0, s_range: float = 12.0):
    """The log-scale s of a coupling block after clamping: DifferNet's soft clamp, FrEIA's ATAN default, none."""
    from adnlib.model.flow import SoftAtanClamp
    s = torch.linspace(-s_range, s_range, 400)
    differnet = clamp * SoftAtanClamp(clamp)(s)
    freia = clamp * 0.636 * torch.atan(s)
    fig, ax = plt.subplots(figsize=(6.5, 4.7), layout="constrained")
    ax.plot(s, s, color="gray", ls=":", label="no clamp: s")
    ax.plot(s, freia, label=f"FrEIA 'ATAN': {clamp:g}·0.636·atan(s)")
    ax.plot(s, differnet, lw=2.2, label=f"DifferNet: {clamp:g}·0.636·atan(s/{clamp:g})")
    ax.axhline(clamp * 0.636 * math.pi / 2, color="k", lw=0.6, ls="--")
    ax.axhline(-clamp * 0.636 * math.pi / 2, color="k", lw=0.6, ls="--")
    ax.set_ylim(-s_range * 0.8, s_range * 0.8)
    ax.set_xlabel("raw log-scale s from the subnet")
    ax.set_ylabel("log-scale used: x₂ · exp(·)")
    ax.set_title(f"Soft clamp (α = {clamp:g}): bounded by ±α·0.636·π/2 ≈ ±{clamp * 0.999:.2f}", fontsize=11)
    _legend_below(fig, ncols=2)
    return fig


def scaled_inputs(scaled: list[torch.Tensor]):
    """The normalised inputs (3,H,W) the backbone sees at each scale, shown at their true relative size."""
    full = scaled[0].shape[-1]
    width = min(3.2 * len(scaled), FIGURE_WIDTH_IN)
    fig, axes = plt.subplots(1, len(scaled), figsize=(width, width / len(scaled) + 0.9), squeeze=False,
                             layout="constrained")
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
    fig.suptitle("Multi-scale input, drawn at the same pixel scale: the same image at S, S/2, S/4\n"
                 "(nearest resize, as the official code)", fontsize=10)
    return fig


def embedding_vector(y: torch.Tensor, n_scales: int, title: str | None = None):
    """The embedding (D,) of one image, coloured by scale (each scale = 256 spatially averaged AlexNet channels)."""
    y = y.detach().cpu().float().numpy().ravel()
    per = len(y) // n_scales
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 3.6), layout="constrained")
    for s in range(n_scales):  # bars of width 1 as one filled step curve per scale: 3 artists, not 768 bars
        ax.stairs(y[s * per:(s + 1) * per], np.arange(s * per, (s + 1) * per + 1) - 0.5, fill=True, color=f"C{s}",
                  label=f"scale {s} (dims {s * per}–{(s + 1) * per - 1})")
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("mean activation")
    ax.set_title(title or f"The {len(y)}-d embedding of one image: {n_scales} × 256 averaged AlexNet channels",
                 fontsize=11)
    ax.set_xlim(0, len(y))
    _legend_below(fig)
    return fig


def latent_normality(z: np.ndarray, labels: np.ndarray, max_points: int = 20000, seed: int = 0):
    """Histograms of z values (all dimensions pooled) for normal vs anomalous test images, and a normal QQ plot."""
    from scipy import stats
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH_IN, 4.6), layout="constrained")
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
        axes[1].plot(osm, osr, ".", ms=2, color=color)  # colours as in the histogram (one legend below both)
    axes[0].plot(grid, stats.norm.pdf(grid), "k", lw=1.5, label="N(0, 1)")
    axes[0].set_xlim(-max(6, min(12, max(ranges, default=6))), max(6, min(12, max(ranges, default=6))))
    axes[0].set_xlabel("z value (all dimensions pooled)")
    axes[0].set_ylabel("density")
    axes[0].set_title("Latent values: normal images\nshould follow N(0, 1)", fontsize=11)
    axes[1].plot([-5, 5], [-5, 5], "k--", lw=1, label="perfect N(0, 1) (QQ plot)")
    axes[1].set_xlabel("theoretical N(0, 1) quantile")
    axes[1].set_ylabel("observed z quantile")
    axes[1].set_title("Normal QQ plot of z\n(colours as on the left)", fontsize=11)
    _legend_below(fig, ncols=2)
    return fig


# --- training (notebook 03) ---------------------------------------------------------------------------------------
def training_curves(histories: dict[str, pd.DataFrame]):
    """Loss per epoch and AUROC per evaluation, one line per variant, side by side (one legend below both)."""
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH_IN, 4.4), layout="constrained")
    colors = _colors(histories)
    for variant, h in histories.items():
        color = colors[variant]
        axes[0].plot(h["epoch"], h["loss"], marker=".", color=color, label=_label(variant))
        evaluated = h.dropna(subset=["auroc"]) if "auroc" in h else h.iloc[:0]
        axes[1].plot(evaluated["epoch"], 100 * evaluated["auroc"], marker="o", color=color, label=_label(variant))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("NLL loss per dimension")
    axes[0].set_title("Training loss\n(lower = higher likelihood of normal images)", fontsize=11)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("image AUROC on the test set (%)")
    axes[1].set_title("AUROC at each evaluation", fontsize=11)
    for ax in axes:
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, histories.values())
    _legend_below(fig)
    return fig


BLOCK_STYLES = ("-", "--", ":", "-.")  # attention block 1, 2, 3 (, 4) in feature_shrinkage


def feature_shrinkage(histories: dict[str, pd.DataFrame]):
    """Do attention gates shrink the features? Embedding norm per epoch relative to epoch 1 (the variants start at
    very different sizes), the mean channel gate of each attention block, and CBAM's mean spatial map per block.

    Colour: the run; line style: the attention block. With spatial maps: 2 × 2 panels, the legend in the fourth."""
    spatial = any(c.startswith("spatial_mean_") for h in histories.values() for c in h.columns)
    if spatial:
        fig, grid = plt.subplots(2, 2, figsize=(FIGURE_WIDTH_IN, 7.8), layout="constrained")
        axes, legend_ax = [grid[0, 0], grid[0, 1], grid[1, 0]], grid[1, 1]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH_IN, 4.6), layout="constrained")
        legend_ax = None
    colors, blocks, scales = _colors(histories), set(), 1
    for variant, h in histories.items():
        color = colors[variant]
        first = float(h["feature_norm"].iloc[0])
        axes[0].plot(h["epoch"], h["feature_norm"] / first, marker=".", color=color,
                     label=f"{_label(variant)} (epoch {int(h['epoch'].iloc[0])}: norm {first:.3g})")
        for ax, prefix in zip(axes[1:], ("gate_mean_", "spatial_mean_")):
            for block, columns in _columns_by_block(h, prefix).items():  # one line per block: mean over scales
                ax.plot(h["epoch"], h[columns].mean(axis=1), ls=BLOCK_STYLES[(block - 1) % len(BLOCK_STYLES)],
                        marker=".", color=color)
                blocks.add(block)
                scales = max(scales, len(columns))
    axes[0].axhline(1.0, color="k", lw=0.6, ls=":")
    axes[0].set_ylabel("embedding norm / its value\nat the first epoch")
    axes[0].set_title("Embedding size during training\n(below 1 = shrinking)", fontsize=11)
    axes[1].set_ylabel("mean channel gate\n(0 = closed, 1 = open)")
    axes[1].set_title("Channel gates\n(mean over each epoch's batches)", fontsize=11)
    if spatial:
        axes[2].set_ylabel("mean spatial map\n(0 = masked, 1 = kept)")
        axes[2].set_title("CBAM spatial maps\n(mean over each epoch's batches)", fontsize=11)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, histories.values())
    handles, labels = axes[0].get_legend_handles_labels()
    for block in sorted(blocks):
        handles.append(plt.Line2D([], [], color="0.35", marker=".", ls=BLOCK_STYLES[(block - 1) % len(BLOCK_STYLES)]))
        labels.append(f"block {block}" + (f" (mean of its {scales} scales)" if scales > 1 else ""))
    if legend_ax is not None:  # the fourth panel holds the legend: beside the data, over none of it
        legend_ax.axis("off")
        legend_ax.legend(handles, labels, loc="center", fontsize=9, frameon=False,
                         title="colour: run (norm at the first epoch)\nline style: attention block", title_fontsize=9)
    else:
        _legend_below(fig, handles, labels, ncols=2)
    return fig


# --- evaluation (notebook 04) -------------------------------------------------------------------------------------
def rotated_copies_scores(image: torch.Tensor, angles, scores, title: str = ""):
    """An image's rotated test copies with the score of each copy; the image's score is their mean."""
    from adnlib.model.transforms import rotate_batch, to_unit
    angles = torch.as_tensor(np.asarray(angles), dtype=torch.float32)
    copies = rotate_batch(to_unit(image[None]).repeat(len(angles), 1, 1, 1), angles)
    n = len(angles)
    rows, cols = _wrap(n, 6)  # 8 copies: 2 × 4
    cell = min(2.0, FIGURE_WIDTH_IN / cols)
    fig = plt.figure(figsize=(cell * cols, (cell + 0.3) * rows + 3.0), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[cell + 0.3] * rows + [2.4])
    for i in range(n):
        _show_image(fig.add_subplot(grid[i // cols, i % cols]), copies[i],
                    f"{float(angles[i]):.0f}°: {float(scores[i]):.3g}")
    ax = fig.add_subplot(grid[rows, :])
    ax.plot(np.arange(n), np.asarray(scores, dtype=float), "o-", color="tab:purple", label="score of each copy")
    ax.axhline(float(np.mean(scores)), color="k", ls="--", label=f"image score = mean = {float(np.mean(scores)):.3g}")
    every = max(1, math.ceil(n / 16))  # at most 16 angle labels: they stay apart
    ax.set_xticks(np.arange(n)[::every], [f"{float(a):.0f}°" for a in angles][::every], fontsize=9)
    ax.set_xlabel("rotation angle of the copy")
    ax.set_ylabel("mean z² of the copy")
    ax.set_title("score of each rotated copy", fontsize=10)
    _legend_below(fig)
    fig.suptitle(title or "Test-time augmentation: rotated copies and their scores", fontsize=11)
    return fig


def score_distributions(scores: dict[str, pd.DataFrame]):
    """Per variant: score histogram per label (left) and scores per defect type (right), log scale."""
    import seaborn as sns
    from matplotlib.patches import Patch
    n = len(scores)
    fig, axes = plt.subplots(n, 2, figsize=(FIGURE_WIDTH_IN, 3.4 * n + 0.4), squeeze=False, layout="constrained")
    for row, (variant, frame) in enumerate(scores.items()):
        frame = frame.assign(label=np.where(frame["label"] == 1, "anomalous", "normal"))
        palette = {"normal": "tab:blue", "anomalous": "tab:red"}
        # a plain bool: seaborn takes numpy's True for a log base (1) and fails
        log = bool(frame["score"].min() > 0 and frame["score"].max() / frame["score"].min() > 20)
        sns.histplot(data=frame, x="score", hue="label", hue_order=["normal", "anomalous"], log_scale=log,
                     bins=15, element="step", palette=palette, ax=axes[row, 0], legend=False)
        axes[row, 0].set_title(f"{_label(variant)}: scores per label", fontsize=10)
        axes[row, 0].set_xlabel(_score_axis(axes[row, 0], frame["score"], "x"))
        axes[row, 0].set_ylabel("number of images")
        order = ["good"] + sorted(d for d in frame["defect_type"].unique() if d != "good")
        sns.boxplot(data=frame, x="defect_type", y="score", order=order, color="white", ax=axes[row, 1],
                    showfliers=False, log_scale=log)
        sns.stripplot(data=frame, x="defect_type", y="score", order=order, hue="label", palette=palette,
                      ax=axes[row, 1], legend=False)
        axes[row, 1].set_title(f"{_label(variant)}: scores per defect type", fontsize=10)
        axes[row, 1].set_xlabel("test folder (defect type)")
        axes[row, 1].set_ylabel(_score_axis(axes[row, 1], frame["score"], "y"))
        if len(order) > 4:  # MVTec's 5-8 defect types: slanted names stay apart
            plt.setp(axes[row, 1].get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    _legend_below(fig, [Patch(color=c, alpha=0.6) for c in palette.values()], list(palette))
    return fig


def roc_curves(rocs: dict[str, dict]):
    """ROC curve per variant; rocs[variant] = {'fpr': [...], 'tpr': [...], 'auroc': float}."""
    fig, ax = plt.subplots(figsize=(5.5, 6.2), layout="constrained")
    for variant, roc in rocs.items():
        ax.plot(roc["fpr"], roc["tpr"], color=VARIANT_COLORS.get(variant), lw=2,
                label=f"{_label(variant)} (AUROC {100 * roc['auroc']:.1f}%)")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance (AUROC 50%)")
    ax.set_xlabel("false positive rate (normal images flagged)")
    ax.set_ylabel("true positive rate (defects found)")
    ax.set_title("ROC curves on the test set", fontsize=11)
    ax.set_aspect("equal")
    _legend_below(fig, ncols=1)
    return fig


def auroc_per_defect(per_defect: pd.DataFrame):
    """Bars of AUROC (%) per defect type (each defect vs all normal test images); columns: variant, defect, auroc."""
    import seaborn as sns
    frame = per_defect.assign(variant=per_defect["variant"].map(_label), auroc=100 * per_defect["auroc"])
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 4), layout="constrained")  # legend included
    sns.barplot(data=frame, x="defect_type", y="auroc", hue="variant", ax=ax,
                palette={_label(k): c for k, c in VARIANT_COLORS.items()})
    ax.axhline(50, color="k", ls=":", lw=1)
    ax.set_ylim(0, 105)
    ax.set_xlabel("defect type")
    ax.set_ylabel("AUROC vs normal images (%)")
    ax.set_title("Which defects are easy? AUROC per defect type")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars: any bar can be short
    if frame["defect_type"].nunique() > 5:  # MVTec's 5-8 defect types: slanted names stay apart
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    return fig


def confusion_matrix_plot(matrix: np.ndarray, summary: dict, title: str = ""):
    """2×2 confusion matrix [[TN, FP], [FN, TP]] as a heatmap with the threshold's precision / recall / F1."""
    import seaborn as sns
    fig, ax = plt.subplots(figsize=(4.6, 4), layout="constrained")
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=["normal", "anomalous"], yticklabels=["normal", "anomalous"])
    ax.set_xlabel("predicted (score ≥ threshold → anomalous)")
    ax.set_ylabel("true label")
    ax.set_title(title or (f"threshold {summary['threshold']:.3g}: F1 {summary['f1']:.2f}, precision "
                           f"{summary['precision']:.2f}, recall {summary['recall']:.2f}"), fontsize=9)
    return fig


def auroc_vs_rotations_plot(curves: dict[str, pd.DataFrame]):
    """AUROC (%) against the number of test rotations (log2 axis): the test as scored with its interval over the
    test images (error bars), and ±1 std over repeated tests with fresh random angles (band)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
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
    _legend_below(fig)
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
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 4.8), layout="constrained")  # the column's width, legend below
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
    slanted = len(categories) > 8  # MVTec's 15 categories: slanted names stay apart; fewer fit upright, wrapped
    ax.set_xticks(x, [textwrap.fill(c, 16) for c in categories], rotation=20 if slanted else 0,
                  ha="right" if slanted else "center", rotation_mode="anchor")
    lowest = np.nanmin(table[columns].to_numpy(dtype=float))
    if lowest >= 50:  # AUROC's natural baseline is chance (50%): start there so that differences are visible
        ax.set_ylim(50, 100.5)
        ax.set_ylabel("image AUROC (%), axis from chance = 50%")
    else:
        ax.set_ylim(0, 100.5)
        ax.axhline(50, color="k", ls=":", lw=1)
        ax.set_ylabel("image AUROC (%)")
    ax.set_xlabel("category")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig)
    return fig


def forest_plot(comparison: pd.DataFrame, title: str = "Paired difference with DifferNet"):
    """ΔAUROC (points) per category and variant with its interval (`adnlib.run.stats.paired_comparison`): one
    row per category, the mean over categories last; filled markers where the row's verdict is 'beyond noise'
    (>= 3 seeds, Holm-corrected), dashed bars where the interval covers the test images only (too few seeds)."""
    variants = list(dict.fromkeys(comparison["variant"]))
    categories = [c for c in dict.fromkeys(comparison["category"]) if c != "mean"] + ["mean"]
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.55 * len(categories) * max(1, len(variants))), layout="constrained")
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
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, axis="x")
    _legend_below(fig)  # below the axes: a legend inside would cover a row's interval
    return fig


def paper_means_bars():
    """The papers' headline mean AUROC per dataset: DifferNet vs AttentDifferNet (and DifferNet's own 94.9)."""
    from adnlib.teach.paper import headline_table
    table = headline_table()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
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
    ax.set_title("Reported in the papers (AttentDifferNet = SE variant)", fontsize=11)
    _legend_below(fig)
    return fig


__all__ = ["PAGE_WIDTH_IN", "FIGURE_WIDTH_IN", "forest_plot",
           "save_figure", "denormalize", "dataset_grid", "scored_images", "toy_flow_panels", "loss_curve",
           "clamp_functions", "scaled_inputs", "embedding_vector", "latent_normality", "training_curves",
           "feature_shrinkage", "rotated_copies_scores", "score_distributions", "roc_curves", "auroc_per_defect",
           "confusion_matrix_plot", "auroc_vs_rotations_plot", "threshold_explorer", "comparison_bars",
           "paper_means_bars"]
