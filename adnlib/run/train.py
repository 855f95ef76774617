"""Training: the DifferNet protocol for all variants, with history, last/best checkpoints and resume.

`train(config, root, category, out_dir)` is the one call; it returns a TrainResult and, with an `out_dir`,
writes checkpoint.pt (last), best.pt (selected on the test set, as the official code), scores.csv,
scores_best.csv, history.csv and metrics.json — all written atomically (a kill leaves the previous file intact).
Its pieces are public: `training_batch` (a batch's random augmentation) and `train_step` (one optimisation step:
what benchmarks/speed.py times), `GateMonitor` (the history's attention columns) and `FeatureCache`.

Reliability: every image is read once before the first step (a corrupt file stops the run at once, named); the
resumable checkpoint is saved every epoch while that is cheap; a NaN/inf loss stops the run naming epoch and step
and keeps the last good checkpoint; `resume=True` continues from checkpoint.pt (optimizer, epoch, history,
data-order and rotation generator states) to the same numbers as an uninterrupted run.

Files of a finished run: checkpoint.pt keeps the weights, history and best record but not the optimizer state
(`keep_optimizer=True` keeps it, to extend the run later with more epochs); best.pt is a copy of the best weights,
or, when the best evaluation is the last one, a small pointer to checkpoint.pt (`checkpoint.save_pointer`;
`model_from_checkpoint("best.pt")` loads it all the same; metrics.json's `best_weights_in` says which).

State: train() seeds no global generator and leaves random, numpy and torch's global states as they were. The
model is initialised from config.seed under forked generators; the data order, the training rotations and the
feature cache draw from their own torch.Generators, whose states the resumable checkpoint holds.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from adnlib.config import FEATURE_CACHE_NEEDS_FROZEN, Config
from adnlib.data.datasets import AnomalyDataset, data_record
from adnlib.errors import CheckpointError, ConfigError, OutputExistsError, TrainingDivergedError
from adnlib.model.flow import nll_loss
from adnlib.model.network import AttentDifferNet
from adnlib.model.transforms import random_angles, rotate_then_jitter, to_unit
from adnlib.progress import progress_bar
from adnlib.run.checkpoint import (
    WEIGHTS_IN,
    load_checkpoint,
    save_checkpoint,
    save_pointer,
    versions,
    weights_record,
    write_csv,
    write_json,
)
from adnlib.run.device import check_precision, precision_record, resolve_device
from adnlib.run.evaluate import report, rotation_record, score_dataset
from adnlib.seeds import stream_seed, stream_seeds

RESULT_FILES = ("checkpoint.pt", "best.pt", "metrics.json", "scores.csv", "scores_best.csv", "history.csv")
# Auto checkpoint policy: save the resumable checkpoint after an epoch when the last save cost at most this fraction
# of the time spent since it (every epoch for small models; every few epochs for the 172M-parameter paper flow).
CHECKPOINT_OVERHEAD = 0.1
# What a checkpoint needs to continue training (a finished run's checkpoint.pt keeps them only with keep_optimizer).
RESUME_KEYS = ("epoch", "history", "optimizer_state", "loader_generator", "rotation_generator")
BEST_KIND = "best (selected on the test set)"


@dataclass
class TrainResult:
    model: AttentDifferNet
    # one row per epoch: epoch, loss, seconds, feature_norm (means over the epoch's steps); for SE/CBAM
    # gate_mean_block<i>_scale<s> and, for CBAM, spatial_mean_block<i>_scale<s> (GateMonitor: block i's mean
    # attention at scale s over the epoch's batches; not recorded under config.compile); auroc where evaluated
    history: pd.DataFrame
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
            raise ConfigError(FEATURE_CACHE_NEEDS_FROZEN)
        # its own generator: iterating a DataLoader draws a seed, from torch's global generator unless given one
        loader = DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, generator=torch.Generator())
        chunks = []
        with torch.inference_mode():
            for images, _, _ in progress_bar(loader, desc=f"caching {k} rotations/image", leave=False,
                                             disable=not progress):
                angles = random_angles(len(images) * k, model.config.rotation_degrees, generator)
                x = model.prepare(images.to(device), angles.reshape(len(images), k))
                chunks.append(model.embed(x).reshape(len(images), k, -1))
        self.features = torch.cat(chunks)

    def sample(self, indices: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """(B,) image indices -> (B·n, D) embeddings of n distinct cached rotations per image."""
        k = self.features.shape[1]
        choice = torch.rand(len(indices), k, generator=generator).argsort(dim=1)[:, :n]
        return self.features[indices[:, None], choice].reshape(len(indices) * n, -1)


class GateMonitor:
    """Mean attention of each block at each scale over the forward passes since `reset()` (an epoch: its batches).

    Opt-in forward hooks: a hook on each attention block records, per pass of the embedding, the block's mean
    channel gate over the pass's images, rotated copies and channels -> `gate_mean_block<i>_scale<s>` (SE's gates,
    CBAM's channel gates), and for CBAM its mean spatial map -> `spatial_mean_block<i>_scale<s>`; block 1 is the
    first, scale 0 the full image (a pre-hook on the backbone tells the scale from its input size: the embedding
    runs the backbone once per scale, and a block alone remembers only its last call, the smallest scale).
    `stats()` averages each over the passes (every batch counts once) with one host sync; until then the values
    stay on the device. The hooks exist while the monitor is open: `close()`, or the end of a `with` block,
    removes them.
    """

    def __init__(self, model: AttentDifferNet):
        self._img_size = model.config.img_size
        self._scale = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._handles = [model.backbone.register_forward_pre_hook(self._set_scale)]
        self._handles += [block.register_forward_hook(self._recorder(i))
                          for i, block in enumerate(model.backbone.blocks, start=1)]

    def _set_scale(self, backbone, inputs) -> None:
        self._scale = max(0, round(math.log2(self._img_size / inputs[0].shape[-1])))

    def _add(self, name: str, values: torch.Tensor) -> None:
        mean = values.detach().float().mean()
        self._sums[name] = self._sums[name] + mean if name in self._sums else mean
        self._counts[name] = self._counts.get(name, 0) + 1

    def _recorder(self, i: int):
        def record(block, inputs, output) -> None:
            gates = getattr(block, "last_gates", None)
            if gates is None:
                gates = getattr(block, "last_channel_gates", None)
            if gates is not None:
                self._add(f"gate_mean_block{i}_scale{self._scale}", gates)
            spatial = getattr(block, "last_spatial_map", None)
            if spatial is not None:
                self._add(f"spatial_mean_block{i}_scale{self._scale}", spatial)
        return record

    def reset(self) -> None:
        self._sums, self._counts = {}, {}

    def stats(self) -> dict[str, float]:
        """{column: mean over the passes since reset()}, gate columns first, by block then scale."""
        names = sorted(self._sums)
        if not names:
            return {}
        totals = torch.stack([self._sums[name] for name in names]).tolist()
        return {name: total / self._counts[name] for name, total in zip(names, totals)}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GateMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FlowInputNorms:
    """The mean L2 norm of the flow's input embeddings, per step, kept on the device (the history's feature_norm)."""

    def __init__(self, model: AttentDifferNet):
        self.values: list[torch.Tensor] = []
        self._handle = model.flow.register_forward_pre_hook(self._record)

    def _record(self, flow, inputs) -> None:
        self.values.append(inputs[0].detach().norm(dim=1).mean())

    def __enter__(self) -> _FlowInputNorms:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def training_batch(images: torch.Tensor, config: Config,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A training batch's random augmentation, drawn from `generator` (angles, then any jitter factors): a run is
    reproducible from the generator's state, and every variant with one seed sees the same angles.

    uint8 or [0,1] images (B,3,S,S) -> ([0,1] images, (B, n_train_rotations) angles on the CPU), for `train_step`
    to rotate. With colour jitter on (config.brightness/contrast/saturation), the official order: the rotated
    copies (B·n,3,S,S), each jittered after its rotation (`rotate_then_jitter`), and None for the angles.
    """
    x = to_unit(images)
    angles = random_angles(len(images) * config.n_train_rotations, config.rotation_degrees, generator)
    angles = angles.reshape(len(images), config.n_train_rotations)
    if not config.color_jitter:
        return x, angles
    return rotate_then_jitter(x, angles, config.brightness, config.contrast, config.saturation, generator), None


def train_step(model: AttentDifferNet, optimizer: torch.optim.Optimizer, images: torch.Tensor | None = None,
               angles: torch.Tensor | None = None, *, embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step of the DifferNet protocol -> the loss: a 0-d tensor, detached, on the model's device.

    images: uint8 or [0,1] (B,3,S,S) on the model's device, augmented already (`training_batch`), and angles:
    (B, n) on the CPU -> the n rotated copies of each image (`model.prepare`), embedded by the backbone; angles
    None: `images` are the (rotated, jittered) copies already. Or embeddings: (B·n, D) from a `FeatureCache`
    instead of images. Then the flow, `nll_loss`, backward and the optimizer step. Nothing here waits for the
    device: `.item()` the result where its value is needed.
    """
    if embeddings is None:
        if images is None:
            raise ValueError("train_step needs images (and angles, unless they are rotated copies), or embeddings")
        embeddings = model.embed(model.prepare(images, angles))
    z, log_jac_det = model.flow_forward(embeddings)
    loss = nll_loss(z, log_jac_det)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _all_finite(model: torch.nn.Module) -> bool:
    """Whether every trainable parameter is finite: one fused reduction (an L2 norm per tensor, under 0.2 s for
    the 172M-parameter paper flow on one CPU core) and one host sync. NaN and inf give a non-finite norm; so can a
    finite tensor whose squares overflow, which the exact (slower) max-norm then tells apart."""
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if not params or bool(torch.stack(torch._foreach_norm(params)).isfinite().all()):
        return True
    return bool(torch.stack(torch._foreach_norm(params, float("inf"))).isfinite().all())


def _seeds(config: Config) -> dict[str, int]:
    """Every seed a run uses, recorded in metrics.json (all derived from config.seed, none from the variant: runs
    of different variants with one seed are paired)."""
    return {"seed": config.seed, **stream_seeds(config.seed),
            "test_rotations": "keyed by (seed, evaluation, image path): adnlib.run.evaluate.image_generator"}


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


# --- a run: build or restore, epochs, evaluations, saves ---------------------------------------------------------
@dataclass
class _Run:
    """What a run carries from epoch to epoch: built by `_start` (fresh, or restored from checkpoint.pt)."""
    config: Config
    category: str
    out_dir: Path | None
    device: torch.device
    train_set: AnomalyDataset
    test_set: AnomalyDataset
    model: AttentDifferNet
    optimizer: torch.optim.Optimizer
    loader_generator: torch.Generator
    rotation_generator: torch.Generator
    loader: DataLoader | None = None
    cache: FeatureCache | None = None
    start_epoch: int = 0
    resumed: bool = False
    resumable: bool = False  # whether checkpoint.pt holds the optimizer and generator states
    history: list = field(default_factory=list)
    best: dict | None = None  # {"auroc", "epoch"} of the best evaluation so far
    best_scores: pd.DataFrame | None = None
    last_scores: pd.DataFrame | None = None
    train_seconds: float = 0.0
    saved_epoch: int | None = None
    data: dict = field(default_factory=dict)  # the data record (adnlib.data.datasets.data_record) of the images read
    save_cost: float = 0.0  # seconds the last checkpoint.pt save took
    since_save: float = 0.0  # seconds of training and evaluation since it

    def diverged(self, what: str) -> None:
        _diverged(what, self.config, self.out_dir, self.saved_epoch, self.history)


def _check_memory(config: Config, data_root, category: str, device) -> None:
    """Before any image is decoded: the training step, the scoring step and the decoded images fit in memory
    (adnlib.run.memory: one error line naming what to lower, instead of a MemoryError later)."""
    from adnlib.data.datasets import find_samples
    from adnlib.run.memory import check_memory
    images = sum(len(find_samples(data_root, category, split)) for split in ("train", "test"))
    what = f"training {config.variant} on {category}"
    check_memory(config, copies=config.batch_size * config.n_train_rotations, images=images, training=True,
                 device=device, what=what)
    check_memory(config, copies=config.test_batch_size * config.n_test_rotations, images=images, training=False,
                 device=device, what=what)


def _read_data(config: Config, data_root, category: str, skip_corrupt: bool):
    """Both splits, every image read once now: a corrupt test image must not stop a long run at its first
    evaluation."""
    smallest_scale = config.img_size // 2 ** (config.n_scales - 1)
    return tuple(AnomalyDataset(data_root, category, split, config.img_size, cache=True,
                                smallest_scale=smallest_scale).check(skip_corrupt) for split in ("train", "test"))


def resume_refusal(saved_epoch, epochs: int) -> str | None:
    """Why a run saved at `saved_epoch` cannot be continued to `epochs` (None: it can): a resume never lowers the
    epochs (its weights and history would be labelled with fewer than they have). Train and the grid ask this."""
    if isinstance(saved_epoch, int) and saved_epoch > epochs:
        return (f"its checkpoint.pt is at epoch {saved_epoch}, and a resume never lowers the epochs (its weights and "
                f"history would be labelled {epochs}); the earlier evaluations are in best.pt and history.csv, or "
                f"pass --epochs {saved_epoch} or more")
    return None


def _resume_checkpoint(config: Config, category: str, out_dir: Path) -> dict:
    """out_dir/checkpoint.pt, checked to continue this config on this category."""
    ckpt = load_checkpoint(out_dir / "checkpoint.pt", verify=False)  # a run in progress has no metrics.json yet
    diff = Config.from_dict(ckpt["config"]).protocol_differences(config, resuming=True)
    if diff:
        text = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"cannot resume {out_dir}: the config changed ({text})")
    if ckpt.get("category") != category:
        raise CheckpointError(f"cannot resume {out_dir}: it was trained on category {ckpt.get('category')!r}")
    epoch = ckpt.get("epoch")
    refusal = resume_refusal(epoch, config.epochs)
    if refusal:
        raise CheckpointError(f"cannot resume {out_dir} to {config.epochs} epochs: {refusal}")
    needed = RESUME_KEYS if epoch is None or epoch < config.epochs else ("epoch", "history")
    missing = [k for k in needed if k not in ckpt]
    if missing and ckpt.get("finished"):
        raise CheckpointError(f"cannot resume {out_dir} to {config.epochs} epochs: its run finished at epoch {epoch} "
                              "and checkpoint.pt kept the weights but not the optimizer state (train with "
                              "keep_optimizer=True, CLI --keep-optimizer, to extend a run later); start a new run")
    if missing:
        raise CheckpointError(f"cannot resume {out_dir}: its checkpoint.pt lacks {', '.join(missing)} "
                              f"(kind {ckpt.get('kind')!r}; only the 'last' checkpoint of a run resumes)")
    return ckpt


def _check_same_data(out_dir: Path, ckpt: dict, data: dict) -> None:
    """CheckpointError unless the images read now are those the checkpoint's run read (its data record)."""
    from adnlib.run.identity import data_differences, describe
    diff = data_differences(ckpt.get("data"), data)
    if diff:
        raise CheckpointError(f"cannot resume {out_dir}: its run read other images ({describe(diff, 'then', 'now')})")


def _clean_output(out_dir: Path, resume: bool, overwrite: bool) -> None:
    if overwrite and not resume:  # no stale file of the replaced run may survive
        for name in RESULT_FILES:
            (out_dir / name).unlink(missing_ok=True)
    if out_dir.is_dir():  # side files of writes a kill interrupted (see atomic_write)
        for name in RESULT_FILES:
            for leftover in out_dir.glob(f".{name}.*.tmp"):
                leftover.unlink(missing_ok=True)


def _build(config: Config, ckpt: dict | None, device: torch.device):
    """The model (initialised from config.seed, or the checkpoint's weights) on `device`, and its optimizer."""
    if ckpt is not None:
        from adnlib.model.weights import load_alexnet_features
        features, _ = load_alexnet_features("none", config.seed)
        model = AttentDifferNet(config, features=features, backbone_weights=ckpt["backbone_weights"])
        model.load_state_dict(ckpt["model_state"])
    else:
        model = AttentDifferNet(config)
    model.to(device)
    if config.compile:  # in place: the state-dict keys stay those of an uncompiled model, so checkpoints load
        model.embedding.compile()
    optimizer = model.make_optimizer()
    if ckpt is not None and "optimizer_state" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer_state"])
    return model, optimizer


def _restore(run: _Run, ckpt: dict) -> None:
    """Continue where checkpoint.pt stopped: epoch, history, best, generator states."""
    run.resumed, run.resumable = True, "optimizer_state" in ckpt
    run.start_epoch = run.saved_epoch = ckpt["epoch"]
    run.history, run.best = list(ckpt["history"]), ckpt.get("best")
    run.train_seconds = float(ckpt.get("train_seconds", 0.0))
    if "loader_generator" in ckpt:
        run.loader_generator.set_state(ckpt["loader_generator"])
        run.rotation_generator.set_state(ckpt["rotation_generator"])
    if run.best is not None and (run.out_dir / "scores_best.csv").exists():
        run.best_scores = pd.read_csv(run.out_dir / "scores_best.csv")
    best_path = run.out_dir / "best.pt"
    if run.start_epoch < run.config.epochs and best_path.exists():
        best = load_checkpoint(best_path, mmap=True, verify=False)  # a run in progress: no record yet
        if WEIGHTS_IN in best:  # it points at the weights just restored: copy them before checkpoint.pt moves on
            save_checkpoint(best_path, model=run.model, kind=best["kind"],
                            extra={k: best[k] for k in ("epoch", "category", "auroc") if k in best})


def _start(config: Config, data_root, category: str, out_dir, *, resume: bool, overwrite: bool,
           skip_corrupt: bool, progress: bool) -> _Run:
    """Build or restore: check the output folder, read the data, build the model and optimizer, restore a run."""
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir, the folder of the run to continue (CLI: --out)")
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        check_output_dir(out_dir, resume, overwrite)
    device = resolve_device(config.device)
    check_precision(config.amp, device)
    _check_memory(config, data_root, category, device)
    ckpt = _resume_checkpoint(config, category, out_dir) if resume else None
    model, optimizer = _build(config, ckpt, device)
    if out_dir is not None:  # before the data is read and before the replaced run's files go
        _check_room(model, out_dir)
    train_set, test_set = _read_data(config, data_root, category, skip_corrupt)
    data = data_record(data_root, category, {"train": train_set.samples, "test": test_set.samples})
    if ckpt is not None:
        _check_same_data(out_dir, ckpt, data)
    if out_dir is not None:
        _clean_output(out_dir, resume, overwrite)
    run = _Run(config, category, out_dir, device, train_set, test_set, model, optimizer,
               loader_generator=torch.Generator().manual_seed(stream_seed(config.seed, "data_order")),
               rotation_generator=torch.Generator().manual_seed(stream_seed(config.seed, "train_rotations")),
               data=data)
    if ckpt is not None:
        _restore(run, ckpt)
    run.loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=run.loader_generator,
                            num_workers=config.num_workers)
    if config.feature_cache and run.start_epoch < config.epochs:
        run.cache = FeatureCache(model, train_set, config.cache_rotations, device,
                                 torch.Generator().manual_seed(stream_seed(config.seed, "feature_cache")),
                                 config.test_batch_size, progress)
    return run


def _check_room(model: AttentDifferNet, out_dir: Path) -> None:
    """OutputWriteError now, not after an epoch, if out_dir cannot be written or lacks room for the checkpoints.

    The peak: a resumable checkpoint.pt being replaced (old file and new copy side by side, atomic_write) and
    best.pt (weights only); the files of the run already there are replaced, so they count as room."""
    from adnlib.run.outputs import check_output_folder, checkpoint_bytes, state_bytes
    checkpoint = checkpoint_bytes(model)
    present = sum((out_dir / name).stat().st_size for name in ("checkpoint.pt", "best.pt")
                  if (out_dir / name).is_file())
    check_output_folder(out_dir, max(0, 2 * checkpoint + state_bytes(model) - present),
                        largest=f"checkpoint.pt (up to {checkpoint / 1e6:.1f} MB, twice while it is replaced) and "
                                "best.pt")


def _train_epoch(run: _Run, epoch: int, progress: bool) -> tuple[dict, int]:
    """One pass over the training data -> (its history entry, its number of steps).

    The loss is checked every step (the step's one host sync); feature norms and attention means are recorded by
    hooks that exist only during the epoch, on the device, and read once at its end. Under config.compile the
    attention means are not recorded: hooks added and removed each epoch on modules inside the compiled embedding
    would be traced into its graph or force it to recompile.
    """
    model, config = run.model, run.config
    model.train()
    started = time.perf_counter()
    losses = []
    with contextlib.ExitStack() as hooks:
        norms = hooks.enter_context(_FlowInputNorms(model))
        gates = None if config.compile else hooks.enter_context(GateMonitor(model))
        for step, (images, _, indices) in enumerate(progress_bar(run.loader, desc=f"epoch {epoch}", leave=False,
                                                          disable=not progress)):
            if run.cache is not None:
                y = run.cache.sample(indices, config.n_train_rotations, run.rotation_generator)
                loss = train_step(model, run.optimizer, embeddings=y)
            else:
                loss = train_step(model, run.optimizer,
                                  *training_batch(images.to(run.device), config, run.rotation_generator))
            if not torch.isfinite(loss):
                run.diverged(f"loss became {loss.item()} at epoch {epoch}, step {step + 1}")
            losses.append(loss)
        loss_values, norm_values = torch.stack(losses).tolist(), torch.stack(norms.values).tolist()
        attention = gates.stats() if gates is not None else {}
    entry = {"epoch": epoch, "loss": float(np.mean(loss_values)), "seconds": time.perf_counter() - started,
             "feature_norm": float(np.mean(norm_values)), **attention}
    return entry, len(losses)


def _evaluate(run: _Run, epoch: int, entry: dict, progress: bool) -> None:
    """Score the test set, record the AUROC in `entry`, keep the best evaluation (best.pt, scores_best.csv).

    A best evaluation at the final epoch writes no weights here: they are checkpoint.pt's, and best.pt becomes a
    pointer to it once that is saved (`_save_last`).
    """
    scores = score_dataset(run.model, run.test_set, device=run.device, seed=run.config.seed, evaluation=epoch,
                           progress=progress)
    bad = int((~np.isfinite(scores["score"].to_numpy())).sum())
    if bad:
        run.diverged(f"{bad} of {len(scores)} test scores are not finite after epoch {epoch}")
    entry["auroc"] = report(scores)["auroc"]
    run.last_scores = scores
    if run.best is None or entry["auroc"] > run.best["auroc"]:
        run.best, run.best_scores = {"auroc": entry["auroc"], "epoch": epoch}, scores
        if run.out_dir is not None:
            if epoch < run.config.epochs:
                save_checkpoint(run.out_dir / "best.pt", model=run.model, kind=BEST_KIND,
                                extra={"epoch": epoch, "category": run.category, "auroc": entry["auroc"]})
            write_csv(run.out_dir / "scores_best.csv", scores)


def _save_last(run: _Run, epoch: int, keep_optimizer: bool) -> None:
    """checkpoint.pt at `epoch`: resumable (optimizer and generator states) until the run has finished, then the
    weights only unless keep_optimizer; best.pt points at it when the best evaluation is this epoch's."""
    finished = epoch >= run.config.epochs
    state = {"epoch": epoch, "category": run.category, "data": run.data, "history": run.history, "best": run.best,
             "auroc": run.history[-1].get("auroc") if run.history else None, "train_seconds": run.train_seconds,
             "finished": finished}
    run.resumable = keep_optimizer or not finished
    if run.resumable:
        state.update(optimizer_state=run.optimizer.state_dict(), loader_generator=run.loader_generator.get_state(),
                     rotation_generator=run.rotation_generator.get_state())
    started = time.perf_counter()
    save_checkpoint(run.out_dir / "checkpoint.pt", model=run.model, kind="last", extra=state)
    run.save_cost, run.since_save, run.saved_epoch = time.perf_counter() - started, 0.0, epoch
    if finished:
        _point_best_at_last(run)


def _point_best_at_last(run: _Run) -> None:
    """best.pt as a pointer to checkpoint.pt when the best evaluation is the epoch checkpoint.pt holds."""
    if run.best is not None and run.best["epoch"] == run.saved_epoch:
        save_pointer(run.out_dir / "best.pt", model=run.model, kind=BEST_KIND, weights_in="checkpoint.pt",
                     extra={"epoch": run.saved_epoch, "category": run.category, "auroc": run.best["auroc"]})


def _periodic_save(run: _Run, epoch: int, checkpoint_every: int | None) -> bool:
    if checkpoint_every is None:
        return run.save_cost <= CHECKPOINT_OVERHEAD * run.since_save
    return checkpoint_every > 0 and epoch % checkpoint_every == 0


def _metrics(run: _Run, data_root, final: dict) -> dict:
    config, best, last_epoch = run.config, run.best, run.saved_epoch or run.config.epochs
    return {
        "auroc": final["auroc"], "auroc_best": best["auroc"] if best else final["auroc"],
        "best_epoch": best["epoch"] if best else config.epochs,
        "best_selection": "max AUROC over evaluations on the test set (as the official DifferNet code prints)",
        "best_weights_in": "checkpoint.pt" if best is None or best["epoch"] == last_epoch else "best.pt",
        "checkpoint_keeps_optimizer": run.resumable,
        "auroc_per_defect": final["auroc_per_defect"], "variant": config.variant, "category": run.category,
        "data_root": str(data_root), "epochs": config.epochs, "backbone_weights": run.model.backbone_weights,
        "backbone": run.model.backbone_record(), "data": run.data,
        "train_seconds": round(run.train_seconds, 2), "seed": config.seed, "seeds": _seeds(config),
        **precision_record(config.amp, run.device),
        "test_rotations": rotation_record(config, evaluation=last_epoch),
        "attention_init": config.attention_init, "resumed_from_epoch": run.start_epoch if run.resumed else None,
        "n_train": len(run.train_set), "n_test_normal": final["n_normal"], "n_test_anomalous": final["n_anomalous"],
        "parameters": run.model.parameter_counts(), "config": config.to_dict(), "versions": versions(),
    }


def _finish(run: _Run, data_root, keep_optimizer: bool, progress: bool) -> TrainResult:
    """Final scores and metrics, and the result files."""
    if run.last_scores is None:  # resumed a run that had already finished: score it again
        run.last_scores = score_dataset(run.model, run.test_set, device=run.device, seed=run.config.seed,
                                        evaluation=run.saved_epoch, progress=progress)
        if run.out_dir is not None and run.resumable and not keep_optimizer:
            _save_last(run, run.saved_epoch, keep_optimizer)  # a finished run's checkpoint: the weights only
        elif run.out_dir is not None:
            _point_best_at_last(run)  # (again: a kill may have come between checkpoint.pt and best.pt)
    metrics = _metrics(run, data_root, report(run.last_scores))
    history = pd.DataFrame(run.history)
    if run.out_dir is not None:
        write_csv(run.out_dir / "scores.csv", run.last_scores)
        write_csv(run.out_dir / "history.csv", history)
        best_epoch = run.best["epoch"] if run.best else run.saved_epoch
        metrics["weights"] = weights_record(run.out_dir, {"checkpoint.pt": run.saved_epoch, "best.pt": best_epoch},
                                            len(run.loader))
        write_json(run.out_dir / "metrics.json", metrics)
    return TrainResult(model=run.model, history=history, scores=run.last_scores, metrics=metrics,
                       best_scores=run.best_scores, out_dir=run.out_dir)


def train(config: Config, data_root: str | Path, category: str, out_dir: str | Path | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True, skip_corrupt: bool = False,
          checkpoint_every: int | None = None, keep_optimizer: bool = False, wait: float = 0) -> TrainResult:
    """Train one variant on one category and evaluate it every `config.eval_every` epochs (and at the end).

    data_root: a dataset in the MVTec AD layout (`<data_root>/<category>/train/good/*.png`, ...). out_dir: where the
    run's files go (checkpoint.pt, best.pt, metrics.json, scores.csv, scores_best.csv, history.csv), checked
    writable first and held under its write lock throughout (`wait` seconds for another writer); None keeps the run
    in memory. checkpoint_every: save the resumable checkpoint.pt every N epochs; None (default) saves after each
    epoch while a save costs under 10% of the training time since the last one; 0 saves only at evaluations. It is
    always saved at evaluations. resume: continue the run in out_dir from its checkpoint.pt. keep_optimizer: keep
    the optimizer and generator states in the finished run's checkpoint.pt (about 3x its size for the paper flow),
    so that it can be resumed later with more epochs; by default a finished checkpoint holds the weights only.
    The global random, numpy and torch generators are neither seeded nor used. -> TrainResult (model, history per
    epoch, scores per test image, metrics: AUROC last and best as fractions in [0, 1], ...).

    >>> import adnlib
    >>> result = adnlib.train(adnlib.preset("smoke", variant="se"), "data/demo", "disc", "runs/se-disc")
    >>> round(result.metrics["auroc"], 2), list(result.history.columns)[:3]  # doctest: +SKIP
    (0.62, ['epoch', 'loss', 'seconds'])
    """
    if out_dir is None:
        return _train(config, data_root, category, None, resume, overwrite, progress, skip_corrupt,
                      checkpoint_every, keep_optimizer)
    from adnlib.data.datasets import category_dir
    from adnlib.io import check_output_folder
    from adnlib.run.lock import folder_lock
    category_dir(data_root, category)  # a missing dataset: one error before a folder is made for its results
    if resume and not Path(out_dir).is_dir():
        check_output_dir(Path(out_dir), resume, overwrite)  # "nothing to resume": before a folder is made for it
    check_output_folder(out_dir)  # writable now (the room for its checkpoints is checked before data is read)
    with folder_lock(out_dir, wait=wait, command="adnlib train"):
        return _train(config, data_root, category, out_dir, resume, overwrite, progress, skip_corrupt,
                      checkpoint_every, keep_optimizer)


def _train(config: Config, data_root, category: str, out_dir, resume: bool, overwrite: bool, progress: bool,
           skip_corrupt: bool, checkpoint_every: int | None, keep_optimizer: bool) -> TrainResult:
    run = _start(config, data_root, category, out_dir, resume=resume, overwrite=overwrite,
                 skip_corrupt=skip_corrupt, progress=progress)
    epochs = progress_bar(range(run.start_epoch + 1, config.epochs + 1), desc=f"{config.variant} on {category}",
                          disable=not progress, initial=run.start_epoch, total=config.epochs)
    for epoch in epochs:
        started = time.perf_counter()
        entry, steps = _train_epoch(run, epoch, progress)
        run.train_seconds += entry["seconds"]
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        checked = evaluate_now
        if evaluate_now:  # never evaluate (or save, below) parameters that the last step made non-finite
            _check_parameters(run, epoch, steps)
            _evaluate(run, epoch, entry, progress)
        run.history.append(entry)
        epochs.set_postfix(loss=f"{entry['loss']:.3f}", **({"auroc": f"{entry['auroc']:.3f}"} if evaluate_now else {}))
        run.since_save += time.perf_counter() - started
        if run.out_dir is not None and (evaluate_now or _periodic_save(run, epoch, checkpoint_every)):
            if not checked:
                _check_parameters(run, epoch, steps)
            _save_last(run, epoch, keep_optimizer)
    return _finish(run, data_root, keep_optimizer, progress)


def _check_parameters(run: _Run, epoch: int, steps: int) -> None:
    if not _all_finite(run.model):  # the loss is checked every step: only the last step can have done this
        run.diverged(f"parameters became non-finite in the last step of epoch {epoch} (step {steps})")
