"""Fast checks (each well under 5 s) of what notebooks 00 and 01 teach: the pipeline figure's shapes, the GLOW
coupling block written from scratch, the soft clamp, the NLL constant, and the paper numbers quoted in the text.

Each test says which wrong code or wrong statement it catches.
"""
import math

import matplotlib
import matplotlib.pyplot as plt
import nbformat
import pytest
import torch

from adnlib.config import preset
from adnlib.model.flow import SoftAtanClamp, build_flow, nll_loss
from adnlib.model.network import AttentDifferNet
from adnlib.teach import paper, toy
from adnlib.teach.notebooks import NOTEBOOK_DIR
from adnlib.teach.pipeline import pipeline_figure, pipeline_shapes

matplotlib.use("Agg")


def _conv(size, kernel, stride, padding=0):
    return (size + 2 * padding - kernel) // stride + 1


def _alexnet_maps(size):
    """Spatial sizes after pool1, pool2, relu5 and pool5 of torchvision's AlexNet features, from the layer
    arithmetic (independent of the model code)."""
    pool1 = _conv(_conv(size, 11, 4, 2), 3, 2)
    pool2 = _conv(_conv(pool1, 5, 1, 2), 3, 2)
    relu5 = pool2  # conv3-5: kernel 3, padding 1
    return pool1, pool2, relu5, _conv(relu5, 3, 2)


def _notebook(name):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _cell_defining(nb, text):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return cell.source


# --- the pipeline figure of notebook 00 --------------------------------------------------------------------------
@pytest.mark.parametrize("name,variant", [("demo", "se"), ("smoke", "differnet")])
def test_pipeline_shapes_are_the_models(name, variant):
    # Catches hard-coded shapes (a 2-scale 128 px smoke model has other maps and a 512-d embedding), hooks on the
    # wrong layers (a map after conv1 instead of pool1 has another size) and a scale list that is not the model's.
    config = preset(name, variant=variant, weights="none", fc_hidden=16)  # the subnet width changes no shape
    model = AttentDifferNet(config)
    shapes = pipeline_shapes(model)
    assert len(shapes["scales"]) == config.n_scales
    for s, scale in enumerate(shapes["scales"]):
        size = config.img_size // 2 ** s
        pool1, pool2, relu5, pool5 = _alexnet_maps(size)
        assert scale["input"] == (3, size, size)
        assert [shape for _, shape in scale["stages"]] == [(64, pool1, pool1), (192, pool2, pool2),
                                                            (256, relu5, relu5)]
        assert scale["final"] == (256, pool5, pool5)
        assert scale["pooled"] == (256,)
        assert all(label.endswith(f"+ {variant.upper()}") == config.has_attention for label, _ in scale["stages"])
    assert shapes["embedding"] == (256 * config.n_scales,) == shapes["z"]
    assert shapes["log_det"] == ()
    assert shapes["flow"].count("GLOWCouplingBlock") == config.n_coupling_blocks
    assert model.training  # the dummy pass leaves the model in the mode it found it


def test_pipeline_figure_writes_the_recorded_shapes():
    # Catches a figure that draws fixed text instead of the shapes it recorded (e.g. "768" for a 512-d model).
    model = AttentDifferNet(preset("smoke", variant="cbam", weights="none", fc_hidden=16))
    fig = pipeline_figure(model)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "concatenate\n512" in texts
    assert "768" not in texts
    assert "256×1×1" in texts
    assert "conv1 + pool1 + CBAM\n64×15×15" in texts
    assert fig.axes[0].get_title()
    assert not fig.axes[0].get_xticks().size
    plt.close(fig)


# --- the GLOW coupling block of notebook 01 ----------------------------------------------------------------------
def _freia_block(dim=6, clamp=3.0, seed=0):
    """A GLOW block of DifferNet's flow (float64) with weights large enough that the raw log-scales reach several
    units, where the soft clamp is far from linear."""
    generator = torch.Generator().manual_seed(seed)
    block = build_flow(dim, 1, 16, clamp).double().module_list[1]
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return block, torch.randn(5, dim, generator=generator, dtype=torch.float64)


def _reference_glow(x, block, clamp=3.0, clamp_fn=None, swap=False):
    """An independent from-scratch GLOW block (not the notebook's code), with switches for two wrong versions."""
    clamp_fn = clamp_fn or (lambda s: clamp * 0.636 * torch.atan(s / clamp))
    half = round(x.shape[1] / 2)
    a, b = x[:, :half], x[:, half:]
    if swap:  # wrong order: transform the second half first
        out_b = block.subnet1(a)
        s_b = clamp_fn(out_b[:, : b.shape[1]])
        b = b * torch.exp(s_b) + out_b[:, b.shape[1]:]
        out_a = block.subnet2(b)
        s_a = clamp_fn(out_a[:, :half])
        a = a * torch.exp(s_a) + out_a[:, half:]
    else:
        out_a = block.subnet2(b)
        s_a = clamp_fn(out_a[:, :half])
        a = a * torch.exp(s_a) + out_a[:, half:]
        out_b = block.subnet1(a)
        s_b = clamp_fn(out_b[:, : b.shape[1]])
        b = b * torch.exp(s_b) + out_b[:, b.shape[1]:]
    return torch.cat([a, b], 1), s_a.sum(1) + s_b.sum(1)


@pytest.mark.parametrize("dim", [6, 7])
def test_glow_from_scratch_matches_freia_and_wrong_versions_do_not(dim):
    # Catches a change of the library's flow away from what notebook 01 writes out (another clamp, another block
    # type, another split): the written-out block must equal FrEIA's. The negative controls show the check is
    # sharp: FrEIA's default "ATAN" clamp, or the two half-steps in the other order, give different outputs.
    block, x = _freia_block(dim)
    with torch.no_grad():
        (y, log_det) = block([x])
        y = y[0]
        ours, our_log_det = _reference_glow(x, block)
        atan, _ = _reference_glow(x, block, clamp_fn=lambda s: 3.0 * 0.636 * torch.atan(s))
        swapped, _ = _reference_glow(x, block, swap=True)
    assert torch.allclose(ours, y)
    assert torch.allclose(our_log_det, log_det)
    assert not torch.allclose(atan, y)
    assert not torch.allclose(swapped, y)


def test_notebook_glow_block_matches_freia():
    # Catches an edit of notebook 01's 15-line glow_block (or soft_clamp) that breaks it, without the slow headless
    # run: the cell's definitions are executed here and compared with FrEIA's block.
    source = _cell_defining(_notebook("01_normalizing_flows_differnet"), "def glow_block(")
    namespace = {"torch": torch, "clamp": 3.0, "seed": 0, "build_flow": build_flow}
    exec(compile(source, "notebook-02-glow_block", "exec"), namespace)  # the cell's own check runs too
    block, x = _freia_block(6)
    with torch.no_grad():
        (y,), log_det = block([x])
        ours, our_log_det = namespace["glow_block"](x, block.subnet1, block.subnet2)
    assert torch.allclose(ours, y)
    assert torch.allclose(our_log_det, log_det)


def test_glow_jacobian_is_not_triangular_but_its_logdet_is_the_sum_of_log_scales():
    # Catches the statements of notebook 01, section 2: a GLOW block's Jacobian is full (not triangular), and its
    # log|det| is still the sum of the clamped log-scales (the FrEIA block's own log-det, checked by autograd).
    block, x = _freia_block(6)
    jacobian = torch.autograd.functional.jacobian(lambda v: block([v[None]])[0][0][0], x[0])
    assert jacobian[:3, 3:].abs().max() > 1e-3
    assert jacobian[3:, :3].abs().max() > 1e-3
    with torch.no_grad():
        log_det = block([x[:1]])[1]
    assert torch.linalg.slogdet(jacobian).logabsdet.item() == pytest.approx(log_det.item(), abs=1e-9)


def test_soft_clamp_slope_and_bound():
    # Catches the "almost the identity for small s" slip: DifferNet's clamp has slope 0.636 (about 2/pi) at 0,
    # FrEIA's "ATAN" 0.636*clamp; both are bounded by clamp*0.636*pi/2.
    clamp = 3.0
    s = torch.zeros(1, requires_grad=True)
    (slope,) = torch.autograd.grad(clamp * SoftAtanClamp(clamp)(s), s)
    assert slope.item() == pytest.approx(0.636)
    assert abs(slope.item() - 2 / math.pi) < 1e-3
    big = clamp * SoftAtanClamp(clamp)(torch.tensor([1e9, -1e9]))
    assert torch.allclose(big.abs(), torch.tensor(clamp * 0.636 * math.pi / 2))


def test_nll_loss_drops_half_log_2pi_per_dimension():
    # Catches the "loss below zero because the density exceeds 1" slip: DifferNet's loss is the full -log p(x)/D
    # minus 0.5*log(2*pi), so it can be negative while the full NLL is positive.
    flow = toy.toy_flow(n_coupling_blocks=2, hidden=8, seed=0)
    data = toy.toy_data("moons", n=64, seed=0)
    with torch.no_grad():
        loss = nll_loss(*flow(data)).item()
    full = -toy.log_density(flow, data).mean().item() / 2
    assert loss == pytest.approx(full - 0.5 * math.log(2 * math.pi), abs=1e-5)


# --- the text of notebooks 00 and 01 -----------------------------------------------------------------------------
def test_quickstart_quotes_the_papers_means():
    # Catches a quoted mean AUROC that differs from adnlib.teach.paper (the numbers 06 compares against), or a
    # dataset left out (the Semiconductor Wafer result was once missing).
    text = "".join(c.source for c in _notebook("00_quickstart").cells if c.cell_type == "markdown")
    titles = {"insplad-fault": "InsPLAD-fault", "mvtec-ad": "MVTec AD", "semiconductor-wafer": "Semiconductor Wafer"}
    for key, means in paper.HEADLINE_MEANS.items():
        assert f"| {titles[key]} | {means['DifferNet']:.2f} | {means['AttentDifferNet']:.2f} |" in text
    assert f"{paper.HEADLINE_MEANS['mvtec-ad']['DifferNet (own paper)']} on MVTec AD" in text
    assert "map normal images close to the centre" not in text
    assert "shell of radius about √768" in text


@pytest.mark.parametrize("name", ["00_quickstart", "01_normalizing_flows_differnet"])
def test_course_page_structure(name):
    # Catches a notebook that loses its course page: learning goals, prerequisites and runtime first, the
    # references (at least the two papers) last.
    nb = _notebook(name)
    first = nb.cells[0].source
    assert first.index("**What you will learn**") < first.index("**Prerequisites.**") < first.index("**Runtime.**")
    assert "not measured yet" in first or "GPU" in first
    last = nb.cells[-1]
    assert last.cell_type == "markdown"
    assert last.source.startswith("## References")
    assert "https://arxiv.org/abs/2008.12577" in last.source
    assert "https://arxiv.org/abs/2401.08686" in last.source
