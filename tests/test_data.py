import numpy as np
import pytest
import torch
from PIL import Image

from adnlib.data.datasets import AnomalyDataset, find_samples, list_categories
from adnlib.data.demo import DEFECTS, N_TEST_GOOD, N_TEST_PER_DEFECT, N_TRAIN, make_demo_dataset
from adnlib.model.transforms import fixed_angles, rotate_batch, rotated_copies


def test_demo_dataset_has_the_mvtec_layout(demo_root):
    assert list_categories(demo_root) == ["disc", "weave"]
    for category, defects in DEFECTS.items():
        train = find_samples(demo_root, category, "train")
        test = find_samples(demo_root, category, "test")
        assert len(train) == N_TRAIN
        assert all(s.label == 0 for s in train)
        assert sum(s.label == 0 for s in test) == N_TEST_GOOD
        assert sorted({s.defect_type for s in test if s.label}) == sorted(defects)
        assert sum(s.label for s in test) == N_TEST_PER_DEFECT * len(defects)


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_demo_generation_is_deterministic_and_small(tmp_path, demo_root):
    again = make_demo_dataset(tmp_path / "demo")
    a = np.asarray(Image.open(demo_root / "weave" / "test" / "hole" / "002.png"))
    b = np.asarray(Image.open(again / "weave" / "test" / "hole" / "002.png"))
    assert np.array_equal(a, b)
    size = sum(p.stat().st_size for p in again.rglob("*.png"))
    assert size < 8e6


def test_dataset_items(demo_root):
    ds = AnomalyDataset(demo_root, "disc", "test", img_size=128)
    image, label, index = ds[len(ds) - 1]
    assert image.shape == (3, 128, 128)
    assert image.dtype == torch.uint8
    assert label == 1
    assert index == len(ds) - 1
    assert set(ds.defect_types) == {"good", *DEFECTS["disc"]}


def test_rotation_by_zero_is_identity_and_by_90_is_a_transpose():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(rotate_batch(x, torch.zeros(2)), x)
    rotated = rotate_batch(x, torch.full((2,), 90.0))
    torch.testing.assert_close(rotated, torch.rot90(x, 1, dims=(2, 3)))


def test_rotated_copies_are_grouped_per_image():
    x = torch.rand(2, 3, 8, 8)
    copies = rotated_copies(x, fixed_angles(4).expand(2, 4))
    assert copies.shape == (8, 3, 8, 8)
    torch.testing.assert_close(copies[4], x[1])


def test_mvtec_category_list_is_complete():
    from adnlib.data.datasets import INSPLAD_FAULT_CATEGORIES, MVTEC_AD_CATEGORIES
    assert len(MVTEC_AD_CATEGORIES) == 15
    assert len(INSPLAD_FAULT_CATEGORIES) == 5


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_unusual_image_modes_load_as_rgb(tmp_path, mode):
    from adnlib.data.datasets import load_image
    arr = (np.arange(32 * 32).reshape(32, 32) % 255).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 257)
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([arr] * 4))
    else:
        img = Image.fromarray(arr).convert(mode)
    img.save(tmp_path / "x.png")
    loaded = load_image(tmp_path / "x.png")
    assert loaded.mode == "RGB"
    assert loaded.size == (32, 32)


def test_transparent_pixels_are_composited_on_black(tmp_path):
    """RGBA, LA and palette-with-transparency images are composited on black (the rotations' fill): a pixel of
    colour c and alpha a becomes c*a/255. Catches the alpha channel dropped (c unchanged), compositing on white
    (c*a/255 + 255*(1-a/255)) or a premultiplication done twice."""
    from adnlib.data.datasets import image_to_tensor, load_image
    colour = np.array([200, 100, 50])
    alphas = [0, 64, 128, 191, 255]
    rgba = np.zeros((len(alphas), 20, 4), np.uint8)
    for row, alpha in enumerate(alphas):
        rgba[row, :, :3], rgba[row, :, 3] = colour, alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = np.asarray(load_image(tmp_path / "rgba.png"), dtype=float)
    for row, alpha in enumerate(alphas):
        np.testing.assert_allclose(loaded[row], np.tile(colour * alpha / 255, (20, 1)), atol=1.0)
    assert (loaded[0] == 0).all()
    assert (loaded[-1] == colour).all()

    la = np.zeros((2, 20, 2), np.uint8)
    la[..., 0], la[0, :, 1], la[1, :, 1] = 180, 100, 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = np.asarray(load_image(tmp_path / "la.png"), dtype=float)
    np.testing.assert_allclose(loaded[0], np.full((20, 3), 180 * 100 / 255), atol=1.0)
    np.testing.assert_allclose(loaded[1], np.full((20, 3), 180.0))

    palette = Image.fromarray(np.array([[0] * 10 + [1] * 10] * 16, np.uint8), "P")
    palette.putpalette([250, 250, 250, 30, 120, 200] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=0)  # index 0 (near-white) fully transparent
    loaded = np.asarray(load_image(tmp_path / "p.png"))
    assert (loaded[:, :10] == 0).all()
    assert (loaded[:, 10:] == [30, 120, 200]).all()

    # and through the dataset path: the tensor holds the composited values
    half = np.zeros((24, 24, 4), np.uint8)
    half[..., :3], half[..., 3] = colour, 128
    Image.fromarray(half, "RGBA").save(tmp_path / "half.png")
    tensor = image_to_tensor(load_image(tmp_path / "half.png"), 16)
    assert tensor.dtype == torch.uint8
    assert tensor.shape == (3, 16, 16)
    np.testing.assert_allclose(tensor.float().mean((1, 2)).numpy(), colour * 128 / 255, atol=1.0)
