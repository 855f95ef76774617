"""DifferNet's official localisation (adnlib.explain.localization) against a direct computation written here from
the official localization.py: PIL rotation, per-copy autograd, scipy rotate back, blur, mean |.|, square."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter, rotate

from adnlib import preset
from adnlib.explain.localization import differnet_localization, normalise_maps
from adnlib.model.network import AttentDifferNet
from adnlib.model.transforms import fixed_angles

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
ANGLES = (0.0, 37.0)


@pytest.fixture(scope="module")
def model():
    return AttentDifferNet(preset("smoke", variant="se", weights="none")).eval()


@pytest.fixture(scope="module")
def image():
    """One 128 px uint8 image with structure (a bright off-centre square on a gradient) and some noise."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 160, 128)
    img = ramp[None, :, None].expand(3, 128, 128).clone() + 20 * torch.rand(3, 128, 128, generator=g)
    img[:, 30:60, 70:100] = torch.tensor([230.0, 200.0, 60.0])[:, None, None]
    return img.clamp(0, 255).to(torch.uint8)[None]


def _reference(model, image, angles, sigma=3.0, log_det=True, square=True):
    """The official recipe, written out: each copy rotated with PIL, normalised, its NLL differentiated w.r.t. the
    copy, the gradient rotated back by -angle in (H,W,C) layout, blurred per channel, |.| averaged, squared."""
    pil = Image.fromarray(image[0].permute(1, 2, 0).numpy())
    copies = [(np.asarray(pil.rotate(a, Image.NEAREST, fillcolor=(0, 0, 0)), np.float64) / 255 - MEAN) / STD
              for a in angles]
    x = torch.tensor(np.stack(copies), dtype=torch.float32).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    z, jac = model.flow_forward(model.embedding(x).float())
    nll = (0.5 * (z ** 2).sum(1) - (jac if log_det else 0)) / z.shape[1]
    (grad,) = torch.autograd.grad(nll.sum(), x)
    per_copy = []
    for g, a in zip(grad.numpy(), angles):
        back = np.transpose(rotate(np.transpose(g, [1, 2, 0]), -a, reshape=False), [2, 0, 1])
        per_copy.append(gaussian_filter(back, (0, sigma, sigma)))
    m = np.abs(np.stack(per_copy)).mean(axis=(0, 1))
    return (m ** 2 if square else m)[None]


def _close(a, b):
    return np.allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(b).max())


def test_matches_the_official_recipe_with_log_det_blur_and_square(model, image):
    # wrong code caught: a missing -log|det J|, no or another blur, blurring after |.|, no square, a sign error in
    # the rotation back (the reference rotates with PIL and scipy, not with the library's functions)
    maps = differnet_localization(model, image, torch.tensor([ANGLES]))
    assert maps.shape == (1, 128, 128)
    assert maps.dtype == np.float32
    assert (maps >= 0).all()
    assert _close(maps, _reference(model, image, ANGLES))
    assert not _close(maps, _reference(model, image, ANGLES, log_det=False))  # the log-det term matters here
    assert not _close(normalise_maps(maps), normalise_maps(_reference(model, image, ANGLES, square=False)))
    assert not _close(maps, _reference(model, image, ANGLES, sigma=1.0))
    sharp = differnet_localization(model, image, torch.tensor([ANGLES]), sigma=1.0)
    assert _close(sharp, _reference(model, image, ANGLES, sigma=1.0))


def test_shapes_default_angles_and_batch_independence(model, image):
    # wrong code caught: default angles not the config's test angles; a batch-mean loss (maps scaled by the batch);
    # images mixed up in a batch; angles of the wrong shape accepted
    pair = torch.cat([image, image.flip(-1)])
    maps = differnet_localization(model, pair)  # smoke preset: 2 fixed test angles, 0° and 180°
    assert maps.shape == (2, 128, 128)
    alone = differnet_localization(model, pair[1:], fixed_angles(2)[None])
    np.testing.assert_allclose(maps[1:], alone, rtol=1e-4, atol=1e-6 * alone.max())
    assert _close(maps[:1], _reference(model, image, (0.0, 180.0)))
    with pytest.raises(ValueError, match="angles"):
        differnet_localization(model, pair, torch.zeros(1, 2))


def test_maps_are_equal_across_calls_and_paired_models_see_the_same_angles(image, monkeypatch):
    # catches default angles drawn from torch's global generator under random test rotations (the paper preset):
    # two calls on the same image then gave maps 87 % apart, and two compared models saw different copies
    import adnlib.explain.localization as loc
    config = preset("smoke", variant="se", weights="none", test_rotations="random", n_test_rotations=3)
    first = AttentDifferNet(config).eval()
    second = AttentDifferNet(config.replace(variant="differnet")).eval()
    np.testing.assert_array_equal(differnet_localization(first, image), differnet_localization(first, image))
    seen, real = [], loc.copy_gradients

    def recording(model, images, angles):
        seen.append(angles.clone())
        return real(model, images, angles)

    monkeypatch.setattr(loc, "copy_gradients", recording)
    for m in (first, second):
        differnet_localization(m, image)
    assert torch.equal(seen[0], seen[1])
    assert torch.equal(seen[0][0], fixed_angles(3))  # the official fixed angles


def test_leaves_the_model_untouched(model, image):
    # wrong code caught: backward() into the parameters (their .grad filled), requires_grad not restored, train mode
    flags = [p.requires_grad for p in model.parameters()]
    assert any(flags)
    differnet_localization(model, image, torch.tensor([ANGLES]))
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training
