"""Preconditions before a map is read as "where the model looks", and the maps' scores on equal terms.

A localisation claim needs maps that follow the defects of *their own* image. A map that is (nearly) the same blob
on every image, as Grad-CAM on a small feature grid can be, scores well whenever the defects sit where the blob is;
pure noise scores at chance. Two controls, used by notebook 05 and `adnlib localize` before anything is concluded:

* `shuffled_mask_control`: each map is scored (PRO) against its own mask and against another defective image's mask
  (each defective image's mask moved to the next defective image; normal images keep their empty masks). A map is
  read as an explanation only when its own-mask PRO beats the shuffled one beyond the paired bootstrap interval
  (the interval of the difference lies above 0). A fixed blob scores the same against any mask; a map that finds
  each defect loses its score when the masks move; noise scores at chance against both.
* `centre_prior_maps`: one fixed Gaussian at the image centre for every image, a baseline that any map must beat
  on PRO and pixel AUROC before "it finds the defects" is said.

Equal terms: every map that enters a comparison is normalised the same way, per image to [0, 1] (min-max:
`adnlib.explain.localization.normalise_maps`), as Grad-CAM maps come from pytorch-grad-cam and as the official
DifferNet code draws its maps (docs/protocol.md §7); `score_maps` scores a set of maps so.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

NORMALISATION = "per image, min-max to [0, 1]"


def shuffled_order(defective: np.ndarray) -> np.ndarray:
    """A permutation of the images (N,) that gives each defective image the *map* of the next defective image (in
    index order, the last the first's) and leaves normal images alone: scoring maps[order] against masks scores
    every defective image's mask with another image's map, which is the same as moving the masks. Fewer than two
    defective images: the identity (there is nothing to shuffle)."""
    defective = np.asarray(defective, dtype=bool)
    order = np.arange(len(defective))
    index = np.flatnonzero(defective)
    if len(index) >= 2:
        order[index] = np.roll(index, -1)
    return order


def shuffled_mask_control(masks, maps, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """PRO of maps (N,H,W) against their own masks (N,H,W) bool minus PRO against shuffled masks (`shuffled_order`),
    with the paired stratified bootstrap of `localization_metrics.paired_localization_bootstrap` (the same images
    resampled for both) -> {"pro", "pro_shuffled", "control_delta" (pro − pro_shuffled), "control_low",
    "control_high" (its interval), "readable", "n_defective"}.

    readable: control_low > 0 (the map follows its own image's defects beyond what resampling the images can
    produce).
    Fewer than 2 defective images, or n_boot 0: the control cannot be run; every number but pro is NaN and
    readable is False.
    """
    from adnlib.explain.localization_metrics import paired_localization_bootstrap, pro_score
    masks, maps = np.asarray(masks, dtype=bool), np.asarray(maps, dtype=np.float64)
    defective = masks.reshape(len(masks), -1).any(1)
    n_defective = int(defective.sum())
    own = pro_score(masks, maps)
    if n_defective < 2 or n_boot < 1:
        return {"pro": own, "pro_shuffled": float("nan"), "control_delta": float("nan"), "control_low": float("nan"),
                "control_high": float("nan"), "readable": False, "n_defective": n_defective}
    result = paired_localization_bootstrap(masks, maps[shuffled_order(defective)], maps, n_boot=n_boot,
                                           level=level, seed=seed)["pro"]
    return {"pro": result["b"], "pro_shuffled": result["a"], "control_delta": result["delta"],
            "control_low": result["low"], "control_high": result["high"], "readable": bool(result["low"] > 0),
            "n_defective": n_defective}


def control_text(controls: dict) -> str:
    """One sentence per map set ({name: shuffled_mask_control, or a row of score_maps}): whether it can be read as
    an explanation."""
    lines = []
    for name, c in controls.items():
        interval = f"Δ {c['control_delta']:+.3f} [{c['control_low']:+.3f}, {c['control_high']:+.3f}]"
        if not np.isfinite(c["control_delta"]):
            lines.append(f"* `{name}`: fewer than two defective images, so the shuffled-mask control cannot run; the "
                         "map is not read as an explanation.")
        elif c["readable"]:
            lines.append(f"* `{name}`: PRO {c['pro']:.3f} against its own masks, {c['pro_shuffled']:.3f} against "
                         f"other images' masks ({interval}): it follows "
                         "the defects of its own image, so it can be read as an explanation of that image.")
        else:
            lines.append(f"* `{name}`: PRO {c['pro']:.3f} against its own masks, {c['pro_shuffled']:.3f} against "
                         f"other images' masks ({interval}, the "
                         "interval reaches 0): it is not shown to follow its own image's defects more than "
                         "another's, so it cannot be read as where the model looks on a given image; its "
                         "localisation score may come from where defects tend to lie.")
    return "\n".join(lines)


def readable(controls: dict[str, dict], names) -> bool:
    """True when every map set in `names` passed its shuffled-mask control (`shuffled_mask_control`)."""
    return all(controls[name]["readable"] for name in names)


def centre_prior_maps(n: int, height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """n copies of one Gaussian at the image centre, sigma = sigma_fraction × the shorter side -> (n,H,W) in [0,1]:
    the map of a "model" that always looks at the middle."""
    y = np.arange(height) - (height - 1) / 2
    x = np.arange(width) - (width - 1) / 2
    sigma = sigma_fraction * min(height, width)
    blob = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))
    return np.broadcast_to(blob / blob.max(), (n, height, width)).copy()


def score_maps(masks, maps: dict, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each set of maps ({name: (N,H,W)}) normalised per image (NORMALISATION) and scored against the masks: one
    row per name with pixel_auroc, pro, n_images, n_regions and its shuffled-mask control (pro_shuffled,
    control_delta, control_low, control_high, readable, n_defective)."""
    from adnlib.explain.localization import normalise_maps
    from adnlib.explain.localization_metrics import localization_metrics
    rows = []
    for name, stack in maps.items():
        stack = normalise_maps(stack)
        rows.append({"name": name, **localization_metrics(masks, stack),
                     **shuffled_mask_control(masks, stack, n_boot=n_boot, seed=seed)})
    return pd.DataFrame(rows)
