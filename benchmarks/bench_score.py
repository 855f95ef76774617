"""speed.py section 'score': test-time scoring (64 rotations per image), the official way against
`model.score`, and both against the machine's compute limit (a GEMM probe measured between the runs)."""
from __future__ import annotations

import statistics

import torch
from bench_common import (
    ReferenceDifferNet,
    conv_gflop_per_image,
    gemm_gflops,
    interleaved,
    load_images,
    official_transform,
    print_table,
    reference_scores,
    summarise,
)

from adnlib.config import preset
from adnlib.model.network import AttentDifferNet
from adnlib.model.transforms import random_angles


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
