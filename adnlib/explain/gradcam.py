"""Explain an anomaly score: Grad-CAM (pytorch-grad-cam) on the backbone, and our input-gradient map.

(DifferNet's own localisation, the official code's gradient map, is `adnlib.explain.localization`.)

The one call is ``anomaly_cam(model, images)`` -> (B,H,W) maps in [0,1]. Its target is each image's anomaly score
s(x) = mean_d z_d² of one copy of the image (the model's score averages this over rotated copies; see `rotations`).

Scales, on purpose (docs/protocol.md §7). pytorch-grad-cam records the target layer's output with a forward hook,
once per call of that layer. The model runs its backbone at n scales, so one forward pass records n activations of
different sizes and pytorch-grad-cam silently uses only the first (the full-size one) while its gradient is matched
by list position. Here every CAM call goes through ``ScaleScore``, a wrapper that sends exactly ONE scale through the
backbone with gradients; the other scales' embeddings are computed beforehand (no hooks registered yet) and enter the
flow as constants, so the score is unchanged. A CAM is computed per scale, upsampled to the image size by
pytorch-grad-cam, and the scales are combined here (mean of the per-scale maps by default). ``anomaly_cam`` checks
that each call hooked exactly one activation and raises otherwise.

Rotations: by default the CAM explains the un-rotated image (angle 0, which is also the first of the "fixed" test
angles). ``rotations=n`` averages CAMs of n evenly rotated copies after rotating each map back (pixels that fell
outside a rotated copy are left out of that copy's average), closer to how the score is computed.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adnlib.explain.attention_viz import overlay_heatmap, to_display
from adnlib.explain.viewer import FIGURE_WIDTH_IN
from adnlib.model.transforms import fixed_angles, normalize, rotate_batch, to_unit


def _cam_methods() -> dict:
    try:
        from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
    except ImportError as exc:  # an optional dependency (the 'notebooks' extra)
        raise ImportError("adnlib.explain.gradcam needs pytorch-grad-cam: pip install grad-cam "
                          "(or adnlib[notebooks])") from exc
    # Methods that need one forward + one backward pass of the batch; perturbation methods (Score-CAM, Ablation-CAM)
    # re-run the model on other batch sizes, which the per-batch constants of ScaleScore cannot follow.
    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "xgradcam": XGradCAM,
            "layercam": LayerCAM, "eigencam": EigenCAM}


METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")


def target_layer(model) -> nn.Module:
    """The layer to explain: the third attention block's output, or conv5+ReLU for DifferNet (same place, 256 ch)."""
    blocks = model.backbone.blocks
    return blocks[-1] if blocks else model.backbone.features[11]


def score_of_embedding(model, y: torch.Tensor) -> torch.Tensor:
    """Embeddings (B,D) -> anomaly score (B,) = mean of z² over dimensions (differentiable)."""
    z, _ = model.flow_forward(y)
    return z.pow(2).mean(dim=1)


class ScaleScore(nn.Module):
    """Normalised images (B,3,S,S) -> anomaly scores (B,), with only scale `scale` run through the backbone.

    fixed: the n per-scale embeddings (B,256) of these same images; all but `scale` are used as constants. Every
    forward therefore calls the backbone (and any hooked layer in it) exactly once.
    """

    def __init__(self, model, scale: int, fixed: Sequence[torch.Tensor]):
        super().__init__()
        self.model, self.scale, self.fixed = model, scale, [f.detach() for f in fixed]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            if not x.requires_grad:
                # The AlexNet weights are frozen: without a grad-requiring input the hooked activation would not
                # require grad and pytorch-grad-cam would find no gradient.
                x = x.detach().requires_grad_(True)
            xs = self.model.embedding.scaled_inputs(x)[self.scale]
            parts = list(self.fixed)
            parts[self.scale] = self.model.backbone(xs).mean(dim=(2, 3)).float()
            return score_of_embedding(self.model, torch.cat(parts, dim=1))


class ScoreTarget:
    """pytorch-grad-cam target: the model output for one image is already its anomaly score."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output


@torch.no_grad()
def scale_embeddings(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Normalised images (B,3,S,S) -> the n per-scale embeddings (B,256) the flow sees (float32, no autocast)."""
    return [model.backbone(xs).mean(dim=(2, 3)).float() for xs in model.embedding.scaled_inputs(x)]


@contextlib.contextmanager
def explaining(model):
    """Eval mode and no parameter gradients (explanations must not touch .grad of a model being trained).

    The parameters' .grad tensors are put back afterwards, the same objects: pytorch-grad-cam's BaseCAM.forward
    calls zero_grad() on the module it wraps, which holds the model.
    """
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag, grad in saved:
            p.grad = grad
            p.requires_grad_(flag)
        model.train(was_training)


def _scales(model, scales) -> list[int]:
    n = model.config.n_scales
    chosen = list(range(n)) if scales == "all" else [scales] if isinstance(scales, int) else list(scales)
    if not chosen or any(not 0 <= s < n for s in chosen):
        raise ValueError(f"scales must be 'all', or indices in 0..{n - 1}, not {scales!r}")
    return chosen


def _angles(rotations) -> torch.Tensor:
    if rotations is None or (isinstance(rotations, int) and rotations <= 1):
        return torch.zeros(1)
    if isinstance(rotations, int):
        return fixed_angles(rotations)
    return torch.as_tensor(rotations, dtype=torch.float32).reshape(-1)


def _normalise01(maps: torch.Tensor) -> torch.Tensor:
    """Min-max per map (B,H,W) -> [0,1], as pytorch-grad-cam does."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (maps - lo) / (hi - lo).clamp_min(1e-7)


def hooked_activation_shapes(model, images: torch.Tensor, scale: int | None = None,
                             layer: nn.Module | None = None) -> list[tuple[int, ...]]:
    """Shapes of the activations pytorch-grad-cam's hook records in one call (the quirk, made visible).

    scale=None runs the whole multi-scale model (n activations: the problem); an int runs `ScaleScore` (one).
    """
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    layer = layer or target_layer(model)
    device = next(model.parameters()).device
    with explaining(model):
        x = model.prepare(images.to(device))
        if scale is None:
            net = MultiScaleScore(model)
        else:
            net = ScaleScore(model, scale, scale_embeddings(model, x))
        recorder = ActivationsAndGradients(net, [layer], None)
        try:
            recorder(x).sum().backward()
            return [tuple(a.shape) for a in recorder.activations]
        finally:
            recorder.release()


class MultiScaleScore(nn.Module):
    """Normalised images (B,3,S,S) -> scores (B,) with every scale through the backbone: the naive wrapper.

    Hooking a backbone layer of this module records n activations per call (the pitfall ScaleScore avoids); it is
    here to show the pitfall, not to compute CAMs.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            return score_of_embedding(self.model, self.model.embedding(x).float())


def anomaly_cam(model, images: torch.Tensor, scales="all", method: str = "gradcam", *, layer: nn.Module | None = None,
                rotations=None, combine: str | Sequence[float] = "mean") -> np.ndarray:
    """CAMs of the anomaly score: images (B,3,S,S) uint8 or [0,1] -> (B,S,S) float32 in [0,1].

    scales: "all" (combine every scale), an index (0 = full size), or a list of indices.
    method: one of METHODS (pytorch-grad-cam classes). layer: default `target_layer(model)`.
    rotations: None (the un-rotated image), n (n evenly spaced angles, maps rotated back and averaged) or angles.
    combine: "mean" of the per-scale maps (each in [0,1]) or one weight per chosen scale; the result is min-max
    normalised again.
    """
    methods = _cam_methods()
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    chosen = _scales(model, scales)
    weights = torch.ones(len(chosen)) if combine == "mean" else torch.as_tensor(combine, dtype=torch.float32)
    if weights.shape != (len(chosen),):
        raise ValueError(f"combine needs one weight per scale ({len(chosen)}), got {combine!r}")
    layer = layer or target_layer(model)
    device = next(model.parameters()).device
    unit = to_unit(images.to(device))
    size = unit.shape[-2:]
    total = torch.zeros(len(unit), *size)
    coverage = torch.zeros(len(unit), *size)
    with explaining(model):
        for angle in _angles(rotations):
            rotated = unit if angle == 0 else rotate_batch(unit, angle.repeat(len(unit)))
            x = model.prepare(rotated)
            fixed = scale_embeddings(model, x)
            per_scale = []
            for s in chosen:
                cam = methods[method](ScaleScore(model, s, fixed), [layer])
                try:
                    maps = cam(x, targets=[ScoreTarget()] * len(x))
                    recorded = len(cam.activations_and_grads.activations)
                finally:
                    cam.activations_and_grads.release()  # not `with cam:` — its __exit__ swallows IndexError
                if recorded != 1:
                    raise RuntimeError(f"the CAM hook recorded {recorded} activations at scale {s}; expected 1")
                per_scale.append(torch.from_numpy(maps))
            combined = (torch.stack(per_scale) * weights[:, None, None, None]).sum(0) / weights.sum()
            if angle == 0:
                total += combined
                coverage += 1
            else:
                back = -angle.repeat(len(unit))
                total += rotate_batch(combined[:, None], back, mode="bilinear")[:, 0]
                coverage += rotate_batch(torch.ones(len(unit), 1, *size), back, mode="bilinear")[:, 0]
    return _normalise01(total / coverage.clamp_min(1e-3)).numpy().astype(np.float32)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of maps (B,C,H,W) with reflect padding; sigma in pixels (0: unchanged)."""
    if sigma <= 0:
        return maps
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = maps.shape[1]
    pad = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    out = F.pad(maps, (pad, pad, pad, pad), mode="reflect")
    if pad < radius:  # tiny maps: fall back to zero padding for the rest
        out = F.pad(out, [radius - pad] * 4)
    out = F.conv2d(out, kernel.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def input_gradient_map(model, images: torch.Tensor, *, sigma: float = 4.0, channels: str = "sum",
                       rotations=None) -> np.ndarray:
    """Ours: how strongly each pixel moves the anomaly score; (B,3,S,S) -> (B,S,S) in [0,1].

    A simplified relative of DifferNet's localisation (`adnlib.explain.localization.differnet_localization`, the
    official recipe), not the same map: here the gradient of the score (mean z², without −log|det J|) with respect
    to the [0,1] input image is blurred per channel with a Gaussian (sigma px), made absolute and reduced over the
    colour channels (channels="sum" or "max"), and not squared.
    All scales contribute (the whole model is differentiated). rotations: as in `anomaly_cam`; here the score is
    averaged over the rotated copies and differentiated with respect to the un-rotated image, so the rotations are
    undone by the chain rule.
    """
    if channels not in ("sum", "max"):
        raise ValueError(f"channels must be 'sum' or 'max', not {channels!r}")
    device = next(model.parameters()).device
    with explaining(model), torch.enable_grad():
        unit = to_unit(images.to(device)).detach().clone().requires_grad_(True)
        angles = _angles(rotations).to(device)
        scores = 0
        for angle in angles:
            rotated = unit if angle == 0 else rotate_batch(unit, angle.repeat(len(unit)))
            x = normalize(rotated)
            if model.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            scores = scores + score_of_embedding(model, model.embedding(x).float())
        (grad,) = torch.autograd.grad((scores / len(angles)).sum(), unit)
    g = gaussian_blur(grad.detach().float().cpu(), sigma).abs()
    g = g.sum(1) if channels == "sum" else g.amax(1)
    return _normalise01(g).numpy().astype(np.float32)


def cams_by_scale(model, images: torch.Tensor, method: str = "gradcam", *, rotations=None) -> dict[str, np.ndarray]:
    """{"scale 0": maps, "scale 1": ..., "mean": maps} for images (B,3,S,S): each scale alone and combined."""
    out = {f"scale {s}": anomaly_cam(model, images, s, method, rotations=rotations)
           for s in range(model.config.n_scales)}
    out["mean"] = _normalise01(torch.from_numpy(np.mean(list(out.values()), axis=0))).numpy()
    return out


def map_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per image of two stacks of maps (B,H,W) -> (B,): how much two explanations agree."""
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.maximum(np.sqrt((a * a).sum(1) * (b * b).sum(1)), 1e-12)


# --- figures ----------------------------------------------------------------------------------------------------------
def cam_grid_figure(images: torch.Tensor, columns: dict[str, np.ndarray], row_titles: Sequence[str] | None = None,
                    *, alpha: float = 0.5, cell_inches: float = 2.2, dpi: int = 100, title: str | None = None):
    """A grid like AttentDifferNet's Figure 3: column 'input', then one heat-map overlay per entry of `columns`.

    columns: {column title: maps (B,H,W) in [0,1]}. The figure is exactly (1+len(columns))·cell_inches·dpi wide and
    B·cell_inches·dpi (+ a title band) high when saved with ``savefig(path, dpi=dpi)`` (no bbox_inches="tight"),
    as long as that width fits the book's column (`adnlib.explain.viewer.FIGURE_WIDTH_IN` · 100 px); with more
    columns the cells narrow to fit it (column titles wrap) and grow taller instead, so the images stay as large as
    the width allows.
    """
    import textwrap

    import matplotlib.pyplot as plt

    n, ncols = len(images), 1 + len(columns)
    top = 0.4 if title else 0.0  # inches for the title
    band = 0.42  # inches above each image for its labels
    cell_w = min(cell_inches, FIGURE_WIDTH_IN * 100 / dpi / ncols)  # the column's pixels, at this figure's dpi
    side = min(cell_inches - band - 0.04, cell_w - 0.06)  # square images
    cell_h = cell_inches if cell_w == cell_inches else side + band + 0.04
    characters = max(8, int(cell_w * 100 / 7))  # 9 pt: about 7 px a character at 100 dpi
    width, height = ncols * cell_w, n * cell_h + top
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    for i in range(n):
        for j, (name, maps) in enumerate([("input", None), *columns.items()]):
            x0, y0 = j * cell_w + (cell_w - side) / 2, height - top - (i + 1) * cell_h + 0.04
            ax = fig.add_axes((x0 / width, y0 / height, side / width, side / height))
            ax.imshow(to_display(images[i]) if maps is None else overlay_heatmap(images[i], maps[i], alpha))
            ax.set_xticks([])
            ax.set_yticks([])
            label = name if i == 0 else ""
            if j == 0 and row_titles is not None:
                label = (label + "\n" if label else "") + row_titles[i]
            if label:
                ax.set_title("\n".join(textwrap.fill(line, characters) for line in label.split("\n")), fontsize=9,
                             pad=2)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    return fig


def cam_browser(models: dict, images: torch.Tensor, titles: Sequence[str], *, gradient_model: str | None = None,
                rotations=None):
    """An ipywidgets browser over `images`: pick an image, a CAM method and the scales; computes on demand.

    models: {name: model}. Shows the input, our input-gradient map of `gradient_model` (default the first model)
    and each model's CAM. The figure is an Image widget (`adnlib.explain.viewer.figure_viewer`): a headless run
    draws the
    first view and goes on.
    """
    import ipywidgets as widgets

    from adnlib.explain.viewer import figure_viewer

    names = list(models)
    gradient_model = gradient_model or names[0]
    n_scales = min(m.config.n_scales for m in models.values())

    def render(image: int, method: str, scales):
        batch = images[image:image + 1]
        columns = {f"ours: input gradient ({gradient_model})": input_gradient_map(models[gradient_model], batch,
                                                                                  rotations=rotations)}
        for name, model in models.items():
            columns[f"{name}: {method}"] = anomaly_cam(model, batch, scales, method, rotations=rotations)
        return cam_grid_figure(batch, columns, [titles[image]], cell_inches=2.6)

    return figure_viewer(render, {
        "image": widgets.Dropdown(options=[(t, i) for i, t in enumerate(titles)], value=0, description="image"),
        "method": widgets.Dropdown(options=list(METHODS), value="gradcam", description="method"),
        "scales": widgets.Dropdown(options=[("all (mean)", "all")] + [(f"scale {s}", s) for s in range(n_scales)],
                                   value="all", description="scales")})
