"""Paired comparisons and the official protocol's precision, rotations and options (issue 10).

Two variants with one seed must start from the same flow and see the same batches and angles; float32 is the
default; random test rotations are drawn afresh at every evaluation; the gate initialisation and CBAM's spatial
BatchNorm are explicit options.
"""
import pytest
import torch

import adnlib.run.train as train_mod
from adnlib.config import preset
from adnlib.errors import ConfigError
from adnlib.model.attention import CBAM, OPEN_GATE, SEBlock
from adnlib.model.network import AttentDifferNet
from adnlib.run.device import check_precision, precision_record
from adnlib.run.evaluate import image_angles, image_generator, rotation_key
from adnlib.run.train import train, training_batch

VARIANTS = ("differnet", "se", "cbam")


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
@pytest.mark.parametrize("attention_init", ["standard", "open"])
def test_flows_start_equal_for_every_variant(attention_init):
    # catches a flow built after the attention blocks from one seeded stream (SE/CBAM then draw other weights)
    models = [AttentDifferNet(preset("smoke", variant=v, attention_init=attention_init)) for v in VARIANTS]
    reference = models[0].flow.state_dict()
    for model in models[1:]:
        state = model.flow.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    # the seed still matters, and the frozen AlexNet is the same too
    other = AttentDifferNet(preset("smoke", seed=1)).flow.state_dict()
    assert not all(torch.equal(other[k], reference[k]) for k in reference)
    assert all(torch.equal(a, b) for a, b in zip(models[0].backbone.features.parameters(),
                                                 models[2].backbone.features.parameters()))


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_variants_with_one_seed_see_the_same_batches_and_angles(tiny_root, monkeypatch):
    # catches a data order or rotation generator that depends on the variant (or on draws the attention makes),
    # for any of the three variants
    seen, real_step = {}, train_mod.train_step

    def recording(variant):
        def step(model, optimizer, images=None, angles=None, **kwargs):
            seen.setdefault(variant, []).append((images.clone(), angles.clone()))
            return real_step(model, optimizer, images, angles, **kwargs)
        return step

    for variant in VARIANTS:
        monkeypatch.setattr(train_mod, "train_step", recording(variant))
        train(preset("smoke", variant=variant, batch_size=3, epochs=2, eval_every=2), tiny_root, "disc",
              progress=False)
    for variant in VARIANTS:
        assert len(seen[variant]) == 6  # 8 images in batches of 3, two epochs
    for variant in VARIANTS[1:]:
        for (images_a, angles_a), (images_b, angles_b) in zip(seen["differnet"], seen[variant]):
            assert torch.equal(images_a, images_b), variant
            assert torch.equal(angles_a, angles_b), variant
    # and the two epochs differ (a reshuffle and fresh angles, not one batch replayed)
    assert not torch.equal(seen["differnet"][0][1], seen["differnet"][3][1])


def test_no_two_random_streams_of_seeds_0_to_4_coincide():
    # catches streams derived as seed + offset (seed 0's training rotations were seed 1's flow initialisation) and
    # a stream that depends on the variant
    from adnlib.model.network import init_seeds
    from adnlib.seeds import STREAMS, stream_seed, stream_seeds
    seeds = {(k, purpose): stream_seed(k, purpose) for k in range(5) for purpose in STREAMS}
    assert len(set(seeds.values())) == len(seeds)
    assert init_seeds(2) == {p: stream_seeds(2)[p] for p in ("flow_init", "attention_init")}
    first_angles = torch.rand(4, generator=torch.Generator().manual_seed(stream_seed(0, "train_rotations")))
    flow_draws = torch.rand(4, generator=torch.Generator().manual_seed(stream_seed(1, "flow_init")))
    assert not torch.equal(first_angles, flow_draws)
    with pytest.raises(ValueError, match="unknown random stream"):
        stream_seed(0, "test_rotation")


def test_training_uses_the_derived_streams(tiny_root, monkeypatch):
    # catches a rotation generator seeded from config.seed (or seed + k) directly instead of its own stream
    from adnlib.seeds import stream_seed
    first, real_step = [], train_mod.train_step

    def step(model, optimizer, images=None, angles=None, **kwargs):
        first.append((images.clone(), angles.clone()))
        return real_step(model, optimizer, images, angles, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step)
    config = preset("smoke", seed=1, epochs=1)
    result = train(config, tiny_root, "disc", progress=False)
    images, angles = first[0]
    expected = training_batch(images, config, torch.Generator().manual_seed(stream_seed(1, "train_rotations")))[1]
    assert torch.equal(angles, expected)
    assert result.metrics["seeds"]["train_rotations"] == stream_seed(1, "train_rotations")
    assert result.metrics["seeds"]["data_order"] == stream_seed(1, "data_order")


def test_float32_is_the_default_and_amp_is_refused_where_it_cannot_run(monkeypatch):
    # catches amp on by default, and an --amp that silently runs in float32 (or fails late) on MPS / old GPUs
    assert preset("paper").amp is False
    assert preset("demo").amp is False
    with pytest.raises(ConfigError, match="MPS"):
        check_precision(True, torch.device("mps"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="V100 does not support"):
        check_precision(True, torch.device("cuda"))
    check_precision(False, torch.device("mps"))  # float32 runs anywhere
    assert precision_record(False, torch.device("cpu"))["precision"] == "float32"
    assert precision_record(True, torch.device("cpu"))["precision"].startswith("bfloat16")


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_amp_changes_the_scores_a_little_and_is_recorded(tiny_root, tmp_path):
    # the bf16 path runs on CPU too (so it is tested here): it must change the numbers (else it is not on) by
    # little (else it is broken), and metrics.json must say which precision ran
    runs = {amp: train(preset("smoke", amp=amp), tiny_root, "disc", tmp_path / str(amp), progress=False)
            for amp in (False, True)}
    a, b = (runs[amp].scores["score"].to_numpy() for amp in (False, True))
    assert (a != b).any()
    assert abs(a - b).max() < 0.2 * abs(a).max()
    assert runs[False].metrics["precision"] == "float32"
    assert "bfloat16" in runs[True].metrics["precision"]
    assert runs[True].metrics["device"] == "cpu"
    assert "float32_matmul_precision" in runs[True].metrics


def test_random_test_rotations_are_fresh_at_every_evaluation(tiny_root, monkeypatch):
    # catches angles frozen per image for the whole run (all evaluations the same), as before issue 10
    a = image_angles("good/000.png", 8, "random", 180.0, seed=0, evaluation=1)
    assert not torch.equal(a, image_angles("good/000.png", 8, "random", 180.0, seed=0, evaluation=2))
    assert torch.equal(a, image_angles("good/000.png", 8, "random", 180.0, seed=0, evaluation=1))  # reproducible
    assert torch.equal(image_angles("x", 4, "fixed", evaluation=3), torch.tensor([0.0, 90.0, 180.0, 270.0]))
    evaluations = []
    score_dataset = train_mod.score_dataset

    def recording(*args, evaluation=0, **kwargs):
        evaluations.append(evaluation)
        return score_dataset(*args, evaluation=evaluation, **kwargs)

    monkeypatch.setattr(train_mod, "score_dataset", recording)
    result = train(preset("smoke", epochs=2, eval_every=1, test_rotations="random"), tiny_root, "disc",
                   progress=False)
    assert evaluations == [1, 2]  # the epoch identifies the evaluation
    assert result.metrics["test_rotations"]["mode"] == "random"
    assert "afresh at every evaluation" in result.metrics["test_rotations"]["angles"]


def test_rotation_keys_tell_images_in_sub_folders_apart(tmp_path):
    # catches a key of the last two path parts, which gives a/001.png for crack/a/001.png and scratch/a/001.png
    split = tmp_path / "cat" / "test"
    keys = {rotation_key(split / d / "a" / "001.png", split) for d in ("crack", "scratch")}
    assert keys == {"crack/a/001.png", "scratch/a/001.png"}
    assert rotation_key(split / "crack" / "001.png") == rotation_key(split / "crack" / "001.png", split)
    assert image_generator("crack/a/001.png").initial_seed() != image_generator("scratch/a/001.png").initial_seed()


def test_training_batch_draws_angles_then_jitters_each_rotated_copy():
    # official order: RandomRotation, then ColorJitter. Catches jitter before the rotation (black corners would
    # stay black under contrast) and angles that depend on whether jitter is on (pairing across settings)
    images = torch.full((3, 3, 32, 32), 0.8)
    off, angles = training_batch(images, preset("smoke"), torch.Generator().manual_seed(5))
    on, none = training_batch(images, preset("smoke", contrast=0.9), torch.Generator().manual_seed(5))
    assert none is None
    assert on.shape == (3 * 2, 3, 32, 32)
    assert torch.equal(off, images)
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(angles.reshape(-1), (torch.rand(6, generator=generator) * 2 - 1) * 180.0)
    corners = on[:, :, 0, 0]  # outside the image after most rotations: black before the jitter
    assert (corners > 0).any()


def test_test_time_jitter_is_applied_and_seeded(tiny_root):
    # the official test loader uses the training transform: with jitter on, test copies are jittered too
    from adnlib.data.datasets import AnomalyDataset
    from adnlib.run.evaluate import score_dataset
    data = AnomalyDataset(tiny_root, "disc", "test", 128)
    plain = AttentDifferNet(preset("smoke"))
    jittered = AttentDifferNet(preset("smoke", brightness=0.5))
    a = score_dataset(plain, data, progress=False)["score"].to_numpy()
    b = score_dataset(jittered, data, progress=False)["score"].to_numpy()
    c = score_dataset(jittered, data, progress=False, batch_size=1)["score"].to_numpy()
    assert (abs(a - b) > 1e-6 * abs(a)).any()  # jitter is on at test time
    assert abs(b - c).max() <= 1e-5 * abs(b).max()  # seeded per image: batch size does not matter


def test_open_gate_init_starts_every_gate_at_095():
    # catches an 'open' option that only shifts the mean (gates would still vary with the input) or is ignored
    x = torch.rand(5, 64, 9, 9) * 4
    for block in (SEBlock(64, init="open"), CBAM(64, init="open"), CBAM(64, spatial_bn=True, init="open")):
        block.eval()
        y = block(x)
        gates = block.last_gates if isinstance(block, SEBlock) else block.last_channel_gates
        torch.testing.assert_close(gates, torch.full_like(gates, OPEN_GATE))
        if isinstance(block, CBAM):
            torch.testing.assert_close(block.last_spatial_map, torch.full_like(block.last_spatial_map, OPEN_GATE))
        assert y.shape == x.shape
    standard = SEBlock(64)
    standard(x)
    assert abs(standard.last_gates.mean().item() - 0.5) < 0.15  # the cold start the option exists for
    model = AttentDifferNet(preset("smoke", variant="se", attention_init="open"))
    assert sum(p.numel() for p in model.backbone.attention.parameters()) == \
        sum(p.numel() for p in AttentDifferNet(preset("smoke", variant="se")).backbone.attention.parameters())


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_cbam_spatial_batchnorm_switch_and_modes():
    # catches a switch that is ignored, BatchNorm statistics that update while the attention is frozen, and a
    # frozen block left in train mode by model.train()
    assert not any(".spatial.bn." in k for k in AttentDifferNet(preset("smoke", variant="cbam")).state_dict())
    model = AttentDifferNet(preset("smoke", variant="cbam", cbam_spatial_bn=True))
    bn_keys = [k for k in model.backbone.state_dict() if ".spatial.bn." in k]
    assert len(bn_keys) == 5 * len(model.backbone.blocks)  # weight, bias, running mean/var, batch count
    x = model.prepare(torch.rand(2, 3, 128, 128))
    model.train()
    model(x)
    assert all(int(b.spatial.bn.num_batches_tracked) == 2 for b in model.backbone.blocks)  # 2 scales, batch stats
    frozen = AttentDifferNet(preset("smoke", variant="cbam", cbam_spatial_bn=True, train_attention=False))
    frozen.train()
    assert all(not b.training for b in frozen.backbone.blocks)
    frozen(x)
    assert all(int(b.spatial.bn.num_batches_tracked) == 0 for b in frozen.backbone.blocks)


def test_reference_init_is_the_cbam_authors_and_only_where_it_exists():
    # catches a 'reference' option that leaves PyTorch's default biases or BatchNorm weight (the spatial map would
    # then not start at exactly 0.5), or one accepted where the authors' code has no such initialisation
    model = AttentDifferNet(preset("smoke", variant="cbam", cbam_spatial_bn=True, attention_init="reference"))
    model.eval()
    model(model.prepare(torch.rand(2, 3, 128, 128)))
    for block in model.backbone.blocks:
        assert torch.equal(block.last_spatial_map, torch.full_like(block.last_spatial_map, 0.5))
        assert torch.count_nonzero(block.channel.mlp[0].bias) == 0
        assert torch.count_nonzero(block.channel.mlp[2].bias) == 0
        assert torch.count_nonzero(block.channel.mlp[2].weight) > 0  # the MLP's weights keep their default init
    for bad in (dict(variant="se"), dict(variant="cbam")):
        with pytest.raises(ConfigError, match="cbam_spatial_bn"):
            preset("smoke", attention_init="reference", **bad)
