"""One dataclass with every protocol value, named presets, and explicit overrides.

The defaults are DifferNet's official protocol (docs/protocol.md §2); AttentDifferNet's open points
(docs/protocol.md §3) are fields too, so an ablation is a changed field, not an edited module.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from adnlib.errors import ConfigError

VARIANTS = ("differnet", "se", "cbam")
ATTENTION_INITS = ("standard", "open", "reference")  # reference: CBAM with cbam_spatial_bn only
MAX_SEED = 2 ** 32 - 1  # an unsigned 32-bit seed (numpy's range); every random stream derives from it (adnlib.seeds)
# A field marked runtime() is a setting of the machine, not of the protocol: it does not change what a run computes
# (only where and how fast), so runs that differ only there are the same run (reused, resumed, compared).
_RUNTIME = {"runtime": True}
# The fields a resume may change besides the run-time ones: the run continues to more epochs, evaluated as asked.
RESUMABLE_PROTOCOL = ("epochs", "eval_every")


def runtime(default: Any) -> Any:
    """A run-time field (see _RUNTIME) with its default."""
    return field(default=default, metadata=_RUNTIME)


def architecture(default: Any) -> Any:
    """A field that defines the model (its architecture: what a checkpoint's weights mean): a checkpoint fits only
    a config that agrees on every one of them (`adnlib.run.checkpoint.check_expected`)."""
    return field(default=default, metadata={"architecture": True})


FEATURE_CACHE_NEEDS_FROZEN = ("feature_cache needs a frozen backbone: use variant 'differnet' or "
                              "train_attention=False (--freeze-attention); cached embeddings of a backbone that "
                              "trains would be stale after the first step")


@dataclass(frozen=True)
class Config:
    # model
    variant: str = architecture("differnet")  # differnet | se | cbam
    img_size: int = architecture(448)
    n_scales: int = architecture(3)  # scales img_size / 2**s, s = 0..n_scales-1
    scale_mode: str = architecture("nearest")  # F.interpolate mode; the official code uses the default (nearest)
    weights: str = "auto"  # auto | imagenet | none | path to a .pth file
    se_reduction: int = architecture(16)
    cbam_reduction: int = architecture(16)
    cbam_kernel_size: int = architecture(7)
    # Figure 1: the third block after conv5+ReLU, before AlexNet's last max-pool
    block3_before_final_pool: bool = architecture(True)
    train_attention: bool = True  # False keeps the (random-init) attention blocks frozen: ablation only
    # standard: PyTorch's default initialisation, gates start near 0.5 (faithful); open: every gate starts at 0.95
    # for every input (zero final weights, bias logit 0.95), so the blocks do not shrink the embedding at the start
    attention_init: str = "standard"
    cbam_spatial_bn: bool = False  # the original CBAM code's BatchNorm after the spatial conv (not in the paper)
    n_coupling_blocks: int = architecture(8)
    fc_hidden: int = architecture(2048)
    clamp: float = architecture(3.0)
    # optimisation
    lr: float = 2e-4
    # None: the attention blocks learn at `lr`, like the flow (faithful; the paper preset). A number is a recorded
    # deviation, taken by the demo preset: its 32 steps at 2e-4 barely move the gates (docs/protocol.md §8)
    attention_lr: float | None = None
    betas: tuple[float, float] = (0.8, 0.8)
    eps: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = 24  # images per step; each contributes n_train_rotations tensors
    n_train_rotations: int = 4
    rotation_degrees: float = 180.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    epochs: int = 192  # official: 24 meta-epochs x 8 sub-epochs
    eval_every: int = 8  # evaluate after each meta-epoch
    # test
    n_test_rotations: int = 64
    test_rotations: str = "random"  # random (official) | fixed (evenly spaced angles, deterministic)
    test_batch_size: int = runtime(4)  # images per scoring step (x n_test_rotations tensors)
    # precision: float32 everywhere, as the official code. amp=True changes the maths (recorded in metrics.json):
    # bfloat16 autocast for the backbone and attention (CUDA with bf16 support, or CPU), the flow in float32
    amp: bool = False
    # speed (docs/protocol.md §6): the run-time fields change only how fast; the feature cache changes which
    # rotations training sees (K fixed per image instead of fresh ones every epoch), so it is part of the protocol
    channels_last: bool = runtime(True)
    compile: bool = runtime(False)
    feature_cache: bool = False  # frozen backbones only: embed K rotations per image once, epochs sample them
    cache_rotations: int = 16
    num_workers: int = runtime(0)
    # run
    seed: int = 0
    device: str = runtime("auto")

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        smallest = self.img_size // 2 ** (self.n_scales - 1)
        if self.n_scales < 1 or smallest < 63:
            raise ConfigError(
                f"img_size {self.img_size} with {self.n_scales} scales gives a smallest scale of {smallest} px; "
                "AlexNet needs at least 63 px (use img_size >= 252 for 3 scales, or fewer scales)")
        if self.attention_init not in ATTENTION_INITS:
            raise ConfigError(f"attention_init must be one of {', '.join(ATTENTION_INITS)}, "
                              f"not {self.attention_init!r}")
        if self.attention_init == "reference" and self.variant != "differnet" and not (
                self.variant == "cbam" and self.cbam_spatial_bn):
            raise ConfigError("attention_init 'reference' is the CBAM authors' initialisation, which needs "
                              "variant 'cbam' with cbam_spatial_bn=True (--cbam-spatial-bn)")
        if self.attention_lr is not None and (isinstance(self.attention_lr, bool) or not (
                isinstance(self.attention_lr, numbers.Real) and 0 < self.attention_lr < float("inf"))):
            raise ConfigError(f"attention_lr must be a positive number or None, not {self.attention_lr!r}")
        if self.test_rotations not in ("random", "fixed"):
            raise ConfigError(f"test_rotations must be 'random' or 'fixed', not {self.test_rotations!r}")
        for name in ("epochs", "eval_every", "batch_size", "n_train_rotations", "n_test_rotations",
                     "test_batch_size", "n_coupling_blocks", "fc_hidden", "cache_rotations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), not {self.seed!r}")
        if self.feature_cache and self.backbone_trains:
            raise ConfigError(FEATURE_CACHE_NEEDS_FROZEN)

    @property
    def embedding_dim(self) -> int:
        return 256 * self.n_scales

    @property
    def has_attention(self) -> bool:
        return self.variant != "differnet"

    @property
    def color_jitter(self) -> bool:
        """Whether colour jitter is on (applied after the rotation, in training and at test time, as officially)."""
        return bool(self.brightness or self.contrast or self.saturation)

    @property
    def backbone_trains(self) -> bool:
        return self.has_attention and self.train_attention

    @classmethod
    def architecture_fields(cls) -> tuple[str, ...]:
        """The fields that define the model (`architecture`)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("architecture"))

    @classmethod
    def runtime_fields(cls) -> tuple[str, ...]:
        """The fields that are settings of the machine (device, workers, compilation, memory layout, scoring batch):
        they change how fast a run goes, not what it computes."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("runtime"))

    def protocol(self) -> dict:
        """The fields that decide what a run computes (to_dict without the run-time fields): what reuse, resume and
        comparisons of runs compare."""
        runtime_names = set(self.runtime_fields())
        return {k: v for k, v in self.to_dict().items() if k not in runtime_names}

    def protocol_differences(self, other: Config, *, resuming: bool = False) -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's)} where the protocols differ; resuming: also ignore what a resume may
        change (RESUMABLE_PROTOCOL)."""
        mine, theirs = self.protocol(), other.protocol()
        ignore = RESUMABLE_PROTOCOL if resuming else ()
        return {k: (mine[k], theirs.get(k)) for k in mine if k not in ignore and mine[k] != theirs.get(k)}

    def replace(self, **overrides: Any) -> Config:
        """A copy with some fields changed; unknown names raise ConfigError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """Inverse of to_dict. Fields this version does not know (a config saved by a newer adnlib) are dropped with
        a warning naming them; fields missing from `d` take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            warnings.warn(f"ignoring config field(s) this adnlib version does not know: {', '.join(unknown)} "
                          "(saved by a newer version?)", stacklevel=2)
        kept = {k: v for k, v in d.items() if k in known}
        if "betas" in kept:
            kept["betas"] = tuple(kept["betas"])
        return cls(**kept)


PRESETS: dict[str, dict[str, Any]] = {
    # DifferNet's official protocol at full size (GPU recommended).
    "paper": {},
    # A laptop CPU in a few minutes: full 3-scale structure at 256 px, a smaller flow, few epochs, and the attention
    # blocks at their own learning rate so that their gates move within those few steps (a deviation, recorded).
    "demo": dict(img_size=256, fc_hidden=256, batch_size=12, epochs=8, eval_every=2, n_test_rotations=8,
                 test_batch_size=8, test_rotations="fixed", weights="auto", attention_lr=2e-3),
    # Seconds: for tests and CI.
    "smoke": dict(img_size=128, n_scales=2, fc_hidden=64, n_coupling_blocks=4, batch_size=8, n_train_rotations=2,
                  epochs=1, eval_every=1, n_test_rotations=2, test_batch_size=8, test_rotations="fixed",
                  weights="none"),
}


def preset(name: str = "paper", **overrides: Any) -> Config:
    """The named preset with `overrides` applied, e.g. ``preset("smoke", variant="se")``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return Config().replace(**{**PRESETS[name], **overrides})
