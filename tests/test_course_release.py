"""The teacher's command end to end, offline: `adnlib course` trains the course's runs (a saved AlexNet weights file
stands in for ImageNet's, the demo data for the teacher's dataset), publishes them as a manifest, and notebooks
03-06, given the manifest's URL on an HTTP server on 127.0.0.1, load the published runs instead of training."""
import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import serve_folder

from adnlib.teach.notebooks import run_notebooks

LOADING = ("03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison", "06_benchmark_report")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    import torch
    import torchvision
    path = tmp_path_factory.mktemp("weights") / "alexnet-saved.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def course(tmp_path_factory, demo_root, weights_file):
    """`adnlib course` as a teacher types it (smoke preset to stay fast): -> (course folder, its printed lines)."""
    out = tmp_path_factory.mktemp("teacher") / "course"
    done = subprocess.run([sys.executable, "-m", "adnlib", "course", "--data", str(demo_root), "--categories", "disc",
                           "--preset", "smoke", "--weights", str(weights_file), "--seeds", "0", "1", "2",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


@pytest.fixture(scope="module")
def server(course):
    """The course's release/ folder on 127.0.0.1 (a free port), stopped after the tests."""
    with serve_folder(course[0] / "release") as url:
        yield url


@pytest.mark.slow(seconds=60)  # trains the course (12 smoke runs) in a subprocess
def test_the_course_command_publishes_every_run_with_its_results(course, weights_file):
    # catches a release without the results a notebook reads (history, scores), the cold-start runs left out, or
    # instructions that do not say how to point the notebooks at it
    out, printed = course
    manifest = json.loads((out / "release" / "manifest.json").read_text())
    entries = manifest["checkpoints"]
    grid = [(e["category"], e["variant"], e["seed"]) for e in entries if "category" in e]
    assert sorted(grid) == sorted(("disc", v, s) for v in ("differnet", "se", "cbam") for s in (0, 1, 2))
    assert sorted(e["name"] for e in entries if "name" in e) == [f"open-gates/disc/se/seed{s}" for s in (0, 1, 2)]
    assert all(set(e["files"]) == {"metrics.json", "history.csv", "scores.csv"} for e in entries)
    metrics = json.loads((out / "disc" / "se" / "seed0" / "metrics.json").read_text())
    assert metrics["backbone"]["source"] == "file"  # trained with the weights file, as asked
    opened = json.loads((out / "open-gates" / "disc" / "se" / "seed1" / "metrics.json").read_text())
    assert opened["config"]["attention_init"] == "open"
    assert opened["seeds"] == json.loads((out / "disc" / "se" / "seed1" / "metrics.json").read_text())["seeds"]
    assert f'checkpoints = "{(out / "release" / "manifest.json").resolve()}"' in printed
    assert "students need the same dataset" in printed


@pytest.mark.slow(seconds=240)  # four notebooks run against the served course
def test_notebooks_03_to_06_load_the_published_course_instead_of_training(course, server, demo_root, tmp_path,
                                                                          monkeypatch, weights_file):
    # catches a notebook that ignores the manifest (trains although the course has the run, as 03 and 05 once did:
    # "se: trained here"), numbers that are not the course's, or a report that retrains a course's cells
    out, _ = course
    monkeypatch.delenv("ADNLIB_OFFLINE", raising=False)  # the kernels fetch from 127.0.0.1 only
    monkeypatch.setenv("ADNLIB_CACHE", str(tmp_path / "cache"))
    url = f"{server}/manifest.json"
    runs, _ = run_notebooks(tmp_path / "nb", {"data_root": str(demo_root), "checkpoints": url, "device": "cpu",
                                              "preset": "smoke", "weights": str(weights_file),  # nothing downloaded
                                              "categories": ["disc"], "n_show": 1, "max_images": 8,
                                              "n_rotations": 2, "max_rotations": 2},
                            names=LOADING, log=lambda line: None)
    assert all(run.ok for run in runs), [run.error for run in runs if not run.ok]
    nb = tmp_path / "nb"
    assert not (nb / "03_training_attentdiffernet" / "runs").exists(), "03 trained although the course had its runs"
    for variant in ("differnet", "se", "cbam"):
        shown = json.loads((nb / "03_training_attentdiffernet" / f"metrics_{variant}.json").read_text())
        published = json.loads((out / "disc" / variant / "seed0" / "metrics.json").read_text())
        assert shown == published  # the course's run, not a new one
    assert not (nb / "04_auroc_evaluation" / "runs").exists()
    explained = json.loads((nb / "05_gradcam_comparison" / "gradcam.json").read_text())
    assert explained["models"]["se"]["model"] == "course: disc/se/seed0"
    assert explained["seed_baseline"]["source"]["model"] == "course: disc/differnet/seed1"  # not trained here
    report = pd.read_csv(nb / "06_benchmark_report" / "runs.csv")
    assert sorted(report["seed"].unique()) == [0, 1, 2]  # every seed the course has
    for row in report.itertuples():
        published = json.loads((out / row.category / row.variant / f"seed{row.seed}" / "metrics.json").read_text())
        assert row.auroc == pytest.approx(published["auroc"], abs=1e-12)
    assert not (nb / "06_benchmark_report" / "grid").exists()  # nothing trained for the report
    text = (nb / "03_training_attentdiffernet.ipynb").read_text()
    assert "course: disc/se/seed0" in text  # the table names the source briefly, no machine path
