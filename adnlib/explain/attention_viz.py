"""Look inside the attention blocks: what SE and CBAM compute, where they sit, and what they do to feature maps.

The one call is ``collect_attention(model, images)``: it runs the backbone once at one scale and returns, for each
attention block, what went in, what came out and the gates in between (``BlockRecord``). The plotting helpers turn
those records into figures; ``attention_viewer`` wraps them in an ipywidgets browser that never blocks a headless run.

Why one scale at a time: the model runs its backbone at n scales, so a block's ``last_gates`` hold only the last
(smallest) scale. Running the backbone here on one chosen scale makes the records unambiguous.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from adnlib.config import Config
from adnlib.explain.viewer import FIGURE_WIDTH_IN
from adnlib.model.attention import CBAM, SEBlock
from adnlib.model.backbone import attention_positions
from adnlib.model.transforms import to_unit

# Names of torchvision's alexnet.features layers, by index (see adnlib.model.backbone).
ALEXNET_LAYERS = ("conv1 11×11/4", "ReLU", "max-pool 3/2", "conv2 5×5", "ReLU", "max-pool 3/2", "conv3 3×3", "ReLU",
                  "conv4 3×3", "ReLU", "conv5 3×3", "ReLU", "max-pool 3/2")


# --- images and overlays ------------------------------------------------------------------------------------------
def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image (3,H,W) or (H,W,3), uint8 or [0,1] -> float array (H,W,3) in [0,1] for imshow."""
    if isinstance(image, torch.Tensor):
        image = to_unit(image.detach().cpu()).numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    return np.clip(image.astype(np.float32), 0, 1)


def resize_map(heat: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map (h,w) -> (H,W) by bilinear interpolation (float32 numpy)."""
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_heatmap(image, heat, alpha: float = 0.5, cmap: str = "jet", normalize: bool = False) -> np.ndarray:
    """Blend a heat map (h,w) in [0,1] over an image (see `to_display`) -> (H,W,3) in [0,1].

    The map is resized to the image bilinearly; normalize=True first stretches it to [0,1] (min-max).
    """
    import matplotlib

    rgb = to_display(image)
    heat = resize_map(heat, rgb.shape[:2])
    if normalize:
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-8)
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * rgb + alpha * colours, 0, 1)


# --- picking test images --------------------------------------------------------------------------------------------
def pick_test_images(dataset, n_normal: int, n_defective: int) -> list[int]:
    """Indices of n_normal normal images (evenly spread) then n_defective defective ones, cycling over the defect
    types so that each type appears before any repeats. `dataset`: an AnomalyDataset (its .samples)."""
    normal = [i for i, s in enumerate(dataset.samples) if s.label == 0]
    by_type: dict[str, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        if s.label == 1:
            by_type.setdefault(s.defect_type, []).append(i)
    chosen = [normal[int(k)] for k in np.linspace(0, len(normal) - 1, min(n_normal, len(normal)))] if n_normal else []
    queues = [list(v) for v in by_type.values()]
    defective = []
    while len(defective) < n_defective and any(queues):
        for q in queues:
            if q and len(defective) < n_defective:
                defective.append(q.pop(0))
    return chosen + defective


def image_batch(dataset, indices: list[int]) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The images (B,3,S,S) uint8, labels (B,) and short titles ('good 003', 'stain 001') of dataset[indices]."""
    images = torch.stack([dataset[i][0] for i in indices])
    samples = [dataset.samples[i] for i in indices]
    titles = [f"{s.defect_type} {s.path.stem}" for s in samples]
    return images, np.array([s.label for s in samples]), titles


# --- what the blocks compute ----------------------------------------------------------------------------------------
@dataclass
class BlockRecord:
    """One attention block on one batch: block number (1..3), place in alexnet.features, tensors (detached, CPU)."""

    block: int
    index: int  # the block follows alexnet.features[index]
    kind: str  # "se" | "cbam"
    inputs: torch.Tensor  # (B,C,h,w) what the block received
    outputs: torch.Tensor  # (B,C,h,w) what it passed on
    channel_gates: torch.Tensor  # (B,C) in (0,1)
    spatial_map: torch.Tensor | None  # (B,1,h,w) in (0,1) for CBAM, None for SE

    @property
    def channels(self) -> int:
        return self.inputs.shape[1]

    @property
    def energy_before(self) -> torch.Tensor:
        """(B,C) mean of the squared activations over space, before the block."""
        return self.inputs.pow(2).mean(dim=(2, 3))

    @property
    def energy_after(self) -> torch.Tensor:
        """(B,C) mean of the squared activations over space, after the block."""
        return self.outputs.pow(2).mean(dim=(2, 3))

    def energy_ratio(self) -> torch.Tensor:
        """(B,) total feature energy after / before the block: how much the gates let through."""
        return self.energy_after.sum(1) / self.energy_before.sum(1).clamp_min(1e-12)


def collect_attention(model, images: torch.Tensor, scale: int = 0, batch_size: int = 16) -> list[BlockRecord]:
    """Run the backbone on `images` (B,3,S,S; uint8 or [0,1]) at one scale -> one BlockRecord per attention block.

    scale: 0 = full size S, 1 = S/2, ... (the inputs of the multi-scale embedding). Images go through in chunks
    of batch_size; the records hold the whole batch. Empty list for DifferNet.
    """
    if not model.backbone.attention:
        return []
    chunks = [_collect_chunk(model, chunk, scale) for chunk in torch.split(images, batch_size)]
    if len(chunks) == 1:
        return chunks[0]

    def cat(field: str, parts: list[BlockRecord]):
        return None if getattr(parts[0], field) is None else torch.cat([getattr(p, field) for p in parts])

    return [BlockRecord(parts[0].block, parts[0].index, parts[0].kind,
                        *(cat(f, parts) for f in ("inputs", "outputs", "channel_gates", "spatial_map")))
            for parts in zip(*chunks)]


@torch.no_grad()
def _collect_chunk(model, images: torch.Tensor, scale: int) -> list[BlockRecord]:
    backbone = model.backbone
    blocks = list(backbone.attention.items())
    was_training = model.training
    model.eval()
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def save(module, args, output):
            seen[name] = (args[0].detach().float().cpu(), output.detach().float().cpu())
        return save

    handles = [block.register_forward_hook(hook(name)) for name, block in blocks]
    try:
        device = next(model.parameters()).device
        x = model.prepare(images.to(device))
        backbone(model.embedding.scaled_inputs(x)[scale])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    records = []
    for number, (name, block) in enumerate(blocks, start=1):
        inputs, outputs = seen[name]
        if isinstance(block, CBAM):
            gates, spatial, kind = block.last_channel_gates, block.last_spatial_map.float().cpu(), "cbam"
        else:
            gates, spatial, kind = block.last_gates, None, "se"
        records.append(BlockRecord(number, int(name), kind, inputs, outputs, gates.float().cpu(), spatial))
    return records


def with_initial_attention(model):
    """A model like `model` whose attention blocks are back at their initialisation (same seed), all else shared.

    Comparing its records with the trained model's shows how far training moved the gates. Only the three small
    attention blocks are new; the backbone's frozen convolutions and the flow (172M parameters in the paper
    config) are `model`'s own tensors, not copies, so this costs no memory to speak of and leaves `model`
    untouched. Since they are shared, do not train or move (`.to`) the returned model: use it to look, in eval
    mode. The initial blocks come from a model built with the same config but random backbone weights and a
    one-block flow: the attention init depends only on the seed (tests/test_gradcam.py checks this against a
    full fresh model).
    """
    import copy

    from adnlib.model.backbone import MultiScaleEmbedding
    from adnlib.model.network import AttentDifferNet

    def _shallow_module_copy(module: nn.Module) -> nn.Module:
        """A new module object sharing `module`'s submodules, parameters and buffers, with registries of its own
        (assigning a submodule of the copy leaves `module` as it is); no tensor is copied."""
        new = module.__class__.__new__(module.__class__)
        new.__dict__.update({k: copy.copy(v) if isinstance(v, (dict, set)) else v for k, v in module.__dict__.items()})
        return new

    fresh = AttentDifferNet(model.config.replace(weights="none", fc_hidden=8, n_coupling_blocks=1))
    attention = copy.deepcopy(model.backbone.attention)  # three small blocks: keeps device, dtype, requires_grad
    with torch.no_grad():
        attention.load_state_dict(fresh.backbone.attention.state_dict())
    backbone = _shallow_module_copy(model.backbone)
    backbone.attention = attention
    out = _shallow_module_copy(model)
    out.backbone = backbone
    if isinstance(model.embedding, MultiScaleEmbedding):
        embedding = _shallow_module_copy(model.embedding)
        embedding.backbone = backbone
    else:  # a torch.compile'd embedding: rebuild it (uncompiled) around the new backbone
        embedding = MultiScaleEmbedding(backbone, model.config.n_scales, model.config.scale_mode)
    out.embedding = embedding
    return out


@torch.no_grad()
def excitation_activity(model, records: list[BlockRecord]) -> pd.DataFrame:
    """Per block: how many hidden ReLU units of the gate's MLP (C/r of them) fire on the recorded images.

    A unit that never fires passes no gradient and cannot learn; if none fires, the block's channel gates are the
    constant sigmoid(bias) for every image. (CBAM: a unit counts as firing on the average- or max-pooled input.)
    """
    rows = []
    for r, block in zip(records, model.backbone.blocks):
        mlp = block.excitation if isinstance(block, SEBlock) else block.channel.mlp
        first = mlp[0]
        pooled = [r.inputs.mean(dim=(2, 3))] + ([r.inputs.amax(dim=(2, 3))] if isinstance(block, CBAM) else [])
        active = torch.stack([first(p.to(first.weight.device)) > 0 for p in pooled]).any(0).cpu()  # (B, hidden)
        rows.append({"block": r.block, "hidden_units": active.shape[1],
                     "never_active": int((~active.any(0)).sum()), "active_fraction": float(active.float().mean())})
    return pd.DataFrame(rows)


def gate_shift(trained: list[BlockRecord], initial: list[BlockRecord]) -> pd.DataFrame:
    """Per block: mean and max |trained − initial| channel gate (and spatial map for CBAM), on the same images."""
    rows = []
    for a, b in zip(trained, initial):
        delta = (a.channel_gates - b.channel_gates).abs()
        row = {"block": a.block, "channels": a.channels, "gate_shift_mean": float(delta.mean()),
               "gate_shift_max": float(delta.max())}
        if a.spatial_map is not None:
            row["spatial_shift_mean"] = float((a.spatial_map - b.spatial_map).abs().mean())
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def se_steps(block: SEBlock, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """SE on features x (B,C,h,w), step by step: squeezed (B,C), gates (B,C), output (B,C,h,w)."""
    squeezed = x.mean(dim=(2, 3))  # squeeze: one number per channel
    gates = block.excitation(squeezed)  # excitation: a small MLP, then a sigmoid
    return {"squeezed": squeezed, "gates": gates, "output": x * gates[:, :, None, None]}


@torch.no_grad()
def cbam_steps(block: CBAM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """CBAM on features x (B,C,h,w), step by step.

    Returns avg_pooled, max_pooled (B,C); channel_gates (B,C); after_channel (B,C,h,w); mean_map, max_map
    (B,1,h,w) — the two maps the 7×7 conv sees; spatial_map (B,1,h,w); output (B,C,h,w).
    """
    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    gates = torch.sigmoid(block.channel.mlp(avg) + block.channel.mlp(mx))
    after_channel = x * gates[:, :, None, None]
    mean_map, max_map = after_channel.mean(dim=1, keepdim=True), after_channel.amax(dim=1, keepdim=True)
    spatial = torch.sigmoid(block.spatial.conv(torch.cat([mean_map, max_map], dim=1)))
    return {"avg_pooled": avg, "max_pooled": mx, "channel_gates": gates, "after_channel": after_channel,
            "mean_map": mean_map, "max_map": max_map, "spatial_map": spatial, "output": after_channel * spatial}


def parameter_table(config: Config | None = None) -> pd.DataFrame:
    """Parameters of one SE and one CBAM block at each Figure-1 position, and what they sit beside.

    Columns: block, after (layer), channels, se, cbam_channel, cbam_spatial, cbam, conv_before (the frozen AlexNet
    convolution feeding the block). The last row sums the three blocks.
    """
    config = config or Config()
    features = nn.Sequential(*_alexnet_shapes())
    rows = []
    for number, (index, channels) in enumerate(attention_positions(config.block3_before_final_pool), start=1):
        se = SEBlock(channels, config.se_reduction)
        cbam = CBAM(channels, config.cbam_reduction, config.cbam_kernel_size)
        conv = [m for m in list(features)[:index + 1] if isinstance(m, nn.Conv2d)][-1]
        rows.append({"block": number, "after": f"{index}: {ALEXNET_LAYERS[index]}", "channels": channels,
                     "se": _count(se), "cbam_channel": _count(cbam.channel), "cbam_spatial": _count(cbam.spatial),
                     "cbam": _count(cbam), "conv_before": _count(conv)})
    table = pd.DataFrame(rows)
    total = {c: int(table[c].sum()) for c in ("se", "cbam_channel", "cbam_spatial", "cbam", "conv_before")}
    return pd.concat([table, pd.DataFrame([{"block": "total", "after": "", "channels": "", **total}])],
                     ignore_index=True)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _alexnet_shapes() -> list[nn.Module]:
    from torchvision.models import alexnet
    return list(alexnet(weights=None).features)


# --- figures --------------------------------------------------------------------------------------------------------
def _wrap_arrow(ax, end_x: float, y_from: float, y_to: float) -> None:
    """The arrow from the end of one line of boxes (at end_x, y_from) to the start of the next one (0, y_to)."""
    middle = (y_from + y_to) / 2
    ax.plot([end_x - 0.06, end_x + 0.04, end_x + 0.04, -0.04, -0.04], [y_from, y_from, middle, middle, y_to],
            color="black", lw=0.8)
    ax.annotate("", xy=(0.06, y_to), xytext=(-0.05, y_to), arrowprops=dict(arrowstyle="->", lw=0.8))


def backbone_diagram(config: Config | None = None, variant: str | None = None, ax=None):
    """Draw alexnet.features as boxes in two lines, attention blocks where Figure 1 puts them; returns the Figure."""
    import math

    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    config = config or Config(variant="se")
    variant = variant or (config.variant if config.has_attention else "se")
    positions = dict(attention_positions(config.block3_before_final_pool))
    items = []  # (label, kind)
    for index, name in enumerate(ALEXNET_LAYERS):
        items.append((name.replace(" ", "\n", 1), "conv" if name.startswith("conv") else
                      "pool" if name.startswith("max") else "relu"))
        if index in positions:
            items.append((f"{variant.upper()}\nblock {list(positions).index(index) + 1}\n{positions[index]} ch",
                          "attention"))
    items.append(("mean over\nH,W → 256", "head"))
    colours = {"conv": "#9ecae1", "relu": "#e0e0e0", "pool": "#c7e9c0", "attention": "#fdae6b", "head": "#dadaeb"}
    per_line = math.ceil(len(items) / 2)  # two lines of boxes: 17 boxes in one line took 16 in
    if ax is None:  # about 1 in a box, the axes filling the figure below the title
        fig, ax = plt.subplots(figsize=(min(per_line, FIGURE_WIDTH_IN - 0.2), 3.4))
        fig.subplots_adjust(left=0, right=1, bottom=0, top=0.86)
    fig = ax.figure
    for i, (label, kind) in enumerate(items):
        x, y = i % per_line, 1 - i // per_line  # line 0 above (y from 1 to 2), line 1 below (0 to 1)
        ax.add_patch(FancyBboxPatch((x + 0.06, y + 0.15), 0.88, 0.7, boxstyle="round,pad=0.02", fc=colours[kind],
                                    ec="#d94801" if kind == "attention" else "#555555",
                                    lw=2 if kind == "attention" else 1))
        ax.text(x + 0.5, y + 0.5, label, ha="center", va="center", fontsize=9,
                fontweight="bold" if kind == "attention" else "normal")
        if i % per_line:
            ax.annotate("", xy=(x + 0.06, y + 0.5), xytext=(x - 0.06, y + 0.5),
                        arrowprops=dict(arrowstyle="->", lw=0.8))
        elif i:
            _wrap_arrow(ax, per_line, y + 1.5, y + 0.5)
    ax.set_xlim(-0.1, per_line + 0.1)
    ax.set_ylim(0, 2)
    ax.axis("off")
    where = "before" if config.block3_before_final_pool else "after"
    ax.set_title(f"AlexNet features with {variant.upper()} blocks (AttentDifferNet, Figure 1; block 3 {where} the "
                 "last pool: our reading);\nfrozen layers in blue/green/grey, trained blocks in orange; read the "
                 "first line, then the second", fontsize=9)
    return fig


def se_steps_figure(block: SEBlock, x: torch.Tensor, n_maps: int = 6):
    """Squeeze, excitation and the gated output for the first item of x (B,C,h,w); returns the Figure."""
    import matplotlib.pyplot as plt

    steps = se_steps(block, x[:1])
    squeezed, gates = steps["squeezed"][0].numpy(), steps["gates"][0].numpy()
    order = np.argsort(-squeezed)[:n_maps]
    cell = FIGURE_WIDTH_IN / len(order)  # the maps share the column's width
    fig = plt.figure(figsize=(FIGURE_WIDTH_IN, 2 * (cell + 0.5) + 2.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(2 * (cell + 0.5), 2.8))  # each row of panels laid out alone
    maps = top.subplots(2, len(order), squeeze=False)
    for j, c in enumerate(order):
        for row, (tensor, what) in enumerate(((x, "before"), (steps["output"], "after"))):
            ax = maps[row, j]
            vmax = float(x[0, c].max()) or 1.0  # same colour scale before/after: the gate's dimming is visible
            ax.imshow(tensor[0, c].numpy(), cmap="viridis", vmin=0, vmax=vmax)
            ax.set_title(f"ch {c} {what}" + (f"\ngate {gates[c]:.2f}" if row else ""), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    ax, right = bottom.subplots(1, 2)
    ax.bar(np.arange(len(squeezed)), squeezed, color="#3182bd")
    ax.set(xlabel="channel", ylabel="mean activation")
    ax.set_title("squeeze: mean of each channel over space", fontsize=10)
    right.bar(np.arange(len(gates)), gates, color="#e6550d")
    right.set(xlabel="channel", ylabel="gate", ylim=(0, 1))
    right.set_title("excitation: gate = sigmoid(MLP(squeeze))", fontsize=10)
    fig.suptitle(f"SE block step by step (top: the {len(order)} strongest channels before the gate, middle: after)",
                 fontsize=11)
    return fig


def cbam_steps_figure(block: CBAM, x: torch.Tensor, image=None):
    """CBAM's channel gate (avg/max pooled, gates) and spatial map (mean/max maps, map, overlay); returns the Figure."""
    import matplotlib.pyplot as plt

    s = cbam_steps(block, x[:1])
    # 3 × 3 panels: the channel step, the spatial step, what the block kept (4 columns were 14 in wide)
    fig, axes = plt.subplots(3, 3, figsize=(FIGURE_WIDTH_IN, 8.4), layout="constrained")
    c = np.arange(x.shape[1])
    for ax, key, colour, title in ((axes[0, 0], "avg_pooled", "#3182bd", "channel step: average-pooled"),
                                   (axes[0, 1], "max_pooled", "#6baed6", "channel step: max-pooled")):
        ax.bar(c, s[key][0].numpy(), color=colour)
        ax.set(xlabel="channel", ylabel="activation")
        ax.set_title(title, fontsize=10)
    axes[0, 2].bar(c, s["channel_gates"][0].numpy(), color="#e6550d")
    axes[0, 2].set(xlabel="channel", ylabel="gate", ylim=(0, 1))
    axes[0, 2].set_title("channel gate\nσ(MLP(avg) + MLP(max))", fontsize=10)
    for ax, key, title in ((axes[1, 0], "mean_map", "spatial step:\nmean over channels"),
                           (axes[1, 1], "max_map", "spatial step:\nmax over channels")):
        im = ax.imshow(s[key][0, 0].numpy(), cmap="viridis")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    im = axes[1, 2].imshow(s["spatial_map"][0, 0].numpy(), cmap="jet", vmin=0, vmax=1)
    axes[1, 2].set_title("spatial map\nσ(conv7×7[mean, max])", fontsize=10)
    fig.colorbar(im, ax=axes[1, 2], shrink=0.8)
    energy_in, energy_out = x[0].pow(2).sum(0), s["output"][0].pow(2).sum(0)
    im = axes[2, 0].imshow((energy_out / energy_in.clamp_min(1e-12)).numpy(), cmap="magma", vmin=0)
    axes[2, 0].set_title("share of feature energy kept\n(Σ_c x² after / before)", fontsize=10)
    fig.colorbar(im, ax=axes[2, 0], shrink=0.8)
    if image is not None:
        axes[2, 1].imshow(overlay_heatmap(image, s["spatial_map"][0, 0].numpy(), normalize=True))
        axes[2, 1].set_title("spatial map over the image\n(stretched to its own min–max)", fontsize=10)
    else:
        axes[2, 1].axis("off")
    axes[2, 2].axis("off")
    for ax in (*axes[1], *axes[2, :2]):
        ax.set_xlabel("x (feature cells)" if ax is not axes[2, 1] else "x (pixels)")
        ax.set_ylabel("y")
    fig.suptitle("CBAM step by step: channel gate, then spatial map", fontsize=11)
    return fig


def gate_statistics(records: list[BlockRecord], labels) -> pd.DataFrame:
    """Per block: mean/std of channel gates and spatial maps and the energy ratio, for normal (0) and defective (1)."""
    labels = np.asarray(labels)
    rows = []
    for r in records:
        for label, name in ((0, "normal"), (1, "defective")):
            keep = torch.from_numpy(labels == label)
            if not keep.any():
                continue
            row = {"block": r.block, "channels": r.channels, "images": name, "n": int(keep.sum()),
                   "gate_mean": float(r.channel_gates[keep].mean()),
                   "gate_std_over_channels": float(r.channel_gates[keep].mean(0).std()),
                   "energy_ratio": float(r.energy_ratio()[keep].mean())}
            if r.spatial_map is not None:
                row["spatial_mean"] = float(r.spatial_map[keep].mean())
                row["spatial_std"] = float(r.spatial_map[keep].std())
            rows.append(row)
    return pd.DataFrame(rows)


def _outside_band(gates: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> tuple[int, float]:
    """gates (N,C), labels (N,) -> (channels whose mean over label-1 rows lies outside the label-0 rows' 10–90 %
    range by more than tol, largest |mean(label 1) − mean(label 0)| over channels)."""
    normal, defect = gates[labels == 0], gates[labels == 1]
    low, high = np.percentile(normal, 10, 0), np.percentile(normal, 90, 0)
    mean_defect = defect.mean(0)
    outside = int(((mean_defect < low - tol) | (mean_defect > high + tol)).sum())
    return outside, float(np.abs(mean_defect - normal.mean(0)).max())


def gate_difference(records: list[BlockRecord], labels, shuffles: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per block: do the gates treat defective images (label 1) differently from normal ones (label 0)?

    Columns: block, channels; outside_band: channels whose mean gate over the defective images lies outside the
    normal images' 10–90 % range of that gate (the dots that leave the band in `channel_gates_figure`);
    shuffled_mean, shuffled_max: the same count with the labels randomly permuted (`shuffles` times, numpy
    generator `seed`): what chance alone gives on these images; max_abs_shift: the largest |mean gate defective −
    mean gate normal| over channels; energy_normal, energy_defective: the mean energy ratio after/before the block.
    """
    labels = np.asarray(labels)
    if not ((labels == 0).any() and (labels == 1).any()):
        raise ValueError("gate_difference needs normal (0) and defective (1) images")
    rng = np.random.default_rng(seed)
    permuted = [rng.permutation(labels) for _ in range(shuffles)]
    rows = []
    for r in records:
        gates, energy = r.channel_gates.numpy(), r.energy_ratio().numpy()
        outside, shift = _outside_band(gates, labels)
        chance = [_outside_band(gates, p)[0] for p in permuted] or [0]
        rows.append({"block": r.block, "channels": r.channels, "outside_band": outside,
                     "shuffled_mean": float(np.mean(chance)), "shuffled_max": int(np.max(chance)),
                     "max_abs_shift": shift, "energy_normal": float(energy[labels == 0].mean()),
                     "energy_defective": float(energy[labels == 1].mean())})
    return pd.DataFrame(rows)


DIFFERENCE_FLOOR = 0.01  # the difference rows of channel_gates_figure span at least ±1 % of the gates' 0–1 range


def _gate_panels(gate_ax, diff_ax, record: BlockRecord, labels: np.ndarray, variant: str) -> None:
    """One block of `channel_gates_figure`: the gates (above) and the difference defective − normal (below)."""
    normal = record.channel_gates[torch.from_numpy(labels == 0)].numpy()
    defect = record.channel_gates[torch.from_numpy(labels == 1)].numpy()
    order = np.argsort(normal.mean(0))
    c = np.arange(record.channels)
    low, high, mean = (np.percentile(normal, 10, 0)[order], np.percentile(normal, 90, 0)[order],
                       normal.mean(0)[order])
    gate_ax.fill_between(c, low, high, color="#3182bd", alpha=0.25, lw=0,
                         label="normal images: 10–90 % band (below: around their mean)")
    gate_ax.plot(c, mean, color="#08519c", lw=1.5, label=f"normal images: mean gate (n={len(normal)})")
    gate_ax.plot(c, defect.mean(0)[order], ".", color="#e6550d", ms=3,
                 label=f"defective images: mean gate (n={len(defect)})")
    gate_ax.set(ylabel="channel gate", ylim=(0, 1), xlabel="channel, by normal mean")
    gate_ax.set_title(f"{variant.upper()} block {record.block} ({record.channels} ch)", fontsize=10)
    # The difference on its own scale, beside the normal images' own spread around their mean (the band): a shift
    # far inside the band is one that the normal images show among themselves. At least ±DIFFERENCE_FLOOR, so that
    # curves that coincide give flat bars instead of magnified rounding noise.
    shift = defect.mean(0)[order] - mean
    largest = float(np.abs(shift).max())
    diff_ax.fill_between(c, low - mean, high - mean, color="#3182bd", alpha=0.25, lw=0)
    edges = np.arange(record.channels + 1) - 0.5  # bars of width 1 as two filled step curves: two artists, not C
    diff_ax.stairs(np.clip(shift, 0, None), edges, fill=True, color="#e6550d")
    diff_ax.stairs(np.clip(shift, None, 0), edges, fill=True, color="#3182bd")
    diff_ax.axhline(0, color="black", lw=0.6)
    spread = float(max(np.abs(low - mean).max(), np.abs(high - mean).max()))
    limit = max(DIFFERENCE_FLOOR, 1.15 * max(largest, spread))
    diff_ax.set(ylim=(-limit, limit), ylabel="Δ gate", xlabel="channel (same order)")
    diff_ax.set_title(f"defective − normal mean gate\nlargest |difference| {largest:.2g}", fontsize=9)


def channel_gates_figure(records_by_variant: dict[str, list[BlockRecord]], labels):
    """Rows = variants, columns = blocks: mean channel gate over normal vs defective images (channels sorted by the
    normal mean, so a defect that changes the gates shows as a departure from a smooth curve), and under each panel
    the difference defective − normal per channel on its own scale, beside the normal images' own spread (the band
    around 0), its title giving the largest |difference|; returns the Figure. One legend, below the panels."""
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    variants = list(records_by_variant)
    n_blocks = max(len(r) for r in records_by_variant.values())
    fig, axes = plt.subplots(2 * len(variants), n_blocks, figsize=(FIGURE_WIDTH_IN, 4.6 * len(variants) + 0.8),
                             squeeze=False, layout="constrained", height_ratios=[2.2, 1.4] * len(variants))
    for i, variant in enumerate(variants):
        for r in records_by_variant[variant]:
            _gate_panels(axes[2 * i, r.block - 1], axes[2 * i + 1, r.block - 1], r, labels, variant)
    handles, names = next(ax for ax in axes.flat if ax.lines).get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    fig.suptitle("Channel gates: normal vs defective test images (full-size scale)", fontsize=11)
    return fig


def spatial_maps_figure(images: torch.Tensor, records: list[BlockRecord], titles: list[str] | None = None,
                        variant: str = "cbam"):
    """Rows = images, columns = input then the spatial map of each block over the image; returns the Figure."""
    import matplotlib.pyplot as plt

    spatial = [r for r in records if r.spatial_map is not None]
    n = len(images)
    cell = min(2.4, FIGURE_WIDTH_IN / (1 + len(spatial)))
    fig, axes = plt.subplots(n, 1 + len(spatial), figsize=(cell * (1 + len(spatial)), (cell + 0.3) * n + 0.5),
                             squeeze=False, layout="constrained")
    for i in range(n):
        axes[i, 0].imshow(to_display(images[i]))
        axes[i, 0].set_title(titles[i] if titles else f"image {i}", fontsize=9)
        for j, r in enumerate(spatial, start=1):
            m = r.spatial_map[i, 0].numpy()
            axes[i, j].imshow(overlay_heatmap(images[i], m, normalize=True))
            axes[i, j].set_title(f"block {r.block}: map {m.min():.2f}–{m.max():.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{variant.upper()} spatial maps over the images\n(each map stretched to its own min–max; "
                 "red = kept, blue = damped)", fontsize=10)
    return fig


def energy_figure(records_by_variant: dict[str, list[BlockRecord]], labels):
    """Bar chart: feature energy after / before each block, normal vs defective images; returns the Figure."""
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    variants = list(records_by_variant)
    fig, axes = plt.subplots(1, len(variants), figsize=(min(4.5 * len(variants), FIGURE_WIDTH_IN), 3.9),
                             squeeze=False, layout="constrained")
    for ax, variant in zip(axes[0], variants):
        records = records_by_variant[variant]
        x = np.arange(len(records))
        for k, (label, name, colour) in enumerate(((0, "normal", "#3182bd"), (1, "defective", "#e6550d"))):
            keep = torch.from_numpy(labels == label)
            ratios = [r.energy_ratio()[keep].numpy() for r in records]
            ax.bar(x + (k - 0.5) * 0.38, [v.mean() for v in ratios], 0.38, yerr=[v.std() for v in ratios],
                   color=colour, label=name, capsize=3)
        ax.set_xticks(x, [f"block {r.block}\n({r.channels} ch)" for r in records])
        ax.set(ylabel="Σ mean(x²) after / before", xlabel="attention block")
        ax.set_title(f"{variant.upper()}: energy after / before the gate", fontsize=10)
    handles, names = next((ax for ax in axes[0] if ax.patches), axes[0, 0]).get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=9, frameon=False)  # over no bar
    fig.suptitle("How much feature energy the attention blocks let through", fontsize=11)
    return fig


def attention_panel(image, record: BlockRecord, item: int = 0, title: str = ""):
    """One image through one block: the image, its channel gates (sorted) and a spatial view; returns the Figure.

    The spatial view is CBAM's spatial map, or for SE (no spatial map) the feature energy after the block.
    """
    import textwrap

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(FIGURE_WIDTH_IN, 3.5), layout="constrained", width_ratios=(1, 1.6, 1))
    axes[0].imshow(to_display(image))
    axes[0].set(xticks=[], yticks=[])
    axes[0].set_title(textwrap.fill(title or "input", 30), fontsize=10)  # a long image name wraps, stays above it
    gates = record.channel_gates[item].numpy()
    ranks = np.arange(len(gates) + 1) - 0.5  # bars of width 1 as one filled step curve (redraws fast)
    axes[1].stairs(np.sort(gates)[::-1], ranks, fill=True, color="#e6550d")
    axes[1].set(xlabel="channel rank", ylabel="gate", ylim=(0, 1))
    axes[1].set_title(f"block {record.block} channel gates, sorted (mean {gates.mean():.3f})", fontsize=10)
    if record.spatial_map is not None:
        m = record.spatial_map[item, 0].numpy()
        axes[2].imshow(overlay_heatmap(image, m, normalize=True))
        axes[2].set_title(f"CBAM spatial map\n({m.min():.2f}–{m.max():.2f})", fontsize=10)
    else:
        energy = record.outputs[item].pow(2).mean(0).numpy()
        axes[2].imshow(overlay_heatmap(image, energy, normalize=True))
        axes[2].set_title("SE: feature energy\nafter the block", fontsize=10)
    axes[2].set(xticks=[], yticks=[])
    return fig


def attention_viewer(records_by_variant: dict[str, list[BlockRecord]], images: torch.Tensor, titles: list[str]):
    """An ipywidgets browser: pick image, block and variant; shows `attention_panel`. Returns the widget.

    Built from precomputed records, so moving a control only redraws. Display it with ``display(viewer)``; the
    figure is an Image widget (`adnlib.explain.viewer.figure_viewer`), so a headless run draws the first view and
    goes on.
    """
    import ipywidgets as widgets

    from adnlib.explain.viewer import figure_viewer

    variants = [v for v, r in records_by_variant.items() if r]

    def render(image: int, block: int, variant: str):
        record = records_by_variant[variant][block - 1]
        return attention_panel(images[image], record, image, f"{titles[image]} — {variant.upper()}")

    n_blocks = max(len(records_by_variant[v]) for v in variants)
    return figure_viewer(render, {
        "image": widgets.Dropdown(options=[(t, i) for i, t in enumerate(titles)], value=0, description="image"),
        "block": widgets.IntSlider(value=n_blocks, min=1, max=n_blocks, description="block"),
        "variant": widgets.ToggleButtons(options=variants, value=variants[0], description="variant")})
