"""AlexNet features with attention blocks inserted as in AttentDifferNet's Figure 1, and the multi-scale embedding.

torchvision's ``alexnet().features`` (indices): 0 conv1, 1 relu, 2 pool | 3 conv2, 4 relu, 5 pool |
6 conv3, 7 relu, 8 conv4, 9 relu, 10 conv5, 11 relu | 12 pool. Figure 1 puts a block after index 2 (64 ch),
after index 5 (192 ch) and after index 11 (256 ch, before the last pool). With variant 'differnet' nothing
is inserted and the module computes exactly ``alexnet.features``. `alexnet_features()` builds that Sequential here:
importing torchvision for it would pull in torch._dynamo (seconds at every process start).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adnlib.config import Config
from adnlib.model.attention import make_attention

# (index in alexnet.features after which a block goes, channels there)
FIGURE1_POSITIONS = ((2, 64), (5, 192), (11, 256))
LAST_POOL_INDEX = 12


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` (same layers, indices and state-dict keys, default init): x (B,3,H,W) ->
    (B,256,h,w). tests/test_backbone.py checks it against torchvision's."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2))


def advance_like_alexnet_classifier() -> None:
    """Draw from the default generator what torchvision's ``alexnet()`` draws after its features (the classifier's
    default init), so that seeded random features come out as they did when built with torchvision."""
    for fan_in, fan_out in ((256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)):
        nn.Linear(fan_in, fan_out)


def attention_positions(block3_before_final_pool: bool = True) -> tuple[tuple[int, int], ...]:
    if block3_before_final_pool:
        return FIGURE1_POSITIONS
    return FIGURE1_POSITIONS[:2] + ((LAST_POOL_INDEX, 256),)


class AttentionAlexNet(nn.Module):
    """AlexNet `features` with optional attention blocks; x (B,3,H,W) -> (B,256,h,w)."""

    def __init__(self, features: nn.Sequential, config: Config):
        super().__init__()
        self.features = features
        positions = attention_positions(config.block3_before_final_pool) if config.has_attention else ()
        self.attention = nn.ModuleDict()
        for index, channels in positions:
            self.attention[str(index)] = make_attention(
                config.variant, channels, se_reduction=config.se_reduction,
                cbam_reduction=config.cbam_reduction, cbam_kernel_size=config.cbam_kernel_size,
                cbam_spatial_bn=config.cbam_spatial_bn, init=config.attention_init)
        for p in self.features.parameters():
            p.requires_grad_(False)  # frozen: autograd then computes no weight gradients for them
        self.train_attention = config.train_attention
        for p in self.attention.parameters():
            p.requires_grad_(config.train_attention)

    def train(self, mode: bool = True) -> AttentionAlexNet:
        """As nn.Module.train, but frozen attention blocks stay in eval mode: a frozen block's BatchNorm (CBAM with
        cbam_spatial_bn) must not update its running statistics or use batch statistics."""
        super().train(mode)
        if not self.train_attention:
            self.attention.eval()
        return self

    @property
    def blocks(self) -> list[nn.Module]:
        """The attention blocks in forward order (empty for DifferNet)."""
        return list(self.attention.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.attention:
            return self.features(x)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if str(index) in self.attention:
                x = self.attention[str(index)](x)
        return x


class MultiScaleEmbedding(nn.Module):
    """Backbone at n scales, each map averaged over space, concatenated: x (B,3,S,S) -> (B, 256·n_scales)."""

    def __init__(self, backbone: AttentionAlexNet, n_scales: int = 3, mode: str = "nearest"):
        super().__init__()
        self.backbone, self.n_scales, self.mode = backbone, n_scales, mode

    def scaled_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The n inputs the backbone sees: x, then x resized to S/2, S/4, ... (as the official code)."""
        size = x.shape[-1]
        return [x] + [F.interpolate(x, size=size // 2 ** s, mode=self.mode) for s in range(1, self.n_scales)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.backbone(xs).mean(dim=(2, 3)) for xs in self.scaled_inputs(x)], dim=1)
