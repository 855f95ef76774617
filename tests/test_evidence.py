"""The preconditions before a map is read (adnlib.explain.evidence): does it depend on the image, and does it beat a
map that always looks at the centre?"""
import numpy as np
import pytest

from adnlib.explain.evidence import IMAGE_INDEPENDENT, centre_prior_maps, dependence_text, image_dependence, readable
from adnlib.explain.localization_metrics import localization_metrics


def test_one_map_for_every_image_is_image_independent():
    # catches a measure that correlates a map with itself (always 1) or pixels within one image
    rng = np.random.default_rng(0)
    blob = rng.random((16, 16))
    same = np.stack([blob * s + o for s, o in ((1, 0), (2, 1), (0.5, -3))])  # scaled and shifted: still one map
    assert image_dependence(same) == pytest.approx(1.0)
    assert image_dependence(np.zeros((3, 8, 8))) == pytest.approx(1.0)  # constant maps: the same everywhere


def test_independent_maps_correlate_near_zero_and_the_mean_is_over_pairs_of_images():
    # catches the diagonal (an image with itself, 1) counted in the mean
    rng = np.random.default_rng(1)
    maps = rng.random((40, 32, 32))
    assert abs(image_dependence(maps)) < 0.02
    a, b = rng.random((2, 8, 8))
    pair = np.stack([a, b])
    assert image_dependence(pair) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_one_map_cannot_tell_and_is_never_read():
    # catches a single image reported as "depends on the image" (NaN < threshold is False, NaN >= threshold too)
    value = image_dependence(np.zeros((1, 4, 4)))
    assert np.isnan(value)
    assert "cannot be told" in dependence_text({"a": value})
    assert not readable({"a": value}, ["a"])
    with pytest.raises(ValueError, match="shape"):
        image_dependence(np.zeros((4, 4)))


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


def test_the_sentences_follow_the_threshold_on_both_sides():
    # catches a sentence written for one outcome
    low, high = IMAGE_INDEPENDENT - 0.01, IMAGE_INDEPENDENT + 0.01
    text = dependence_text({"a": low, "b": high}).splitlines()
    assert "changes with the image" in text[0]
    assert f"**{low:.2f}**" in text[0]
    assert "cannot show where the model looks" in text[1]
    assert readable({"a": low}, ["a"])
    assert not readable({"a": low, "b": high}, ["a", "b"])
