"""Checkpoints: version stamps, safe (`weights_only`) loading, verification against the results they belong to.

A checkpoint may hold no weights of its own but name the file beside it that holds them (`save_pointer`): a run
whose best evaluation is its last one writes best.pt that way instead of a second copy of the same weights, and
`load_checkpoint` / `model_from_checkpoint` read such a file like any other.
"""
from __future__ import annotations

import json
import platform
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adnlib.config import Config
from adnlib.errors import CheckpointError

# write_csv / write_json stay importable from here (the notebooks use them); they live in adnlib.io
from adnlib.io import NOT_A_CHECKPOINT, atomic_write, file_sha256, why_unloadable, write_csv, write_json  # noqa: F401

FORMAT = "adnlib-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_IN = "weights_in"  # a pointer checkpoint's entry: the name of the file beside it that holds its weights


def versions() -> dict[str, str]:
    """Versions that decide the numbers: recorded in every checkpoint and metrics file."""
    from importlib.metadata import version

    import FrEIA

    from adnlib.version import __version__
    # torchvision's version from its metadata: importing it costs seconds (torch._dynamo) and adnlib does not use it
    return {"adnlib": __version__, "torch": str(torch.__version__), "torchvision": version("torchvision"),
            "FrEIA": getattr(FrEIA, "__version__", "0.2"), "numpy": np.__version__,
            "python": platform.python_version()}


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


def _header(model, kind: str) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "config": model.config.to_dict(),
            "backbone_weights": model.backbone_weights, "backbone": model.backbone_record(), "versions": versions()}


def save_checkpoint(path: str | Path, *, model, kind: str, extra: dict[str, Any] | None = None) -> Path:
    """Save model state + config + versions (+ extra: optimizer, epoch, history...) atomically."""
    payload = {**_header(model, kind), "model_state": model.state_dict(), **(extra or {})}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def save_pointer(path: str | Path, *, model, kind: str, weights_in: str | Path,
                 extra: dict[str, Any] | None = None) -> Path:
    """Save a checkpoint WITHOUT weights that names the file beside it holding them (a few kB, not a copy).

    `extra` must hold the "epoch" of those weights: loading checks that `weights_in` still holds that epoch
    (a later save replaces it). Used for best.pt when the best evaluation is the last one.
    """
    extra = dict(extra or {})
    if "epoch" not in extra:
        raise ValueError("a pointer checkpoint needs the epoch of the weights it names")
    payload = {**_header(model, kind), WEIGHTS_IN: Path(weights_in).name, **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


REQUIRED_KEYS = ("config", "model_state", "versions")


_ZIP_MAGIC = b"PK\x03\x04"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _ZIP_MAGIC


def _read(path: Path, map_location, mmap: bool) -> dict[str, Any]:
    """torch.load(weights_only=True) of one file, with its header checked; CheckpointError if not a checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # mmap: tensors are read from disk only when used (model_from_checkpoint never reads an optimizer
        # state); only the zip format maps, so other files take the plain path and its clear errors
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and _is_zip(path))
    except NOT_A_CHECKPOINT as exc:
        raise CheckpointError(f"cannot load {path}: {why_unloadable(exc)}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an adnlib checkpoint (a PyTorch file without the '{FORMAT}' header; "
                              "AlexNet weight files go to --weights instead)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer adnlib (checkpoint format "
                              f"{ckpt['format_version']}, this version reads {FORMAT_VERSION}): upgrade adnlib")
    return ckpt


def _follow(path: Path, ckpt: dict[str, Any], map_location, mmap: bool, verify: bool) -> dict[str, Any]:
    """A pointer checkpoint (save_pointer) with the weights of the file it names, checked to be the same epoch
    (and, with verify, to be the file the metrics.json beside them records)."""
    target = path.parent / Path(str(ckpt[WEIGHTS_IN])).name  # always a file beside it
    if not target.is_file():
        raise CheckpointError(f"{path} holds no weights: they are those of {target.name} beside it (epoch "
                              f"{ckpt.get('epoch')}), which does not exist")
    if verify:
        verify_weights(target, required=True)
    weights = _read(target, map_location, mmap)
    if weights.get("epoch") != ckpt.get("epoch") or "model_state" not in weights:
        raise CheckpointError(f"{path} holds no weights: they are those of {target.name} at epoch "
                              f"{ckpt.get('epoch')}, but {target.name} now holds epoch {weights.get('epoch')} "
                              "(replaced by a later or another run)")
    return {**ckpt, "model_state": weights["model_state"],
            "backbone_weights": ckpt.get("backbone_weights", weights.get("backbone_weights"))}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False,
                    verify: bool | str = True) -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True` (refuses pickled code); CheckpointError if not one.

    verify (default True): the file must be the one whose results the metrics.json beside it records (its sha256,
    `verify_weights`), and a pointer's target too, so that no result is read with weights it did not come from; a
    file with no such record is refused. verify="<64 hex>": the file must have that sha256 instead (a checkpoint
    fetched by a manifest). verify=False: a bare checkpoint, loaded as it is (the documented opt-out; the CLI's
    --unverified).
    A pointer checkpoint (best.pt of a run whose best epoch is its last) comes back with the weights of the file
    it names (`model_state`) and keeps its `weights_in` entry. mmap=True reads tensors lazily: what is never used
    (an optimizer state, for instance) is never read from disk.
    """
    path = Path(path)
    ckpt = _read(path, map_location, mmap)  # first: a file that is no checkpoint at all is told as such
    if isinstance(verify, str):
        _check_digest(path, verify)
    elif verify:
        verify_weights(path, required=True)
    if WEIGHTS_IN in ckpt:
        ckpt = _follow(path, ckpt, map_location, mmap, verify is True)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete adnlib checkpoint (missing {', '.join(missing)})")
    return ckpt


def _check_digest(path: Path, expected: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    digest = file_sha256(path)
    if digest != expected.strip().lower():
        raise CheckpointError(f"{path} has sha256 {digest[:12]}, not the {expected[:12]} it was checked against "
                              "(replaced or damaged since it was fetched?)")


MODEL_FIELDS = Config.architecture_fields()  # marked in adnlib.config (`architecture`)


def check_expected(config: Config, expect: Config | dict[str, Any], source: str | Path = "checkpoint") -> None:
    """CheckpointError explaining every model-defining field where `config` differs from `expect`.

    expect: a Config (all model fields are compared) or a dict {field: value} (only those fields).
    """
    wanted = {k: v for k, v in expect.to_dict().items() if k in MODEL_FIELDS} if isinstance(expect, Config) \
        else dict(expect)
    unknown = [k for k in wanted if k not in MODEL_FIELDS]
    if unknown:
        raise ValueError(f"not model fields: {', '.join(unknown)}; choose from {', '.join(MODEL_FIELDS)}")
    have = config.to_dict()
    diff = {k: (v, have[k]) for k, v in wanted.items() if have[k] != v}
    if diff:
        text = "; ".join(f"{k}: requested {x!r}, checkpoint has {y!r}" for k, (x, y) in diff.items())
        raise CheckpointError(f"{source} was trained with another model ({text})")


def _warn_on_version_change(path: Path, saved: dict[str, str]) -> None:
    now = versions()
    changed = [f"{k} {saved[k]} -> {now[k]}" for k in ("adnlib", "torch", "torchvision", "FrEIA")
               if k in saved and saved[k] != now[k]]
    if changed:
        warnings.warn(f"{path} was written with other versions ({', '.join(changed)}): scores may differ slightly "
                      "from those recorded with it", stacklevel=3)


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                          expect: Config | dict[str, Any] | None = None, *, verify: bool | str = True):
    """Rebuild an AttentDifferNet from a checkpoint (no network needed: backbone weights are inside).

    expect: a Config, or a dict of some model fields (e.g. {"variant": "se"}), that the checkpoint must match;
    mismatches raise CheckpointError naming each field. verify: as in `load_checkpoint` (default: the file must
    be the one the metrics.json beside it records). `model.checkpoint_info` holds kind, epoch, category, auroc.
    """
    from adnlib.model.network import AttentDifferNet
    path = Path(path)
    ckpt = load_checkpoint(path, mmap=True, verify=verify)  # the weights only: an optimizer state is never read
    config = Config.from_dict(ckpt["config"])
    if expect is not None:
        check_expected(config, expect, path)
    _warn_on_version_change(path, ckpt.get("versions") or {})
    from adnlib.model.weights import load_alexnet_features
    features, _ = load_alexnet_features("none", config.seed)
    model = AttentDifferNet(config, features=features, backbone_weights=ckpt.get("backbone_weights"))
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit its own config ({str(exc).splitlines()[0]})") from exc
    model.checkpoint_info = {k: ckpt.get(k) for k in ("kind", "epoch", "category", "auroc", "versions", WEIGHTS_IN)}
    return model.to(device).eval()


# --- which weights a result belongs to ------------------------------------------------------------------------
def weights_record(folder: str | Path, epochs: dict[str, int | None], steps_per_epoch: int) -> dict[str, dict]:
    """metrics.json's `weights`: for each checkpoint file of a run ({name: epoch}) that exists, the epoch, the
    optimisation step and the sha256 of the file, so that a later reader can tell whether the file is still the
    one these results came from (`verify_weights`). Sizes are left out: they change with the torch version."""
    folder = Path(folder)
    return {name: {"epoch": epoch, "step": None if epoch is None else epoch * steps_per_epoch,
                   "sha256": file_sha256(folder / name)}
            for name, epoch in epochs.items() if (folder / name).is_file()}


def recorded_weights(path: str | Path) -> dict | None:
    """What the metrics.json beside `path` records about it (None: no metrics.json, or one without a record of
    this file: an evaluation's, or an older adnlib's)."""
    path = Path(path)
    try:
        record = json.loads((path.parent / "metrics.json").read_text())["weights"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def verify_weights(path: str | Path, *, required: bool = False) -> None:
    """CheckpointError (one line) if `path` is missing or is not the file whose results the metrics.json beside it
    holds (another sha256: replaced by another run, or by hand, after those results were written). A file with no
    such record passes unless `required` (then: refused, with the opt-out named)."""
    path = Path(path)
    record = recorded_weights(path)
    if record is None:
        if required:
            raise CheckpointError(f"{path} cannot be checked: no metrics.json beside it records its sha256 (a bare or "
                                  "moved checkpoint). Keep it in its run folder, or load it unchecked with "
                                  "--unverified (verify=False)")
        return
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, but the metrics.json beside it holds the results of its weights "
                              f"(epoch {record.get('epoch')}): without them those results cannot be checked or "
                              "reused")
    digest = file_sha256(path)
    if digest != record["sha256"]:
        raise CheckpointError(f"{path} is not the checkpoint the metrics.json beside it describes (epoch "
                              f"{record.get('epoch')}, sha256 {record['sha256'][:12]}; the file has sha256 "
                              f"{digest[:12]}): it was replaced after those results were written (another run "
                              f"writing into {path.parent}?)")
