"""The room a run's files need, estimated before it starts: a checkpoint from the model's parameters
(`checkpoint_bytes`), a training run's peak (`run_peak_bytes`). The folder checks themselves are
`adnlib.io.check_output_folder`; every result is written atomically (`adnlib.io.atomic_write`), so a failed write
leaves the previous file and a training run can be resumed once there is room.
"""
from __future__ import annotations

# check_output_folder, write_error: public here too (they live in adnlib.io)
from adnlib.io import MARGIN_BYTES, check_output_folder, megabytes, write_error  # noqa: F401


def state_bytes(module) -> int:
    """Bytes of a module's state dict (parameters and buffers), as torch.save writes them (headers aside)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def checkpoint_bytes(model, optimizer_slots: int = 2) -> int:
    """An upper estimate of a resumable checkpoint of `model`: its state dict plus `optimizer_slots` (Adam: 2)
    copies of the trainable parameters."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state_bytes(model) + optimizer_slots * trainable + MARGIN_BYTES


def run_peak_bytes(config) -> int:
    """The most a training run of `config` needs free at once, estimated without allocating (meta tensors): a
    resumable checkpoint.pt and its replacement side by side, and best.pt."""
    import torch

    from adnlib.model.network import AttentDifferNet
    with torch.device("meta"):
        model = AttentDifferNet(config.replace(weights="none"))
    return 2 * checkpoint_bytes(model) + state_bytes(model)
