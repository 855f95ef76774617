"""Fidelity to the official data pipeline: torchvision ImageFolder's file types, sub-folders and order, and
torchvision ColorJitter's per-image random order and factor ranges."""
import os
import warnings
from itertools import permutations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import ColorJitter

from adnlib.data.datasets import AnomalyDataset, find_samples, image_to_tensor
from adnlib.model.transforms import jitter_colors

S = 24  # the images are written at this size, so the resize is the identity


# --- file types and sub-folders (ImageFolder) -------------------------------------------------------------------
def _rgb(seed, size=S):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed)).save(path)


def _pgm16(path, values, maxval=65535):
    """A binary 16-bit PGM written by hand (big-endian samples), as scanners and converters write them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"P5\n{S} {S}\n{maxval}\n".encode() + values.astype(">u2").tobytes())


def test_ppm_and_pgm_are_found_and_load_as_rgb(tmp_path):
    good = tmp_path / "cat" / "train" / "good"
    _png(good / "a.png", 0)
    Image.fromarray(_rgb(1)).save(good / "b.ppm")
    Image.fromarray(_rgb(2)[..., 0]).save(good / "c.pgm")  # 8-bit grayscale
    Image.fromarray(_rgb(3)).save(good / "d.PPM")  # the extension's case does not matter
    wide = np.random.default_rng(4).integers(0, 65536, (S, S)).astype(np.uint16)
    _pgm16(good / "e.pgm", wide)
    dark = np.random.default_rng(5).integers(0, 256, (S, S)).astype(np.uint16)  # 16-bit, every value <= 255
    _pgm16(good / "f.pgm", dark)
    (good / "notes.txt").write_text("not an image")
    data = AnomalyDataset(tmp_path, "cat", "train", img_size=S)
    assert [s.path.name for s in data.samples] == ["a.png", "b.ppm", "c.pgm", "d.PPM", "e.pgm", "f.pgm"]
    for i, name in enumerate(["a.png", "b.ppm", "c.pgm", "d.PPM"]):  # 8-bit: the official pil_loader exactly
        with Image.open(good / name) as img:
            expected = image_to_tensor(img.convert("RGB"), S)
        image = data[i][0]
        assert image.shape == (3, S, S), name
        assert image.dtype == torch.uint8, name
        assert torch.equal(image, expected), name
    assert torch.equal(data[2][0][0], data[2][0][1])
    assert torch.equal(data[2][0][0], data[2][0][2])
    for i, values in ((4, wide), (5, dark)):  # 16-bit: scaled to 8 bits (convert('RGB') alone would clip at 255)
        with Image.open(data.samples[i].path) as img:
            assert img.mode in ("I", "I;16", "I;16B")
        gray = torch.from_numpy(np.floor(values / 65535 * 255 + 0.5).astype(np.uint8))
        assert torch.equal(data[i][0], gray.expand(3, S, S)), data.samples[i].path.name
    assert data[5][0].max() <= 1  # a dark 16-bit file stays dark: not read as 8-bit values


def _nested_tree(split):
    """test/<class>/ folders with images at several depths, links, hidden entries and other files."""
    files = ["good/001.png", "good/sub/002.jpg", "crack/010.png", "crack/a/001.png", "crack/b/001.png",
             "crack/a/deep/x/003.bmp", "crack/a-b/004.tif", "crack/A/005.webp", "hole/z/001.pgm"]
    for i, name in enumerate(files):
        path = split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(i)[..., 0] if name.endswith("pgm") else _rgb(i)).save(path)
    (split / "crack" / "a" / "readme.md").write_text("ignored")
    outside = split.parent / "outside"
    _png(outside / "linked.png", 20)
    os.symlink(outside, split / "hole" / "link", target_is_directory=True)  # followed, as os.walk(followlinks=True)
    return files + ["hole/link/linked.png"]


def test_images_in_sub_folders_are_found_in_imagefolder_order(tmp_path):
    split = tmp_path / "cat" / "test"
    _nested_tree(split)
    samples = find_samples(tmp_path, "cat", "test")
    reference = ImageFolder(str(split))  # the official loader, on a tree without hidden entries
    assert [(str(s.path), s.defect_type) for s in samples] == [(p, reference.classes[c]) for p, c in reference.samples]
    assert [s.label for s in samples] == [int(s.defect_type != "good") for s in samples]
    assert {str(s.path.relative_to(split)) for s in samples if s.defect_type == "crack"} >= {
        "crack/a/deep/x/003.bmp", "crack/a/001.png", "crack/b/001.png"}
    assert samples == find_samples(tmp_path, "cat", "test")  # deterministic


def test_hidden_entries_are_skipped_at_every_level(tmp_path):
    split = tmp_path / "cat" / "test"
    expected = _nested_tree(split)
    for name in ("crack/.hidden/006.png", "crack/a/.ipynb_checkpoints/001.png", "good/._002.png",
                 ".cache/good/001.png"):
        _png(split / name, 30)
    (split / "good" / "sub" / ".DS_Store").write_bytes(b"\0" * 16)
    os.symlink(split / "crack", split / "crack" / "a" / "loop", target_is_directory=True)  # a link cycle
    samples = find_samples(tmp_path, "cat", "test")
    found = {str(s.path.relative_to(split)) for s in samples}
    assert found == set(expected)
    assert sorted({s.defect_type for s in samples}) == ["crack", "good", "hole"]


def test_train_good_is_searched_recursively_and_folders_of_only_hidden_images_are_empty(tmp_path):
    good = tmp_path / "cat" / "train" / "good"
    _png(good / "batch1" / "001.png", 0)
    _png(good / "batch2" / "sub" / "001.png", 1)
    _png(good / ".trash" / "002.png", 2)
    train = find_samples(tmp_path, "cat", "train")
    assert [str(s.path.relative_to(good)) for s in train] == ["batch1/001.png", "batch2/sub/001.png"]
    assert all(s.defect_type == "good" and s.label == 0 for s in train)
    test = tmp_path / "cat" / "test"
    _png(test / "good" / "g" / "001.png", 3)
    _png(test / "crack" / "c" / "001.png", 4)
    _png(test / "scratch" / ".hidden" / "001.png", 5)
    with pytest.warns(UserWarning, match="empty class folder ignored: .*scratch"):
        samples = find_samples(tmp_path, "cat", "test")
    assert [s.defect_type for s in samples] == ["crack", "good"]


# --- colour jitter (ColorJitter) --------------------------------------------------------------------------------
def _draws(b, strengths, seed):
    """The documented draws of jitter_colors, by hand: factors (b, 3) (None where disabled) and orders (b, k)."""
    generator = torch.Generator().manual_seed(seed)
    enabled = [op for op, v in enumerate(strengths) if v > 0]
    factors = [[None] * 3 for _ in range(b)]
    for op in enabled:
        low, high = max(0.0, 1 - strengths[op]), 1 + strengths[op]
        for i, u in enumerate(torch.rand(b, generator=generator).tolist()):
            factors[i][op] = low + (high - low) * u
    if len(enabled) > 1:
        orders = [[enabled[j] for j in row] for row in torch.rand(b, len(enabled), generator=generator).argsort(1)]
    else:
        orders = [enabled] * b
    return factors, orders, generator


def _images(b, seed=0, size=6):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strengths", [(0.4, 0.4, 0.4), (0.9, 1.3, 1.6), (0.0, 0.5, 0.7), (0.6, 0.0, 0.8),
                                       (0.3, 0.0, 0.0), (0.0, 0.0, 0.5)])
def test_jitter_is_torchvisions_color_jitter_per_image(strengths, monkeypatch):
    b = 36
    images = _images(b)
    out = jitter_colors(images, *strengths, generator=torch.Generator().manual_seed(11))
    factors, orders, generator = _draws(b, strengths, 11)
    apply = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    jitter = ColorJitter(*strengths)
    for i in range(b):
        by_hand = images[i]
        for op in orders[i]:
            by_hand = apply[op](by_hand, factors[i][op])
        torch.testing.assert_close(out[i], by_hand, atol=1e-6, rtol=0)
        # and torchvision's own forward, given these draws (its randperm(4) puts hue and disabled ops anywhere)
        perm = torch.tensor([3, *orders[i], *[op for op in range(3) if op not in orders[i]]])
        params = (perm, *factors[i], None)
        monkeypatch.setattr(ColorJitter, "get_params", staticmethod(lambda *_, params=params: params))
        torch.testing.assert_close(out[i], jitter(images[i]), atol=1e-6, rtol=0)
    if sum(v > 0 for v in strengths) == 3:
        assert {tuple(o) for o in orders} == set(permutations(range(3)))  # every order occurs in this batch
    after = torch.Generator().manual_seed(11)
    jitter_colors(images, *strengths, generator=after)
    assert torch.equal(torch.rand(5, generator=after), torch.rand(5, generator=generator))  # exactly these draws


def test_the_order_of_the_operations_matters_and_is_per_image():
    """A fixed brightness -> contrast -> saturation order (one clamp or one per step) is not ColorJitter."""
    strengths = (0.8, 0.8, 0.8)
    b = 24
    images = _images(b, seed=3)
    out = jitter_colors(images, *strengths, generator=torch.Generator().manual_seed(2))
    factors, orders, _ = _draws(b, strengths, 2)
    fixed = torch.stack([TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(images[i], factors[i][0]),
                                                                 factors[i][1]), factors[i][2]) for i in range(b)])
    gap = (out - fixed).flatten(1).abs().amax(1)
    not_fixed = torch.tensor([o != [0, 1, 2] for o in orders])
    assert not_fixed.any()
    assert (~not_fixed).any()
    assert gap[~not_fixed].max() <= 1e-6  # the same where the drawn order is the fixed one
    # elsewhere mostly not: the blends commute but for the clamp to [0, 1] after each step
    assert (gap[not_fixed] > 1e-2).float().mean() > 0.5
    clamped_once = (images * torch.tensor([f[0] for f in factors])[:, None, None, None])  # brightness alone ...
    assert (clamped_once > 1).any()  # ... leaves [0, 1] here, so where it comes in the order matters


def _recovered_factors(op, b=4000):
    """Jitter one operation with strength 1.5 (range [0, 2.5]) on images whose factor can be read back."""
    strengths = [0.0, 0.0, 0.0]
    strengths[op] = 1.5
    if op == 0:  # brightness: 0.3·f stays below 1, so no clamp above; a negative f would clamp to exactly 0
        images = torch.full((b, 3, 2, 2), 0.3)
        return jitter_colors(images, *strengths, generator=torch.Generator().manual_seed(7))[:, 0, 0, 0] / 0.3
    # contrast: two gray levels around their mean; saturation: one colour around its gray. Neither clamps for f in
    # [-0.5, 2.5], so a negative factor would show as one.
    images = torch.full((b, 3, 2, 2), 0.5)
    if op == 1:
        images[:, :, 0] = 0.4
    else:
        images[:, 0] = 0.55
    out = jitter_colors(images, *strengths, generator=torch.Generator().manual_seed(7))
    if op == 1:
        return (out[:, 0, 1, 0] - out[:, 0, 0, 0]) / (images[:, 0, 1, 0] - images[:, 0, 0, 0])
    gray = 0.2989 * 0.55 + 0.587 * 0.5 + 0.114 * 0.5
    return (out[:, 0, 0, 0] - out[:, 1, 0, 0]) / ((0.55 - gray) - (0.5 - gray))


@pytest.mark.parametrize("op", [0, 1, 2], ids=["brightness", "contrast", "saturation"])
def test_factors_are_uniform_in_colorjitters_range(op):
    """Strength 1.5 gives factors uniform in [max(0, -0.5), 2.5] = [0, 2.5], not [-0.5, 2.5]."""
    f = _recovered_factors(op).double()
    assert f.min() >= -1e-4
    assert f.max() <= 2.5 + 1e-4
    assert (f < 0.05).any()
    assert (f > 2.45).any()
    assert (f.abs() < 1e-3).float().mean() < 0.01  # no pile of clamped negative factors at 0
    quartiles = torch.quantile(f, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    torch.testing.assert_close(quartiles, torch.tensor([0.625, 1.25, 1.875], dtype=torch.float64), atol=0.08, rtol=0)


def test_zero_strengths_return_the_images_and_draw_nothing():
    images = _images(3)
    generator = torch.Generator().manual_seed(0)
    assert jitter_colors(images, 0, 0, 0, generator) is images
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="non-negative"):
        jitter_colors(images, -0.1, 0, 0, generator)


def test_jitter_keeps_shape_dtype_range_and_is_reproducible():
    images = _images(5).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = jitter_colors(images, 0.5, 0.5, 0.5, torch.Generator().manual_seed(4))
    b = jitter_colors(images, 0.5, 0.5, 0.5, torch.Generator().manual_seed(4))
    assert a.shape == images.shape
    assert a.dtype == torch.float64
    assert torch.equal(a, b)
    assert a.min() >= 0
    assert a.max() <= 1
