"""Two copies of one job at once, as pytest-xdist's two workers run them on a 2-core machine: with torch's default
(one intra-op thread per core, so 4 threads on 2 cores) and with OMP_NUM_THREADS=1 (what tests/conftest.py gives
the processes a worker starts). Prints each pair's wall time and the ratio.

    ADNLIB_OFFLINE=1 python benchmarks/side_by_side_threads.py                 # a smoke `adnlib train` (~1 min)
    ADNLIB_OFFLINE=1 python benchmarks/side_by_side_threads.py --notebook 05_gradcam_comparison   # (~4 min)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _job(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    if args.notebook:
        return [sys.executable, "-m", "adnlib", "notebooks", "--only", args.notebook, "--out", str(out),
                "-p", "data_root:str", str(data), "-p", "preset", '"smoke"', "-p", "weights", '"none"',
                "-p", "device", '"cpu"', "-p", "epochs", "1"]
    return [sys.executable, "-m", "adnlib", "train", "--data", str(data), "--category", "disc", "--preset", "smoke",
            "--weights", "none", "--device", "cpu", "--epochs", "3", "--no-progress", "--out", str(out)]


def _pair(args: argparse.Namespace, data: Path, work: Path, threads: str | None) -> float:
    """Wall time of two copies of the job started together."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    start = time.perf_counter()
    procs = [subprocess.Popen(_job(args, data, work / f"{threads}-{k}"), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for k in range(2)]
    if any(p.wait(timeout=1800) for p in procs):
        sys.exit("error: a job failed (run its command alone to see why)")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", help="a notebook's name instead of the training job")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of each kind, interleaved")
    args = parser.parse_args()
    from adnlib.data.demo import make_demo_dataset
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = make_demo_dataset(work / "demo")
        times: dict[str, list[float]] = {"default": [], "1": []}
        for _ in range(args.repeats):
            for threads in ("default", "1"):
                times[threads].append(_pair(args, data, work / f"r{len(times[threads])}",
                                            None if threads == "default" else threads))
    best = {k: min(v) for k, v in times.items()}
    print(f"two jobs at once on {os.cpu_count()} cores: torch's default threads {best['default']:.1f} s, "
          f"OMP_NUM_THREADS=1 {best['1']:.1f} s, ratio {best['default'] / best['1']:.2f}x")


if __name__ == "__main__":
    main()
