"""Preconditions before a map is read as "where the model looks".

A localisation claim needs maps that depend on the image. A map that is (nearly) the same blob on every image, as
Grad-CAM on a small feature grid can be, scores well whenever the defects sit where the blob is, and says nothing
about the model. Two checks, used by notebook 05 before it draws any conclusion:

* `image_dependence`: the mean correlation between the maps of *different* images (1 = the same map everywhere);
* `centre_prior_maps`: one fixed Gaussian at the image centre for every image, a baseline that any map must beat
  on PRO and pixel AUROC before "it finds the defects" is said.
"""
from __future__ import annotations

import numpy as np

# Above this mean inter-image correlation the maps are treated as one map: they do not tell the images apart. In a
# demo run (random backbone, 8 epochs) SE's Grad-CAMs of different images correlated 0.98, DifferNet's 0.38
# (docs/protocol.md §8).
IMAGE_INDEPENDENT = 0.9


def image_dependence(maps: np.ndarray) -> float:
    """Mean Pearson correlation between the maps of different images: maps (B,H,W) -> a float in [-1, 1], NaN for
    a single image (nothing to compare). Near 1: the map is the same whatever the image. A constant map (no
    variation at all) counts as 1."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"need maps of shape (B,H,W), got {maps.shape}")
    if len(maps) < 2:
        return float("nan")
    flat = maps.reshape(len(maps), -1)
    flat = flat - flat.mean(1, keepdims=True)
    norms = np.sqrt((flat * flat).sum(1))
    flat = np.where(norms[:, None] > 1e-12, flat / np.maximum(norms, 1e-12)[:, None], 0.0)
    corr = flat @ flat.T
    flat_pair = (norms[:, None] <= 1e-12) & (norms[None, :] <= 1e-12)  # two constant maps: identical
    corr = np.where(flat_pair, 1.0, corr)
    off_diagonal = ~np.eye(len(maps), dtype=bool)
    return float(corr[off_diagonal].mean())


def centre_prior_maps(n: int, height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """n copies of one Gaussian at the image centre, sigma = sigma_fraction × the shorter side -> (n,H,W) in [0,1]:
    the map of a "model" that always looks at the middle."""
    y = np.arange(height) - (height - 1) / 2
    x = np.arange(width) - (width - 1) / 2
    sigma = sigma_fraction * min(height, width)
    blob = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))
    return np.broadcast_to(blob / blob.max(), (n, height, width)).copy()


def dependence_text(dependence: dict[str, float], threshold: float = IMAGE_INDEPENDENT) -> str:
    """One sentence per map set ({name: image_dependence}): whether it can show where the model looks."""
    lines = []
    for name, value in dependence.items():
        if not np.isfinite(value):
            lines.append(f"* `{name}`: one image only, so whether its map depends on the image cannot be told; it is "
                         "not read as an explanation.")
        elif value >= threshold:
            lines.append(f"* `{name}`: maps of different images correlate **{value:.2f}** on average (≥ {threshold}): "
                         "nearly the same map on every image, so it cannot show where the model looks on a given "
                         "image; any localisation score it gets comes from where the defects happen to lie.")
        else:
            lines.append(f"* `{name}`: maps of different images correlate **{value:.2f}** on average (< {threshold}): "
                         "the map changes with the image, so it can be read as an explanation of that image.")
    return "\n".join(lines)


def readable(dependence: dict[str, float], names, threshold: float = IMAGE_INDEPENDENT) -> bool:
    """True when every map set in `names` is known to depend on the image (its inter-image correlation is a number
    below threshold; NaN, from one image, is not)."""
    return all(np.isfinite(dependence[name]) and dependence[name] < threshold for name in names)
