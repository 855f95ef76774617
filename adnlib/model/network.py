"""AttentDifferNet: (attention) AlexNet at several scales -> 768-d embedding -> normalizing flow -> z.

DifferNet is the variant 'differnet' (no attention). An image's anomaly score is the mean of z² over its rotated
copies and over dimensions.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from adnlib.config import Config
from adnlib.model.backbone import AttentionAlexNet, MultiScaleEmbedding
from adnlib.model.flow import build_flow, count_trainable
from adnlib.model.transforms import normalize, rotate_nearest, scoring_angles, to_unit
from adnlib.model.weights import backbone_record, load_alexnet_features
from adnlib.seeds import stream_seed

_unfused_warned = False  # make_optimizer's fallback warning: once per process


def init_seeds(seed: int) -> dict[str, int]:
    """The seeds of a model's initialisation: the flow's from the run's seed alone (the same for every variant),
    the attention blocks' from a stream of their own (`adnlib.seeds`)."""
    return {purpose: stream_seed(seed, purpose) for purpose in ("flow_init", "attention_init")}


def _warn_unfused(reason: str) -> None:
    global _unfused_warned
    if not _unfused_warned:
        _unfused_warned = True
        warnings.warn(f"fused Adam is not available ({reason}): using torch's default Adam, the same update but "
                      "several times slower on large flows", RuntimeWarning, stacklevel=3)


class AttentDifferNet(nn.Module):
    """The whole model. Inputs are ImageNet-normalised (B,3,S,S); `score` takes [0,1] or uint8 images."""

    def __init__(self, config: Config, features: nn.Sequential | None = None, backbone_weights: str | None = None):
        super().__init__()
        self.config = config
        if features is None:
            features, backbone_weights = load_alexnet_features(config.weights,
                                                               stream_seed(config.seed, "random_backbone"))
        self.backbone_weights = backbone_weights or "unknown"
        # Paired initialisation: the flow's weights depend on the seed only, never on the variant, so DifferNet, SE
        # and CBAM with one seed start from the same flow (torch.equal); the attention blocks draw from a stream of
        # their own (seeds: `init_seeds`). fork_rng restores the caller's CPU generator, and only the CPU one is
        # seeded (torch.manual_seed would also reseed every CUDA generator); build_flow restores numpy's global
        # state, which FrEIA's PermuteRandom reseeds.
        seeds = init_seeds(config.seed)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seeds["flow_init"])
            flow = build_flow(config.embedding_dim, config.n_coupling_blocks, config.fc_hidden, config.clamp)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seeds["attention_init"])
            self.backbone = AttentionAlexNet(features, config)
        self.flow = flow  # registered after the backbone, as before: the state-dict and parameter order stay
        self.embedding = MultiScaleEmbedding(self.backbone, config.n_scales, config.scale_mode)
        if config.channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    # --- pieces -----------------------------------------------------------------------------------------
    def _autocast(self, x: torch.Tensor):
        """config.amp: bfloat16 autocast for the backbone (CUDA or CPU; `check_precision` refuses other devices)."""
        if self.config.amp and x.device.type in ("cuda", "cpu"):
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, images: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        """[0,1] or uint8 images (B,3,S,S) -> normalised input in the configured memory format.

        With angles (B, n): the n rotated copies of each image, (B·n,3,S,S), equal to
        ``prepare(rotated_copies(images, angles))`` but normalising B images instead of B·n copies and gathering
        the copies straight into the backbone's memory format.
        """
        memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        x = normalize(to_unit(images))
        if angles is None:
            return x.contiguous(memory_format=memory_format)
        black = normalize(x.new_zeros(1, x.shape[1], 1, 1)).reshape(-1)  # the rotation's zero fill, normalised
        return rotate_nearest(x, angles.to(x.device), fill=black, memory_format=memory_format)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,S,S) -> embedding (B, 256·n_scales), float32."""
        with self._autocast(x):
            y = self.embedding(x)
        return y.float()

    def flow_forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding (B,D) -> z (B,D), log|det J| (B,)."""
        return self.flow(y)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B,3,S,S) -> z (B,D), log|det J| (B,)."""
        return self.flow_forward(self.embed(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: the flow, plus the attention blocks unless frozen."""
        return [p for p in self.parameters() if p.requires_grad]

    def make_optimizer(self) -> torch.optim.Adam:
        """DifferNet's Adam (config lr, betas, eps, weight decay) over `trainable_parameters()`; with
        `attention_lr` set, the attention blocks form a second group at that learning rate.

        Uses the fused kernel where torch has one for the parameters' device (CPU, CUDA): the same update in one
        pass over the 172M flow parameters instead of a dozen, ~5x faster on CPU (benchmarks/speed.py). Where it
        has none, torch's default Adam does the same update, with a warning (once per process).
        """
        tensors = self.trainable_parameters()
        c = self.config
        kwargs = {"lr": c.lr, "betas": c.betas, "eps": c.eps, "weight_decay": c.weight_decay}
        attention = {id(p) for p in self.backbone.attention.parameters()}
        params: list = tensors
        if c.attention_lr is not None and any(id(p) in attention for p in tensors):
            # two groups: the flow at lr, the attention blocks at attention_lr (a recorded deviation)
            params = [{"params": [p for p in tensors if id(p) not in attention]},
                      {"params": [p for p in tensors if id(p) in attention], "lr": c.attention_lr}]
        devices = sorted({p.device.type for p in tensors})
        if not all(p.dtype.is_floating_point for p in tensors) or not set(devices) <= {"cpu", "cuda"}:
            _warn_unfused(f"parameters on {', '.join(devices)}")
        else:
            try:
                return torch.optim.Adam(params, fused=True, **kwargs)
            except (RuntimeError, ValueError) as exc:  # an older torch or an unsupported device/dtype
                _warn_unfused(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return torch.optim.Adam(params, **kwargs)

    def backbone_record(self) -> dict:
        """What this model's frozen AlexNet features are (adnlib.model.weights.backbone_record): the source it was
        built from and the hash of the weights it holds now."""
        return backbone_record(self.backbone.features, self.backbone_weights)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts per part (flow, attention) and the frozen backbone size."""
        return {"flow": count_trainable(self.flow),
                "attention": sum(p.numel() for p in self.backbone.attention.parameters()),
                "backbone_frozen": sum(p.numel() for p in self.backbone.features.parameters())}

    # --- scoring ----------------------------------------------------------------------------------------
    @staticmethod
    def score_from_z(z: torch.Tensor, n_rotations: int) -> torch.Tensor:
        """z (B·n, D) grouped per image -> score (B,) = mean of z² over rotations and dimensions."""
        return (z.reshape(-1, n_rotations, z.shape[-1]) ** 2).mean(dim=(1, 2))

    @torch.inference_mode()
    def score(self, images: torch.Tensor, n_rotations: int | None = None, mode: str | None = None,
              generator: torch.Generator | None = None, angles: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly scores (B,) of [0,1] or uint8 images (B,3,S,S) from rotated copies (angles (B,n) optional)."""
        if angles is None:
            angles = scoring_angles(images.shape[0], n_rotations or self.config.n_test_rotations,
                                 mode or self.config.test_rotations, self.config.rotation_degrees, generator)
        z, _ = self(self.prepare(images, angles))
        return self.score_from_z(z, angles.shape[1])
