"""Memory a run will need, estimated before it starts: a request that cannot fit is one error line, not a
MemoryError (or the system's out-of-memory killer) after minutes of work.

The activations of one rotated copy are measured, not guessed: the model's embedding runs once on PyTorch's meta
device (shapes only, nothing allocated) and every layer's output is summed. A training step keeps them for the
backward pass (and their gradients), a scoring step only needs a layer's input and output at a time; the images of
a split are cached decoded (uint8) for the whole run.
"""
from __future__ import annotations

import functools
import os

import torch

from adnlib.errors import AdnlibError

FLOAT_BYTES = 4


class MemoryNeedError(AdnlibError, MemoryError):
    """The run would need more memory than the machine (or GPU) has."""


@functools.lru_cache(maxsize=32)
def _activations(variant: str, img_size: int, n_scales: int, scale_mode: str, block3: bool) -> tuple[int, int]:
    """(sum, largest) of the output sizes (elements) of every layer for one copy at img_size, all scales."""
    from adnlib.config import preset
    from adnlib.model.network import AttentDifferNet
    config = preset("smoke", variant=variant, img_size=img_size, n_scales=n_scales, scale_mode=scale_mode,
                    block3_before_final_pool=block3, weights="none", channels_last=False)
    with torch.device("meta"):
        model = AttentDifferNet(config)
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.embedding.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            x = torch.empty(1, 3, img_size, img_size, device="meta")
            model.embedding(x)
            sizes.extend(s.numel() for s in model.embedding.scaled_inputs(x))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(sizes), max(sizes)


def needed_bytes(config, *, copies: int, images: int, training: bool) -> int:
    """Bytes a step of `copies` rotated copies needs (training: every activation kept, and its gradient;
    scoring: one layer's input and output at a time), plus `images` decoded images cached (uint8) and the model."""
    total, largest = _activations(config.variant, config.img_size, config.n_scales, config.scale_mode,
                                  config.block3_before_final_pool)
    per_copy = (2 * total if training else 2 * largest) * FLOAT_BYTES
    cached = images * 3 * config.img_size ** 2
    flow = 4 * config.n_coupling_blocks * config.fc_hidden * (config.embedding_dim + config.fc_hidden) * FLOAT_BYTES
    return copies * per_copy + cached + (3 if training else 1) * flow


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for a run on `device`: the GPU's free memory, or the machine's available memory (Linux
    /proc/meminfo, else physical memory); None where it cannot be told (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, *, copies: int, images: int, training: bool, device="cpu", what: str = "this run") -> None:
    """MemoryNeedError (one line naming the settings to lower) when `needed_bytes` exceeds `available_bytes`."""
    need = needed_bytes(config, copies=copies, images=images, training=training)
    have = available_bytes(device)
    if have is not None and need > have:
        step = ("a training step of {n} copies ({b} images x {r} rotations)" if training
                else "a scoring step of {n} copies ({b} images x {r} rotations)")
        batch = config.batch_size if training else min(config.test_batch_size, max(images, 1))
        raise MemoryNeedError(
            f"{what} needs about {need / 2 ** 30:.1f} GiB ({step.format(n=copies, b=batch, r=copies // max(batch, 1))}"
            f" at {config.img_size} px, and {images} images cached), but {have / 2 ** 30:.1f} GiB are available on "
            f"{torch.device(device)}: lower the image size (--img-size), the rotations (--tta) or the batch size")


__all__ = ["MemoryNeedError", "needed_bytes", "available_bytes", "check_memory"]
