"""Output folders checked before any work, and write failures (read-only, full disk) as one clear error.

`check_output_folder` creates the folder, writes and removes a probe file in it, and compares the free space with
the largest file the command will write (`checkpoint_bytes` estimates a checkpoint from the model's parameters
before training). Failed writes become one OutputWriteError (`adnlib.io.write_error`). Every result is written
atomically (`adnlib.io.atomic_write`), so a failed write leaves the previous file, and a training run can be
resumed once there is room.
"""
from __future__ import annotations

from pathlib import Path

from adnlib.errors import OutputExistsError, OutputWriteError
from adnlib.io import MARGIN_BYTES, free_bytes, probe_folder, write_error  # noqa: F401 - write_error: public here too


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _blocking_file(folder: Path) -> Path | None:
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def check_output_folder(folder: str | Path, need_bytes: int = 0, largest: str = "its largest file",
                        option: str = "--out") -> Path:
    """Before any work: create `folder`, write and remove a probe file there, and check that at least
    `need_bytes` (+ a 1 MB margin) are free -> the folder's Path.

    OutputExistsError where a file stands in the way; OutputWriteError (one line naming the folder) where it cannot
    be created or written (read-only, permissions) or lacks room for `largest` (need_bytes)."""
    folder = Path(folder)
    blocking = _blocking_file(folder)
    if blocking is not None:
        where = "is a file" if blocking == folder else f"cannot be a folder: {blocking} is a file"
        raise OutputExistsError(f"{option} {folder} {where}; choose another {option}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_folder(folder)  # a new file of an unguessable name, never written through a link
    except OSError as exc:
        raise OutputWriteError(f"{option} {folder} cannot be written ({exc.strerror or exc}); choose another "
                               f"{option}") from exc
    free = free_bytes(folder)
    if free is not None and free < need_bytes + MARGIN_BYTES:
        raise OutputWriteError(f"{option} {folder} has {megabytes(free)} free, but this run needs "
                               f"{megabytes(need_bytes + MARGIN_BYTES)} there ({largest}); free some space or choose "
                               f"another {option}")
    return folder


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
