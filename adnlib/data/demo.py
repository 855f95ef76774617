"""A small generated dataset in the MVTec AD layout, so that everything runs offline on a laptop.

Two categories, three defect types each, each category there to teach something different:

* 'weave' (texture-like: a woven fabric; cuts, holes, dye): large, clear defects near the centre. DifferNet finds them
  even with random backbone weights (image AUROC ~1.0 with the demo preset): the case where the pipeline visibly works.
* 'disc' (object-like: a machined disc filling most of the frame, on a dark table; cracks, stains, chips): small,
  low-contrast defects anywhere on the disc, most of them far from the image centre (chips only at the rim).
  DifferNet with random weights stays clearly below the ceiling (image AUROC ~0.8 with the demo preset; stains are
  the hardest type, chips and cracks easier), and a map that always points at the image centre localises them
  poorly (`adnlib.explain.evidence.centre_prior_maps`: PRO ~0.2, pixel AUROC ~0.69; ~0.62 and ~0.88 on the weave):
  the case where per-defect AUROCs and localisation maps have something to show.

Each defective test image comes with its exact defect mask, in the MVTec AD layout:
``<category>/ground_truth/<defect>/<name>_mask.png`` (0/255, the image's size): the pixels the defect changed.
Generation is deterministic (fixed seeds), takes a few seconds and ~6 MB. A teaching dataset, not a benchmark.
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
DEMO_BYTES = 10_000_000  # the demo dataset takes 6.5 MB at its own size
_MARKER = ".adnlib-demo-v3"  # v3: a larger disc with small, subtle defects anywhere on it (v2: masks, v1 images)
_OLD_MARKERS = (".adnlib-demo-v1", ".adnlib-demo-v2")
MASK_CHANGE = 8  # a painted pixel belongs to the mask if some channel changed by more than this (0..255)
DISC_RADIUS = SIZE * 0.43  # the disc fills most of the frame, so "anywhere on the disc" is not "near the centre"
BORE_RADIUS, BORE_VALUE = SIZE * 0.07, 25.0
DISC_JITTER = 6.0  # the disc's centre moves by up to this many pixels each way
# The disc's defects, sized so that DifferNet with random weights and the demo preset lands near 0.8 image AUROC
# (chips and cracks easier than stains); the weave's stay large (their sizes are in _defect_region).
CRACK_WIDTH, CRACK_LENGTH, CRACK_DARKEN = (3.5, 5.5), (45.0, 75.0), 0.3  # px, px, factor on the metal's colour
STAIN_RADIUS, STAIN_OPACITY = (15.0, 21.0), 0.85  # px, how far the tint covers the metal (0..1)
CHIP_RADIUS = (18.0, 26.0)  # px, of the round bite centred on the rim


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _disc(rng: np.random.Generator) -> np.ndarray:
    x, y = _grid()
    c = SIZE / 2 + rng.uniform(-DISC_JITTER, DISC_JITTER, size=2)
    r = np.hypot(x - c[0], y - c[1])
    img = np.full((SIZE, SIZE, 3), 40.0) + rng.normal(0, 2, (SIZE, SIZE, 1))  # dark table
    body = r < DISC_RADIUS
    metal = np.array([176.0, 150.0, 112.0]) * rng.uniform(0.95, 1.05)
    shade = 1 - 0.25 * (r / DISC_RADIUS)  # a soft radial highlight
    img[body] = (metal[None, :] * shade[body][:, None])
    ring = np.abs(r - SIZE * 0.28) < 2.5
    img[ring] *= 0.7
    img[r < BORE_RADIUS] = BORE_VALUE  # the bore
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


def _blob(rng: np.random.Generator, centre_spread: float, radius: tuple[float, float],
          centre: np.ndarray | None = None) -> np.ndarray:
    x, y = _grid()
    c = SIZE / 2 + rng.uniform(-centre_spread, centre_spread, size=2) if centre is None else centre
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


def _disc_centre(img: np.ndarray) -> np.ndarray:
    """The drawn disc's centre (x, y), found by its bore (the only pixels of exactly the bore's value), so that
    the defects sit on the disc wherever the jitter put it."""
    y, x = np.nonzero(img[..., 0] == BORE_VALUE)
    if not len(x):  # not a disc drawn by _disc (e.g. already saved and reloaded): assume a centred disc
        return np.array([SIZE / 2, SIZE / 2])
    return np.array([x.mean(), y.mean()])


def _on_disc(img: np.ndarray, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A point drawn uniformly over the disc's face, `margin` away from the bore and the rim: defects anywhere on
    the object, most of them off-centre, since most of a disc's area is far from its centre."""
    inner, outer = BORE_RADIUS + margin, DISC_RADIUS - margin
    r = np.sqrt(rng.uniform(inner ** 2, outer ** 2))  # uniform over the area, not over the radius
    a = rng.uniform(-np.pi, np.pi)
    return _disc_centre(img) + r * np.array([np.cos(a), np.sin(a)])


def _scratch(img: np.ndarray, rng: np.random.Generator, width: tuple[float, float],
             length: tuple[float, float]) -> np.ndarray:
    """A short straight segment anywhere on the disc, in any direction: a crack a few pixels wide."""
    x, y = _grid()
    half = rng.uniform(*length) / 2
    c = _on_disc(img, rng, half)
    angle = rng.uniform(0, np.pi)
    across = np.abs((x - c[0]) * np.sin(angle) - (y - c[1]) * np.cos(angle))
    along = np.abs((x - c[0]) * np.cos(angle) + (y - c[1]) * np.sin(angle))
    return (across < rng.uniform(*width) / 2) & (along < half)


def _rim_bite(img: np.ndarray, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """A round bite out of the disc's rim at any angle: a chip, a few percent of the disc's area."""
    x, y = _grid()
    a = rng.uniform(-np.pi, np.pi)
    c = _disc_centre(img) + DISC_RADIUS * np.array([np.cos(a), np.sin(a)])
    return np.hypot(x - c[0], y - c[1]) < rng.uniform(*radius)


def _defect_region(img: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image (H,W,3) float, region (H,W) bool) for one defect: a copy of img with the region painted.

    The disc's defects are small (0.5-3 % of the image), less contrasted than v2's and anywhere on the disc: its
    category is the harder one. The weave's are large and clear, near the centre: its category is the easy one."""
    img = img.copy()
    if defect == "crack":
        region = _scratch(img, rng, CRACK_WIDTH, CRACK_LENGTH)
        img[region] *= CRACK_DARKEN  # darker metal, not black (v2's cracks were black)
    elif defect == "stain":
        region = _blob(rng, 0, STAIN_RADIUS, centre=_on_disc(img, rng, STAIN_RADIUS[1]))
        tint = np.array([60.0, 110.0, 70.0])  # greenish-grey residue; the metal shows through a little
        img[region] = (1 - STAIN_OPACITY) * img[region] + STAIN_OPACITY * tint
    elif defect == "chip":
        region = _rim_bite(img, rng, CHIP_RADIUS)
        img[region] = 40.0  # the table shows through
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
    (a chip's bite over the dark table, which is already the chip's colour): what a defect detector could see.
    """
    if defect not in DEFECTS.get(category, ()):
        raise ValueError(f"unknown defect {defect!r} for {category!r}")
    out, region = _defect_region(img, defect, rng)
    changed = np.abs(_as_uint8(out).astype(np.int16) - _as_uint8(img).astype(np.int16)).max(axis=2) > MASK_CHANGE
    return out, region & changed


def _save(img: np.ndarray, path: Path, size: int = SIZE, resample: int = Image.BICUBIC) -> None:
    """Save as 8-bit PNG; at another `size` than the drawn SIZE, resized (masks: resample=NEAREST)."""
    from adnlib.io import atomic_write
    out = Image.fromarray(_as_uint8(img))
    if size != SIZE:
        out = out.resize((size, size), resample)
    atomic_write(path, lambda tmp: out.save(tmp, format="PNG"))  # never through a link planted at the name


def _check_demo_folder(root: Path) -> None:
    """DatasetError (one line) unless `root` is missing, empty, or holds nothing but demo categories and markers:
    the demo is never written into someone's own dataset (its folders would gain two fake categories)."""
    from adnlib.errors import DatasetError
    if not root.is_dir():
        if root.exists():
            raise DatasetError(f"{root} is a file, not a folder for the demo data")
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in DEFECTS and not p.name.startswith("."))
    if foreign:
        raise DatasetError(f"{root} is not a demo dataset (it holds {', '.join(foreign[:5])}"
                           f"{', ...' if len(foreign) > 5 else ''}): the demo data goes into an empty or new folder, "
                           "never beside a dataset of your own; choose another --out")


def make_demo_dataset(root: str | Path = DEFAULT_DEMO_ROOT, force: bool = False, *, image_size: int = SIZE,
                      n_train: int = N_TRAIN, n_test_good: int = N_TEST_GOOD,
                      n_test_per_defect: int = N_TEST_PER_DEFECT, categories: tuple[str, ...] | None = None) -> Path:
    """Generate the demo dataset under `root` (idempotent: an existing complete one is kept) and return root.

    A folder made by an older version (a marker in _OLD_MARKERS, or none) is regenerated: every file is written
    again. It cannot merely be completed: v3 changed the disc's images (v2's disc had large central defects), so
    an old folder's disc images and masks are replaced, file for file (the names and counts are unchanged); the
    weave's come out the same, pixel for pixel.
    The keywords make other sizes (e.g. an MVTec-sized category for benchmarks/gpu.py): images are drawn at 224 px
    and resized to `image_size` (masks: nearest); counts per split; `categories` a subset of 'disc', 'weave'
    (each category keeps its own seed). The defaults give the demo dataset, file for file and pixel for pixel.
    """
    from adnlib.io import check_output_folder
    root = Path(root)
    if (root / _MARKER).exists() and not force:
        return root
    _check_demo_folder(root)
    scale = image_size ** 2 / SIZE ** 2 * (n_train + n_test_good + n_test_per_defect) / (N_TRAIN + N_TEST_GOOD
                                                                                         + N_TEST_PER_DEFECT)
    check_output_folder(root, int(DEMO_BYTES * scale), largest="the demo dataset")  # room first, then the images
    # no current marker (a new folder, an older version's, or force): draw and write every file again
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
    if categories is not None:  # a subset: the other categories may be an older version's, so no marker
        return root
    for old in _OLD_MARKERS:
        (root / old).unlink(missing_ok=True)
    (root / _MARKER).write_text("generated by adnlib.data.demo.make_demo_dataset\n")
    return root
