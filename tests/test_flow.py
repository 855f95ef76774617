import torch

from adnlib.flow import SoftAtanClamp, build_flow, count_trainable, nll_loss


def test_paper_flow_has_the_official_parameter_count():
    assert count_trainable(build_flow(768, 8, 2048, 3.0)) == 172_077_056


def test_soft_clamp_is_differnets():
    s = torch.linspace(-20, 20, 101)
    clamp = 3.0
    torch.testing.assert_close(clamp * SoftAtanClamp(clamp)(s), clamp * 0.636 * torch.atan(s / clamp))


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


def test_nll_loss_matches_the_formula():
    z = torch.randn(5, 6)
    log_det = torch.randn(5)
    expected = torch.mean(0.5 * (z ** 2).sum(1) - log_det) / 6
    torch.testing.assert_close(nll_loss(z, log_det), expected)


def test_flow_pickles():
    import pickle
    pickle.loads(pickle.dumps(build_flow(8, 2, 8, 3.0)))
