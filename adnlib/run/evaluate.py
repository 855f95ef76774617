"""Per-image anomaly scores over a test split, image AUROC overall and per defect type, ROC points."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from adnlib.data.datasets import image_to_tensor, load_image
from adnlib.data.transforms import fixed_angles, random_angles
from adnlib.errors import OutputExistsError


def image_angles(path: str | Path, n_rotations: int, mode: str = "random", degrees: float = 180.0,
                 seed: int = 0) -> torch.Tensor:
    """Test rotation angles (n,) for one image: fixed, or random from a generator keyed by seed and file name.

    Keying on the name (folder/file) makes an image's score independent of batch size, order and command.
    """
    if mode == "fixed":
        return fixed_angles(n_rotations)
    key = "/".join(Path(path).parts[-2:]).encode()
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key))
    return random_angles(n_rotations, degrees, generator)


def _loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """In order, with a generator of its own: each iteration of a DataLoader draws a seed (for its workers) from
    torch's global generator unless it has one, and scoring must not move the caller's random numbers."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator())


def _score_loader(model, loader, paths: list, n_rotations: int, mode: str, device, seed: int,
                  progress: bool) -> tuple[list[int], torch.Tensor]:
    model.eval()
    scores, order = [], []
    for images, _, idx in tqdm(loader, desc=f"scoring ({n_rotations} rotations)", leave=False, disable=not progress):
        angles = torch.stack([image_angles(paths[i], n_rotations, mode, model.config.rotation_degrees, seed)
                              for i in idx.tolist()])
        scores.append(model.score(images.to(device), angles=angles).float().cpu())
        order += idx.tolist()
    return order, torch.cat(scores).double()


def score_dataset(model, dataset, *, n_rotations: int | None = None, mode: str | None = None,
                  batch_size: int | None = None, device: torch.device | str = "cpu", seed: int = 0,
                  progress: bool = True, num_workers: int = 0) -> pd.DataFrame:
    """Score every image of `dataset` -> DataFrame[path, label, defect_type, score] (one row per image)."""
    config = model.config
    n_rotations = n_rotations or config.n_test_rotations
    loader = _loader(dataset, batch_size or config.test_batch_size, num_workers)
    paths = [s.path for s in dataset.samples]
    order, scores = _score_loader(model, loader, paths, n_rotations, mode or config.test_rotations, device, seed,
                                  progress)
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
        return image_to_tensor(load_image(self.paths[i]), self.size), 0, i


def score_images(model, paths, *, n_rotations: int | None = None, mode: str | None = None,
                 batch_size: int | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 progress: bool = True) -> pd.DataFrame:
    """Score image files -> DataFrame[path, score]; an image gets the same score as in `score_dataset`."""
    paths = [Path(p) for p in paths]
    config = model.config
    loader = _loader(_ImageFiles(paths, config.img_size), batch_size or config.test_batch_size)
    order, scores = _score_loader(model, loader, paths, n_rotations or config.n_test_rotations,
                                  mode or config.test_rotations, device, seed, progress)
    return pd.DataFrame({"path": [str(paths[i]) for i in order], "score": scores.numpy()})


def check_evaluation_output(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check an evaluation's output folder before any work: OutputExistsError (one clear line) if it is a file or
    lies under one, or if it holds an evaluation already (scores.csv) and not `overwrite`. -> the folder's Path."""
    out_dir = Path(out_dir)
    blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocking == out_dir:
        raise OutputExistsError(f"--out {out_dir} is a file, not a folder: choose a folder for scores.csv and "
                                "metrics.json")
    if blocking is not None:
        raise OutputExistsError(f"--out {out_dir} cannot be a folder: {blocking} is a file")
    if (out_dir / "scores.csv").exists() and not overwrite:
        raise OutputExistsError(f"{out_dir / 'scores.csv'} exists; pass --overwrite or choose another --out")
    return out_dir


def auroc(frame: pd.DataFrame) -> float:
    """Image-level AUROC of a score table (needs both labels)."""
    return float(roc_auc_score(frame["label"], frame["score"]))


def auroc_per_defect(frame: pd.DataFrame) -> dict[str, float]:
    """AUROC of each defect type against the normal test images."""
    good = frame[frame["label"] == 0]
    return {d: auroc(pd.concat([good, part])) for d, part in frame[frame["label"] == 1].groupby("defect_type")}


def roc_points(frame: pd.DataFrame) -> dict[str, list[float]]:
    fpr, tpr, thresholds = roc_curve(frame["label"], frame["score"])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.nan_to_num(thresholds, posinf=1e30).tolist()}


def report(frame: pd.DataFrame) -> dict:
    """AUROC, AUROC per defect type, ROC curve points and counts, as a JSON-ready dict."""
    return {"auroc": auroc(frame), "auroc_per_defect": auroc_per_defect(frame), "roc": roc_points(frame),
            "n_normal": int((frame["label"] == 0).sum()), "n_anomalous": int((frame["label"] == 1).sum())}
