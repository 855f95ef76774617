"""SENet and CBAM attention blocks, shape-preserving, remembering their last attention weights.

Each block stores what it applied on its last forward pass (detached), so notebooks can show the gates:
``SEBlock.last_gates`` (B, C); ``CBAM.last_channel_gates`` (B, C) and ``CBAM.last_spatial_map`` (B, 1, H, W).

Initialisation (`init`): "standard" is PyTorch's default (what the SE and CBAM papers' code does): the gates start
near sigmoid(0) = 0.5, so three blocks shrink AlexNet's features several-fold before the flow has learnt anything.
"open" zeroes each gate's last layer and sets its bias to logit(OPEN_GATE): every gate starts at 0.95 for every
input and learns from there. "reference" (CBAM with its spatial BatchNorm only) initialises as the CBAM authors'
code does: every bias 0, the spatial convolution Kaiming-normal (fan_out), the spatial BatchNorm's weight 0, so the
spatial map starts at exactly 0.5 (docs/protocol.md §8).
"""
from __future__ import annotations

import math

import torch
from torch import nn

INITS = ("standard", "open", "reference")
OPEN_GATE = 0.95  # the value every gate starts at under init="open"


def _open(layer: nn.Module, logit_share: float = 1.0) -> None:
    """Zero a gate's last layer and set its bias so that the gate's pre-sigmoid value is logit(OPEN_GATE)·share."""
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, math.log(OPEN_GATE / (1 - OPEN_GATE)) * logit_share)


def _check_init(init: str, allowed: tuple[str, ...] = INITS) -> None:
    if init not in allowed:
        raise ValueError(f"unknown attention init {init!r} here; choose one of {', '.join(allowed)} (\"reference\" "
                         "is CBAM's with its spatial BatchNorm)")


def _hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x (B,C,H,W) -> x * sigmoid(MLP(mean_hw x))."""

    def __init__(self, channels: int, reduction: int = 16, init: str = "standard"):
        super().__init__()
        _check_init(init, ("standard", "open"))
        self.channels, self.reduction = channels, reduction
        self.excitation = nn.Sequential(
            nn.Linear(channels, _hidden(channels, reduction)),
            nn.ReLU(inplace=True),
            nn.Linear(_hidden(channels, reduction), channels),
            nn.Sigmoid(),
        )
        if init == "open":
            _open(self.excitation[2])
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

    def __init__(self, channels: int, reduction: int = 16, init: str = "standard"):
        super().__init__()
        _check_init(init)
        self.mlp = nn.Sequential(
            nn.Linear(channels, _hidden(channels, reduction)),
            nn.ReLU(inplace=True),
            nn.Linear(_hidden(channels, reduction), channels),
        )
        if init == "open":
            _open(self.mlp[2], 0.5)  # the shared MLP's output is added twice (average and max branch)
        elif init == "reference":
            nn.init.zeros_(self.mlp[0].bias)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))


class SpatialAttention(nn.Module):
    """CBAM's spatial map: sigmoid(conv_k([mean_c x, max_c x])), shape (B, 1, H, W).

    batch_norm=True adds the BatchNorm that the original CBAM code puts after the convolution (eps 1e-5, momentum
    0.01); the CBAM paper's equations have none. It uses batch statistics in train mode and running ones in eval
    mode. init="open" needs a bias: without BatchNorm the convolution gets one (else BatchNorm's shift is it).
    """

    def __init__(self, kernel_size: int = 7, batch_norm: bool = False, init: str = "standard"):
        super().__init__()
        _check_init(init, INITS if batch_norm else ("standard", "open"))
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to preserve the shape, not {kernel_size}")
        opened_conv = init == "open" and not batch_norm
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=opened_conv)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if batch_norm else None
        if init == "open":
            _open(self.bn if batch_norm else self.conv)  # BatchNorm: scale 0, shift logit(OPEN_GATE)
        elif init == "reference":
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
            nn.init.zeros_(self.bn.weight)  # the map starts at sigmoid(0) = 0.5 exactly
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        logits = self.conv(pooled)
        return torch.sigmoid(self.bn(logits) if self.bn is not None else logits)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel gate, then spatial map; x (B,C,H,W)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, spatial_bn: bool = False,
                 init: str = "standard"):
        super().__init__()
        self.channels, self.reduction, self.kernel_size = channels, reduction, kernel_size
        self.channel = ChannelAttention(channels, reduction, init)
        self.spatial = SpatialAttention(kernel_size, spatial_bn, init)
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
                   cbam_kernel_size: int = 7, cbam_spatial_bn: bool = False,
                   init: str = "standard") -> nn.Module | None:
    """The block for a variant name ('se', 'cbam'), or None for 'differnet'."""
    if variant == "differnet":
        return None
    if variant == "se":
        return SEBlock(channels, se_reduction, init)
    if variant == "cbam":
        return CBAM(channels, cbam_reduction, cbam_kernel_size, cbam_spatial_bn, init)
    raise ValueError(f"unknown variant {variant!r}")
