"""One grid cell (category, variant, seed): an idempotent unit that trains and evaluates into its own folder.

`run_cell` is what both grid engines call (adnlib.run.grid's serial loop, adnlib.run.cluster's Ray tasks). Called
again after a crash (an engine's retry, or the same grid command run again) it looks at its folder: a finished run
whose config equals the requested one is reused, an interrupted one resumes from checkpoint.pt (train's resume
reaches the numbers of an uninterrupted run), anything else trains from scratch. train() writes every result file
atomically, so a kill at any moment leaves a folder that the next call can use.

Before training, a cell checks that it can read the category's data and write its folder (on a cluster, each
worker must see the same paths), and records the attempt in `<cell>/attempts.json`: run id, attempt number, action,
host, process id, CUDA_VISIBLE_DEVICES, the engine's context (Ray node), start and end times and the outcome.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adnlib.config import Config
from adnlib.errors import (
    AdnlibError,
    CheckpointError,
    ConfigError,
    DatasetError,
    OutputExistsError,
    TrainingDivergedError,
)
from adnlib.io import NOT_A_CHECKPOINT, one_line
from adnlib.run.lock import FolderLockedError

ATTEMPTS_FILE = "attempts.json"
# Failures that another attempt would only repeat: a cell fails at once on them (the engines retry the others).
NOT_RETRIED = (ConfigError, OutputExistsError, CheckpointError, TrainingDivergedError, FolderLockedError)
# One row per cell as the engines report it (run_grid's runs.attrs["cells"]).
CELL_COLUMNS = ["cell", "category", "variant", "seed", "status", "auroc", "auroc_best", "seconds", "attempts",
                "host", "node", "cuda_visible_devices", "error"]


class CellAccessError(AdnlibError, PermissionError):
    """A worker cannot read the data root or write the results folder of its cell."""


class RefusedCell(OutputExistsError):
    """A cell saved with another config (the message describes the cell and the fields)."""


class UnusableCell(OutputExistsError):
    """A cell whose saved files cannot be read or were edited (rerun=True replaces it)."""


RERUN_HINT = "pass --rerun to replace it, or choose another output folder"


class UnverifiedCell(RefusedCell):
    """A finished cell whose checkpoint is missing or is not the one its metrics.json records."""


@dataclass(frozen=True)
class GridCell:
    """One cell of a grid and what the plan decided for it: 'reuse' | 'resume' | 'train'."""
    category: str
    variant: str
    seed: int
    folder: Path
    action: str = "train"

    @property
    def name(self) -> str:
        return f"{self.category}/{self.variant}/seed{self.seed}"


def cell_dir(out_dir: str | Path, category: str, variant: str, seed: int) -> Path:
    """The folder of one grid cell (DatasetError for a category that is not a plain folder name: a cell never
    lies outside out_dir)."""
    from adnlib.data.datasets import check_category_name
    return Path(out_dir) / check_category_name(category) / variant / f"seed{int(seed)}"


def _saved_epoch(cell: Path) -> int | None:
    """The epoch of a cell's checkpoint.pt (memory-mapped: the weights are not read); None if not recorded."""
    import torch
    try:
        epoch = torch.load(cell / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except (*NOT_A_CHECKPOINT, OSError):  # _saved_record has already explained an unreadable file
        return None
    return epoch if isinstance(epoch, int) else None


def _saved_record(cell: Path, name: str) -> dict[str, Any]:
    """What a cell's metrics.json, or its checkpoint.pt's header, records ({} if it is not a dict)."""
    path = cell / name
    if name == "metrics.json":
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UnusableCell(f"grid cell {cell} holds an unreadable metrics.json ({exc}); {RERUN_HINT}") from exc
        if not isinstance(record, dict):
            raise UnusableCell(f"grid cell {cell} holds an unreadable metrics.json (not a JSON object); {RERUN_HINT}")
        return record
    import torch

    from adnlib.run.checkpoint import load_checkpoint
    try:  # memory-mapped: reads the small header without loading the (up to 700 MB) weights
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (*NOT_A_CHECKPOINT, OSError):  # load_checkpoint explains what is wrong with the file
        try:
            ckpt = load_checkpoint(path, verify=False)
        except CheckpointError as exc:
            raise UnusableCell(f"grid cell {cell}: {exc}; {RERUN_HINT}") from exc
    return ckpt if isinstance(ckpt, dict) else {}


def _check_finished(cell: Path) -> None:
    """UnusableCell unless a finished cell's metrics.json holds its AUROCs (numbers in [0, 1]) and its score tables
    are there: an edited or damaged cell is reported, never reused (nor reported with a traceback)."""
    metrics = json.loads((cell / "metrics.json").read_text())
    for key in ("auroc", "auroc_best"):
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise UnusableCell(f"grid cell {cell}: metrics.json has {key} {value!r}, not an AUROC in [0, 1] (edited?); "
                            f"{RERUN_HINT}")
    missing = [name for name in ("scores.csv", "scores_best.csv") if not (cell / name).is_file()]
    if missing:
        raise UnusableCell(f"grid cell {cell}: {', '.join(missing)} missing; {RERUN_HINT}")


def cell_differences(cell: str | Path, requested: Config,
                     expected: dict | None = None) -> dict[str, tuple[Any, Any]] | None:
    """How the run saved in `cell` differs from `requested`, as {field: (saved, requested)}; None: nothing saved.

    A finished cell (metrics.json) is compared on its protocol (every field but the run-time ones: Config.protocol);
    an interrupted one (checkpoint.pt only) on every protocol field a resume may not change, and its epoch (a
    resume never lowers it). expected (adnlib.run.identity.expected_identity): also what the run used, its
    backbone's weights and its data, against what the request would use now ('auto' resolved). A saved run
    without a config (an older adnlib) differs in a pseudo-field 'config'.
    """
    from adnlib.run.identity import run_identity, used_differences
    from adnlib.run.train import resume_refusal
    cell = Path(cell)
    if (cell / "metrics.json").exists():
        name, resuming = "metrics.json", False
    elif (cell / "checkpoint.pt").exists():
        name, resuming = "checkpoint.pt", True
    else:
        return None
    record = _saved_record(cell, name)
    saved = record.get("config")
    if not isinstance(saved, dict):
        return {"config": ("not recorded", "given")}
    known, runtime = set(requested.to_dict()), set(Config.runtime_fields())
    unknown = {k: (v, None) for k, v in saved.items() if k not in known and k not in runtime}
    try:
        saved_config = Config.from_dict({k: v for k, v in saved.items() if k in known})
    except (TypeError, ValueError) as exc:  # a config this version cannot build
        return {"config": (f"invalid ({exc})", "given")}
    diff = {**saved_config.protocol_differences(requested, resuming=resuming), **unknown}
    if expected is not None:
        diff.update(used_differences(run_identity(record), expected))
    if resuming and resume_refusal(_saved_epoch(cell), requested.epochs):
        diff["epochs"] = (f"checkpoint at epoch {_saved_epoch(cell)}", requested.epochs)
    return diff


def cell_action(folder: str | Path, config: Config, *, resume: bool = True, rerun: bool = False,
                expected: dict | None = None) -> str:
    """What a cell's folder calls for: 'reuse' (finished with this config), 'resume' (interrupted, this config) or
    'train' (nothing saved, resume=False, or saved with another config and rerun=True). A cell saved with another
    config, or (with `expected`, adnlib.run.identity.expected_identity) on another backbone or other data than the
    request would use now, or with unreadable or edited files (an AUROC that is not a number in [0, 1], a score
    table missing), raises OutputExistsError naming it and the fields or the file, unless rerun; so does a
    finished cell whose checkpoint.pt is missing or is not the file its metrics.json records (sha256), and a cell
    whose checkpoint.pt is past the requested epochs (a resume never lowers them)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"grid cell {folder} is a file")
    try:
        diff = cell_differences(folder, config, expected) if resume else None
        if diff == {} and (folder / "metrics.json").exists():
            _check_finished(folder)
    except UnusableCell:
        if rerun:
            return "train"
        raise
    if diff is None:
        return "train"
    if not diff and (folder / "metrics.json").exists():
        return _reusable(folder, rerun)
    if not diff:
        return "resume"
    if rerun:
        return "train"
    from adnlib.run.identity import describe
    raise RefusedCell(f"{folder} ({describe(diff)})")


def _reusable(folder: Path, rerun: bool) -> str:
    """'reuse' for a finished cell whose checkpoints are those its metrics.json records (sha256); a cell whose
    checkpoint.pt is gone or was replaced raises UnverifiedCell naming it, or is retrained ('train') with rerun."""
    from adnlib.run.checkpoint import verify_weights
    try:
        if not (folder / "checkpoint.pt").is_file():  # also for a metrics.json without a record (older adnlib)
            raise CheckpointError(f"{folder / 'checkpoint.pt'} is missing, so its results cannot be checked")
        for name in ("checkpoint.pt", "best.pt"):
            verify_weights(folder / name)
    except CheckpointError as exc:
        if rerun:
            return "train"
        raise UnverifiedCell(str(exc)) from exc
    return "reuse"


def check_access(data_root: str | Path, cell: GridCell) -> None:
    """CellAccessError unless this process can read the cell's category under data_root and write its folder."""
    from adnlib.data.datasets import category_dir
    host = socket.gethostname()
    try:
        folder = category_dir(data_root, cell.category)
    except DatasetError as exc:
        raise CellAccessError(f"on host {host}: {exc} (every worker must see the data root at the same path)") from exc
    unreadable = [p for p in (folder, folder / "train", folder / "test")
                  if p.is_dir() and not os.access(p, os.R_OK | os.X_OK)]
    if unreadable:
        raise CellAccessError(f"on host {host}: cannot read {unreadable[0]} (permissions)")
    try:
        from adnlib.io import probe_folder
        cell.folder.mkdir(parents=True, exist_ok=True)
        probe_folder(cell.folder)
    except OSError as exc:
        raise CellAccessError(f"on host {host}: cannot write the results folder {cell.folder} ({exc.strerror or exc}; "
                              "every worker must be able to write --out at the same path)") from exc


def read_attempts(folder: str | Path, run_id: str | None = None) -> list[dict]:
    """The attempts recorded in a cell's attempts.json (only those of grid run `run_id` when given)."""
    try:
        attempts = json.loads((Path(folder) / ATTEMPTS_FILE).read_text()).get("attempts", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [a for a in attempts if run_id is None or a.get("run") == run_id]


def _record(folder: Path, attempts: list[dict]) -> None:
    from adnlib.run.checkpoint import write_json
    write_json(folder / ATTEMPTS_FILE, {"attempts": attempts})


def error_text(exc: BaseException) -> str:
    """An error as one line: 'Type: message'."""
    return f"{type(exc).__name__}: {one_line(exc)}".rstrip(": ")


def cell_row(cell: GridCell, status: str, *, metrics: dict | None = None, attempt: dict | None = None,
             attempts: int = 0, seconds: float | None = None, error: str | None = None) -> dict:
    """One CELL_COLUMNS row: a cell's outcome as an engine reports it."""
    metrics, attempt = metrics or {}, attempt or {}
    node = attempt.get("node_ip") or attempt.get("host")
    if attempt.get("node_id"):
        node = f"{node} ({attempt['node_id'][:8]})"
    return {"cell": cell.name, "category": cell.category, "variant": cell.variant, "seed": cell.seed,
            "status": status, "auroc": metrics.get("auroc"), "auroc_best": metrics.get("auroc_best"),
            "seconds": seconds, "attempts": attempts, "host": attempt.get("host"), "node": node,
            "cuda_visible_devices": attempt.get("cuda_visible_devices"), "error": error}


def reused_row(cell: GridCell) -> dict:
    """The row of a cell whose finished run is reused (nothing written)."""
    return cell_row(cell, "reused", metrics=json.loads((cell.folder / "metrics.json").read_text()), seconds=0.0)


def run_cell(base: Config, data_root: str | Path, cell: GridCell, *, run_id: str, progress: bool = False,
             context: dict | None = None, lock_wait: float = 0) -> dict:
    """Train and evaluate one cell into cell.folder (base with the cell's variant and seed) -> its row (cell_row).

    Idempotent: the first attempt of grid run `run_id` does what the plan decided (cell.action); a later attempt
    of the same run (a retry after a crash or an error) looks at the folder again and resumes the checkpoint.pt
    the crashed attempt left (or reuses a run it finished). context: what the engine adds to the attempt's record
    (e.g. the Ray node). Raises what training raised, after recording it in attempts.json.

    The cell holds its folder's write lock (adnlib.run.lock) throughout: another grid, or a retried attempt racing
    the zombie of an earlier one, gets FolderLockedError (after waiting up to lock_wait seconds).
    """
    from adnlib.run.lock import folder_lock
    check_access(data_root, cell)
    with folder_lock(cell.folder, wait=lock_wait, command=f"grid cell {cell.name}"):
        return _run_locked(base, data_root, cell, run_id=run_id, progress=progress, context=context)


def _run_locked(base: Config, data_root: str | Path, cell: GridCell, *, run_id: str, progress: bool,
                context: dict | None) -> dict:
    from adnlib.run.train import train
    config = base.replace(variant=cell.variant, seed=cell.seed)
    history = read_attempts(cell.folder)
    earlier = [a for a in history if a.get("run") == run_id]
    action = cell.action if not earlier else cell_action(cell.folder, config, rerun=cell.action == "train")
    if action == "reuse":
        return reused_row(cell)
    attempt = {"run": run_id, "attempt": len(earlier) + 1, "action": action, "host": socket.gethostname(),
               "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **(context or {}),
               "started": time.time(), "ended": None, "outcome": None}
    _record(cell.folder, [*history, attempt])
    started = time.perf_counter()
    try:
        result = train(config, data_root, cell.category, cell.folder, progress=progress, resume=action == "resume",
                       overwrite=action == "train")
    except BaseException as exc:
        attempt.update(ended=time.time(), outcome=error_text(exc))
        _record(cell.folder, [*history, attempt])
        raise
    attempt.update(ended=time.time(), outcome="ok", resumed_from_epoch=result.metrics.get("resumed_from_epoch"))
    _record(cell.folder, [*history, attempt])
    status = "resumed" if action == "resume" else "trained"
    return cell_row(cell, status, metrics=result.metrics, attempt=attempt, attempts=attempt["attempt"],
                    seconds=time.perf_counter() - started)
