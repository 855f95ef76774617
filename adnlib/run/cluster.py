"""The Ray engine of the benchmark grid (`run_grid(..., engine="ray")`, `adnlib grid --engine ray`).

Each grid cell is a Ray task that calls the same idempotent cell function as the serial engine
(`adnlib.run.cell.run_cell`). `run_ray` connects to Ray (address None: start a local Ray on this machine, with
usage statistics and the dashboard off; 'auto', 'HOST:PORT' or 'ray://HOST:10001': an existing cluster), submits one
task per cell with num_gpus=gpus_per_cell (a fraction lets cells share a GPU), num_cpus=cpus_per_cell and
max_retries (a crashed worker or an error runs the cell again, which resumes its checkpoint.pt), and reports each
cell as it finishes, failures included, while the others go on.

GPUs: Ray sets CUDA_VISIBLE_DEVICES in each task from the GPUs it assigned, so a cell's `cuda` is its own GPU; a
cell given no GPU sees none (recent Ray leaves the variable alone then: the task clears it). Threads: a cell uses
cpus_per_cell torch threads. Paths: every worker must read the data root and write the results folder at the same
paths (a shared file system); each cell checks both before it trains. Workers run with their node's environment
(ADNLIB_OFFLINE, ADNLIB_CACHE: set them where `ray start` runs). Ray is imported here only, inside functions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

from adnlib.config import Config
from adnlib.errors import AdnlibError, ConfigError
from adnlib.io import one_line
from adnlib.run.cell import GridCell, cell_row, error_text, read_attempts

INSTALL_HINT = "pip install 'adnlib[cluster]' (Ray >= 2.9)"
# How long a HOST:PORT address may take to accept a connection. Ray's own client retries for many minutes (20
# attempts of about 35 s each, with a warning every 40 s) when nothing listens there.
CONNECT_TIMEOUT_S = 10.0
# Ray's client proxier can lose the server it spawns for a new ray:// connection ("Initialization failure from
# server", ray-project/ray#63202, intermittent): a fresh attempt gets a fresh server
CLIENT_INIT_ATTEMPTS = 3
CLIENT_RETRY_PAUSE_S = 2.0


class ClusterError(AdnlibError, RuntimeError):
    """Ray is missing, or the cluster cannot run the grid as asked."""


def require_ray():
    """The ray module, or ClusterError saying what to install."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"the Ray engine needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def init_options(address: str | None) -> dict:
    """ray.init keywords: a local Ray (address None or 'local') without the dashboard, or the given cluster."""
    # the cells report through their rows and attempts.json: the workers' logs stay in Ray's session folder
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "", "local"):
        return {**quiet, "include_dashboard": False}
    return {**quiet, "address": address}


@contextlib.contextmanager
def connect(address: str | None):
    """Ray, initialised for the block (and shut down after it when started here); an existing connection of this
    process (ray.init called before, e.g. in a notebook) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    options = init_options(address)
    if "address" in options:
        check_reachable(options["address"])
    if "address" not in options:  # adnlib starts this Ray: no usage statistics
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        _init(ray, options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ClusterError(f"cannot start or reach {where}: {one_line(exc)}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _init(ray, options: dict) -> None:
    """ray.init, tried again (CLIENT_INIT_ATTEMPTS in all) only where Ray's client proxier failed to start the
    connection's server; every other error is raised at once."""
    import time
    for attempt in range(1, CLIENT_INIT_ATTEMPTS + 1):
        try:
            ray.init(**options)
            return
        except ConnectionError as exc:
            transient = str(options.get("address", "")).startswith("ray://") and "Initialization failure" in str(exc)
            if not transient or attempt == CLIENT_INIT_ATTEMPTS:
                raise
            ray.shutdown()
            time.sleep(CLIENT_RETRY_PAUSE_S)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ClusterError naming `address` unless a HOST:PORT address accepts a TCP connection within `timeout` seconds.
    'auto' and ray://HOST:PORT are left to Ray (it fails on them quickly)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = "nothing answered" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why} (waited up to {timeout:g} s); is "
                           "`ray start --head` running there, and is the port its GCS port (default 6379)?") from exc


def _check_resources(ray, base: Config, gpus: float, cpus: float) -> None:
    """ClusterError unless some alive node can run a cell; a warning when GPUs are there but cells ask for none."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("GPU", 0) >= gpus and r.get("CPU", 0) >= cpus for r in nodes):
        have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in nodes) or "no node"
        raise ClusterError(f"no node of the Ray cluster has the {cpus:g} CPU(s) and {gpus:g} GPU(s) a cell asks for "
                           f"(nodes: {have}); lower --cpus-per-cell / --gpus-per-cell or add nodes")
    if gpus == 0 and any(r.get("GPU", 0) for r in nodes) and base.device in ("auto", "cuda"):
        warnings.warn("the Ray cluster has GPUs but cells ask for none (--gpus-per-cell 0): they train on the CPU",
                      stacklevel=3)


def _check_options(base: Config, gpus: float, cpus: float, max_retries: int) -> None:
    if gpus < 0 or cpus <= 0 or max_retries < 0:
        raise ConfigError(f"need gpus_per_cell >= 0, cpus_per_cell > 0 and max_retries >= 0, not {gpus}, {cpus}, "
                          f"{max_retries}")
    if gpus > 1 and gpus != math.floor(gpus):
        raise ConfigError(f"gpus_per_cell above 1 must be a whole number (Ray's rule), not {gpus}")
    if gpus == 0 and str(base.device).startswith("cuda"):
        raise ConfigError(f"device {base.device!r} on Ray needs --gpus-per-cell above 0: a cell sees only the GPUs "
                          "Ray assigned to it")


def _cell_task(base: Config, data_root: str, cell: GridCell, run_id: str, cpus: float) -> dict:
    """A Ray task: one cell on the worker Ray chose (its GPUs in CUDA_VISIBLE_DEVICES, set by Ray)."""
    import ray
    import torch

    from adnlib.run.cell import NOT_RETRIED, run_cell
    context = ray.get_runtime_context()
    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no GPU assigned: use none (not the GPUs Ray gave other cells)
    torch.set_num_threads(max(1, int(cpus)))
    where = {"engine": "ray", "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    try:
        return run_cell(base, data_root, cell, run_id=run_id, context=where)
    except NOT_RETRIED as exc:  # another attempt would only repeat it: fail now, without Ray's retries
        return cell_row(cell, "failed", attempts=len(read_attempts(cell.folder, run_id)), error=error_text(exc))


def _failure_text(ray, exc: BaseException) -> str:
    """One line for what ray.get raised for a cell."""
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        return error_text(exc.cause)
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return "WorkerCrashedError: the worker process died (killed, crashed or out of memory) on every attempt"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _collect(ray, pending: dict, run_id: str, done: Callable[[dict], None]) -> None:
    """Report each cell as its task ends (pending: {ref: cell}, emptied as they finish)."""
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ready[0])
        try:
            row = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - the cell failed on every attempt: reported, the others go on
            row = cell_row(cell, "failed", attempts=len(read_attempts(cell.folder, run_id)),
                           error=_failure_text(ray, exc))
        done(row)


def run_ray(base: Config, data_root: str | Path, cells: list[GridCell], *, run_id: str,
            done: Callable[[dict], None], address: str | None = None, gpus_per_cell: float = 0,
            cpus_per_cell: float = 1, max_retries: int = 2) -> None:
    """Run `cells` as Ray tasks (see the module's docstring) and call done(row) as each finishes.

    A cell is retried up to max_retries times after a crash of its worker or an error (cell.NOT_RETRIED errors fail
    at once); a cell that still fails is reported as a 'failed' row. KeyboardInterrupt cancels the pending cells.
    """
    _check_options(base, gpus_per_cell, cpus_per_cell, max_retries)
    if not cells:
        return
    data_root = str(Path(data_root).resolve())
    cells = [dataclasses.replace(c, folder=c.folder.resolve()) for c in cells]
    with connect(address) as ray:
        _check_resources(ray, base, gpus_per_cell, cpus_per_cell)
        options = {"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell, "max_retries": max_retries,
                   "retry_exceptions": True}
        if gpus_per_cell:  # a fresh worker per cell: CUDA, once initialised, stays on the GPU it first saw
            options["max_calls"] = 1
        task = ray.remote(**options)(_cell_task)
        pending = {task.remote(base, data_root, cell, run_id, cpus_per_cell): cell for cell in cells}
        try:
            _collect(ray, pending, run_id, done)
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
