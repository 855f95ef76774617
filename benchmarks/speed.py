"""Side-by-side speed benchmark: adnlib's training and scoring paths against the official DifferNet code's way.

    ADNLIB_OFFLINE=1 python benchmarks/speed.py            # full run, paper config at 448 px (~8-12 min)
    ADNLIB_OFFLINE=1 python benchmarks/speed.py --quick    # ~2 minutes, for development
    ADNLIB_OFFLINE=1 python benchmarks/speed.py --sections auroc   # cache vs no cache AUROC, demo preset (~15 min)

Every figure that matters is a RATIO of runs made in this one process, interleaved (A B C ... then reversed, per
repetition), so that the noise of a shared machine cancels; absolute images/s are printed for orientation only.
All paths run with the same number of torch threads (--threads, default 1; see its help).

Paths
- reference: the official code's way, kept here only. Per-image PIL ``RandomRotation(180)`` on the resized PIL
  image, ToTensor, Normalize; AlexNet features whose weights require gradients (so every backward pass computes
  conv weight gradients it never uses), default (contiguous) memory format; flow + torch's default Adam.
- adnlib: the library's training step (what `adnlib.train` runs): `model.prepare(images, angles)` (batched
  PIL-exact rotations gathered straight into channels_last), `model.embed` with frozen convolutions (no graph
  for DifferNet; for SE/CBAM gradients only from the first attention block on, never for conv weights),
  the flow, `nll_loss`, `model.make_optimizer()` (fused Adam).
- scoring: reference = per-image PIL rotations + contiguous backbone under no_grad; adnlib = `model.score`.
- feature cache: `adnlib.train.FeatureCache` (K rotations per image embedded once), epochs sample from it.
- memory: peak RSS of a paper-config training step (24 images x 4 rotations) in a fresh process, and RSS after
  each of several steps (growth over steps = leak).

Weights are random (ADNLIB_OFFLINE=1, weights="none"): speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("ADNLIB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from adnlib.config import preset  # noqa: E402
from adnlib.datasets import AnomalyDataset  # noqa: E402
from adnlib.demo import make_demo_dataset  # noqa: E402
from adnlib.flow import nll_loss  # noqa: E402
from adnlib.model import AttentDifferNet  # noqa: E402
from adnlib.transforms import IMAGENET_MEAN, IMAGENET_STD, random_angles, to_unit  # noqa: E402

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


# --- the library's way ---------------------------------------------------------------------------------------------
def fast_train_step(model: AttentDifferNet, optimizer, images: torch.Tensor, n_rotations: int,
                    generator: torch.Generator) -> float:
    """The body of adnlib.train's step loop (colour jitter is off in the paper config)."""
    x = to_unit(images)
    angles = random_angles(len(images) * n_rotations, model.config.rotation_degrees, generator)
    y = model.embed(model.prepare(x, angles.reshape(len(images), n_rotations)))
    z, log_jac_det = model.flow_forward(y)
    loss = nll_loss(z, log_jac_det)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def cached_train_step(model: AttentDifferNet, optimizer, cache, indices: torch.Tensor, n_rotations: int,
                      generator: torch.Generator) -> float:
    y = cache.sample(indices, n_rotations, generator)
    z, log_jac_det = model.flow_forward(y)
    loss = nll_loss(z, log_jac_det)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


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


# --- sections ------------------------------------------------------------------------------------------------------
def load_images(root: Path, n: int, img_size: int, category: str = "disc"):
    data = AnomalyDataset(root, category, "train", img_size, cache=True)
    images = torch.stack([data[i][0] for i in range(n)])
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]  # the resized PIL images
    return data, images, pil


def section_train(args, root, out: dict) -> None:
    config = preset("paper", weights="none", device="cpu", img_size=args.img_size)
    b, n = args.images, args.rotations
    _, images, pil = load_images(root, b, args.img_size)
    torch.manual_seed(0)
    models = {"differnet": AttentDifferNet(config)}
    flow = models["differnet"].flow
    for variant in args.variants:
        m = AttentDifferNet(config.replace(variant=variant))
        m.flow = flow  # one shared flow keeps memory down; its values do not matter for speed
        models[variant] = m
    for m in models.values():
        m.train()
    ref = ReferenceDifferNet(models["differnet"].backbone.features, flow, args.img_size, config.n_scales).train()
    ref_opt = reference_optimizer(flow, config)
    opt = models["differnet"].make_optimizer()  # the library's optimizer (fused Adam) ...
    for variant in args.variants:  # ... extended by the attention parameters (skipped while their grads are None)
        opt.add_param_group({"params": [p for p in models[variant].backbone.attention.parameters()]})
    transform = official_transform(config.rotation_degrees)
    gen = torch.Generator().manual_seed(1)
    paths = {"reference (official way)": lambda: reference_train_step(ref, ref_opt, pil, n, transform),
             "adnlib DifferNet": lambda: fast_train_step(models["differnet"], opt, images, n, gen)}
    for variant in args.variants:
        paths[f"adnlib AttentDifferNet {variant.upper()}"] = (
            lambda v=variant: fast_train_step(models[v], opt, images, n, gen))
    # Warm-up on one image per path: optimizer state, weight gradients, oneDNN kernels (a full reference step at
    # the paper batch takes half a minute).
    reference_train_step(ref, ref_opt, pil[:1], n, transform)
    for variant in models:
        fast_train_step(models[variant], opt, images[:1], n, gen)
    results = interleaved(paths, args.repeats)
    rows = summarise(results, {k: b * n for k in paths}, "reference (official way)")
    print_table(f"Training step, {args.img_size} px, {b} images x {n} rotations = {b * n} tensors per step "
                f"(paper batch: 24 x 4), {args.repeats} interleaved repetitions, {args.threads} thread(s)", rows,
                "transformed images/s")
    out["train"] = rows
    del opt, ref_opt


def section_score(args, root, out: dict) -> None:
    config = preset("paper", weights="none", device="cpu", img_size=args.img_size)
    n = args.score_rotations
    _, images, pil = load_images(root, args.score_images, args.img_size)
    model = AttentDifferNet(config).eval()
    ref = ReferenceDifferNet(model.backbone.features, model.flow, args.img_size, config.n_scales).eval()
    transform = official_transform(config.rotation_degrees)
    gen = torch.Generator().manual_seed(2)
    batches = [slice(i, i + args.score_batch) for i in range(0, len(images), args.score_batch)]

    def fast():
        for s in batches:
            model.score(images[s], angles=random_angles(len(images[s]) * n, 180.0, gen).reshape(-1, n))

    def reference():
        for s in batches:
            reference_scores(ref, pil[s], n, transform)

    probes: list[float] = []  # the machine's matrix-multiply rate, measured between the runs it bounds
    paths = {"reference (official way)": reference, "adnlib model.score": fast,
             "GEMM peak probe": lambda: probes.append(gemm_gflops())}
    for fn in paths.values():
        fn()
    results = interleaved(paths, args.repeats)
    gflops = statistics.median(probes[1:])
    del results["GEMM peak probe"]
    rows = summarise(results, {k: len(images) * n for k in results}, "reference (official way)")
    per_image = conv_gflop_per_image(model) + 2 * sum(p.numel() for p in model.flow.parameters()) / 1e9
    limit = gflops / per_image
    for r in rows:
        r["of_limit"] = r["images_per_s"] / limit
    print_table(f"Scoring, {args.img_size} px, {n} rotations per image, {args.score_batch} image(s) per batch, "
                f"{len(images)} images, {args.repeats} interleaved repetitions", rows, "transformed images/s")
    print(f"\nCompute limit: GEMM peak {gflops:.0f} GFLOP/s (measured now) / {per_image:.2f} GFLOP per transformed "
          f"image (convolutions at all scales + flow) = {limit:.1f} images/s; adnlib scoring reaches "
          f"{rows[1]['of_limit']:.0%} of it, the reference {rows[0]['of_limit']:.0%}.")
    out["score"] = {"rows": rows, "gemm_gflops": gflops, "gflop_per_image": per_image, "limit": limit}


class _FirstN(torch.utils.data.Dataset):
    """The first n items of a dataset, re-indexed 0..n-1 (FeatureCache indexes its rows by item index)."""

    def __init__(self, data, n):
        self.data, self.n = data, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image, label, _ = self.data[i]
        return image, label, i


def section_cache(args, root, out: dict) -> None:
    from adnlib.train import FeatureCache  # read-only use of the training module's cache

    config = preset("paper", weights="none", device="cpu", img_size=args.img_size,
                    cache_rotations=args.cache_rotations)
    b, n, count = args.cache_batch, args.rotations, args.cache_images
    data, images, pil = load_images(root, count, args.img_size)
    subset = _FirstN(data, count)
    model = AttentDifferNet(config).train()
    ref = ReferenceDifferNet(model.backbone.features, model.flow, args.img_size, config.n_scales).train()
    ref_opt = reference_optimizer(model.flow, config)
    opt = model.make_optimizer()
    transform = official_transform(config.rotation_degrees)
    gen = torch.Generator().manual_seed(3)
    batches = [list(range(i, min(i + b, count))) for i in range(0, count, b)]

    first_pass = {}

    def build():
        first_pass["cache"] = FeatureCache(model, subset, config.cache_rotations, "cpu",
                                           torch.Generator().manual_seed(4), config.test_batch_size, progress=False)

    seconds_build, mem_build = timed(build)
    cache = first_pass["cache"]

    def reference_epoch():
        for idx in batches:
            reference_train_step(ref, ref_opt, [pil[i] for i in idx], n, transform)

    def uncached_epoch():
        for idx in batches:
            fast_train_step(model, opt, images[idx], n, gen)

    def cached_epoch():
        order = torch.randperm(count, generator=gen)
        for i in range(0, count, b):
            cached_train_step(model, opt, cache, order[i:i + b], n, gen)

    # Warm-up on one image (allocates optimizer state and weight gradients; a full reference epoch takes a minute).
    reference_train_step(ref, ref_opt, pil[:1], n, transform)
    fast_train_step(model, opt, images[:1], n, gen)
    cached_train_step(model, opt, cache, torch.arange(1), n, gen)
    paths = {"reference epoch (official way)": reference_epoch, "adnlib epoch, no cache": uncached_epoch,
             "adnlib epoch from the feature cache": cached_epoch}
    if args.skip_uncached_epoch:
        del paths["adnlib epoch, no cache"]
    results = interleaved(paths, args.cache_repeats)
    rows = summarise(results, {k: count * n for k in paths}, "reference epoch (official way)")
    ref_seconds = rows[0]["seconds"]
    rows.append({"path": f"first pass: build the cache ({config.cache_rotations} rotations/image, once)",
                 "images_per_s": count * config.cache_rotations / seconds_build, "ratio": ref_seconds / seconds_build,
                 "ratio_min": ref_seconds / seconds_build, "seconds": seconds_build,
                 "peak_delta_mb": mem_build.delta / 2 ** 20, "peak_rss_gb": mem_build.peak / 2 ** 30})
    print_table(f"Epoch over {count} demo images, {b} images x {n} rotations per step, {args.img_size} px, "
                f"{args.cache_repeats} interleaved repetitions (cache: {config.cache_rotations} rotations per image, "
                f"{cache.features.numel() * 4 / 2 ** 20:.1f} MB)", rows, "samples/s")
    out["cache"] = rows


def memory_child(args) -> None:
    """Fresh process: peak RSS of paper-config training steps, and RSS after each step (JSON on stdout)."""
    torch.set_num_threads(args.threads)
    config = preset("paper", weights="none", device="cpu", img_size=args.img_size, variant=args.memory_variant)
    _, images, _ = load_images(Path(args.root), args.memory_images, args.img_size)
    rss_start = rss_bytes()
    model = AttentDifferNet(config).train()
    opt = model.make_optimizer()
    gen = torch.Generator().manual_seed(5)
    rss_model = rss_bytes()
    after, seconds = [], []
    for _ in range(args.memory_steps):
        start = time.perf_counter()
        fast_train_step(model, opt, images, args.rotations_memory, gen)
        seconds.append(time.perf_counter() - start)
        after.append(rss_bytes())
    print(json.dumps({"variant": args.memory_variant, "rss_start": rss_start, "rss_model": rss_model,
                      "rss_after_steps": after, "seconds": seconds,
                      "peak_rss": peak_rss_bytes(),
                      "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def section_memory(args, root, out: dict) -> None:
    rows = []
    for variant in ["differnet"] + list(args.memory_variants):
        cmd = [sys.executable, __file__, "--memory-child", "--root", str(root), "--img-size", str(args.img_size),
               "--memory-images", str(args.memory_images), "--rotations-memory", str(args.rotations_memory),
               "--memory-steps", str(args.memory_steps), "--memory-variant", variant, "--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"\n### Memory: fresh process per variant, {args.memory_steps} training steps of "
          f"{args.memory_images} images x {args.rotations_memory} rotations at {args.img_size} px\n")
    print("| variant | RSS after imports + data GB | + model & optimizer GB | peak RSS (VmHWM) GB | "
          "RSS after each step GB | growth after step 2 MB | s per step |")
    print("|---|---:|---:|---:|---|---:|---:|")
    gb = 2 ** 30
    for r in rows:
        after = r["rss_after_steps"]
        growth = (after[-1] - after[min(1, len(after) - 1)]) / 2 ** 20
        r["growth_mb"] = growth
        print(f"| {r['variant']} | {r['rss_start'] / gb:.2f} | {r['rss_model'] / gb:.2f} | {r['peak_rss'] / gb:.2f} | "
              f"{' '.join(f'{a / gb:.2f}' for a in after)} | {growth:+.0f} | "
              f"{statistics.median(r['seconds']):.1f} |")
    out["memory"] = rows


def section_auroc(args, root, out: dict) -> None:
    """Feature cache vs fresh rotations: AUROC of full demo-preset runs (opt-in: ~1 min per run on 1 core)."""
    from adnlib.train import train

    rows = []
    for category in args.auroc_categories.split(","):
        for seed in [int(s) for s in args.auroc_seeds.split(",")]:
            row = {"category": category, "seed": seed}
            for cached in (False, True):
                config = preset(args.auroc_preset, weights="none", device="cpu", seed=seed, feature_cache=cached)
                start = time.perf_counter()
                result = train(config, root, category, progress=False)
                key = "cached" if cached else "plain"
                row[key], row[f"{key}_s"] = result.metrics["auroc"], time.perf_counter() - start
            rows.append(row)
            print(f"  {category} seed {seed}: AUROC uncached {row['plain']:.4f}, cached {row['cached']:.4f} "
                  f"({row['plain_s']:.0f} s / {row['cached_s']:.0f} s)", flush=True)
    print(f"\n### Feature cache vs fresh rotations: AUROC, preset '{args.auroc_preset}', random backbone weights\n")
    print("| category | seed | AUROC, fresh rotations | AUROC, feature cache | difference | run s (fresh / cache) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['category']} | {r['seed']} | {r['plain']:.4f} | {r['cached']:.4f} | "
              f"{r['cached'] - r['plain']:+.4f} | {r['plain_s']:.0f} / {r['cached_s']:.0f} |")
    for category in args.auroc_categories.split(","):
        plain = [r["plain"] for r in rows if r["category"] == category]
        if len(plain) > 1:
            print(f"\n{category}: seed-to-seed std of the uncached AUROC {statistics.stdev(plain):.4f}")
    out["auroc"] = rows


def check_targets(out: dict, quick: bool = False) -> None:
    checks = []  # (text, measured, passed)
    if "train" in out:
        rows = {r["path"]: r for r in out["train"]}
        r = rows["adnlib DifferNet"]
        checks.append(("DifferNet training >= 3.0x reference", f"{r['ratio']:.2f}x", r["ratio"] >= 3.0))
        for name, r in rows.items():
            if "AttentDifferNet" in name:
                checks.append((f"{name.split()[-1]} training >= 1.3x reference", f"{r['ratio']:.2f}x",
                               r["ratio"] >= 1.3))
    if "score" in out:
        r = out["score"]["rows"][1]
        checks.append(("scoring >= 1.25x reference", f"{r['ratio']:.2f}x", r["ratio"] >= 1.25))
        checks.append(("scoring >= 85% of the compute limit", f"{r['of_limit']:.0%}", r["of_limit"] >= 0.85))
    if "cache" in out:
        r = next(r for r in out["cache"] if r["path"] == "adnlib epoch from the feature cache")
        checks.append(("cached epoch >= 15x reference epoch", f"{r['ratio']:.1f}x", r["ratio"] >= 15.0))
    if "memory" in out:
        for r in out["memory"]:
            checks.append((f"{r['variant']}: no RSS growth over training steps (< 50 MB)", f"{r['growth_mb']:+.0f} MB",
                           r["growth_mb"] < 50))
    if checks:
        print("\n### Targets (issue 4)" + (" -- quick sizes: for development only, not the targets' setting" if quick
                                           else "") + "\n")
    for text, measured, passed in checks:
        print(f"- {'PASS' if passed else 'FAIL'}: {text}: measured {measured}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for development (~2 minutes)")
    p.add_argument("--sections", default="train,score,cache,memory",
                   help="comma-separated subset of train,score,cache,memory,auroc (auroc: opt-in, ~15 min)")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--images", type=int, default=24, help="images per training step in 'train' (paper: 24)")
    p.add_argument("--rotations", type=int, default=4, help="rotations per image per training step (paper: 4)")
    p.add_argument("--variants", default="se,cbam", help="attention variants to time besides DifferNet")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions in 'train' and 'score'")
    p.add_argument("--score-images", type=int, default=2)
    p.add_argument("--score-batch", type=int, default=1, help="images per scoring batch (the official code: 1)")
    p.add_argument("--score-rotations", type=int, default=64)
    p.add_argument("--cache-images", type=int, default=24, help="images per epoch in 'cache'")
    p.add_argument("--cache-batch", type=int, default=24, help="images per step in 'cache' (paper: 24)")
    p.add_argument("--cache-rotations", type=int, default=16, help="K rotations per image in the cache")
    p.add_argument("--cache-repeats", type=int, default=2)
    p.add_argument("--skip-uncached-epoch", action="store_true", help="'cache' times only reference and cached")
    p.add_argument("--memory-images", type=int, default=24)
    p.add_argument("--rotations-memory", type=int, default=4)
    p.add_argument("--memory-steps", type=int, default=4)
    p.add_argument("--memory-variants", default="se", help="variants measured besides DifferNet in 'memory'")
    p.add_argument("--auroc-preset", default="demo", help="'auroc' section (opt-in): preset to train")
    p.add_argument("--auroc-seeds", default="0,1,2")
    p.add_argument("--auroc-categories", default="disc,weave")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every path (default 1: on a shared machine, a second thread waiting on a "
                        "busy core makes runs 2-4x slower and the ratios noise; use the core count on an idle one)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-variant", default="differnet", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.rotations, args.repeats = 2, 2, 2
        args.score_images, args.score_rotations = 1, 16
        args.cache_images, args.cache_batch, args.cache_rotations, args.cache_repeats = 4, 4, 8, 2
        args.memory_images, args.memory_steps, args.memory_variants = 4, 3, ""
    args.variants = [v for v in args.variants.split(",") if v]
    args.memory_variants = [v for v in args.memory_variants.split(",") if v]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    print(f"adnlib speed benchmark: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; config 'paper' at {args.img_size} px, random weights")
    out: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_dataset(Path(tmp) / "demo")
        sections = {"train": section_train, "score": section_score, "cache": section_cache,
                    "memory": section_memory, "auroc": section_auroc}
        for name in args.sections.split(","):
            t0 = time.perf_counter()
            sections[name](args, root, out)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)")
    check_targets(out, args.quick)
    print(f"\nTotal {time.perf_counter() - started:.0f} s; load average now {os.getloadavg()[0]:.1f}.")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
