"""Backbone weights: ImageNet from torchvision (cache or a quick download), a local file, or seeded random.

Offline must never hang: before any download we probe the host with a short timeout. Setting
``ADNLIB_OFFLINE=1`` skips the probe altogether (tests and CI do).
"""
from __future__ import annotations

import functools
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import AlexNet_Weights, alexnet

from .errors import WeightsError

IMAGENET = AlexNet_Weights.IMAGENET1K_V1
PROBE_TIMEOUT_S = 3.0


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (or would keep) the ImageNet AlexNet file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(IMAGENET.url).path).name


def _can_reach(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    if os.environ.get("ADNLIB_OFFLINE", "") not in ("", "0"):
        return False
    return _probe(urlparse(url).hostname, timeout)


@functools.lru_cache(maxsize=None)
def _probe(host: str, timeout: float) -> bool:
    """One connection attempt per host and process: a notebook building many models waits once, not each time."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def imagenet_available() -> bool:
    """True when the ImageNet weights are cached or their host answers within a few seconds."""
    return imagenet_cache_path().exists() or _can_reach(IMAGENET.url)


def _offline_message() -> str:
    return (f"ImageNet AlexNet weights are not cached at {imagenet_cache_path()} and cannot be downloaded "
            f"(no network). Copy {imagenet_cache_path().name} there, pass a local file with --weights PATH, "
            "or use --weights none for random weights")


def _imagenet_state() -> dict:
    if not imagenet_available():
        raise WeightsError(_offline_message())
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a stalled transfer must not hang forever
    try:
        return IMAGENET.get_state_dict(progress=True)
    except Exception as exc:  # network or file errors alike: one clear message
        raise WeightsError(f"{_offline_message()} ({exc})") from exc
    finally:
        socket.setdefaulttimeout(old)


def _file_state(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    # Accept a full AlexNet state dict or the features part alone.
    features = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    if "0.weight" not in features:
        raise WeightsError(f"{path} does not look like AlexNet weights (no 'features.0.weight')")
    return features


def random_alexnet_features(seed: int = 0) -> torch.nn.Sequential:
    """AlexNet `features` with seeded He-normal weights and zero biases.

    PyTorch's default init shrinks activations layer by layer (AlexNet's random features come out ~0.01); He
    init keeps their scale, so that random-weight runs (tests, offline demos) still give usable features.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = alexnet(weights=None).features
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
    return features


def load_alexnet_features(weights: str = "auto", seed: int = 0) -> tuple[torch.nn.Sequential, str]:
    """AlexNet's `features` and a label of what was loaded: 'imagenet', 'random' or the file path.

    weights: 'imagenet' (fail fast offline), 'none' (random, seeded), 'auto' (ImageNet when cached or
    reachable, else random with a warning) or a path to a .pth file.
    """
    features = random_alexnet_features(seed)
    if weights == "none":
        return features, "random"
    if weights == "auto":
        if not imagenet_available():
            warnings.warn("ImageNet weights unavailable offline: using RANDOM backbone weights. "
                          "AUROCs will be far below the paper's. " + _offline_message(), stacklevel=2)
            return features, "random"
        weights = "imagenet"
    if weights == "imagenet":
        state = {k.removeprefix("features."): v for k, v in _imagenet_state().items() if k.startswith("features.")}
        label = "imagenet"
    else:
        state, label = _file_state(Path(weights)), str(weights)
    try:
        features.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"weights from {label} do not fit AlexNet: {exc}") from exc
    return features, label
