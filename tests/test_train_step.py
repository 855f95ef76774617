"""Issue 9: one public training step, explicit state (generators, attention statistics, compile), the result files
of a finished run, and the defects of train/checkpoint/evaluate/model. Smoke preset on a 14-image copy of the demo
data, offline, CPU."""
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from attention_reference import direct_attention
from conftest import load_benchmark
from torch import nn

import adnlib.model.network as model_mod
import adnlib.run.train as train_mod
from adnlib import cli
from adnlib.config import preset
from adnlib.data.datasets import AnomalyDataset
from adnlib.errors import AdnlibError, CheckpointError, ConfigError, OutputExistsError
from adnlib.model.flow import build_flow, nll_loss
from adnlib.model.network import AttentDifferNet
from adnlib.run.checkpoint import (
    atomic_write,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    save_pointer,
    write_json,
)
from adnlib.run.evaluation import check_evaluation_output
from adnlib.run.train import GateMonitor, _all_finite, train, train_step, training_batch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory):
    """A finished 2-epoch run evaluated after each epoch; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(preset("smoke", epochs=2, eval_every=1), tiny_root, "disc", out, progress=False)
    return out


def _images(root, n, category="disc"):
    data = AnomalyDataset(root, category, "train", 128)
    return torch.stack([data[i][0] for i in range(n)])


# --- the training step -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["differnet", "se"])
def test_train_step_is_the_protocol_step(variant, tiny_root):
    """train_step = prepare (rotated copies) -> embed -> flow -> nll_loss -> backward -> optimizer step, returning
    the loss as a detached 0-d tensor (no .item() inside)."""
    config = preset("smoke", variant=variant)
    images = _images(tiny_root, 3)
    angles = torch.tensor([[0.0, 90.0], [30.0, -45.0], [180.0, 12.5]])
    a, b = AttentDifferNet(config), AttentDifferNet(config)
    opt_a, opt_b = a.make_optimizer(), b.make_optimizer()

    loss = train_step(a, opt_a, images, angles)
    z, log_jac_det = b.flow_forward(b.embed(b.prepare(images, angles)))
    expected = nll_loss(z, log_jac_det)
    opt_b.zero_grad(set_to_none=True)
    expected.backward()
    opt_b.step()

    assert isinstance(loss, torch.Tensor)
    assert loss.ndim == 0
    assert not loss.requires_grad
    assert torch.equal(loss, expected.detach())
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="needs images"):
        train_step(a, opt_a)


def test_train_step_from_cached_embeddings(tiny_root):
    config = preset("smoke")
    a, b = AttentDifferNet(config), AttentDifferNet(config)
    opt_a, opt_b = a.make_optimizer(), b.make_optimizer()
    y = torch.randn(6, config.embedding_dim, generator=torch.Generator().manual_seed(0))
    loss = train_step(a, opt_a, embeddings=y)
    expected = nll_loss(*b.flow_forward(y))
    expected.backward()
    opt_b.step()
    assert torch.equal(loss, expected.detach())
    assert all(torch.equal(p, q) for p, q in zip(a.flow.parameters(), b.flow.parameters()))


def test_train_runs_train_step_and_the_benchmarks_time_it(tiny_root, monkeypatch):
    common = load_benchmark("bench_common.py")
    assert common.train_step is train_step
    assert common.training_batch is training_batch

    calls = []

    def counting(*args, **kwargs):
        calls.append(args[2].shape if len(args) > 2 else kwargs["embeddings"].shape)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", counting)
    train(preset("smoke", batch_size=3), tiny_root, "disc", progress=False)
    assert [shape[0] for shape in calls] == [3, 3, 2]  # 8 training images, batches of 3


# --- explicit state: the global generators ---------------------------------------------------------------------
def _seed_globals(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _next_globals():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_train_leaves_the_global_generators_alone_and_is_deterministic(tiny_root, tmp_path):
    _seed_globals(123)
    expected = _next_globals()
    _seed_globals(123)
    first = train(preset("smoke", variant="se"), tiny_root, "disc", tmp_path / "a", progress=False)
    assert _next_globals() == expected  # nothing was reseeded, nothing was drawn
    _seed_globals(7)  # other global states: the same run
    second = train(preset("smoke", variant="se"), tiny_root, "disc", progress=False)
    assert first.scores["score"].tolist() == second.scores["score"].tolist()
    assert first.history["loss"].tolist() == second.history["loss"].tolist()


def test_build_flow_restores_numpys_global_state():
    np.random.seed(11)
    expected = np.random.rand(3)
    np.random.seed(11)
    build_flow(16, 2, 8)  # FrEIA's PermuteRandom(seed=k) calls np.random.seed(k)
    assert np.array_equal(np.random.rand(3), expected)


# --- explicit state: attention statistics -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["se", "cbam"])
def test_gate_monitor_averages_each_block_and_scale_over_the_batches(variant, tiny_root):
    """One column per block and scale, the mean over the passes since reset() with each batch counting once (here
    batches of 3 and 2 images: an image-weighted mean, or the last batch alone, gives other numbers)."""
    model = AttentDifferNet(preset("smoke", variant=variant))
    images = _images(tiny_root, 6)
    batches = [model.prepare(images[:3], torch.tensor([[0.0, 40.0]] * 3)), model.prepare(images[3:5])]
    with GateMonitor(model) as monitor:
        model.embed(model.prepare(images[5:]))
        monitor.reset()
        for x in batches:
            model.embed(x)
        stats = monitor.stats()
        assert all(block._forward_hooks for block in model.backbone.blocks)
    per_batch = [direct_attention(model, x) for x in batches]
    columns = {f"gate_mean_block{i}_scale{s}" for i in (1, 2, 3) for s in (0, 1)}
    if variant == "cbam":
        columns |= {f"spatial_mean_block{i}_scale{s}" for i in (1, 2, 3) for s in (0, 1)}
    assert set(stats) == set(per_batch[0]) == columns
    for name in columns:
        assert stats[name] == pytest.approx((per_batch[0][name] + per_batch[1][name]) / 2, rel=1e-5), name
    assert any(stats[f"gate_mean_block{i}_scale0"] != pytest.approx(stats[f"gate_mean_block{i}_scale1"], rel=1e-4)
               for i in (1, 2, 3))  # the scales differ: a monitor mixing them up would fail above
    assert not any(block._forward_hooks for block in model.backbone.blocks)
    assert not model.backbone._forward_pre_hooks


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
@pytest.mark.parametrize("variant", ["se", "cbam"])
def test_history_holds_the_epochs_gates_per_block_and_scale(variant, tiny_root):
    """lr 0 and 0-degree rotations keep the model and images fixed: the history's columns must equal the gates
    computed directly, averaged over the epoch's two batches of 4; the hooks are gone after training."""
    config = preset("smoke", variant=variant, lr=0.0, rotation_degrees=0.0, batch_size=4)
    result = train(config, tiny_root, "disc", progress=False)
    model = AttentDifferNet(config)
    for name, p in model.state_dict().items():
        assert torch.equal(p, result.model.state_dict()[name]), name
    expected = direct_attention(model, model.prepare(_images(tiny_root, 8)))  # equal batches: the mean over both
    row = result.history.iloc[0]
    assert {c for c in result.history.columns if c.startswith(("gate_", "spatial_"))} == set(expected)
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-4), name
    modules = [result.model.backbone, result.model.flow, *result.model.backbone.blocks]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


# --- explicit state: torch.compile ------------------------------------------------------------------------------
@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_compile_keeps_the_state_dict_keys(tiny_root, tmp_path, monkeypatch):
    """compile=True compiles the embedding in place (Module.compile), so checkpoints keep the plain keys and load
    and resume anywhere. Compiling for real takes minutes on CPU: nn.Module.compile is replaced by a recorder here
    (the test checks what is compiled and the keys written, not the compiled code)."""
    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    plain = train(preset("smoke"), tiny_root, "disc", tmp_path / "plain", progress=False)
    assert compiled == []
    result = train(preset("smoke", compile=True), tiny_root, "disc", tmp_path / "compiled", progress=False)
    assert compiled == [result.model.embedding]
    keys = list(load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")["model_state"])
    assert keys == list(load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model_state"])
    assert not any("_orig_mod" in k for k in keys)
    model_from_checkpoint(tmp_path / "compiled" / "checkpoint.pt")  # loads
    assert plain.scores["score"].tolist() == result.scores["score"].tolist()


# --- the files of a finished run --------------------------------------------------------------------------------
def test_a_finished_checkpoint_keeps_the_weights_only(finished_run):
    ckpt = load_checkpoint(finished_run / "checkpoint.pt")
    assert ckpt["epoch"] == 2
    assert ckpt["finished"]
    assert ckpt["kind"] == "last"
    assert not {"optimizer_state", "rng_state", "loader_generator", "rotation_generator"} & set(ckpt)
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["checkpoint_keeps_optimizer"] is False


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_best_pt_is_a_pointer_when_the_best_evaluation_is_the_last(finished_run, tiny_root, tmp_path):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    metrics = json.loads((run / "metrics.json").read_text())
    best = run / "best.pt"
    if metrics["best_epoch"] != 2:  # the smoke run's best was epoch 1: make a run whose best is its last
        shutil.rmtree(run)
        train(preset("smoke", epochs=2, eval_every=2), tiny_root, "disc", run, progress=False)
        metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2
    assert metrics["best_weights_in"] == "checkpoint.pt"
    assert best.stat().st_size < 100_000 < (run / "checkpoint.pt").stat().st_size  # no second copy
    pointer = torch.load(best, weights_only=True)
    assert "model_state" not in pointer
    assert pointer["weights_in"] == "checkpoint.pt"
    assert pointer["epoch"] == 2
    model = model_from_checkpoint(best)
    assert model.checkpoint_info["kind"].startswith("best")
    assert model.checkpoint_info["epoch"] == 2
    last = model_from_checkpoint(run / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), last.state_dict().values()))
    assert {"torch", "adnlib"} <= set(load_checkpoint(best)["versions"])
    # checkpoint.pt replaced by another epoch: the pointer refuses instead of giving the wrong weights
    ckpt = load_checkpoint(run / "checkpoint.pt")
    torch.save({**ckpt, "epoch": 3}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not the checkpoint the metrics.json beside it describes"):
        model_from_checkpoint(best)  # verified (the default): the pointer's target is not the recorded file
    with pytest.raises(CheckpointError, match="now holds epoch 3"):
        model_from_checkpoint(best, verify=False)  # unverified, the pointer still refuses another epoch


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_best_pt_is_a_copy_when_an_earlier_evaluation_was_best(tiny_root, tmp_path, monkeypatch):
    aurocs = iter([0.9, 0.8, 0.8])  # the evaluations of epochs 1 and 2, then the final report
    real_report = train_mod.report
    monkeypatch.setattr(train_mod, "report", lambda scores: {**real_report(scores), "auroc": next(aurocs)})
    train(preset("smoke", epochs=2, eval_every=1), tiny_root, "disc", tmp_path / "r", progress=False)
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 1
    assert "weights_in" not in best
    assert "optimizer_state" not in best
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["best_weights_in"] == "best.pt"


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_keep_optimizer_lets_a_finished_run_continue_to_the_same_numbers(tiny_root, tmp_path):
    out = tmp_path / "run"
    train(preset("smoke", epochs=1), tiny_root, "disc", out, progress=False, keep_optimizer=True)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert {"optimizer_state", "loader_generator", "rotation_generator"} <= set(ckpt)
    assert load_checkpoint(out / "best.pt")["weights_in"] == "checkpoint.pt"
    resumed = train(preset("smoke", epochs=2), tiny_root, "disc", out, resume=True, progress=False)
    best = load_checkpoint(out / "best.pt")  # copied before checkpoint.pt moved on, or pointing at epoch 2
    assert best["epoch"] in (1, 2)
    assert ("weights_in" not in best or best["epoch"] == 2)
    assert "optimizer_state" not in load_checkpoint(out / "checkpoint.pt")  # finished again, weights only
    straight = train(preset("smoke", epochs=2), tiny_root, "disc", progress=False)
    assert resumed.scores["score"].tolist() == straight.scores["score"].tolist()
    assert resumed.history["loss"].tolist() == straight.history["loss"].tolist()


def test_a_finished_run_without_optimizer_state_cannot_be_extended(finished_run, tiny_root, tmp_path):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    with pytest.raises(CheckpointError, match="finished at epoch 2 .* keep_optimizer=True"):
        train(preset("smoke", epochs=3, eval_every=1), tiny_root, "disc", run, resume=True, progress=False)
    again = train(preset("smoke", epochs=2, eval_every=1), tiny_root, "disc", run, resume=True, progress=False)
    assert again.metrics["resumed_from_epoch"] == 2  # the same epochs: scored and written again
    assert again.scores["score"].tolist() == pd.read_csv(finished_run / "scores.csv")["score"].tolist()


def test_evaluation_reads_only_the_weights(finished_run, monkeypatch):
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k) or real_load(*a, **k))
    model_from_checkpoint(finished_run / "checkpoint.pt")
    assert seen
    assert all(k.get("mmap") and k.get("weights_only") for k in seen)


@pytest.mark.slow(seconds=2)  # over 1.5 s: left out of `make test-fast`
def test_parameters_are_checked_at_evaluations_and_saves_only(tiny_root, monkeypatch):
    calls = []
    monkeypatch.setattr(train_mod, "_all_finite", lambda model: calls.append(1) or True)
    train(preset("smoke", epochs=3, eval_every=3), tiny_root, "disc", progress=False, checkpoint_every=0)
    assert len(calls) == 1  # no out_dir: the one evaluation
    model = AttentDifferNet(preset("smoke"))
    weight = model.trainable_parameters()[-1]
    assert _all_finite(model)
    with torch.no_grad():
        weight.view(-1)[0] = 3e30  # finite, though its square overflows float32
    assert _all_finite(model)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with torch.no_grad():
            weight.view(-1)[0] = bad
        assert not _all_finite(model)


# --- defects ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_result_files_get_the_umasks_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"auroc": 1.0})
        atomic_write(tmp_path / "x.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == mode


def test_resume_without_an_output_folder_is_a_config_error(tiny_root):
    with pytest.raises(ConfigError, match="resume=True needs out_dir"):
        train(preset("smoke"), tiny_root, "disc", resume=True, progress=False)


def test_evaluate_out_naming_a_file_is_refused(finished_run, tiny_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # cli.main sets its own
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        check_evaluation_output(target)
    with pytest.raises(OutputExistsError, match="results.txt is a file"):
        check_evaluation_output(target / "sub")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "scores.csv").write_text("old")
    with pytest.raises(OutputExistsError, match="holds an interrupted evaluation"):
        check_evaluation_output(tmp_path / "old")
    assert check_evaluation_output(tmp_path / "old", overwrite=True) == tmp_path / "old"
    with pytest.raises(OutputExistsError, match="results.txt is a file, not a folder"):  # any writer
        write_json(target / "metrics.json", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["evaluate", "--checkpoint", str(finished_run / "checkpoint.pt"), "--data", str(tiny_root),
                       "--category", "disc", "--out", str(target), "--no-progress", "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    assert "is a file" in err[0], err
    assert target.read_text() == "keep me"


def test_unfused_adam_warns_once_per_process(monkeypatch):
    real_adam = torch.optim.Adam

    def no_fused(params, *args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("fused=True requires all the params to be floating point Tensors of supported devices")
        return real_adam(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    monkeypatch.setattr(model_mod, "_unfused_warned", False)
    model = AttentDifferNet(preset("smoke"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = model.make_optimizer(), model.make_optimizer()
    messages = [str(w.message) for w in caught if "fused Adam" in str(w.message)]
    assert len(messages) == 1
    assert "torch's default Adam" in messages[0]
    assert "supported devices" in messages[0]
    assert not first.defaults.get("fused")
    assert not second.defaults.get("fused")


def test_load_checkpoint_lets_unrelated_errors_through(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    path.write_bytes(b"PK\x03\x04 whatever")

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError):
        load_checkpoint(path)
    with pytest.raises(MemoryError):
        model_from_checkpoint(path)

    def not_a_zip(*args, **kwargs):
        raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")

    monkeypatch.setattr(torch, "load", not_a_zip)
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_checkpoint(path)


def test_errors_of_this_issue_are_adnlib_errors():
    assert issubclass(OutputExistsError, AdnlibError)
    assert issubclass(ConfigError, AdnlibError)


def test_save_pointer_needs_the_epoch(tmp_path):
    model = AttentDifferNet(preset("smoke"))
    save_checkpoint(tmp_path / "checkpoint.pt", model=model, kind="last", extra={"epoch": 4})
    with pytest.raises(ValueError, match="epoch"):
        save_pointer(tmp_path / "best.pt", model=model, kind="best", weights_in="checkpoint.pt")
    save_pointer(tmp_path / "best.pt", model=model, kind="best", weights_in="checkpoint.pt", extra={"epoch": 4})
    assert load_checkpoint(tmp_path / "best.pt", verify=False)["epoch"] == 4
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "best.pt", verify=False)
