"""What a run used is recorded and compared, never what it was asked: the protocol (Config without its run-time
fields), the backbone 'auto' resolved to, the data's fingerprint; and a checkpoint is loaded only when it is the
file its results record. Fast: runs are made by hand (a smoke model saved with a metrics.json), nothing trains."""
import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from adnlib.config import Config, preset
from adnlib.data.datasets import data_record
from adnlib.errors import CheckpointError, OutputExistsError
from adnlib.model import weights as weights_module
from adnlib.model.network import AttentDifferNet
from adnlib.run.cell import cell_action
from adnlib.run.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    save_pointer,
    weights_record,
)
from adnlib.run.grid import _plan, compare_variants
from adnlib.run.identity import (
    RunMismatchError,
    check_comparable,
    expected_identity,
    identity_differences,
    provenance_columns,
)

BASE = preset("smoke", weights="auto", device="cpu")


def _edit_one_pixel(image: Path) -> None:
    picture = Image.open(image).convert("RGB")
    r, g, b = picture.getpixel((0, 0))
    picture.putpixel((0, 0), ((r + 128) % 256, g, b))
    picture.save(image)


@functools.cache
def _model(config: Config) -> AttentDifferNet:
    """One smoke model per config for the whole module (building AlexNet's random features takes half a second)."""
    return AttentDifferNet(config)


def fake_run(folder: Path, config: Config, data_root: Path, category: str = "disc", *, auroc: float = 0.8,
             expected: dict | None = None, best_is_last: bool = False) -> Path:
    """A finished run laid out as train() leaves it, without training: a smoke model's checkpoint.pt, best.pt, the
    score tables and a metrics.json recording the files' sha256 and what the run used (`expected`, default: what
    `config` would use on `category` of `data_root` now)."""
    folder.mkdir(parents=True, exist_ok=True)
    used = expected or expected_identity(config, data_root, category)
    model = _model(config)
    save_checkpoint(folder / "checkpoint.pt", model=model, kind="last", extra={"epoch": 1, "category": category})
    if best_is_last:
        save_pointer(folder / "best.pt", model=model, kind="best", weights_in="checkpoint.pt",
                     extra={"epoch": 1, "category": category})
    else:
        save_checkpoint(folder / "best.pt", model=model, kind="best", extra={"epoch": 1, "category": category})
    scores = pd.DataFrame({"path": [f"good/{i}.png" for i in range(3)] + [f"crack/{i}.png" for i in range(3)],
                           "label": [0, 0, 0, 1, 1, 1], "score": [0.1, 0.4, 0.2, 0.9, 0.3, 0.8]})
    for name in ("scores.csv", "scores_best.csv"):
        scores.to_csv(folder / name, index=False)
    metrics = {"auroc": auroc, "auroc_best": auroc, "best_epoch": 1, "epochs": config.epochs, "variant": config.variant,
               "category": category, "seed": config.seed, "backbone_weights": used["backbone"]["source"],
               "config": config.to_dict(), "backbone": used["backbone"], "data": used["data"],
               "weights": weights_record(folder, {"checkpoint.pt": 1, "best.pt": 1}, 1)}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


# --- the protocol apart from the machine ------------------------------------------------------------------------
def test_runtime_fields_are_the_machine_and_the_protocol_is_the_rest():
    # catches a run-time field (device) that blocks reuse, or a protocol field (epochs, amp) that does not
    assert set(Config.runtime_fields()) == {"device", "num_workers", "compile", "channels_last", "test_batch_size"}
    a, b = preset("smoke"), preset("smoke", device="cuda", num_workers=4, compile=True, test_batch_size=2)
    assert a.protocol_differences(b) == {}
    assert a.protocol_differences(a.replace(amp=True)) == {"amp": (False, True)}
    assert a.protocol_differences(a.replace(epochs=3)) == {"epochs": (1, 3)}
    assert a.protocol_differences(a.replace(epochs=3), resuming=True) == {}  # a resume may add epochs
    assert "device" not in a.protocol()
    assert "feature_cache" in a.protocol()  # K cached rotations instead of fresh ones: another computation


# --- what a run used --------------------------------------------------------------------------------------------
def test_data_fingerprint_follows_the_images_not_the_folder(tiny_root, tmp_path):
    # catches a fingerprint of names only (an edited image passes), of the root (a moved copy differs), or one
    # blind to labels (an image moved from good/ to a defect folder)
    here = data_record(tiny_root, "disc")
    copy = Path(shutil.copytree(tiny_root, tmp_path / "copy"))
    assert data_record(copy, "disc")["test"] == here["test"]
    assert data_record(copy, "disc")["train"] == here["train"]
    _edit_one_pixel(next((copy / "disc" / "test" / "good").iterdir()))
    assert data_record(copy, "disc")["test"] != here["test"]
    assert data_record(copy, "disc")["train"] == here["train"]
    moved = Path(shutil.copytree(tiny_root, tmp_path / "moved"))
    image = sorted((moved / "disc" / "test" / "good").iterdir())[0]
    image.rename(moved / "disc" / "test" / "crack" / image.name)
    assert data_record(moved, "disc")["test"]["sha256"] != here["test"]["sha256"]
    assert here["test"]["n"] == 6


def _imagenet_now(monkeypatch, tmp_path):
    """Make 'auto' resolve to ImageNet: a cached ImageNet file (stand-in weights: seeded random features)."""
    file = tmp_path / "hub" / "alexnet-owt-7be5be79.pth"
    file.parent.mkdir(parents=True)
    features = weights_module.random_alexnet_features(123)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, file)
    monkeypatch.setattr(weights_module, "imagenet_cache_path", lambda: file)
    weights_module._resolved.cache_clear()


def test_auto_is_recorded_as_what_it_resolved_to(monkeypatch, tmp_path):
    # catches 'auto' compared as a setting: offline it is random (and per seed), with ImageNet cached it is imagenet
    weights_module._resolved.cache_clear()
    offline = [weights_module.resolve_backbone("auto", seed) for seed in (1, 2)]
    assert [b["source"] for b in offline] == ["random", "random"]
    assert offline[0]["id"] == offline[1]["id"] == "random"
    assert offline[0]["sha256"] != offline[1]["sha256"]  # random features are drawn per seed
    _imagenet_now(monkeypatch, tmp_path)
    online = [weights_module.resolve_backbone("auto", seed) for seed in (1, 2)]
    assert [b["source"] for b in online] == ["imagenet", "imagenet"]
    assert online[0]["id"] == online[1]["id"] == f"sha256:{online[0]['sha256']}"  # the same for every seed
    model = AttentDifferNet(BASE.replace(seed=1))
    assert model.backbone_record() == weights_module.resolve_backbone("auto", 1)  # what a model built now holds
    weights_module._resolved.cache_clear()


def test_a_grid_refuses_a_cell_whose_auto_backbone_resolves_differently_now(tiny_root, tmp_path, monkeypatch):
    # catches the probe: seed 0 trained offline (random), then ImageNet in the cache; the grid reused
    # seed 0 beside ImageNet seeds 1-2 and reported one row over the mix
    weights_module._resolved.cache_clear()
    cells = [("disc", "differnet", 0)]
    fake_run(tmp_path / "grid" / "disc" / "differnet" / "seed0", BASE, tiny_root)
    assert [c.action for c in _plan(BASE, tmp_path / "grid", cells, True, False, 0, tiny_root)] == ["reuse"]
    _imagenet_now(monkeypatch, tmp_path)
    with pytest.raises(OutputExistsError, match=r"backbone: random \(weights sha256 \w+\) there, imagenet"):
        _plan(BASE, tmp_path / "grid", cells, True, False, 0, tiny_root)
    assert [c.action for c in _plan(BASE, tmp_path / "grid", cells, True, True, 0, tiny_root)] == ["train"]
    weights_module._resolved.cache_clear()


def test_a_grid_refuses_a_cell_of_other_data_and_takes_the_same_images_elsewhere(tiny_root, tmp_path):
    # catches reuse decided on the data root's name: an edited image reused, or a moved copy retrained
    config = BASE.replace(weights="none")
    cell = fake_run(tmp_path / "grid" / "disc" / "differnet" / "seed0", config, tiny_root)
    moved = Path(shutil.copytree(tiny_root, tmp_path / "moved"))
    assert cell_action(cell, config, expected=expected_identity(config, moved, "disc")) == "reuse"
    _edit_one_pixel(next((moved / "disc" / "train" / "good").iterdir()))
    with pytest.raises(OutputExistsError, match=r"data \(train images\): 8 images, sha256 \w+ there"):
        cell_action(cell, config, expected=expected_identity(config, moved, "disc"))


def test_a_cell_that_recorded_nothing_is_not_reused_as_the_same_run(tiny_root, tmp_path):
    # catches a cell of an older adnlib (no backbone or data record) reused as if it had used what is asked now
    config = BASE.replace(weights="none")
    cell = fake_run(tmp_path / "cell", config, tiny_root)
    metrics = json.loads((cell / "metrics.json").read_text())
    del metrics["backbone"], metrics["data"]
    (cell / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(OutputExistsError, match="not recorded"):
        cell_action(cell, config, expected=expected_identity(config, tiny_root, "disc"))


def test_differences_across_seeds_compare_the_backbone_kind_not_its_random_draw(tiny_root):
    # catches a comparison that refuses every random-backbone grid (random features differ per seed by design),
    # or one that lets a random seed beside an ImageNet seed pass
    a = expected_identity(BASE.replace(seed=0), tiny_root, "disc")
    b = expected_identity(BASE.replace(seed=1, variant="se"), tiny_root, "disc")
    assert identity_differences(a, b, same_run=False) == {}
    assert set(identity_differences(a, b, same_run=True)) == {"seed", "variant", "backbone"}
    c = {**b, "backbone": {**b["backbone"], "source": "imagenet", "id": "sha256:0"}}
    assert set(identity_differences(a, c, same_run=False)) == {"backbone"}


# --- comparisons refuse runs that differ ------------------------------------------------------------------------
def test_a_grid_report_refuses_a_folder_mixing_backbones_or_protocols(tiny_root, tmp_path, monkeypatch):
    # catches the folder of 8-epoch random-backbone cells and ImageNet cells compared without a word
    weights_module._resolved.cache_clear()
    grid = tmp_path / "grid"
    for variant in ("differnet", "se"):
        fake_run(grid / "disc" / variant / "seed0", BASE.replace(variant=variant), tiny_root)
    compare_variants(grid)  # one protocol, backbone and data set: compared
    _imagenet_now(monkeypatch, tmp_path)
    fake_run(grid / "disc" / "se" / "seed1", BASE.replace(variant="se", seed=1), tiny_root)
    with pytest.raises(RunMismatchError, match=r"disc/differnet/seed0 and disc/se/seed1 \(backbone: random"):
        compare_variants(grid)
    shutil.rmtree(grid / "disc" / "se" / "seed1")
    fake_run(grid / "disc" / "se" / "seed1", BASE.replace(variant="se", seed=1, epochs=3, weights="none"), tiny_root)
    with pytest.raises(RunMismatchError, match=r"and disc/se/seed1 \(epochs: 1 in the first, 3 in the second"):
        compare_variants(grid)
    weights_module._resolved.cache_clear()


def test_check_comparable_names_two_runs_and_the_field(tiny_root):
    # catches a table check that looks at one column only, or compares data across categories (they differ)
    rows = []
    for category in ("disc", "weave"):
        for variant in ("differnet", "se"):
            record = {"config": BASE.replace(variant=variant).to_dict(),
                      "backbone": {"source": "random", "id": "random", "sha256": "x"},
                      "data": {"train": {"n": 1, "sha256": category}, "test": {"n": 1, "sha256": category}}}
            rows.append({"category": category, "variant": variant, "seed": 0, **provenance_columns(record)})
    table = pd.DataFrame(rows)
    check_comparable(table)  # data differs between categories, as it must
    for column, value, message in (("backbone", "sha256:abc", "disc/differnet/seed0 and weave/se/seed0 differ in "
                                                              "backbone: random vs sha256:abc"),
                                   ("protocol", "0123", "disc/differnet/seed0 and weave/se/seed0 differ in config"),
                                   ("data", "other", "weave/differnet/seed0 and weave/se/seed0 differ in data")):
        mixed = table.copy()
        mixed.loc[3, column] = value
        with pytest.raises(RunMismatchError, match=message):
            check_comparable(mixed)


# --- a checkpoint is loaded only when it is the file its results record ------------------------------------------
def test_every_load_refuses_another_runs_checkpoint(tiny_root, tmp_path):
    # catches the probe: another run's checkpoint.pt copied into a run folder used by score, localize and
    # the notebooks (model_from_checkpoint), not only by evaluate
    run = fake_run(tmp_path / "run", BASE.replace(weights="none"), tiny_root)
    other = fake_run(tmp_path / "other", BASE.replace(weights="none", seed=1), tiny_root)
    model_from_checkpoint(run / "checkpoint.pt")
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    for load in (lambda p: model_from_checkpoint(p), lambda p: load_checkpoint(p)):
        with pytest.raises(CheckpointError, match="not the checkpoint the metrics.json beside it describes"):
            load(run / "checkpoint.pt")
    model_from_checkpoint(run / "checkpoint.pt", verify=False)  # the opt-out loads it as it is


def test_best_pt_of_another_seed_with_the_same_epoch_is_refused(tiny_root, tmp_path):
    # catches best.pt checked only for its epoch: another seed's best.pt of the same epoch passed
    run = fake_run(tmp_path / "run", BASE.replace(weights="none"), tiny_root)
    other = fake_run(tmp_path / "other", BASE.replace(weights="none", seed=1), tiny_root)
    shutil.copy(other / "best.pt", run / "best.pt")
    with pytest.raises(CheckpointError, match="best.pt is not the checkpoint"):
        model_from_checkpoint(run / "best.pt")


def test_a_pointers_target_is_verified_too(tiny_root, tmp_path):
    # catches a best.pt pointer verified while the checkpoint.pt it names was replaced
    run = fake_run(tmp_path / "run", BASE.replace(weights="none"), tiny_root, best_is_last=True)
    assert model_from_checkpoint(run / "best.pt").checkpoint_info["weights_in"] == "checkpoint.pt"
    other = fake_run(tmp_path / "other", BASE.replace(weights="none", seed=1), tiny_root)
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="checkpoint.pt is not the checkpoint"):
        model_from_checkpoint(run / "best.pt")


def test_a_recorded_best_pt_that_is_missing_is_refused(tiny_root, tmp_path):
    # catches a missing best.pt accepted because there is nothing to hash (the grid would reuse the cell)
    config = BASE.replace(weights="none")
    run = fake_run(tmp_path / "run", config, tiny_root)
    assert cell_action(run, config) == "reuse"
    (run / "best.pt").unlink()
    with pytest.raises(OutputExistsError, match="best.pt is missing"):
        cell_action(run, config)


def test_a_bare_checkpoint_needs_the_explicit_opt_out(tmp_path):
    # catches a checkpoint with no record loaded silently (nothing says it is the right file)
    save_checkpoint(tmp_path / "bare.pt", model=_model(BASE.replace(weights="none")), kind="last",
                    extra={"epoch": 1})
    with pytest.raises(CheckpointError, match="no metrics.json beside it records its sha256.*--unverified"):
        model_from_checkpoint(tmp_path / "bare.pt")
    assert model_from_checkpoint(tmp_path / "bare.pt", verify=False).checkpoint_info["epoch"] == 1
    digest = __import__("hashlib").sha256((tmp_path / "bare.pt").read_bytes()).hexdigest()
    assert model_from_checkpoint(tmp_path / "bare.pt", verify=digest).checkpoint_info["epoch"] == 1
    with pytest.raises(CheckpointError, match="not the 000000000000 it was checked against"):
        model_from_checkpoint(tmp_path / "bare.pt", verify="0" * 64)


def test_seed_summary_and_paired_comparison_refuse_runs_that_differ():
    # catches the statistics pooling runs of another backbone (the 'auto' seeds) when called directly on
    # collected tables, not only through compare_variants
    from adnlib.run.stats import paired_comparison, seed_summary
    rows, runs = [], []
    for variant in ("differnet", "se"):
        for seed in range(3):
            backbone = "sha256:abc" if (variant, seed) == ("se", 2) else "random"
            runs.append({"category": "disc", "variant": variant, "seed": seed, "auroc": 0.7, "protocol": "p",
                         "backbone": backbone, "data": "d"})
            rows += [{"category": "disc", "variant": variant, "seed": seed, "path": f"{i}.png", "label": int(i > 3),
                      "score": float(i + seed), "protocol": "p", "backbone": backbone, "data": "d"}
                     for i in range(8)]
    with pytest.raises(RunMismatchError, match="disc/differnet/seed0 and disc/se/seed2 differ in backbone"):
        seed_summary(pd.DataFrame(runs))
    with pytest.raises(RunMismatchError, match="disc/differnet/seed0 and disc/se/seed2 differ in backbone"):
        paired_comparison(pd.DataFrame(rows))
    same = pd.DataFrame(rows).assign(backbone="random")
    assert len(paired_comparison(same)) == 2  # the same runs, one backbone: compared
