import math

import pytest
import torch

from adnlib.model.flow import SoftAtanClamp, build_flow, count_trainable, nll_loss


def test_paper_flow_has_the_official_parameter_count():
    # On the meta device: shapes only, no 690 MB of weights to allocate and initialise.
    with torch.device("meta"):
        flow = build_flow(768, 8, 2048, 3.0)
    assert all(p.is_meta for p in flow.parameters() if p.requires_grad)  # nothing allocated
    assert count_trainable(flow) == 172_077_056


CLAMP = 3.0


def _soft_clamp(s: torch.Tensor, clamp: float = CLAMP) -> torch.Tensor:
    """DifferNet's soft clamp of the coupling's log-scale, written from the paper/official code."""
    return clamp * 0.636 * torch.atan(s / clamp)


@pytest.mark.parametrize("s_value", [-50.0, -1.0, 0.5, 3.0, 30.0, 1e4])
def test_coupling_block_applies_differnets_soft_clamp(s_value):
    """Force the subnets to output a constant log-scale s (weights 0, bias s) and shift t: every dimension is then
    scaled by exp(c) with c = clamp*0.636*atan(s/clamp), and log|det J| = D*c. Catches FrEIA's own "ATAN"
    (clamp*0.636*atan(s), c = 2.38 instead of 1.50 at s = 3), a missing clamp factor, tanh or a hard clamp; at
    s = 1e4 the log-det saturates at D*clamp*0.636*pi/2 (just under D*clamp)."""
    dim, t_value = 8, 0.25
    flow = build_flow(dim, 1, 16, CLAMP).double()
    coupling = flow.module_list[1]
    with torch.no_grad():
        for subnet in (coupling.subnet1, coupling.subnet2):
            last = subnet[-1]
            last.weight.zero_()
            last.bias[: dim // 2] = s_value  # the log-scale half
            last.bias[dim // 2:] = t_value  # the shift half
    x = torch.randn(5, dim, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = flow(x)
    c = _soft_clamp(torch.tensor(s_value, dtype=torch.float64))
    torch.testing.assert_close(log_det, torch.full((5,), float(dim * c), dtype=torch.float64))
    perm = flow.module_list[0].perm
    torch.testing.assert_close(z, torch.exp(c) * x[:, perm] + t_value)
    if s_value == 1e4:
        limit = dim * CLAMP * 0.636 * math.pi / 2
        assert limit - 0.01 < float(log_det[0]) < limit


def test_coupling_log_det_equals_the_hand_computed_glow_coupling():
    """One permutation + GLOW coupling with large random subnet outputs (s spans the soft clamp's curved range),
    recomputed by hand: x -> permute -> [x1 | x2]; y1 = exp(c(s2))*x1 + t2 with (s2,t2) = subnet2(x2);
    y2 = exp(c(s1))*x2 + t1 with (s1,t1) = subnet1(y1); log|det J| = sum c(s2) + sum c(s1)."""
    torch.manual_seed(3)
    dim = 10
    flow = build_flow(dim, 1, 16, CLAMP).double()
    coupling = flow.module_list[1]
    with torch.no_grad():
        for subnet in (coupling.subnet1, coupling.subnet2):
            subnet[-1].weight.mul_(40)
    x = torch.randn(6, dim, dtype=torch.float64)
    z, log_det = flow(x)
    with torch.no_grad():
        xp = x[:, flow.module_list[0].perm]
        x1, x2 = xp[:, : dim // 2], xp[:, dim // 2:]
        s2, t2 = coupling.subnet2(x2).split(dim // 2, dim=1)
        y1 = torch.exp(_soft_clamp(s2)) * x1 + t2
        s1, t1 = coupling.subnet1(y1).split(dim // 2, dim=1)
        y2 = torch.exp(_soft_clamp(s1)) * x2 + t1
    assert s1.abs().max() > 2 * CLAMP  # the test reaches where atan(s/clamp) differs from s/clamp and atan(s)
    torch.testing.assert_close(z, torch.cat([y1, y2], 1))
    torch.testing.assert_close(log_det, _soft_clamp(s2).sum(1) + _soft_clamp(s1).sum(1))


def test_soft_clamp_object_is_the_documented_function():
    s = torch.linspace(-20, 20, 101)
    torch.testing.assert_close(CLAMP * SoftAtanClamp(CLAMP)(s), _soft_clamp(s))


def test_inverse_reconstructs_the_input():
    torch.manual_seed(0)
    flow = build_flow(16, 4, 32, 3.0).double()
    x = torch.randn(10, 16, dtype=torch.float64) * 2
    z, _ = flow(x)
    x_back, _ = flow(z, rev=True)
    assert (x_back - x).abs().max() < 1e-5


def test_log_det_equals_autograd_log_abs_det_jacobian():
    torch.manual_seed(1)
    flow = build_flow(8, 3, 16, 3.0).double()
    for p in flow.parameters():  # a non-trivial map, not the near-identity of a fresh init
        if p.requires_grad:
            p.data.normal_(0, 0.3)
    x = torch.randn(4, 8, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-8, rtol=1e-8)


def test_nll_loss_is_the_gaussian_negative_log_likelihood_per_dimension():
    """Change of variables with a standard normal base: log p(x) = sum_d log N(z_d; 0, 1) + log|det J|. DifferNet's
    loss is the batch mean of -log p(x) / D, minus the constant 0.5*log(2*pi) per dimension, which it drops (a
    constant changes no gradient). Catches a wrong sign of the log-det, a missing 1/D, a sum over the batch, or a
    lost factor 1/2."""
    torch.manual_seed(0)
    batch, dim = 5, 6
    z = torch.randn(batch, dim, dtype=torch.float64) * 1.7
    log_det = torch.randn(batch, dtype=torch.float64) * 3
    log_px = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) + log_det
    expected = (-log_px / dim).mean() - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(nll_loss(z, log_det), expected)
    # its gradient pushes z towards 0 and the log-det up
    z.requires_grad_(True)
    log_det.requires_grad_(True)
    nll_loss(z, log_det).backward()
    torch.testing.assert_close(z.grad, z.detach() / (batch * dim))
    torch.testing.assert_close(log_det.grad, torch.full((batch,), -1.0 / (batch * dim), dtype=torch.float64))


def test_flow_pickles_to_the_same_function():
    """Unpickled, the flow must compute exactly the same map: same permutations, weights and clamp (a SoftAtanClamp
    that lost its clamp, or permutations drawn again on load, would change z)."""
    import pickle
    torch.manual_seed(2)
    flow = build_flow(8, 2, 8, 2.0).double()
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)  # large subnet outputs: the clamp matters
    copy = pickle.loads(pickle.dumps(flow))
    x = torch.randn(7, 8, dtype=torch.float64)
    z, log_det = flow(x)
    z_copy, log_det_copy = copy(x)
    assert torch.equal(z, z_copy)
    assert torch.equal(log_det, log_det_copy)
    back, _ = copy(z_copy, rev=True)
    torch.testing.assert_close(back, x)
    assert copy.module_list[1].f_clamp.clamp == 2.0
