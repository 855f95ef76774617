import pytest
import torch

from adnlib.attention import CBAM, SEBlock


@pytest.mark.parametrize("channels,hw", [(64, 27), (192, 13), (256, 13)])
def test_se_preserves_shape_and_keeps_gates_in_unit_range(channels, hw):
    block = SEBlock(channels)
    x = torch.randn(3, channels, hw, hw)
    y = block(x)
    assert y.shape == x.shape
    assert block.last_gates.shape == (3, channels)
    assert ((block.last_gates > 0) & (block.last_gates < 1)).all()
    torch.testing.assert_close(y, x * block.last_gates[:, :, None, None])


@pytest.mark.parametrize("channels,hw", [(64, 27), (192, 13), (256, 13)])
def test_cbam_preserves_shape_and_keeps_both_maps(channels, hw):
    block = CBAM(channels)
    x = torch.randn(2, channels, hw, hw)
    y = block(x)
    assert y.shape == x.shape
    assert block.last_channel_gates.shape == (2, channels)
    assert block.last_spatial_map.shape == (2, 1, hw, hw)
    for gates in (block.last_channel_gates, block.last_spatial_map):
        assert ((gates > 0) & (gates < 1)).all()
    torch.testing.assert_close(y, x * block.last_channel_gates[:, :, None, None] * block.last_spatial_map)


def test_parameter_counts_follow_the_papers_defaults():
    # SE: two linear layers C -> C/16 -> C with biases
    assert sum(p.numel() for p in SEBlock(64).parameters()) == 64 * 4 + 4 + 4 * 64 + 64
    # CBAM: the shared MLP plus a 2->1 7x7 conv without bias
    assert sum(p.numel() for p in CBAM(256).parameters()) == (256 * 16 + 16 + 16 * 256 + 256) + 2 * 7 * 7


def test_gates_are_trainable():
    block = SEBlock(64)
    block(torch.randn(2, 64, 5, 5)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
