"""Datasets in the MVTec AD layout (also InsPLAD-fault and any folder like it), validated with clear messages.

Layout: ``root/<category>/train/good/*`` (normal only) and ``root/<category>/test/{good,<defect>...}/*``.
Items are (uint8 image (3,S,S), label 0 normal / 1 anomalous, index); `samples` holds path, label, defect type.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

MVTEC_AD_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                       "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
MVTEC_AD_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
INSPLAD_FAULT_CATEGORIES = ("glass-insulator", "lightning-rod-suspension", "polymer-insulator-upper-shackle",
                            "vari-grip", "yoke-suspension")
DEMO_CATEGORIES = ("disc", "weave")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # "good" for normal images


def list_categories(root: str | Path) -> list[str]:
    """Sub-folders of `root` that look like categories (hold a train/ folder)."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / "train").is_dir()) if root.is_dir() else []


def _image_files(folder: Path) -> list[Path]:
    # Non-image files (README, .DS_Store, masks elsewhere) are ignored on purpose.
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def category_dir(root: str | Path, category: str) -> Path:
    """The folder of one category, or DatasetError naming what is missing and what exists."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    folder = root / category
    if not folder.is_dir():
        found = list_categories(root)
        hint = f"categories found: {', '.join(found)}" if found else "no category folders with a train/ inside"
        raise DatasetError(f"category {category!r} not found in {root} ({hint})")
    return folder


def find_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """All image samples of a split ('train' or 'test'), validated."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = category_dir(root, category) / split
    if split == "train":
        good = folder / "good"
        if not good.is_dir():
            raise DatasetError(f"no training folder of normal images: {good} is missing")
        files = _image_files(good)
        if not files:
            raise DatasetError(f"no images in {good}")
        return [Sample(p, 0, "good") for p in files]
    if not folder.is_dir():
        raise DatasetError(f"no test folder: {folder} is missing")
    samples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(class_dir)
        if not files:
            warnings.warn(f"empty class folder ignored: {class_dir}", stacklevel=2)
            continue
        label = 0 if class_dir.name == "good" else 1
        samples += [Sample(p, label, class_dir.name) for p in files]
    if not samples:
        raise DatasetError(f"no test images in {folder}")
    labels = {s.label for s in samples}
    if labels != {0, 1}:
        missing = "anomalous (defect) folders" if 1 not in labels else "a good/ folder"
        raise DatasetError(f"{folder} has no {missing}: image AUROC is undefined without both normal and "
                           "anomalous test images")
    return samples


def load_image(path: str | Path) -> Image.Image:
    """Open any common image as 8-bit RGB: grayscale, palette, RGBA, CMYK and 16-bit are converted."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
            elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")  # composite on black, the fill of the rotations
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def image_to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3, size, size), resized bilinearly as torchvision's Resize."""
    img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class AnomalyDataset(Dataset):
    """One split of one category; item i -> (uint8 image (3,S,S), label, i).

    skip_corrupt: drop unreadable images with a warning instead of failing (checked once, up front).
    cache: keep the resized images in memory after the first read (small datasets, many epochs).
    """

    def __init__(self, root: str | Path, category: str, split: str = "train", img_size: int = 448,
                 skip_corrupt: bool = False, cache: bool = False):
        self.root, self.category, self.split, self.img_size = Path(root), category, split, img_size
        self.samples = find_samples(root, category, split)
        if skip_corrupt:
            self.samples = self._readable(self.samples)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    @staticmethod
    def _readable(samples: list[Sample]) -> list[Sample]:
        kept = []
        for s in samples:
            try:
                load_image(s.path)
                kept.append(s)
            except DatasetError as exc:
                warnings.warn(f"skipped: {exc}", stacklevel=3)
        if not kept:
            raise DatasetError("every image was unreadable")
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self._cache is not None and i in self._cache:
            image = self._cache[i]
        else:
            img = load_image(self.samples[i].path)
            if min(img.size) < 16:
                raise DatasetError(f"image too small ({img.size[0]}x{img.size[1]} px): {self.samples[i].path}")
            image = image_to_tensor(img, self.img_size)
            if self._cache is not None:
                self._cache[i] = image
        return image, self.samples[i].label, i

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    @property
    def defect_types(self) -> list[str]:
        return [s.defect_type for s in self.samples]
