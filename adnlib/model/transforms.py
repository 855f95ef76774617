"""Tensor-side image transforms: normalisation and batched rotations (one random angle per copy).

The official code rotates each PIL image separately (torchvision RandomRotation: PIL ``Image.rotate``, nearest,
black fill) before normalising. `rotate_nearest` reproduces that rotation pixel for pixel (PIL's 16.16 fixed-point
source coordinates) for a whole batch of copies at once: one index computation per copy and one gather that writes
the copies directly in the memory layout the backbone wants. On one CPU core that is 4-5x cheaper than repeat +
affine_grid + grid_sample + normalise + layout conversion (1.7x cheaper than per-image PIL + ToTensor + Normalize),
and it makes the tensor path equal to the official PIL path.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,3,H,W) in [0,255] -> float in [0,1]; float input is returned unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0,1] images (B,3,H,W) -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images - mean) / std


def random_angles(n: int, degrees: float = 180.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """n angles uniform in [-degrees, degrees], as RandomRotation(degrees)."""
    return (torch.rand(n, generator=generator) * 2 - 1) * degrees


def fixed_angles(n: int) -> torch.Tensor:
    """n evenly spaced angles 0, 360/n, ... (deterministic test-time augmentation)."""
    return torch.arange(n, dtype=torch.float32) * (360.0 / n)


def _pil_rotation_coefficients(angle: float, height: int, width: int) -> tuple[int, int, int, int, int, int]:
    """PIL ``Image.rotate(angle)`` (about the centre, no expand) as 16.16 fixed-point coefficients.

    For output column x and row y the source pixel is column (ax·x + bx·y + cx) >> 16, row (ay·x + by·y + cy) >> 16.
    The arithmetic follows Pillow step by step (Image.rotate's matrix in double precision, then libImaging's
    ``affine_fixed``, which Pillow uses for any image under 32768 px), so the result is PIL's, pixel for pixel.
    """
    angle = float(angle) % 360.0
    centre_x, centre_y = width / 2, height / 2
    radians = -math.radians(angle)
    a0, a1 = round(math.cos(radians), 15), round(math.sin(radians), 15)
    a3, a4 = round(-math.sin(radians), 15), round(math.cos(radians), 15)
    a2 = a0 * -centre_x + a1 * -centre_y + 0.0 + centre_x
    a5 = a3 * -centre_x + a4 * -centre_y + 0.0 + centre_y

    def fix(v: float) -> int:
        return math.floor(v * 65536.0 + 0.5)

    return (fix(a0), fix(a1), fix(a2 + a0 * 0.5 + a1 * 0.5),
            fix(a3), fix(a4), fix(a5 + a3 * 0.5 + a4 * 0.5))


def _canvas_padding(height: int, width: int) -> tuple[int, int]:
    """Border (rows, columns) around an image that holds every source pixel a rotation about its centre can reach."""
    radius = math.hypot(height, width) / 2
    return math.ceil(radius - height / 2) + 2, math.ceil(radius - width / 2) + 2


def _source_indices_numpy(angles: Sequence[float], height: int, width: int, canvas_width: int,
                          offset: int) -> np.ndarray:
    """(n, H·W) int64 flat indices into a padded canvas of rows `canvas_width` wide, one row per angle."""
    out = np.empty((len(angles), height * width), np.int64)
    columns, rows = np.arange(width, dtype=np.int64), np.arange(height, dtype=np.int64)
    for k, angle in enumerate(angles):  # one copy at a time keeps the intermediates in cache
        ax, bx, cx, ay, by, cy = _pil_rotation_coefficients(angle, height, width)
        src_x = (columns * ax)[None, :] + (rows * bx + cx)[:, None]
        src_y = (columns * ay)[None, :] + (rows * by + cy)[:, None]
        np.right_shift(src_x, 16, out=src_x)
        np.right_shift(src_y, 16, out=src_y)
        src_y *= canvas_width
        src_y += src_x
        src_y += offset
        out[k] = src_y.reshape(-1)
    return out


def _source_indices_torch(angles: Sequence[float], height: int, width: int, canvas_width: int, offset: int,
                          device) -> torch.Tensor:
    """The same indices as `_source_indices_numpy`, computed on `device`: (n, H·W) int64."""
    coefficients = torch.tensor([_pil_rotation_coefficients(a, height, width) for a in angles],
                                dtype=torch.int64, device=device)[:, :, None, None]
    columns = torch.arange(width, dtype=torch.int64, device=device)[None, None, :]
    rows = torch.arange(height, dtype=torch.int64, device=device)[None, :, None]
    c = coefficients.unbind(1)
    src_x = (columns * c[0] + (rows * c[1] + c[2])) >> 16
    src_y = (columns * c[3] + (rows * c[4] + c[5])) >> 16
    return (src_y * canvas_width + src_x + offset).reshape(len(angles), height * width)


_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.uint8)
_COPIES_PER_TAKE = 8  # 8 copies of 448 px: 13 MB of indices, 19 MB gathered
_COPIES_PER_GATHER = 64  # torch path (GPU, autograd): 64 copies of 448 px = 100 MB of indices at a time


def rotate_nearest(images: torch.Tensor, angles_deg: torch.Tensor, fill: float | Sequence[float] = 0.0,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """images (B,C,H,W) and angles (B, n) -> (B·n, C, H, W): n rotated copies of each image, adjacent.

    Each copy equals PIL's ``Image.rotate(angle, NEAREST, fillcolor=fill)`` (counter-clockwise about the centre,
    the official code's RandomRotation) exactly. `fill` is one value or one per channel. The copies are gathered
    straight into `memory_format`; differentiable with respect to `images` (as the torch gather).
    """
    b, c, h, w = images.shape
    if angles_deg.ndim != 2 or angles_deg.shape[0] != b:
        raise ValueError(f"angles must have shape (B, n) = ({b}, n), not {tuple(angles_deg.shape)}")
    n = angles_deg.shape[1]
    # A canvas padded with `fill` replaces per-pixel bounds checks: out-of-image sources land on the border.
    pad_y, pad_x = _canvas_padding(h, w)
    canvas_h, canvas_w = h + 2 * pad_y, w + 2 * pad_x
    offset = pad_y * canvas_w + pad_x
    fill = torch.as_tensor(fill, dtype=images.dtype).expand(c)
    angles = angles_deg.detach().reshape(-1).tolist()
    if (images.device.type == "cpu" and images.dtype in _NUMPY_DTYPES
            and not (images.requires_grad and torch.is_grad_enabled())):
        # numpy's take, one image and a few copies at a time: single-threaded, cache-sized pieces, written
        # straight into the output (no per-op thread start-up, no large temporaries to page in)
        source = images.detach().permute(0, 2, 3, 1).numpy()
        out = np.empty((b * n, h * w, c), source.dtype)
        canvas = np.empty((canvas_h, canvas_w, c), source.dtype)
        canvas[:] = fill.numpy()
        flat = canvas.reshape(-1, c)
        for i in range(b):
            canvas[pad_y:pad_y + h, pad_x:pad_x + w] = source[i]
            for k in range(i * n, (i + 1) * n, _COPIES_PER_TAKE):
                chunk = angles[k:min(k + _COPIES_PER_TAKE, (i + 1) * n)]
                index = _source_indices_numpy(chunk, h, w, canvas_w, offset)
                np.take(flat, index, axis=0, out=out[k:k + len(chunk)])
        gathered = torch.from_numpy(out)
    else:  # any device, and differentiable: one batched gather in torch
        canvas = images.new_empty(b, canvas_h, canvas_w, c)
        canvas[:] = fill.to(images.device)
        canvas[:, pad_y:pad_y + h, pad_x:pad_x + w] = images.permute(0, 2, 3, 1)
        flat, pieces = canvas.reshape(-1, c), []
        for k in range(0, b * n, _COPIES_PER_GATHER):  # bounded index memory (int64 per output pixel)
            chunk = angles[k:k + _COPIES_PER_GATHER]
            index = _source_indices_torch(chunk, h, w, canvas_w, offset, images.device)
            image_of_copy = torch.arange(k, k + len(chunk), device=images.device) // n
            pieces.append(flat[(index + (image_of_copy * canvas_h * canvas_w)[:, None]).reshape(-1)])
        gathered = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    copies = gathered.view(b * n, h, w, c).permute(0, 3, 1, 2)  # channels_last strides
    return copies.contiguous(memory_format=memory_format)


def rotate_batch(images: torch.Tensor, angles_deg: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Rotate each image (B,C,H,W) about its centre by its own angle (B,), counter-clockwise, zero fill.

    'nearest' is PIL's rotation exactly (see `rotate_nearest`); 'bilinear' uses grid_sample (e.g. to rotate maps
    back).
    """
    if mode == "nearest":
        return rotate_nearest(images, angles_deg.reshape(-1, 1))
    theta = torch.deg2rad(angles_deg.to(images.device, torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates: the inverse rotation.
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def rotated_copies(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """images (B,C,H,W) and angles (B, n) -> (B·n, C, H, W), the n copies of each image adjacent (zero fill)."""
    return rotate_nearest(images, angles_deg)


def jitter_colors(images: torch.Tensor, brightness: float, contrast: float, saturation: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` applied to each image of a [0,1] batch.

    Per image, as ColorJitter: each enabled operation (strength v > 0) gets a factor uniform in [max(0, 1-v), 1+v]
    and the enabled operations run in a random order, each as ``torchvision.transforms.functional`` on a float
    tensor (a blend clamped to [0,1] after every step): brightness blends with black, contrast with the mean of the
    image's grayscale (0.2989 R + 0.587 G + 0.114 B), saturation with its grayscale. The training pipeline applies
    it after the rotation, as the official transform list does. Zero strengths return `images` unchanged.

    Draws from `generator`, in this fixed order per batch: ``torch.rand(B)`` for each enabled operation in the
    order brightness, contrast, saturation (factor = lo + (hi - lo)·u); then, if two or more are enabled,
    ``torch.rand(B, k)`` whose row-wise argsort is each image's order of the k enabled operations (in the order
    above), a uniform permutation as the one ColorJitter takes from ``randperm(4)``.
    """
    strengths = (float(brightness), float(contrast), float(saturation))
    if min(strengths) < 0:
        raise ValueError(f"colour jitter strengths must be non-negative, not {strengths}")
    enabled = [op for op, v in enumerate(strengths) if v > 0]
    if not enabled:
        return images
    b = images.shape[0]
    factors = {}
    for op in enabled:
        low, high = max(0.0, 1.0 - strengths[op]), 1.0 + strengths[op]
        factors[op] = (low + (high - low) * torch.rand(b, generator=generator).double())[:, None, None, None]
    if len(enabled) > 1:
        order = torch.tensor(enabled)[torch.rand(b, len(enabled), generator=generator).argsort(1)]
    else:
        order = torch.full((b, 1), enabled[0])

    def gray(x: torch.Tensor) -> torch.Tensor:  # torchvision's rgb_to_grayscale, (n,1,H,W)
        r, g, bl = x.unbind(dim=-3)
        return (0.2989 * r + 0.587 * g + 0.114 * bl).to(x.dtype).unsqueeze(-3)

    def apply(op: int, x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:  # torchvision's _blend; ratio CPU f64
        if op == 0:
            other = torch.zeros_like(x)
        elif op == 1:
            other = gray(x).mean(dim=(-3, -2, -1), keepdim=True)
        else:
            other = gray(x)
        return (ratio.to(x.dtype).to(x.device) * x + (1.0 - ratio).to(x.dtype).to(x.device) * other).clamp(0, 1)

    for column in order.unbind(1):  # step by step; the images doing one operation at that step at once
        out = images
        for op in enabled:
            rows = (column == op).nonzero().flatten()
            if len(rows) == b:
                out = apply(op, images, factors[op])
            elif len(rows):
                out = images.clone() if out is images else out
                index = rows.to(images.device)
                out[index] = apply(op, images[index], factors[op][rows])
        images = out
    return images


def rotate_then_jitter(images: torch.Tensor, angles_deg: torch.Tensor, brightness: float, contrast: float,
                       saturation: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """[0,1] images (B,C,H,W) and angles (B, n) -> (B·n, C, H, W): the rotated copies (black fill), then colour
    jitter per copy: the official transform order (RandomRotation, then ColorJitter, per sample)."""
    return jitter_colors(rotate_nearest(images, angles_deg), brightness, contrast, saturation, generator)


def scoring_angles(n_images: int, n_rotations: int, mode: str = "random", degrees: float = 180.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_images, n_rotations) angles for test-time augmentation: random (official) or fixed evenly spaced."""
    if mode == "fixed":
        return fixed_angles(n_rotations).expand(n_images, n_rotations)
    return random_angles(n_images * n_rotations, degrees, generator).reshape(n_images, n_rotations)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_unit", "normalize", "random_angles", "fixed_angles",
           "rotate_nearest", "rotate_batch", "rotated_copies", "jitter_colors", "rotate_then_jitter",
           "scoring_angles"]
