"""The whole DifferNet / AttentDifferNet pipeline drawn from a model's real shapes (notebook 00).

`pipeline_shapes` pushes one dummy image through the model and records, with forward hooks, the shape of every
stage: the input at each scale, the AlexNet feature map at each attention position (Figure 1 of AttentDifferNet:
after pool1, after pool2, after conv5+ReLU), the final map, the spatial mean, the embedding, the flow's output.
`pipeline_figure` draws those shapes as boxes. Nothing is hard-coded: a 2-scale or 128 px model gives its own.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch

from adnlib.model.backbone import attention_positions

# torchvision alexnet().features index -> what the map after it is
_STAGE_NAMES = {2: "conv1 + pool1", 5: "conv2 + pool2", 11: "conv3–5", 12: "conv3–5 + pool5"}
_BLOCK_SUFFIXES = (" + SE", " + CBAM")  # stage labels of attention blocks (drawn in orange)
_VARIANT_NAMES = {"differnet": "DifferNet", "se": "AttentDifferNet (SE)", "cbam": "AttentDifferNet (CBAM)"}


def _stage_modules(model) -> list[tuple[str, torch.nn.Module]]:
    """(label, module) whose output is the map at each attention position: the block itself, or for DifferNet
    (no blocks) the AlexNet layer after which a block would go."""
    config, backbone = model.config, model.backbone
    stages = []
    for index, _ in attention_positions(config.block3_before_final_pool):
        name = _STAGE_NAMES[index]
        if str(index) in backbone.attention:
            stages.append((f"{name} + {config.variant.upper()}", backbone.attention[str(index)]))
        else:
            stages.append((name, backbone.features[index]))
    return stages


@torch.no_grad()
def pipeline_shapes(model, image_size: int | None = None) -> dict:
    """Shapes (without the batch axis) of every stage for one dummy (1, 3, S, S) image, S = image_size or the
    config's. Returns {"image": (3, S, S), "scales": [{"input", "stages": [(label, (C, h, w))], "final",
    "pooled"}] per scale, "embedding": (D,), "z": (D,), "log_det": (), "flow": [block type names]}.

    One pass of the model's own `embed` and flow: forward hooks on the attention positions record the stages, a
    hook on the backbone records each scale's input and final map (the backbone runs once per scale).
    """
    size = image_size or model.config.img_size
    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    recorded: list[tuple[str, tuple[int, ...]]] = []
    scales: list[dict] = []

    def stage_hook(label):
        return lambda _module, _inputs, out: recorded.append((label, tuple(out.shape[1:])))

    def backbone_hook(_module, inputs, out):
        scales.append({"input": tuple(inputs[0].shape[1:]), "stages": list(recorded),
                       "final": tuple(out.shape[1:]), "pooled": (out.shape[1],)})
        recorded.clear()

    hooks = [module.register_forward_hook(stage_hook(label)) for label, module in _stage_modules(model)]
    hooks.append(model.backbone.register_forward_hook(backbone_hook))
    was_training = model.training
    model.eval()
    try:
        y = model.embed(x)
        z, log_det = model.flow_forward(y)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return {"image": (3, size, size), "scales": scales, "embedding": tuple(y.shape[1:]), "z": tuple(z.shape[1:]),
            "log_det": tuple(log_det.shape[1:]), "flow": [type(m).__name__ for m in model.flow.module_list]}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


# The layout, in inches (the drawing's data units are inches): each scale is a column of boxes read top down, the
# scales side by side; under them one wide box concatenates their embeddings, then the flow, z and the score form the
# last row. About 6.5 in wide for 3 scales: the book's column (adnlib.explain.viewer.PAGE_WIDTH_IN) shows it whole.
BOX_W, BOX_H = 1.85, 0.56  # fits "conv3–5 + pool5 + CBAM" at 9 pt
COLUMN, ROW = BOX_W + 0.3, BOX_H + 0.3  # pitch of the columns and rows


def _box(ax, x: float, y: float, text: str, color: str, width: float = BOX_W, height: float = BOX_H) -> None:
    """A rounded box centred at (x, y) with centred text."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                facecolor=color, edgecolor="0.3", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "0.3", "lw": 0.9})


def _scale_boxes(scale: dict, i: int) -> list[tuple[str, str]]:
    """(text, colour) of one scale's column: input, the stages, the final map, the spatial mean."""
    boxes = [(f"scale {i} input\n{_shape_text(scale['input'])}", "#dbe9f6")]
    boxes += [(f"{label}\n{_shape_text(shape)}", "#fde2c8" if label.endswith(_BLOCK_SUFFIXES) else "#e8e8e8")
              for label, shape in scale["stages"]]
    return boxes + [(f"pool5: final map\n{_shape_text(scale['final'])}", "#e8e8e8"),
                    (f"mean over h, w\n{_shape_text(scale['pooled'])}", "#e2f0d9")]


def pipeline_figure(model, image_size: int | None = None):
    """Boxes for every stage of `model` with the shapes of `pipeline_shapes` (C×h×w, batch axis left out); returns
    the matplotlib figure (title, no axis ticks). Each scale is a column read top down; the concatenation, the flow,
    z and the score follow below, so the figure is at most about 6.5 in wide for DifferNet's 3 scales."""
    shapes = pipeline_shapes(model, image_size)
    scales = shapes["scales"]
    n_blocks = sum(name != "PermuteRandom" for name in shapes["flow"])
    last_row = [(f"flow: {n_blocks} × [permute,\nGLOW coupling]", "#f3d9e8"),
                (f"z {_shape_text(shapes['z'])},\nlog|det J| per image", "#f3d9e8"),
                ("score = mean z²\nover rotations", "#fff2b3")]
    n_rows = 3 + len(scales[0]["stages"])  # input, stages..., final map, spatial mean
    width = max(len(scales), len(last_row)) * COLUMN
    height = (n_rows + 2) * ROW + 0.55  # the scales' rows, the concatenation, the last row, the colour key
    fig, ax = plt.subplots(figsize=(width, height + 0.45))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=height / (height + 0.45))  # 1 data unit = 1 inch
    left = (width - len(scales) * COLUMN) / 2
    top = height - ROW / 2
    for i, scale in enumerate(scales):
        x = left + (i + 0.5) * COLUMN
        for j, (text, color) in enumerate(_scale_boxes(scale, i)):
            _box(ax, x, top - j * ROW, text, color)
            _arrow(ax, (x, top - j * ROW - BOX_H / 2 - 0.02), (x, top - (j + 1) * ROW + BOX_H / 2 + 0.02))
    concat_y = top - n_rows * ROW
    _box(ax, width / 2, concat_y, f"concatenate\n{_shape_text(shapes['embedding'])}", "#e2f0d9",
         width=len(scales) * COLUMN - 0.3)
    row_y, row_left = concat_y - ROW, (width - len(last_row) * COLUMN) / 2
    _arrow(ax, (width / 2, concat_y - BOX_H / 2 - 0.02), (row_left + COLUMN / 2, row_y + BOX_H / 2 + 0.02))
    for k, (text, color) in enumerate(last_row):
        _box(ax, row_left + (k + 0.5) * COLUMN, row_y, text, color)
        if k:
            _arrow(ax, (row_left + k * COLUMN - 0.13, row_y), (row_left + k * COLUMN + 0.13, row_y))
    key = "grey: frozen AlexNet · " + ("orange: attention block (trained) · " if model.backbone.blocks else "")
    ax.text(0.05, 0.08, key + "green: pooling, concatenation\npink: normalizing flow (trained) · yellow: the score",
            fontsize=9, color="0.3")
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    variant = _VARIANT_NAMES.get(model.config.variant, model.config.variant)
    ax.set_title(f"{variant} at {shapes['image'][1]} px: shapes (C×h×w)\nrecorded from a forward pass of this model",
                 fontsize=10)
    return fig


__all__ = ["pipeline_shapes", "pipeline_figure"]
