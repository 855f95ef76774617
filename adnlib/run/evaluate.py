"""Per-image anomaly scores over a test split, image AUROC overall and per defect type, ROC points."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from adnlib.data.datasets import read_resized
from adnlib.model.transforms import fixed_angles, random_angles, rotate_then_jitter, to_unit
from adnlib.progress import progress_bar


def rotation_key(path: str | Path, split_dir: str | Path | None = None) -> str:
    """The name an image's test rotations are keyed on: its path inside the split folder (class/.../file), or,
    without a split folder, its last two parts (folder/file), which is the same for a file directly in its class
    folder."""
    path = Path(path)
    if split_dir is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(split_dir).as_posix()
    return "/".join(path.parts[-2:])


def image_generator(key: str, seed: int = 0, evaluation: int = 0) -> torch.Generator:
    """A generator of its own for one image at one evaluation, seeded by (seed, evaluation, key)."""
    digest = hashlib.blake2b(f"{seed}\n{evaluation}\n{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def image_angles(path: str | Path, n_rotations: int, mode: str = "random", degrees: float = 180.0,
                 seed: int = 0, evaluation: int = 0, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Test rotation angles (n,) for one image: `fixed`, evenly spaced (the official evaluate.py); or `random`,
    drawn afresh at every evaluation as the official training loop does, from a generator keyed by (seed,
    evaluation, image key) (`rotation_key` of `path`), so that a run is reproducible, an image's score does not
    depend on batch size, order or command, and every variant of a paired comparison sees the same angles.
    """
    if mode == "fixed":
        return fixed_angles(n_rotations)
    generator = generator or image_generator(rotation_key(path), seed, evaluation)
    return random_angles(n_rotations, degrees, generator)


def _loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """In order, with a generator of its own: each iteration of a DataLoader draws a seed (for its workers) from
    torch's global generator unless it has one, and scoring must not move the caller's random numbers."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator())


@torch.inference_mode()
def _score_batch(model, images: torch.Tensor, keys: list[str], n_rotations: int, mode: str, seed: int,
                 evaluation: int) -> torch.Tensor:
    """Scores (B,) of a batch: each image's angles and, with colour jitter, its jitter from its own generator.

    The official test loader applies the training transform, colour jitter included, after the rotation: with
    jitter on (Config.brightness/contrast/saturation) the test copies are jittered the same way.
    """
    config = model.config
    generators = [image_generator(key, seed, evaluation) for key in keys]
    angles = torch.stack([image_angles(key, n_rotations, mode, config.rotation_degrees, generator=g)
                          for key, g in zip(keys, generators)])
    if not config.color_jitter:
        return model.score(images, angles=angles)
    copies = torch.cat([rotate_then_jitter(to_unit(images[i:i + 1]), angles[i:i + 1], config.brightness,
                                           config.contrast, config.saturation, g) for i, g in enumerate(generators)])
    z, _ = model(model.prepare(copies))
    return model.score_from_z(z, n_rotations)


def _score_loader(model, loader, keys: list[str], n_rotations: int, mode: str, device, seed: int, evaluation: int,
                  progress: bool) -> tuple[list[int], torch.Tensor]:
    model.eval()
    scores, order = [], []
    for images, _, idx in progress_bar(loader, desc=f"scoring ({n_rotations} rotations)", leave=False,
                                       disable=not progress):
        batch_keys = [keys[i] for i in idx.tolist()]
        scores.append(_score_batch(model, images.to(device), batch_keys, n_rotations, mode, seed, evaluation)
                      .float().cpu())
        order += idx.tolist()
    return order, torch.cat(scores).double()


def score_dataset(model, dataset, *, n_rotations: int | None = None, mode: str | None = None,
                  batch_size: int | None = None, device: torch.device | str = "cpu", seed: int = 0,
                  evaluation: int = 0, progress: bool = True, num_workers: int = 0) -> pd.DataFrame:
    """Score every image of `dataset` -> DataFrame[path, label, defect_type, score] (one row per image).

    evaluation: which evaluation of a run this is (training uses the epoch): random test rotations are drawn
    afresh for each (`image_angles`).
    """
    config = model.config
    n_rotations = n_rotations or config.n_test_rotations
    loader = _loader(dataset, batch_size or config.test_batch_size, num_workers)
    split_dir = Path(dataset.root) / dataset.category / dataset.split
    keys = [rotation_key(s.path, split_dir) for s in dataset.samples]
    order, scores = _score_loader(model, loader, keys, n_rotations, mode or config.test_rotations, device, seed,
                                  evaluation, progress)
    return pd.DataFrame({
        "path": [str(dataset.samples[i].path) for i in order],
        "label": [dataset.samples[i].label for i in order],
        "defect_type": [dataset.samples[i].defect_type for i in order],
        "score": scores.numpy(),
    })


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return read_resized(self.paths[i], self.size)[0], 0, i


def score_images(model, paths, *, n_rotations: int | None = None, mode: str | None = None,
                 batch_size: int | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 evaluation: int = 0, progress: bool = True) -> pd.DataFrame:
    """Score image files -> DataFrame[path, score]; an image directly in its class folder gets the same score as
    in `score_dataset` (same seed and evaluation)."""
    paths = [Path(p) for p in paths]
    config = model.config
    loader = _loader(_ImageFiles(paths, config.img_size), batch_size or config.test_batch_size)
    keys = [rotation_key(p) for p in paths]
    order, scores = _score_loader(model, loader, keys, n_rotations or config.n_test_rotations,
                                  mode or config.test_rotations, device, seed, evaluation, progress)
    return pd.DataFrame({"path": [str(paths[i]) for i in order], "score": scores.numpy()})


def rotation_record(config, n_rotations: int | None = None, evaluation: int | None = None) -> dict:
    """How the test rotations of an evaluation were chosen, for metrics.json."""
    n = n_rotations or config.n_test_rotations
    if config.test_rotations == "fixed":
        return {"mode": "fixed", "n": n, "angles": f"evenly spaced: 0, {360 / n:g}, ... degrees (official evaluate.py)"}
    record = {"mode": "random", "n": n, "angles": f"uniform in +-{config.rotation_degrees:g} degrees, drawn afresh at "
              "every evaluation from a generator keyed by (seed, evaluation, image path in the split)",
              "seed": config.seed}
    if evaluation is not None:
        record["evaluation"] = evaluation
    return record


def check_finite_scores(scores: pd.DataFrame, checkpoint: str | Path) -> None:
    """CheckpointError (one line) if any score of `scores` (a score_dataset table) is NaN or infinite: the
    training that wrote `checkpoint` diverged."""
    from adnlib.errors import CheckpointError
    bad = scores[~np.isfinite(scores["score"].to_numpy())]
    if len(bad):
        raise CheckpointError(f"{checkpoint} gives non-finite scores for {len(bad)} of {len(scores)} images "
                              f"(e.g. {bad['path'].iloc[0]}): the training that wrote it diverged")


def auroc(frame: pd.DataFrame) -> float:
    """Image-level AUROC of a score table (needs both labels)."""
    from sklearn.metrics import roc_auc_score  # here: scoring images (`adnlib score`) needs no scikit-learn

    return float(roc_auc_score(frame["label"], frame["score"]))


def auroc_per_defect(frame: pd.DataFrame) -> dict[str, float]:
    """AUROC of each defect type against the normal test images."""
    good = frame[frame["label"] == 0]
    return {d: auroc(pd.concat([good, part])) for d, part in frame[frame["label"] == 1].groupby("defect_type")}


def roc_points(frame: pd.DataFrame) -> dict[str, list[float]]:
    """The ROC curve's points (thresholds capped to JSON-safe numbers)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(frame["label"], frame["score"])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.nan_to_num(thresholds, posinf=1e30).tolist()}


def report(frame: pd.DataFrame) -> dict:
    """AUROC, AUROC per defect type, ROC curve points and counts, as a JSON-ready dict."""
    return {"auroc": auroc(frame), "auroc_per_defect": auroc_per_defect(frame), "roc": roc_points(frame),
            "n_normal": int((frame["label"] == 0).sum()), "n_anomalous": int((frame["label"] == 1).sum())}
