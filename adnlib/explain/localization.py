"""DifferNet's own localisation: the gradient map of the official code (marco-rudolph/differnet, localization.py).

The official ``export_gradient_maps`` runs a test batch whose images come as n copies rotated by the fixed angles
i·360°/n (``get_fixed = True``), each copy ImageNet-normalised, and then

1. backpropagates the training loss ``get_loss(z, jac) = mean(0.5·Σz² − log|det J|) / D`` -- the negative
   log-likelihood *including* the flow's −log|det J| -- to the copies: one gradient (3,S,S) per rotated input;
2. rotates each copy's gradient back by −angle (``scipy.ndimage.rotate(..., reshape=False)``: cubic spline, zero
   fill) and blurs every colour channel of it, signed, with ``gaussian_filter(sigma=(0, 3, 3))``;
3. takes the mean of the absolute values over the 3 channels and the n copies, and squares it;
4. (``save_imgs`` then stretches each map to [0,1] for display: `normalise_maps`).

`differnet_localization` does exactly this, with two deliberate differences, neither of which changes a map after
step 4: each copy's gradient is that of its *own* NLL (the official batch mean divides every gradient by the
number of copies in the batch, B·n, and so the map by (B·n)²; here a map does not depend on which images share its
batch), and the angles may be any (B, n). By default they are the official fixed ones, i·360°/n with n the
model's number of test rotations, whatever its `test_rotations` mode: so a map is the same at every call, and two
models compared on an image see the same copies (docs/protocol.md §2). The copies are built by
``model.prepare(images, angles)`` (PIL's nearest rotation, as the official ``torchvision`` rotate of PIL images),
so the gradient is taken with respect to the normalised rotated input the backbone sees, as in the official code.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, rotate

from adnlib.explain.gradcam import explaining
from adnlib.model.flow import nll_loss
from adnlib.model.transforms import scoring_angles, to_unit


def copy_gradients(model, images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Gradient of each rotated copy's NLL w.r.t. that copy: images (B,3,S,S), angles (B,n) -> (B,n,3,S,S) float32.

    The NLL of a copy is (0.5·Σz² − log|det J|)/D (`adnlib.model.flow.nll_loss` of that copy alone); the gradient
    is with respect to the normalised rotated copy (`model.prepare(images, angles)`), on the CPU. The model's
    parameters get no gradient (their .grad is left as it was).
    """
    device = next(model.parameters()).device
    out = []
    with explaining(model), torch.enable_grad():
        for image, angle in zip(to_unit(images.to(device)), angles.to(device)):
            copies = model.prepare(image[None], angle[None]).detach().requires_grad_(True)  # (n,3,S,S)
            z, log_jac_det = model(copies)
            loss = nll_loss(z.float(), log_jac_det.float()) * len(copies)  # the sum of the copies' own NLLs
            (grad,) = torch.autograd.grad(loss, copies)
            out.append(grad.detach().float().cpu())
    return torch.stack(out)


def rotate_back(gradients: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate each copy's gradient back by −angle as the official code does: (B,n,C,H,W), (B,n) -> (B,n,C,H,W).

    ``scipy.ndimage.rotate(g, -angle, reshape=False)`` with its defaults (cubic spline, zero fill) in the image
    plane, the inverse of `adnlib.model.transforms.rotate_nearest`'s counter-clockwise rotation.
    """
    out = np.empty_like(gradients)
    for b, k in np.ndindex(*angles.shape):
        out[b, k] = rotate(gradients[b, k], -float(angles[b, k]), axes=(2, 1), reshape=False)
    return out


def differnet_localization(model, images: torch.Tensor, angles: torch.Tensor | None = None,
                           sigma: float = 3.0) -> np.ndarray:
    """DifferNet's official localisation map: images (B,3,S,S) uint8 or [0,1] -> maps (B,S,S) float32, >= 0.

    Per image: the gradient of each rotated copy's NLL (including −log|det J|) w.r.t. that copy, rotated back by
    −angle, every channel blurred (signed) with a Gaussian of `sigma` px at the input resolution, then the mean of
    |·| over channels and copies, squared (see the module docstring). angles (B,n) in degrees: default the official
    fixed angles i·360°/n, n = config.n_test_rotations (pass `adnlib.model.transforms.scoring_angles(..., "random",
    generator=...)` for random ones). The maps are not normalised (`normalise_maps` stretches each to [0,1] as the
    official figures do).
    """
    if angles is None:
        angles = scoring_angles(len(images), model.config.n_test_rotations, "fixed")
    angles = torch.as_tensor(angles, dtype=torch.float32)
    if angles.ndim != 2 or angles.shape[0] != len(images):
        raise ValueError(f"angles must have shape (B, n) = ({len(images)}, n), not {tuple(angles.shape)}")
    maps = []
    for i in range(len(images)):  # one image (n copies) at a time: bounded memory with 64 copies at 448 px
        grads = rotate_back(copy_gradients(model, images[i:i + 1], angles[i:i + 1]).numpy(), angles[i:i + 1].numpy())
        blurred = gaussian_filter(grads, (0, 0, 0, sigma, sigma))  # each channel of each copy, signed
        maps.append(np.abs(blurred).mean(axis=(1, 2)) ** 2)
    return np.concatenate(maps).astype(np.float32)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Stretch each map (B,H,W) to [0,1] (min-max, as the official ``save_imgs``); constant maps become 0.

    Only an exactly constant map is guarded: DifferNet's gradient maps can be of order 1e-13, and an absolute
    epsilon would squash them towards 0."""
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    span = hi - lo
    return ((maps - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


__all__ = ["copy_gradients", "rotate_back", "differnet_localization", "normalise_maps"]
