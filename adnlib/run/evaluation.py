"""Evaluate a trained checkpoint on a category's test split, and write what it found: `adnlib evaluate` as one call.

`evaluate_checkpoint` loads the checkpoint (verified against the metrics.json beside it: `load_checkpoint`), scores
every test image with the rotations of the checkpoint's own epoch, and returns the AUROC overall and per defect.
With `out_dir` it writes `scores.csv` and `metrics.json` there under the folder's write lock, in an order that
cannot mix two evaluations: the old `metrics.json` goes first, then the new scores, then the new `metrics.json`
last (a folder holding a `metrics.json` holds its own scores beside it). A folder that holds a training run is
refused: an evaluation must not replace a run's record of its config and weights.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from adnlib.errors import OutputExistsError

RESULT_FILES = ("scores.csv", "metrics.json")
_TRAINING_FILES = ("checkpoint.pt", "history.csv")


def check_evaluation_output(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check an evaluation's output folder before any work -> the folder's Path. OutputExistsError (one line) if it
    is a file or lies under one, if it holds a training run (its checkpoint.pt, history.csv, or a metrics.json
    recording a config and weights: even with `overwrite`), or an evaluation (finished, or interrupted: scores
    without metrics) and not `overwrite`."""
    out_dir = Path(out_dir)
    blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocking == out_dir:
        raise OutputExistsError(f"--out {out_dir} is a file, not a folder: choose a folder for scores.csv and "
                                "metrics.json")
    if blocking is not None:
        raise OutputExistsError(f"--out {out_dir} cannot be a folder: {blocking} is a file")
    if _holds_training_run(out_dir):
        raise OutputExistsError(f"--out {out_dir} holds a training run (its metrics.json records the run's config and "
                                "weights): evaluate into another folder, never over a run's own results")
    if not overwrite and any((out_dir / name).exists() for name in RESULT_FILES):
        state = ("an interrupted evaluation (scores.csv without metrics.json)"
                 if not (out_dir / "metrics.json").exists() else "an evaluation")
        raise OutputExistsError(f"--out {out_dir} holds {state}; pass --overwrite or choose another --out")
    return out_dir


def _holds_training_run(folder: Path) -> bool:
    if any((folder / name).exists() for name in _TRAINING_FILES):
        return True
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and ("weights" in metrics or "config" in metrics)


def check_inputs(checkpoint: str | Path, data_root: str | Path, category: str) -> None:
    """DatasetError or CheckpointError (one line) unless the category's folder and the checkpoint file exist."""
    from adnlib.data.datasets import category_dir
    from adnlib.errors import CheckpointError
    category_dir(data_root, category)
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")


def write_evaluation(out_dir: Path, scores, metrics: dict) -> None:
    """scores.csv and metrics.json into out_dir, never mixing evaluations: the old metrics.json is removed first
    and the new one written last (each file atomically)."""
    from adnlib.io import write_csv, write_json
    (out_dir / "metrics.json").unlink(missing_ok=True)
    write_csv(out_dir / "scores.csv", scores)
    write_json(out_dir / "metrics.json", metrics)


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path, category: str, *, tta: int | None = None,
                        device: str = "auto", expect=None, out_dir: str | Path | None = None,
                        overwrite: bool = False, verify: bool | str = True, skip_corrupt: bool = False,
                        wait: float = 0, progress: bool = True) -> dict:
    """Score `category`'s test split with a trained checkpoint -> a dict: auroc, auroc_per_defect (fractions in
    [0, 1]), category, variant, checkpoint, n_rotations, backbone_weights, test_rotations, precision and device.

    tta: rotations per test image (default: the checkpoint's n_test_rotations), drawn as the checkpoint's own epoch
    drew them. expect: a Config or {field: value} the checkpoint must match (CheckpointError otherwise). verify: as
    in `load_checkpoint` (default: the file must be the one the metrics.json beside it records). With out_dir:
    scores.csv and metrics.json (this dict plus the ROC points) written there under the folder's lock
    (`wait` seconds for another writer), never over a training run, and over an evaluation only with overwrite.

    >>> result = evaluate_checkpoint("runs/se-disc/checkpoint.pt", "data/demo", "disc")  # doctest: +SKIP
    >>> round(result["auroc"], 3)  # doctest: +SKIP
    0.812
    """
    from adnlib.run.lock import folder_lock
    from adnlib.run.outputs import check_output_folder
    if out_dir is None:
        return _evaluate(checkpoint, data_root, category, tta, device, expect, verify, skip_corrupt, progress)[0]
    out_dir = check_evaluation_output(out_dir, overwrite)  # before any scoring
    check_inputs(checkpoint, data_root, category)  # nothing is made for an evaluation that cannot run
    check_output_folder(out_dir)
    with folder_lock(out_dir, wait=wait, command="adnlib evaluate"):
        check_evaluation_output(out_dir, overwrite)  # again: another evaluation may have finished meanwhile
        line, scores, roc = _evaluate(checkpoint, data_root, category, tta, device, expect, verify, skip_corrupt,
                                      progress)
        write_evaluation(out_dir, scores, {**line, "roc": roc})
    return line


def _evaluate(checkpoint, data_root, category, tta, device, expect, verify, skip_corrupt, progress):
    """(the result dict, the scores table, the ROC points) of one evaluation; nothing written."""
    from adnlib.data.datasets import AnomalyDataset
    from adnlib.run.checkpoint import model_from_checkpoint
    from adnlib.run.device import check_precision, precision_record, resolve_device
    from adnlib.run.evaluate import check_finite_scores, report, rotation_record, score_dataset
    from adnlib.run.memory import check_memory
    device = resolve_device(device)
    model = model_from_checkpoint(checkpoint, device, expect=expect, verify=verify)
    trained_on = model.checkpoint_info.get("category")
    if trained_on and trained_on != category:
        warnings.warn(f"{checkpoint} was trained on category {trained_on!r}, not {category!r}: its AUROC here "
                      "measures transfer to another category", stacklevel=3)
    config = model.config
    dataset = AnomalyDataset(data_root, category, "test", config.img_size, cache=True,
                             smallest_scale=config.img_size // 2 ** (config.n_scales - 1))
    check_memory(config, copies=min(config.test_batch_size, len(dataset)) * (tta or config.n_test_rotations),
                 images=len(dataset), training=False, device=device, what=f"scoring {category}")
    dataset.check(skip_corrupt)  # every image decoded (and cached) only now that it fits
    check_precision(config.amp, device)
    evaluation = model.checkpoint_info.get("epoch") or 0  # the training's own angles for this checkpoint's epoch
    scores = score_dataset(model, dataset, n_rotations=tta, device=device, seed=config.seed, evaluation=evaluation,
                           progress=progress)
    check_finite_scores(scores, checkpoint)
    found = report(scores)
    line = {"auroc": found["auroc"], "auroc_per_defect": found["auroc_per_defect"], "category": category,
            "variant": config.variant, "checkpoint": str(checkpoint), "n_rotations": tta or config.n_test_rotations,
            "backbone_weights": model.backbone_weights, "test_rotations": rotation_record(config, tta, evaluation),
            **precision_record(config.amp, device)}
    return line, scores, found["roc"]


def score(checkpoint: str | Path, images, *, tta: int | None = None, device: str = "auto", expect=None,
          verify: bool | str = True, progress: bool = False):
    """Anomaly scores of image files with a trained checkpoint -> DataFrame[path, score] in the order given (the mean
    of z² over the rotated copies and the 768 dimensions: higher is more anomalous; an image in its class folder
    scores as in the checkpoint's own evaluation).

    images: paths (DatasetError naming the missing ones). tta: rotations per image (default: the checkpoint's).
    expect, verify: as in `evaluate_checkpoint`. The memory the scoring needs is checked first (MemoryNeedError).

    >>> adnlib.score("runs/se-disc/checkpoint.pt", ["data/demo/disc/test/crack/000.png"])  # doctest: +SKIP
    """
    from adnlib.errors import DatasetError
    from adnlib.run.checkpoint import model_from_checkpoint
    from adnlib.run.device import resolve_device
    from adnlib.run.evaluate import score_images
    from adnlib.run.memory import check_memory
    images = [Path(p) for p in images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise DatasetError(f"image not found: {', '.join(missing)}")
    device = resolve_device(device)
    model = model_from_checkpoint(checkpoint, device, expect=expect, verify=verify)
    config = model.config
    check_memory(config, copies=min(config.test_batch_size, len(images)) * (tta or config.n_test_rotations),
                 images=0, training=False, device=device, what="scoring these images")
    return score_images(model, images, n_rotations=tta, device=device, seed=config.seed,
                        evaluation=model.checkpoint_info.get("epoch") or 0, progress=progress)


__all__ = ["evaluate_checkpoint", "score", "check_evaluation_output", "write_evaluation"]
