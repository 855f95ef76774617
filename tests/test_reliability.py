"""Reliability (issue 5): bad input gives one clear line (CLI, exit 2) or a named exception (API); faults lose nothing;
runs are reproducible. Everything runs on a 14-image copy of the demo data with the smoke preset, offline.
"""
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from adnlib import cli
from adnlib.config import preset
from adnlib.data.datasets import AnomalyDataset, find_samples, load_image
from adnlib.errors import CheckpointError, ConfigError, DatasetError, OutputExistsError, TrainingDivergedError
from adnlib.io import one_line
from adnlib.model import weights as weights_mod
from adnlib.run.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    write_json,
)
from adnlib.run.train import check_output_dir, train
from adnlib.teach import notebooks as notebooks_mod

SMOKE = ["--preset", "smoke", "--no-progress", "--device", "cpu"]


# --- fixtures -------------------------------------------------------------------------------------------------
def _copy_images(src: Path, dst: Path, n: int) -> list[Path]:
    dst.mkdir(parents=True)
    files = sorted(src.iterdir())[:n]
    for f in files:
        shutil.copy(f, dst / f.name)
    return [dst / f.name for f in files]


@pytest.fixture(scope="module")
def tiny_root(demo_root, tmp_path_factory):
    """8 train + 3 good + 3 crack images of 'disc'. Five train images are stored in unusual formats (grayscale,
    RGBA, palette, 16-bit PNG, 16-bit TIFF) and non-image files lie beside them: training must take all of it."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    src = demo_root / "disc"
    train_files = _copy_images(src / "train" / "good", root / "disc" / "train" / "good", 8)
    _copy_images(src / "test" / "good", root / "disc" / "test" / "good", 3)
    _copy_images(src / "test" / "crack", root / "disc" / "test" / "crack", 3)
    rgb = [Image.open(p).convert("RGB") for p in train_files[:5]]
    rgb[0].convert("L").save(train_files[0])
    rgb[1].convert("RGBA").save(train_files[1])
    rgb[2].convert("P").save(train_files[2])
    sixteen = (np.asarray(rgb[3].convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(train_files[3])
    train_files[4].unlink()
    Image.fromarray(np.asarray(rgb[4].convert("L"), dtype=np.uint16) * 257).save(train_files[4].with_suffix(".tif"))
    for folder in (root / "disc" / "train" / "good", root / "disc" / "test" / "crack"):
        (folder / "README.txt").write_text("notes")
        (folder / ".DS_Store").write_bytes(b"\0\1\2")
        (folder / "Thumbs.db").write_bytes(b"\0\1\2")
    return root


@pytest.fixture(scope="module")
def trained_run(tiny_root, tmp_path_factory):
    """One finished smoke run (1 epoch) on tiny_root; tests must not modify it (copy first)."""
    out = tmp_path_factory.mktemp("runs") / "differnet"
    result = train(preset("smoke"), tiny_root, "disc", out, progress=False)
    assert result.metrics["n_train"] == 8  # the unusual formats were read, the non-image files ignored
    return out


def copy_data(tiny_root, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_root, tmp_path / "data"))


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run the CLI in-process -> (exit status, stdout, stderr lines); warnings keep pytest's handling."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)

    def run(*args):
        capsys.readouterr()
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code
        captured = capsys.readouterr()
        return rc, captured.out, [ln for ln in captured.err.splitlines() if ln.strip()]
    return run


def assert_one_error_line(rc, err, *fragments):
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


# --- bad dataset input: one line naming the problem -------------------------------------------------------------
def _no_train_good(root):
    shutil.rmtree(root / "disc" / "train" / "good")


def _empty_train_good(root):
    for p in (root / "disc" / "train" / "good").glob("*.*"):
        if p.suffix in (".png", ".tif"):
            p.unlink()


def _no_anomalous(root):
    shutil.rmtree(root / "disc" / "test" / "crack")


def _no_test_good(root):
    shutil.rmtree(root / "disc" / "test" / "good")


def _truncated(root):
    path = root / "disc" / "test" / "crack" / "000.png"
    path.write_bytes(path.read_bytes()[:600])


def _tiny_image(root):
    Image.new("RGB", (8, 8)).save(root / "disc" / "test" / "good" / "000.png")


DATASET_CASES = {
    "missing root": (None, "nowhere", "disc", ["dataset root not found", "nowhere"]),
    "category not found": (None, "", "bottle", ["category 'bottle' not found", "categories found: disc"]),
    "root is a category": (None, "disc", "disc", ["looks like a category folder", "pass its parent"]),
    "no train/good": (_no_train_good, "", "disc", ["train/good is missing"]),
    "empty train/good": (_empty_train_good, "", "disc", ["no images in", "train/good"]),
    "no anomalous test folder": (_no_anomalous, "", "disc", ["no anomalous test images", "AUROC is undefined"]),
    "no test/good": (_no_test_good, "", "disc", ["no normal test images", "AUROC is undefined"]),
    "truncated image": (_truncated, "", "disc", ["cannot read image", "crack/000.png", "truncated",
                                                 "--skip-corrupt"]),
    "image below 16 px": (_tiny_image, "", "disc", ["image too small (8x8 px", "good/000.png"]),
}


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_bad_dataset_is_one_clear_line(case, tiny_root, tmp_path, run_cli):
    mutate, sub, category, fragments = DATASET_CASES[case]
    root = copy_data(tiny_root, tmp_path)
    if mutate:
        mutate(root)
    data = root / sub if sub else root
    with pytest.raises(DatasetError) as api_error:  # the API: a DatasetError (also a ValueError)
        for split in ("train", "test"):
            AnomalyDataset(data, category, split, img_size=128).check()
    for fragment in fragments:
        assert fragment in str(api_error.value)
    rc, _, err = run_cli("train", "--data", data, "--category", category, *SMOKE, "--out", tmp_path / "out")
    assert_one_error_line(rc, err, *fragments)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_empty_class_folder_and_non_image_files_are_ignored(tiny_root, tmp_path):
    root = copy_data(tiny_root, tmp_path)
    (root / "disc" / "test" / "hole").mkdir()
    (root / "disc" / "test" / "hole" / "notes.txt").write_text("to do")
    with pytest.warns(UserWarning, match=r"empty class folder ignored: .*test/hole"):
        samples = find_samples(root, "disc", "test")
    assert {s.defect_type for s in samples} == {"good", "crack"}
    assert len(samples) == 6
    assert all(s.path.suffix in (".png", ".tif") for s in find_samples(root, "disc", "train"))


def test_skip_corrupt_drops_bad_images_with_a_warning(tiny_root, tmp_path):
    root = copy_data(tiny_root, tmp_path)
    _truncated(root)
    (root / "disc" / "train" / "good" / "001.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"skipped: cannot read image .*crack/000.png: image file is truncated"):
        test = AnomalyDataset(root, "disc", "test", 128, skip_corrupt=True, cache=True)
    assert len(test) == 5
    assert test[4][0].shape == (3, 128, 128)
    with pytest.warns(UserWarning, match=r"skipped: cannot read image .*good/001.png: cannot identify image file"):
        assert len(AnomalyDataset(root, "disc", "train", 128, skip_corrupt=True)) == 7
    # Skipping every anomalous image leaves AUROC undefined: say so rather than report NaN.
    for p in (root / "disc" / "test" / "crack").glob("*.png"):
        p.write_bytes(b"broken")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no anomalous test images .*after skipping 3"):
        AnomalyDataset(root, "disc", "test", 128, skip_corrupt=True)


def test_several_corrupt_images_are_listed_in_one_message(tiny_root, tmp_path):
    root = copy_data(tiny_root, tmp_path)
    for p in sorted((root / "disc" / "train" / "good").glob("*.png"))[:5]:
        p.write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"^5 unreadable images: cannot read image .*; and 2 more \(skip"):
        AnomalyDataset(root, "disc", "train", 128).check()


def test_images_smaller_than_the_smallest_scale_are_upsampled_with_a_warning(tiny_root, tmp_path):
    root = copy_data(tiny_root, tmp_path)
    small = root / "disc" / "train" / "good" / "005.png"
    Image.open(small).resize((40, 40)).save(small)
    dataset = AnomalyDataset(root, "disc", "train", img_size=128, smallest_scale=64, cache=True)
    with pytest.warns(UserWarning, match=r"1 image\(s\) smaller than the smallest scale \(64 px\).*005.png \(40x40"):
        dataset.check()
    assert dataset[5][0].shape == (3, 128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 40 px is fine for a model whose smallest scale is 32 px
        AnomalyDataset(root, "disc", "train", img_size=128, smallest_scale=32).check()


@pytest.mark.parametrize("mode,suffix", [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"),
                                         ("P+transparency", ".png"), ("RGBA", ".png"), ("CMYK", ".jpg"),
                                         ("I;16", ".png"), ("I;16", ".tif"), ("I", ".tif"), ("F", ".tif")])
def test_unusual_image_modes_load_as_8_bit_rgb(tmp_path, mode, suffix):
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    if mode in ("I;16", "I"):
        img = Image.fromarray((ramp * 65535).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        img = Image.fromarray(ramp.astype(np.float32))
    elif mode == "P+transparency":
        img = Image.fromarray((ramp * 255).astype(np.uint8)).convert("P")
        img.info["transparency"] = 0
    else:
        img = Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)
    img.save(tmp_path / f"x{suffix}")
    loaded = load_image(tmp_path / f"x{suffix}")
    assert loaded.mode == "RGB"
    assert loaded.size == (32, 32)
    arr = np.asarray(loaded)
    if mode in ("I;16", "I", "F", "L"):  # the full range maps to 0..255, not to black or to white
        assert arr[0, 0, 0] <= 1
        assert arr[0, -1, 0] >= 254
        assert 100 < arr[0, 16, 0] < 155


# --- checkpoints ------------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _make_bad_checkpoint(kind: str, path: Path, good: Path):
    if kind == "text file":
        path.write_text("hello")
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "truncated checkpoint":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "plain state dict":
        torch.save({"features.0.weight": torch.zeros(1)}, path)
    elif kind == "pickled code":
        torch.save({"format": "adnlib-checkpoint", "x": _Evil(path.parent / "PWNED")}, path)
    elif kind == "newer format":
        ckpt = load_checkpoint(good)
        ckpt["format_version"] = FORMAT_VERSION + 1
        torch.save(ckpt, path)


@pytest.mark.parametrize("kind,fragment", [
    ("text file", "not a PyTorch checkpoint file"),
    ("empty file", "empty or truncated"),
    ("truncated checkpoint", "empty or truncated"),
    ("plain state dict", "not an adnlib checkpoint"),
    ("pickled code", "pickled Python code"),
    ("newer format", "written by a newer adnlib"),
])
def test_a_file_that_is_not_a_checkpoint_is_refused(kind, fragment, trained_run, tiny_root, tmp_path, run_cli):
    path = tmp_path / "bad.pt"
    _make_bad_checkpoint(kind, path, trained_run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=fragment):
        model_from_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()  # weights_only: the pickled code never ran
    rc, _, err = run_cli("evaluate", "--checkpoint", path, "--data", tiny_root, "--category", "disc", "--no-progress")
    assert_one_error_line(rc, err, str(path), fragment)
    assert "weights_only` set to `False`" not in err[0]  # never advise unsafe loading


def test_a_checkpoint_of_another_variant_or_config_is_explained(trained_run, tiny_root, tmp_path, run_cli):
    ckpt = trained_run / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="variant: requested 'se', checkpoint has 'differnet'"):
        model_from_checkpoint(ckpt, expect=preset("smoke", variant="se"))
    with pytest.raises(CheckpointError, match="img_size: requested 256, checkpoint has 128"):
        model_from_checkpoint(ckpt, expect={"img_size": 256})
    rc, _, err = run_cli("evaluate", "--checkpoint", ckpt, "--data", tiny_root, "--category", "disc",
                         "--variant", "cbam", "--no-progress")
    assert_one_error_line(rc, err, "was trained with another model", "variant: requested 'cbam'")
    rc, _, err = run_cli("evaluate", "--checkpoint", ckpt, "--data", tiny_root, "--category", "disc",
                         "--preset", "demo", "--no-progress")
    assert_one_error_line(rc, err, "img_size: requested 256, checkpoint has 128", "n_scales: requested 3")
    rc, _, err = run_cli("score", "--checkpoint", ckpt, "--variant", "se",
                         tiny_root / "disc" / "test" / "good" / "000.png")
    assert_one_error_line(rc, err, "variant: requested 'se'")
    # --resume with another config: refused before anything is written.
    before = (trained_run / "checkpoint.pt").stat().st_mtime_ns
    rc, _, err = run_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--variant", "se",
                         "--resume", "--out", trained_run)
    assert_one_error_line(rc, err, "cannot resume", "variant: checkpoint 'differnet', now 'se'")
    assert (trained_run / "checkpoint.pt").stat().st_mtime_ns == before


def test_a_checkpoint_evaluated_on_another_category_warns(trained_run, tiny_root, tmp_path, run_cli):
    root = copy_data(tiny_root, tmp_path)
    shutil.copytree(root / "disc", root / "other")
    with pytest.warns(UserWarning, match="trained on category 'disc', not 'other'"):
        rc, out, _ = run_cli("evaluate", "--checkpoint", trained_run / "checkpoint.pt", "--data", root,
                             "--category", "other", "--no-progress", "--device", "cpu")
    assert rc == 0
    assert json.loads(out)["category"] == "other"


def test_a_checkpoint_from_other_versions_loads_with_a_warning(trained_run, tmp_path):
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    ckpt["versions"] = {**ckpt["versions"], "torch": "1.0.0"}
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match=r"other versions \(torch 1.0.0 -> "):
        model_from_checkpoint(tmp_path / "old.pt", verify=False)  # a bare copy: no metrics.json beside it


# --- output folders, devices, weights ---------------------------------------------------------------------------
def test_an_existing_output_folder_is_never_overwritten_silently(trained_run, tiny_root, tmp_path, run_cli):
    def stamps():  # the results (the write lock's file records each command that took it: not a result)
        return {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir() if p.name != ".adnlib.lock"}
    before = stamps()
    rc, _, err = run_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--out", trained_run)
    assert_one_error_line(rc, err, "already holds a run", "--resume", "--overwrite")
    assert stamps() == before
    with pytest.raises(OutputExistsError):
        check_output_dir(trained_run, resume=False, overwrite=False)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        check_output_dir(tmp_path / "a_file", resume=False, overwrite=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        check_output_dir(tmp_path / "new", resume=True, overwrite=False)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "scores.csv").write_text("old")
    rc, _, err = run_cli("evaluate", "--checkpoint", trained_run / "checkpoint.pt", "--data", tiny_root,
                         "--category", "disc", "--out", tmp_path / "eval")
    assert_one_error_line(rc, err, "holds an interrupted evaluation", "--overwrite")
    assert (tmp_path / "eval" / "scores.csv").read_text() == "old"
    # a training run's folder is never an evaluation's, even with --overwrite: its metrics.json is the run's record
    rc, _, err = run_cli("evaluate", "--checkpoint", trained_run / "checkpoint.pt", "--data", tiny_root,
                         "--category", "disc", "--out", trained_run, "--overwrite")
    assert_one_error_line(rc, err, "holds a training run")
    assert stamps() == before


def test_unknown_or_missing_device_is_a_config_error(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, mps"):
        train(preset("smoke", device="tpu"), tiny_root, "disc", tmp_path / "o", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            train(preset("smoke", device="cuda"), tiny_root, "disc", progress=False)


def test_imagenet_weights_offline_fail_fast_with_advice(tiny_root, tmp_path, monkeypatch, run_cli):
    """`train --weights imagenet` with no cache and a host that accepts connections but never answers: the real
    probe runs (ADNLIB_OFFLINE off) and the command ends with one error line within the probe's timeout plus the
    time to read the data (a probe that only opens a TCP connection would go on to a download that stalls)."""
    probe_s = 0.5
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.delenv("ADNLIB_OFFLINE", raising=False)
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)  # only ever 127.0.0.1
        monkeypatch.setattr(weights_mod, "PROBE_TIMEOUT_S", probe_s)
        monkeypatch.setattr(weights_mod, "DOWNLOAD_TIMEOUT_S", 60.0)
        monkeypatch.setattr(weights_mod, "IMAGENET_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/alexnet.pth")
        monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "hub" / "alexnet.pth")
        weights_mod._probe.cache_clear()
        try:
            started = time.perf_counter()
            rc, _, err = run_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--weights", "imagenet",
                                 "--out", tmp_path / "o")
            seconds = time.perf_counter() - started
        finally:
            weights_mod._probe.cache_clear()
    assert_one_error_line(rc, err, "ImageNet AlexNet weights are not cached", "cannot be downloaded",
                          "--weights none")
    assert seconds < probe_s + 10


# --- faults -----------------------------------------------------------------------------------------------------
@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_divergence_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(trained_run, tiny_root,
                                                                                   tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))  # a previous run, replaced with overwrite=True
    with pytest.raises(TrainingDivergedError) as error:
        train(preset("smoke", epochs=2, eval_every=2, lr=100.0), tiny_root, "disc", out, overwrite=True,
              progress=False)
    message = str(error.value)
    assert "loss became nan at epoch 2, step 1 (lr 100)" in message
    assert f"last good checkpoint (epoch 1) is kept in {out / 'checkpoint.pt'}" in message
    model = model_from_checkpoint(out / "checkpoint.pt", verify=False)  # an unfinished run: no metrics.json yet
    assert model.checkpoint_info["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(pd.read_csv(out / "history.csv")) == 1
    # overwrite removed the replaced run's files: nothing stale sits beside the new checkpoint
    assert sorted(p.name for p in out.iterdir() if p.name != ".adnlib.lock") == ["checkpoint.pt", "history.csv"]


def test_non_finite_scores_stop_the_run_instead_of_a_nan_auroc(tiny_root):
    with pytest.raises(TrainingDivergedError, match=r"6 of 6 test scores are not finite after epoch 1"):
        train(preset("smoke", lr=100.0), tiny_root, "disc", progress=False)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(trained_run, tmp_path, monkeypatch):
    path = Path(shutil.copy(trained_run / "checkpoint.pt", tmp_path / "checkpoint.pt"))
    model = model_from_checkpoint(path, verify=False)

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model=model, kind="best")
    monkeypatch.undo()
    assert load_checkpoint(path, verify=False)["kind"] == "last"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


KILLED_WRITER = """
import sys, time
from adnlib.run.checkpoint import write_json, atomic_write
def write(tmp):
    with open(tmp, "w") as f:
        f.write('{"auroc": 0.')
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
atomic_write(sys.argv[1], write)
"""


@pytest.mark.slow
def test_a_kill_mid_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"auroc": 0.9})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"auroc": 0.9}
    assert len(list(tmp_path.glob(".metrics.json.*.tmp"))) == 1  # the interrupted write went to a side file


@pytest.mark.slow
def test_a_killed_training_resumes_to_the_same_result(tiny_root, tmp_path, run_cli):
    """SIGKILL a CLI training process after its first checkpoint, resume it, and get the uninterrupted numbers."""
    args = ["train", "--data", tiny_root, "--category", "disc", *SMOKE, "--epochs", "6", "--eval-every", "3"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "adnlib", *map(str, args), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    done = load_checkpoint(killed / "checkpoint.pt", verify=False)["epoch"]  # killed: no metrics.json yet
    assert 1 <= done < 6
    assert not (killed / "metrics.json").exists()

    rc, _, err = run_cli(*args, "--out", killed)  # without --resume: refused, nothing lost
    assert_one_error_line(rc, err, "--resume")
    rc, _, err = run_cli(*args, "--resume", "--out", killed)
    assert rc == 0, err
    assert not list(killed.glob(".*.tmp"))  # a write the kill interrupted leaves no side file after the resume

    reference = train(preset("smoke", epochs=6, eval_every=3, device="cpu"), tiny_root, "disc", tmp_path / "ref",
                      progress=False)
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == done
    for key in ("auroc", "auroc_best", "best_epoch", "auroc_per_defect"):
        assert resumed[key] == reference.metrics[key], key
    assert pd.read_csv(killed / "scores.csv")["score"].tolist() == reference.scores["score"].tolist()
    assert pd.read_csv(killed / "history.csv")["loss"].tolist() == reference.history["loss"].tolist()
    # reproducibility record: every seed and the versions that decide the numbers
    assert resumed["seeds"]["seed"] == 0
    assert {"data_order", "train_rotations", "test_rotations"} <= set(
        resumed["seeds"])
    assert {"torch", "torchvision", "FrEIA", "adnlib"} <= set(resumed["versions"])
    assert {"torch", "torchvision", "FrEIA", "adnlib"} <= set(load_checkpoint(killed / "best.pt")["versions"])


def test_interrupt_names_the_way_to_resume(tmp_path, monkeypatch, run_cli, tiny_root):
    import adnlib.run.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(adnlib.run.train, "train", interrupted)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "checkpoint.pt").write_bytes(b"")
    rc, _, err = run_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--out", tmp_path / "o")
    assert rc == 130
    assert err == ["error: interrupted; continue from the last checkpoint by running the same command "
                                 "with --resume"]


def test_an_error_from_a_dataloader_worker_is_still_one_line():
    from torch._utils import ExceptionWrapper
    try:
        raise DatasetError("cannot read image /data/x.png: image file is truncated")
    except DatasetError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DatasetError) as error:
        wrapped.reraise()
    assert "\n" in str(error.value)
    assert one_line(error.value) == "cannot read image /data/x.png: image file is truncated"


# --- notebooks --------------------------------------------------------------------------------------------------
def _notebook(path: Path, *sources: str) -> None:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("output_dir = 'out'", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_a_failing_notebook_cell_is_named_and_the_other_notebooks_still_run(tmp_path, monkeypatch, run_cli):
    (tmp_path / "nb").mkdir()
    _notebook(tmp_path / "nb" / "bad.ipynb", "x = 1", "ratio = x / 0")
    _notebook(tmp_path / "nb" / "good.ipynb", "y = 2")
    monkeypatch.setattr(notebooks_mod, "NOTEBOOK_DIR", tmp_path / "nb")
    monkeypatch.setattr(notebooks_mod, "NOTEBOOKS", ("bad", "good"))
    rc, out, err = run_cli("notebooks", "--out", tmp_path / "executed")
    assert rc == 1
    assert err == ["error: 1 notebook(s) failed: bad"]
    failure = next(line for line in out.splitlines() if "FAILED" in line)
    # cell 3 of the executed notebook: parameters, injected parameters, x = 1, then the failing one
    assert "bad: cell 3" in failure, failure
    assert "ZeroDivisionError: division by zero" in failure, failure
    assert str(tmp_path / "executed" / "bad.ipynb") in failure
    assert (tmp_path / "executed" / "good.ipynb").exists()
    assert "good" not in err[0]
