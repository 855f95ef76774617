"""A notebook's `checkpoints` parameter (adnlib.teach.sources.run_source): train here, notebook 03's runs, a course
folder, a published manifest, or $ADNLIB_CHECKPOINTS; a course's runs are refused on other data."""
import json
import shutil

import pytest

from adnlib.run.fetch import write_manifest
from adnlib.teach.sources import CHECKPOINTS_ENV, SourceError, recorded_config, run_source


def _grid(root, cells, data=None):
    for category, variant, seed in cells:
        cell = root / category / variant / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "checkpoint.pt").write_bytes(f"{category}/{variant}/{seed}".encode())
        (cell / "metrics.json").write_text(json.dumps({"category": category, "variant": variant, "seed": seed,
                                                      **({"data": data} if data else {})}))


def test_every_form_of_the_checkpoints_parameter(tmp_path, monkeypatch):
    # catches a resolver that ignores the seed, the "" (train here) choice, a manifest's cells, or
    # $ADNLIB_CHECKPOINTS (the course default a teacher sets once)
    monkeypatch.delenv(CHECKPOINTS_ENV, raising=False)
    runs = tmp_path / "03_training_attentdiffernet" / "runs"
    _grid(runs, [("disc", "differnet", 0), ("disc", "se", 0), ("disc", "se", 1), ("weave", "se", 0)])
    assert run_source("", runs).folder is None
    auto = run_source("auto", runs)
    assert not auto.course
    assert auto.run("disc", "se", 1) == runs / "disc" / "se" / "seed1"
    assert auto.run("disc", "cbam", 0) is None  # trained here
    assert auto.label(auto.run("disc", "se", 1)) == "notebook 03: disc/se/seed1"  # no machine path in a table
    folder = run_source(str(runs))
    assert folder.course
    assert folder.run("disc", "differnet", 0) is not None
    manifest = write_manifest(runs, None, tmp_path / "published" / "manifest.json")
    monkeypatch.setenv("ADNLIB_CACHE", str(tmp_path / "cache"))
    fetched = run_source(str(manifest), categories="disc", variants=["differnet", "se", "cbam"], seeds=0)
    assert fetched.course
    assert (fetched.run("disc", "se", 0) / "checkpoint.pt").read_bytes() == b"disc/se/0"  # sha256-checked
    assert fetched.run("disc", "se", 1) is None  # only what the notebook asked for was fetched
    assert fetched.run("disc", "cbam", 0) is None
    monkeypatch.setenv(CHECKPOINTS_ENV, str(manifest))
    from_env = run_source("auto", runs, categories="disc", variants="se", seeds=0)
    assert from_env.course
    assert from_env.folder == fetched.folder
    assert run_source("", runs).folder is None  # "" still trains here, whatever the environment says


def test_a_checkpoints_value_that_names_nothing_is_one_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a folder of runs, a manifest"):
        run_source(str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match="checkpoints: cannot read checkpoint manifest"):
        run_source(str(tmp_path / "nowhere.json"))


def test_a_course_trained_on_other_images_is_refused(tiny_root, tmp_path):
    # catches a teacher's runs scored on a student's different data (numbers about nothing): every run's recorded
    # data fingerprint is compared with the notebook's data
    from adnlib.data.datasets import data_record
    runs = tmp_path / "course"
    _grid(runs, [("disc", "se", 0)], data=data_record(tiny_root, "disc"))
    assert run_source(str(runs), data_root=tiny_root).run("disc", "se", 0) is not None
    other = tmp_path / "other"
    shutil.copytree(tiny_root, other)
    edited = next((other / "disc" / "test" / "good").iterdir())
    edited.write_bytes(edited.read_bytes() + b"\0")  # one test image changed
    with pytest.raises(SourceError, match=r"trained on other images .*data \(test images\)"):
        run_source(str(runs), data_root=other).run("disc", "se", 0)


def test_a_report_refuses_runs_of_different_protocols(tmp_path):
    # catches a course mixing protocols, or (same config, weights 'auto') one run on ImageNet and one on random
    # backbone weights: what the runs used is compared, not only what they were asked
    from adnlib.config import preset
    imagenet = {"source": "imagenet", "file": None, "sha256": "a" * 64, "id": "sha256:" + "a" * 64}
    random_backbone = {"source": "random", "file": None, "sha256": "b" * 64, "id": "random"}
    runs = []
    for i, (config, backbone) in enumerate([(preset("smoke"), imagenet), (preset("smoke", variant="se"), imagenet),
                                            (preset("demo"), imagenet), (preset("smoke", variant="cbam"),
                                                                         random_backbone)]):
        folder = tmp_path / "disc" / config.variant / f"seed{i}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "backbone": backbone,
                                                         "data": {"train": {"n": 8, "sha256": "c" * 64},
                                                                  "test": {"n": 6, "sha256": "d" * 64}}}))
        runs.append(folder)
    assert recorded_config(runs[:2]).img_size == preset("smoke").img_size  # variant and seed may differ
    with pytest.raises(SourceError, match="mixes runs that differ"):
        recorded_config(runs[:3])
    with pytest.raises(SourceError, match="backbone"):
        recorded_config([runs[0], runs[3]])


def test_a_course_is_read_never_completed_here(tmp_path):
    # catches a notebook that trains a course's missing run with its own preset (two protocols compared), an empty
    # course folder taken as "nothing to load", or a named run (the open-gates study) not asked for
    course = tmp_path / "course"
    _grid(course, [("disc", "differnet", 0), ("disc", "se", 0)])
    source = run_source(str(course))
    assert source.require([("disc", "differnet", 0), ("disc", "se", 0)]) == [
        course / "disc" / "differnet" / "seed0", course / "disc" / "se" / "seed0"]
    with pytest.raises(SourceError, match=r"no finished run for disc/cbam/seed0: choose"):
        source.require([("disc", "se", 0), ("disc", "cbam", 0)])
    with pytest.raises(SourceError, match="open-gates/disc/se/seed0"):
        source.require([("disc", "se", 0)], names={"open-gates/disc/se/seed0": "disc"})
    (course / "disc" / "se" / "seed1").mkdir()
    (course / "disc" / "se" / "seed1" / "checkpoint.pt").write_bytes(b"x")  # a checkpoint without its results
    with pytest.raises(SourceError, match="version 1 manifest"):
        source.require([("disc", "se", 1)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no finished run"):
        run_source(str(tmp_path / "empty")).require([("disc", "se", 0)])
    with pytest.raises(SourceError, match="no run asked for"):
        source.require([])


@pytest.mark.parametrize("name", ["03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison",
                                  "06_benchmark_report"])
def test_every_notebook_reading_a_course_requires_its_runs(name):
    # catches a notebook that, given a course, trains what the course lacks instead of saying so
    from adnlib.teach.notebooks import NOTEBOOK_DIR
    cells = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "if source.course:" in code
    assert "source.require(" in code
    assert code.index("source.require(") < min(code.index(t) for t in ("train(", "run_grid(") if t in code
                                               and code.index(t) > code.index("source = run_source("))


def test_a_relative_course_folder_is_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    # catches checkpoints = "runs/compare" (as the docs write it) failing in a kernel started in notebooks/
    import adnlib.teach.paths as paths
    repository = tmp_path / "repo"
    _grid(repository / "runs" / "compare", [("disc", "se", 0)])
    (repository / "notebooks").mkdir()
    monkeypatch.setattr(paths, "REPOSITORY", repository)
    monkeypatch.setattr(paths, "in_repository", lambda: True)
    monkeypatch.chdir(repository / "notebooks")
    source = run_source("runs/compare")
    assert source.run("disc", "se", 0) == repository / "runs" / "compare" / "disc" / "se" / "seed0"
    with pytest.raises(SourceError, match="not a folder of runs"):
        run_source("runs/elsewhere")


def test_the_course_command_refuses_to_fall_back_to_random_weights(tmp_path, monkeypatch):
    # catches a teacher publishing a random-backbone course by accident (weights 'auto' offline), which students
    # would set beside the paper's numbers; 'none' (random on purpose) is still allowed
    import adnlib.model.weights as weights
    from adnlib.config import preset
    from adnlib.errors import ConfigError
    from adnlib.run.course import refuse_a_silent_random_backbone, train_course
    monkeypatch.setattr(weights, "resolve_backbone", lambda name, seed: {"source": "random"})
    with pytest.raises(ConfigError, match="RANDOM backbone"):
        train_course(preset("smoke", weights="auto"), tmp_path / "no-data", tmp_path / "course")
    assert not (tmp_path / "course").exists()  # refused before anything was trained or written
    refuse_a_silent_random_backbone(preset("smoke", weights="none"))
    monkeypatch.setattr(weights, "resolve_backbone", lambda name, seed: {"source": "imagenet"})
    refuse_a_silent_random_backbone(preset("smoke", weights="auto"))


def test_a_course_release_holds_exactly_what_its_manifest_lists(tmp_path):
    # catches a release folder that keeps a retrained run's old assets (uploaded with the new ones, counted in the
    # published size)
    from adnlib.run.course import _remove_unlisted
    _grid(tmp_path / "course", [("disc", "se", 0)])
    release = tmp_path / "course" / "release"
    release.mkdir()
    (release / "disc_se_seed0-0123abcd.pt").write_bytes(b"an earlier training of the cell")
    outside = tmp_path / "private.txt"
    outside.write_text("not for upload")
    (release / "notes.txt").symlink_to(outside)  # `gh release create release/*` would upload what it points to
    for base_url in (None, "https://example.org/releases/download/v1"):
        manifest = write_manifest(tmp_path / "course", base_url, release / "manifest.json")
        _remove_unlisted(manifest)
        listed = json.loads(manifest.read_text())["checkpoints"]
        assert sorted(p.name for p in release.iterdir()) == sorted(
            ["manifest.json", listed[0]["url"].rsplit("/", 1)[-1],
             *(f["url"].rsplit("/", 1)[-1] for f in listed[0]["files"].values())])
    assert outside.read_text() == "not for upload"  # the link went, not its target


def test_a_courses_named_run_is_checked_against_its_categorys_data(tiny_root, tmp_path):
    # catches require() checking a named run (03's open-gates SE) with no category: with data_root set, as notebook
    # 03 always sets it, that crashed instead of loading the run or refusing it in one line
    from adnlib.data.datasets import data_record
    course = tmp_path / "course"
    _grid(course, [("disc", "se", 0)], data=data_record(tiny_root, "disc"))
    _grid(course / "open-gates", [("disc", "se", 0)], data=data_record(tiny_root, "disc"))
    source = run_source(str(course), data_root=tiny_root)
    assert source.require([("disc", "se", 0)], names={"open-gates/disc/se/seed0": "disc"}) == [
        course / "disc" / "se" / "seed0"]
    other = tmp_path / "other"
    shutil.copytree(tiny_root, other)
    edited = next((other / "disc" / "test" / "good").iterdir())
    edited.write_bytes(edited.read_bytes() + b"\0")
    shutil.rmtree(course / "open-gates")
    _grid(course / "open-gates", [("disc", "se", 0)], data=data_record(other, "disc"))
    with pytest.raises(SourceError, match="open-gates/disc/se/seed0 was trained on other images"):
        source.require([("disc", "se", 0)], names={"open-gates/disc/se/seed0": "disc"})


def test_exercises_beside_a_course_train_with_its_protocol_and_backbone(tmp_path):
    # catches exercises trained with the teacher's machine path or an 'auto' that turns random offline beside
    # ImageNet runs, or with this notebook's preset instead of the course's protocol
    from adnlib.config import preset
    from adnlib.teach.sources import training_config
    for source, expected in (({"source": "imagenet", "file": None}, "imagenet"),
                             ({"source": "random", "file": None}, "none"),
                             ({"source": "file", "file": "/teacher/alexnet.pth"}, "/teacher/alexnet.pth")):
        run = tmp_path / source["source"] / "disc" / "se" / "seed0"
        run.mkdir(parents=True)
        config = preset("paper", variant="se", weights="auto")
        (run / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "backbone": source}))
        made = training_config([run], device="cpu", seed=1)
        assert (made.weights, made.img_size, made.epochs, made.seed, made.device) == (expected, 448, 192, 1, "cpu")
