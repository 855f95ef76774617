"""Notebooks 01 (attention modules) and 05 (Grad-CAM comparison) run headless with small parameters and write
their figures and key numbers; the committed notebooks are clean. Each run takes well under a minute on 2 CPU
cores with the smoke preset.
"""
import base64
import json

import nbformat
import numpy as np
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from PIL import Image

from adnlib.teach.notebooks import NOTEBOOK_DIR, run_notebook

OWN = ("01_attention_modules", "05_gradcam_comparison")
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
    """Recompute the gate means and energy ratios of notebook 01's table from its trained model and images."""
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
    source = "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "make_demo_dataset(data_root)" in source and "tqdm.auto" in source


@pytest.mark.slow
def test_01_attention_modules(tmp_path, demo_root):
    out, executed = _run("01_attention_modules", tmp_path, demo_root, n_show=1, max_images=8)
    summary = json.loads((out / "attention_modules.json").read_text())
    assert summary["n_images"] == {"normal": 4, "defective": 4}
    assert [row["channels"] for row in summary["parameters"][:3]] == [64, 192, 256]
    assert summary["parameters"][0]["se"] == 64 * 4 + 4 + 4 * 64 + 64
    assert set(summary["variants"]) == {"se", "cbam"}
    for variant, entry in summary["variants"].items():
        assert entry["trained_epochs"] == 1 and 0 <= entry["auroc"] <= 1
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


@pytest.mark.slow
def test_05_gradcam_comparison(tmp_path, demo_root):
    out, executed = _run("05_gradcam_comparison", tmp_path, demo_root, n_normal=1, n_defective=2)
    summary = json.loads((out / "gradcam.json").read_text())
    # the quirk is shown, and handled: one activation per scale and call (smoke: 2 scales)
    for model in ("differnet", "se"):
        assert summary["hooked_activations"][model] == {"whole_model": 2, "per_scale": [1, 1]}
        assert summary["models"][model]["trained_epochs"] == 1
    assert summary["grid"]["columns"] == ["input", "differnet: input gradient", "differnet: gradcam", "se: gradcam"]
    assert summary["grid"]["rows"] == 3 and len(summary["images"]) == 3
    assert [row["label"] for row in summary["images"]] == [0, 1, 1]
    maps = np.load(out / "maps.npz")  # the correlations in the table are those of the saved maps
    names = summary["grid"]["columns"][1:]
    for i, row in enumerate(summary["images"]):
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                expected = np.corrcoef(maps[names[a]][i].ravel(), maps[names[b]][i].ravel())[0, 1]
                assert row[f"corr({names[a]} | {names[b]})"] == pytest.approx(expected, abs=1e-6)
    # 4 columns x 2.2 in x 100 dpi; 3 rows x 2.2 in + a 0.4 in title band
    assert _size(out / "gradcam_grid.png") == (880, 700) == tuple(summary["grid"]["size_px"])
    assert _size(out / "gradcam_scales.png") == (880, 480)  # input, 2 scales, mean; one row per model
    assert _widget_drew_a_figure(executed)
