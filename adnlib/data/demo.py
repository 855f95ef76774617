"""A small generated dataset in the MVTec AD layout, so that everything runs offline on a laptop.

Two categories: 'disc' (object-like: a machined disc on a dark table) and 'weave' (texture-like: a woven fabric),
three defect types each. Each defective test image comes with its exact defect mask, in the MVTec AD layout:
``<category>/ground_truth/<defect>/<name>_mask.png`` (0/255, the image's size): the pixels the defect changed.
Generation is deterministic (fixed seeds), takes a few seconds and ~2 MB. The defects are deliberately
large and clear: the demo teaches the pipeline, it is not a benchmark.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adnlib.locations import default_demo_root

# <repository>/data/demo in a checkout, else the user's data folder (adnlib/locations.py): never site-packages
DEFAULT_DEMO_ROOT = default_demo_root()
SIZE = 224
N_TRAIN, N_TEST_GOOD, N_TEST_PER_DEFECT = 40, 10, 5
DEFECTS = {"disc": ("crack", "stain", "chip"), "weave": ("cut", "hole", "dye")}
_MARKER = ".adnlib-demo-v2"  # v2: ground-truth masks (the images are those of v1, bit for bit)
_OLD_MARKERS = (".adnlib-demo-v1",)
MASK_CHANGE = 8  # a painted pixel belongs to the mask if some channel changed by more than this (0..255)


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _disc(rng: np.random.Generator) -> np.ndarray:
    x, y = _grid()
    c = SIZE / 2 + rng.uniform(-6, 6, size=2)
    r = np.hypot(x - c[0], y - c[1])
    img = np.full((SIZE, SIZE, 3), 40.0) + rng.normal(0, 2, (SIZE, SIZE, 1))  # dark table
    body = r < SIZE * 0.36
    metal = np.array([176.0, 150.0, 112.0]) * rng.uniform(0.95, 1.05)
    shade = 1 - 0.25 * (r / (SIZE * 0.36))  # a soft radial highlight
    img[body] = (metal[None, :] * shade[body][:, None])
    ring = np.abs(r - SIZE * 0.24) < 2.5
    img[ring] *= 0.7
    img[r < SIZE * 0.07] = 25.0  # the bore
    return img


def _weave(rng: np.random.Generator) -> np.ndarray:
    x, y = _grid()
    period = rng.uniform(10.5, 11.5)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    warp = np.sin(2 * np.pi * x / period + phase[0])
    weft = np.sin(2 * np.pi * y / period + phase[1])
    pattern = 0.5 + 0.25 * warp * (weft > 0) + 0.25 * weft * (weft <= 0)
    base = np.array([90.0, 120.0, 160.0]) * rng.uniform(0.97, 1.03)
    return pattern[..., None] * base[None, None, :] + 50 + rng.normal(0, 2, (SIZE, SIZE, 1))


def _blob(rng: np.random.Generator, centre_spread: float, radius: tuple[float, float]) -> np.ndarray:
    x, y = _grid()
    c = SIZE / 2 + rng.uniform(-centre_spread, centre_spread, size=2)
    rad = rng.uniform(*radius)
    wobble = 1 + 0.25 * np.sin(3 * np.arctan2(y - c[1], x - c[0]) + rng.uniform(0, 6))
    return np.hypot(x - c[0], y - c[1]) < rad * wobble


def _line(rng: np.random.Generator, width: float) -> np.ndarray:
    x, y = _grid()
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(-20, 20)
    dist = np.abs((x - SIZE / 2) * np.sin(angle) - (y - SIZE / 2) * np.cos(angle) - offset)
    along = np.abs((x - SIZE / 2) * np.cos(angle) + (y - SIZE / 2) * np.sin(angle))
    return (dist < width) & (along < SIZE * rng.uniform(0.25, 0.35))


def _defect_region(img: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image (H,W,3) float, region (H,W) bool) for one defect: a copy of img with the region painted."""
    img = img.copy()
    if defect == "crack":
        region = _line(rng, 4.0)
        img[region] = 15.0
    elif defect == "stain":
        colour = np.array([40.0, 150.0, 60.0]) * rng.uniform(0.9, 1.1)  # drawn before the blob, as in v1
        region = _blob(rng, 30, (22, 30))
        img[region] = colour
    elif defect == "chip":
        x, y = _grid()
        a = np.arctan2(y - SIZE / 2, x - SIZE / 2)
        start = rng.uniform(-np.pi, np.pi)
        region = (np.mod(a - start, 2 * np.pi) < 0.9) & (np.hypot(x - SIZE / 2, y - SIZE / 2) > SIZE * 0.2)
        img[region] = 40.0
    elif defect == "cut":
        region = _line(rng, 5.0)
        img[region] = 235.0
    elif defect == "hole":
        region = _blob(rng, 50, (20, 28))
        img[region] = 10.0
    elif defect == "dye":
        region = _blob(rng, 50, (28, 36))
        img[region] = img[region][:, [2, 0, 1]] * 1.2  # a colour shift: channels swapped
    else:
        raise ValueError(f"unknown defect {defect!r}")
    return img, region


def _as_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def defect_with_mask(img: np.ndarray, category: str, defect: str,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste one defect -> (image (H,W,3) float, exact mask (H,W) bool).

    The mask is the painted region less the pixels the paint left (nearly) unchanged in the saved 8-bit image
    (a chip's wedge over the dark table, which is already the chip's colour): what a defect detector could see.
    """
    if defect not in DEFECTS.get(category, ()):
        raise ValueError(f"unknown defect {defect!r} for {category!r}")
    out, region = _defect_region(img, defect, rng)
    changed = np.abs(_as_uint8(out).astype(np.int16) - _as_uint8(img).astype(np.int16)).max(axis=2) > MASK_CHANGE
    return out, region & changed


def _save(img: np.ndarray, path: Path, size: int = SIZE, resample: int = Image.BICUBIC) -> None:
    """Save as 8-bit PNG; at another `size` than the drawn SIZE, resized (masks: resample=NEAREST)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = Image.fromarray(_as_uint8(img))
    if size != SIZE:
        out = out.resize((size, size), resample)
    out.save(path)


def make_demo_dataset(root: str | Path = DEFAULT_DEMO_ROOT, force: bool = False, *, image_size: int = SIZE,
                      n_train: int = N_TRAIN, n_test_good: int = N_TEST_GOOD,
                      n_test_per_defect: int = N_TEST_PER_DEFECT, categories: tuple[str, ...] | None = None) -> Path:
    """Generate the demo dataset under `root` (idempotent: an existing complete one is kept) and return root.

    A folder made by an older version (no masks) is completed: the images come out the same, the masks are added.
    The keywords make other sizes (e.g. an MVTec-sized category for benchmarks/gpu.py): images are drawn at 224 px
    and resized to `image_size` (masks: nearest); counts per split; `categories` a subset of 'disc', 'weave'
    (each category keeps its own seed). The defaults give the demo dataset, file for file and pixel for pixel.
    """
    root = Path(root)
    if (root / _MARKER).exists() and not force:
        return root
    for ci, (category, defects) in enumerate(DEFECTS.items()):
        if categories is not None and category not in categories:
            continue
        draw = _disc if category == "disc" else _weave
        rng = np.random.default_rng(1000 + ci)
        base = root / category
        for i in range(n_train):
            _save(draw(rng), base / "train" / "good" / f"{i:03d}.png", image_size)
        for i in range(n_test_good):
            _save(draw(rng), base / "test" / "good" / f"{i:03d}.png", image_size)
        for defect in defects:
            for i in range(n_test_per_defect):
                img, mask = defect_with_mask(draw(rng), category, defect, rng)
                _save(img, base / "test" / defect / f"{i:03d}.png", image_size)
                _save(mask.astype(np.float32) * 255, base / "ground_truth" / defect / f"{i:03d}_mask.png",
                      image_size, Image.NEAREST)
    for old in _OLD_MARKERS:
        (root / old).unlink(missing_ok=True)
    (root / _MARKER).write_text("generated by adnlib.data.demo.make_demo_dataset\n")
    return root
