"""Checkpoints and result files: atomic writes, version stamps, safe (`weights_only`) loading."""
from __future__ import annotations

import json
import os
import platform
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import Config
from .errors import CheckpointError

FORMAT = "adnlib-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions that decide the numbers: recorded in every checkpoint and metrics file."""
    import FrEIA
    import torchvision

    from . import __version__
    return {"adnlib": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "FrEIA": getattr(FrEIA, "__version__", "0.2"), "numpy": np.__version__,
            "python": platform.python_version()}


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) then rename onto `path`: a kill mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
    return atomic_write(path, write)


def write_csv(path: str | Path, frame) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def rng_state() -> dict[str, Any]:
    """Global RNG states in a form `weights_only` loading accepts (tensors, ints, tuples)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                      has_gauss, gauss),
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, *, model, kind: str, extra: dict[str, Any] | None = None) -> Path:
    """Save model state + config + versions (+ extra: optimizer, epoch, history, rng...) atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
               "config": model.config.to_dict(), "backbone_weights": model.backbone_weights,
               "versions": versions(), "model_state": model.state_dict(), **(extra or {})}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True` (refuses pickled code); CheckpointError if not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"{path} is not a readable adnlib checkpoint: {why[:300]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an adnlib checkpoint (no '{FORMAT}' header)")
    return ckpt


def config_differences(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs, as {name: (a, b)}."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db.get(k)) for k in da if k not in ignore and da[k] != db.get(k)}


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu", expect: Config | None = None):
    """Rebuild an AttentDifferNet from a checkpoint (no network needed: backbone weights are inside).

    expect: a config the checkpoint must match in model-defining fields; mismatches are explained.
    """
    from .model import AttentDifferNet
    ckpt = load_checkpoint(path)
    config = Config.from_dict(ckpt["config"])
    if expect is not None:
        model_fields = ("variant", "img_size", "n_scales", "n_coupling_blocks", "fc_hidden", "clamp",
                        "block3_before_final_pool", "se_reduction", "cbam_reduction", "cbam_kernel_size")
        diff = {k: v for k, v in config_differences(expect, config).items() if k in model_fields}
        if diff:
            text = "; ".join(f"{k}: requested {x!r}, checkpoint has {y!r}" for k, (x, y) in diff.items())
            raise CheckpointError(f"{path} was trained with another model ({text})")
    from .weights import load_alexnet_features
    features, _ = load_alexnet_features("none", config.seed)
    model = AttentDifferNet(config, features=features, backbone_weights=ckpt.get("backbone_weights"))
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit its own config ({str(exc).splitlines()[0]})") from exc
    model.checkpoint_info = {k: ckpt.get(k) for k in ("kind", "epoch", "category", "auroc", "versions")}
    return model.to(device).eval()
