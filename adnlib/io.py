"""The floor every layer stands on: hashing of files and tensors (more of the I/O helpers join it as they move).

Nothing here imports another adnlib module but `adnlib.errors`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 22  # 4 MB reads: a 700 MB paper checkpoint hashes in about a second


def file_sha256(path: str | Path, chunk: int = CHUNK) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(named: Iterable[tuple[str, object]]) -> str:
    """The sha256 (hex) of named tensors, in the order given: each name, dtype, shape and the bytes of its values
    (on the CPU, contiguous). Two state dicts with equal keys and equal values hash alike on any device."""
    import torch  # here: hashing files must not cost torch's import
    digest = hashlib.sha256()
    for name, tensor in named:
        values = tensor.detach().to("cpu").contiguous().view(-1)
        digest.update(f"{name}|{values.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
