"""Run the teaching notebooks headless with papermill (for `make demo` and the tests)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from adnlib.errors import AdnlibError
from adnlib.locations import in_repository, notebook_dir

NOTEBOOK_DIR = notebook_dir()  # <repository>/notebooks, or the copy in the installed wheel
NOTEBOOKS = ("00_quickstart", "01_normalizing_flows_differnet", "02_attention_modules",
             "03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison", "06_benchmark_report")
# One linear order: each notebook needs only earlier ones (03 trains the models that 04, 05 and 06 reuse).
RUN_ORDER = NOTEBOOKS


class NotebookError(AdnlibError, RuntimeError):
    """A notebook cell failed; the message names the notebook and the cell."""


class NotebookInterrupted(KeyboardInterrupt):
    """Ctrl-C during a headless run: the message names the notebook, the cell and the partial executed notebook."""


@dataclass
class NotebookRun:
    name: str
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Per-cell limits (seconds), set from measured cell times with a wide margin (README, "Headless runs never stall"):
# with make demo's parameters on 2 busy cores (load 7) no untagged cell took more than 11 s, so a stalled one fails
# after 2 minutes instead of sitting for an hour. Cells tagged `long` (training, scoring, grids: up to 1276 s on
# those busy cores, about 190 s on idle ones) get LONG_CELL_TIMEOUT_S; the `paper` preset lifts that limit, since
# its trainings run for hours on a CPU. Environment overrides: ADNLIB_CELL_TIMEOUT, ADNLIB_LONG_CELL_TIMEOUT
# (seconds; 0 = no limit).
CELL_TIMEOUT_S = 120
SUMMARISED = (".json", ".csv")  # the files a summary reads (adnlib.regression.collect_artefacts)
LONG_CELL_TIMEOUT_S = 3600
LONG_TAG = "long"


@dataclass(frozen=True)
class CellLimits:
    """Time limits for one headless run: `short` for ordinary cells, `long` for cells tagged `long` (None: none)."""
    short: int | None = CELL_TIMEOUT_S
    long: int | None = LONG_CELL_TIMEOUT_S

    @classmethod
    def for_run(cls, parameters: dict | None = None) -> CellLimits:
        """Defaults, the paper preset's unlimited long cells, then the environment's overrides."""
        long = None if (parameters or {}).get("preset") == "paper" else LONG_CELL_TIMEOUT_S
        short = _env_seconds("ADNLIB_CELL_TIMEOUT", CELL_TIMEOUT_S)
        return cls(short, _env_seconds("ADNLIB_LONG_CELL_TIMEOUT", long))

    def __call__(self, cell) -> int | None:
        """nbclient's `timeout_func`: the limit of one cell."""
        return self.long if LONG_TAG in cell.metadata.get("tags", []) else self.short


def _env_seconds(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise NotebookError(f"{name} must be a whole number of seconds, got {value!r}") from None
    return seconds if seconds > 0 else None


def check_parameters(parameters: dict, names: tuple[str, ...] = NOTEBOOKS) -> None:
    """NotebookError, before anything runs, for a parameter that no notebook of `names` declares in its
    `parameters` cell, or a `preset` that adnlib.config does not know (else the notebook fails tens of seconds in)."""
    from adnlib.config import PRESETS
    from adnlib.regression import default_parameters
    declared = set().union(*(default_parameters(NOTEBOOK_DIR / f"{n}.ipynb") for n in names))
    unknown = [p for p in parameters if p not in declared]
    if unknown:
        raise NotebookError(f"parameter {unknown[0]!r} is not in the parameters cell of {', '.join(names)} "
                            f"(their parameters: {', '.join(sorted(declared))})")
    preset = parameters.get("preset", "demo")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise NotebookError(f"parameter preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def run_notebook(name: str, out_dir: str | Path, parameters: dict | None = None, *, kernel: str = "python3",
                 progress: bool = False, limits: CellLimits | None = None, source: Path | None = None
                 ) -> NotebookRun:
    """Execute notebooks/<name>.ipynb (or `source`) into out_dir/<name>.ipynb with `parameters` injected.

    The notebook runs with notebooks/ as working directory in a checkout (as in JupyterLab), in out_dir when adnlib is
    installed (never in site-packages); its artefacts go to the folder given by its `output_dir` parameter
    (out_dir/<name> unless set). It runs on the `adnlib` papermill engine (`adnlib.teach.nbengine`: no widget
    stall, per-cell limits). Afterwards, failed or not, the run's summary (key
    numbers from its artefacts, settings, wall time: adnlib.regression) is written to
    out_dir/<name>.summary.json and into the executed notebook's metadata. The summary reads only the files of
    this run (`_files_of_this_run`): in a reused out_dir, what an earlier run left there is not summarised again.
    Raises NotebookError naming the failing or stalled cell; NotebookInterrupted (a KeyboardInterrupt) naming the
    cell and the partial notebook on Ctrl-C.
    """
    limits = limits or CellLimits.for_run(parameters)
    source = Path(source) if source else NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.is_file():
        raise NotebookError(f"notebook not found: {source}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    params = {"output_dir": str(out_dir / name), **(parameters or {})}
    started, since_ns = time.perf_counter(), _file_clock_ns(out_dir)
    error = _execute(name, source, output, params, kernel=kernel, progress=progress, limits=limits)
    seconds = time.perf_counter() - started
    _write_summary(name, out_dir, output, source, params, seconds, error, since_ns)
    if error is not None:
        raise error
    return NotebookRun(name, output, seconds)


def _execute(name: str, source: Path, output: Path, params: dict, *, kernel: str, progress: bool,
             limits: CellLimits) -> NotebookError | None:
    """Run the notebook with papermill on the `adnlib` engine; the failure as a NotebookError (its cause set)."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    from adnlib.teach.nbengine import CellInterrupted, HeadlessEngine

    papermill_engines.register("adnlib", HeadlessEngine)
    cwd = NOTEBOOK_DIR if in_repository() else output.parent  # never site-packages
    with _written_then_renamed(output) as writing:
        try:
            pm.execute_notebook(str(source), str(writing), parameters=params, kernel_name=kernel, cwd=str(cwd),
                                progress_bar=progress, engine_name="adnlib", timeout_func=limits)
            return None
        except KeyboardInterrupt as exc:  # one message (the CLI prints it as one line), no traceback, no summary
            where = f", {exc}" if isinstance(exc, CellInterrupted) else ""
            partial = f"the partial notebook is {output}" if writing.stat().st_size else "no notebook was written yet"
            raise NotebookInterrupted(f"notebook {name}{where}; {partial}") from None
        except PapermillExecutionError as exc:
            first_line = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
            return _caused(f"{name}: cell {exc.cell_index} (In [{exc.exec_count}]: {first_line[:60]!r}) failed "
                           f"with {exc.ename}: {exc.evalue} — see {output}", exc)
        except CellTimeoutError as exc:
            return _caused(f"{name}: {exc} — see {output}", exc)
        except (DeadKernelError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _caused(f"{name}: {type(exc).__name__}: {first} — see {output}", exc)


def _caused(message: str, cause: BaseException) -> NotebookError:
    error = NotebookError(message)
    error.__cause__ = cause
    return error


@contextlib.contextmanager
def _written_then_renamed(output: Path):
    """A temporary path beside `output` (unguessable, created new: no link followed) for papermill to write the
    executed notebook into as it runs; renamed onto `output` when the run ends, however it ends, if what was written
    is a whole notebook. A write that fails (a full disk) leaves `output` as it was and raises OutputWriteError."""
    import nbformat

    from adnlib.io import create_new, write_error
    fd, writing = create_new(output.parent, f".{output.stem}.", ".partial.ipynb")
    os.close(fd)
    try:
        yield writing
    except OSError as exc:
        failure = write_error(exc, output)
        if failure is None:
            raise
        raise failure from exc
    finally:
        try:
            if writing.stat().st_size:
                executed = nbformat.read(writing, as_version=4)  # a whole notebook, not a truncated one
                record = executed.metadata.get("papermill", {})
                if record.get("output_path") == str(writing):  # papermill's record names the file it wrote
                    record["output_path"] = str(output)
                    nbformat.write(executed, writing)
                os.replace(writing, output)
        except (OSError, ValueError):  # truncated (a full disk) or gone: the previous notebook stays
            pass
        writing.unlink(missing_ok=True)


def _write_summary(name: str, out_dir: Path, output: Path, source: Path, params: dict, seconds: float,
                   error: NotebookError | None, since_ns: int | None = None) -> None:
    """The run's summary (adnlib.regression) of the files this run wrote (all of them when since_ns is None).
    A problem here is a warning: it never hides the notebook's own result, and a later comparison reports the
    missing summary."""
    from adnlib.regression import summarize_run, write_summary
    view = out_dir / f".{name}.summary-view-{secrets.token_hex(8)}"  # unguessable: no planted link is followed
    try:
        root = out_dir
        if since_ns is not None:  # summarise a copy (hard links) holding only this run's files
            _link_files(out_dir / name, view / name, _files_of_this_run(out_dir / name, since_ns))
            root = view
        summary = summarize_run(name, root, seconds=seconds, parameters=params, source=source,
                                error=None if error is None else str(error))
        write_summary(summary, out_dir, output)
    except (AdnlibError, OSError, ValueError) as exc:  # the notebook ran; a summary it cannot have is a warning
        warnings.warn(f"{name}: no summary written ({type(exc).__name__}: {exc})", stacklevel=2)
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _file_clock_ns(folder: Path) -> int:
    """The file system's clock now (the mtime of a file created and removed in `folder`): what the files a run
    writes are compared with (the machine's clock may differ from a network file system's)."""
    from adnlib.io import probe_folder
    return probe_folder(folder, ".adnlib-clock-")


def _files_of_this_run(folder: Path, since_ns: int) -> list[Path]:
    """The files of a notebook's output folder that belong to the run started at since_ns: those written since,
    and every file of a sub-folder in which anything was written since (a training run the notebook resumed or
    reused: a grid takes each cell's write lock, which rewrites the cell's .adnlib.lock). Files that an earlier run
    left and this one did not touch (another variant's, another category's) are not of this run. Only the kinds
    of file a summary reads (SUMMARISED) are listed."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    fresh_dirs = {p.parent for p in files if p.parent != folder and p.stat().st_mtime_ns >= since_ns}
    return [p for p in files if p.suffix in SUMMARISED
            and (p.parent in fresh_dirs if p.parent != folder else p.stat().st_mtime_ns >= since_ns)]


def _link_files(folder: Path, view: Path, files: list[Path]) -> None:
    """Mirror `files` (inside `folder`) under `view` as hard links (copies where links are not possible)."""
    for path in files:
        target = view / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def run_notebooks(out_dir: str | Path, parameters: dict | None = None, names=None, *, baseline=None,
                  tolerances: list[str] = (), tolerances_file=None, exact: bool = False, wait: float = 0,
                  log=print) -> tuple[list[NotebookRun], object]:
    """`adnlib notebooks` as one call: run the course notebooks `names` (default: all, in RUN_ORDER) headless into
    out_dir with `parameters` injected, under out_dir's write lock (`wait` seconds for another writer); a failing
    notebook is recorded and the next one still runs. With `baseline` (a folder of `*.summary.json`), compare the
    run's summaries with it afterwards (`adnlib.regression.drift`). Everything that can be checked is checked before
    the first notebook starts: the names, the parameters, the cell limits, the baseline and the tolerances, the
    output folder. -> (one NotebookRun per notebook, the DriftReport or None).
    """
    from adnlib.errors import AdnlibError
    from adnlib.io import check_output_folder
    from adnlib.regression import compare_summaries, load_summaries, tolerance_rules
    from adnlib.run.lock import folder_lock
    names = tuple(names) if names else NOTEBOOKS
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise AdnlibError(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    parameters = dict(parameters or {})
    check_parameters(parameters, names)
    CellLimits.for_run(parameters)
    rules = tolerance_rules(list(tolerances), tolerances_file)  # a malformed tolerance: the error now
    expected = None
    if baseline is not None:
        expected = load_summaries(baseline)
        absent = [n for n in names if n not in expected]
        if absent:
            raise AdnlibError(f"--baseline {baseline} has no summary of {', '.join(absent)} (it has "
                              f"{', '.join(sorted(expected))}); run it with the same --only")
    check_output_folder(out_dir)
    with folder_lock(out_dir, wait=wait, command="adnlib notebooks"):
        runs = run_all(out_dir, parameters, names, log=log)
    report = None if expected is None else compare_summaries(load_summaries(out_dir), expected, rules, exact=exact,
                                                             only=names)
    return runs, report


def run_all(out_dir: str | Path, parameters: dict | None = None, names: tuple[str, ...] = NOTEBOOKS,
            log=print) -> list[NotebookRun]:
    """Run several notebooks in RUN_ORDER (03 before the notebooks that reuse its models); a failure is recorded and
    the next notebook still runs."""
    from adnlib.regression import default_parameters
    runs = []
    for name in sorted(names, key=lambda n: RUN_ORDER.index(n) if n in RUN_ORDER else len(RUN_ORDER)):
        log(f"running {name} ...")
        started = time.perf_counter()
        # each notebook gets the parameters its own parameters cell declares (check_parameters made sure every one
        # is declared somewhere): papermill would inject the others too, with a warning line for each
        declared = default_parameters(NOTEBOOK_DIR / f"{name}.ipynb")
        own = {k: v for k, v in (parameters or {}).items() if k in declared or not declared}
        try:
            run = run_notebook(name, out_dir, own)
        except NotebookError as exc:
            run = NotebookRun(name, Path(out_dir) / f"{name}.ipynb", time.perf_counter() - started, str(exc))
        log(f"  {'ok' if run.ok else 'FAILED'} in {run.seconds:.0f} s" + ("" if run.ok else f": {run.error}"))
        runs.append(run)
    return runs
