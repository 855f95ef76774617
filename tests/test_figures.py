"""Every figure the library draws fits the book's reading column and hides no data under a legend or an inset.

The notebooks are rendered into an HTML book whose column is about 960 px wide; Jupyter's inline backend draws a
figure at 100 dpi with bbox_inches="tight", so a figure W inches wide takes about 100·W px and a wider one scrolls
sideways, hiding what the text discusses. Each public figure function of the drawing modules is drawn here from small
synthetic inputs (a table, CASES) and checked: (a) at most PAGE_WIDTH_IN·100 px wide as the inline backend renders it,
(b) no legend (of an Axes or of the figure) over an Axes that shows data, (c) no Axes over another (no insets),
(d) a title and no text below 9 pt. A public function of these modules that is neither in CASES nor in NOT_FIGURES
fails `test_every_public_figure_function_is_drawn_here`, so a new figure is checked from the day it is added.
"""
import inspect
import io
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from adnlib.explain import attention_viz, gradcam
from adnlib.explain.attention_viz import BlockRecord
from adnlib.explain.viewer import PAGE_WIDTH_IN
from adnlib.teach import pipeline, plots

MODULES = {"plots": plots, "pipeline": pipeline, "attention_viz": attention_viz, "gradcam": gradcam}
MAX_PX = round(100 * PAGE_WIDTH_IN)
SMALLEST_PT = 9  # tests/test_layout.py: no text literal below 9 pt; here the text as drawn (seaborn's included)

# Public functions of MODULES that draw no figure (each with what it returns instead).
NOT_FIGURES = {
    "plots.save_figure": "a path", "plots.denormalize": "a tensor", "plots.threshold_explorer": "a widget, no figure",
    "pipeline.pipeline_shapes": "a dict",
    **{f"attention_viz.{name}": "arrays, records or tables" for name in (
        "to_display", "resize_map", "overlay_heatmap", "pick_test_images", "image_batch", "collect_attention",
        "with_initial_attention", "excitation_activity", "gate_shift", "se_steps", "cbam_steps", "parameter_table",
        "gate_statistics", "gate_difference")},
    **{f"gradcam.{name}": "maps, scores or a context" for name in (
        "target_layer", "score_of_embedding", "scale_embeddings", "explaining", "hooked_activation_shapes",
        "anomaly_cam", "gaussian_blur", "input_gradient_map", "cams_by_scale", "map_correlation")},
}
DRAWS = ("plt.subplots", "plt.figure", "figure_viewer(", "_figure(", "attention_panel(")  # in a drawing function


# --- small synthetic inputs -----------------------------------------------------------------------------------------
def _rng(seed=0):
    return np.random.default_rng(seed)


def _png(path, seed=0, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


MVTEC_CABLE = ("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
               "missing_cable", "missing_wire", "poke_insulation")  # MVTec AD's category with the most defect types


def _dataset(tmp_path):
    """A dataset root in the MVTec layout: 'disc' with 3 defect types (the demo), 'cable' with MVTec's 8."""
    for category, defects in {"disc": ("chip", "crack", "stain"), "cable": MVTEC_CABLE}.items():
        for k, folder in enumerate(("good", *defects)):
            for i in range(3 if folder == "good" else 1):
                _png(tmp_path / category / "test" / folder / f"{i:03d}.png", seed=k * 7 + i)
    return tmp_path


def _scored(tmp_path, n=8):
    kinds = ["good", "crack", "good", "cut_outer_insulation", "stain", "good", "chip", "manipulated_front"][:n]
    paths = [_png(tmp_path / "s" / kind / f"{i:03d}.png", i) for i, kind in enumerate(kinds)]
    return pd.DataFrame({"path": paths, "score": _rng().uniform(0.5, 40, n), "defect_type": kinds,
                         "label": [int(k != "good") for k in kinds]})


def _history(variant, epochs=8, spatial=False, seed=0):
    rng = _rng(seed)
    frame = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "loss": np.sort(rng.normal(0, 1, epochs))[::-1],
                          "auroc": np.where(np.arange(epochs) % 2, rng.uniform(0.6, 1, epochs), np.nan),
                          "feature_norm": 20 * np.cumprod(rng.uniform(0.9, 1.0, epochs))})
    if variant != "differnet":
        for block in (1, 2, 3):
            for scale in (0, 1, 2):
                frame[f"gate_mean_block{block}_scale{scale}"] = rng.uniform(0.3, 0.7, epochs)
                if spatial:
                    frame[f"spatial_mean_block{block}_scale{scale}"] = rng.uniform(0.3, 0.7, epochs)
    return frame


def _histories(spatial=True):
    return {v: _history(v, spatial=spatial and v == "cbam", seed=i) for i, v in enumerate(("differnet", "se", "cbam"))}


def _scores(n_defects=8):
    rng, defects = _rng(), ["good", *MVTEC_CABLE[:n_defects]]
    frames = {}
    for variant in ("differnet", "se", "cbam"):
        kinds = [d for d in defects for _ in range(4)]
        labels = np.array([int(k != "good") for k in kinds])
        frames[variant] = pd.DataFrame({"score": rng.uniform(1, 3, len(kinds)) * 10 ** labels, "label": labels,
                                        "defect_type": kinds})
    return frames


def _rocs():
    fpr = np.linspace(0, 1, 20)
    return {v: {"fpr": fpr, "tpr": fpr ** (1 / k), "auroc": 1 - 1 / (k + 1)}
            for k, v in zip((2, 3, 4), ("differnet", "se", "cbam"))}


def _per_defect():
    return pd.DataFrame([(v, d, a) for d, values in {"chip": (0.84, 0.78, 0.86), "crack": (0.88, 0.72, 0.62),
                                                     "stain": (0.72, 0.52, 0.46)}.items()
                         for v, a in zip(("differnet", "se", "cbam"), values)],
                        columns=["variant", "defect_type", "auroc"])


def _rotation_curves():
    n = np.array([1, 2, 4, 8, 16, 32, 64])
    frame = pd.DataFrame({"n_rotations": n, "auroc": 0.8 + 0.02 * np.log2(n), "fresh_mean": 0.8 + 0.02 * np.log2(n),
                          "fresh_std": 0.01})
    frame["auroc_low"], frame["auroc_high"] = frame["auroc"] - 0.03, frame["auroc"] + 0.03
    return {"differnet": frame, "se": frame.assign(auroc=frame["auroc"] + 0.01)}


MVTEC = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
         "toothbrush", "transistor", "wood", "zipper")


def _comparison(categories=MVTEC):
    from adnlib.teach.paper import comparison_table
    rng = _rng()
    ours = pd.DataFrame({v: rng.uniform(70, 99, len(categories)) for v in ("differnet", "se", "cbam")},
                        index=list(categories))
    ours.loc["mean"] = ours.mean()
    return comparison_table(ours, "mvtec-ad" if categories == MVTEC else "insplad-fault")


def _paired(categories=("disc", "weave", "bottle", "cable")):
    deltas = _rng().normal(1, 3, len(categories) + 1)
    return pd.DataFrame([{"variant": v, "category": c, "delta": d, "ci_low": d - 3, "ci_high": d + 3,
                          "beyond_noise": d > 2, "interval": "seeds"}
                         for v in ("se", "cbam") for c, d in zip((*categories, "mean"), deltas)])


def _model(variant="cbam"):
    from adnlib.config import preset
    from adnlib.model.network import AttentDifferNet
    return AttentDifferNet(preset("smoke", variant=variant, weights="none", fc_hidden=16))


def _images(n=4, size=64):
    return torch.from_numpy(_rng().integers(0, 255, (n, 3, size, size), dtype=np.uint8))


def _records(kind, n=4, seed=0):
    """One BlockRecord per block (64, 192, 256 channels) for n images, as `collect_attention` returns them."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for block, (index, channels, size) in enumerate(((2, 64, 15), (5, 192, 7), (11, 256, 7)), start=1):
        inputs = torch.rand(n, channels, size, size, generator=generator)
        gates = torch.sigmoid(torch.randn(channels, generator=generator) + 0.01 * torch.randn(n, channels,
                                                                                             generator=generator))
        spatial = torch.rand(n, 1, size, size, generator=generator) if kind == "cbam" else None
        outputs = inputs * gates[:, :, None, None] * (1 if spatial is None else spatial)
        records.append(BlockRecord(block, index, kind, inputs, outputs, gates, spatial))
    return records


LABELS = np.array([0, 0, 1, 1])


def _cam_columns(n=3, k=5):
    names = ["disc: nll-gradient", "disc: input gradient", "differnet: gradcam", "se: gradcam", "cbam: gradcam"]
    return {name: _rng(i).random((n, 64, 64)).astype(np.float32) for i, name in enumerate(names[:k])}


def _attention_viewer(_):
    return attention_viz.attention_viewer({"se": _records("se"), "cbam": _records("cbam")}, _images(),
                                          ["good 000", "good 001", "crack 000", "cut_outer_insulation 001"])


def _cam_browser(_):
    models = {v: _model(v) for v in ("differnet", "se", "cbam")}
    return gradcam.cam_browser(models, _images(2, 128), ["good 000", "crack 001"])


# (function, case id, draw(tmp_path) -> Figure or a figure browser)
CASES = [
    ("plots.dataset_grid", "demo+mvtec-cable", lambda t: plots.dataset_grid(_dataset(t), ["disc", "cable"])),
    ("plots.dataset_grid", "demo", lambda t: plots.dataset_grid(_dataset(t), ["disc"])),
    ("plots.scored_images", "8", lambda t: plots.scored_images(_scored(t), threshold=5.0)),
    ("plots.scored_images", "3", lambda t: plots.scored_images(_scored(t, 3))),
    ("plots.toy_flow_panels", "", lambda t: plots.toy_flow_panels(
        torch.randn(300, 2), torch.randn(300, 2), torch.randn(300, 2),
        (*np.meshgrid(np.linspace(-3, 3, 30), np.linspace(-3, 3, 30)), _rng().random((30, 30))), "two moons")),
    ("plots.loss_curve", "", lambda t: plots.loss_curve(_rng().normal(2, 0.3, 200).cumsum()[::-1] / 100)),
    ("plots.clamp_functions", "", lambda t: plots.clamp_functions()),
    ("plots.scaled_inputs", "3 scales", lambda t: plots.scaled_inputs([torch.randn(3, s, s) for s in (64, 32, 16)])),
    ("plots.embedding_vector", "", lambda t: plots.embedding_vector(torch.rand(768), 3)),
    ("plots.latent_normality", "", lambda t: plots.latent_normality(
        np.concatenate([_rng().normal(0, 1, (20, 64)), _rng().normal(0, 4, (20, 64))]), np.repeat([0, 1], 20))),
    ("plots.training_curves", "", lambda t: plots.training_curves(_histories())),
    ("plots.training_curves", "one run", lambda t: plots.training_curves({"differnet": _history("differnet")})),
    ("plots.feature_shrinkage", "cbam", lambda t: plots.feature_shrinkage(_histories())),
    ("plots.feature_shrinkage", "no spatial", lambda t: plots.feature_shrinkage(_histories(spatial=False))),
    ("plots.rotated_copies_scores", "8", lambda t: plots.rotated_copies_scores(
        _images(1, 64)[0], np.arange(8) * 45.0, _rng().uniform(1, 3, 8))),
    ("plots.rotated_copies_scores", "16", lambda t: plots.rotated_copies_scores(
        _images(1, 64)[0], np.arange(16) * 22.5, _rng().uniform(1, 3, 16))),
    ("plots.score_distributions", "", lambda t: plots.score_distributions(_scores())),
    ("plots.roc_curves", "", lambda t: plots.roc_curves(_rocs())),
    ("plots.auroc_per_defect", "", lambda t: plots.auroc_per_defect(_per_defect())),
    ("plots.confusion_matrix_plot", "", lambda t: plots.confusion_matrix_plot(
        np.array([[40, 3], [5, 52]]), {"threshold": 2.345, "f1": 0.93, "precision": 0.95, "recall": 0.91})),
    ("plots.auroc_vs_rotations_plot", "", lambda t: plots.auroc_vs_rotations_plot(_rotation_curves())),
    ("plots.comparison_bars", "mvtec 15", lambda t: plots.comparison_bars(_comparison())),
    ("plots.comparison_bars", "insplad 5", lambda t: plots.comparison_bars(
        _comparison(("Glass Insulator", "Lightning Rod Susp.", "Polymer Insulator Upper Shackle", "Vari-grip",
                     "Yoke Susp.")))),
    ("plots.forest_plot", "", lambda t: plots.forest_plot(_paired())),
    ("plots.paper_means_bars", "", lambda t: plots.paper_means_bars()),
    ("pipeline.pipeline_figure", "cbam", lambda t: pipeline.pipeline_figure(_model("cbam"))),
    ("pipeline.pipeline_figure", "differnet", lambda t: pipeline.pipeline_figure(_model("differnet"))),
    ("attention_viz.backbone_diagram", "se", lambda t: attention_viz.backbone_diagram()),
    ("attention_viz.backbone_diagram", "cbam after pool", lambda t: attention_viz.backbone_diagram(
        attention_viz.Config(variant="cbam", block3_before_final_pool=False))),
    ("attention_viz.se_steps_figure", "", lambda t: attention_viz.se_steps_figure(
        attention_viz.SEBlock(64, 16), _records("se")[0].inputs)),
    ("attention_viz.cbam_steps_figure", "", lambda t: attention_viz.cbam_steps_figure(
        attention_viz.CBAM(64, 16, 7), _records("cbam")[0].inputs, _images(1)[0])),
    ("attention_viz.channel_gates_figure", "", lambda t: attention_viz.channel_gates_figure(
        {"se": _records("se"), "cbam": _records("cbam")}, LABELS)),
    ("attention_viz.spatial_maps_figure", "", lambda t: attention_viz.spatial_maps_figure(
        _images(), _records("cbam"), ["good 000", "good 001", "crack 000", "cut_outer_insulation 001"])),
    ("attention_viz.energy_figure", "", lambda t: attention_viz.energy_figure(
        {"se": _records("se"), "cbam": _records("cbam")}, LABELS)),
    ("attention_viz.attention_panel", "se", lambda t: attention_viz.attention_panel(
        _images(1)[0], _records("se", 1)[2], 0, "cut_outer_insulation 001 — SE")),
    ("attention_viz.attention_panel", "cbam", lambda t: attention_viz.attention_panel(
        _images(1)[0], _records("cbam", 1)[0], 0, "good 000 — CBAM")),
    ("attention_viz.attention_viewer", "", _attention_viewer),
    ("gradcam.cam_grid_figure", "5 columns", lambda t: gradcam.cam_grid_figure(
        _images(3), _cam_columns(), ["good 000\n1.2 / 1.3 / 1.1", "crack 001\n4.5 / 3.3 / 2.9", "stain 002\n2 / 2 / 2"],
        title="scores differnet / se / cbam; gradcam, scales=all")),
    ("gradcam.cam_grid_figure", "2 columns", lambda t: gradcam.cam_grid_figure(_images(2), _cam_columns(2, 2))),
    pytest.param("gradcam.cam_browser", "", _cam_browser, marks=pytest.mark.slow(seconds=6)),
]


def _name(case) -> str:
    return (case.values if hasattr(case, "values") else case)[0]


def _id(case) -> str:
    name, variant = (case.values if hasattr(case, "values") else case)[:2]
    return f"{name}-{variant}" if variant else name


def _public_functions() -> dict[str, object]:
    return {f"{short}.{name}": function for short, module in MODULES.items()
            for name, function in inspect.getmembers(module, inspect.isfunction)
            if function.__module__ == module.__name__ and not name.startswith("_")}


def test_every_public_figure_function_is_drawn_here():
    # catches a new figure function (or a new public helper) that nobody checked against the book's column
    functions = _public_functions()
    drawn = {_name(case) for case in CASES}
    assert not drawn - set(functions), f"CASES names functions that do not exist: {drawn - set(functions)}"
    unclassified = set(functions) - drawn - set(NOT_FIGURES)
    assert not unclassified, f"add a case to CASES (a figure) or an entry to NOT_FIGURES (no figure): {unclassified}"
    drawing = [name for name in NOT_FIGURES if any(d in _body(functions[name]) for d in DRAWS)]
    assert not drawing, f"these draw a figure: give them a case in CASES, not NOT_FIGURES: {drawing}"


def _body(function) -> str:
    """The source of `function` without its first line (a name like save_figure is no drawing)."""
    return "".join(inspect.getsourcelines(function)[0][1:])


def _png_width(png: bytes) -> int:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", png[16:20])[0]


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images)


def _axes(fig: Figure) -> list:
    """Every visible Axes of the figure, those drawn inside another one (`ax.inset_axes`) included."""
    found, todo = [], list(fig.axes)
    while todo:
        ax = todo.pop(0)
        found.append(ax)
        todo += ax.child_axes
    return [ax for ax in found if ax.get_visible()]


def _legends(fig: Figure) -> list:
    found = [ax.get_legend() for ax in _axes(fig) if ax.get_legend() is not None] + list(fig.legends)
    return [legend for legend in found if legend.get_visible()]


def check_figure(fig: Figure) -> list[str]:
    """What is wrong with `fig` as the book shows it: -> a list of problems (empty: none)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # what the inline backend does (at 100 dpi)
    problems = []
    width = _png_width(buffer.getvalue())
    if width > MAX_PX:
        problems.append(f"{width} px wide, more than the book's column ({MAX_PX} px)")
    renderer = fig.canvas.get_renderer()
    data_axes = [ax for ax in _axes(fig) if _has_data(ax)]
    for legend in _legends(fig):
        box = legend.get_window_extent(renderer)
        covered = [ax.get_title() or ax.get_label() for ax in data_axes if box.overlaps(ax.get_window_extent())]
        if covered:
            problems.append(f"legend {[t.get_text() for t in legend.get_texts()][:3]} over the data of {covered}")
    visible = _axes(fig)
    for i, a in enumerate(visible):
        for b in visible[i + 1:]:
            if a.get_window_extent().overlaps(b.get_window_extent()):
                problems.append(f"Axes {a.get_title()!r} and {b.get_title()!r} overlap (an inset?)")
    titles = [fig.get_suptitle()] + [ax.get_title(loc) for ax in _axes(fig) for loc in ("left", "center", "right")]
    if not any(titles):
        problems.append("no title")
    small = {(t.get_text()[:30], t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < SMALLEST_PT}
    if small:
        problems.append(f"text below {SMALLEST_PT} pt: {sorted(small)[:5]}")
    return problems


@pytest.mark.parametrize(("name", "case", "draw"), CASES, ids=[_id(c) for c in CASES])
def test_the_figure_fits_the_column_and_hides_no_data(name, case, draw, tmp_path):
    try:
        drawn = draw(tmp_path)
        if isinstance(drawn, Figure):
            assert not check_figure(drawn), check_figure(drawn)
        else:  # a figure browser (`adnlib.explain.viewer.figure_viewer`): the PNG it shows, at 100 dpi, tight
            width = _png_width(bytes(drawn.image.value))
            assert width <= MAX_PX, f"{width} px wide, more than the book's column ({MAX_PX} px)"
    finally:
        plt.close("all")


def test_the_checks_catch_a_wide_figure_a_legend_over_data_and_an_inset():
    # the checks themselves: each of the three faults the book showed is reported
    fig, ax = plt.subplots(figsize=(17, 4))
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_title("wide, legend inside")
    ax.legend(loc="best")
    ax.inset_axes((0.5, 0.1, 0.4, 0.3)).plot([0, 1])
    problems = " | ".join(check_figure(fig))
    plt.close(fig)
    assert "px wide" in problems
    assert "legend ['a line'] over the data" in problems
    assert "overlap (an inset?)" in problems
