"""SENet and CBAM attention blocks, shape-preserving, remembering their last attention weights.

Each block stores what it applied on its last forward pass (detached), so notebooks can show the gates:
``SEBlock.last_gates`` (B, C); ``CBAM.last_channel_gates`` (B, C) and ``CBAM.last_spatial_map`` (B, 1, H, W).
"""
from __future__ import annotations

import torch
from torch import nn


def _hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x (B,C,H,W) -> x * sigmoid(MLP(mean_hw x))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channels, self.reduction = channels, reduction
        self.excitation = nn.Sequential(
            nn.Linear(channels, _hidden(channels, reduction)),
            nn.ReLU(inplace=True),
            nn.Linear(_hidden(channels, reduction), channels),
            nn.Sigmoid(),
        )
        self.last_gates: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        gates = self.excitation(squeezed)
        self.last_gates = gates.detach()
        return x * gates[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class ChannelAttention(nn.Module):
    """CBAM's channel gate: sigmoid(MLP(avg_hw x) + MLP(max_hw x)), shape (B, C)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(channels, _hidden(channels, reduction)),
            nn.ReLU(inplace=True),
            nn.Linear(_hidden(channels, reduction), channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))


class SpatialAttention(nn.Module):
    """CBAM's spatial map: sigmoid(conv_k([mean_c x, max_c x])), shape (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to preserve the shape, not {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel gate, then spatial map; x (B,C,H,W)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channels, self.reduction, self.kernel_size = channels, reduction, kernel_size
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)
        self.last_channel_gates: torch.Tensor | None = None
        self.last_spatial_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.channel(x)
        x = x * gates[:, :, None, None]
        spatial = self.spatial(x)
        self.last_channel_gates, self.last_spatial_map = gates.detach(), spatial.detach()
        return x * spatial

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, kernel_size={self.kernel_size}"


def make_attention(variant: str, channels: int, *, se_reduction: int = 16, cbam_reduction: int = 16,
                   cbam_kernel_size: int = 7) -> nn.Module | None:
    """The block for a variant name ('se', 'cbam'), or None for 'differnet'."""
    if variant == "differnet":
        return None
    if variant == "se":
        return SEBlock(channels, se_reduction)
    if variant == "cbam":
        return CBAM(channels, cbam_reduction, cbam_kernel_size)
    raise ValueError(f"unknown variant {variant!r}")
