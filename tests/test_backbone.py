import pytest
import torch
from torchvision.models import alexnet

from adnlib.config import preset
from adnlib.model.backbone import AttentionAlexNet, MultiScaleEmbedding
from adnlib.model.network import AttentDifferNet
from adnlib.model.weights import load_alexnet_features


def test_differnet_variant_is_exactly_alexnet_features():
    features, label = load_alexnet_features("none", seed=3)
    assert label == "random"
    plain = alexnet(weights=None).features.eval()
    plain.load_state_dict(features.state_dict())
    backbone = AttentionAlexNet(features, preset("smoke", variant="differnet"))
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(backbone(x), plain(x))


def test_multiscale_embedding_matches_the_official_loop():
    features, _ = load_alexnet_features("none", seed=0)
    config = preset("smoke", img_size=256, n_scales=3)
    emb = MultiScaleEmbedding(AttentionAlexNet(features, config), 3, "nearest")
    x = torch.randn(2, 3, 256, 256)
    expected = []
    for s in range(3):  # DifferNet's model.forward
        xs = torch.nn.functional.interpolate(x, size=256 // 2 ** s) if s > 0 else x
        expected.append(torch.mean(features(xs), dim=(2, 3)))
    assert torch.equal(emb(x), torch.cat(expected, dim=1))


@pytest.mark.parametrize("variant,blocks", [("differnet", 0), ("se", 3), ("cbam", 3)])
def test_variants_embed_to_256_per_scale_and_freeze_convolutions(variant, blocks):
    model = AttentDifferNet(preset("smoke", variant=variant))
    assert len(model.backbone.blocks) == blocks
    y = model.embed(model.prepare(torch.rand(2, 3, 128, 128)))
    assert y.shape == (2, 256 * 2)
    assert not any(p.requires_grad for p in model.backbone.features.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert all(id(p) in trainable for p in model.flow.parameters() if p.requires_grad)
    assert all(id(p) in trainable for p in model.backbone.attention.parameters())


def test_attention_sits_where_figure_1_puts_it():
    model = AttentDifferNet(preset("smoke", variant="se"))
    assert [(k, b.channels) for k, b in model.backbone.attention.items()] == [("2", 64), ("5", 192), ("11", 256)]
    alt = AttentDifferNet(preset("smoke", variant="se", block3_before_final_pool=False))
    assert list(alt.backbone.attention) == ["2", "5", "12"]


def test_frozen_attention_switch():
    model = AttentDifferNet(preset("smoke", variant="cbam", train_attention=False))
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_training_backward_computes_no_gradients_for_frozen_convolutions():
    model = AttentDifferNet(preset("smoke", variant="se"))
    z, jac = model(model.prepare(torch.rand(2, 3, 128, 128)))
    (z.pow(2).sum() - jac.sum()).backward()
    assert all(p.grad is None for p in model.backbone.features.parameters())
    assert all(p.grad is not None for p in model.backbone.attention.parameters())


def test_random_weights_are_seeded():
    a, _ = load_alexnet_features("none", seed=1)
    b, _ = load_alexnet_features("none", seed=1)
    c, _ = load_alexnet_features("none", seed=2)
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_local_weights_file_is_loaded(tmp_path):
    full = alexnet(weights=None)
    torch.save(full.state_dict(), tmp_path / "alexnet.pth")
    features, label = load_alexnet_features(str(tmp_path / "alexnet.pth"))
    assert label == str(tmp_path / "alexnet.pth")
    assert torch.equal(features[0].weight, full.features[0].weight)


def test_our_alexnet_features_have_torchvisions_keys_shapes_and_layers():
    # catches a layer, kernel, stride or padding that differs from torchvision's (ImageNet weights would then load
    # into the wrong places, or not at all)
    from adnlib.model.backbone import alexnet_features
    ours, theirs = alexnet_features(), alexnet(weights=None).features
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert [repr(layer) for layer in ours] == [repr(layer) for layer in theirs]


def test_seeded_random_features_are_those_torchvision_built():
    # catches a change of the random-weight runs' numbers (the regression baseline uses random weights): the same
    # seed gives bit for bit the features that torchvision's alexnet(weights=None) followed by He init gave
    from adnlib.model.weights import random_alexnet_features
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(5)
        expected = alexnet(weights=None).features
        for layer in expected:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
    ours = random_alexnet_features(5).state_dict()
    for key, value in expected.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_the_imagenet_address_is_torchvisions():
    from torchvision.models import AlexNet_Weights

    from adnlib.model import weights
    assert AlexNet_Weights.IMAGENET1K_V1.url == weights.IMAGENET_URL
