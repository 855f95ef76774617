"""DifferNet's normalizing flow in FrEIA: 8 × [fixed random permutation, GLOW coupling], and its NLL loss."""
from __future__ import annotations

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import nn


class SoftAtanClamp:
    """f(s) = 0.636·atan(s/clamp); FrEIA multiplies by clamp, giving DifferNet's clamp·0.636·atan(s/clamp).

    A class rather than a lambda so that the flow pickles. (FrEIA's built-in "ATAN" is clamp·0.636·atan(s):
    not the same function.)
    """

    def __init__(self, clamp: float):
        self.clamp = float(clamp)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        return 0.636 * torch.atan(s / self.clamp)

    def __repr__(self) -> str:
        return f"SoftAtanClamp(clamp={self.clamp})"


class DifferNetSubnet(nn.Sequential):
    """DifferNet's coupling subnet: 3 hidden layers of `hidden` units with ReLU, no dropout, no batch norm."""

    def __init__(self, dims_in: int, dims_out: int, hidden: int = 2048):
        super().__init__(
            nn.Linear(dims_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, dims_out),
        )


class _SubnetFactory:
    """Picklable subnet constructor for FrEIA (it calls subnet_constructor(dims_in, dims_out))."""

    def __init__(self, hidden: int):
        self.hidden = hidden

    def __call__(self, dims_in: int, dims_out: int) -> nn.Module:
        return DifferNetSubnet(dims_in, dims_out, self.hidden)


def build_flow(dim: int = 768, n_coupling_blocks: int = 8, hidden: int = 2048, clamp: float = 3.0) -> Ff.SequenceINN:
    """FrEIA SequenceINN of [PermuteRandom(seed=k), GLOWCouplingBlock] × n; maps (B, dim) -> ((B, dim), (B,)).

    FrEIA's PermuteRandom(seed=k) calls np.random.seed(k): numpy's global state is restored afterwards, so that
    building a flow does not reseed the caller's generator. (The coupling weights come from torch's generator:
    seed it, or fork it, around this call.)
    """
    numpy_state = np.random.get_state()
    try:
        flow = Ff.SequenceINN(dim)
        for k in range(n_coupling_blocks):
            flow.append(Fm.PermuteRandom, seed=k)
            flow.append(Fm.GLOWCouplingBlock, subnet_constructor=_SubnetFactory(hidden), clamp=clamp,
                        clamp_activation=SoftAtanClamp(clamp))
    finally:
        np.random.set_state(numpy_state)
    return flow


def count_trainable(module: nn.Module) -> int:
    """Number of parameters that receive gradients (FrEIA keeps permutations as frozen Parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def nll_loss(z: torch.Tensor, log_jac_det: torch.Tensor) -> torch.Tensor:
    """DifferNet's loss: mean over the batch of (0.5·Σz² − log|det J|) / dim; z (B, dim), log_jac_det (B,)."""
    return torch.mean(0.5 * torch.sum(z ** 2, dim=1) - log_jac_det) / z.shape[1]
