"""Grad-CAM and input-gradient explanations (adnlib.explain.gradcam) and the attention helpers
(adnlib.explain.attention_viz)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from adnlib import preset  # noqa: E402
from adnlib.data.datasets import AnomalyDataset  # noqa: E402
from adnlib.explain.attention_viz import (  # noqa: E402
    attention_panel,
    attention_viewer,
    cbam_steps,
    collect_attention,
    excitation_activity,
    gate_shift,
    gate_statistics,
    image_batch,
    overlay_heatmap,
    parameter_table,
    pick_test_images,
    se_steps,
    with_initial_attention,
)
from adnlib.explain.gradcam import (  # noqa: E402
    METHODS,
    MultiScaleScore,
    ScaleScore,
    ScoreTarget,
    anomaly_cam,
    cam_grid_figure,
    hooked_activation_shapes,
    input_gradient_map,
    scale_embeddings,
    target_layer,
)
from adnlib.model.network import AttentDifferNet  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return {v: AttentDifferNet(preset("smoke", variant=v)) for v in ("differnet", "se", "cbam")}


def _defect_images(root, category, defect, size, mask_of):
    """Demo test images of one defect type and their defect masks (the demo defects have distinctive colours)."""
    data = AnomalyDataset(root, category, "test", size)
    images = torch.stack([data[i][0] for i, s in enumerate(data.samples) if s.defect_type == defect])
    return images, mask_of(images.int()).numpy()


@pytest.fixture(scope="module")
def stains(demo_root):
    # the demo's stains are a greenish-grey tint (60,110,70) on a bronze disc (176,150,112): green above red
    return _defect_images(demo_root, "disc", "stain", 128, lambda f: f[:, 1] > f[:, 0] + 10)


@pytest.fixture(scope="module")
def holes(demo_root):
    # the demo's holes are near-black (10) in a woven fabric that never goes below ~50
    return _defect_images(demo_root, "weave", "hole", 128, lambda f: f.amax(1) < 30)


@pytest.mark.parametrize("variant", ["differnet", "se", "cbam"])
def test_cam_shape_and_range(models, stains, variant):
    images = stains[0][:2]
    cams = anomaly_cam(models[variant], images)
    assert cams.shape == (2, 128, 128)
    assert cams.dtype == np.float32
    assert cams.min() >= 0
    assert cams.max() <= 1
    assert np.isclose(cams.max(), 1)


def test_cam_options(models, stains):
    model, images = models["se"], stains[0][:1]
    for scales in (0, 1, [0, 1]):
        assert anomaly_cam(model, images, scales=scales).shape == (1, 128, 128)
    assert anomaly_cam(model, images, combine=[2.0, 1.0]).shape == (1, 128, 128)
    rotated = anomaly_cam(model, images, rotations=2)
    assert rotated.shape == (1, 128, 128)
    assert rotated.min() >= 0
    assert rotated.max() <= 1
    assert anomaly_cam(model, images, method="gradcam++").shape == (1, 128, 128)
    assert "eigencam" in METHODS
    with pytest.raises(ValueError):
        anomaly_cam(model, images, scales=5)
    with pytest.raises(ValueError):
        anomaly_cam(model, images, method="scorecam")


def _unit(maps: np.ndarray) -> np.ndarray:
    """Min-max per map, as anomaly_cam normalises its result."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    return (maps - lo) / np.maximum(maps.max(axis=(1, 2), keepdims=True) - lo, 1e-7)


def test_cam_combine_weights_the_per_scale_maps(models, stains):
    """combine='mean' is the normalised mean of the per-scale CAMs computed one by one; weights weight them in the
    order of the scales. Catches ignored weights, weights applied to the wrong scale, or a max instead of a mean."""
    model, images = models["se"], stains[0][:2]
    per_scale = [anomaly_cam(model, images, scales=s) for s in range(model.config.n_scales)]
    assert not np.allclose(per_scale[0], per_scale[1], atol=0.05)  # the scales really differ
    np.testing.assert_allclose(anomaly_cam(model, images), _unit(np.mean(per_scale, axis=0)), atol=1e-5)
    weighted = anomaly_cam(model, images, combine=[3.0, 1.0])
    np.testing.assert_allclose(weighted, _unit((3 * per_scale[0] + per_scale[1]) / 4), atol=1e-5)
    assert not np.allclose(weighted, anomaly_cam(model, images, combine=[1.0, 3.0]), atol=0.02)
    np.testing.assert_allclose(anomaly_cam(model, images, scales=[1, 0], combine=[3.0, 1.0]),
                               _unit((3 * per_scale[1] + per_scale[0]) / 4), atol=1e-5)
    with pytest.raises(ValueError, match="one weight per scale"):
        anomaly_cam(model, images, combine=[1.0, 2.0, 3.0])


def test_cam_rotations_average_the_maps_rotated_back(models, stains):
    """rotations=2 explains the image at 0 and 180 degrees: the scale-mean CAM of the rotated image, rotated back,
    is averaged with the plain image's. Catches rotations ignored, or maps left in the rotated frame."""
    model, images = models["differnet"], stains[0][:2]

    def scale_mean(x):  # the per-angle map before the final normalisation
        return np.mean([anomaly_cam(model, x, scales=s) for s in range(model.config.n_scales)], axis=0)

    plain = scale_mean(images)
    upside_down = scale_mean(torch.rot90(images, 2, dims=(2, 3)))
    back = np.rot90(upside_down, 2, axes=(1, 2))
    rotated = anomaly_cam(model, images, rotations=2)
    np.testing.assert_allclose(rotated, _unit((plain + back) / 2), atol=1e-4)
    assert np.abs(rotated - _unit(plain)).max() > 0.05  # the rotations change the map
    assert np.abs(rotated - _unit((plain + upside_down) / 2)).max() > 0.05  # and the back-rotation matters
    np.testing.assert_allclose(anomaly_cam(model, images, rotations=[0.0, 180.0]), rotated, atol=1e-6)
    np.testing.assert_allclose(anomaly_cam(model, images, rotations=1), _unit(plain), atol=1e-5)


def test_naive_hook_records_every_scale_but_the_wrapper_one(models, stains):
    """The pytorch-grad-cam quirk (docs/protocol.md §7): the whole model records one activation per scale."""
    images = stains[0][:2]
    for variant, model in models.items():
        naive = hooked_activation_shapes(model, images)
        assert len(naive) == model.config.n_scales
        assert naive[0][-1] > naive[1][-1]  # full size first, then smaller
        for scale in range(model.config.n_scales):
            assert hooked_activation_shapes(model, images, scale) == [naive[scale]], variant


def test_naive_grad_cam_silently_explains_only_the_first_scale(models, stains):
    """Why ScaleScore exists: plain GradCAM on the multi-scale model hooks n activations and its map is exactly the
    full-size scale's CAM; the other scales are ignored without a warning."""
    from pytorch_grad_cam import GradCAM

    model, images = models["differnet"], stains[0][:2]
    cam = GradCAM(MultiScaleScore(model), [target_layer(model)])
    try:
        naive = cam(model.prepare(images), targets=[ScoreTarget()] * 2)
        assert len(cam.activations_and_grads.activations) == model.config.n_scales
    finally:
        cam.activations_and_grads.release()
    np.testing.assert_allclose(naive, anomaly_cam(model, images, scales=0), atol=1e-5)
    assert not np.allclose(naive, anomaly_cam(model, images, scales=1), atol=1e-2)


def test_scale_score_equals_the_model_score(models, stains):
    """Feeding one scale and the others as constants must not change the score the CAM explains."""
    model, images = models["cbam"], stains[0][:3]
    model.eval()
    x = model.prepare(images)
    fixed = scale_embeddings(model, x)
    with torch.no_grad():
        z, _ = model(x)
        expected = z.pow(2).mean(1)
        for scale in range(model.config.n_scales):
            torch.testing.assert_close(ScaleScore(model, scale, fixed)(x), expected, rtol=1e-4, atol=1e-5)
    first = expected[0]
    assert ScoreTarget()(first) is first


def test_explaining_leaves_the_model_as_it_was(models, stains):
    """Explaining a model in the middle of training must not touch it: mode, requires_grad flags and the .grad
    tensors already accumulated. pytorch-grad-cam's BaseCAM.forward calls zero_grad() on the model it wraps (our
    ScaleScore holds the model), which would drop them; .grad starting as None could not see that."""
    model = models["se"]
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    generator = torch.Generator().manual_seed(5)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.randn(p.shape, generator=generator)
    saved = [(p.grad, p.grad.clone()) for p in trainable]
    try:
        anomaly_cam(model, stains[0][:1])
        input_gradient_map(model, stains[0][:1])
        anomaly_cam(model, stains[0][:1], method="gradcam++", rotations=2)
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == flags
        for p, (tensor, values) in zip(trainable, saved):
            assert p.grad is tensor
            assert torch.equal(p.grad, values)
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    finally:
        for p in trainable:
            p.grad = None
        model.eval()


def _painted(images, centre, radius=14, colour=(200, 30, 30)):
    """The same images with a disc painted off-centre (a synthetic defect), and its mask (H,W)."""
    yy, xx = np.mgrid[0:images.shape[-2], 0:images.shape[-1]]
    mask = np.hypot(xx - centre[0], yy - centre[1]) < radius
    painted = images.clone()
    painted[:, :, torch.from_numpy(mask)] = torch.tensor(colour, dtype=torch.uint8)[:, None]
    return painted, mask


@pytest.fixture(scope="module")
def weave_normals(demo_root):
    data = AnomalyDataset(demo_root, "weave", "test", 128)
    return torch.stack([data[i][0] for i, s in enumerate(data.samples) if s.label == 0])[:4]


@pytest.mark.parametrize("variant", ["differnet", "se"])
@pytest.mark.parametrize("centre", [(36, 36), (90, 92)])
def test_painting_a_defect_raises_the_cam_there(models, weave_normals, variant, centre):
    """Paired test: the same images with and without a painted off-centre defect.

    Comparing inside vs outside a real defect would be fooled by the CAM's centre bias (the demo defects are
    near the centre, and random-weight CAMs peak there on normal images too); comparing each image with itself
    is not. Holds for DifferNet and SE with random weights; CBAM's random spatial maps may damp the region.
    """
    painted, mask = _painted(weave_normals, centre)
    with_defect, without = anomaly_cam(models[variant], painted), anomaly_cam(models[variant], weave_normals)
    rise = np.array([a[mask].mean() - b[mask].mean() for a, b in zip(with_defect, without)])
    assert (rise > 0.02).all(), rise


def test_input_gradient_map(models, weave_normals, holes):
    painted, mask = _painted(weave_normals, (36, 36))
    with_defect = input_gradient_map(models["differnet"], painted)
    without = input_gradient_map(models["differnet"], weave_normals)
    assert with_defect.shape == (4, 128, 128)
    assert with_defect.min() >= 0
    assert np.isclose(with_defect.max(), 1)
    for a, b in zip(with_defect, without):
        assert a[mask].mean() > b[mask].mean() + 0.05  # the paint raises the map where it is...
        assert a[mask].mean() > 4 * a[~mask].mean()  # ...and stands out of the rest of the image
    # a real demo hole (near-black in the fabric) stands out of the map
    images, masks = holes
    maps = input_gradient_map(models["differnet"], images)
    inside = np.mean([g[m].mean() for g, m in zip(maps, masks)])
    assert inside > 2 * np.mean([g[~m].mean() for g, m in zip(maps, masks)])
    assert input_gradient_map(models["se"], images[:1], channels="max", sigma=0, rotations=2).shape == (1, 128, 128)


def test_target_layer_is_the_last_conv_block(models):
    assert target_layer(models["differnet"]) is models["differnet"].backbone.features[11]
    assert target_layer(models["se"]) is models["se"].backbone.attention["11"]


def test_cam_grid_figure_has_a_deterministic_pixel_size(tmp_path, stains):
    images = stains[0][:3]
    maps = np.random.default_rng(0).random((3, 128, 128)).astype(np.float32)
    fig = cam_grid_figure(images, {"a": maps, "b": maps}, ["x", "y", "z"], cell_inches=2.0, dpi=50, title="t")
    fig.savefig(tmp_path / "grid.png", dpi=50)
    plt.close(fig)
    assert plt.imread(tmp_path / "grid.png").shape[:2] == (int(round((3 * 2.0 + 0.4) * 50)), 3 * 2 * 50)


# --- attention_viz ---------------------------------------------------------------------------------------------------
def test_collect_attention_shapes(models, stains):
    images = stains[0][:2]
    assert collect_attention(models["differnet"], images) == []
    se, cbam = collect_attention(models["se"], images), collect_attention(models["cbam"], images)
    assert [r.channels for r in se] == [64, 192, 256] == [r.channels for r in cbam]
    for r in se + cbam:
        assert r.inputs.shape == r.outputs.shape
        assert r.inputs.shape[:2] == (2, r.channels)
        assert r.channel_gates.shape == (2, r.channels)
        assert r.energy_before.shape == r.energy_after.shape == (2, r.channels)
        assert r.energy_ratio().shape == (2,)
    assert all(r.spatial_map is None for r in se)
    assert all(r.spatial_map.shape == (2, 1, *r.inputs.shape[2:]) for r in cbam)
    # the records match the blocks' own bookkeeping: outputs = inputs x gates (x map)
    r = cbam[0]
    torch.testing.assert_close(r.outputs, r.inputs * r.channel_gates[:, :, None, None] * r.spatial_map)
    smaller = collect_attention(models["se"], images, scale=1)
    assert smaller[0].inputs.shape[-1] < se[0].inputs.shape[-1]


def test_step_by_step_helpers_match_the_blocks(models, stains):
    images = stains[0][:2]
    se_block, cbam_block = models["se"].backbone.blocks[0], models["cbam"].backbone.blocks[1]
    x = collect_attention(models["se"], images)[0].inputs
    steps = se_steps(se_block, x)
    torch.testing.assert_close(steps["output"], se_block(x))
    assert steps["squeezed"].shape == steps["gates"].shape == (2, 64)
    x = collect_attention(models["cbam"], images)[1].inputs
    steps = cbam_steps(cbam_block, x)
    torch.testing.assert_close(steps["output"], cbam_block(x))
    assert steps["spatial_map"].shape == steps["mean_map"].shape == (2, 1, *x.shape[2:])


def test_parameter_table_counts():
    table = parameter_table()
    assert list(table["channels"][:3]) == [64, 192, 256]
    assert table["se"][0] == 64 * 4 + 4 + 4 * 64 + 64
    assert table["cbam"][2] == table["se"][2] + 2 * 7 * 7
    assert table["conv_before"][0] == 3 * 64 * 11 * 11 + 64
    assert table["se"].iloc[-1] == table["se"][:3].sum()


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_overlay_stats_and_viewer(models, stains):
    images = stains[0][:2]
    over = overlay_heatmap(images[0], np.random.default_rng(0).random((7, 7)))
    assert over.shape == (128, 128, 3)
    assert over.min() >= 0
    assert over.max() <= 1
    records = {"se": collect_attention(models["se"], images), "cbam": collect_attention(models["cbam"], images)}
    stats = gate_statistics(records["cbam"], [0, 1])
    assert set(stats["images"]) == {"normal", "defective"}
    assert "spatial_mean" in stats
    fig = attention_panel(images[0], records["cbam"][2], 0, "x")
    plt.close(fig)
    viewer = attention_viewer(records, images, ["a", "b"])
    first = bytes(viewer.image.value)  # drawn once at construction, without waiting for input
    assert first.startswith(b"\x89PNG")
    block = next(c for c in viewer.children[0].children if c.description == "block")
    block.value = 1  # moving a control redraws: another block, another figure
    assert bytes(viewer.image.value).startswith(b"\x89PNG")
    assert bytes(viewer.image.value) != first
    plt.close("all")


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_initial_attention_matches_a_fresh_model(models, stains):
    """with_initial_attention rebuilds the blocks' init cheaply; it must equal a fresh full model's."""
    for variant in ("se", "cbam"):
        trained = models[variant]
        with torch.no_grad():  # pretend training moved the gates
            for p in trained.backbone.attention.parameters():
                p.add_(0.1)
        try:
            initial = with_initial_attention(trained)
            fresh = AttentDifferNet(trained.config)
            for (name, a), b in zip(initial.backbone.attention.state_dict().items(),
                                    fresh.backbone.attention.state_dict().values()):
                torch.testing.assert_close(a, b, msg=name)
            shift = gate_shift(collect_attention(trained, stains[0][:2]), collect_attention(initial, stains[0][:2]))
            assert list(shift["block"]) == [1, 2, 3]
            assert (shift["gate_shift_mean"] > 0).all()
        finally:
            with torch.no_grad():
                for p in trained.backbone.attention.parameters():
                    p.sub_(0.1)


def test_pick_test_images(demo_root):
    data = AnomalyDataset(demo_root, "disc", "test", 128)
    chosen = pick_test_images(data, 2, 4)
    kinds = [data.samples[i].defect_type for i in chosen]
    assert kinds[:2] == ["good", "good"]
    assert sorted(set(kinds[2:5])) == ["chip", "crack", "stain"]
    images, labels, titles = image_batch(data, chosen)
    assert images.shape == (6, 3, 128, 128)
    assert list(labels) == [0, 0, 1, 1, 1, 1]
    assert titles[0].startswith("good")
    assert len(pick_test_images(data, 100, 100)) == len(data)


def test_excitation_activity_counts_hidden_units(models, stains):
    records = collect_attention(models["cbam"], stains[0][:2])
    activity = excitation_activity(models["cbam"], records)
    assert list(activity["hidden_units"]) == [4, 12, 16]
    assert ((activity["never_active"] >= 0) & (activity["never_active"] <= activity["hidden_units"])).all()
    block = models["se"].backbone.blocks[0]
    with torch.no_grad():  # silence every hidden unit: the gates become sigmoid(bias), the same for every image
        saved = block.excitation[0].bias.clone()
        block.excitation[0].bias.fill_(-1e6)
    try:
        records = collect_attention(models["se"], stains[0][:2])
        assert excitation_activity(models["se"], records)["never_active"][0] == 4
        torch.testing.assert_close(records[0].channel_gates[0], records[0].channel_gates[1])
    finally:
        with torch.no_grad():
            block.excitation[0].bias.copy_(saved)
