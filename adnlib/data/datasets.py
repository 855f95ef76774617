"""Datasets in the MVTec AD layout (also InsPLAD-fault and any folder like it), validated with clear messages.

Layout: ``root/<category>/train/good/*`` (normal only) and ``root/<category>/test/{good,<defect>...}/*``.
Items are (uint8 image (3,S,S), label 0 normal / 1 anomalous, index); `samples` holds path, label, defect type.

Images are found as the official code's torchvision ``ImageFolder`` finds them: files ending in .jpg .jpeg .png
.ppm .bmp .pgm .tif .tiff .webp (any case) anywhere below a class folder (sub-folders at any depth, links followed),
in sorted order; a sample's defect type is its top class folder's name. Files and folders whose names start with
'.' are ignored at every level, as are other files (README, masks elsewhere). Every image loads as 8-bit RGB (the
official loader's ``convert('RGB')``; 16-bit grayscale .pgm/.png is scaled to 8 bits first).

Pixel-level ground truth (optional, for localisation): as in MVTec AD, the mask of ``test/<defect>/<dirs>/<name>.<ext>``
is ``<category>/ground_truth/<defect>/<dirs>/<name>_mask.png`` (nonzero = defect, the image's size); normal images
have empty masks. ``AnomalyDataset(..., masks=True)`` checks that every defective test image has one;
``dataset.mask(i)`` reads one, resized like the image (nearest).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from adnlib.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}  # ImageFolder's

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
    """Image files anywhere below `folder`, in ImageFolder's order: os.walk following links, sorted by the folder's
    path, then by file name.

    Non-image files (README, masks elsewhere) and names starting with '.' (.DS_Store, .ipynb_checkpoints/) are
    ignored on purpose, at every level. A link back to a folder above it is not followed (ImageFolder loops forever).
    """
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        parents = [os.path.realpath(p) for p in (Path(top), *Path(top).parents) if p == folder or folder in p.parents]
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(top, d)) not in parents]
        found += [(top, f) for f in files if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
                  and os.path.isfile(os.path.join(top, f))]
    return [Path(top) / f for top, f in sorted(found)]


def check_category_name(category: str) -> str:
    """`category` if it is a plain folder name (no path separator, not '.', '..' or empty: a category never
    reaches outside its dataset root, nor a grid cell outside its output folder); DatasetError otherwise."""
    text = str(category)
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text or text != text.strip():
        raise DatasetError(f"category {category!r} is not a plain folder name: name one folder of the dataset root "
                           "(e.g. disc, bottle)")
    return text


def category_dir(root: str | Path, category: str) -> Path:
    """The folder of one category, or DatasetError naming what is missing and what exists."""
    check_category_name(category)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    folder = root / category
    if not folder.is_dir():
        found = list_categories(root)
        if found:
            hint = f"categories found: {', '.join(found)}"
        elif (root / "train").is_dir():  # --data points at a category folder itself
            hint = f"{root} looks like a category folder: pass its parent {root.parent} as the dataset root"
        else:
            hint = "no category folders with a train/ inside"
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
    _require_both_labels(samples, folder)
    return samples


def _require_both_labels(samples: list[Sample], folder: Path, after: str = "") -> None:
    labels = {s.label for s in samples}
    if labels != {0, 1}:
        missing = ("no anomalous test images (no defect folder beside good/)" if 1 not in labels
                   else "no normal test images (test/good/ is missing or empty)")
        raise DatasetError(f"{folder} has {missing}{after}: image AUROC is undefined without both normal "
                           "and anomalous test images")


def load_image(path: str | Path) -> Image.Image:
    """Open any common image as 8-bit RGB: grayscale, palette, RGBA, CMYK and 16-bit are converted."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                # 16-bit files span 0..65535 (Pillow rescales a PGM's maxval > 255 to that, opening it as mode I),
                # float files usually 0..1, 32-bit integer ones may hold 8-bit values
                top = (65535.0 if img.mode.startswith("I;16") or img.format == "PPM" or arr.max() > 255
                       else 1.0 if img.mode == "F" and arr.max() <= 1.0 else 255.0)
                img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
            elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")  # composite on black, the fill of the rotations
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        why = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip(" :") or type(exc).__name__
        raise DatasetError(f"cannot read image {path}: {why}") from exc


def read_resized(path: str | Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file decoded and resized -> (uint8 (3,size,size), its original (w, h)); DatasetError naming the
    file when it cannot be read or is smaller than MIN_IMAGE_PX. Every reader of images (datasets, `score`) goes
    through here, so one rule holds everywhere."""
    img = load_image(path)
    if min(img.size) < MIN_IMAGE_PX:
        raise DatasetError(f"image too small ({img.size[0]}x{img.size[1]} px, the least is {MIN_IMAGE_PX}): {path}")
    return image_to_tensor(img, size), img.size


def image_to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3, size, size), resized bilinearly as torchvision's Resize."""
    img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _mask_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", *sorted(IMAGE_SUFFIXES - {".png"})):
        for name in (f"{stem}_mask{suffix}", f"{stem}_mask{suffix.upper()}"):
            if (folder / name).is_file():
                return folder / name
    return None


def find_masks(root: str | Path, category: str, samples: list[Sample]) -> dict[Path, Path | None]:
    """{image path: its mask file, or None for a normal image}, in the MVTec AD layout (see the module docstring).

    DatasetError when the ground_truth folder is missing or a defective image has no mask (naming the file).
    """
    folder = category_dir(root, category)
    truth = folder / "ground_truth"
    if not truth.is_dir():
        raise DatasetError(f"no ground-truth masks: {truth} is missing (pixel-level evaluation needs "
                           "<category>/ground_truth/<defect>/<name>_mask.png, as in MVTec AD)")
    found, missing = {}, []
    for sample in samples:
        if sample.label == 0:
            found[sample.path] = None
            continue
        relative = sample.path.relative_to(folder / "test" / sample.defect_type)
        mask = _mask_file(truth / sample.defect_type / relative.parent, sample.path.stem)
        if mask is None:
            missing.append(truth / sample.defect_type / relative.parent / f"{sample.path.stem}_mask.png")
        found[sample.path] = mask
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(f"defective test image without a ground-truth mask: {missing[0]} is missing{more}")
    return found


def load_mask(mask_path: Path | None, image_path: Path, size: int) -> torch.Tensor:
    """A mask file -> bool tensor (size, size), resized nearest; None -> all False. DatasetError names the file
    when it is unreadable or its size differs from the image's."""
    if mask_path is None:
        return torch.zeros(size, size, dtype=torch.bool)
    try:
        with Image.open(mask_path) as m, Image.open(image_path) as img:
            if m.size != img.size:
                raise DatasetError(f"mask {mask_path} is {m.size[0]}x{m.size[1]} px but its image {image_path} is "
                                   f"{img.size[0]}x{img.size[1]} px")
            m = m.convert("L").resize((size, size), Image.NEAREST)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"cannot read mask {mask_path}: {type(exc).__name__}") from exc
    return torch.from_numpy(np.asarray(m) > 127)


MIN_IMAGE_PX = 16  # smaller than this is a placeholder or an icon, not an inspection image: refused


class AnomalyDataset(Dataset):
    """One split of one category; item i -> (uint8 image (3,S,S), label, i).

    skip_corrupt: drop unreadable images with a warning instead of failing (all are read once, up front).
    cache: keep the resized images in memory after the first read (small datasets, many epochs).
    smallest_scale: pixels of the model's smallest input scale, img_size / 2**(n_scales-1). An image smaller than
    that is upsampled at every scale: allowed, but warned about, naming the file.
    masks: find the ground-truth masks now (test split; DatasetError if a defective image has none). `mask(i)`
    works without it too (finding them on first use).
    """

    def __init__(self, root: str | Path, category: str, split: str = "train", img_size: int = 448,
                 skip_corrupt: bool = False, cache: bool = False, smallest_scale: int | None = None,
                 masks: bool = False):
        self.root, self.category, self.split, self.img_size = Path(root), category, split, img_size
        self.smallest_scale = smallest_scale
        self.samples = find_samples(root, category, split)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        self._masks = find_masks(root, category, self.samples) if masks else None
        if skip_corrupt:
            self.check(skip_corrupt=True)

    def _read(self, i: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Decode and resize image i -> (uint8 (3,S,S), original (w, h)); DatasetError names the file."""
        return read_resized(self.samples[i].path, self.img_size)

    def _small_warning(self, small: list[tuple[Path, tuple[int, int]]]) -> str:
        (path, (w, h)), more = small[0], len(small) - 1
        return (f"{len(small)} image(s) smaller than the smallest scale ({self.smallest_scale} px) are upsampled at "
                f"every scale: {path} ({w}x{h} px){f' and {more} more' if more else ''}")

    def check(self, skip_corrupt: bool = False) -> AnomalyDataset:
        """Read every image once, up front, filling the cache: a bad file then stops a run before training starts.

        Unreadable files raise one DatasetError listing them or, with skip_corrupt, are dropped with a warning each.
        Images smaller than `smallest_scale` give one warning naming the first. Returns self.
        """
        kept, bad, small = [], [], []
        for i, sample in enumerate(self.samples):
            try:
                image, size = self._read(i)
            except DatasetError as exc:
                bad.append(exc)
                continue
            kept.append((sample, image if self._cache is not None else None))
            if self.smallest_scale and min(size) < self.smallest_scale:
                small.append((sample.path, size))
        if bad and not skip_corrupt:
            shown = "; ".join(map(str, bad[:3])) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            count = f"{len(bad)} unreadable images: " if len(bad) > 1 else ""
            raise DatasetError(f"{count}{shown} (skip unreadable images with --skip-corrupt, or skip_corrupt=True)")
        for exc in bad:
            warnings.warn(f"skipped: {exc}", stacklevel=2)
        if bad:
            folder = self.root / self.category / self.split
            if not kept:
                raise DatasetError(f"every image in {folder} is unreadable")
            self.samples = [sample for sample, _ in kept]
            if self.split == "test":
                _require_both_labels(self.samples, folder, after=f" after skipping {len(bad)} unreadable image(s)")
        if self._cache is not None:
            self._cache = {i: image for i, (_, image) in enumerate(kept)}
        if small:
            warnings.warn(self._small_warning(small), stacklevel=2)
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self._cache is not None and i in self._cache:
            image = self._cache[i]
        else:
            image, size = self._read(i)
            if self.smallest_scale and min(size) < self.smallest_scale:
                warnings.warn(self._small_warning([(self.samples[i].path, size)]), stacklevel=2)
            if self._cache is not None:
                self._cache[i] = image
        return image, self.samples[i].label, i

    def mask(self, i: int) -> torch.Tensor:
        """Ground-truth mask of item i: bool (S,S), resized like the image (nearest); all False for normal images."""
        if self._masks is None:
            self._masks = find_masks(self.root, self.category, self.samples)
        path = self.samples[i].path
        return load_mask(self._masks[path], path, self.img_size)

    def all_masks(self) -> torch.Tensor:
        """Every item's mask, (N,S,S) bool (reads them all: sizes are checked)."""
        return torch.stack([self.mask(i) for i in range(len(self))]) if len(self) else torch.zeros(0, 0, 0)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    @property
    def defect_types(self) -> list[str]:
        return [s.defect_type for s in self.samples]


def samples_fingerprint(samples: list[Sample], folder: str | Path) -> dict:
    """What a split is made of: {"n": images, "sha256": hash of every image's path below `folder`, label and file
    content}. Equal fingerprints mean the same images with the same labels, wherever the dataset lies; any image
    added, removed, relabelled or edited changes it."""
    import hashlib

    from adnlib.io import file_sha256
    digest = hashlib.sha256()
    for sample in samples:
        relative = Path(os.path.relpath(sample.path, folder)).as_posix()
        digest.update(f"{relative}|{sample.label}|{file_sha256(sample.path)}\n".encode())
    return {"n": len(samples), "sha256": digest.hexdigest()}


def data_record(root: str | Path, category: str, splits: dict[str, list[Sample]] | None = None) -> dict:
    """A run's data, as recorded in its metrics.json and compared before runs are reused or compared: the root it
    was read from (informative), the category, and the fingerprint of each split (`samples_fingerprint`).
    splits: the samples actually used ({"train": ..., "test": ...}); default: those find_samples finds now."""
    folder = category_dir(root, category)
    splits = splits or {split: find_samples(root, category, split) for split in ("train", "test")}
    return {"root": str(Path(root).resolve()), "category": category,
            **{split: samples_fingerprint(samples, folder) for split, samples in splits.items()}}
