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
    from adnlib.config import preset
    runs = []
    for i, config in enumerate([preset("smoke"), preset("smoke", variant="se", seed=1), preset("demo")]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"config": config.to_dict()}))
        runs.append(folder)
    assert recorded_config(runs[:2]).img_size == preset("smoke").img_size  # variant and seed may differ
    with pytest.raises(SourceError, match="2 different protocols"):
        recorded_config(runs)
