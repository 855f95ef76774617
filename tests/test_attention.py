import pytest
import torch
import torch.nn.functional as F

from adnlib.model.attention import CBAM, SEBlock


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


def _mlp(x: torch.Tensor, first: torch.nn.Linear, second: torch.nn.Linear) -> torch.Tensor:
    """Linear -> ReLU -> Linear, from the layers' weights."""
    return F.linear(F.relu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)


def _spread(block: torch.nn.Module) -> None:
    """Larger random weights than the default init: gates far from 0.5 and from each other (a fair test)."""
    torch.manual_seed(11)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.6)


def test_se_gates_are_sigmoid_of_the_mlp_of_the_spatial_mean():
    """Recomputed from the block's Linear weights: catches max instead of mean pooling, pooling over the wrong
    axes, a missing ReLU or sigmoid, or gates applied per position instead of per channel."""
    block = SEBlock(32, reduction=4)
    _spread(block)
    x = torch.randn(3, 32, 9, 7) + torch.linspace(-1, 2, 32)[None, :, None, None]
    y = block(x)
    first, second = block.excitation[0], block.excitation[2]
    expected = torch.sigmoid(_mlp(x.mean(dim=(2, 3)), first, second))
    torch.testing.assert_close(block.last_gates, expected)
    torch.testing.assert_close(y, x * expected[:, :, None, None])
    assert expected.std() > 0.1  # the gates really differ between channels and images


def test_cbam_spatial_map_is_computed_on_the_channel_gated_input():
    """CBAM (Woo et al.): channel gate sigmoid(MLP(avg_hw x) + MLP(max_hw x)) with one shared MLP; then the spatial
    map sigmoid(conv7x7([mean_c x', max_c x'])) of the GATED input x' = x * gate, mean first, then max. Catches the
    spatial map taken on the un-gated x, mean and max swapped, a channel gate from the average alone, or the
    spatial map applied before the channel gate."""
    block = CBAM(32, reduction=4, kernel_size=7)
    _spread(block)
    x = torch.randn(2, 32, 11, 13) + torch.linspace(-1, 2, 32)[None, :, None, None]
    y = block(x)
    first, second = block.channel.mlp[0], block.channel.mlp[2]
    gates = torch.sigmoid(_mlp(x.mean(dim=(2, 3)), first, second) + _mlp(x.amax(dim=(2, 3)), first, second))
    gated = x * gates[:, :, None, None]
    pooled = torch.cat([gated.mean(dim=1, keepdim=True), gated.amax(dim=1, keepdim=True)], dim=1)
    spatial = torch.sigmoid(F.conv2d(pooled, block.spatial.conv.weight, padding=3))
    torch.testing.assert_close(block.last_channel_gates, gates)
    torch.testing.assert_close(block.last_spatial_map, spatial)
    torch.testing.assert_close(y, gated * spatial)
    # the alternatives differ measurably, so the checks above can tell them apart
    ungated = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    swapped = pooled.flip(1)
    for wrong in (ungated, swapped):
        assert (torch.sigmoid(F.conv2d(wrong, block.spatial.conv.weight, padding=3)) - spatial).abs().max() > 0.05
