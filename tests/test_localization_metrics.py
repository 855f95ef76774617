"""Issue 14: demo masks, mask loading, pixel AUROC / PRO against hand-computed cases, and `adnlib localize`."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from adnlib.cli import main
from adnlib.data.datasets import AnomalyDataset
from adnlib.errors import DatasetError
from adnlib.explain import localization_metrics as lm


def _row(values, defect):
    """One image of one row: maps (1,1,W) and masks (1,1,W) from lists."""
    return np.array(defect, bool)[None, None], np.array(values, float)[None, None]


# Row layout: A (region of 1 px) | normal | B (3 px) | 4 normal pixels: 2 regions, 5 normal pixels.
DEFECT = [1, 0, 1, 1, 1, 0, 0, 0, 0]


# --- metrics ------------------------------------------------------------------------------------------------------
def test_pro_weights_regions_equally_unlike_pixel_recall():
    # catches PRO computed as pixel recall (0.5 here) or regions labelled wrongly
    masks, maps = _row([.9, .7, .5, .5, .5, .1, .1, .1, .1], DEFECT)
    # thresholds .9: (fpr 0, pro .5); .7: (.2, .5); .5: (.2, 1); area to .3 = .2*.5 + .1*1 = .2 -> /.3
    assert lm.pro_score(masks, maps) == pytest.approx(0.2 / 0.3)
    assert lm.pixel_auroc(masks, maps) == pytest.approx(17 / 20)  # .9 beats 5 normals, each .5 beats 4


def test_pro_interpolates_at_the_fpr_limit_and_handles_ties():
    # catches a missing interpolation at 0.3 (or stopping at the last point below it) and ties split apart
    masks, maps = _row([.9, .5, .5, .5, .5, .5, .1, .1, .1], DEFECT)
    # points (0,0), (0,.5), (.4,1): at .3 the curve is .875; area = .3*(.5+.875)/2
    assert lm.pro_score(masks, maps) == pytest.approx(0.3 * (0.5 + 0.875) / 2 / 0.3)
    fpr, pro = lm.pro_curve(masks, maps)
    assert fpr.tolist() == pytest.approx([0, 0, .4, 1])
    assert pro.tolist() == pytest.approx([0, .5, 1, 1])


def test_one_region_perfect_and_inverted_maps():
    # catches a reversed threshold direction (PRO of a perfect map must be 1, of an inverted one 0)
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1:3, 1:4] = True
    assert lm.region_weights(masks)[1] == 1
    assert lm.pro_score(masks, masks.astype(float)) == pytest.approx(1.0)
    assert lm.pixel_auroc(masks, masks.astype(float)) == pytest.approx(1.0)
    assert lm.pro_score(masks, 1.0 - masks) == pytest.approx(0.0)
    assert lm.pixel_auroc(masks, 1.0 - masks) == pytest.approx(0.0)


def test_regions_are_labelled_per_image_and_normal_images_count_in_the_fpr():
    # catches labelling the stack in 3D (one merged region) and FPR over defective images only
    masks = np.zeros((3, 1, 4), bool)
    masks[0, 0, 0] = True  # 1 px region
    masks[1, 0, :3] = True  # 3 px region at the same place in the next image: 3D labelling would merge them
    maps = np.zeros((3, 1, 4))
    maps[0, 0, 0], maps[1, 0, :3] = 1.0, [1.0, 0, 0]  # region 1 fully found, region 2 one third
    maps[2] = [[0.5, 0.0, 0.0, 0.0]]  # the normal image (empty mask): one false positive among its 4 pixels
    assert lm.region_weights(masks)[1] == 2
    # 8 normal pixels (3 + 1 + 4); t=1: fpr 0, pro (1 + 1/3)/2; t=.5: fpr 1/8; t=0: fpr 1, pro 1
    p0, f1 = (1 + 1 / 3) / 2, 1 / 8
    y_at = p0 + (1 - p0) * (0.3 - f1) / (1 - f1)
    assert lm.pro_score(masks, maps) == pytest.approx((f1 * p0 + (0.3 - f1) * (p0 + y_at) / 2) / 0.3)


def test_metrics_refuse_masks_without_defects():
    # catches a silent NaN when only normal images are given
    with pytest.raises(ValueError, match="both defect pixels and normal"):
        lm.pro_score(np.zeros((2, 4, 4), bool), np.random.rand(2, 4, 4))


def test_paired_bootstrap_of_identical_maps_is_zero_and_of_a_better_map_positive():
    # catches an unpaired bootstrap (different images for A and B) and swapped A/B signs
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 16, 16), bool)
    for i in range(8):
        masks[i, 3 + i % 4:8 + i % 4, 4:9] = True
    noisy = rng.random(masks.shape)
    good = masks + 0.8 * rng.random(masks.shape)
    same = lm.paired_localization_bootstrap(masks, noisy, noisy, n_boot=50)
    assert same["pro"]["low"] == same["pro"]["high"] == same["pro"]["delta"] == 0
    better = lm.paired_localization_bootstrap(masks, noisy, good, n_boot=200)
    for metric in ("pixel_auroc", "pro"):
        r = better[metric]
        assert r["delta"] == pytest.approx(r["b"] - r["a"])
        assert 0 < r["low"] <= r["delta"] <= r["high"]
    assert better["pro"]["b"] == pytest.approx(lm.pro_score(masks, good))


def test_regions_touching_only_at_a_corner_are_one_region_as_in_mvtec_ad():
    # catches 4-connectivity: MVTec AD's evaluation labels with np.ones((3, 3)), so these two pixels form ONE
    # region, and PRO weighs them as one
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal contact only
    masks[0, 3, 3] = True  # a second region, apart
    assert lm.region_weights(masks)[1] == 2
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0  # finds half of the diagonal region, nothing of the lone pixel
    # 8-connected: regions {(0,0),(1,1)} and {(3,3)} -> PRO at the first threshold (1 + 0) / 2 * 1/2 = 0.25;
    # 4-connected would see 3 regions -> 1/3
    fpr, pro = lm.pro_curve(masks, maps)
    assert pro[1] == pytest.approx(0.25)
    assert fpr[1] == 0


def test_localization_bootstrap_replicates_are_stratified_resamples():
    # catches an unstratified draw (replicates with no normal image), a replicate computed from other images than
    # its draw, and A/B drawn separately
    rng = np.random.default_rng(1)
    masks = np.zeros((10, 8, 8), bool)
    for i in range(6):
        masks[i, i:i + 2, 2:5] = True
    a, b = rng.random(masks.shape), masks + rng.random(masks.shape)
    result = lm.paired_localization_bootstrap(masks, a, b, n_boot=40, seed=5)
    from adnlib.run.stats import stratified_resamples
    draws = stratified_resamples(np.random.default_rng(5), masks.reshape(10, -1).any(1), 40)
    assert (masks.reshape(10, -1).any(1)[draws[:, 4:]]).all()  # defective images (stratum True) last
    replicate = [lm.pro_score(masks[d], b[d]) - lm.pro_score(masks[d], a[d]) for d in draws]
    low, high = np.percentile(replicate, [2.5, 97.5])
    assert result["pro"]["low"] == pytest.approx(low, abs=0.02)  # quantised maps: close, not equal
    assert result["pro"]["high"] == pytest.approx(high, abs=0.02)


def test_normalised_maps_keep_tiny_maps_stretched_and_constant_maps_zero():
    # catches an absolute epsilon: DifferNet maps of 1e-13 came out with a maximum of 0.098
    from adnlib.explain.localization import normalise_maps
    tiny = np.random.default_rng(0).random((2, 5, 5)) * 1e-13
    stretched = normalise_maps(tiny)
    assert stretched.max(axis=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    assert stretched.min(axis=(1, 2)).tolist() == pytest.approx([0.0, 0.0])
    assert (normalise_maps(np.full((1, 3, 3), 7e-14)) == 0).all()


# --- masks --------------------------------------------------------------------------------------------------------
def test_demo_masks_mark_exactly_the_changed_pixels(demo_root):
    # catches masks misplaced or missing: every defective demo image's mask covers the pixels that differ from
    # the defect-free image drawn with the same seed
    from adnlib.data.demo import SIZE, _disc, defect_with_mask
    rng = np.random.default_rng(7)
    clean = _disc(rng)
    img, mask = defect_with_mask(clean, "disc", "stain", rng)
    changed = np.abs(np.clip(img, 0, 255).astype(np.uint8).astype(int)
                     - np.clip(clean, 0, 255).astype(np.uint8).astype(int)).max(2) > 8
    assert mask.shape == (SIZE, SIZE)
    assert mask.any()
    assert np.array_equal(mask, changed)
    files = sorted((demo_root / "disc" / "ground_truth").rglob("*_mask.png"))
    assert len(files) == 15
    m = np.asarray(Image.open(files[0]))
    assert m.shape == (SIZE, SIZE)
    assert set(np.unique(m)) == {0, 255}


def test_dataset_masks_resized_nearest_and_empty_for_normal_images(demo_root):
    # catches masks paired with the wrong image, bilinear (non-binary) resizing, non-empty normal masks
    d = AnomalyDataset(demo_root, "disc", "test", 64, masks=True)
    masks = d.all_masks()
    assert masks.shape == (len(d), 64, 64)
    assert masks.dtype == torch.bool
    for i, s in enumerate(d.samples):
        assert bool(masks[i].any()) == (s.label == 1), s.path
    full = np.asarray(Image.open(demo_root / "disc/ground_truth/crack/000_mask.png")) > 127
    i = [str(s.path).endswith("crack/000.png") for s in d.samples].index(True)
    expected = np.asarray(Image.fromarray(full).resize((64, 64), Image.NEAREST))
    assert np.array_equal(d.mask(i).numpy(), expected)


def _copy_category(demo_root, dest, n_good=3, n_bad=3, n_train=8):
    for split, n in (("train/good", n_train), ("test/good", n_good), ("test/crack", n_bad)):
        (dest / "disc" / split).mkdir(parents=True)
        for f in sorted((demo_root / "disc" / split).iterdir())[:n]:
            shutil.copy(f, dest / "disc" / split / f.name)
    (dest / "disc/ground_truth/crack").mkdir(parents=True)
    for f in sorted((demo_root / "disc/ground_truth/crack").iterdir())[:n_bad]:
        shutil.copy(f, dest / "disc/ground_truth/crack" / f.name)
    return dest


def test_dataset_mask_errors_name_the_file(demo_root, tmp_path):
    # catches a missing mask or a mask of the wrong size passing silently (or failing without the file's name)
    root = _copy_category(demo_root, tmp_path / "d")
    AnomalyDataset(root, "disc", "test", 64)  # without masks=True nothing about masks is required
    (root / "disc/ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(DatasetError, match="001_mask.png is missing"):
        AnomalyDataset(root, "disc", "test", 64, masks=True)
    Image.new("L", (100, 100)).save(root / "disc/ground_truth/crack/001_mask.png")
    d = AnomalyDataset(root, "disc", "test", 64, masks=True)
    with pytest.raises(DatasetError, match="001_mask.png is 100x100 px but its image .*001.png is 224x224"):
        d.all_masks()
    shutil.rmtree(root / "disc/ground_truth")
    with pytest.raises(DatasetError, match="ground_truth is missing"):
        AnomalyDataset(root, "disc", "test", 64, masks=True)


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
@pytest.mark.parametrize("old", [".adnlib-demo-v1", ".adnlib-demo-v2"])
def test_old_demo_folders_are_regenerated_with_masks(tmp_path, old):
    # catches a marker that was not bumped: a v1 folder would never get its masks, a v2 folder would keep the old
    # disc images (large central defects) under the new marker
    from adnlib.data.demo import make_demo_dataset
    stale = tmp_path / "demo/disc/test/stain/000.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older version's image")
    (tmp_path / "demo" / old).write_text("old\n")
    root = make_demo_dataset(tmp_path / "demo")
    assert (root / "weave/ground_truth/dye/004_mask.png").is_file()
    assert not (root / old).exists()
    assert (root / ".adnlib-demo-v3").is_file()
    assert stale.read_bytes()[:4] == b"\x89PNG"  # drawn again


def test_a_subset_of_the_demo_categories_leaves_no_marker(tmp_path):
    # catches a subset run that marks the folder complete: the other category (maybe an older version's) would
    # then never be drawn again
    from adnlib.data.demo import make_demo_dataset
    root = make_demo_dataset(tmp_path / "demo", categories=("weave",), n_train=1, n_test_good=1, n_test_per_defect=1)
    assert (root / "weave/train/good/000.png").is_file()
    assert not (root / "disc").exists()
    assert not any(root.glob(".adnlib-demo-v*"))


# --- CLI ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(demo_root, tmp_path_factory):
    from adnlib.config import preset
    from adnlib.run.train import train
    root = _copy_category(demo_root, tmp_path_factory.mktemp("loc") / "data")
    out = tmp_path_factory.mktemp("loc_run")
    train(preset("smoke", weights="none", device="cpu"), root, "disc", out, progress=False)
    return root, out / "checkpoint.pt"


@pytest.mark.slow
def test_localize_writes_metrics_and_overlays(smoke_run, tmp_path, capsys):
    # catches a command that does not run end to end, or writes metrics outside [0,1] / no overlays
    root, ckpt = smoke_run
    rc = main(["localize", "--checkpoint", str(ckpt), "--data", str(root), "--category", "disc",
               "--method", "nll-gradient", "gradcam", "--overlays", "2", "--n-boot", "50", "--device", "cpu",
               "--out", str(tmp_path / "loc")])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "loc/localization.json").read_text())
    assert result["normalisation"] == "per image, min-max to [0, 1]"
    for method in ("nll-gradient", "gradcam"):
        m = result["methods"][method]
        assert set(m["shuffled_control"]) >= {"pro", "pro_shuffled", "control_low", "control_high", "readable"}
        assert 0 <= m["pixel_auroc"] <= 1
        assert 0 <= m["pro"] <= 1
        assert m["n_images"] == 6
        assert m["seconds"] > 0
        assert len(list((tmp_path / "loc/overlays" / method).glob("crack_*.png"))) == 2
    assert "gradcam - nll-gradient" in result["comparisons"]


@pytest.mark.slow
def test_localize_bad_input_is_one_error_line(smoke_run, tmp_path, capsys):
    # catches tracebacks (or silent runs) for: no masks, another category's checkpoint, cbam-spatial on DifferNet
    root, ckpt = smoke_run
    bare = tmp_path / "bare"
    shutil.copytree(root, bare)
    shutil.rmtree(bare / "disc/ground_truth")
    shutil.copytree(bare / "disc", bare / "weave")
    cases = {"ground_truth is missing": (bare, "disc", "nll-gradient"),
             "trained on category 'disc', not 'weave'": (bare, "weave", "nll-gradient"),
             "cbam-spatial needs a CBAM checkpoint": (root, "disc", "cbam-spatial")}
    for expected, (data, category, method) in cases.items():
        rc = main(["localize", "--checkpoint", str(ckpt), "--data", str(data), "--category", category,
                   "--method", method, "--device", "cpu", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert err.startswith("error:"), err
        assert expected in err, err
        assert "\n" not in err, err
