"""Backbone weights: ImageNet from torchvision (cache or a quick download), a local file, or seeded random.

Offline must never hang: before any download we probe the host (an HTTP HEAD request, at most
``PROBE_TIMEOUT_S`` seconds in all, once per process) and the download itself (adnlib.io.download, the one
downloader) has a per-read timeout and an overall deadline.
Setting ``ADNLIB_OFFLINE=1`` skips the probe altogether (tests and CI do).
"""
from __future__ import annotations

import functools
import http.client
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from adnlib.errors import WeightsError
from adnlib.model.backbone import advance_like_alexnet_classifier, alexnet_features

# torchvision's AlexNet_Weights.IMAGENET1K_V1 (its file name carries the SHA-256 prefix the download must match);
# written out so that no torchvision import is needed. A module variable: tests move it.
IMAGENET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
PROBE_TIMEOUT_S = 3.0  # the whole reachability probe, DNS included
DOWNLOAD_TIMEOUT_S = 30.0  # per connection attempt and per read: a stalled transfer fails instead of hanging
DOWNLOAD_DEADLINE_S = 1800.0  # the whole 233 MB file (at 130 kB/s): a trickling server fails too


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (or would keep) the ImageNet AlexNet file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(IMAGENET_URL).path).name


def _can_reach(url: str, timeout: float | None = None) -> bool:
    from adnlib.io import offline
    if offline():
        return False
    return _probe(url, PROBE_TIMEOUT_S if timeout is None else float(timeout))


def _head(url: str, timeout: float) -> bool:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "adnlib"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered (a 403 or 405 to HEAD still means the host is there)
    except (OSError, ValueError, http.client.HTTPException):  # refused, unreachable, timed out, garbled
        return False


@functools.cache
def _probe(url: str, timeout: float) -> bool:
    """Does `url` answer an HTTP HEAD request within `timeout` seconds in all? False on any failure.

    Once per URL and process (a notebook building many models waits once; tests call ``_probe.cache_clear()``).
    urllib's timeout bounds the connection and each read but not the name lookup, so the request runs in a
    daemon thread and the answer is whatever it has found when the time is up.
    """
    answer: list[bool] = []
    worker = threading.Thread(target=lambda: answer.append(_head(url, timeout)), name="adnlib-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answer and answer[0])


def imagenet_available() -> bool:
    """True when the ImageNet weights are cached or their host answers within a few seconds."""
    return imagenet_cache_path().exists() or _can_reach(IMAGENET_URL)


def _offline_message() -> str:
    return (f"ImageNet AlexNet weights are not cached at {imagenet_cache_path()} and cannot be downloaded "
            f"(no network). Copy {imagenet_cache_path().name} there, pass a local file with --weights PATH, "
            "or use --weights none for random weights")


def _download(url: str, target: Path, timeout: float) -> None:
    """Download url to target with adnlib's one downloader (adnlib.io.download: a temporary file renamed
    into place when complete, a per-read timeout and an overall deadline). When the file name carries a hash prefix
    (torch hub's ``name-<sha256 prefix>.pth``), the download must match it. WeightsError when it fails."""
    from adnlib.io import download
    match = torch.hub.HASH_REGEX.search(target.name)
    download(url, target, prefix=match.group(1) if match else "", timeout=timeout, deadline=DOWNLOAD_DEADLINE_S,
             what="the ImageNet AlexNet weights", error=WeightsError)


def _imagenet_state() -> dict:
    path = imagenet_cache_path()
    if not path.exists():
        if not imagenet_available():
            raise WeightsError(_offline_message())
        try:
            _download(IMAGENET_URL, path, DOWNLOAD_TIMEOUT_S)
        except WeightsError as exc:  # network or disk: one clear message
            raise WeightsError(f"{_offline_message()} ({exc})") from exc
    from adnlib.io import NOT_A_CHECKPOINT, why_unloadable
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (*NOT_A_CHECKPOINT, OSError) as exc:  # as in _file_state
        raise WeightsError(f"cannot read the ImageNet AlexNet weights in {path} ({why_unloadable(exc)}); delete the "
                           "file to download it again, or use --weights PATH or --weights none") from exc


def _file_state(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    from adnlib.io import NOT_A_CHECKPOINT, why_unloadable
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (*NOT_A_CHECKPOINT, OSError) as exc:  # the file's fault: one line, never torch's advice
        raise WeightsError(f"cannot read weights file {path}: {why_unloadable(exc)}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    # Accept a full AlexNet state dict or the features part alone.
    features = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    if "0.weight" not in features:
        raise WeightsError(f"{path} does not look like AlexNet weights (no 'features.0.weight')")
    return features


def check_weights(weights: str) -> None:
    """WeightsError now for a weights file that cannot be used (missing, unreadable, not AlexNet's), so that a grid
    refuses it before any cell trains; 'auto', 'imagenet' and 'none' are resolved when a model is built."""
    if weights not in ("auto", "imagenet", "none"):
        _file_state(Path(weights))


def random_alexnet_features(seed: int = 0) -> torch.nn.Sequential:
    """AlexNet `features` with seeded He-normal weights and zero biases.

    PyTorch's default init shrinks activations layer by layer (AlexNet's random features come out ~0.01); He
    init keeps their scale, so that random-weight runs (tests, offline demos) still give usable features. The
    caller's random generators are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        features = alexnet_features()  # default init, replaced below: drawn from a generator fork_rng restores
    if next(features.parameters()).is_meta:  # built for its shapes only (a memory estimate): no values to set
        return features
    features.load_state_dict(_random_state(seed))
    return features


@functools.lru_cache(maxsize=8)
def _random_state(seed: int) -> dict[str, torch.Tensor]:
    """The weights of random_alexnet_features(seed), drawn once per seed and process (drawing them costs a third
    of a second: the classifier's draws are made too, see advance_like_alexnet_classifier)."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):  # real CPU tensors even inside a meta context
        torch.default_generator.manual_seed(seed)  # the CPU generator only (fork_rng restores it)
        features = alexnet_features()
        advance_like_alexnet_classifier()  # the draws of alexnet(weights=None): the same features as before
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
    return {k: v.detach().clone() for k, v in features.state_dict().items()}


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
                          "AUROCs are not comparable with the paper's. " + _offline_message(), stacklevel=2)
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


def backbone_record(features: torch.nn.Sequential, label: str) -> dict:
    """What a model's AlexNet features are, as recorded with its results: {"source": "imagenet" | "random" | "file",
    "file": the weights file or None, "sha256": hash of the features' weights (adnlib.io.tensors_sha256),
    "id": what runs of different seeds must share to be compared ("random", or "sha256:<hash>": random features
    are drawn per seed, loaded ones are the same for every seed)}."""
    from adnlib.io import tensors_sha256
    digest = tensors_sha256(features.state_dict().items())
    source = label if label in ("imagenet", "random", "unknown") else "file"
    return {"source": source, "file": None if source != "file" else str(label), "sha256": digest,
            "id": "random" if source == "random" else f"sha256:{digest}"}


@functools.lru_cache(maxsize=64)
def _resolved(weights: str, seed: int, stamp: tuple) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random fallback's warning comes when the model is built
        return backbone_record(*load_alexnet_features(weights, seed))


def resolve_backbone(weights: str, seed: int) -> dict:
    """The backbone_record of the features a model with these weights and this random-backbone seed would get now:
    'auto' resolved (ImageNet when cached or reachable, else random), so that reuse is decided on what a run would
    use, not on what it was asked. Cached per process (a file's record again when the file changes)."""
    stamp: tuple = ()
    path = Path(weights) if weights not in ("auto", "imagenet", "none") else imagenet_cache_path()
    if path.is_file():
        stat = path.stat()
        stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    if weights == "auto":
        stamp += (imagenet_available(),)
    return dict(_resolved(weights, seed, stamp))
