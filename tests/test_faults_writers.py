"""Issue 21 (writers): one writer per results folder, results that know their weights, output folders checked up
front, localisation as a library call. Each test replays a probe of the issue and asserts its exact outcome: exit
status 2 and one `error:` line, or the correct result.

CLI cases run in-process (tests/conftest.py: adnlib_cli); the lock tests start real second processes. The
read-only and full-disk cases mount a read-only bind mount or a small tmpfs (root only; skipped otherwise) and
always unmount.
"""
import contextlib
import errno
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from adnlib.run.checkpoint import file_sha256
from adnlib.run.lock import LOCK_NAME, FolderLockedError, folder_lock

SMOKE = ("--preset", "smoke", "--weights", "none", "--device", "cpu", "--no-progress")
REPOSITORY = Path(__file__).resolve().parents[1]


def assert_error_line(rc, err, *fragments):
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPOSITORY), "ADNLIB_OFFLINE": "1"}


def _wait_for_holder(folder: Path, seconds: float = 120) -> int:
    """The pid written into folder's lock file by the process that took it (waits until it is there)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads((folder / LOCK_NAME).read_text())["pid"]
        time.sleep(0.1)
    raise AssertionError(f"no process took the lock of {folder} within {seconds} s")


def _hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """A second process that holds folder's write lock for `seconds` (then exits)."""
    code = (f"import time; from adnlib.run.lock import folder_lock\n"
            f"with folder_lock({str(folder)!r}, command='test holder'):\n    time.sleep({seconds})\n")
    process = subprocess.Popen([sys.executable, "-c", code], env=_env())
    _wait_for_holder(folder)
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


# --- 1. one writer per results folder ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_train_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tiny_root, tmp_path,
                                                                                         adnlib_cli):
    # catches: no lock (both trainings write one folder), a message without pid/host/time, and a lock that outlives
    # a kill -9 of its holder (the next train would be refused forever)
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "adnlib", "train", "--data", str(tiny_root), "--category", "disc",
                              *SMOKE, "--epochs", "500", "--out", str(out)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _wait_for_holder(out)
        assert pid == first.pid
        rc, _, err = adnlib_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--overwrite",
                                "--out", out)
        assert_error_line(rc, err, f"error: {out} is being written by pid {first.pid} on host "
                                   f"{socket.gethostname()} since ", "(use --wait to wait)")
        assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", err[0]), err[0]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        _stop(first)
    rc, out_text, err = adnlib_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--overwrite",
                                   "--out", out)
    assert rc == 0, err
    assert json.loads(out_text.splitlines()[0])["epochs"] == 1


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_wait_waits_for_the_holder_and_gives_up_after_its_bound(tmp_path):
    # catches --wait that does not wait (refuses at once) or waits past its bound
    holder = _hold_lock(tmp_path / "out", seconds=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(FolderLockedError, match=r"is being written by pid \d+ .* \(waited 0.3 s\)"):
            with folder_lock(tmp_path / "out", wait=0.3):
                pass
        assert time.monotonic() - started < 1.5
        with folder_lock(tmp_path / "out", wait=60):
            waited = time.monotonic() - started
        assert waited > 1.0  # the holder keeps it for 2 s: we got it after it let go, not beside it
    finally:
        _stop(holder)


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_a_grid_refuses_a_cell_that_another_process_is_writing(tiny_grid_root, tmp_path, adnlib_cli):
    # catches a grid that trains into (or plans from) a cell another grid is writing: the overwritten checkpoint
    # of the issue
    cell = tmp_path / "grid" / "disc" / "differnet" / "seed0"
    holder = _hold_lock(cell, seconds=120)
    try:
        rc, _, err = adnlib_cli("grid", "--data", tiny_grid_root, "--categories", "disc", "--variants", "differnet",
                                *SMOKE, "--out", tmp_path / "grid")
    finally:
        _stop(holder)
    assert_error_line(rc, err, f"error: {cell} is being written by pid {holder.pid} on host", "--wait")
    assert not (cell / "checkpoint.pt").exists()


def test_the_cli_takes_wait_seconds():
    # catches a --wait that is not an option of the writing commands, or takes nonsense
    from adnlib.cli import build_parser
    from adnlib.run.lock import DEFAULT_WAIT_S
    parser = build_parser()
    for command in (["train", "--data", "d", "--category", "c"], ["grid", "--data", "d"], ["notebooks"],
                    ["localize", "--checkpoint", "c", "--data", "d", "--category", "c"]):
        assert parser.parse_args([*command, "--out", "o", "--wait", "5"]).wait == 5
        assert parser.parse_args([*command, "--out", "o", "--wait"]).wait == DEFAULT_WAIT_S
        assert parser.parse_args([*command, "--out", "o"]).wait == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["notebooks", "--out", "o", "--wait", "-1"])


# --- 2. a result knows its weights ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory):
    """A finished 2-epoch smoke run (train's own folder layout)."""
    from adnlib.config import preset
    from adnlib.run.train import train
    out = tmp_path_factory.mktemp("finished") / "run"
    train(preset("smoke", epochs=2, device="cpu"), tiny_root, "disc", out, progress=False)
    return out


def test_metrics_record_the_checkpoint_they_came_from(finished_run):
    # catches a record of the wrong file, of the file before its last save, or without epoch and step
    metrics = json.loads((finished_run / "metrics.json").read_text())
    record = metrics["weights"]["checkpoint.pt"]
    assert record["sha256"] == file_sha256(finished_run / "checkpoint.pt")
    assert record["epoch"] == 2
    assert record["step"] == 2  # 8 images, batches of 8: one step per epoch
    assert metrics["weights"]["best.pt"]["sha256"] == file_sha256(finished_run / "best.pt")


def test_resume_never_lowers_the_epochs(finished_run, tiny_root, tmp_path, adnlib_cli):
    # catches the relabelled run of the issue: metrics.json rewritten as 1 epoch over epoch-2 weights and history
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = (out / "metrics.json").read_bytes()
    rc, _, err = adnlib_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--resume", "--epochs", "1",
                            "--out", out)
    assert_error_line(rc, err, f"cannot resume {out} to 1 epochs: its checkpoint.pt is at epoch 2",
                      "never lowers the epochs", "best.pt and history.csv")
    assert (out / "metrics.json").read_bytes() == before


def test_evaluate_refuses_a_checkpoint_that_is_not_the_one_its_metrics_describe(finished_run, tmp_path, tiny_root,
                                                                                adnlib_cli):
    # catches an evaluation that silently scores another run's weights dropped into this run's folder
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    args = ("evaluate", "--checkpoint", out / "checkpoint.pt", "--data", tiny_root, "--category", "disc",
            "--device", "cpu", "--no-progress")
    rc, _, err = adnlib_cli(*args)
    assert rc == 0, err  # the intact run is evaluated
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes() + b"\0")  # another file now
    rc, _, err = adnlib_cli(*args)
    assert_error_line(rc, err, f"{out / 'checkpoint.pt'} is not the checkpoint the metrics.json beside it describes",
                      "epoch 2")


@pytest.fixture(scope="module")
def finished_grid(tiny_grid_root, tmp_path_factory):
    """A finished one-cell grid (disc, differnet, seed 0, 2 epochs)."""
    from adnlib.config import preset
    from adnlib.run.grid import run_grid
    out = tmp_path_factory.mktemp("grid") / "grid"
    run_grid(preset("smoke", epochs=2, device="cpu"), tiny_grid_root, ["disc"], ["differnet"], out, progress=False)
    return out


def _grid(adnlib_cli, data, out, *extra):
    return adnlib_cli("grid", "--data", data, "--categories", "disc", "--variants", "differnet", *SMOKE,
                      "--epochs", "2", "--out", out, *extra)


def test_grid_reuses_an_intact_cell(finished_grid, tiny_grid_root, tmp_path, adnlib_cli):
    # catches a verification that refuses every cell (a record that never matches its file)
    out = Path(shutil.copytree(finished_grid, tmp_path / "grid"))
    rc, _, err = _grid(adnlib_cli, tiny_grid_root, out)
    assert rc == 0, err
    assert any("(reused" in line for line in err), err


def test_grid_refuses_to_reuse_a_cell_whose_checkpoint_was_deleted_or_replaced(finished_grid, tiny_grid_root,
                                                                               tmp_path, adnlib_cli):
    # catches the silent reuse of the issue: a cell without its checkpoint (or with another run's) printed as reused
    for case in ("deleted", "replaced"):
        out = Path(shutil.copytree(finished_grid, tmp_path / case))
        checkpoint = out / "disc" / "differnet" / "seed0" / "checkpoint.pt"
        if case == "deleted":
            checkpoint.unlink()
            expected = f"{checkpoint} is missing"
        else:
            checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
            expected = f"{checkpoint} is not the checkpoint the metrics.json beside it describes"
        rc, _, err = _grid(adnlib_cli, tiny_grid_root, out)
        assert_error_line(rc, err, "finished grid cell(s) that cannot be reused", expected, "--rerun")


@pytest.mark.slow
def test_grid_rerun_retrains_a_cell_whose_checkpoint_was_deleted(finished_grid, tiny_grid_root, tmp_path,
                                                                 adnlib_cli):
    # catches --rerun that still refuses (or reuses) the cell
    out = Path(shutil.copytree(finished_grid, tmp_path / "grid"))
    cell = out / "disc" / "differnet" / "seed0"
    (cell / "checkpoint.pt").unlink()
    rc, _, err = _grid(adnlib_cli, tiny_grid_root, out, "--rerun")
    assert rc == 0, err
    assert json.loads((cell / "metrics.json").read_text())["weights"]["checkpoint.pt"]["sha256"] == \
        file_sha256(cell / "checkpoint.pt")


def test_grid_never_labels_a_longer_checkpoint_with_fewer_epochs(finished_grid, tiny_grid_root, tmp_path,
                                                                 adnlib_cli):
    # catches the grid --epochs 3 over a 10-epoch checkpoint "resumed" and labelled 3 epochs
    out = Path(shutil.copytree(finished_grid, tmp_path / "grid"))
    cell = out / "disc" / "differnet" / "seed0"
    (cell / "metrics.json").unlink()  # an interrupted cell: checkpoint.pt (epoch 2) only
    rc, _, err = adnlib_cli("grid", "--data", tiny_grid_root, "--categories", "disc", "--variants", "differnet",
                            *SMOKE, "--epochs", "1", "--out", out)
    assert_error_line(rc, err, "saved with another config", "epochs: 'checkpoint at epoch 2' there, 1 requested",
                      "--rerun")
    assert not (cell / "metrics.json").exists()


# --- 3. output folders checked up front -------------------------------------------------------------------------
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="mounting a read-only bind mount or a tmpfs needs root")


def _unmount(folder: Path) -> None:
    """Unmount `folder`; lazily where something still maps a file there (a memory-mapped checkpoint that the
    garbage collector has not freed yet)."""
    gc.collect()
    if subprocess.run(["umount", str(folder)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], timeout=30, check=True)


def _mount(*args) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(args)}): {result.stderr.strip()}")


@contextlib.contextmanager
def read_only_folder(tmp_path):
    source, folder = tmp_path / "ro_source", tmp_path / "ro"
    source.mkdir()
    folder.mkdir()
    _mount("--bind", str(source), str(folder))
    try:
        _mount("-o", "remount,ro,bind", str(folder))
        yield folder
    finally:
        _unmount(folder)


@contextlib.contextmanager
def small_disk(tmp_path, size: str):
    folder = tmp_path / f"tmpfs_{size}"
    folder.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        _unmount(folder)


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
@needs_root
def test_every_writing_command_refuses_a_read_only_folder_up_front(tiny_root, tiny_grid_root, tmp_path, adnlib_cli):
    # catches a traceback (OSError Errno 30) or a check that only comes after the first epoch
    from adnlib.config import preset
    from adnlib.model.network import AttentDifferNet
    from adnlib.run.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "any.pt", model=AttentDifferNet(preset("smoke")), kind="last",
                    extra={"epoch": 0, "category": "disc"})
    with read_only_folder(tmp_path) as ro:
        commands = {
            "train": ("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--out", ro / "run"),
            "grid": ("grid", "--data", tiny_grid_root, "--variants", "differnet", *SMOKE, "--out", ro / "grid"),
            "evaluate": ("evaluate", "--checkpoint", tmp_path / "any.pt", "--unverified", "--data", tiny_root,
                         "--category", "disc", "--out", ro / "eval"),
            "localize": ("localize", "--checkpoint", tmp_path / "any.pt", "--unverified", "--data", tiny_root,
                         "--category", "disc", "--out", ro / "loc"),
            "notebooks": ("notebooks", "--only", "00_quickstart", "--out", ro / "nb"),
            "demo-data": ("demo-data", "--out", ro / "demo"),
        }
        for name, args in commands.items():
            started = time.monotonic()
            rc, _, err = adnlib_cli(*args)
            assert_error_line(rc, err, "cannot be written (Read-only file system)")
            assert time.monotonic() - started < 20, name  # before any training or scoring


def test_bad_input_creates_no_output_folder(tiny_root, tmp_path, adnlib_cli):
    # catches an --out created (by the up-front write check) for a command that then fails on its input
    for args in (("train", "--data", tmp_path / "nowhere", "--category", "disc", *SMOKE),
                 ("localize", "--checkpoint", tmp_path / "none.pt", "--data", tiny_root, "--category", "disc"),
                 ("evaluate", "--checkpoint", tmp_path / "none.pt", "--data", tiny_root, "--category", "disc")):
        rc, _, err = adnlib_cli(*args, "--out", tmp_path / "out")
        assert_error_line(rc, err)
        assert not (tmp_path / "out").exists(), args[0]


@needs_root
def test_train_refuses_a_disk_without_room_for_its_checkpoints_before_reading_data(tiny_root, tmp_path, adnlib_cli):
    # catches the RuntimeError from PyTorch's zip writer after the first epoch
    with small_disk(tmp_path, "2m") as disk:
        rc, _, err = adnlib_cli("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--out", disk / "run")
        assert_error_line(rc, err, f"--out {disk / 'run'} has ", "MB free, but this run needs", "checkpoint.pt")
        assert not (disk / "run" / "checkpoint.pt").exists()


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
    return filler


@needs_root
@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_is_one_line_and_the_run_resumes_exactly(tiny_root, tmp_path, adnlib_cli,
                                                                              monkeypatch):
    # catches a traceback (ENOSPC, or PyTorch's RuntimeError) when the disk fills after the up-front check, and a
    # failed write that damages the last checkpoint (the resume would not reach the uninterrupted run's numbers)
    import adnlib.run.train as train_module
    args = ("train", "--data", tiny_root, "--category", "disc", *SMOKE, "--epochs", "3")
    rc, _, err = adnlib_cli(*args, "--out", tmp_path / "reference")
    assert rc == 0, err
    save_last, fillers = train_module._save_last, []

    def save_then_fill(run, epoch, keep_optimizer):
        save_last(run, epoch, keep_optimizer)
        if epoch == 1:
            fillers.append(_fill(run.out_dir))

    with small_disk(tmp_path, "96m") as disk:
        out = disk / "run"
        monkeypatch.setattr(train_module, "_save_last", save_then_fill)
        rc, _, err = adnlib_cli(*args, "--out", out)
        assert_error_line(rc, err, f"cannot write {out}", "No space left on device", "--resume")
        assert not list(out.glob(".*.tmp"))  # no half-written side file left on the full disk
        monkeypatch.setattr(train_module, "_save_last", save_last)
        fillers[0].unlink()
        rc, _, err = adnlib_cli(*args, "--resume", "--out", out)
        assert rc == 0, err
        assert (out / "scores.csv").read_text().replace(str(out), "X") == \
            (tmp_path / "reference" / "scores.csv").read_text().replace(str(tmp_path / "reference"), "X")
        history, reference = (pd.read_csv(folder / "history.csv").drop(columns="seconds")
                              for folder in (out, tmp_path / "reference"))
        pd.testing.assert_frame_equal(history, reference)


def test_write_errors_name_the_file(tmp_path):
    # catches an OSError of a full disk passed on as a traceback, and other errors disguised as a full disk
    from adnlib.errors import OutputWriteError
    from adnlib.run.checkpoint import atomic_write

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    def torch_full(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1340800 vs 1340688")

    def bug(tmp):
        raise ValueError("a bug")

    with pytest.raises(OutputWriteError, match=r"cannot write .*x.json: No space left on device"):
        atomic_write(tmp_path / "x.json", full)
    with pytest.raises(OutputWriteError, match=r"cannot write .*x.pt: an I/O error \(PyTorch's checkpoint writer "
                                               r"failed; .* MB free there\)"):
        atomic_write(tmp_path / "x.pt", torch_full)
    with pytest.raises(ValueError, match="a bug"):
        atomic_write(tmp_path / "x.json", bug)
    assert list(tmp_path.iterdir()) == []  # no side file left behind


# --- 4. localisation --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mask_run(tiny_mask_root, tmp_path_factory):
    from adnlib.config import preset
    from adnlib.run.train import train
    out = tmp_path_factory.mktemp("mask_run") / "run"
    train(preset("smoke", device="cpu"), tiny_mask_root, "disc", out, progress=False)
    return out / "checkpoint.pt"


def _localize(adnlib_cli, checkpoint, data, out, *methods):
    return adnlib_cli("localize", "--checkpoint", checkpoint, "--data", data, "--category", "disc", "--method",
                      *methods, "--overlays", "2", "--n-boot", "20", "--device", "cpu", "--out", out)


@pytest.mark.slow
def test_localize_into_a_used_folder_leaves_no_stale_overlays(mask_run, tiny_mask_root, tmp_path, adnlib_cli):
    # catches the overlays/gradcam of an earlier localization left beside a new localization.json
    out = tmp_path / "loc"
    rc, _, err = _localize(adnlib_cli, mask_run, tiny_mask_root, out, "gradcam")
    assert rc == 0, err
    rc, _, err = _localize(adnlib_cli, mask_run, tiny_mask_root, out, "nll-gradient")
    assert_error_line(rc, err, "holds a localization", "--overwrite")  # never replaced without asking
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["gradcam"]
    rc, _, err = _localize(adnlib_cli, mask_run, tiny_mask_root, out, "nll-gradient", "--overwrite")
    assert rc == 0, err
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["nll-gradient"]
    assert list(json.loads((out / "localization.json").read_text())["methods"]) == ["nll-gradient"]
    assert len(list((out / "overlays" / "nll-gradient").glob("crack_*.png"))) == 2
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "localization.json", "overlays"]


@pytest.mark.slow
def test_localize_is_a_library_call_with_the_cli_numbers(mask_run, tiny_mask_root, tmp_path, adnlib_cli):
    # catches a CLI and a library function that drift apart (the CLI must be the thin wrapper of the function)
    from adnlib.explain.localize import localize
    from adnlib.run.checkpoint import model_from_checkpoint
    found = localize(model_from_checkpoint(mask_run), tiny_mask_root, "disc", ["nll-gradient"], n_boot=0)
    rc, out_text, err = _localize(adnlib_cli, mask_run, tiny_mask_root, tmp_path / "loc", "nll-gradient")
    assert rc == 0, err
    assert json.loads(out_text)["nll-gradient"]["pro"] == found.metrics["methods"]["nll-gradient"]["pro"]
    assert found.maps["nll-gradient"].shape == (6, 128, 128)
    assert found.maps["nll-gradient"].min() == 0.0  # normalised per image, as every method
    assert found.maps["nll-gradient"].reshape(6, -1).max(1).tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="'differnet' is now called 'nll-gradient'"):
        localize(model_from_checkpoint(mask_run), tiny_mask_root, "disc", ["differnet"], n_boot=0)
    assert int(found.masks.sum()) > 0


def test_localize_with_empty_masks_is_one_error_line(tiny_mask_root, tmp_path, adnlib_cli):
    # catches the ValueError traceback
    from PIL import Image
    data = Path(shutil.copytree(tiny_mask_root, tmp_path / "data"))
    for mask in (data / "disc" / "ground_truth" / "crack").iterdir():
        Image.new("L", Image.open(mask).size).save(mask)
    from adnlib.config import preset
    from adnlib.model.network import AttentDifferNet
    from adnlib.run.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "c.pt", model=AttentDifferNet(preset("smoke")), kind="last",
                    extra={"epoch": 0, "category": "disc"})
    rc, _, err = _localize(adnlib_cli, tmp_path / "c.pt", data, tmp_path / "loc", "nll-gradient", "--unverified")
    assert_error_line(rc, err, "ground-truth masks of disc", "mark no defect pixel")
    assert not (tmp_path / "loc" / "localization.json").exists()


# --- 5. notebook summaries: only this run's files ---------------------------------------------------------------
def test_a_summary_reads_only_the_files_of_its_run(tmp_path):
    # catches stale files of an earlier run (another variant's metrics, an unrequested grid cell) in the summary,
    # and a reused grid cell (touched only through its lock) left out of it
    from adnlib.teach.notebooks import _file_clock_ns, _files_of_this_run
    folder = tmp_path / "02"
    for rel in ("metrics_cbam.json", "runs/disc/cbam/seed0/metrics.json", "runs/disc/se/seed0/metrics.json",
                f"runs/disc/se/seed0/{LOCK_NAME}"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("{}")
        os.utime(folder / rel, (1_000_000_000, 1_000_000_000))  # 2001: an earlier run's files
    since = _file_clock_ns(tmp_path)
    (folder / "metrics_se.json").write_text("{}")
    (folder / "runs/disc/se/seed0" / LOCK_NAME).write_text("{}")  # the grid took the reused cell's lock
    found = sorted(p.relative_to(folder).as_posix() for p in _files_of_this_run(folder, since))
    assert found == ["metrics_se.json", "runs/disc/se/seed0/metrics.json"]


@pytest.mark.slow
def test_a_reused_notebooks_folder_does_not_pull_old_files_into_the_summary(tmp_path):
    # catches the 13 stale metrics: the second run's summary listing what the first run wrote
    import nbformat

    from adnlib.teach.notebooks import run_notebook
    source = tmp_path / "fake.ipynb"
    parameters = nbformat.v4.new_code_cell("name = 'a'\noutput_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(textwrap.dedent("""\
        import json, pathlib
        folder = pathlib.Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps({"value": ord(name)}))"""))
    notebook = nbformat.v4.new_notebook(cells=[parameters, body])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, source)
    for name in ("a", "b"):
        run_notebook("fake", tmp_path / "out", {"name": name}, source=source)
    summary = json.loads((tmp_path / "out" / "fake.summary.json").read_text())
    assert sorted(summary["metrics"]) == ["b.json:value"]
    assert not list((tmp_path / "out").glob(".*summary-view*"))
