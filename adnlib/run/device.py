"""Pick the compute device: cuda, then mps, then cpu; or validate an explicit choice."""
from __future__ import annotations

import re

import torch

from adnlib.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_NAME = re.compile(r"(auto|cpu|cuda|mps)(?::(\d+))?")


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the best available device; 'cpu'|'cuda'|'mps'|'cuda:N' -> that device if it exists."""
    match = _DEVICE_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None or (match.group(1) == "auto" and match.group(2) is not None):
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use --device auto or cpu)")
    if kind == "cuda" and index is not None and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) are "
                          "available (numbered from 0)")
    if kind == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but Apple MPS is not available (use --device auto or cpu)")
    return torch.device(name)
