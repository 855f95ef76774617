"""The benchmark grid's engines: the cell function, the serial engine's failure handling, and the Ray engine on a
real two-node Ray cluster (tests/cluster_scenario.py) inside private network and PID namespaces."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from adnlib import cli

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "cluster_scenario.py"
ARGS = ["--variants", "differnet", "--preset", "smoke", "--weights", "none", "--device", "cpu", "--no-progress"]


def _broken_category(root: Path, like: Path) -> None:
    """root/broken: a copy of `like` whose first training image is not an image (the cell fails on every try)."""
    shutil.copytree(like, root / "broken")
    first = sorted((root / "broken" / "train" / "good").iterdir())[0]
    first.write_bytes(b"not an image")


@pytest.fixture(scope="module")
def tiny_root2(tiny_grid_root, tmp_path_factory):
    """Both demo categories cut down to 8 train, 3 good and 3 defective test images, and a broken category."""
    root = tmp_path_factory.mktemp("tiny2") / "data"
    shutil.copytree(tiny_grid_root, root)
    _broken_category(root, root / "disc")
    return root


def _main(args, monkeypatch, capsys):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # cli.main replaces it
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_ray_is_imported_only_by_the_ray_engine():
    code = "import sys, adnlib.run.grid, adnlib.run.cluster; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_without_ray_the_ray_engine_fails_in_one_line_saying_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, out, err = _main(["grid", "--data", str(tmp_path), "--engine", "ray", "--out", str(tmp_path / "o")],
                           monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert "pip install 'adnlib[cluster]'" in err


def test_ray_options_belong_to_the_ray_engine(tmp_path, monkeypatch, capsys):
    code, _, err = _main(["grid", "--data", str(tmp_path), "--address", "auto", "--out", str(tmp_path / "o")],
                         monkeypatch, capsys)
    assert code == 2
    assert err.startswith("error: --address")
    assert err.count("\n") == 1
    code, _, err = _main(["grid", "--data", str(tmp_path), "--engine", "ray", "--gpus-per-cell", "-1",
                          "--out", str(tmp_path / "o")], monkeypatch, capsys)
    assert code == 2
    assert "--gpus-per-cell" in err
    assert err.count("\n") == 1


def test_a_local_ray_starts_without_dashboard_and_a_cluster_is_joined_by_address():
    from adnlib.run.cluster import init_options
    assert init_options(None)["include_dashboard"] is False
    assert "address" not in init_options(None)
    assert init_options("ray://head:10001")["address"] == "ray://head:10001"
    assert "include_dashboard" not in init_options("auto")


@pytest.mark.slow  # 3 tiny cells of 1 epoch: ~10 s
class _FlakyRay:
    """A stand-in for the ray module whose init fails `failures` times with the given error."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.inits, self.shutdowns, self.initialized = failures, error, 0, 0, False

    def is_initialized(self):
        return self.initialized

    def init(self, **options):
        self.inits += 1
        if self.inits <= self.failures:
            raise self.error
        self.initialized = True

    def shutdown(self):
        self.shutdowns += 1
        self.initialized = False


PROXIER_FAILURE = ConnectionError("Initialization failure from server: psutil.ZombieProcess: PID still exists but "
                                  "it's a zombie (pid=484)")


@pytest.mark.parametrize("address, error, failures, inits, connects", [
    ("ray://127.0.0.1:10001", PROXIER_FAILURE, 1, 2, True),  # Ray's proxier lost its server once: a second try
    ("ray://127.0.0.1:10001", PROXIER_FAILURE, 5, 3, False),  # bounded: three tries, then the one-line error
    ("ray://127.0.0.1:10001", ConnectionError("Failed to connect"), 1, 1, False),  # anything else: no retry
    ("local", PROXIER_FAILURE, 1, 1, False),  # a local Ray has no proxier
])
def test_a_ray_client_connection_is_tried_again_only_after_the_proxiers_known_failure(monkeypatch, address, error,
                                                                                      failures, inits, connects):
    # catches a grid that fails on Ray's intermittent client-proxier failure (ray-project/ray#63202, seen in CI),
    # and a retry loop that hides real errors or never ends
    from adnlib.run import cluster
    fake = _FlakyRay(failures, error)
    monkeypatch.setattr(cluster, "require_ray", lambda: fake)
    monkeypatch.setattr(cluster, "CLIENT_RETRY_PAUSE_S", 0.0)
    if connects:
        with cluster.connect(address) as ray:
            assert ray is fake
            assert fake.initialized
    else:
        with pytest.raises(cluster.ClusterError, match="cannot start or reach"):
            with cluster.connect(address):
                pass
    assert fake.inits == inits


def test_serial_engine_reports_a_failing_cell_and_finishes_the_others(tiny_root2, tmp_path, monkeypatch, capsys):
    """A cell that fails on every attempt is retried --max-retries times, reported as a row with its error, the
    other cells finish and are tabulated, and the command exits 1; run again, the finished cells are reused."""
    data, out = tiny_root2, tmp_path / "grid"
    args = ["grid", "--data", str(data), "--categories", "disc", "broken", "weave", *ARGS, "--epochs", "1",
            "--max-retries", "1", "--out", str(out)]
    code, printed, err = _main(args, monkeypatch, capsys)
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("cell ")]
    assert [ln.split()[2] for ln in lines] == ["disc/differnet/seed0:", "broken/differnet/seed0:",
                                               "weave/differnet/seed0:"]
    assert "FAILED after 2 attempts: DatasetError: cannot read image" in lines[1]
    assert "(trained," in lines[0]
    assert "(trained," in lines[2]
    assert err.splitlines()[-1].startswith("error: 1 of 3 grid cells failed")
    table = printed.splitlines()
    assert [ln.split()[0] for ln in table[3:6]] == ["disc", "weave", "mean"]
    assert "broken/differnet/seed0 (2 attempts): DatasetError: cannot read image" in printed
    attempts = json.loads((out / "broken" / "differnet" / "seed0" / "attempts.json").read_text())["attempts"]
    assert len(attempts) == 2
    assert all(a["outcome"].startswith("DatasetError") for a in attempts)

    code, printed, err = _main([*args[:4], "disc", "weave", *args[7:]], monkeypatch, capsys)
    assert code == 0
    assert err.count("(reused)") == 2


@pytest.fixture(scope="module")
def cluster_root(demo_root, tiny_root2, tmp_path_factory):
    """disc and weave of the demo data (40 training images: a cell runs long enough to be killed mid-run) and a
    broken category."""
    root = tmp_path_factory.mktemp("cluster") / "data"
    for category in ("disc", "weave"):
        shutil.copytree(demo_root / category, root / category)
    shutil.copytree(tiny_root2 / "broken", root / "broken")
    return root


def _namespaces_work() -> str | None:
    """Why private network and PID namespaces cannot be made here (None: they can)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "ip", "link",
                            "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot make namespaces (root / CAP_SYS_ADMIN?): {probe.stderr.strip()}"


def _overlap(a: dict, b: dict) -> bool:
    return a["started"] < b["end"] and b["started"] < a["end"]


@pytest.mark.slow(seconds=150)  # a 2-node Ray cluster: 2-3 min on 2 cores (Ray start-up dominates)
def test_ray_grid_on_a_two_node_cluster(cluster_root, tmp_path, monkeypatch, capsys):
    """The Ray engine on a real cluster (head + a node declaring 2 GPUs, on 127.0.0.1 in private namespaces):
    cells of --gpus-per-cell 1 run two at once, each with its own CUDA_VISIBLE_DEVICES; a SIGKILLed worker's cell
    is retried and resumes its checkpoint, to the serial engine's numbers exactly; a cell that always fails
    exhausts its retries and is reported while the others finish; run again, every finished cell is reused; a new
    cell runs through the Ray client (ray://)."""
    pytest.importorskip("ray", reason="the Ray engine needs `pip install adnlib[cluster]`")
    why = _namespaces_work()
    if why:
        pytest.skip(why)
    ray_out, result = tmp_path / "ray", tmp_path / "result.json"
    # "; exit $?" keeps bash as the namespace's PID 1 (it reaps orphans): without it bash execs Python as PID 1,
    # which reaps nothing, and Ray's client proxy fails on a zombie's cmdline (psutil.ZombieProcess)
    script = f"ip link set lo up && {sys.executable} {SCENARIO} {cluster_root} {ray_out} {result}; exit $?"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "scenario.log").open("w")
    proc = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c",
                             script], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        while proc.poll() is None and not result.with_suffix(".up").exists():  # Ray starts: leave it the CPUs
            time.sleep(1)
        serial_out = tmp_path / "serial"  # meanwhile, the reference: the serial engine on the same cells
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a Ray cell of --cpus-per-cell 1
        try:
            code, _, _ = _main(["grid", "--data", str(cluster_root), "--categories", "disc", "weave", *ARGS,
                                "--epochs", "3", "--out", str(serial_out)], monkeypatch, capsys)
        finally:
            torch.set_num_threads(threads)
        assert code == 0
        proc.wait(timeout=420)
    finally:
        if proc.poll() is None:  # unshare --kill-child takes the namespace, and the cluster in it, down with it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    scenario_log = (tmp_path / "scenario.log").read_text()
    print(scenario_log)
    assert proc.returncode == 0, scenario_log[-5000:]
    _check_ray_grid(json.loads(result.read_text()), ray_out, serial_out, scenario_log)


def _check_ray_grid(result: dict, ray_out: Path, serial_out: Path, log: str) -> None:
    from adnlib.run.grid import collect_grid
    grid = result["grid"]
    assert grid["exit"] == 1, log  # the broken cell failed; the others finished
    lines = [ln for ln in grid["stderr"].splitlines() if ln.startswith("cell ")]
    assert len(lines) == 3, grid["stderr"]
    assert "broken/differnet/seed0 (2 attempts): DatasetError: cannot read image" in grid["stdout"]
    gpu_node = next(n for n, res in result["nodes"].items() if res.get("GPU") == 2)
    attempts = {c: json.loads((ray_out / c / "differnet" / "seed0" / "attempts.json").read_text())["attempts"]
                for c in ("disc", "weave", "broken")}
    kill = result["kill"]
    assert kill.get("pid"), f"the watcher missed the running cell: {kill}"
    assert not kill["finished_before"], f"the watcher missed the running cell: {kill}"
    every = [dict(a, cell=c, end=a["ended"] or kill["time"]) for c, tries in attempts.items() for a in tries]
    for a in every:  # on the node with GPUs, one GPU each
        print(f"{a['cell']}: attempt {a['attempt']} ({a['action']}) on node {a['node_id'][:8]}, pid {a['pid']}, "
              f"CUDA_VISIBLE_DEVICES={a['cuda_visible_devices']}, {a['outcome'] or 'killed'}")
        assert a["node_id"] == gpu_node, a
        assert a["cuda_visible_devices"] in ("0", "1"), a
    pairs = [(a, b) for a in every for b in every if a is not b and _overlap(a, b)]
    assert any(a["cuda_visible_devices"] != b["cuda_visible_devices"] for a, b in pairs), "no two cells at once"
    assert all(a["cuda_visible_devices"] != b["cuda_visible_devices"] for a, b in pairs), "a GPU given twice"
    first, retry = attempts["disc"]
    assert first["pid"] == kill["pid"]
    assert first["ended"] is None
    assert first["action"] == "train"
    assert retry["action"] == "resume"
    assert retry["outcome"] == "ok"
    assert retry["pid"] != first["pid"]
    metrics = json.loads((ray_out / "disc" / "differnet" / "seed0" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1
    assert len(attempts["broken"]) == 2
    assert len(attempts["weave"]) == 1

    ray_rows, serial_rows = (collect_grid(d, ["disc", "weave"], seeds=[0]).set_index("category")
                             for d in (ray_out, serial_out))
    assert ray_rows[["auroc", "auroc_best", "best_epoch"]].equals(serial_rows[["auroc", "auroc_best", "best_epoch"]])
    for category in ("disc", "weave"):  # the scores themselves, image for image
        scores = [(d / category / "differnet" / "seed0" / "scores.csv").read_text() for d in (ray_out, serial_out)]
        assert scores[0] == scores[1], category
    assert result["rerun"]["exit"] == 0
    assert result["rerun"]["stderr"].count("(reused)") == 2
    assert result["disconnected"]
    # through the Ray client (ray://): the new cell ran on the GPU node, once, and finished
    assert result["client"]["exit"] == 0, result["client"]["stderr"]
    (client,) = json.loads((ray_out / "disc" / "differnet" / "seed1" / "attempts.json").read_text())["attempts"]
    assert client["node_id"] == gpu_node
    assert client["outcome"] == "ok"
    assert client["cuda_visible_devices"] in ("0", "1")
    assert (ray_out / "disc" / "differnet" / "seed1" / "metrics.json").exists()
