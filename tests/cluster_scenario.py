"""A real two-node Ray cluster on 127.0.0.1 and the grid scenarios of tests/test_cluster.py.

Run by the test inside private network and PID namespaces, so that every connection stays on the loopback
interface and `ray stop --force` sees only this cluster's processes:

    unshare --net --pid --fork --kill-child --mount-proc bash -c \\
        'ip link set lo up && python tests/cluster_scenario.py DATA OUT RESULT.json; exit $?'

(`; exit $?` keeps bash as PID 1 of the namespace, reaping orphaned processes; Python as PID 1 would leave zombies.)

It starts a head node (0 CPU, no GPU: it runs no cell) and a second node declaring 2 GPUs (2 CPUs), connects, and runs
`adnlib grid --engine ray --address 127.0.0.1:PORT --gpus-per-cell 1` over DATA's categories (disc, weave, broken:
a category with a corrupt image) while a watcher SIGKILLs the worker of disc/differnet/seed0 once its first
checkpoint is saved. Then it runs the same command for disc and weave again (everything reused), and one new cell
(disc, seed 1) through the Ray client (`--address ray://127.0.0.1:10001`). It writes what happened to RESULT.json
for the test to check, and always stops the cluster.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"
CLIENT_ADDRESS = "ray://127.0.0.1:10001"  # the head's Ray client server (ray[client])
KILLED_CELL = ("disc", "differnet", 0)
RAY = str(Path(sys.executable).with_name("ray"))


def ray_cli(*args: str) -> None:
    started = time.perf_counter()
    done = subprocess.run([RAY, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    if done.returncode:
        raise RuntimeError(f"ray {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    print(f"scenario: ray {args[0]} {args[1]} took {time.perf_counter() - started:.1f} s", flush=True)


def start_cluster(temp_dir: str, tries: int = 2) -> None:
    """A head that runs no cell (0 CPU, no GPU) and a second node (2 CPUs, 2 GPUs declared). `ray start` gives a
    node 30 s to register, which a loaded 2-core machine can miss: then everything is stopped and started again."""
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--include-log-monitor=false"]
    for attempt in range(1, tries + 1):
        try:
            ray_cli("start", "--head", "--port", str(PORT), "--num-cpus", "0", "--num-gpus", "0",
                    "--ray-client-server-port", CLIENT_ADDRESS.rsplit(":", 1)[1],
                    "--include-dashboard=false", "--temp-dir", temp_dir, *common)
            ray_cli("start", "--address", ADDRESS, "--num-cpus", "2", "--num-gpus", "2", *common)
            return
        except RuntimeError as exc:
            if attempt == tries:
                raise
            print(f"scenario: starting the cluster failed, once more: {str(exc).splitlines()[0]}", flush=True)
            subprocess.run([RAY, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def wait_for_nodes(ray, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        if len(nodes) >= n:
            return nodes
        time.sleep(0.5)
    raise TimeoutError(f"only {len(nodes)} of {n} Ray nodes came up")


def kill_watcher(cell: Path, record: dict, stop: threading.Event) -> None:
    """SIGKILL the process of the cell's first attempt once its checkpoint.pt exists (and before it finishes)."""
    while not stop.is_set():
        attempts = []
        with contextlib.suppress(OSError, ValueError):
            attempts = json.loads((cell / "attempts.json").read_text())["attempts"]
        if attempts and (cell / "checkpoint.pt").exists():
            record.update(pid=attempts[-1]["pid"], finished_before=(cell / "metrics.json").exists())
            os.kill(record["pid"], signal.SIGKILL)
            record["time"] = time.time()
            print(f"scenario: SIGKILLed pid {record['pid']} (cell {cell.parent.parent.name}/"
                  f"{cell.parent.name}/{cell.name}, attempt {attempts[-1]['attempt']})", flush=True)
            return
        time.sleep(0.05)


def grid(args: list[str]) -> dict:
    from adnlib import cli
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(args)
    seconds = time.perf_counter() - started
    print(f"scenario: adnlib {' '.join(args)} -> exit {code} in {seconds:.1f} s\n{out.getvalue()}{err.getvalue()}",
          flush=True)
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": seconds}


def scenario(data: Path, out: Path) -> dict:
    from adnlib.run.cluster import connect
    result = {}
    started = time.perf_counter()
    with connect(ADDRESS) as ray:
        nodes = wait_for_nodes(ray, 2)
        print(f"scenario: connected, 2 nodes, after {time.perf_counter() - started:.1f} s", flush=True)
        result["nodes"] = {n["NodeID"]: n["Resources"] for n in nodes}
        base = ["grid", "--data", str(data), "--variants", "differnet", "--preset", "smoke", "--weights", "none",
                "--device", "cpu", "--epochs", "3", "--engine", "ray", "--address", ADDRESS, "--gpus-per-cell", "1",
                "--cpus-per-cell", "1", "--max-retries", "1", "--no-progress", "--out", str(out)]
        kill, stop = {}, threading.Event()
        watcher = threading.Thread(target=kill_watcher, args=(out.joinpath(*map(str, KILLED_CELL[:2]), "seed0"),
                                                              kill, stop), daemon=True)
        watcher.start()
        result["grid"] = grid([*base, "--categories", "disc", "weave", "broken"])
        stop.set()
        result["kill"] = kill
        result["rerun"] = grid([*base, "--categories", "disc", "weave"])
    result["disconnected"] = not ray.is_initialized()
    # a new cell through the Ray client (what a laptop uses to reach a remote cluster): ray://, not a driver
    client = [CLIENT_ADDRESS if arg == ADDRESS else arg for arg in base]
    result["client"] = grid([*client, "--categories", "disc", "--seeds", "1"])
    return result


def main() -> int:
    data, out, result_path = map(Path, sys.argv[1:4])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["ADNLIB_OFFLINE"] = "1"
    os.environ["RAY_worker_register_timeout_seconds"] = "300"  # noqa: SIM112 - Ray's name; slow workers under load
    os.environ["RAY_AUTH_MODE"] = "disabled"  # whatever ~/.ray holds: only this namespace reaches the cluster
    temp_dir = tempfile.mkdtemp(prefix="adnray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    started = time.perf_counter()
    try:
        start_cluster(temp_dir)
        result = {"cluster_start_seconds": time.perf_counter() - started}
        print(f"scenario: cluster up after {result['cluster_start_seconds']:.1f} s", flush=True)
        result_path.with_suffix(".up").touch()  # the test may start its serial reference run now
        result.update(scenario(data, out))
    finally:
        stopping = time.perf_counter()
        subprocess.run([RAY, "stop", "--force", "--grace-period", "2"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
        print(f"scenario: ray stop took {time.perf_counter() - stopping:.1f} s", flush=True)
        if not os.environ.get("ADNLIB_KEEP_RAY_LOGS"):
            shutil.rmtree(temp_dir, ignore_errors=True)
    result_path.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
