"""Notebooks 03 (attention modules) and 05 (Grad-CAM comparison) run headless with small parameters and write
their figures and key numbers; the committed notebooks are clean. Each run takes well under a minute on 2 CPU
cores with the smoke preset.
"""
import base64
import json

import nbformat
import numpy as np
import pandas as pd
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from PIL import Image

from adnlib.teach.notebooks import NOTEBOOK_DIR, run_notebook

OWN = ("03_attention_modules", "05_gradcam_comparison")
FAST = {"preset": "smoke", "weights": "none", "device": "cpu", "epochs": 1}


def _run(name, tmp_path, demo_root, **parameters):
    run = run_notebook(name, tmp_path, {"data_root": str(demo_root), **FAST, **parameters})
    executed = nbformat.read(run.output, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    return tmp_path / name, executed


def _size(path):
    with Image.open(path) as image:
        return image.size  # (width, height)


def _widget_drew_a_figure(executed) -> bool:
    """The viewer's Image widget holds a PNG in the saved widget state: its first view was drawn headless, and a
    rendered site can show it."""
    state = executed.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return any(buffer["path"] == ["value"] and base64.b64decode(buffer["data"]).startswith(b"\x89PNG")
               for model in state.values() if model.get("model_name") == "ImageModel"
               for buffer in model.get("buffers", []))


def _check_block_statistics(out, summary, variant, blocks, demo_root):
    """Recompute the gate means and energy ratios of notebook 03's table from its trained model and images."""
    import torch

    from adnlib.data.datasets import AnomalyDataset
    from adnlib.explain.attention_viz import collect_attention
    from adnlib.run.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(out / "models" / variant / "checkpoint.pt", "cpu")
    test_set = AnomalyDataset(demo_root, summary["category"], "test", summary["img_size"])
    index = {str(s.path): i for i, s in enumerate(test_set.samples)}
    chosen = [index[path] for path in summary["statistics_images"]]
    images = torch.stack([test_set[i][0] for i in chosen])
    labels = np.array([test_set.samples[i].label for i in chosen])
    for record in collect_attention(model, images):
        energy = (record.outputs ** 2).sum((1, 2, 3)) / (record.inputs ** 2).sum((1, 2, 3))
        for label, name in ((0, "normal"), (1, "defective")):
            row = next(r for r in blocks if r["block"] == record.block and r["images"] == name)
            keep = torch.from_numpy(labels == label)
            assert row["gate_mean"] == pytest.approx(float(record.channel_gates[keep].mean()), rel=1e-5)
            assert row["energy_ratio"] == pytest.approx(float(energy[keep].mean()), rel=1e-4)


@pytest.mark.parametrize("name", OWN)
def test_notebook_has_its_own_parameters(name):
    # The course rules shared by all notebooks are checked in test_notebooks.py.
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    for parameter in ("category", "variants", "epochs", "checkpoints"):
        assert f"{parameter} = " in tagged[0].source
    assert 'checkpoints = "auto"' in tagged[0].source  # notebook 02's models by default, trained here only if missing
    source = "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "paths.data_root(data_root)" in source
    assert "paths.output_dir(" in source
    assert "progress_bar(" in source  # adnlib.progress: one line per loop in headless runs
    assert "find_checkpoint(" in source
    # a course page: what you will learn, prerequisites, runtimes; references at the end
    first = nb.cells[0].source
    assert all(part in first for part in ("What you will learn", "Prerequisites", "Runtime", "not measured yet"))
    assert nb.cells[-1].cell_type == "markdown"
    assert nb.cells[-1].source.startswith("## References")
    assert "https://arxiv.org/abs/2008.12577" in nb.cells[-1].source
    assert "https://arxiv.org/abs/2401.08686" in nb.cells[-1].source
    for cell in nb.cells:  # training and scoring cells are tagged long (their own time limit)
        if cell.cell_type == "code" and ("train(" in cell.source or "run_grid(" in cell.source):
            assert "long" in cell.metadata.get("tags", []), cell.source[:80]


@pytest.mark.slow(seconds=30)  # reads the session's run of notebook 03 (conftest.attention_run)
def test_03_attention_modules(attention_run, demo_root):
    out = attention_run / "03_attention_modules"
    executed = nbformat.read(attention_run / "03_attention_modules.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    summary = json.loads((out / "attention_modules.json").read_text())
    assert summary["n_images"] == {"normal": 4, "defective": 4}
    assert [row["channels"] for row in summary["parameters"][:3]] == [64, 192, 256]
    assert summary["parameters"][0]["se"] == 64 * 4 + 4 + 4 * 64 + 64
    assert set(summary["variants"]) == {"se", "cbam"}
    for variant, entry in summary["variants"].items():
        # no notebook 02 next to it: trained here, and the notebook says so
        assert entry["model"] == "trained here"
        assert entry["epochs"] == 1
        assert 0 <= entry["auroc"] <= 1
        assert entry["backbone_weights"] == "random"
        assert [row["block"] for row in entry["gate_difference"]] == [1, 2, 3]
        blocks = {(row["block"], row["images"]) for row in entry["blocks"]}
        assert blocks == {(b, kind) for b in (1, 2, 3) for kind in ("normal", "defective")}
        _check_block_statistics(out, summary, variant, entry["blocks"], demo_root)
        assert [row["block"] for row in entry["shift_from_init"]] == [1, 2, 3]
        assert all(row["gate_shift_mean"] > 0 for row in entry["shift_from_init"])  # training moved the gates
        assert [row["hidden_units"] for row in entry["excitation_activity"]] == [4, 12, 16]
    assert all("spatial_mean" in row for row in summary["variants"]["cbam"]["blocks"])
    expected = {"attention_placement.png": (1665, 260), "se_steps.png": (1200, 620), "cbam_steps.png": (1400, 640),
                "channel_gates.png": (1260, 600), "spatial_maps.png": (960, 480), "feature_energy.png": (900, 340)}
    assert set(summary["figures"]) == set(expected)
    for name, size in expected.items():
        assert _size(out / name) == size, name
    assert _widget_drew_a_figure(executed)
    texts = _markdown_outputs(executed)
    assert any("trained here" in t and "Random backbone" in t for t in texts)
    assert any("three lines == SEBlock" in t for t in _stream_outputs(executed))


def _markdown_outputs(executed) -> list[str]:
    return [str(o["data"]["text/markdown"]) for c in executed.cells for o in c.get("outputs", [])
            if "text/markdown" in o.get("data", {})]


def _stream_outputs(executed) -> list[str]:
    return [o["text"] for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]


@pytest.mark.slow(seconds=30)  # a notebook run
def test_03_loads_the_models_of_02(tmp_path, demo_root):
    # A finished run laid out as notebook 02 writes it: 03 must load it instead of training, and say so.
    from adnlib.config import preset
    from adnlib.run.train import train
    cell = tmp_path / "02_training_attentdiffernet" / "runs" / "disc" / "se" / "seed0"
    train(preset("smoke", variant="se", epochs=2), demo_root, "disc", cell, progress=False)
    out, executed = _run("03_attention_modules", tmp_path, demo_root, variants=["se"], n_show=1, max_images=4)
    assert not (out / "models").exists(), "03 trained although 02's checkpoint was there"
    entry = json.loads((out / "attention_modules.json").read_text())["variants"]["se"]
    assert entry["model"] == str(cell / "checkpoint.pt")
    assert entry["epochs"] == 2
    assert any(str(cell / "checkpoint.pt") in t and "2 epochs" in t for t in _markdown_outputs(executed))


@pytest.mark.slow(seconds=30)  # a notebook run
def test_05_gradcam_comparison(tmp_path, demo_root):
    out, executed = _run("05_gradcam_comparison", tmp_path, demo_root, n_normal=1, n_defective=2)
    summary = json.loads((out / "gradcam.json").read_text())
    # the quirk is shown, and handled: one activation per scale and call (smoke: 2 scales)
    for model in ("differnet", "se"):
        assert summary["hooked_activations"][model] == {"whole_model": 2, "per_scale": [1, 1]}
        assert summary["models"][model]["model"] == "trained here"
        assert summary["models"][model]["epochs"] == 1
    assert summary["grid"]["columns"] == ["input", "differnet: nll-gradient", "differnet: input gradient",
                                          "differnet: gradcam", "se: gradcam"]
    assert summary["grid"]["rows"] == 3
    assert len(summary["images"]) == 3
    assert [row["label"] for row in summary["images"]] == [0, 1, 1]
    maps = np.load(out / "maps.npz")  # the correlations in the table are those of the saved maps
    names = summary["grid"]["columns"][1:]
    for i, row in enumerate(summary["images"]):
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                expected = np.corrcoef(maps[names[a]][i].ravel(), maps[names[b]][i].ravel())[0, 1]
                assert row[f"corr({names[a]} | {names[b]})"] == pytest.approx(expected, abs=1e-6)
    # 5 columns x 2.2 in x 100 dpi; 3 rows x 2.2 in + a 0.4 in title band
    assert _size(out / "gradcam_grid.png") == (1100, 700) == tuple(summary["grid"]["size_px"])
    assert _size(out / "gradcam_scales.png") == (880, 480)  # input, 2 scales, mean; one row per model
    assert _size(out / "differnet_localization_steps.png") == (660, 480)  # 2 copies + the image; 2 rows
    assert _widget_drew_a_figure(executed)
    _check_localization(out, summary, maps, demo_root)
    _check_seed_baseline(summary, maps, _markdown_outputs(executed))
    _check_pixel_metrics(out, summary, "\n".join(_markdown_outputs(executed)), demo_root)


def _check_pixel_metrics(out, summary, text, demo_root):
    """The pixel table has every model x kind of map and the centre prior's row, every map normalised per image
    (recomputed here for DifferNet's nll-gradient and the prior from the model and the masks); readable follows the
    shuffled-mask control's interval; each sentence names the table's best map by PRO and says whether it beats
    the prior and passed the control."""
    from adnlib.explain.evidence import centre_prior_maps
    from adnlib.explain.localization import differnet_localization, normalise_maps
    from adnlib.explain.localization_metrics import localization_metrics
    from adnlib.explain.localize import masked_test_split
    from adnlib.run.checkpoint import model_from_checkpoint

    pixel = pd.read_csv(out / "pixel_metrics.csv")
    prior_row = pixel[pixel["model"] == "centre prior (no model)"]
    pixel = pixel[pixel["model"] != "centre prior (no model)"]
    assert set(zip(pixel["model"], pixel["method"])) == {(m, k) for m in ("differnet", "se")
                                                          for k in ("nll-gradient", "gradcam")} | {
        ("differnet", "input gradient")}
    assert pixel["pixel_auroc"].between(0, 1).all()
    assert pixel["pro"].between(0, 1).all()
    assert (pixel["readable"] == (pixel["control_low"] > 0)).all()
    _, images, masks = masked_test_split(demo_root, "disc", summary["img_size"])
    prior = localization_metrics(masks, centre_prior_maps(*masks.shape))
    assert prior_row["pro"].item() == pytest.approx(prior["pro"], abs=1e-9)
    assert summary["centre_prior"]["pro"] == pytest.approx(prior["pro"], abs=1e-9)
    model = model_from_checkpoint(out / "models" / "differnet" / "checkpoint.pt", "cpu")
    own = localization_metrics(masks, normalise_maps(differnet_localization(model, images)))
    row = pixel[(pixel["model"] == "differnet") & (pixel["method"] == "nll-gradient")].iloc[0]
    assert row["pro"] == pytest.approx(own["pro"], abs=1e-6)  # scored normalised, as every other kind
    assert summary["normalisation"] == "per image, min-max to [0, 1]"
    for model_name, part in pixel.groupby("model"):
        best = part.loc[part["pro"].idxmax()]
        sentence = next(line for line in text.splitlines()
                        if line.startswith(f"**{model_name}**: the best map by PRO"))
        assert f"is `{best['method']}` (PRO {best['pro']:.3f}" in sentence
        assert ("not above the centre prior" in sentence) == (best["pro"] <= prior["pro"])
        assert ("failed the shuffled-mask control" in sentence) == (not best["readable"])
    assert "ΔPRO" in text
    assert "Shuffled-mask control" in text


def _check_localization(out, summary, maps, demo_root):
    """The grid's DifferNet localisation is differnet_localization of the saved model on the listed images."""
    import torch

    from adnlib.data.datasets import AnomalyDataset
    from adnlib.explain.localization import differnet_localization, normalise_maps
    from adnlib.run.checkpoint import model_from_checkpoint

    assert summary["localization"] == {"model": "differnet", "sigma": 3.0, "angles": [0.0, 180.0], "mode": "fixed"}
    model = model_from_checkpoint(out / "models" / "differnet" / "checkpoint.pt", "cpu")
    test_set = AnomalyDataset(demo_root, "disc", "test", summary["img_size"])
    index = {str(s.path): i for i, s in enumerate(test_set.samples)}
    images = torch.stack([test_set[index[path]][0] for path in summary["image_paths"]])
    expected = normalise_maps(differnet_localization(model, images))
    np.testing.assert_allclose(maps["differnet: nll-gradient"], expected, atol=1e-4)


def _check_seed_baseline(summary, maps, texts):
    """DifferNet vs DifferNet (seed + 1) is computed like DifferNet vs SE, and the verdict follows the numbers."""
    baseline = summary["seed_baseline"]
    assert baseline["name"] == "differnet, seed 1"
    assert baseline["same_backbone"] is True
    assert baseline["source"]["model"] == "trained here"
    assert baseline["source"]["seed"] == 1
    seeds, attention = [], []
    for i, row in enumerate(baseline["table"]):
        expected = np.corrcoef(maps["differnet: gradcam"][i].ravel(), maps["differnet, seed 1: gradcam"][i].ravel())
        assert row["corr(differnet | differnet, seed 1)"] == pytest.approx(expected[0, 1], abs=1e-6)
        seeds.append(row["corr(differnet | differnet, seed 1)"])
        attention.append(row["corr(differnet | se)"])
    text = next(t for t in texts if "seed 1) **" in t)
    assert f"**{np.mean(seeds):.2f}**" in text
    assert f"**{np.mean(attention):.2f}**" in text
    compared = ("differnet: gradcam", "se: gradcam", "differnet, seed 1: gradcam")
    for name in compared:  # the precondition: each kind's shuffled-mask control over every test image
        control = summary["controls"][name]
        assert control["readable"] == (control["control_low"] > 0)
    readable = all(summary["controls"][name]["readable"] for name in compared)
    assert ("not comparable" in text) == (not readable)
    assert ("agree less" in text) == (readable and np.mean(attention) < np.mean(seeds))
