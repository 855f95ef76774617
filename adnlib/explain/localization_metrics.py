"""Pixel-level metrics of anomaly maps against ground-truth masks: pixel AUROC and PRO, and a paired bootstrap.

masks (N,H,W) bool (all False for a normal image), maps (N,H,W) float (higher = more anomalous), over all test
images, normal ones included.

* pixel AUROC: ``sklearn.metrics.roc_auc_score`` over every pixel of every image.
* PRO (per-region overlap, Bergmann et al., MVTec AD, IJCV 2021): for each threshold t, every connected defect
  region (``scipy.ndimage.label`` on each image's mask with 8-connectivity, ``np.ones((3, 3))``, as MVTec AD's
  evaluation code labels them; regions never join across images) scores
  the fraction of its pixels with map >= t; PRO(t) is the mean over all regions, so a small defect counts as much
  as a large one (unlike pixel recall). FPR(t) is the fraction of normal pixels (of all images) with map >= t. The
  PRO-vs-FPR curve is integrated with the trapezoid rule from FPR 0 to `max_fpr` (0.3), interpolating at 0.3,
  and divided by 0.3: 1 is perfect, a random map gives about 0.15. The curve is exact (every distinct map value
  is a threshold), as the MVTec AD evaluation code computes it.
* `paired_localization_bootstrap`: the difference B − A of a metric between two maps of the same images, with a
  percentile interval from the same stratified bootstrap as the image-level comparisons
  (`adnlib.run.stats.stratified_resamples`): defective and normal images are resampled separately, with
  replacement, their counts kept, the same images for both maps.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

MAX_FPR = 0.3
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)  # MVTec AD's evaluation: pixels touching at a corner join a region
_BINS = 1000  # bootstrap replicates use the maps' values quantised to this many levels (per map stack)


def _checked(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    masks, maps = np.asarray(masks).astype(bool), np.asarray(maps, dtype=np.float64)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None] if maps.ndim == 2 else maps
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks and maps must both be (N,H,W); got {masks.shape} and {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps hold NaN or infinite values")
    if not masks.any() or masks.all():
        raise ValueError("pixel metrics need both defect pixels and normal pixels in the masks")
    return masks, maps


def pixel_auroc(masks, maps) -> float:
    """AUROC over all pixels of all images (defect pixels positive)."""
    masks, maps = _checked(masks, maps)
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """(per-pixel weight 1/size of its region (0 outside defects), number of regions), regions labelled per image."""
    weights = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labels, n = label(mask, structure=EIGHT_CONNECTED)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            weights[i][mask] = 1.0 / sizes[labels[mask] - 1]
        n_regions += n
    return weights, n_regions


def _integrate(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """Trapezoid area under pro(fpr) (fpr non-decreasing, from 0) up to max_fpr, interpolating there, / max_fpr."""
    inside = fpr <= max_fpr
    x, y = fpr[inside], pro[inside]
    if x[-1] < max_fpr and inside.sum() < len(fpr):
        j = int(np.argmax(~inside))  # the first point beyond max_fpr
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        x, y = np.append(x, max_fpr), np.append(y, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / max_fpr)


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve: (fpr, pro), one point per distinct map value (threshold, high to low), from (0, 0)."""
    masks, maps = _checked(masks, maps)
    weights, n_regions = region_weights(masks)
    order = np.argsort(-maps.ravel(), kind="stable")
    values = maps.ravel()[order]
    fpr = np.cumsum(~masks.ravel()[order]) / np.count_nonzero(~masks)
    pro = np.cumsum(weights.ravel()[order]) / n_regions
    last_of_value = np.append(values[1:] != values[:-1], True)  # tied pixels pass a threshold together
    return np.concatenate([[0.0], fpr[last_of_value]]), np.concatenate([[0.0], pro[last_of_value]])


def pro_score(masks, maps, max_fpr: float = MAX_FPR) -> float:
    """PRO integrated up to FPR `max_fpr` and normalised by it (1 perfect; see the module docstring)."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], not {max_fpr}")
    fpr, pro = pro_curve(masks, maps)
    return _integrate(fpr, pro, max_fpr)


def localization_metrics(masks, maps, max_fpr: float = MAX_FPR) -> dict:
    """{"pixel_auroc", "pro", "n_images", "n_regions"} of one stack of maps."""
    masks, maps = _checked(masks, maps)
    return {"pixel_auroc": pixel_auroc(masks, maps), "pro": pro_score(masks, maps, max_fpr),
            "n_images": len(masks), "n_regions": region_weights(masks)[1]}


# --- paired bootstrap over images ----------------------------------------------------------------------------------
def _image_histograms(masks: np.ndarray, maps: np.ndarray, bins: int = _BINS) -> np.ndarray:
    """Per image (N, 3, levels): counts of normal pixels, of defect pixels, and region weights per map level."""
    edges = np.unique(np.quantile(maps, np.linspace(0, 1, bins + 1)[1:-1]))
    levels = np.searchsorted(edges, maps.reshape(len(maps), -1), side="right")
    weights, _ = region_weights(masks)
    flat_masks, flat_w = masks.reshape(len(masks), -1), weights.reshape(len(masks), -1)
    n = len(edges) + 1
    out = np.zeros((len(maps), 3, n))
    for i in range(len(maps)):
        out[i, 0] = np.bincount(levels[i], weights=~flat_masks[i], minlength=n)
        out[i, 1] = np.bincount(levels[i], weights=flat_masks[i], minlength=n)
        out[i, 2] = np.bincount(levels[i], weights=flat_w[i], minlength=n)
    return out


def _metrics_of_histograms(hist: np.ndarray, n_regions: np.ndarray, max_fpr: float) -> np.ndarray:
    """(pixel AUROC, PRO) of summed histograms (B, 3, levels), thresholds from the highest level down, n_regions
    (B,) -> (B, 2)."""
    neg, pos, w = (np.concatenate([np.zeros((len(hist), 1)), np.cumsum(hist[:, k, ::-1], axis=1)], axis=1)
                   for k in range(3))
    fpr, tpr, pro = neg / neg[:, -1:], pos / pos[:, -1:], w / n_regions[:, None]
    auroc = np.sum((fpr[:, 1:] - fpr[:, :-1]) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
    return np.stack([auroc, [_integrate(f, p, max_fpr) for f, p in zip(fpr, pro)]], axis=1)


def paired_localization_bootstrap(masks, maps_a, maps_b, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                                  max_fpr: float = MAX_FPR) -> dict:
    """Difference B − A in pixel AUROC and in PRO between two maps of the same images, with bootstrap intervals.

    -> {"pixel_auroc": {"a", "b", "delta", "low", "high"}, "pro": {...}, "n_boot", "level"}: a, b, delta exact;
    low/high the percentile interval of the replicates. Each replicate resamples the images with a defect and the
    normal ones separately (`adnlib.run.stats.stratified_resamples`: counts kept, the same images for A and B).
    In the replicates the maps are quantised to 1000 levels each (quantiles of the pooled map): fast, and close
    to the exact values.
    """
    from adnlib.run.stats import stratified_resamples

    masks, maps_a = _checked(masks, maps_a)
    _, maps_b = _checked(masks, maps_b)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    exact = {"pixel_auroc": (pixel_auroc(masks, maps_a), pixel_auroc(masks, maps_b)),
             "pro": (pro_score(masks, maps_a, max_fpr), pro_score(masks, maps_b, max_fpr))}
    defective = masks.reshape(len(masks), -1).any(1)
    if defective.all():
        raise ValueError("the bootstrap needs normal pixels outside the defects; every image here is all defect")
    draws = stratified_resamples(np.random.default_rng(seed), defective, n_boot)  # (B, N)
    counts = np.stack([np.bincount(row, minlength=len(masks)) for row in draws]).astype(np.float64)  # (B, N)
    regions = counts @ np.array([label(m, structure=EIGHT_CONNECTED)[1] for m in masks], dtype=np.float64)
    deltas = []
    for hist in (_image_histograms(masks, maps_a), _image_histograms(masks, maps_b)):
        summed = (counts @ hist.reshape(len(masks), -1)).reshape(n_boot, 3, -1)  # every replicate at once
        deltas.append(_metrics_of_histograms(summed, regions, max_fpr))
    deltas = deltas[1] - deltas[0]  # (B, 2): B − A
    tail = (1 - level) / 2 * 100
    out = {"n_boot": n_boot, "level": level}
    for k, (name, (a, b)) in enumerate(exact.items()):
        low, high = np.percentile(deltas[:, k], [tail, 100 - tail])
        out[name] = {"a": a, "b": b, "delta": b - a, "low": float(low), "high": float(high)}
    return out


# --- maps of a model, per method ------------------------------------------------------------------------------------
# 'nll-gradient': DifferNet's own localisation (the gradient map of its official code); named after what it is, not
# after a model, since every model (DifferNet, SE, CBAM) has one.
METHODS = ("nll-gradient", "gradcam", "cbam-spatial")
RENAMED = {"differnet": "nll-gradient"}


def cbam_spatial_maps(model, images) -> np.ndarray:
    """The first CBAM block's spatial map of the un-rotated full-size image, upsampled bilinearly: (B,S,S)."""
    import torch
    import torch.nn.functional as F

    from adnlib.errors import ConfigError
    from adnlib.explain.gradcam import explaining
    from adnlib.model.attention import CBAM

    blocks = model.backbone.blocks
    if not blocks or not isinstance(blocks[0], CBAM):
        raise ConfigError(f"method cbam-spatial needs a CBAM model; this checkpoint is variant "
                          f"{model.config.variant!r} (choose nll-gradient or gradcam)")
    device = next(model.parameters()).device
    with explaining(model), torch.no_grad():
        model.backbone(model.prepare(images.to(device)))
        spatial = blocks[0].last_spatial_map.float().cpu()
    return F.interpolate(spatial, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()


def check_method(method: str) -> str:
    """The method's name; ValueError (naming the new name, for a renamed one) for anything not in METHODS."""
    if method in RENAMED:
        raise ValueError(f"localisation method {method!r} is now called {RENAMED[method]!r} (DifferNet's gradient "
                         "map of the negative log-likelihood; every model has one)")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def method_maps(model, images, method: str, batch_size: int = 8) -> np.ndarray:
    """Anomaly maps (B,S,S) of uint8 images (B,3,S,S) by one of METHODS, each normalised per image to [0, 1]
    (adnlib.explain.evidence.NORMALISATION: every method alike, so that their scores compare): 'nll-gradient'
    (DifferNet's gradient map, `differnet_localization`, the official fixed angles), 'gradcam' (Grad-CAM of the
    anomaly score, the mean over scales, `anomaly_cam`), 'cbam-spatial' (`cbam_spatial_maps`)."""
    from adnlib.explain.gradcam import anomaly_cam
    from adnlib.explain.localization import differnet_localization, normalise_maps

    compute = {"nll-gradient": differnet_localization,
               "gradcam": lambda m, x: anomaly_cam(m, x, "all", "gradcam"),
               "cbam-spatial": cbam_spatial_maps}[check_method(method)]
    parts = [compute(model, images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return normalise_maps(np.concatenate(parts))


__all__ = ["MAX_FPR", "METHODS", "method_maps", "check_method", "cbam_spatial_maps", "pixel_auroc",
           "pro_curve", "pro_score", "region_weights", "localization_metrics",
           "paired_localization_bootstrap"]
