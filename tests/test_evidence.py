"""The preconditions before a map is read (adnlib.explain.evidence): does it follow its own image's defects (the
shuffled-mask control), does it beat a map that always looks at the centre, and are maps scored on equal terms?"""
import numpy as np
import pytest

from adnlib.explain.evidence import (
    centre_prior_maps,
    control_text,
    readable,
    score_maps,
    shuffled_mask_control,
    shuffled_order,
)
from adnlib.explain.localization_metrics import localization_metrics, pro_score

N, SIZE = 12, 32


def _study(seed=0):
    """12 images of 32 px: 4 normal, 8 with one square defect each at a random place."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((N, SIZE, SIZE), bool)
    for i in range(4, N):
        y, x = rng.integers(0, SIZE - 6, 2)
        masks[i, y:y + 6, x:x + 6] = True
    return masks, rng


def test_shuffled_order_moves_defective_images_only_and_never_in_place():
    # catches a shuffle that leaves an image with its own map (no control), or moves normal images' maps
    defective = np.array([0, 1, 0, 1, 1, 0, 1], bool)
    order = shuffled_order(defective)
    assert sorted(order) == list(range(7))
    assert all(order[i] == i for i in np.flatnonzero(~defective))
    assert all(order[i] != i and defective[order[i]] for i in np.flatnonzero(defective))
    assert list(shuffled_order(np.array([0, 1, 0], bool))) == [0, 1, 2]  # one defective image: nothing to move


def test_a_map_that_finds_each_defect_is_read_even_beside_a_centre_blob():
    # the case: a centre blob plus an exact response on each defect (PRO 1.0) is an explanation; the
    # correlation test called it "one map for all images"
    masks, rng = _study()
    maps = 0.5 * centre_prior_maps(N, SIZE, SIZE) + masks.astype(float) + 0.01 * rng.random((N, SIZE, SIZE))
    control = shuffled_mask_control(masks, maps, n_boot=200)
    assert control["pro"] > 0.95
    assert control["readable"]
    assert control["control_low"] > 0
    assert control["pro_shuffled"] < control["pro"] - 0.3


def test_noise_and_a_fixed_blob_are_not_read():
    # the case: pure noise (PRO at chance) was "readable" by the correlation test; a fixed blob, the same
    # on every image, scores alike against any mask
    masks, rng = _study(1)
    noise = rng.random((N, SIZE, SIZE))
    assert 0.05 < pro_score(masks, noise) < 0.3
    assert not shuffled_mask_control(masks, noise, n_boot=200)["readable"]
    blob = centre_prior_maps(N, SIZE, SIZE)
    control = shuffled_mask_control(masks, blob, n_boot=200)
    assert not control["readable"]
    assert control["control_low"] <= 0 <= control["control_high"]


def test_the_control_needs_two_defective_images():
    # catches a control that compares an image with itself (always Δ 0) and calls the map unreadable for a reason
    # it does not give, or one that divides by zero
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    control = shuffled_mask_control(masks, masks.astype(float), n_boot=50)
    assert np.isnan(control["control_delta"])
    assert not control["readable"]
    assert "fewer than two defective images" in control_text({"m": control})


def test_the_sentences_follow_the_verdict_and_readable_needs_every_map():
    # catches a sentence written for one outcome, or readable() passing when one of the maps failed
    masks, rng = _study(2)
    good = shuffled_mask_control(masks, masks.astype(float) + 0.01 * rng.random(masks.shape), n_boot=100)
    bad = shuffled_mask_control(masks, rng.random(masks.shape), n_boot=100)
    text = control_text({"a": good, "b": bad}).splitlines()
    assert "can be read as an explanation" in text[0]
    assert f"PRO {good['pro']:.3f}" in text[0]
    assert "is not shown to follow its own image's defects" in text[1]
    assert readable({"a": good}, ["a"])
    assert not readable({"a": good, "b": bad}, ["a", "b"])


def test_maps_are_scored_on_equal_terms():
    # catches raw maps compared with per-image normalised ones: the same maps scaled differently per image must
    # score the same once normalised (DifferNet's raw gradient maps differ in scale from image to image)
    masks, rng = _study(3)
    maps = masks.astype(float) + 0.3 * rng.random(masks.shape)
    scaled = maps * rng.uniform(0.01, 100, (N, 1, 1))  # another scale per image
    table = score_maps(masks, {"a": maps, "b": scaled}, n_boot=50).set_index("name")
    assert table.loc["a", "pro"] == pytest.approx(table.loc["b", "pro"])
    assert table.loc["a", "pixel_auroc"] == pytest.approx(table.loc["b", "pixel_auroc"])
    assert localization_metrics(masks, scaled)["pro"] != pytest.approx(table.loc["b", "pro"])  # raw differs
    assert bool(table.loc["a", "readable"])


def test_centre_prior_scores_high_on_central_defects_and_low_on_corner_defects():
    # catches a prior that is not centred (or not the same on every image): its PRO must follow where defects lie
    n, size = 6, 64
    central = np.zeros((n, size, size), bool)
    central[:, 28:36, 28:36] = True
    corner = np.zeros((n, size, size), bool)
    corner[:, 2:10, 2:10] = True
    prior = centre_prior_maps(n, size, size)
    assert prior.shape == (n, size, size)
    assert prior.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(prior[0], prior[-1])
    assert np.unravel_index(prior[0].argmax(), prior[0].shape) in {(31, 31), (31, 32), (32, 31), (32, 32)}
    assert localization_metrics(central, prior)["pro"] > 0.9
    assert localization_metrics(corner, prior)["pro"] < 0.1
