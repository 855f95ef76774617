"""Notebook 03's look inside the trained blocks and notebook 05 (Grad-CAM comparison), as the session's course run
executed them (conftest.course_run: smoke parameters, 05 reading 03's runs), with their figures and key numbers
recomputed from the saved models; and the parameters that notebooks 03-06 share.
"""
import base64
import json
import re

import nbformat
import numpy as np
import pandas as pd
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from PIL import Image

from adnlib.teach.notebooks import NOTEBOOK_DIR

LOADING = ("03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison", "06_benchmark_report")
PAGE_WIDTH_PX = 940  # a figure fits the book's ~960 px column at the notebooks' 100 dpi


def _executed(course_run, name):
    executed = nbformat.read(course_run / f"{name}.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    return course_run / name, executed


def _run_dir(course_run, variant, seed=0):
    return course_run / "03_training_attentdiffernet" / "runs" / "disc" / variant / f"seed{seed}"


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


def _check_block_statistics(course_run, summary, variant, blocks, demo_root):
    """Recompute the gate means and energy ratios of notebook 03's section 8 from its trained model and images."""
    import torch

    from adnlib.data.datasets import AnomalyDataset
    from adnlib.explain.attention_viz import collect_attention
    from adnlib.run.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(_run_dir(course_run, variant) / "checkpoint.pt", "cpu")
    test_set = AnomalyDataset(demo_root, summary["category"], "test", summary["img_size"])
    chosen = summary["image_indices"]
    images = torch.stack([test_set[i][0] for i in chosen])
    labels = np.array([test_set.samples[i].label for i in chosen])
    for record in collect_attention(model, images):
        energy = (record.outputs ** 2).sum((1, 2, 3)) / (record.inputs ** 2).sum((1, 2, 3))
        for label, name in ((0, "normal"), (1, "defective")):
            row = next(r for r in blocks if r["block"] == record.block and r["images"] == name)
            keep = torch.from_numpy(labels == label)
            assert row["gate_mean"] == pytest.approx(float(record.channel_gates[keep].mean()), rel=1e-5)
            assert row["energy_ratio"] == pytest.approx(float(energy[keep].mean()), rel=1e-4)


@pytest.mark.parametrize("name", LOADING)
def test_notebook_has_its_own_parameters(name):
    # The course rules shared by all notebooks are checked in test_notebooks.py; these four read trained runs
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'checkpoints = "auto"' in tagged[0].source  # 03's runs (or $ADNLIB_CHECKPOINTS) by default
    source = "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "run_source(checkpoints" in source  # one resolver for every form of the parameter
    assert "paths.data_root(data_root)" in source
    assert "paths.output_dir(" in source
    for cell in nb.cells:  # training and scoring cells are tagged long (their own time limit)
        if cell.cell_type == "code" and re.search(r"(?<![.\w])(train|run_grid)\(", cell.source):
            assert "long" in cell.metadata.get("tags", []), cell.source[:80]


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_03_inside_the_trained_blocks(course_run, demo_root):
    out, executed = _executed(course_run, "03_training_attentdiffernet")
    summary = json.loads((out / "trained_gates.json").read_text())
    assert set(summary["variants"]) == {"se", "cbam"}
    for variant, entry in summary["variants"].items():
        assert [row["block"] for row in entry["gate_difference"]] == [1, 2, 3]
        blocks = {(row["block"], row["images"]) for row in entry["blocks"]}
        assert blocks == {(b, kind) for b in (1, 2, 3) for kind in ("normal", "defective")}
        _check_block_statistics(course_run, summary, variant, entry["blocks"], demo_root)
        assert [row["block"] for row in entry["shift_from_init"]] == [1, 2, 3]
        assert all(row["gate_shift_mean"] > 0 for row in entry["shift_from_init"])  # training moved the gates
        assert [row["hidden_units"] for row in entry["excitation_activity"]] == [4, 12, 16]
    assert all("spatial_mean" in row for row in summary["variants"]["cbam"]["blocks"])
    for name in ("channel_gates.png", "spatial_maps.png"):
        assert _size(out / name)[0] <= PAGE_WIDTH_PX * 1.1, name  # saved at 110 dpi: 940 px at 100 dpi
    assert _widget_drew_a_figure(executed)
    text = "\n".join(_markdown_outputs(executed))
    for variant, entry in summary["variants"].items():  # each variant judged on its own gates, not pooled
        frame = pd.DataFrame(entry["gate_difference"])
        observed, chance = int(frame["outside_band"].sum()), int(frame["shuffled_max"].sum())
        line = next(line for line in text.splitlines()
                    if line.startswith(f"**{variant.upper()}**: {observed} gates, up to {chance} by chance"))
        largest = float(frame["max_abs_shift"].max())  # the verdict follows the count AND the size of the shift
        verdict = ("no more than chance" if observed <= chance else "too small to change much" if largest < 0.01
                   else "some of its gates do respond differently")
        assert verdict in line
        assert f"**{largest:.4f}**" in line


def _markdown_outputs(executed) -> list[str]:
    return [str(o["data"]["text/markdown"]) for c in executed.cells for o in c.get("outputs", [])
            if "text/markdown" in o.get("data", {})]


def _stream_outputs(executed) -> list[str]:
    return [o["text"] for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_05_gradcam_comparison(course_run, demo_root):
    out, executed = _executed(course_run, "05_gradcam_comparison")
    summary = json.loads((out / "gradcam.json").read_text())
    # the quirk is shown, and handled: one activation per scale and call (smoke: 2 scales)
    for model in ("differnet", "se"):
        assert summary["hooked_activations"][model] == {"whole_model": 2, "per_scale": [1, 1]}
        assert summary["models"][model]["model"] == f"notebook 03: disc/{model}/seed0"  # 03's run, briefly named
    assert summary["grid"]["columns"] == ["input", "differnet: nll-gradient", "differnet: input gradient",
                                          "differnet: gradcam", "se: gradcam"]
    assert summary["grid"]["rows"] == 5
    assert [row["label"] for row in summary["images"]] == [0, 0, 1, 1, 1]
    maps = np.load(out / "maps.npz")  # the correlations in the table are those of the saved maps
    names = summary["grid"]["columns"][1:]
    for i, row in enumerate(summary["images"]):
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                expected = np.corrcoef(maps[names[a]][i].ravel(), maps[names[b]][i].ravel())[0, 1]
                assert row[f"corr({names[a]} | {names[b]})"] == pytest.approx(expected, abs=1e-6)
    for name in ("gradcam_grid.png", "gradcam_scales.png", "differnet_localization_steps.png"):
        assert _size(out / name)[0] <= PAGE_WIDTH_PX, name  # saved at 100 dpi: fits the book's column
    assert _widget_drew_a_figure(executed)
    _check_localization(course_run, summary, maps, demo_root)
    _check_seed_baseline(summary, maps, _markdown_outputs(executed))
    _check_pixel_metrics(course_run, out, summary, "\n".join(_markdown_outputs(executed)), demo_root)


def _check_pixel_metrics(course_run, out, summary, text, demo_root):
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
    model = model_from_checkpoint(_run_dir(course_run, "differnet") / "checkpoint.pt", "cpu")
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


def _check_localization(course_run, summary, maps, demo_root):
    """The grid's DifferNet localisation is differnet_localization of the saved model on the listed images."""
    import torch

    from adnlib.data.datasets import AnomalyDataset
    from adnlib.explain.localization import differnet_localization, normalise_maps
    from adnlib.run.checkpoint import model_from_checkpoint

    assert summary["localization"] == {"model": "differnet", "sigma": 3.0, "angles": [0.0, 180.0], "mode": "fixed"}
    model = model_from_checkpoint(_run_dir(course_run, "differnet") / "checkpoint.pt", "cpu")
    test_set = AnomalyDataset(demo_root, "disc", "test", summary["img_size"])
    index = {str(s.path): i for i, s in enumerate(test_set.samples)}
    images = torch.stack([test_set[index[path]][0] for path in summary["image_paths"]])
    expected = normalise_maps(differnet_localization(model, images))
    np.testing.assert_allclose(maps["differnet: nll-gradient"], expected, atol=1e-4)


def _check_seed_baseline(summary, maps, texts):
    """DifferNet vs DifferNet (seed + 1) is computed like DifferNet vs SE, and the verdict follows the numbers."""
    baseline = summary["seed_baseline"]
    assert baseline["name"] == "differnet, seed 1"
    assert baseline["source"]["model"] == "notebook 03: disc/differnet/seed1"  # 03's seed-1 run (its exercise 1)
    assert baseline["source"]["seed"] == 1
    seeds, attention = [], []
    for i, row in enumerate(baseline["table"]):
        expected = np.corrcoef(maps["differnet: gradcam"][i].ravel(), maps["differnet, seed 1: gradcam"][i].ravel())
        assert row["corr(differnet | differnet, seed 1)"] == pytest.approx(expected[0, 1], abs=1e-6)
        seeds.append(row["corr(differnet | differnet, seed 1)"])
        attention.append(row["corr(differnet | se)"])
    text = next(t for t in texts if "seed 1) **" in t)
    # 03's seed-1 run drew its own random backbone (random weights come from the seed): the page must say so
    assert baseline["same_backbone"] is False
    assert "its backbone weights differ from the first DifferNet's" in "\n".join(texts)
    assert f"**{np.mean(seeds):.2f}**" in text
    assert f"**{np.mean(attention):.2f}**" in text
    compared = ("differnet: gradcam", "se: gradcam", "differnet, seed 1: gradcam")
    for name in compared:  # the precondition: each kind's shuffled-mask control over every test image
        control = summary["controls"][name]
        assert control["readable"] == (control["control_low"] > 0)
    readable = all(summary["controls"][name]["readable"] for name in compared)
    assert ("not comparable" in text) == (not readable)
    assert ("agree less" in text) == (readable and np.mean(attention) < np.mean(seeds))


@pytest.mark.slow(seconds=60)  # trains two smoke DifferNets and explains them
def test_05_trains_its_seed_baseline_on_the_first_differnets_backbone(tmp_path, demo_root):
    # catches make demo's path (no run of seed 1 anywhere: the baseline is trained here) drawing a new random backbone
    # for seed 1, so that the "seed baseline" would change the backbone too, or losing its label in the sentence
    import papermill as pm
    out = tmp_path / "05_gradcam_comparison"
    pm.execute_notebook(str(NOTEBOOK_DIR / "05_gradcam_comparison.ipynb"), str(tmp_path / "05.ipynb"),
                        parameters={"data_root": str(demo_root), "preset": "smoke", "weights": "none",
                                    "device": "cpu", "checkpoints": "", "epochs": 1, "variants": ["differnet"],
                                    "n_normal": 1, "n_defective": 1, "output_dir": str(out)},
                        progress_bar=False, kernel_name="python3", cwd=str(tmp_path))
    summary = json.loads((out / "gradcam.json").read_text())
    baseline = summary["models"]["differnet, seed 1"]
    assert baseline["model"] == "trained here"
    assert baseline["seed"] == 1
    assert baseline["backbone_weights"] == "random, copied from the first DifferNet"
    text = "\n".join(_markdown_outputs(nbformat.read(tmp_path / "05.ipynb", as_version=4)))
    assert "(backbone: the same weights as the first DifferNet)" in text
