"""Output folders checked before any work, and write failures (read-only, full disk) as one clear error.

`check_output_folder` creates the folder, writes and removes a probe file in it, and compares the free space with
the largest file the command will write (`checkpoint_bytes` estimates a checkpoint from the model's parameters
before training). `write_error` turns the OSError of a failed write (ENOSPC, EROFS, EDQUOT, EACCES, EPERM), or
PyTorch's RuntimeError from a checkpoint written onto a full disk, into an OutputWriteError naming the file. Every
result is written atomically (adnlib.run.checkpoint.atomic_write), so a failed write leaves the previous file, and
a training run can be resumed once there is room.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from adnlib.errors import OutputExistsError, OutputWriteError

# What a write failure on an output folder looks like; any other OSError stays itself (a bug, a vanished disk).
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}
# Room kept beyond the largest file: the small files written beside it (scores, history, metrics).
MARGIN_BYTES = 1 << 20


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_error(exc: BaseException, path: str | Path) -> OutputWriteError | None:
    """The OutputWriteError for a failed write of `path` (None: not a write failure of the output folder).

    A RuntimeError counts when PyTorch's zip writer raised it (it reports a full disk that way, without errno)."""
    path = Path(path)
    if isinstance(exc, OutputWriteError):
        return exc
    torch_writer = isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                                      or "inline_container" in str(exc))
    if not torch_writer and not (isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS):
        return None
    free = _free_bytes(path.parent if path.parent.exists() else Path.cwd())
    room = f"{megabytes(free)} free there" if free is not None else "free space unknown"
    if torch_writer:  # no errno: tell a full disk by the room left
        what = "No space left on device" if free is not None and free < MARGIN_BYTES else "an I/O error"
        reason = f"{what} (PyTorch's checkpoint writer failed; {room})"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = f"{exc.strerror or exc} ({room})"
    else:
        reason = exc.strerror or str(exc)
    error = OutputWriteError(f"cannot write {path}: {reason}")
    error.errno = getattr(exc, "errno", None) or errno.ENOSPC
    return error


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
    probe = folder / f".adnlib-write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"adnlib write check\n")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise OutputWriteError(f"{option} {folder} cannot be written ({exc.strerror or exc}); choose another "
                               f"{option}") from exc
    free = _free_bytes(folder)
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
