"""Pick the compute device: cuda, then mps, then cpu; or validate an explicit choice."""
from __future__ import annotations

import torch

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the best available device; 'cpu'|'cuda'|'mps'|'cuda:N' -> that device if it exists."""
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use --device auto or cpu)")
    if kind == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but Apple MPS is not available (use --device auto or cpu)")
    return torch.device(name)
