"""The teaching notebooks 00, 01, 02, 04 and 06 run headless (papermill) with small parameters and write their
artefacts; plus quick checks of the helpers they rely on (paper numbers, toy flow, rotation subsets).

Each notebook run takes well under a minute on 2 CPU cores with the smoke preset.
"""
import json

import nbformat
import numpy as np
import pandas as pd
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from conftest import check_02_sentences, check_04_sentences, check_06_sentences
from sklearn.metrics import roc_auc_score

from adnlib.teach import paper
from adnlib.teach.analysis import auroc_vs_rotations, rotation_counts, rotation_subset
from adnlib.teach.notebooks import NOTEBOOK_DIR, NOTEBOOKS, run_notebook

OWN = ("00_quickstart", "01_normalizing_flows_differnet", "02_training_attentdiffernet", "04_auroc_evaluation",
       "06_benchmark_report")
FAST = {"preset": "smoke", "weights": "none", "device": "cpu"}


def _run(name, tmp_path, demo_root, **parameters):
    run = run_notebook(name, tmp_path, {"data_root": str(demo_root), **FAST, **parameters})
    executed = nbformat.read(run.output, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    return tmp_path / name


def _pngs(folder):
    return sorted(p.name for p in folder.glob("*.png") if p.stat().st_size > 1000)


# --- the committed notebooks are clean and follow the course rules --------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_and_parameterised(name):
    """Every committed notebook (all seven) follows the course rules."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is None and not c.outputs for c in code), "outputs must be cleared"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for parameter in ("data_root", "preset", "device", "output_dir"):
        assert f"{parameter} = " in tagged[0].source
    # paths resolved from the repository (or ADNLIB_DATA / ADNLIB_RUNS), not from the kernel's folder
    assert "data_root = None" in tagged[0].source
    assert "output_dir = None" in tagged[0].source
    source = "".join(c.source for c in code)
    assert "paths.data_root(data_root)" in source
    assert f'paths.output_dir("{name}", output_dir)' in source
    assert "../" not in source
    # a course page: what you will learn, prerequisites, runtime; exercises; references with links
    assert nb.cells[0].cell_type == "markdown"
    assert "What you will learn" in nb.cells[0].source
    assert "Prerequisites" in nb.cells[0].source
    assert "Runtime" in nb.cells[0].source
    assert "Exercises" in "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[-1].cell_type == "markdown"
    assert nb.cells[-1].source.startswith("## References")
    assert "https://arxiv.org/abs/2008.12577" in nb.cells[-1].source  # DifferNet, at least
    assert code[-1].metadata.get("jupyter", {}).get("source_hidden") is True, "solutions in a collapsed cell"
    assert "input(" not in "".join(c.source for c in code)


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_notebook_paths_do_not_depend_on_the_kernels_folder(tmp_path, monkeypatch):
    # catches paths resolved against the working directory (what "../data/demo" did) and ignored variables;
    # writes only under tmp_path (the checkout's defaults are checked as values, nothing is made there)
    from pathlib import Path

    from adnlib import locations
    from adnlib.data.demo import DEFAULT_DEMO_ROOT
    from adnlib.teach import paths
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADNLIB_DATA", raising=False)
    monkeypatch.delenv("ADNLIB_RUNS", raising=False)
    assert DEFAULT_DEMO_ROOT == paths.REPOSITORY / "data" / "demo"
    assert locations.runs_root() == paths.REPOSITORY / "runs"
    monkeypatch.setattr(paths, "DEFAULT_DEMO_ROOT", tmp_path / "demo")
    assert paths.data_root(None) == tmp_path / "demo"
    assert (tmp_path / "demo" / "disc" / "train" / "good").is_dir()  # the default demo folder is generated
    monkeypatch.setenv("ADNLIB_DATA", str(tmp_path / "mydata"))
    monkeypatch.setenv("ADNLIB_RUNS", str(tmp_path / "myruns"))
    assert paths.data_root(None) == tmp_path / "mydata"
    assert not (tmp_path / "mydata").exists()  # a named dataset is not generated
    assert paths.output_dir("02_x") == tmp_path / "myruns" / "02_x"
    assert (tmp_path / "myruns" / "02_x").is_dir()
    assert paths.data_root("given") == Path("given")  # an explicit path wins


# --- headless runs ----------------------------------------------------------------------------------------------
@pytest.mark.slow(seconds=30)  # reads the session's run of the regression workflow (notebooks 00 and 04, smoke)
def test_00_quickstart(workflow_run):
    out = workflow_run[0] / "00_quickstart"
    env = json.loads((out / "environment.json").read_text())
    assert env["device"] == "cpu"
    assert env["torch"]
    summary = json.loads((out / "quickstart.json").read_text())
    run_scores = pd.read_csv(out / "run" / "scores.csv")  # the reported AUROC is the one of the saved scores
    assert summary["auroc_last"] == pytest.approx(roc_auc_score(run_scores["label"], run_scores["score"]), abs=1e-12)
    assert summary["backbone_weights"] == "random"
    assert len(pd.read_csv(out / "scored_images.csv")) == 6  # n_show's default
    assert (out / "run" / "checkpoint.pt").is_file()
    assert {"dataset_grid.png", "scored_images.png"} <= set(_pngs(out))


@pytest.mark.slow(seconds=30)  # a notebook run
def test_01_flows(tmp_path, demo_root):
    out = _run("01_normalizing_flows_differnet", tmp_path, demo_root, toy_steps=30, toy_blocks=2, toy_hidden=16)
    assert json.loads((out / "logdet_check.json").read_text())["max_abs_difference"] < 1e-8
    stats = json.loads((out / "latent_stats.json").read_text())
    assert set(stats) == {"train (normal)", "test normal", "test anomalous"}
    assert {"toy_loss.png", "toy_flow.png", "soft_clamp.png", "scaled_inputs.png", "embedding.png",
            "differnet_training.png", "latent_normality.png"} <= set(_pngs(out))


@pytest.mark.slow(seconds=30)  # a notebook run
def test_02_training(tmp_path, demo_root):
    variants = ["differnet", "se", "cbam"]
    out = _run("02_training_attentdiffernet", tmp_path, demo_root, variants=variants, epochs=1, eval_every=1)
    for variant in variants:
        m = json.loads((out / f"metrics_{variant}.json").read_text())
        run = out / "runs" / "disc" / variant / "seed0"
        assert m["variant"] == variant
        assert m["epochs"] == 1
        assert (run / "checkpoint.pt").is_file()
        scores, history = pd.read_csv(run / "scores.csv"), pd.read_csv(run / "history.csv")
        assert m["auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-12)
        assert m["auroc_best"] == pytest.approx(history["auroc"].max(), abs=1e-12)  # best = max over evaluations
    table = pd.read_csv(out / "last_vs_best.csv", index_col="variant")
    assert list(table.index) == variants
    for variant in variants:  # the table shows each run's own numbers, in percent
        m = json.loads((out / f"metrics_{variant}.json").read_text())
        assert table.loc[variant, "auroc_last_%"] == pytest.approx(100 * m["auroc"], abs=0.051)
        assert table.loc[variant, "auroc_best_%"] == pytest.approx(100 * m["auroc_best"], abs=0.051)
    assert "feature_norm" in set(pd.read_csv(out / "shrinkage.csv")["quantity"])
    assert {"training_curves.png", "feature_shrinkage.png", "cold_start.png"} <= set(_pngs(out))
    check_02_sentences(out, variants)  # the generated sentences state this run's numbers (random weights)
    opened = json.loads((out / "runs_open_gates" / "disc" / "se" / "seed0" / "metrics.json").read_text())
    assert opened["attention_init"] == "open"
    assert opened["seeds"] == m["seeds"]


@pytest.mark.slow(seconds=30)  # reads the session's run of the regression workflow (notebooks 00 and 04, smoke)
def test_04_evaluation(workflow_run):
    out = workflow_run[0] / "04_auroc_evaluation"
    roc = json.loads((out / "roc.json").read_text())
    assert set(roc["variants"]) == {"differnet", "se", "cbam"}
    scores = pd.read_csv(out / "scores.csv")
    for variant, curve in roc["variants"].items():  # AUROC, ROC points and saved scores agree with sklearn
        own = scores[scores["variant"] == variant]
        assert curve["auroc"] == pytest.approx(roc_auc_score(own["label"], own["score"]), abs=1e-12)
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(curve["auroc"], abs=1e-9)
    rotations = pd.read_csv(out / "auroc_vs_rotations.csv")
    assert sorted(set(rotations["n_rotations"])) == [1, 2, 4, 8]
    assert set(rotations["variant"]) == {"differnet", "se", "cbam"}
    threshold = json.loads((out / "threshold.json").read_text())
    assert threshold["variant"] == max(roc["variants"], key=lambda v: roc["variants"][v]["auroc"])
    own = scores[scores["variant"] == threshold["variant"]]
    flagged = own["score"] >= threshold["threshold"]  # the matrix is recomputed from the saved scores
    expected = [[int((~flagged & (own["label"] == 0)).sum()), int((flagged & (own["label"] == 0)).sum())],
                [int((~flagged & (own["label"] == 1)).sum()), int((flagged & (own["label"] == 1)).sum())]]
    assert threshold["confusion [[TN, FP], [FN, TP]]"] == expected
    assert np.sum(expected) == 25
    assert {"rotations.png", "score_distributions.png", "roc_curves.png", "auroc_per_defect.png",
            "confusion_matrix.png", "auroc_vs_rotations.png"} <= set(_pngs(out))
    check_04_sentences(out)


@pytest.mark.slow(seconds=30)  # a notebook run
def test_04_reuses_checkpoints_of_02(tmp_path, demo_root):
    # A finished run laid out as notebook 02 writes it: 04 must load it instead of training.
    from adnlib.config import preset
    from adnlib.run.train import train
    runs = tmp_path / "02_training_attentdiffernet" / "runs"
    train(preset("smoke"), demo_root, "disc", runs / "disc" / "differnet" / "seed0", progress=False)
    out = _run("04_auroc_evaluation", tmp_path, demo_root, variants=["differnet"], n_rotations=2, max_rotations=2)
    assert not (out / "runs").exists(), "04 trained although 02's checkpoint was there"
    assert set(json.loads((out / "roc.json").read_text())["variants"]) == {"differnet"}


@pytest.mark.slow(seconds=30)  # a notebook run
def test_06_benchmark_report(tmp_path, demo_root):
    out = _run("06_benchmark_report", tmp_path, demo_root, categories=["disc"], variants=["differnet", "se"],
               seeds=[0, 1, 2])
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["category"]) == ["disc", "mean"]
    assert {"ours_differnet", "ours_se", "paper_DifferNet", "paper_AttentDifferNet", "delta_differnet",
            "comparable", "note"} <= set(table.columns)
    mean = table.set_index("category").loc["mean"]
    assert mean["paper_DifferNet"] == 92.46
    assert mean["paper_AttentDifferNet"] == 94.34
    assert not table["comparable"].any()
    assert "not a paper dataset" in mean["note"]
    assert {"comparison_bars.png", "paper_means.png", "forest_plot.png"} <= set(_pngs(out))
    paired = pd.read_csv(out / "paired_comparison.csv")  # two seeds per variant, paired, one row per category
    assert list(zip(paired["category"], paired["variant"])) == [("disc", "se"), ("mean", "se")]
    assert (paired["n_seeds"] == 3).all()
    assert (paired["ci_low"] <= paired["delta"]).all()
    assert (paired["interval"] != "test images only").all()  # three seeds: the verdict's branches run
    assert paired["p_holm"].notna().all()
    assert set(paired["verdict"]) <= {"beyond noise", "within noise"}
    summary = pd.read_csv(out / "seed_summary.csv")
    assert set(summary["n_seeds"]) == {3}
    executed = nbformat.read(out.parent / "06_benchmark_report.ipynb", as_version=4)
    verdict = [o for c in executed.cells for o in c.get("outputs", []) if "AUROC points, 95" in str(o.get("data", ""))]
    assert verdict
    assert f"{paired['delta'].iloc[1]:+.1f} AUROC points" in str(verdict[0]["data"])
    check_06_sentences(out, random_weights=True)


# --- helpers the notebooks rely on ---------------------------------------------------------------------------
def test_paper_numbers_match_the_design():
    table = paper.insplad_fault_table()
    assert table.loc["AttentDifferNet", "Glass Insulator"] == 86.57
    assert table.loc["FastFlow", "Yoke Susp."] == 71.48
    # The published means are the means of the published per-category numbers (up to rounding).
    per_category = table.drop(columns="mean").mean(axis=1)
    assert (per_category - table["mean"]).abs().max() < 0.02
    assert paper.HEADLINE_MEANS["mvtec-ad"] == {"DifferNet": 94.69, "AttentDifferNet": 96.67,
                                                "DifferNet (own paper)": 94.9}
    gains = [m["AttentDifferNet"] - m["DifferNet"] for m in paper.HEADLINE_MEANS.values()]
    assert abs(np.mean(gains) - paper.AVERAGE_GAIN[0]) < 0.01


def test_paper_comparison_maps_insplad_folders():
    ours = pd.DataFrame({"differnet": [80.0, 99.0], "se": [90.0, 99.5]},
                        index=["glass-insulator", "lightning_rod_suspension"])
    ours.loc["mean"] = ours.mean()
    table = paper.comparison_table(ours, "InsPLAD-fault", backbone_weights="imagenet", protocol="paper")
    rows = table.set_index("category")
    assert rows.loc["glass-insulator", "paper_category"] == "Glass Insulator"
    assert rows.loc["lightning_rod_suspension", "paper_DifferNet"] == 99.08
    assert rows.loc["glass-insulator", "delta_se"] == pytest.approx(90.0 - 86.57, abs=0.01)
    assert rows.loc["mean", "paper_RD++"] == 90.75
    assert table["comparable"].all()
    random = paper.comparison_table(ours, "insplad", backbone_weights="random")
    assert not random["comparable"].any()
    assert "random" in random["note"][0]
    mvtec = paper.comparison_table(ours.rename(index={"glass-insulator": "bottle"}), "MVTec AD")
    assert mvtec.set_index("category").loc["mean", "paper_DifferNet (own paper)"] == 94.9


def test_rotation_subsets():
    assert rotation_counts(16) == [1, 2, 4, 8, 16]
    assert rotation_counts(12, "fixed") == [1, 2, 4, 12]
    assert rotation_counts(12, "random") == [1, 2, 4, 8, 12]
    # Every 4th of 16 evenly spaced angles = the 4 evenly spaced angles of a 4-rotation test.
    from adnlib.model.transforms import fixed_angles
    assert np.allclose(fixed_angles(16)[rotation_subset(16, 4, "fixed")], fixed_angles(4))
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(10), np.ones(10)]
    matrix = rng.normal(size=(20, 8)) + labels[:, None]
    curve = auroc_vs_rotations(matrix, labels, mode="random")
    assert list(curve["n_rotations"]) == [1, 2, 4, 8]
    for n, row in zip([1, 2, 4, 8], curve.itertuples()):  # the test as scored: the first n columns
        assert row.auroc == pytest.approx(roc_auc_score(labels, matrix[:, :n].mean(axis=1)))
        assert row.auroc_low <= row.auroc <= row.auroc_high
        assert row.auroc_high - row.auroc_low > 0.01
    # without a pool every repetition at n = 8 uses the same 8 copies: zero spread by construction (the old band);
    # with a pool of fresh angles it does not vanish
    assert curve["fresh_std"].iloc[-1] < 1e-12
    pool = rng.normal(size=(20, 16)) + labels[:, None]
    fresh = auroc_vs_rotations(matrix, labels, mode="random", pool=pool)
    assert fresh["fresh_std"].iloc[-1] > 0.005
    assert list(fresh["auroc"]) == list(curve["auroc"])
    with pytest.raises(ValueError, match="at least 16"):
        auroc_vs_rotations(matrix, labels, mode="random", pool=pool[:, :10])


def test_toy_flow_logdet_matches_autograd():
    import torch

    from adnlib.teach import toy
    check = toy.logdet_check(toy.toy_flow(n_coupling_blocks=2, hidden=8), torch.randn(3, 2))
    assert check["max_abs_difference"] < 1e-8
