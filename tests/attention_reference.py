"""Reference computations shared by the tests: attention gates computed by hand from the blocks' weights."""
import torch
import torch.nn.functional as F

from adnlib.model.attention import CBAM, SEBlock


def _mlp(x, first, second):
    return F.linear(F.relu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)


def direct_attention(model, x: torch.Tensor) -> dict[str, float]:
    """Walk the backbone by hand at every scale, computing each block's gates from its weights: block i's mean
    channel gate at scale s -> gate_mean_block<i>_scale<s>, CBAM's mean spatial map -> spatial_mean_block<i>_scale<s>
    (means over the images, copies, channels / positions)."""
    found: dict[str, float] = {}
    positions = list(model.backbone.attention.keys())
    with torch.no_grad():
        for scale, xs in enumerate(model.embedding.scaled_inputs(x)):
            h = xs
            for index, layer in enumerate(model.backbone.features):
                h = layer(h)
                if str(index) not in model.backbone.attention:
                    continue
                block, i = model.backbone.attention[str(index)], positions.index(str(index)) + 1
                if isinstance(block, SEBlock):
                    gates = torch.sigmoid(_mlp(h.mean(dim=(2, 3)), block.excitation[0], block.excitation[2]))
                    h = h * gates[:, :, None, None]
                else:
                    assert isinstance(block, CBAM)
                    first, second = block.channel.mlp[0], block.channel.mlp[2]
                    gates = torch.sigmoid(_mlp(h.mean(dim=(2, 3)), first, second)
                                          + _mlp(h.amax(dim=(2, 3)), first, second))
                    h = h * gates[:, :, None, None]
                    pooled = torch.cat([h.mean(dim=1, keepdim=True), h.amax(dim=1, keepdim=True)], dim=1)
                    spatial = torch.sigmoid(F.conv2d(pooled, block.spatial.conv.weight,
                                                     padding=block.kernel_size // 2))
                    h = h * spatial
                    found[f"spatial_mean_block{i}_scale{scale}"] = float(spatial.mean())
                found[f"gate_mean_block{i}_scale{scale}"] = float(gates.mean())
    return found
