"""Training: the DifferNet protocol for all variants, with history, last/best checkpoints and resume.

`train(config, root, category, out_dir)` is the one call; it returns a TrainResult and, with an `out_dir`,
writes checkpoint.pt (last, resumable), best.pt (selected on the test set, as the official code), scores.csv,
scores_best.csv, history.csv and metrics.json — all written atomically (a kill leaves the previous file intact).

Reliability: every image is read once before the first step (a corrupt file stops the run at once, named); the
resumable checkpoint is saved every epoch while that is cheap; a NaN/inf loss stops the run naming epoch and step
and keeps the last good checkpoint; `resume=True` continues from checkpoint.pt (optimizer, epoch, history, RNG and
data-order states) to the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (config_differences, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
                         versions, write_csv, write_json)
from .config import Config
from .datasets import AnomalyDataset
from .device import resolve_device
from .errors import CheckpointError, ConfigError, OutputExistsError, TrainingDivergedError
from .evaluate import report, score_dataset
from .flow import nll_loss
from .model import AttentDifferNet
from .transforms import jitter_colors, random_angles, to_unit

RESULT_FILES = ("checkpoint.pt", "best.pt", "metrics.json", "scores.csv", "scores_best.csv", "history.csv")
# Auto checkpoint policy: save the resumable checkpoint after an epoch when the last save cost at most this fraction
# of the time spent since it (every epoch for small models; every few epochs for the 172M-parameter paper flow).
CHECKPOINT_OVERHEAD = 0.1
RESUME_KEYS = ("epoch", "history", "optimizer_state", "rng_state", "loader_generator", "rotation_generator")
# Fields that may change when a run is resumed (more epochs, another machine).
RESUMABLE_CHANGES = ("epochs", "eval_every", "device", "num_workers", "compile", "amp", "test_batch_size")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    model: AttentDifferNet
    history: pd.DataFrame  # one row per epoch: epoch, loss, seconds, feature_norm, gate_*; auroc where evaluated
    scores: pd.DataFrame  # last evaluation: path, label, defect_type, score
    metrics: dict
    best_scores: pd.DataFrame | None = None
    out_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def check_output_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently overwrite a previous run's results."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output folder {out_dir} is a file")
    existing = [name for name in RESULT_FILES if (out_dir / name).exists()]
    if existing and not (resume or overwrite):
        raise OutputExistsError(f"{out_dir} already holds a run ({', '.join(existing)}); pass --resume to "
                                "continue it, --overwrite to replace it, or choose another output folder")
    if resume and not (out_dir / "checkpoint.pt").exists():
        raise CheckpointError(f"nothing to resume: {out_dir / 'checkpoint.pt'} does not exist")


class FeatureCache:
    """Embeddings of K random rotations per training image, computed once (frozen backbones only).

    Epochs then draw n of the K rotations per image: an approximation of fresh continuous rotations that makes
    an epoch cost only the flow. Shape of `features`: (N, K, D).
    """

    def __init__(self, model: AttentDifferNet, dataset, k: int, device, generator: torch.Generator,
                 batch_size: int, progress: bool = True):
        if model.config.backbone_trains:
            raise ConfigError("feature_cache needs a frozen backbone: use variant 'differnet' or "
                              "train_attention=False")
        loader = DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False)
        chunks = []
        with torch.inference_mode():
            for images, _, _ in tqdm(loader, desc=f"caching {k} rotations/image", leave=False, disable=not progress):
                angles = random_angles(len(images) * k, model.config.rotation_degrees, generator)
                x = model.prepare(images.to(device), angles.reshape(len(images), k))
                chunks.append(model.embed(x).reshape(len(images), k, -1))
        self.features = torch.cat(chunks)

    def sample(self, indices: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) image indices -> (B·n, D) embeddings of n distinct cached rotations per image."""
        k = self.features.shape[1]
        choice = torch.rand(len(indices), k, generator=generator).argsort(dim=1)[:, :n]
        return self.features[indices[:, None], choice].reshape(len(indices) * n, -1)


def _gate_stats(model: AttentDifferNet) -> dict[str, float]:
    stats = {}
    for i, block in enumerate(model.backbone.blocks, start=1):
        gates = getattr(block, "last_gates", None)
        if gates is None:
            gates = getattr(block, "last_channel_gates", None)
        if gates is not None:
            stats[f"gate_mean_{i}"] = float(gates.float().mean())
        spatial = getattr(block, "last_spatial_map", None)
        if spatial is not None:
            stats[f"spatial_mean_{i}"] = float(spatial.float().mean())
    return stats


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


def _seeds(config: Config) -> dict[str, int]:
    """Every seed a run uses, recorded in metrics.json (all derived from config.seed)."""
    return {"seed": config.seed, "model_init": config.seed, "data_order": config.seed,
            "train_rotations": config.seed + 1, "feature_cache": config.seed + 2, "test_rotations": config.seed}


def _diverged(what: str, config: Config, out_dir: Path | None, saved_epoch: int | None, history: list) -> None:
    """Stop with TrainingDivergedError; the last good checkpoint is left as it is, the history so far is saved."""
    if out_dir is None:
        kept = ""
    elif saved_epoch is None:
        kept = "; no checkpoint had been saved yet"
    else:
        kept = f"; the last good checkpoint (epoch {saved_epoch}) is kept in {out_dir / 'checkpoint.pt'}"
        if history:
            write_csv(out_dir / "history.csv", pd.DataFrame(history))
    raise TrainingDivergedError(f"training diverged: {what} (lr {config.lr:g}){kept}. Lower the learning rate "
                                "(Config.lr) and start again, or check the data")


def train(config: Config, data_root: str | Path, category: str, out_dir: str | Path | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          skip_corrupt: bool = False, checkpoint_every: int | None = None) -> TrainResult:
    """Train one variant on one category and evaluate it every `config.eval_every` epochs (and at the end).

    checkpoint_every: save the resumable checkpoint.pt every N epochs; None (default) saves after each epoch while
    a save costs under 10% of the training time since the last one; 0 saves only at evaluations. It is always
    saved at evaluations.
    """
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        check_output_dir(out_dir, resume, overwrite)
    device = resolve_device(config.device)
    smallest_scale = config.img_size // 2 ** (config.n_scales - 1)
    # Read every image before the first step: a corrupt test image must not stop a long run at its first evaluation.
    train_set = AnomalyDataset(data_root, category, "train", config.img_size, cache=True,
                               smallest_scale=smallest_scale).check(skip_corrupt)
    test_set = AnomalyDataset(data_root, category, "test", config.img_size, cache=True,
                              smallest_scale=smallest_scale).check(skip_corrupt)

    start_epoch, history, best, previous_seconds = 0, [], None, 0.0
    ckpt, best_scores = None, None
    if resume:
        ckpt = load_checkpoint(out_dir / "checkpoint.pt")
        saved = Config.from_dict(ckpt["config"])
        diff = config_differences(saved, config, ignore=RESUMABLE_CHANGES)
        if diff:
            text = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"cannot resume {out_dir}: the config changed ({text})")
        if ckpt.get("category") != category:
            raise CheckpointError(f"cannot resume {out_dir}: it was trained on category {ckpt.get('category')!r}")
        missing = [k for k in RESUME_KEYS if k not in ckpt]
        if missing:
            raise CheckpointError(f"cannot resume {out_dir}: its checkpoint.pt lacks {', '.join(missing)} "
                                  f"(kind {ckpt.get('kind')!r}; only the 'last' checkpoint of a run resumes)")

    if out_dir is not None and overwrite and not resume:  # no stale file of the replaced run may survive
        for name in RESULT_FILES:
            (out_dir / name).unlink(missing_ok=True)
    if out_dir is not None and out_dir.is_dir():  # side files of writes a kill interrupted (see atomic_write)
        for name in RESULT_FILES:
            for leftover in out_dir.glob(f".{name}.*.tmp"):
                leftover.unlink(missing_ok=True)
    seed_everything(config.seed)
    if ckpt is not None:
        from .weights import load_alexnet_features
        features, _ = load_alexnet_features("none", config.seed)
        model = AttentDifferNet(config, features=features, backbone_weights=ckpt["backbone_weights"])
        model.load_state_dict(ckpt["model_state"])
    else:
        model = AttentDifferNet(config)
    model.to(device)
    if config.compile:
        model.embedding = torch.compile(model.embedding)
    optimizer = model.make_optimizer()
    loader_generator = torch.Generator().manual_seed(config.seed)
    rotation_generator = torch.Generator().manual_seed(config.seed + 1)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        start_epoch, history, best = ckpt["epoch"], list(ckpt["history"]), ckpt.get("best")
        previous_seconds = float(ckpt.get("train_seconds", 0.0))
        loader_generator.set_state(ckpt["loader_generator"])
        rotation_generator.set_state(ckpt["rotation_generator"])
        set_rng_state(ckpt["rng_state"])
        if best is not None and (out_dir / "scores_best.csv").exists():
            best_scores = pd.read_csv(out_dir / "scores_best.csv")

    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=loader_generator,
                        num_workers=config.num_workers)
    cache = None
    if config.feature_cache:
        cache = FeatureCache(model, train_set, config.cache_rotations, device,
                             torch.Generator().manual_seed(config.seed + 2), config.test_batch_size, progress)

    train_seconds = previous_seconds
    last_scores = None
    saved_epoch = start_epoch if ckpt is not None else None
    save_cost, since_save = 0.0, 0.0
    epochs = tqdm(range(start_epoch + 1, config.epochs + 1), desc=f"{config.variant} on {category}",
                  disable=not progress, initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        model.train()
        started = time.perf_counter()
        losses, norms = [], []
        for step, (images, _, indices) in enumerate(tqdm(loader, desc=f"epoch {epoch}", leave=False,
                                                          disable=not progress)):
            if cache is not None:
                y = cache.sample(indices, config.n_train_rotations, rotation_generator)
            else:
                x = jitter_colors(to_unit(images.to(device)), config.brightness, config.contrast,
                                  config.saturation, rotation_generator)
                angles = random_angles(len(images) * config.n_train_rotations, config.rotation_degrees,
                                       rotation_generator).reshape(len(images), config.n_train_rotations)
                y = model.embed(model.prepare(x, angles))
            z, log_jac_det = model.flow_forward(y)
            loss = nll_loss(z, log_jac_det)
            if not torch.isfinite(loss):
                _diverged(f"loss became {loss.item()} at epoch {epoch}, step {step + 1}", config, out_dir,
                          saved_epoch, history)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            norms.append(float(y.detach().norm(dim=1).mean()))
        seconds = time.perf_counter() - started
        train_seconds += seconds
        if not _all_finite(model):  # can happen on the last step: never save such a model as "good"
            _diverged(f"parameters became non-finite in the last step of epoch {epoch} (step {step + 1})", config,
                      out_dir, saved_epoch, history)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds,
                 "feature_norm": float(np.mean(norms)), **_gate_stats(model)}
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        if evaluate_now:
            last_scores = score_dataset(model, test_set, device=device, seed=config.seed, progress=progress)
            bad = int((~np.isfinite(last_scores["score"].to_numpy())).sum())
            if bad:
                _diverged(f"{bad} of {len(last_scores)} test scores are not finite after epoch {epoch}", config,
                          out_dir, saved_epoch, history)
            entry["auroc"] = report(last_scores)["auroc"]
            if best is None or entry["auroc"] > best["auroc"]:
                best = {"auroc": entry["auroc"], "epoch": epoch}
                best_scores = last_scores
                if out_dir is not None:
                    save_checkpoint(out_dir / "best.pt", model=model, kind="best (selected on the test set)",
                                    extra={"epoch": epoch, "category": category, "auroc": entry["auroc"]})
                    write_csv(out_dir / "scores_best.csv", best_scores)
        history.append(entry)
        epochs.set_postfix(loss=f"{entry['loss']:.3f}", **({"auroc": f"{entry['auroc']:.3f}"} if evaluate_now else {}))
        since_save += time.perf_counter() - started
        if checkpoint_every is None:
            periodic = save_cost <= CHECKPOINT_OVERHEAD * since_save
        else:
            periodic = checkpoint_every > 0 and epoch % checkpoint_every == 0
        if out_dir is not None and (evaluate_now or periodic or epoch == config.epochs):
            save_started = time.perf_counter()
            save_checkpoint(out_dir / "checkpoint.pt", model=model, kind="last", extra={
                "epoch": epoch, "category": category, "history": history, "best": best,
                "auroc": entry.get("auroc"), "optimizer_state": optimizer.state_dict(),
                "train_seconds": train_seconds, "rng_state": rng_state(),
                "loader_generator": loader_generator.get_state(),
                "rotation_generator": rotation_generator.get_state()})
            save_cost, since_save, saved_epoch = time.perf_counter() - save_started, 0.0, epoch

    if last_scores is None:  # resumed a run that had already finished
        last_scores = score_dataset(model, test_set, device=device, seed=config.seed, progress=progress)
    final = report(last_scores)
    metrics = {
        "auroc": final["auroc"], "auroc_best": best["auroc"] if best else final["auroc"],
        "best_epoch": best["epoch"] if best else config.epochs,
        "best_selection": "max AUROC over evaluations on the test set (as the official DifferNet code prints)",
        "auroc_per_defect": final["auroc_per_defect"], "variant": config.variant, "category": category,
        "data_root": str(data_root), "epochs": config.epochs, "backbone_weights": model.backbone_weights,
        "train_seconds": round(train_seconds, 2), "seed": config.seed, "seeds": _seeds(config),
        "device": str(device), "resumed_from_epoch": start_epoch if ckpt is not None else None,
        "n_train": len(train_set), "n_test_normal": final["n_normal"], "n_test_anomalous": final["n_anomalous"],
        "parameters": model.parameter_counts(), "config": config.to_dict(), "versions": versions(),
    }
    history_frame = pd.DataFrame(history)
    if out_dir is not None:
        write_csv(out_dir / "scores.csv", last_scores)
        write_csv(out_dir / "history.csv", history_frame)
        write_json(out_dir / "metrics.json", metrics)
    return TrainResult(model=model, history=history_frame, scores=last_scores, metrics=metrics,
                       best_scores=best_scores, out_dir=out_dir)
