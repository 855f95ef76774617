"""speed.py section 'cache': an epoch from `adnlib.run.train.FeatureCache` (K rotations per image embedded once)
against an uncached adnlib epoch and a reference epoch, plus the cost of building the cache."""
from __future__ import annotations

import torch
from bench_common import (
    ReferenceDifferNet,
    adnlib_train_step,
    cached_train_step,
    interleaved,
    load_images,
    official_transform,
    print_table,
    reference_optimizer,
    reference_train_step,
    summarise,
    timed,
)

from adnlib.config import preset
from adnlib.model.network import AttentDifferNet
from adnlib.run.train import FeatureCache


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
            adnlib_train_step(model, opt, images[idx], n, gen)

    def cached_epoch():
        order = torch.randperm(count, generator=gen)
        for i in range(0, count, b):
            cached_train_step(model, opt, cache, order[i:i + b], n, gen)

    # Warm-up on one image (allocates optimizer state and weight gradients; a full reference epoch takes a minute).
    reference_train_step(ref, ref_opt, pil[:1], n, transform)
    adnlib_train_step(model, opt, images[:1], n, gen)
    cached_train_step(model, opt, cache, torch.arange(1), n, gen)
    paths = {"reference epoch (official way)": reference_epoch, "adnlib epoch, no cache": uncached_epoch,
             "adnlib epoch from the feature cache": cached_epoch}
    if args.skip_uncached_epoch:
        del paths["adnlib epoch, no cache"]
    results = interleaved(paths, args.cache_repeats)
    rows = summarise(results, dict.fromkeys(paths, count * n), "reference epoch (official way)")
    ref_seconds = rows[0]["seconds"]
    rows.append({"path": f"first pass: build the cache ({config.cache_rotations} rotations/image, once)",
                 "images_per_s": count * config.cache_rotations / seconds_build, "ratio": ref_seconds / seconds_build,
                 "ratio_min": ref_seconds / seconds_build, "seconds": seconds_build,
                 "peak_delta_mb": mem_build.delta / 2 ** 20, "peak_rss_gb": mem_build.peak / 2 ** 30})
    print_table(f"Epoch over {count} demo images, {b} images x {n} rotations per step, {args.img_size} px, "
                f"{args.cache_repeats} interleaved repetitions (cache: {config.cache_rotations} rotations per image, "
                f"{cache.features.numel() * 4 / 2 ** 20:.1f} MB)", rows, "samples/s")
    out["cache"] = rows
