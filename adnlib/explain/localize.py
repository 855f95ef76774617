"""Localisation of a category's test split, measured against its ground-truth masks: the pipeline behind
`adnlib localize` (and notebook 05's pixel metrics), as one call.

`localize(model, data_root, category, methods)` computes each method's anomaly maps of every test image
(`localization_metrics.method_maps`, at the official fixed angles; every map normalised per image to [0, 1], all
methods alike), their pixel AUROC and PRO, the shuffled-mask control that says whether a method's maps can be read
as explanations (`adnlib.explain.evidence.shuffled_mask_control`), a paired bootstrap of each method against the
first, and, with `out_dir`, writes `localization.json` and `overlays/<method>/*.png` (image | map | mask of the
first test images, defective ones first).

Writing: a folder that holds a localization is replaced only with `overwrite` (CLI `--overwrite`). The new
overlays are written into a staging folder and `localization.json` into a temporary file; then the old
`localization.json` is removed, the overlays are swapped in whole, and the new `localization.json` is renamed into
place last. So a `localization.json` always sits beside its own overlays (methods the new run lacks disappear), and
a failed or killed run leaves either the previous localization or overlays without a `localization.json`, which
the next run reports as interrupted.
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

from adnlib.errors import CheckpointError, DatasetError, OutputExistsError

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


def masked_test_split(data_root: str | Path, category: str, img_size: int):
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


def check_localization_output(out_dir: str | Path, overwrite: bool = False) -> Path:
    """OutputExistsError (one line) when `out_dir` holds a localization (or an interrupted one: overlays without
    localization.json) and not `overwrite` -> the folder's Path."""
    out_dir = Path(out_dir)
    if not overwrite and ((out_dir / RESULT_FILE).exists() or (out_dir / OVERLAYS).exists()):
        state = "a localization" if (out_dir / RESULT_FILE).exists() else \
            "an interrupted localization (overlays without localization.json)"
        raise OutputExistsError(f"--out {out_dir} holds {state}; pass --overwrite or choose another --out")
    return out_dir


def localize(model, data_root: str | Path, category: str, methods=("nll-gradient",), *,
             out_dir: str | Path | None = None, overlays: int = 4, n_boot: int = 1000,
             source: str | Path | None = None, overwrite: bool = False, device: str = "auto",
             verify: bool | str = True, wait: float = 0) -> Localization:
    """Maps of every test image by each method, scored against the masks -> Localization.

    model: an AttentDifferNet, or the path of a trained checkpoint (loaded on `device`, verified against the
    metrics.json beside it as `load_checkpoint` does; CheckpointError when it was trained on another category).
    methods: any of localization_metrics.METHODS ('nll-gradient', 'gradcam', 'cbam-spatial' for CBAM models), the
    first being the reference of the comparisons. metrics: {"category", "checkpoint" (source), "variant",
    "img_size", "normalisation", "methods": {method: {pixel_auroc, pro (fractions in [0, 1]), n_images, n_regions,
    seconds, "shuffled_control": shuffled_mask_control(...)}}, "comparisons": {"<m> - <first>":
    paired_localization_bootstrap(...)}} (n_boot resamples; no control or comparison when n_boot is 0). With
    out_dir, writes localization.json and `overlays` PNGs per method there, under the folder's write lock (`wait`
    seconds for another writer); a previous localization there is replaced only with overwrite (OutputExistsError
    otherwise, before any map is computed).
    """
    if out_dir is not None:
        check_localization_output(out_dir, overwrite)
    if isinstance(model, (str, Path)):
        from adnlib.run.evaluation import check_inputs
        check_inputs(model, data_root, category)  # nothing is made for a localization that cannot run
        source, model = str(source or model), _trained_model(model, category, device, verify)
    if out_dir is None:
        return _localize(model, data_root, category, methods, None, overlays, n_boot, source)
    from adnlib.io import check_output_folder
    from adnlib.run.lock import folder_lock
    check_output_folder(out_dir)
    with folder_lock(out_dir, wait=wait, command="adnlib localize"):
        check_localization_output(out_dir, overwrite)  # again: another localization may have finished meanwhile
        return _localize(model, data_root, category, methods, Path(out_dir), overlays, n_boot, source)


def _trained_model(checkpoint: str | Path, category: str, device: str, verify: bool | str):
    """The model of a checkpoint, verified, trained on `category` (CheckpointError otherwise)."""
    from adnlib.run.checkpoint import model_from_checkpoint
    from adnlib.run.device import resolve_device
    model = model_from_checkpoint(checkpoint, resolve_device(device), verify=verify)
    trained_on = model.checkpoint_info.get("category")
    if trained_on and trained_on != category:
        raise CheckpointError(f"{checkpoint} was trained on category {trained_on!r}, not {category!r}")
    return model


def _localize(model, data_root, category: str, methods, out_dir: Path | None, overlays: int, n_boot: int,
              source) -> Localization:
    from adnlib.explain.evidence import NORMALISATION, shuffled_mask_control
    from adnlib.explain.localization_metrics import check_method, localization_metrics, paired_localization_bootstrap
    from adnlib.run.memory import check_memory
    methods = [check_method(m) for m in dict.fromkeys(methods)]
    source = str(source) if source is not None else "the model"
    if "cbam-spatial" in methods and model.config.variant != "cbam":
        raise CheckpointError(f"--method cbam-spatial needs a CBAM checkpoint; {source} is variant "
                              f"{model.config.variant!r}")
    check_memory(model.config, copies=model.config.n_test_rotations, images=0, training=True,
                 device=next(model.parameters()).device, what="the gradient maps")  # one image's copies, backward
    dataset, images, masks = masked_test_split(data_root, category, model.config.img_size)
    if out_dir is not None:
        _check_room(out_dir, model.config.img_size, len(methods) * min(overlays, len(dataset)))
    result = {"category": category, "checkpoint": source, "variant": model.config.variant,
              "img_size": model.config.img_size, "normalisation": NORMALISATION, "methods": {}}
    maps = {}
    for method in methods:
        maps[method], seconds = _maps(model, images, method, source)
        result["methods"][method] = {**localization_metrics(masks, maps[method]), "seconds": seconds}
        if n_boot:
            result["methods"][method]["shuffled_control"] = shuffled_mask_control(masks, maps[method], n_boot=n_boot)
    result["comparisons"] = {f"{m} - {methods[0]}": paired_localization_bootstrap(
        masks, maps[methods[0]], maps[m], n_boot=n_boot) for m in methods[1:]} if n_boot else {}
    if out_dir is not None:
        write_localization(out_dir, result, dataset, images, maps, masks, overlays)
    return Localization(result, maps, masks)


def _check_room(out_dir: Path, img_size: int, n_overlays: int) -> None:
    from adnlib.run.outputs import check_output_folder
    png = img_size * 3 * img_size * 3  # one overlay row, uncompressed: an upper bound of its PNG
    check_output_folder(out_dir, n_overlays * png, largest=f"{n_overlays} overlay PNGs")


def _overlay_row(image: torch.Tensor, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | map over it (normalised per image already) | ground truth, as one (S, 3S, 3) uint8 row."""
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
    """localization.json and overlays/<method>/ in out_dir, replacing a previous localization's as a whole, in the
    order of the module's docstring (localization.json last)."""
    from adnlib.io import create_new, write_json
    from adnlib.run.outputs import write_error
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    token = secrets.token_hex(4)
    staging, retired = out_dir / f"{_STAGING}{token}.new", out_dir / f"{_STAGING}{token}.old"
    staged_json = None
    try:
        staging.mkdir()
        for method, method_maps in maps.items():
            _save_overlays(staging / method, dataset, images, method_maps, masks, overlays)
        fd, staged_json = create_new(out_dir, f"{_STAGING}{token}.", ".json")
        os.close(fd)
        write_json(staged_json, result)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)  # never the old results beside the new overlays
        _swap_in(staging, out_dir / OVERLAYS, retired)
        os.replace(staged_json, out_dir / RESULT_FILE)
    except OSError as exc:
        failure = write_error(exc, out_dir / OVERLAYS)
        if failure is None:
            raise
        raise failure from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
        if staged_json is not None:
            staged_json.unlink(missing_ok=True)


__all__ = ["Localization", "localize", "masked_test_split", "write_localization", "check_localization_output",
           "RESULT_FILE", "OVERLAYS"]
