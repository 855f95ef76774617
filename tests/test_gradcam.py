"""Grad-CAM and input-gradient explanations (adnlib.gradcam) and the attention helpers (adnlib.attention_viz)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("pytorch_grad_cam")

from adnlib import preset  # noqa: E402
from adnlib.attention_viz import (attention_panel, attention_viewer, cbam_steps, collect_attention,  # noqa: E402
                                  gate_statistics, overlay_heatmap, parameter_table, se_steps)
from adnlib.datasets import AnomalyDataset  # noqa: E402
from adnlib.gradcam import (METHODS, ScaleScore, ScoreTarget, anomaly_cam, cam_grid_figure,  # noqa: E402
                            hooked_activation_shapes, input_gradient_map, scale_embeddings, target_layer)
from adnlib.model import AttentDifferNet  # noqa: E402


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
    # the demo's stains are green (40,150,60) on a bronze disc (176,150,112) and a dark table
    return _defect_images(demo_root, "disc", "stain", 128, lambda f: f[:, 1] > f[:, 0] + 50)


@pytest.fixture(scope="module")
def holes(demo_root):
    # the demo's holes are near-black (10) in a woven fabric that never goes below ~50
    return _defect_images(demo_root, "weave", "hole", 128, lambda f: f.amax(1) < 30)


@pytest.mark.parametrize("variant", ["differnet", "se", "cbam"])
def test_cam_shape_and_range(models, stains, variant):
    images = stains[0][:2]
    cams = anomaly_cam(models[variant], images)
    assert cams.shape == (2, 128, 128) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 and np.isclose(cams.max(), 1)


def test_cam_options(models, stains):
    model, images = models["se"], stains[0][:1]
    for scales in (0, 1, [0, 1]):
        assert anomaly_cam(model, images, scales=scales).shape == (1, 128, 128)
    assert anomaly_cam(model, images, combine=[2.0, 1.0]).shape == (1, 128, 128)
    rotated = anomaly_cam(model, images, rotations=2)
    assert rotated.shape == (1, 128, 128) and 0 <= rotated.min() and rotated.max() <= 1
    assert anomaly_cam(model, images, method="gradcam++").shape == (1, 128, 128)
    assert "eigencam" in METHODS
    with pytest.raises(ValueError):
        anomaly_cam(model, images, scales=5)
    with pytest.raises(ValueError):
        anomaly_cam(model, images, method="scorecam")


def test_naive_hook_records_every_scale_but_the_wrapper_one(models, stains):
    """The pytorch-grad-cam quirk (DESIGN §7): the whole model records one activation per scale."""
    images = stains[0][:2]
    for variant, model in models.items():
        naive = hooked_activation_shapes(model, images)
        assert len(naive) == model.config.n_scales
        assert naive[0][-1] > naive[1][-1]  # full size first, then smaller
        for scale in range(model.config.n_scales):
            assert hooked_activation_shapes(model, images, scale) == [naive[scale]], variant


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
    model = models["se"]
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    anomaly_cam(model, stains[0][:1])
    input_gradient_map(model, stains[0][:1])
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()


@pytest.mark.parametrize("variant", ["differnet", "cbam"])
def test_cam_is_stronger_inside_large_defects(models, stains, holes, variant):
    """Even with random weights, a big stain or hole changes the features most where it is."""
    for images, masks in (stains, holes):
        cams = anomaly_cam(models[variant], images)
        inside = np.array([c[m].mean() for c, m in zip(cams, masks)])
        outside = np.array([c[~m].mean() for c, m in zip(cams, masks)])
        assert masks.mean() > 0.01
        assert inside.mean() > outside.mean() + 0.1
        assert (inside > outside).mean() >= 0.8


def test_input_gradient_map(models, holes):
    images, masks = holes
    maps = input_gradient_map(models["differnet"], images)
    assert maps.shape == (len(images), 128, 128) and maps.min() >= 0 and np.isclose(maps.max(), 1)
    inside = np.mean([g[m].mean() for g, m in zip(maps, masks)])
    outside = np.mean([g[~m].mean() for g, m in zip(maps, masks)])
    assert inside > 2 * outside
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
        assert r.inputs.shape == r.outputs.shape and r.inputs.shape[:2] == (2, r.channels)
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


def test_overlay_stats_and_viewer(models, stains):
    images = stains[0][:2]
    over = overlay_heatmap(images[0], np.random.default_rng(0).random((7, 7)))
    assert over.shape == (128, 128, 3) and over.min() >= 0 and over.max() <= 1
    records = {"se": collect_attention(models["se"], images), "cbam": collect_attention(models["cbam"], images)}
    stats = gate_statistics(records["cbam"], [0, 1])
    assert set(stats["images"]) == {"normal", "defective"} and "spatial_mean" in stats
    fig = attention_panel(images[0], records["cbam"][2], 0, "x")
    plt.close(fig)
    viewer = attention_viewer(records, images, ["a", "b"])
    assert viewer.result is not None  # drawn once at construction, without waiting for input
    plt.close("all")
