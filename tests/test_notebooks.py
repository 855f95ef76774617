"""The teaching notebooks run headless (papermill) with small parameters and write their artefacts: the session's
course run (conftest.course_run: all seven, in order, solutions included) and the regression workflow's run (00
and 04); plus quick checks of the helpers they rely on (paper numbers, toy flow, rotation subsets).
"""
import json
import re

import nbformat
import numpy as np
import pandas as pd
import papermill  # noqa: F401  (test extra: a broken install fails these tests, never skips them)
import pytest
from conftest import check_03_sentences, check_04_sentences, check_06_sentences
from sklearn.metrics import roc_auc_score

from adnlib.teach import paper
from adnlib.teach.analysis import auroc_vs_rotations, rotation_counts, rotation_subset
from adnlib.teach.notebooks import NOTEBOOK_DIR, NOTEBOOKS, run_notebook

FAST = {"preset": "smoke", "weights": "none", "device": "cpu"}


def _run(name, tmp_path, demo_root, **parameters):
    run = run_notebook(name, tmp_path, {"data_root": str(demo_root), **FAST, **parameters})
    executed = nbformat.read(run.output, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    return tmp_path / name


def _markdown(notebook) -> str:
    """Every markdown output of an executed notebook, joined."""
    executed = nbformat.read(notebook, as_version=4)
    return "\n".join(o["data"]["text/markdown"] for c in executed.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))


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


EXERCISE = re.compile(r"^\*\*(\d+)\. [^*]+\*\* \((★[★☆]{2})\)", re.M)
DEVELOPER_NOTES = re.compile(r"\(issue \d+\)|\bissue \d+\b|tests/test_\w+\.py|20\d\d-\d\d-\d\d")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_exercises_have_levels_expected_outcomes_and_runnable_solutions(name):
    # catches exercises a lecturer cannot assign: no difficulty, no "what you should see", a solution that is a
    # commented-out sketch instead of code the tests run (`solutions = True` runs every one of them)
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    assert "solutions = False" in next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    start = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Exercises"))
    exercises = [(i, c) for i, c in enumerate(nb.cells[start:], start) if c.cell_type == "markdown"
                 and EXERCISE.search(c.source)]
    assert len(exercises) >= 3, name
    for number, (i, cell) in enumerate(exercises, 1):
        assert int(EXERCISE.search(cell.source).group(1)) == number, (name, cell.source[:60])
        assert "*What you should see:*" in cell.source, (name, number)
        solution = nb.cells[i + 1]
        assert solution.cell_type == "code", (name, number)
        assert solution.source.startswith("if solutions:"), (name, number)
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True, (name, number)
        assert "# " not in solution.source.splitlines()[1][:6], (name, number)  # code, not a commented sketch


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_has_concept_checks_a_plain_runtime_and_no_developer_notes(name):
    # catches a conclusion without questions to check understanding, runtime tables with dated measurement logs,
    # and issue numbers or test-file pointers on a student page
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    conclusion = next(c.source for c in nb.cells if c.source.startswith("## Conclusion"))
    assert "**Check your understanding.**" in conclusion, name
    assert conclusion.count("<details><summary>Answer</summary>") >= 2, name
    runtime = nb.cells[0].source.split("**Runtime.**", 1)[1].split("\n\n", 1)[0]
    assert "|" not in runtime, (name, runtime)
    assert re.search(r"\b(s|seconds?|minutes?)\b", runtime), (name, runtime)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert not DEVELOPER_NOTES.search(markdown), (name, DEVELOPER_NOTES.search(markdown))
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "takeaways(" in code, name  # the "What this run shows" box, computed from the run


@pytest.mark.slow(seconds=30)  # reads the session's course run (solutions = True)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_solution_ran_in_the_course_run(course_run, name):
    # catches a solution that does not run as written, or one the course run skipped
    executed = nbformat.read(course_run / f"{name}.ipynb", as_version=4)
    solutions = [c for c in executed.cells if c.cell_type == "code" and c.source.startswith("if solutions:")]
    assert solutions, name
    for cell in solutions:
        assert cell.execution_count is not None, (name, cell.source[:80])
        assert not [o for o in cell.outputs if o.get("output_type") == "error"], (name, cell.source[:80])
    boxes = [o for c in executed.cells for o in c.get("outputs", [])
             if o.get("data", {}).get("text/markdown", "").startswith("> **What this run shows**")]
    assert len(boxes) == 1, name


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


@pytest.mark.slow(seconds=30)  # reads the session's course run (conftest.course_run)
def test_01_flows(course_run):
    out = course_run / "01_normalizing_flows_differnet"
    assert json.loads((out / "logdet_check.json").read_text())["max_abs_difference"] < 1e-8
    stats = json.loads((out / "latent_stats.json").read_text())
    assert set(stats) == {"train (normal)", "test normal", "test anomalous"}
    assert {"toy_loss.png", "toy_flow.png", "soft_clamp.png", "scaled_inputs.png", "embedding.png",
            "differnet_training.png", "latent_normality.png"} <= set(_pngs(out))


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_02_attention_modules_needs_no_trained_model(course_run):
    # catches a mechanics notebook that trains (it must come before the training notebook), and a cold-start
    # factor that is not the one measured on the models it built
    out = course_run / "02_attention_modules"
    summary = json.loads((out / "attention_modules.json").read_text())
    assert summary["parameters"][-1]["se"] == sum(row["se"] for row in summary["parameters"][:-1])
    sizes = pd.read_csv(out / "embedding_sizes.csv").set_index("model")
    assert sizes.loc["differnet", "factor"] == pytest.approx(1.0)
    assert sizes.loc["se", "factor"] > 2
    assert sizes.loc["cbam", "factor"] > sizes.loc["se", "factor"]
    assert sizes.loc["se, open gates", "factor"] < sizes.loc["se", "factor"]  # open gates shrink less
    assert not (out / "runs").exists()
    assert not list(out.rglob("checkpoint.pt"))
    text = _markdown(course_run / "02_attention_modules.ipynb")
    assert f"**{sizes.loc['se', 'factor']:.1f}×** smaller than DifferNet's" in text
    assert {"attention_placement.png", "se_steps.png", "cbam_steps.png"} <= set(_pngs(out))


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_03_training(course_run):
    out = course_run / "03_training_attentdiffernet"
    variants = ["differnet", "se", "cbam"]
    for variant in variants:
        m = json.loads((out / f"metrics_{variant}.json").read_text())
        run = out / "runs" / "disc" / variant / "seed0"
        assert m["variant"] == variant
        assert (run / "checkpoint.pt").is_file()
        scores, history = pd.read_csv(run / "scores.csv"), pd.read_csv(run / "history.csv")
        assert m["auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-12)
        assert m["auroc_best"] == pytest.approx(history["auroc"].max(), abs=1e-12)  # best = max over evaluations
    table = pd.read_csv(out / "last_vs_best.csv", index_col="variant")
    assert list(table.index) == variants
    for variant in variants:  # the table shows each run's own numbers, in percent, with an interval around the last
        m = json.loads((out / f"metrics_{variant}.json").read_text())
        assert table.loc[variant, "auroc_last_%"] == pytest.approx(100 * m["auroc"], abs=0.051)
        assert table.loc[variant, "auroc_best_%"] == pytest.approx(100 * m["auroc_best"], abs=0.051)
        assert table.loc[variant, "last_95%_low"] <= table.loc[variant, "auroc_last_%"] + 0.01
        assert table.loc[variant, "auroc_last_%"] <= table.loc[variant, "last_95%_high"] + 0.01
    assert "feature_norm" in set(pd.read_csv(out / "shrinkage.csv")["quantity"])
    assert {"training_curves.png", "feature_shrinkage.png", "cold_start.png", "channel_gates.png",
            "spatial_maps.png"} <= set(_pngs(out))
    check_03_sentences(out, variants)  # the generated sentences state this run's numbers (random weights)
    opened = json.loads((out / "runs" / "open-gates" / "disc" / "se" / "seed0" / "metrics.json").read_text())
    assert opened["config"]["attention_init"] == "open"
    assert opened["seeds"] == m["seeds"]  # paired with the standard runs
    text = _markdown(course_run / "03_training_attentdiffernet.ipynb")
    se, differnet = (json.loads((out / f"metrics_{v}.json").read_text())["auroc"] for v in ("se", "differnet"))
    assert f"SE {100 * (se - differnet):+.1f}" in text  # the takeaway's gap is this run's


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
    text = _markdown(workflow_run[0] / "04_auroc_evaluation.ipynb")
    assert f"flags {expected[0][1]} of {expected[0][0] + expected[0][1]} normal images" in text  # the takeaway


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_04_05_and_06_read_the_runs_of_03_and_train_nothing_of_theirs(course_run):
    # catches a later notebook that ignores the training notebook's runs (retraining, or models that are not the
    # ones notebook 03 reported)
    runs = course_run / "03_training_attentdiffernet" / "runs" / "disc"
    assert not (course_run / "04_auroc_evaluation" / "runs").exists(), "04 trained although 03's runs were there"
    assert not (course_run / "05_gradcam_comparison" / "models" / "differnet").exists()
    roc = json.loads((course_run / "04_auroc_evaluation" / "roc.json").read_text())
    assert set(roc["variants"]) == {"differnet", "se", "cbam"}
    assert roc["n_rotations"] == 4  # COURSE: below max_rotations (8), so the ranking's intervals are checked at 4
    check_04_sentences(course_run / "04_auroc_evaluation")
    grid = course_run / "06_benchmark_report" / "grid" / "disc"
    for cell in runs.glob("*/seed*"):  # every cell of 06's grid is 03's run, copied (adopted), not retrained
        assert (grid / cell.parent.name / cell.name / "checkpoint.pt").read_bytes() == \
            (cell / "checkpoint.pt").read_bytes()


@pytest.mark.slow(seconds=30)  # a notebook run
def test_04_reuses_checkpoints_of_03(tmp_path, demo_root):
    # A finished run laid out as notebook 03 writes it: 04 must load it instead of training.
    from adnlib.config import preset
    from adnlib.run.train import train
    runs = tmp_path / "03_training_attentdiffernet" / "runs"
    train(preset("smoke"), demo_root, "disc", runs / "disc" / "differnet" / "seed0", progress=False)
    out = _run("04_auroc_evaluation", tmp_path, demo_root, variants=["differnet"], n_rotations=2, max_rotations=2)
    assert not (out / "runs").exists(), "04 trained although 03's checkpoint was there"
    assert set(json.loads((out / "roc.json").read_text())["variants"]) == {"differnet"}


@pytest.mark.slow(seconds=30)  # reads the session's course run
def test_06_benchmark_report(course_run):
    out = course_run / "06_benchmark_report"
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["category"]) == ["disc", "mean"]
    assert {"ours_differnet", "ours_se", "paper_DifferNet", "paper_AttentDifferNet", "comparable", "note"} \
        <= set(table.columns)
    assert table["paper_DifferNet"].isna().all()  # the demo is no paper dataset: no row mixes two datasets
    assert not table["comparable"].any()
    assert "not a paper dataset" in table["note"][0]
    assert {"comparison_bars.png", "paper_means.png", "forest_plot.png"} <= set(_pngs(out))
    paired = pd.read_csv(out / "paired_comparison.csv")  # three seeds per variant, paired, one row per category
    assert sorted(zip(paired["category"], paired["variant"])) == [("disc", "cbam"), ("disc", "se"), ("mean", "cbam"),
                                                                 ("mean", "se")]
    assert (paired["n_seeds"] == 3).all()
    assert (paired["ci_low"] <= paired["delta"]).all()
    assert (paired["interval"] != "test images only").all()  # three seeds: the verdict's branches run
    assert paired["p_holm"].notna().all()
    assert set(paired["verdict"]) <= {"beyond noise", "within noise"}
    summary = pd.read_csv(out / "seed_summary.csv")
    assert set(summary["n_seeds"]) == {3}
    check_06_sentences(out, random_weights=True)
    text = _markdown(course_run / "06_benchmark_report.ipynb")
    assert "1.77 ± 0.25" in text
    assert "does not say how its ± was computed" in text


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
