"""Helpers that notebooks 03 (attention modules) and 05 (explanations) rely on: gate differences between normal and
defective images, and the pieces of DifferNet's localisation. Each test names the wrong code it catches."""
import numpy as np
import pytest
import torch

from adnlib import preset
from adnlib.explain.attention_viz import BlockRecord, gate_difference
from adnlib.explain.localization import copy_gradients, normalise_maps, rotate_back
from adnlib.model.network import AttentDifferNet
from adnlib.model.transforms import rotate_nearest


def _record(gates: torch.Tensor) -> BlockRecord:
    """A block record whose outputs are the inputs (all ones) times the channel gates."""
    inputs = torch.ones(*gates.shape, 2, 2)
    return BlockRecord(1, 2, "se", inputs, inputs * gates[:, :, None, None], gates, None)


def test_gate_difference_counts_crossings_against_shuffled_labels():
    # wrong code caught: labels swapped (band from the defective images), a band over all images, float noise of a
    # constant gate counted as a crossing, no chance level, energies of the wrong images
    labels = np.array([0] * 10 + [1] * 10)
    g = torch.Generator().manual_seed(0)
    gates = torch.full((20, 3), 0.5)
    gates[:10, 0] = 0.4 + 0.2 * torch.rand(10, generator=g)  # normal: 0.4-0.6
    gates[10:, 0] = 0.9  # defective: far outside the normal band
    gates[:, 1] = 0.3 + 0.01 * torch.rand(20, generator=g)  # the same distribution for both labels
    gates[:, 2] = torch.tensor(0.1, dtype=torch.float32)  # constant: never a crossing
    row = gate_difference([_record(gates)], labels, shuffles=50).iloc[0]
    assert row["channels"] == 3
    assert row["outside_band"] in (1, 2)
    assert row["outside_band"] >= 1
    assert row["max_abs_shift"] == pytest.approx(0.4, abs=0.1)
    assert row["shuffled_mean"] < row["outside_band"] + 1
    assert row["shuffled_max"] >= 0
    energy = (gates ** 2).mean(1)  # ratio after/before with inputs of ones: the mean of the squared gates
    assert row["energy_defective"] == pytest.approx(float(energy[10:].mean()), rel=1e-6)
    assert row["energy_normal"] == pytest.approx(float(energy[:10].mean()), rel=1e-6)
    constant = gate_difference([_record(torch.full((20, 4), 0.1))], labels).iloc[0]
    assert constant["outside_band"] == 0
    assert constant["shuffled_max"] == 0
    with pytest.raises(ValueError, match="normal"):
        gate_difference([_record(gates)], np.ones(20, int))


def test_gate_difference_chance_level_is_high_for_labels_that_mean_nothing():
    # wrong code caught: a chance level that is always 0 (e.g. the permutation never applied), which would make any
    # crossing look like a response to defects
    g = torch.Generator().manual_seed(1)
    gates = torch.rand(12, 200, generator=g)
    labels = np.array([0, 1] * 6)
    row = gate_difference([_record(gates)], labels, shuffles=30, seed=0).iloc[0]
    assert row["shuffled_mean"] > 0
    assert row["shuffled_max"] >= row["shuffled_mean"]


def test_normalise_maps_is_per_map():
    # wrong code caught: one min-max over the whole batch (a faint map stays faint), division by zero on flat maps
    maps = np.stack([np.linspace(0, 1, 16).reshape(4, 4), np.linspace(0, 1e-6, 16).reshape(4, 4) + 5,
                     np.full((4, 4), 3.0)])
    out = normalise_maps(maps)
    assert out.dtype == np.float32
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)
    assert out[0].min() == 0
    assert out[0].max() == pytest.approx(1)
    assert (out[2] == 0).all()


def test_rotate_back_undoes_the_rotation_of_the_copies():
    # wrong code caught: rotating by +angle instead of -angle, or in the wrong plane (axes), i.e. a map not
    # aligned with the un-rotated image
    image = torch.zeros(1, 3, 48, 48)
    image[0, :, 8:20, 10:30] = 1.0
    image[0, 1, 30:40, 30:36] = 2.0
    angles = torch.tensor([[0.0, 90.0, 37.0]])
    copies = rotate_nearest(image, angles).reshape(1, 3, 3, 48, 48).numpy()
    back = rotate_back(copies, angles.numpy())
    assert back.shape == copies.shape
    for k in range(3):
        assert np.abs(back[0, k] - image[0].numpy()).mean() < 0.03, k
    wrong = rotate_back(copies, -angles.numpy())
    assert np.abs(wrong[0, 2] - image[0].numpy()).mean() > 0.1


def test_copy_gradients_are_each_copys_own():
    # wrong code caught: the gradient of the batch mean (scaled by 1/n), copies mixed up, a parameter .grad filled
    model = AttentDifferNet(preset("smoke", weights="none")).eval()
    g = torch.Generator().manual_seed(2)
    image = (torch.rand(1, 3, 128, 128, generator=g) * 255).to(torch.uint8)
    angles = torch.tensor([[0.0, 120.0]])
    both = copy_gradients(model, image, angles)
    assert both.shape == (1, 2, 3, 128, 128)
    assert both.dtype == torch.float32
    for k in range(2):
        alone = copy_gradients(model, image, angles[:, k:k + 1])[0, 0]
        torch.testing.assert_close(both[0, k], alone, rtol=1e-4, atol=1e-6 * float(alone.abs().max()))
    assert all(p.grad is None for p in model.parameters())
