"""Every guarantee the code makes, checked in milliseconds (the fast suite): one writer per folder, no write through
a link, write orders that cannot mix runs, seed streams fixed for good, bounded resources and one-line refusals.
Each test says which wrong code it catches."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adnlib import cli, io
from adnlib.cli.commands import COMMANDS
from adnlib.errors import AdnlibError, CheckpointError, DatasetError
from adnlib.run.lock import LOCK_NAME, FolderLockedError, folder_lock


def _one_error(capsys, rc, expected_rc=2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == expected_rc, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


# --- one writer per folder ----------------------------------------------------------------------------------------
def _take(folder, outcome: list) -> None:
    """Take folder's lock in this thread; record the refusal's text (or 'taken')."""
    try:
        with folder_lock(folder):
            outcome.append("taken")
    except FolderLockedError as exc:
        outcome.append(str(exc))


def test_a_second_writer_is_refused_and_the_holder_may_nest(tmp_path):
    # catches a shared lock (LOCK_EX -> LOCK_SH: two writers let in), a lock that is never taken, one that stays
    # after its holder is done, and a nested take by the holder (a grid cell's training) refused or released early
    import threading
    outcome: list = []
    with folder_lock(tmp_path / "out"):
        with folder_lock(tmp_path / "out"):  # the same thread: nests
            pass
        other = threading.Thread(target=_take, args=(tmp_path / "out", outcome))
        other.start()
        other.join(10)
    assert len(outcome) == 1
    assert f"is being written by pid {os.getpid()}" in outcome[0]
    other = threading.Thread(target=_take, args=(tmp_path / "out", outcome))
    other.start()
    other.join(10)
    assert outcome[-1] == "taken"  # released on exit: the next writer gets it


def test_the_lock_file_holds_exactly_the_holder(tmp_path):
    # catches a lock file that is not truncated: an earlier, longer description would leave garbage behind the new
    # one, and the refusal would name nobody
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "x" * 500, "since": 0}) + "\n")
    with folder_lock(tmp_path, command="probe"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid()
    assert holder["command"] == "probe"


# --- no write follows a link --------------------------------------------------------------------------------------
def test_a_link_planted_as_the_lock_file_is_refused_and_its_target_untouched(tmp_path):
    # catches the lock file opened with O_CREAT alone: `adnlib train` truncated and overwrote the link's target
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(io.UnsafePathError, match="is a symbolic link, not adnlib's lock file"):
        with folder_lock(out):
            pass
    assert victim.read_text() == "precious"
    (out / LOCK_NAME).unlink()
    (out / LOCK_NAME).mkdir()  # not a regular file either
    with pytest.raises(io.UnsafePathError, match="is a folder"):
        with folder_lock(out):
            pass
    (out / LOCK_NAME).rmdir()
    os.mkfifo(out / LOCK_NAME)  # opens (read/write, non-blocking) like a file: only its kind gives it away
    with pytest.raises(io.UnsafePathError, match="is not a regular file"):
        with folder_lock(out):
            pass


@pytest.mark.parametrize("write", ["probe", "atomic", "clock"])
def test_no_temporary_or_probe_file_writes_through_a_planted_link(tmp_path, monkeypatch, write):
    # catches probe and temporary files of predictable names opened without O_EXCL | O_NOFOLLOW (the write check
    # `.adnlib-write-check-<pid>`, the clock probe, atomic writes' side files)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(io.secrets, "token_hex", lambda n: "f" * (2 * n))  # the name an attacker would predict
    for name in (".adnlib-write-check-", ".adnlib-clock-", ".result.json."):
        suffix = ".tmp" if name.startswith(".result") else ""
        (out / f"{name}{'f' * 16}{suffix}").symlink_to(victim)
    with pytest.raises(OSError):
        if write == "probe":
            io.probe_folder(out)
        elif write == "clock":
            io.probe_folder(out, ".adnlib-clock-")
        else:
            io.write_json(out / "result.json", {"a": 1})
    assert victim.read_text() == "precious"


def test_an_atomic_write_replaces_a_link_at_the_target_instead_of_writing_through_it(tmp_path):
    # catches a write that opens the target itself (open(path, "w") follows the link)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "metrics.json").symlink_to(victim)
    io.write_json(tmp_path / "metrics.json", {"auroc": 0.5})
    assert victim.read_text() == "precious"
    assert not (tmp_path / "metrics.json").is_symlink()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"auroc": 0.5}


# --- write orders that cannot mix runs ---------------------------------------------------------------------------
def test_adoption_copies_metrics_json_last(tmp_path, monkeypatch):
    # catches a copy whose metrics.json lands first: killed then, the target would look finished without its files
    from adnlib.run import grid
    origin, target = tmp_path / "origin", tmp_path / "target"
    origin.mkdir()
    target.mkdir()
    for name in ("metrics.json", "checkpoint.pt", "scores.csv", "best.pt", "history.csv"):
        (origin / name).write_text(name)
    moved, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), replace(a, b)))
    grid._copy_cell(origin, target)
    assert moved[-1] == "metrics.json"
    assert sorted(moved) == sorted(p.name for p in origin.iterdir())


def test_an_evaluation_removes_the_old_metrics_before_writing_new_scores(tmp_path, monkeypatch):
    # catches scores.csv written before metrics.json is removed: killed in between, the folder held new scores
    # beside the old metrics
    from adnlib.run import evaluation
    (tmp_path / "metrics.json").write_text('{"auroc": 0.1}')
    (tmp_path / "scores.csv").write_text("old")

    def full_disk(path, frame):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "write_csv", full_disk)
    with pytest.raises(OSError):
        evaluation.write_evaluation(tmp_path, pd.DataFrame({"score": [1.0]}), {"auroc": 0.9})
    assert not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "scores.csv").read_text() == "old"


def test_a_localization_never_leaves_old_results_beside_new_overlays(tmp_path, monkeypatch):
    # catches localization.json written after the overlays' swap without removing the old one first (a kill in
    # between left the new overlays beside the old metrics)
    from adnlib.explain import localize
    (tmp_path / "localization.json").write_text('{"old": true}')
    (tmp_path / "overlays" / "gradcam").mkdir(parents=True)

    def killed(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(localize, "_swap_in", killed)
    monkeypatch.setattr(localize, "_save_overlays", lambda folder, *a: folder.mkdir(parents=True))
    with pytest.raises(AdnlibError):
        localize.write_localization(tmp_path, {"new": True}, None, None, {"nll-gradient": None}, None, 1)
    assert not (tmp_path / "localization.json").exists()
    with pytest.raises(AdnlibError, match="holds an interrupted localization"):
        localize.check_localization_output(tmp_path)


def test_an_executed_notebook_is_renamed_into_place_only_when_whole(tmp_path):
    # catches papermill writing the executed notebook in place: a full disk left truncated JSON as the result
    from adnlib.teach.notebooks import _written_then_renamed
    output = tmp_path / "00.ipynb"
    output.write_text("previous")
    with _written_then_renamed(output) as writing:
        writing.write_text('{"cells": [')  # cut off
    assert output.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["00.ipynb"]


# --- seed streams fixed for good ---------------------------------------------------------------------------------
def test_seed_streams_are_fixed_numbers():
    # catches streams that change between processes or versions (crc32 -> hash(), another mixing): a rerun with the
    # same seed must draw the same flow, batches and angles on any machine
    from adnlib.seeds import stream_seed
    assert stream_seed(0, "flow_init") == 2085344997438743969
    assert stream_seed(0, "train_rotations") == 4442825043575929988
    assert stream_seed(7, "data_order") == 4419644162104302003
    assert stream_seed(7, "random_backbone") == 6437043985405788770


# --- localisation's regions ---------------------------------------------------------------------------------------
def test_the_bootstrap_counts_regions_8_connected_as_pro_does():
    # catches 4-connected regions in the bootstrap (two regions where PRO counts one): its replicates then halve
    # PRO and the interval no longer contains the exact difference
    from adnlib.explain.localization_metrics import paired_localization_bootstrap
    masks = np.zeros((10, 16, 16), bool)
    for i in range(5, 10):  # defects of two pixels that touch at a corner only
        masks[i, 4, 4] = masks[i, 5, 5] = True
    rng = np.random.default_rng(0)
    noise, perfect = rng.random(masks.shape), masks.astype(float)
    pro = paired_localization_bootstrap(masks, noise, perfect, n_boot=200)["pro"]
    assert pro["b"] == pytest.approx(1.0)
    assert pro["low"] <= pro["delta"] <= pro["high"]


# --- bounded resources and one-line refusals ----------------------------------------------------------------------
def test_sigterm_ends_a_command_with_one_line(monkeypatch, capsys):
    # catches SIGTERM ending the process with rc 143 and no word (Ctrl-C got a line and the resume hint)
    monkeypatch.setitem(COMMANDS, "demo-data", lambda args: os.kill(os.getpid(), signal.SIGTERM) or 0)
    before = signal.getsignal(signal.SIGTERM)
    rc = cli.main(["demo-data"])
    assert "terminated (SIGTERM)" in _one_error(capsys, rc, 143)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_a_memory_error_anywhere_is_one_line(monkeypatch, capsys):
    # catches a MemoryError traceback (PIL decoding a 100000-px image, numpy allocating 18 GiB)
    def explode(args):
        raise MemoryError

    monkeypatch.setitem(COMMANDS, "demo-data", explode)
    assert "out of memory" in _one_error(capsys, cli.main(["demo-data"]))


def test_memory_is_estimated_before_a_run_starts():
    # catches an estimate that does not grow with the image size or the rotations (the probes: --img-size 100000,
    # --tta 100000), or one that refuses the presets on an ordinary machine
    from adnlib.config import preset
    from adnlib.run.memory import MemoryNeedError, check_memory, needed_bytes
    demo = preset("demo")
    assert needed_bytes(demo, copies=48, images=65, training=True) < 4 * 2 ** 30
    assert needed_bytes(preset("demo", img_size=512), copies=48, images=65, training=True) > \
        3 * needed_bytes(demo, copies=48, images=65, training=True)
    with pytest.raises(MemoryNeedError, match=r"needs about \d+\.\d GiB .* lower the image size"):
        check_memory(preset("demo", img_size=100000), copies=48, images=65, training=True)
    with pytest.raises(MemoryNeedError, match="--tta"):
        check_memory(demo, copies=8 * 100000, images=25, training=False)


def test_a_manifest_entry_must_be_http_or_relative():
    # catches a manifest served over http that names file:///... (returned as a local checkpoint path)
    from adnlib.run.fetch import _resolve
    assert _resolve("x/c.pt", "https://host/m.json") == "https://host/x/c.pt"
    for entry in ("file:///etc/passwd", "/etc/passwd", "ftp://host/c.pt", "~/c.pt"):
        with pytest.raises(CheckpointError, match="must be http"):
            _resolve(entry, "https://host/m.json")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", " disc"])
def test_a_category_is_a_plain_folder_name(name, tmp_path):
    # catches `grid --categories ../x` writing cells outside --out (and reading outside the dataset root)
    from adnlib.data.datasets import category_dir
    from adnlib.run.cell import cell_dir
    with pytest.raises(DatasetError, match="not a plain folder name"):
        cell_dir(tmp_path, name, "se", 0)
    with pytest.raises(DatasetError, match="not a plain folder name"):
        category_dir(tmp_path, name)


def test_the_demo_data_is_never_written_into_a_users_dataset(tmp_path, capsys):
    # catches `demo-data --out <a user's dataset>` adding two fake categories beside the user's own
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    rc = cli.main(["demo-data", "--out", str(tmp_path)])
    assert "is not a demo dataset (it holds bottle)" in _one_error(capsys, rc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bottle"]


@pytest.mark.parametrize("variable", ["ADNLIB_RUNS", "ADNLIB_DATA"])
def test_an_environment_folder_that_is_a_file_is_one_line(variable, tmp_path, monkeypatch):
    # catches NotADirectoryError from ADNLIB_RUNS and "max() arg is an empty sequence" from ADNLIB_DATA
    from adnlib.teach import paths
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(variable, str(tmp_path / "file"))
    with pytest.raises(AdnlibError, match=rf"\${variable} = .* is a file, not a folder"):
        paths.data_root() if variable == "ADNLIB_DATA" else paths.output_dir("00_quickstart")


def test_a_bad_weights_file_never_repeats_torchs_unsafe_advice(tmp_path):
    # catches torch's "rerun with weights_only=False" passed on to the user
    from adnlib.errors import WeightsError
    from adnlib.model.weights import load_alexnet_features

    class Code:
        def __reduce__(self):
            return (print, ("ran",))

    import torch
    torch.save({"0.weight": Code()}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as caught:
        load_alexnet_features(str(tmp_path / "bad.pth"))
    assert "weights_only=False" not in str(caught.value)
    assert "weights_only" not in str(caught.value).replace("safe loading (weights_only)", "")


# --- the three guarantees the mutation check found untested by the fast suite -------------------------------------
def test_an_executed_notebook_lands_whole_or_not_at_all(tmp_path):
    # catches the executed notebook written in place or never renamed: a whole notebook replaces the previous one
    # (papermill's record naming the final file), a truncated one (a full disk) leaves the previous one as it was
    import nbformat

    from adnlib.teach.notebooks import _written_then_renamed
    output = tmp_path / "00_quickstart.ipynb"
    output.write_text("the previous run")
    with _written_then_renamed(output) as writing:
        assert writing != output
        nbformat.write(nbformat.v4.new_notebook(metadata={"papermill": {"output_path": str(writing)}}), writing)
    assert nbformat.read(output, as_version=4).metadata["papermill"]["output_path"] == str(output)
    before = output.read_bytes()
    with _written_then_renamed(output) as writing:
        writing.write_text('{"cells": [')  # cut off mid-write
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_quickstart.ipynb"]  # no partial file left


def test_every_reader_of_images_refuses_a_tiny_one(tmp_path):
    # catches the minimum size applied by training only: `score` fed a 1x1 image (nothing to rotate or pool)
    from PIL import Image

    import adnlib
    from adnlib.data.datasets import MIN_IMAGE_PX, read_resized
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(DatasetError, match=f"image too small \\(1x1 px, the least is {MIN_IMAGE_PX}\\)"):
        read_resized(tiny, 64)
    model = adnlib.AttentDifferNet(adnlib.preset("smoke", weights="none"))
    with pytest.raises(DatasetError, match="image too small"):
        adnlib.score_images(model, [tiny])


def test_maps_of_every_method_are_normalised_per_image(tmp_path):
    # catches maps compared on their raw scales (a method whose values are larger would win every comparison)
    import torch

    import adnlib
    from adnlib.explain.localization_metrics import method_maps
    model = adnlib.AttentDifferNet(adnlib.preset("smoke", variant="cbam", weights="none")).eval()
    size = model.config.img_size
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    maps = method_maps(model, images, "cbam-spatial")
    flat = maps.reshape(len(maps), -1)
    assert flat.min(1) == pytest.approx(0.0)
    assert flat.max(1) == pytest.approx(1.0)
