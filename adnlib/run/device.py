"""Pick the compute device (cuda, then mps, then cpu, or an explicit choice); check and record the precision."""
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


def check_precision(amp: bool, device: torch.device) -> None:
    """Refuse --amp (bfloat16 autocast) where it cannot run as recorded: on MPS, or on a CUDA GPU without bf16."""
    if not amp:
        return
    if device.type == "mps":
        raise ConfigError("--amp (bfloat16 autocast) is not supported on Apple MPS in adnlib; run in float32 "
                          "(drop --amp) or use a CUDA GPU")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp needs bfloat16, which {torch.cuda.get_device_name(device)} does not support; "
                          "run in float32 (drop --amp)")


def precision_record(amp: bool, device: torch.device) -> dict:
    """What decides a run's arithmetic, for metrics.json: precision, TF32 switches, device and its name."""
    record = {"precision": "bfloat16 autocast (backbone, attention), float32 flow" if amp else "float32",
              "device": str(device),
              "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        record.update(device_name=torch.cuda.get_device_name(device),
                      tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                      tf32_cudnn=bool(torch.backends.cudnn.allow_tf32))
    return record
