"""2-D toy densities for learning normalizing flows before DifferNet (notebook 01).

The same `build_flow` and `nll_loss` as DifferNet, on two dimensions, so that x -> z, z -> x and the density
log p(x) = log N(z; 0, I) + log|det ∂z/∂x| can be drawn.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from adnlib.model.flow import build_flow, nll_loss
from adnlib.progress import progress_bar


def toy_data(kind: str = "moons", n: int = 2000, noise: float = 0.06, seed: int = 0) -> torch.Tensor:
    """Samples (n, 2) of a toy density: "moons" (two interleaved half circles) or "ring"; centred, unit scale."""
    rng = np.random.default_rng(seed)
    if kind == "moons":
        half = n // 2
        t = rng.uniform(0, np.pi, n)
        upper = np.stack([np.cos(t[:half]), np.sin(t[:half])], 1)
        lower = np.stack([1 - np.cos(t[half:]), 0.5 - np.sin(t[half:])], 1)
        x = np.concatenate([upper, lower]) - np.array([0.5, 0.25])
        x = x * 1.6 + rng.normal(0, noise * 1.6, (n, 2))
    elif kind == "ring":
        angle = rng.uniform(0, 2 * np.pi, n)
        radius = 1.5 + rng.normal(0, noise * 2, n)
        x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    else:
        raise ValueError(f"unknown toy density {kind!r}; choose 'moons' or 'ring'")
    return torch.as_tensor(x[rng.permutation(n)], dtype=torch.float32)


def toy_flow(n_coupling_blocks: int = 8, hidden: int = 64, clamp: float = 3.0, seed: int = 0):
    """A small DifferNet-style flow on 2 dimensions: n × [fixed permutation, GLOW coupling]; maps (N, 2) -> (N, 2).

    Each GLOW block transforms both coordinates (first x₁ given x₂, then x₂ given the new x₁); the fixed
    permutations between blocks change which coordinate is transformed first, i.e. which is coupled with which.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = np.random.get_state()  # FrEIA's PermuteRandom reseeds numpy's global RNG
        flow = build_flow(2, n_coupling_blocks, hidden, clamp)
        np.random.set_state(state)
    return flow


def train_toy_flow(flow, data: torch.Tensor, steps: int = 500, batch_size: int = 256, lr: float = 3e-3,
                   seed: int = 0, progress: bool = True) -> list[float]:
    """Fit `flow` to `data` (N, 2) by minimising DifferNet's NLL; returns the loss per step (per dimension)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=lr)
    losses = []
    flow.train()
    for _ in progress_bar(range(steps), desc="toy flow", disable=not progress):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        z, log_jac_det = flow(batch)
        loss = nll_loss(z, log_jac_det)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    flow.eval()
    return losses


@torch.no_grad()
def log_density(flow, points: torch.Tensor) -> torch.Tensor:
    """log p(x) (N,) of points (N, 2): log N(z; 0, I) + log|det J|."""
    z, log_jac_det = flow(points)
    return -0.5 * (z ** 2).sum(1) - z.shape[1] / 2 * math.log(2 * math.pi) + log_jac_det


def density_grid(flow, limits: tuple[float, float] = (-3.0, 3.0), resolution: int = 120):
    """(xx, yy, p) on a square grid for contour plots; p = exp(log p(x)), each array (resolution, resolution)."""
    axis = torch.linspace(limits[0], limits[1], resolution)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    p = log_density(flow, points).exp().reshape(resolution, resolution)
    return xx.numpy(), yy.numpy(), p.numpy()


@torch.no_grad()
def to_latent(flow, x: torch.Tensor) -> torch.Tensor:
    """x (N, 2) -> z (N, 2): the direction used for training and scoring."""
    return flow(x)[0]


@torch.no_grad()
def sample(flow, n: int = 1000, seed: int = 0) -> torch.Tensor:
    """Draw z ~ N(0, I) and invert the flow: (N, 2) samples of the learned density."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return flow(z, rev=True)[0]


def logdet_check(flow, x: torch.Tensor) -> dict[str, list[float]]:
    """Compare the flow's log|det J| with log|det| of the Jacobian computed by autograd, per sample.

    x: (N, D), small D. Returns {'flow': [...], 'autograd': [...], 'max_abs_difference': float}. Runs in float64
    on a copy so that the comparison is not limited by float32 rounding.
    """
    import copy
    flow64 = copy.deepcopy(flow).double().eval()
    x = x.double()
    with torch.no_grad():
        from_flow = flow64(x)[1]
    from_autograd = []
    for xi in x:
        jacobian = torch.autograd.functional.jacobian(lambda v: flow64(v[None])[0][0], xi)
        from_autograd.append(torch.linalg.slogdet(jacobian).logabsdet)
    from_autograd = torch.stack(from_autograd)
    return {"flow": from_flow.tolist(), "autograd": from_autograd.tolist(),
            "max_abs_difference": float((from_flow - from_autograd).abs().max())}


__all__ = ["toy_data", "toy_flow", "train_toy_flow", "log_density", "density_grid", "to_latent", "sample",
           "logdet_check"]
