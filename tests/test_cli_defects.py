"""Command line and API defects of issue 9 (parts of 3 and 4): each test failed before its fix.

CLI tests run `adnlib.cli.main` in-process (fast); only the import check needs a fresh interpreter.
"""
import contextlib
import json
import subprocess
import sys
import warnings

import pytest
import torch

from adnlib import cli
from adnlib.config import Config, preset
from adnlib.errors import ConfigError


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --- 1. warnings ----------------------------------------------------------------------------------------------------
@pytest.fixture
def warning_demo(monkeypatch):
    """`adnlib demo-data` whose dataset maker only warns (no files written)."""
    import adnlib.data.demo

    def make(root, force=False):
        warnings.warn("a demo warning\nover two lines", UserWarning, stacklevel=1)
        return root

    monkeypatch.setattr(adnlib.data.demo, "make_demo_dataset", make)


def test_cli_restores_the_warning_machinery(tmp_path, monkeypatch, warning_demo):
    # restore whatever main() might leave behind, so that a failure here does not leak into other tests
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    before = (warnings.formatwarning, warnings.showwarning, list(warnings.filters))
    with pytest.warns(UserWarning, match="a demo warning"):  # an embedding program still gets the warnings
        assert cli.main(["demo-data", "--out", str(tmp_path / "d")]) == 0
    assert warnings.formatwarning is before[0]
    assert warnings.showwarning is before[1]
    assert warnings.filters == before[2]
    assert cli.main(["demo-data", "--out", str(tmp_path / "d"), "--bogus"]) == 2  # a parse error too
    assert (warnings.formatwarning, warnings.showwarning) == before[:2]


@pytest.mark.slow
def test_cli_prints_warnings_in_one_line(tmp_path):
    code = ("import warnings, sys, adnlib.cli, adnlib.data.demo\n"
            "def make(root, force=False):\n"
            "    warnings.warn('a demo warning\\nover two lines', UserWarning)\n"
            "    return root\n"
            "adnlib.data.demo.make_demo_dataset = make\n"
            "rc = adnlib.cli.main(['demo-data', '--out', sys.argv[1]])\n"
            "warnings.warn('after main', UserWarning)\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "warning: a demo warning over two lines"
    assert "UserWarning: after main" in proc.stderr  # the default format is back once main() returns


# --- 2. a light parser ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_parser_and_help_do_not_import_torch():
    code = ("import sys, adnlib.cli; adnlib.cli.build_parser(); "
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_package_attributes_stay_available_lazily():
    import adnlib
    from adnlib.model.attention import CBAM, SEBlock
    assert adnlib.CBAM is CBAM
    assert adnlib.SEBlock is SEBlock
    assert adnlib.Config is Config
    with pytest.raises(AttributeError):
        adnlib.no_such_thing  # noqa: B018


# --- 3. grid: reuse only matching cells, tabulate only the requested ones --------------------------------------------
def grid_args(demo_root, out, *extra):
    return ["grid", "--data", str(demo_root), "--categories", "disc", "--variants", "differnet", "--preset", "smoke",
            "--no-progress", "--out", str(out), *extra]


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_grid_reuses_only_cells_of_the_same_config(demo_root, tmp_path, capsys):
    out = tmp_path / "grid"
    for category, variant in (("stray", "differnet"), ("disc", "se")):  # not asked for: not in the table
        stray = out / category / variant / "seed0" / "metrics.json"
        stray.parent.mkdir(parents=True)
        stray.write_text(json.dumps({"category": category, "variant": variant, "auroc": 0.5, "auroc_best": 0.5,
                                     "backbone_weights": "random", "epochs": 1}))
    assert cli.main(grid_args(demo_root, out, "--epochs", "1")) == 0
    table = capsys.readouterr().out
    assert "disc" in table, table
    assert "stray" not in table, table
    assert "se" not in table.splitlines()[1].split(), table
    metrics = out / "disc" / "differnet" / "seed0" / "metrics.json"
    first = json.loads(metrics.read_text())
    assert first["epochs"] == 1

    # other epochs: refused in one line naming the cell and the field; nothing is retrained
    assert cli.main(grid_args(demo_root, out, "--epochs", "2")) == 2
    line = one_error_line(capsys)
    assert str(out / "disc" / "differnet" / "seed0") in line
    assert "epochs: 1 there, 2 requested" in line
    assert "--rerun" in line
    assert json.loads(metrics.read_text()) == first

    # --rerun retrains that cell with the requested config
    assert cli.main(grid_args(demo_root, out, "--epochs", "2", "--rerun")) == 0
    second = json.loads(metrics.read_text())
    assert second["epochs"] == 2
    assert second["config"]["epochs"] == 2
    capsys.readouterr()

    # the same request again: reused as it is
    assert cli.main(grid_args(demo_root, out, "--epochs", "2")) == 0
    assert json.loads(metrics.read_text()) == second
    capsys.readouterr()

    # an interrupted cell (checkpoint.pt, no metrics.json) of another config is refused before anything runs
    metrics.unlink()
    assert cli.main(grid_args(demo_root, out, "--epochs", "2", "--weights", "auto")) == 2
    line = one_error_line(capsys)
    assert str(out / "disc" / "differnet" / "seed0") in line
    assert "weights: 'none' there, 'auto' requested" in line


def test_collect_grid_keeps_only_the_requested_cells(tmp_path):
    from adnlib.run.grid import collect_grid
    for category, variant, seed in (("a", "se", 0), ("a", "cbam", 0), ("b", "se", 0), ("a", "se", 1)):
        path = tmp_path / category / variant / f"seed{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"category": category, "variant": variant, "seed": seed, "auroc": 0.9}))
    assert len(collect_grid(tmp_path)) == 4  # no filter: everything found (as before)
    rows = collect_grid(tmp_path, ["a"], ["se", "differnet"])
    assert list(zip(rows["category"], rows["variant"], rows["seed"])) == [("a", "se", 0), ("a", "se", 1)]
    rows = collect_grid(tmp_path, ["a"], ["se"], seeds=[1])
    assert list(zip(rows["category"], rows["variant"], rows["seed"])) == [("a", "se", 1)]


# --- 4. bad input: one error line and exit status 2 -----------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--seed", "-1"], "argument --seed: must be from 0 to 4294967295"),
    (["--seed", "4294967296"], "argument --seed: must be from 0 to 4294967295"),
    (["--seed", "x"], "argument --seed: expected an integer"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
])
def test_cli_train_bad_seed_or_device(demo_root, tmp_path, capsys, extra, message):
    args = ["train", "--data", str(demo_root), "--category", "disc", "--preset", "smoke", "--no-progress",
            "--out", str(tmp_path / "o"), *extra]
    assert cli.main(args) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_seed_range_is_checked_by_the_config():
    assert preset("smoke", seed=2 ** 32 - 1).seed == 2 ** 32 - 1
    for bad in (-1, 2 ** 32, 1.5, True):
        with pytest.raises(ConfigError, match="seed must be an integer from 0 to 4294967295"):
            preset("smoke", seed=bad)


@pytest.fixture
def smoke_checkpoint(tmp_path):
    from adnlib.model.network import AttentDifferNet
    from adnlib.run.checkpoint import save_checkpoint
    return save_checkpoint(tmp_path / "model.pt", model=AttentDifferNet(preset("smoke")), kind="last")


def test_cli_device_index_beyond_the_gpus_is_one_error_line(demo_root, tmp_path, smoke_checkpoint, capsys,
                                                            monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for args in (["train", "--data", str(demo_root), "--category", "disc", "--preset", "smoke", "--out",
                  str(tmp_path / "o"), "--device", "cuda:7"],
                 ["evaluate", "--checkpoint", str(smoke_checkpoint), "--data", str(demo_root), "--category", "disc",
                  "--device", "cuda:7"],
                 ["score", "--checkpoint", str(smoke_checkpoint), str(demo_root / "disc" / "test" / "good" / "000.png"),
                  "--device", "cuda:7"]):
        assert cli.main(args) == 2, args
        assert "device 'cuda:7' requested but only 1 CUDA GPU" in one_error_line(capsys)


def test_cli_evaluate_out_naming_a_file(demo_root, tmp_path, smoke_checkpoint, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    args = ["evaluate", "--checkpoint", str(smoke_checkpoint), "--data", str(demo_root), "--category", "disc",
            "--device", "cpu", "--no-progress", "--out", str(target)]
    assert cli.main(args) == 2
    assert f"--out {target} is a file" in one_error_line(capsys)
    assert target.read_text() == "keep me"


# --- 5. no silent fallbacks -----------------------------------------------------------------------------------------
@pytest.fixture
def run_all_calls(monkeypatch):
    import adnlib.teach.notebooks
    calls = []
    monkeypatch.setattr(adnlib.teach.notebooks, "run_all",
                        lambda out, params, names, **kwargs: calls.append(params) or [])
    return calls


def test_notebook_parameters_are_json_or_marked_strings(tmp_path, capsys, run_all_calls):
    # names of notebook 03's parameters cell (an unknown name is refused: tests/test_faults_inputs.py)
    args = ["notebooks", "--out", str(tmp_path / "nb"), "--only", "03_training_attentdiffernet", "-p", "epochs", "3",
            "-p", "variants", '["se"]', "-p", "category:str", "bottle", "-p", "device:str", "3",
            "-p", "eval_every", "null"]
    assert cli.main(args) == 0
    assert run_all_calls == [{"epochs": 3, "variants": ["se"], "category": "bottle", "device": "3",
                              "eval_every": None}]


@pytest.mark.parametrize("pair,message", [
    (["category", "bottle"], "-p category: 'bottle' is not JSON; for a string write -p category:str bottle"),
    (["epochs:int", "3"], "-p epochs:int: unknown type 'int'"),
])
def test_bad_notebook_parameters_are_errors(tmp_path, capsys, run_all_calls, pair, message):
    assert cli.main(["notebooks", "--out", str(tmp_path / "nb"), "-p", *pair]) == 2
    assert message in one_error_line(capsys)
    assert run_all_calls == []


def test_config_from_dict_warns_about_unknown_fields():
    c = preset("smoke")
    with pytest.warns(UserWarning, match="future_field, other_field"):
        assert Config.from_dict({**c.to_dict(), "other_field": 2, "future_field": 1}) == c
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Config.from_dict(c.to_dict()) == c


# --- 6. with_initial_attention shares the flow and the frozen convolutions ------------------------------------------
@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_initial_attention_shares_flow_and_backbone_and_leaves_the_model_alone():
    from adnlib.explain.attention_viz import with_initial_attention
    from adnlib.model.network import AttentDifferNet
    model = AttentDifferNet(preset("smoke", variant="cbam")).eval()
    with torch.no_grad():  # pretend training moved the gates
        for p in model.backbone.attention.parameters():
            p.add_(0.1)
    attention_before = {k: v.clone() for k, v in model.backbone.attention.state_dict().items()}
    parts_before = (model.backbone, model.backbone.attention, model.embedding, model.flow)
    x = model.prepare(torch.rand(2, 3, 128, 128))
    embedding_before = model.embed(x)

    initial = with_initial_attention(model)

    assert initial.flow is model.flow
    for (name, a), b in zip(initial.flow.named_parameters(), model.flow.parameters()):
        assert a is b, name
    for a, b in zip(initial.backbone.features.parameters(), model.backbone.features.parameters()):
        assert a is b
    fresh = AttentDifferNet(model.config).backbone.attention.state_dict()
    for name, value in initial.backbone.attention.state_dict().items():
        torch.testing.assert_close(value, fresh[name], msg=name)
    originals = {p.data_ptr() for p in model.backbone.attention.parameters()}
    assert not originals & {p.data_ptr() for p in initial.backbone.attention.parameters()}
    assert initial.embedding.backbone is initial.backbone  # the embedding runs the initial blocks
    assert not torch.equal(initial.embed(x), embedding_before)
    # the model itself: same parts, same trained attention, same embedding
    assert all(a is b for a, b in zip((model.backbone, model.backbone.attention, model.embedding, model.flow),
                                      parts_before))
    assert model.embedding.backbone is model.backbone
    for name, value in model.backbone.attention.state_dict().items():
        assert torch.equal(value, attention_before[name]), name
    assert torch.equal(model.embed(x), embedding_before)


@pytest.mark.slow(seconds=10)  # trains two tiny cells
@contextlib.contextmanager
def _held_elsewhere(folder):
    """folder's write lock held by another thread (as another writer would hold it) for the `with` block."""
    import threading

    from adnlib.run.lock import folder_lock
    taken, release = threading.Event(), threading.Event()

    def hold():
        with folder_lock(folder):
            taken.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(30)
    try:
        yield
    finally:
        release.set()
        holder.join(30)


def _edit_one_pixel(image) -> None:
    """The image with its first pixel changed (still a valid image of the same size)."""
    from PIL import Image
    picture = Image.open(image).convert("RGB")
    r, g, b = picture.getpixel((0, 0))
    picture.putpixel((0, 0), ((r + 128) % 256, g, b))
    picture.save(image)


def test_adopt_cells_takes_only_verified_cells_of_the_same_config(tiny_grid_root, tmp_path):
    # catches notebook 06 retraining what notebook 02 trained (nothing adopted), and adopting a cell of another
    # config or with a replaced checkpoint (a mixed or unverifiable result reported as reused)
    import shutil

    from adnlib.config import preset
    from adnlib.run.grid import adopt_cells, run_grid
    base = preset("smoke", weights="none", device="cpu")
    source = tmp_path / "02" / "runs"
    run_grid(base, tiny_grid_root, ["disc"], ["differnet", "se"], source, progress=False)
    other = base.replace(epochs=2)
    assert adopt_cells(source, tmp_path / "other", other, tiny_grid_root, ["disc"], ["differnet", "se"]) == []
    assert not (tmp_path / "other").exists()
    elsewhere = tmp_path / "elsewhere"  # one test image edited: cells of other data are not taken
    shutil.copytree(tiny_grid_root, elsewhere)
    _edit_one_pixel(next((elsewhere / "disc" / "test" / "good").iterdir()))
    with pytest.warns(UserWarning, match=r"data \(test images\)"):  # not taken, and says why
        assert adopt_cells(source, tmp_path / "other", base, elsewhere, ["disc"], ["differnet", "se"]) == []
    target = tmp_path / "06" / "grid"
    adopted = adopt_cells(source, target, base, tiny_grid_root, ["disc"], ["differnet", "se", "cbam"])
    assert adopted == ["disc/differnet/seed0", "disc/se/seed0"]  # cbam was never trained in the source
    rows = run_grid(base, tiny_grid_root, ["disc"], ["differnet", "se"], target, progress=False)
    assert [row["status"] for row in rows.attrs["cells"]] == ["reused", "reused"]
    for variant in ("differnet", "se"):
        cell = f"disc/{variant}/seed0"
        assert (target / cell / "scores.csv").read_bytes() == (source / cell / "scores.csv").read_bytes()
    with open(source / "disc" / "se" / "seed0" / "checkpoint.pt", "ab") as f:
        f.write(b"changed")
    third = adopt_cells(source, tmp_path / "third", base, tiny_grid_root, ["disc"], ["differnet", "se"])
    assert third == ["disc/differnet/seed0"]
    # a cell another process is writing is skipped, on either side; a target left with only its lock file (an
    # interrupted grid's planning) is filled
    fourth = tmp_path / "fourth"
    with _held_elsewhere(source / "disc" / "differnet" / "seed0"):
        assert adopt_cells(source, fourth, base, tiny_grid_root, ["disc"], ["differnet"]) == []
    with _held_elsewhere(fourth / "disc" / "differnet" / "seed0"):
        assert adopt_cells(source, fourth, base, tiny_grid_root, ["disc"], ["differnet"]) == []
    assert adopt_cells(source, fourth, base, tiny_grid_root, ["disc"], ["differnet"]) == ["disc/differnet/seed0"]
    assert not list(fourth.glob("disc/differnet/.*adopting"))


@pytest.mark.slow(seconds=6)  # trains one tiny run
def test_adopt_run_takes_an_earlier_notebooks_run_only_for_its_own_data_and_config(tiny_grid_root, tmp_path):
    # catches notebook 02 retraining what notebooks 00 and 01 trained, and adopting a run of another category, data
    # root or config as a cell it is not (a run folder, unlike a grid cell's path, does not name its category)
    import shutil

    from adnlib.config import preset
    from adnlib.run.grid import adopt_run, run_grid
    from adnlib.run.train import train
    base = preset("smoke", weights="none", device="cpu")
    run = tmp_path / "00" / "run"
    train(base.replace(variant="se"), tiny_grid_root, "disc", run, progress=False)
    grid = tmp_path / "02" / "runs"
    assert not adopt_run(run, grid, base, tiny_grid_root, "weave", "se")  # another category
    other_root = tmp_path / "copy"
    shutil.copytree(tiny_grid_root, other_root)
    _edit_one_pixel(next((other_root / "disc" / "train" / "good").iterdir()))
    assert not adopt_run(run, grid, base, other_root, "disc", "se")  # one training image differs: other data
    moved = tmp_path / "moved"  # the same images under another root are the same data: taken (a copy of its own)
    shutil.copytree(tiny_grid_root, moved)
    assert adopt_run(run, tmp_path / "02-moved", base, moved, "disc", "se")
    assert not adopt_run(run, grid, base.replace(epochs=2), tiny_grid_root, "disc", "se")  # another config
    assert not adopt_run(run, grid, base, tiny_grid_root, "disc", "differnet")  # another variant
    assert not grid.exists() or not any(grid.rglob("metrics.json"))
    assert adopt_run(run, grid, base, tiny_grid_root, "disc", "se")
    rows = run_grid(base, tiny_grid_root, ["disc"], ["se"], grid, progress=False)
    assert [row["status"] for row in rows.attrs["cells"]] == ["reused"]
    assert (grid / "disc" / "se" / "seed0" / "scores.csv").read_bytes() == (run / "scores.csv").read_bytes()
    assert not adopt_run(run, grid, base, tiny_grid_root, "disc", "se")  # the cell is taken: never overwritten
