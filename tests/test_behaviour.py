"""Behaviour the other test files leave out: per-defect AUROC, random test rotations, the feature cache, and what
the training history's attention columns hold. Everything runs on the demo data with the smoke preset, offline."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from attention_reference import direct_attention
from sklearn.metrics import roc_auc_score

from adnlib.config import preset
from adnlib.data.datasets import AnomalyDataset
from adnlib.errors import ConfigError
from adnlib.model.network import AttentDifferNet
from adnlib.run.evaluate import auroc, auroc_per_defect, image_angles, report, score_dataset, score_images
from adnlib.run.train import FeatureCache, GateMonitor, train


@pytest.fixture(scope="module")
def small_root(demo_root, tmp_path_factory):
    """'weave' cut down: 8 train, 3 good and 3 hole test images (the tests below train and score it several times)."""
    root = tmp_path_factory.mktemp("small") / "data"
    for split, folder, n in (("train", "good", 8), ("test", "good", 3), ("test", "hole", 3)):
        (root / "weave" / split / folder).mkdir(parents=True)
        for f in sorted((demo_root / "weave" / split / folder).iterdir())[:n]:
            shutil.copy(f, root / "weave" / split / folder / f.name)
    return root


# --- per-defect AUROC -----------------------------------------------------------------------------------------------
def test_auroc_per_defect_is_each_defect_against_the_normal_images():
    """Each defect's AUROC is sklearn's on that defect's images plus ALL normal images (and nothing else). The
    scores are built so that every wrong selection gives another number: all anomalies together (0.58), the
    defect alone without the normals (undefined), another defect's images, or the labels inverted."""
    rng = np.random.default_rng(0)
    parts = [("good", 0, rng.normal(0.0, 1.0, 30)), ("crack", 1, rng.normal(2.5, 1.0, 12)),
             ("stain", 1, rng.normal(0.3, 1.0, 9)), ("chip", 1, rng.normal(-0.5, 1.0, 7))]
    frame = pd.DataFrame([{"path": f"{d}/{i:03d}.png", "label": label, "defect_type": d, "score": float(s)}
                          for d, label, scores in parts for i, s in enumerate(scores)])
    frame = frame.sample(frac=1, random_state=1).reset_index(drop=True)  # rows in no particular order
    frame.loc[frame.index[:4], "score"] = frame["score"].iloc[4]  # ties across classes

    per_defect = auroc_per_defect(frame)
    assert set(per_defect) == {"crack", "stain", "chip"}
    normal = frame[frame["defect_type"] == "good"]
    for defect, value in per_defect.items():
        part = frame[frame["defect_type"] == defect]
        labels = np.r_[np.zeros(len(normal)), np.ones(len(part))]
        assert value == pytest.approx(roc_auc_score(labels, np.r_[normal["score"], part["score"]]), abs=1e-12)
    assert per_defect["crack"] > 0.9
    assert per_defect["chip"] < 0.5
    assert auroc(frame) == pytest.approx(roc_auc_score(frame["label"], frame["score"]), abs=1e-12)
    assert report(frame)["auroc_per_defect"] == per_defect


# --- random test rotations --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_mode_model():
    torch.manual_seed(0)
    return AttentDifferNet(preset("smoke", test_rotations="random", n_test_rotations=3, device="cpu"))


@pytest.fixture(scope="module")
def small_test(small_root):
    return AnomalyDataset(small_root, "weave", "test", 128, cache=True)


def test_random_test_angles_are_per_image_and_seeded(tmp_path):
    a, b = image_angles("x/good/000.png", 4, "random", 180.0, 0), image_angles("x/good/001.png", 4, "random", 180, 0)
    assert not torch.equal(a, b)  # not the same angles for every image
    assert ((a.abs() <= 180) & (b.abs() <= 180)).all()
    assert len(set(a.tolist())) == 4
    assert torch.equal(a, image_angles(tmp_path / "elsewhere" / "good" / "000.png", 4, "random", 180.0, 0))
    assert not torch.equal(a, image_angles("x/good/000.png", 4, "random", 180.0, 1))  # the seed matters
    assert torch.equal(image_angles("x/good/000.png", 4, "fixed"), torch.tensor([0.0, 90.0, 180.0, 270.0]))
    assert (image_angles("x/good/000.png", 64, "random", 10.0, 0).abs() <= 10).all()


def test_random_mode_scores_do_not_depend_on_batch_size_or_order(random_mode_model, small_test):
    """The claim of `image_angles`: with random test rotations an image's score is the same whatever the batch size
    and the order it is scored in. Catches angles drawn from one generator in loader order (the official code's
    way: each image's angles then depend on the images before it)."""
    model, paths = random_mode_model, [str(s.path) for s in small_test.samples]
    reference = score_dataset(model, small_test, batch_size=4, progress=False).set_index("path")["score"]
    assert list(reference.index) == paths
    permuted = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    for batch_size, order in ((1, paths[:3]), (3, permuted), (5, permuted[::-1])):
        again = score_images(model, order, batch_size=batch_size, progress=False)
        assert list(again["path"]) == order
        np.testing.assert_allclose(again["score"], reference[order].to_numpy(), rtol=1e-5)
    # each score is that image's mean z² over ITS angles, and the random angles are really used
    image, _, _ = small_test[4]
    angles = image_angles(paths[4], 3, "random", 180.0, 0)
    direct = model.score(image[None], angles=angles[None])
    assert float(direct) == pytest.approx(float(reference.iloc[4]), rel=1e-5)
    fixed = score_dataset(model, small_test, mode="fixed", progress=False)["score"].to_numpy()
    other_seed = score_dataset(model, small_test, seed=1, progress=False)["score"].to_numpy()
    for other in (fixed, other_seed):
        assert np.abs(other - reference.to_numpy()).max() > 1e-3 * np.abs(reference.to_numpy()).max()


# --- feature cache ----------------------------------------------------------------------------------------------------
@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_feature_cache_refuses_a_trainable_backbone(tmp_path):
    """Cached embeddings of a backbone that trains would go stale after the first step: refused by the config (so
    before any image is read: a missing data folder is not reached), and by FeatureCache itself. A frozen
    attention backbone is accepted."""
    items = [(torch.zeros(3, 128, 128, dtype=torch.uint8), 0, 0)]
    for variant in ("se", "cbam"):
        with pytest.raises(ConfigError, match="frozen backbone"):
            train(preset("smoke", variant=variant, feature_cache=True), tmp_path / "no-data", "disc", progress=False)
        model = AttentDifferNet(preset("smoke", variant=variant))
        with pytest.raises(ConfigError, match="frozen backbone"):
            FeatureCache(model, items, 2, "cpu", torch.Generator(), 1, progress=False)
    config = preset("smoke", variant="se", train_attention=False, feature_cache=True)
    frozen = AttentDifferNet(config)
    assert FeatureCache(frozen, items, 2, "cpu", torch.Generator(), 1, progress=False).features.shape == (1, 2, 512)


def test_feature_cache_draws_distinct_rotations(demo_root):
    """K cached rotations per image, all different, and different angles for different images (the same image
    twice gets different cached embeddings); each step samples n DISTINCT cached rotations per image, and other
    ones at other steps. Catches one set of angles shared by all images, sampling with replacement, or the same
    choice every epoch."""
    model = AttentDifferNet(preset("smoke"))
    data = AnomalyDataset(demo_root, "weave", "train", 128)
    a, b = data[0][0], data[1][0]
    items = [(a, 0, 0), (a, 0, 1), (b, 0, 2), (a, 0, 3)]  # the same image three times, in two batches
    k, n = 6, 3
    cache = FeatureCache(model, items, k, "cpu", torch.Generator().manual_seed(0), 2, progress=False)
    features = cache.features
    assert features.shape == (4, k, 512)
    rows = features.reshape(4 * k, -1)
    distances = torch.cdist(rows, rows) + torch.eye(4 * k) * 1e9
    assert distances.min() > 1e-3 * rows.norm(dim=1).mean()  # no two cached embeddings alike

    generator = torch.Generator().manual_seed(1)
    indices = torch.tensor([0, 1, 2, 3])
    choices = []
    for _ in range(12):
        drawn = cache.sample(indices, n, generator).reshape(4, n, -1)
        step = []
        for i in range(4):
            matches = [[torch.equal(row, cached) for cached in features[i]].index(True) for row in drawn[i]]
            assert len(set(matches)) == n  # n distinct rotations of image i (and only image i's)
            step.append(tuple(matches))
        choices.append(tuple(step))
    assert len(set(choices)) == len(choices)  # other rotations at other steps
    assert all(len(set(step)) > 1 for step in choices)  # and other ones for other images in a step


# --- the history's attention columns ----------------------------------------------------------------------------------
def _column_names(variant: str, n_scales: int) -> set[str]:
    kinds = ("gate_mean", "spatial_mean") if variant == "cbam" else ("gate_mean",) if variant == "se" else ()
    return {f"{kind}_block{i}_scale{s}" for kind in kinds for i in (1, 2, 3) for s in range(n_scales)}


@pytest.mark.parametrize("variant", ["se", "cbam"])
def test_gate_monitor_records_each_block_at_each_scale(variant, demo_root):
    """A block alone remembers only its last call (the smallest scale). The monitor must give every block's mean
    attention at every scale, the right scale under the right name, each pass since reset() counting once.
    Catches one scale recorded under every name, scales swapped, passes before reset() mixed in, or passes weighted
    by their size."""
    model = AttentDifferNet(preset("smoke", variant=variant))
    torch.manual_seed(4)
    with torch.no_grad():  # larger weights than the init: gates that depend on the input (and so on the scale)
        for p in model.backbone.attention.parameters():
            p.normal_(0, 0.3)
    data = AnomalyDataset(demo_root, "weave", "train", 128)
    before = model.prepare(torch.stack([data[i][0] for i in range(4)]))
    first = model.prepare(torch.stack([data[i][0] for i in range(4, 7)]), torch.tensor([[0.0, 30.0]] * 3))
    second = model.prepare(torch.stack([data[i][0] for i in range(7, 8)]), torch.tensor([[90.0]]))
    with GateMonitor(model) as monitor:
        model.embed(before)
        monitor.reset()
        model.embed(first)
        model.embed(second)
        stats = monitor.stats()
    assert all(not block._forward_hooks for block in model.backbone.blocks)  # closed: the hooks are gone
    assert not model.backbone._forward_pre_hooks
    a, b = direct_attention(model, first), direct_attention(model, second)
    assert set(stats) == set(a) == _column_names(variant, model.config.n_scales)
    for name in a:
        assert stats[name] == pytest.approx((a[name] + b[name]) / 2, rel=1e-5), name
    # the alternatives differ, so the checks above can tell them apart
    for i in (1, 2, 3):
        assert abs(a[f"gate_mean_block{i}_scale0"] - a[f"gate_mean_block{i}_scale1"]) > 5e-5
    assert max(abs(direct_attention(model, before)[name] - stats[name]) for name in stats) > 5e-5


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
@pytest.mark.parametrize("variant", ["se", "cbam", "differnet"])
def test_history_gate_columns_hold_the_gates_of_the_training_images(variant, small_root):
    """One epoch, one step holding every training image, no rotation (0 degrees) and lr 0 (the model does not
    move): the history's gate_mean_block<i>_scale<s> / spatial_mean_block<i>_scale<s> must equal the gates
    computed by hand on the training images (the blocks' own last_gates would give the smallest scale of the last
    call only). DifferNet has no such columns."""
    config = preset("smoke", variant=variant, lr=0.0, rotation_degrees=0.0, batch_size=64, epochs=1)
    result = train(config, small_root, "weave", progress=False)
    images = torch.stack([item[0] for item in AnomalyDataset(small_root, "weave", "train", 128)])
    model = AttentDifferNet(config)  # the same initial weights (seeded); lr 0 kept them
    for name, p in model.state_dict().items():
        assert torch.equal(p, result.model.state_dict()[name]), name
    expected = direct_attention(model, model.prepare(images))
    columns = {c for c in result.history.columns if c.startswith(("gate_", "spatial_"))}
    assert columns == set(expected) == _column_names(variant, config.n_scales)
    row = result.history.iloc[0]
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=2e-5), name
    assert all(not block._forward_hooks for block in result.model.backbone.blocks)
