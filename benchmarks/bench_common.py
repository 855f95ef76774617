"""What every benchmark section shares: the official code's way (the reference, kept only here), the library's
training step as `adnlib.run.train` runs it, and the measuring tools (interleaved runs, RSS, tables).

Weights are random (ADNLIB_OFFLINE=1, weights="none"): speed does not depend on their values.
"""
from __future__ import annotations

import copy
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ADNLIB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from adnlib.data.datasets import AnomalyDataset  # noqa: E402
from adnlib.model.flow import nll_loss  # noqa: E402
from adnlib.model.network import AttentDifferNet  # noqa: E402
from adnlib.model.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from adnlib.run.train import train_step, training_batch  # noqa: E402  (the step `adnlib.run.train` runs)

PAGE = os.sysconf("SC_PAGE_SIZE")


# --- the official code's way (reference only) --------------------------------------------------------------------
class ReferenceDifferNet(torch.nn.Module):
    """DifferNet as the official code runs it: AlexNet features with requires_grad=True, contiguous tensors."""

    def __init__(self, features: torch.nn.Sequential, flow: torch.nn.Module, img_size: int, n_scales: int):
        super().__init__()
        self.features = copy.deepcopy(features).to(memory_format=torch.contiguous_format)
        for p in self.features.parameters():
            p.requires_grad_(True)  # the official code never freezes them; only the flow is optimised
        self.flow, self.img_size, self.n_scales = flow, img_size, n_scales

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for s in range(self.n_scales):  # DifferNet's model.forward
            xs = F.interpolate(x, size=self.img_size // 2 ** s) if s > 0 else x
            feats.append(torch.mean(self.features(xs), dim=(2, 3)))
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor):
        return self.flow(self.embed(x))


def official_transform(degrees: float = 180.0) -> T.Compose:
    """The official training/test transform after Resize: RandomRotation (PIL, nearest, black), ToTensor, Normalize."""
    return T.Compose([T.RandomRotation(degrees), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def reference_optimizer(flow: torch.nn.Module, config) -> torch.optim.Adam:
    return torch.optim.Adam(flow.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                            weight_decay=config.weight_decay)  # torch's default implementation, as the official code


def reference_train_step(ref: ReferenceDifferNet, optimizer, pil_images: list, n_rotations: int, transform) -> float:
    x = torch.stack([transform(img) for img in pil_images for _ in range(n_rotations)])
    z, log_jac_det = ref(x)
    loss = nll_loss(z, log_jac_det)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def reference_scores(ref: ReferenceDifferNet, pil_images: list, n_rotations: int, transform) -> torch.Tensor:
    with torch.no_grad():
        x = torch.stack([transform(img) for img in pil_images for _ in range(n_rotations)])
        z, _ = ref(x)
        return (z.reshape(len(pil_images), n_rotations, -1) ** 2).mean(dim=(1, 2))


# --- the library's way: exactly what adnlib.run.train's epoch loop runs per step ------------------------------------
def adnlib_train_step(model: AttentDifferNet, optimizer, images: torch.Tensor, n_rotations: int,
                      generator: torch.Generator) -> float:
    """`adnlib.run.train.training_batch` (colour jitter, off in the paper config; random angles) and
    `adnlib.run.train.train_step` (prepare, embed, flow, nll_loss, backward, optimizer step); .item() as a caller."""
    config = model.config.replace(n_train_rotations=n_rotations)
    return train_step(model, optimizer, *training_batch(images, config, generator)).item()


def cached_train_step(model: AttentDifferNet, optimizer, cache, indices: torch.Tensor, n_rotations: int,
                      generator: torch.Generator) -> float:
    """The epoch loop's step with `feature_cache`: `train_step` on embeddings drawn from the cache."""
    return train_step(model, optimizer, embeddings=cache.sample(indices, n_rotations, generator)).item()


# --- measuring -----------------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that over from the forking
    parent across exec, so a child of a 5 GB benchmark process would report at least 5 GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Highest resident set size seen while the block runs (sampled every few ms), and the RSS before it."""

    def __init__(self, interval: float = 0.003):
        self.interval, self.peak, self.before = interval, 0, 0
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.before = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.before


def timed(fn):
    with PeakRSS() as mem:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, mem


def interleaved(paths: dict, repeats: int) -> dict:
    """Run each path once per repetition, order reversed every other repetition; -> {name: [(seconds, mem)]}."""
    names = list(paths)
    results = {name: [] for name in names}
    for rep in range(repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            results[name].append(timed(paths[name]))
    return results


def summarise(results: dict, work: dict, reference: str) -> list[dict]:
    """Median images/s per path; ratio = median over repetitions of (reference seconds / path seconds)."""
    rows = []
    ref_seconds = [s for s, _ in results[reference]]
    for name, runs in results.items():
        seconds = [s for s, _ in runs]
        ratios = [r / s for r, s in zip(ref_seconds, seconds)]
        rows.append({"path": name, "images_per_s": work[name] / statistics.median(seconds),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                     "seconds": statistics.median(seconds),
                     "peak_delta_mb": max(m.delta for _, m in runs) / 2 ** 20,
                     "peak_rss_gb": max(m.peak for _, m in runs) / 2 ** 30})
    return rows


def print_table(title: str, rows: list[dict], unit: str = "images/s") -> None:
    print(f"\n### {title}\n")
    print(f"| path | {unit} | ratio to reference (min) | s per run | step peak ΔRSS MB | process peak RSS GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['images_per_s']:.2f} | {r['ratio']:.2f}x ({r['ratio_min']:.2f}) | "
              f"{r['seconds']:.2f} | {r['peak_delta_mb']:.0f} | {r['peak_rss_gb']:.2f} |")
    sys.stdout.flush()


def gemm_gflops(seconds: float = 0.4, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def conv_gflop_per_image(model: AttentDifferNet) -> float:
    """Multiply-adds x 2 of the backbone's convolutions over all scales for one image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_channels // module.groups * module.kernel_size[0] * \
            module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.embed(model.prepare(torch.zeros(1, 3, model.config.img_size, model.config.img_size)))
    for h in handles:
        h.remove()
    return total / 1e9


def load_images(root: Path, n: int, img_size: int, category: str = "disc"):
    """The first n training images of a demo category: (dataset, uint8 tensor (n,3,S,S), the resized PIL images)."""
    data = AnomalyDataset(root, category, "train", img_size, cache=True)
    images = torch.stack([data[i][0] for i in range(n)])
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    return data, images, pil
