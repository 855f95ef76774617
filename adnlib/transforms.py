"""Tensor-side image transforms: normalisation and batched rotations (one random angle per copy).

The official code rotates each PIL image separately (torchvision RandomRotation, nearest, black fill) before
normalising. Rotating a whole batch at once with ``grid_sample`` does the same on the device, in one call.
"""
from __future__ import annotations

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


def rotate_batch(images: torch.Tensor, angles_deg: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Rotate each image (B,C,H,W) about its centre by its own angle (B,), counter-clockwise, zero fill."""
    theta = torch.deg2rad(angles_deg.to(images.device, torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates: the inverse rotation.
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def rotated_copies(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """images (B,C,H,W) and angles (B, n) -> (B·n, C, H, W), the n copies of each image adjacent."""
    b, n = angles_deg.shape
    repeated = images.repeat_interleave(n, dim=0)
    return rotate_batch(repeated, angles_deg.reshape(b * n))


def jitter_colors(images: torch.Tensor, brightness: float, contrast: float, saturation: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random colour jitter per image ([0,1] input), factors uniform in [1-v, 1+v] as torchvision's ColorJitter."""
    if brightness == contrast == saturation == 0:
        return images
    b = images.shape[0]

    def factors(v: float) -> torch.Tensor:
        return (1 + (torch.rand(b, generator=generator) * 2 - 1) * v).to(images)[:, None, None, None]

    def gray(x: torch.Tensor) -> torch.Tensor:
        return (x * x.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)

    if brightness:
        images = images * factors(brightness)
    if contrast:
        mean = gray(images).mean((2, 3), keepdim=True)
        images = (images - mean) * factors(contrast) + mean
    if saturation:
        g = gray(images)
        images = (images - g) * factors(saturation) + g
    return images.clamp(0, 1)


def test_angles(n_images: int, n_rotations: int, mode: str = "random", degrees: float = 180.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_images, n_rotations) angles for test-time augmentation: random (official) or fixed evenly spaced."""
    if mode == "fixed":
        return fixed_angles(n_rotations).expand(n_images, n_rotations)
    return random_angles(n_images * n_rotations, degrees, generator).reshape(n_images, n_rotations)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_unit", "normalize", "random_angles", "fixed_angles",
           "rotate_batch", "rotated_copies", "jitter_colors", "test_angles"]
