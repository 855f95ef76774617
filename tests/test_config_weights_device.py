import hashlib
import http.server
import io
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from adnlib.config import Config, preset
from adnlib.errors import ConfigError, WeightsError
from adnlib.model import weights as weights_mod
from adnlib.run.device import resolve_device


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


def test_imagenet_missing_and_unreachable_fails_with_advice(monkeypatch, tmp_path):
    """No cache and an unreachable host (ADNLIB_OFFLINE here): a WeightsError naming the way out. The time bound of
    the real probe is tested below, against local servers."""
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="--weights none"):
        weights_mod.load_alexnet_features("imagenet")


# --- the real network probe and download, against servers on 127.0.0.1 ---------------------------------------------
PROBE_S = 0.5
MARGIN_S = 1.0


@pytest.fixture
def online(monkeypatch):
    """ADNLIB_OFFLINE off and a fresh probe cache (restored afterwards): the probe really runs, and only ever
    against 127.0.0.1 (no proxy from the environment may relay it elsewhere)."""
    monkeypatch.delenv("ADNLIB_OFFLINE", raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(weights_mod, "PROBE_TIMEOUT_S", PROBE_S)
    weights_mod._probe.cache_clear()
    yield
    weights_mod._probe.cache_clear()


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) and never sends a byte."""
    server = socket.socket()
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def refused_port():
    """A port on 127.0.0.1 that nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}  # path -> bytes; anything else is a 404
    seen_default_timeouts: list = []

    def _answer(self, body: bool) -> None:
        type(self).seen_default_timeouts.append(socket.getdefaulttimeout())
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (own thread), shut down also when the test fails -> (base url, handler)."""
    handler = type("Handler", (_Handler,), {"files": {}, "seen_default_timeouts": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _timed_probe(url: str) -> tuple[bool, float]:
    started = time.perf_counter()
    answer = weights_mod._probe(url, PROBE_S)
    return answer, time.perf_counter() - started


def test_probe_of_a_silent_server_gives_up_within_its_timeout(online, silent_port):
    # catches a probe that only opens a TCP connection (it succeeds here) or waits without a bound
    reachable, seconds = _timed_probe(f"http://127.0.0.1:{silent_port}/")
    assert not reachable
    assert seconds < PROBE_S + MARGIN_S


def test_probe_of_a_refused_port_is_unreachable_at_once(online, refused_port):
    reachable, seconds = _timed_probe(f"http://127.0.0.1:{refused_port}/")
    assert not reachable
    assert seconds < PROBE_S + MARGIN_S


def test_probe_is_bounded_even_where_urllib_is_not(online, monkeypatch):
    """urllib's timeout does not cover the name lookup (a dead DNS server can take many seconds per try): the probe
    as a whole must still end in time. Here the request itself hangs until released."""
    release = threading.Event()
    monkeypatch.setattr(weights_mod, "_head", lambda url, timeout: release.wait(30))
    try:
        reachable, seconds = _timed_probe("http://unresolvable.invalid/")
    finally:
        release.set()
    assert not reachable
    assert seconds < PROBE_S + MARGIN_S


def test_probe_of_an_answering_server_is_reachable_and_cached(online, http_server):
    url, handler = http_server
    assert weights_mod._can_reach(url + "/x.pth")  # a 404 is an answer: the host is there
    assert handler.seen_default_timeouts == [socket.getdefaulttimeout()]
    assert weights_mod._can_reach(url + "/x.pth")  # once per process: no second request
    assert len(handler.seen_default_timeouts) == 1
    weights_mod._probe.cache_clear()
    assert weights_mod._can_reach(url + "/x.pth")
    assert len(handler.seen_default_timeouts) == 2


def test_offline_switch_skips_the_probe(monkeypatch, http_server):
    url, handler = http_server
    weights_mod._probe.cache_clear()
    monkeypatch.setenv("ADNLIB_OFFLINE", "1")
    assert not weights_mod._can_reach(url + "/")
    assert handler.seen_default_timeouts == []


def test_imagenet_load_through_a_silent_host_fails_fast_with_advice(online, silent_port, monkeypatch, tmp_path):
    """The whole `--weights imagenet` path with the probe really running: an accepting but silent host must give
    the WeightsError within the probe's timeout, not hang."""
    monkeypatch.setattr(weights_mod, "IMAGENET_URL", f"http://127.0.0.1:{silent_port}/alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "hub" / "alexnet-owt-7be5be79.pth")
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="--weights none"):
        weights_mod._imagenet_state()
    assert time.perf_counter() - started < PROBE_S + MARGIN_S
    with pytest.raises(WeightsError, match="cannot be downloaded"):
        weights_mod.load_alexnet_features("imagenet")


def _alexnet_bytes() -> tuple[bytes, dict]:
    state = {f"features.{k}": v for k, v in weights_mod.random_alexnet_features(3).state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def test_imagenet_download_lands_atomically_and_checks_the_hash(online, http_server, monkeypatch, tmp_path):
    url, handler = http_server
    data, state = _alexnet_bytes()
    name = f"alexnet-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    handler.files[f"/{name}"] = data
    handler.files["/alexnet-00000000.pth"] = data  # a file whose name promises another hash
    cache = tmp_path / "hub" / "checkpoints"
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: cache / Path(weights_mod.IMAGENET_URL).name)
    before = socket.getdefaulttimeout()

    monkeypatch.setattr(weights_mod, "IMAGENET_URL", f"{url}/{name}")
    features, label = weights_mod.load_alexnet_features("imagenet")
    assert label == "imagenet"
    assert torch.equal(features[0].weight, state["features.0.weight"])
    assert sorted(p.name for p in cache.iterdir()) == [name]  # renamed into place, no temporary file left
    assert set(handler.seen_default_timeouts) == {before}  # the process-wide socket default was never touched

    monkeypatch.setattr(weights_mod, "IMAGENET_URL", f"{url}/alexnet-00000000.pth")
    with pytest.raises(WeightsError, match="SHA-256"):
        weights_mod.load_alexnet_features("imagenet")
    assert sorted(p.name for p in cache.iterdir()) == [name]


def test_failing_imagenet_download_leaves_the_socket_default_timeout_alone(online, http_server, monkeypatch,
                                                                            tmp_path):
    """Project issue 9: the download once set socket.setdefaulttimeout(30) for the whole process (every other
    thread's sockets too). The server records the process default while the download is under way."""
    url, handler = http_server
    monkeypatch.setattr(weights_mod, "IMAGENET_URL", f"{url}/missing-0123abcd.pth")  # HEAD answers 404, GET too
    monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "hub" / "missing-0123abcd.pth")
    before = socket.getdefaulttimeout()
    with pytest.raises(WeightsError, match="cannot be downloaded.*404"):
        weights_mod.load_alexnet_features("imagenet")
    assert socket.getdefaulttimeout() == before
    assert len(handler.seen_default_timeouts) == 2
    assert set(handler.seen_default_timeouts) == {before}
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").iterdir())  # no partial file left


def test_stalled_imagenet_download_fails_within_its_timeout(online, monkeypatch, tmp_path):
    """The probe passes (HEAD answers) but the GET never sends a byte: the per-connection timeout must end it."""
    release = threading.Event()

    class Stalling(_Handler):
        files, seen_default_timeouts = {}, []

        def do_GET(self):  # noqa: N802
            release.wait(10)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stalled.pth"
        monkeypatch.setattr(weights_mod, "IMAGENET_URL", url)
        monkeypatch.setattr(weights_mod, "DOWNLOAD_TIMEOUT_S", PROBE_S)
        monkeypatch.setattr(weights_mod, "imagenet_cache_path", lambda: tmp_path / "stalled.pth")
        started = time.perf_counter()
        with pytest.raises(WeightsError, match="timed out"):
            weights_mod._imagenet_state()
        assert time.perf_counter() - started < PROBE_S + MARGIN_S
        assert list(tmp_path.iterdir()) == []
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


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


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    # steer what torch reports: each wrong order (or a hard-coded 'cpu') picks the wrong device in one case
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_explicit_devices_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("mps") == torch.device("mps")
    with pytest.raises(ConfigError, match="only 2 CUDA GPU"):
        resolve_device("cuda:2")  # the docstring's "that device if it exists"


@pytest.mark.parametrize("name", ["tpu", "", "gpu", "CPU", "cuda:x", "cuda:", "cpu:-1", "auto:1", " cpu", "cuda1"])
def test_bad_device_strings_are_config_errors(name):
    # torch.device("cuda:x") would raise a RuntimeError (a traceback at the CLI) instead of one error line
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(name)


@pytest.mark.parametrize("bad", [0, -1e-3, float("inf"), float("nan"), "fast", True])
def test_attention_lr_must_be_a_positive_number(bad):
    # catches a zero rate (attention silently frozen) or a string reaching the optimiser
    with pytest.raises(ConfigError, match="attention_lr must be a positive number"):
        preset("smoke", variant="se", attention_lr=bad)


@pytest.mark.parametrize("variant", ["se", "cbam"])
def test_attention_lr_puts_exactly_the_attention_blocks_in_their_own_group(variant):
    # catches a group that misses some attention parameters, takes flow parameters, or keeps the flow's rate; and
    # the faithful default (None) changing the optimiser (one group at lr, the layout old checkpoints resume with)
    from adnlib.model.network import AttentDifferNet
    model = AttentDifferNet(preset("smoke", variant=variant, attention_lr=3e-3))
    flow, attention = model.make_optimizer().param_groups
    attention_ids = {id(p) for p in model.backbone.attention.parameters()}
    assert {id(p) for p in attention["params"]} == attention_ids
    assert {id(p) for p in flow["params"]} == {id(p) for p in model.trainable_parameters()} - attention_ids
    assert attention["lr"] == 3e-3
    assert flow["lr"] == 2e-4
    default = AttentDifferNet(preset("smoke", variant=variant)).make_optimizer().param_groups
    assert len(default) == 1
    assert default[0]["lr"] == 2e-4
    differnet = AttentDifferNet(preset("smoke", variant="differnet", attention_lr=3e-3)).make_optimizer()
    assert len(differnet.param_groups) == 1  # no attention block: nothing to put in a second group
    # kept in DifferNet's config all the same: a grid's base config carries it to the attention variants
    assert preset("smoke", variant="differnet", attention_lr=3e-3).replace(variant="se").attention_lr == 3e-3


def test_attention_lr_steps_the_gates_at_their_own_rate():
    # catches a second group whose rate is ignored by the (fused) Adam step: Adam's first step moves each
    # parameter by about lr·g/(|g| + eps), so the attention blocks move ~15x more at 3e-3 than at 2e-4
    from adnlib.model.network import AttentDifferNet
    moved = {}
    for rate in (None, 3e-3):
        torch.manual_seed(0)
        model = AttentDifferNet(preset("smoke", variant="se", attention_lr=rate))
        optimizer = model.make_optimizer()
        before = [p.detach().clone() for p in model.backbone.attention.parameters()]
        images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        z, log_det = model(model.prepare(images, torch.zeros(2, 1)))
        (0.5 * (z ** 2).sum(1) - log_det).mean().backward()
        optimizer.step()
        moved[rate] = sum(float((p.detach() - b).abs().sum())
                          for p, b in zip(model.backbone.attention.parameters(), before))
    assert 10 < moved[3e-3] / moved[None] < 16


def test_the_demo_preset_trains_attention_at_its_recorded_rate_and_the_cli_can_undo_it():
    # catches a demo preset whose gates cannot move (the flow's 2e-4 over 32 steps), a paper preset that deviates,
    # and a CLI that cannot get the faithful rate back under the demo preset ('flow') or accepts 0
    from adnlib.cli.parser import build_parser, config_from_args
    assert preset("demo").attention_lr == 2e-3
    assert preset("paper").attention_lr is None
    parser = build_parser()
    base = ["train", "--data", "d", "--category", "c", "--out", "o", "--preset", "demo"]
    assert config_from_args(parser.parse_args(base)).attention_lr == 2e-3
    assert config_from_args(parser.parse_args([*base, "--attention-lr", "flow"])).attention_lr is None
    assert config_from_args(parser.parse_args([*base, "--attention-lr", "3e-3"])).attention_lr == 3e-3
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--attention-lr", "0"])
