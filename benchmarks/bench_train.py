"""speed.py section 'train': one training step at the paper batch, the official way against adnlib's
(`adnlib.run.train.train_step`, the step `adnlib.run.train` runs) for DifferNet and the attention variants."""
from __future__ import annotations

import torch
from bench_common import (
    ReferenceDifferNet,
    adnlib_train_step,
    interleaved,
    load_images,
    official_transform,
    print_table,
    reference_optimizer,
    reference_train_step,
    summarise,
)

from adnlib.config import preset
from adnlib.model.network import AttentDifferNet


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
        opt.add_param_group({"params": list(models[variant].backbone.attention.parameters())})
    transform = official_transform(config.rotation_degrees)
    gen = torch.Generator().manual_seed(1)
    paths = {"reference (official way)": lambda: reference_train_step(ref, ref_opt, pil, n, transform),
             "adnlib DifferNet": lambda: adnlib_train_step(models["differnet"], opt, images, n, gen)}
    for variant in args.variants:
        paths[f"adnlib AttentDifferNet {variant.upper()}"] = (
            lambda v=variant: adnlib_train_step(models[v], opt, images, n, gen))
    # Warm-up on one image per path: optimizer state, weight gradients, oneDNN kernels (a full reference step at
    # the paper batch takes half a minute).
    reference_train_step(ref, ref_opt, pil[:1], n, transform)
    for variant in models:
        adnlib_train_step(models[variant], opt, images[:1], n, gen)
    results = interleaved(paths, args.repeats)
    rows = summarise(results, dict.fromkeys(paths, b * n), "reference (official way)")
    print_table(f"Training step, {args.img_size} px, {b} images x {n} rotations = {b * n} tensors per step "
                f"(paper batch: 24 x 4), {args.repeats} interleaved repetitions, {args.threads} thread(s)", rows,
                "transformed images/s")
    out["train"] = rows
