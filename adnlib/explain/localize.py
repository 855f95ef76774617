"""Localisation of a category's test split, measured against its ground-truth masks: the pipeline behind
`adnlib localize` (and notebook 05's pixel metrics), as one call.

`localize(model, data_root, category, methods)` computes each method's anomaly maps of every test image
(`localization_metrics.method_maps`, at the official fixed angles), their pixel AUROC and PRO, a paired bootstrap of
each method against the first, and, with `out_dir`, writes `localization.json` and `overlays/<method>/*.png`
(image | map | mask of the first test images, defective ones first).

Writing: every file atomically; the overlays are written into a staging folder and swapped in whole, so the
overlays of a previous localization in the same folder never survive beside a new `localization.json` (methods it
had and this one lacks disappear too), and a failed or killed run leaves the previous ones.
"""
from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adnlib.errors import CheckpointError, DatasetError

RESULT_FILE = "localization.json"
OVERLAYS = "overlays"
_STAGING = ".overlays-"  # staging and retired overlay folders: .overlays-<token>.new / .old


@dataclass
class Localization:
    """What `localize` found: metrics (the JSON of localization.json), maps {method: (N,S,S) float32} and the
    masks (N,S,S) bool, in the order of the test split."""
    metrics: dict
    maps: dict[str, np.ndarray]
    masks: np.ndarray


def test_masks(data_root: str | Path, category: str, img_size: int):
    """(dataset, images (N,3,S,S) uint8, masks (N,S,S) bool) of a category's test split; DatasetError (one line)
    when the masks are missing or mark no defect pixel at all (or nothing but defect pixels): pixel AUROC and PRO
    need both."""
    from adnlib.data.datasets import AnomalyDataset
    dataset = AnomalyDataset(data_root, category, "test", img_size, cache=True, masks=True)
    masks = dataset.all_masks().numpy().astype(bool)
    where = Path(data_root) / category / "ground_truth"
    if not masks.any():
        raise DatasetError(f"the ground-truth masks of {category} ({where}, {len(masks)} test images) mark no defect "
                           "pixel: pixel AUROC and PRO need defect pixels; check the masks (white = defect)")
    if masks.all():
        raise DatasetError(f"the ground-truth masks of {category} ({where}) mark every pixel as a defect: pixel "
                           "AUROC and PRO need normal pixels too; check the masks (black = normal)")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return dataset, images, masks


def _maps(model, images: torch.Tensor, method: str, source: str) -> tuple[np.ndarray, float]:
    """(maps (N,S,S), seconds); CheckpointError when a map is not finite (the model's training diverged)."""
    from adnlib.explain.localization_metrics import method_maps
    start = time.perf_counter()
    maps = method_maps(model, images, method)
    if not np.isfinite(maps).all():
        raise CheckpointError(f"{source} gives non-finite {method} maps: the training that wrote it diverged")
    return maps, time.perf_counter() - start


def localize(model, data_root: str | Path, category: str, methods=("differnet",), *,
             out_dir: str | Path | None = None, overlays: int = 4, n_boot: int = 1000,
             source: str | Path | None = None) -> Localization:
    """Maps of every test image by each method, scored against the masks -> Localization.

    methods: any of localization_metrics.METHODS ('differnet', 'gradcam', 'cbam-spatial' for CBAM models), the
    first being the reference of the comparisons. metrics: {"category", "checkpoint" (source), "variant",
    "img_size", "methods": {method: {pixel_auroc, pro, n_images, n_regions, seconds}}, "comparisons":
    {"<m> - <first>": paired_localization_bootstrap(...)} (n_boot resamples; none when n_boot is 0)}. With out_dir,
    writes localization.json and `overlays` PNGs per method there (replacing a previous localization's).
    """
    from adnlib.explain.localization_metrics import localization_metrics, paired_localization_bootstrap
    methods = list(dict.fromkeys(methods))
    source = str(source) if source is not None else "the model"
    if "cbam-spatial" in methods and model.config.variant != "cbam":
        raise CheckpointError(f"--method cbam-spatial needs a CBAM checkpoint; {source} is variant "
                              f"{model.config.variant!r}")
    dataset, images, masks = test_masks(data_root, category, model.config.img_size)
    if out_dir is not None:
        _check_room(Path(out_dir), model.config.img_size, len(methods) * min(overlays, len(dataset)))
    result = {"category": category, "checkpoint": source, "variant": model.config.variant,
              "img_size": model.config.img_size, "methods": {}}
    maps = {}
    for method in methods:
        maps[method], seconds = _maps(model, images, method, source)
        result["methods"][method] = {**localization_metrics(masks, maps[method]), "seconds": seconds}
    result["comparisons"] = {f"{m} - {methods[0]}": paired_localization_bootstrap(
        masks, maps[methods[0]], maps[m], n_boot=n_boot) for m in methods[1:]} if n_boot else {}
    if out_dir is not None:
        write_localization(Path(out_dir), result, dataset, images, maps, masks, overlays)
    return Localization(result, maps, masks)


def _check_room(out_dir: Path, img_size: int, n_overlays: int) -> None:
    from adnlib.run.outputs import check_output_folder
    png = img_size * 3 * img_size * 3  # one overlay row, uncompressed: an upper bound of its PNG
    check_output_folder(out_dir, n_overlays * png, largest=f"{n_overlays} overlay PNGs")


def _overlay_row(image: torch.Tensor, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | min-max stretched map over it | ground truth, as one (S, 3S, 3) uint8 row."""
    from adnlib.explain.attention_viz import overlay_heatmap, to_display
    truth = np.repeat(mask[..., None].astype(np.float32), 3, axis=2)
    row = np.concatenate([to_display(image), overlay_heatmap(image, heat, normalize=True), truth], 1)
    return (row * 255).round().astype(np.uint8)


def _save_overlays(folder: Path, dataset, images, maps, masks, n: int) -> None:
    """The first n test images, defective ones first, one PNG each (atomic writes)."""
    from PIL import Image

    from adnlib.run.checkpoint import atomic_write
    order = sorted(range(len(dataset)), key=lambda i: (dataset.samples[i].label == 0, i))[:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i in order:
        sample = dataset.samples[i]
        picture = Image.fromarray(_overlay_row(images[i], maps[i], masks[i]))
        atomic_write(folder / f"{sample.defect_type}_{sample.path.stem}.png",
                     lambda tmp, picture=picture: picture.save(tmp, format="PNG"))


def _remove_leftovers(out_dir: Path) -> None:
    """Staging and retired overlay folders of runs that were killed (this command holds the folder's lock)."""
    for leftover in out_dir.glob(f"{_STAGING}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(staging: Path, target: Path, retired: Path) -> None:
    """Put the folder `staging` in the place of `target`, the previous `target` moved to `retired` (restored if
    the second rename fails)."""
    had = target.exists()
    if had:
        os.replace(target, retired)
    try:
        os.replace(staging, target)
    except OSError:
        if had:
            os.replace(retired, target)
        raise


def write_localization(out_dir: Path, result: dict, dataset, images, maps: dict, masks, overlays: int) -> None:
    """localization.json and overlays/<method>/ in out_dir, replacing a previous localization's as a whole."""
    from adnlib.run.checkpoint import write_json
    from adnlib.run.outputs import write_error
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    token = secrets.token_hex(4)
    staging, retired = out_dir / f"{_STAGING}{token}.new", out_dir / f"{_STAGING}{token}.old"
    try:
        staging.mkdir()
        for method, method_maps in maps.items():
            _save_overlays(staging / method, dataset, images, method_maps, masks, overlays)
        _swap_in(staging, out_dir / OVERLAYS, retired)
    except OSError as exc:
        failure = write_error(exc, out_dir / OVERLAYS)
        if failure is None:
            raise
        raise failure from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    write_json(out_dir / RESULT_FILE, result)


__all__ = ["Localization", "localize", "test_masks", "write_localization", "RESULT_FILE", "OVERLAYS"]
