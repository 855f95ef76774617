import time

import pytest

from adnlib import weights as weights_mod
from adnlib.config import Config, preset
from adnlib.device import resolve_device
from adnlib.errors import ConfigError, WeightsError


def test_paper_preset_holds_the_official_protocol():
    c = preset("paper")
    assert (c.img_size, c.n_scales, c.n_coupling_blocks, c.fc_hidden, c.clamp) == (448, 3, 8, 2048, 3.0)
    assert (c.lr, c.betas, c.eps, c.weight_decay) == (2e-4, (0.8, 0.8), 1e-4, 1e-5)
    assert (c.batch_size, c.n_train_rotations, c.epochs, c.eval_every, c.n_test_rotations) == (24, 4, 192, 8, 64)
    assert c.embedding_dim == 768


def test_config_round_trips_and_rejects_unknowns():
    c = preset("smoke", variant="cbam", seed=7)
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown config field"):
        c.replace(lr_typo=1)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("fast")
    with pytest.raises(ConfigError, match="unknown variant"):
        preset("smoke", variant="transformer")
    with pytest.raises(ConfigError, match="63 px"):
        preset("paper", img_size=128)


def test_imagenet_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "missing.pth")
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="--weights none"):
        weights_mod.load_alexnet_features("imagenet")
    assert time.perf_counter() - started < 5


def test_auto_weights_fall_back_to_random_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "missing.pth")
    with pytest.warns(UserWarning, match="RANDOM backbone weights"):
        _, label = weights_mod.load_alexnet_features("auto")
    assert label == "random"


def test_bad_weights_file_is_refused(tmp_path):
    (tmp_path / "w.pth").write_text("not a tensor file")
    with pytest.raises(WeightsError, match="w.pth"):
        weights_mod.load_alexnet_features(str(tmp_path / "w.pth"))
    with pytest.raises(WeightsError, match="not found"):
        weights_mod.load_alexnet_features(str(tmp_path / "nope.pth"))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
