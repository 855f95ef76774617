"""Run the teaching notebooks headless with papermill (for `make demo` and the tests)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AdnlibError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ("00_quickstart", "01_attention_modules", "02_normalizing_flows_differnet",
             "03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison", "06_benchmark_report")


class NotebookError(AdnlibError, RuntimeError):
    """A notebook cell failed; the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    name: str
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Per-cell limit (seconds; env ADNLIB_CELL_TIMEOUT overrides): a headless run must end even if a kernel stops
# answering (seen with ipykernel 7).
CELL_TIMEOUT_S = 3600


def run_notebook(name: str, out_dir: str | Path, parameters: dict | None = None, *, kernel: str = "python3",
                 progress: bool = False, cell_timeout: int | None = None) -> NotebookRun:
    """Execute notebooks/<name>.ipynb into out_dir/<name>.ipynb with `parameters` injected.

    The notebook runs with notebooks/ as working directory (as in JupyterLab); its artefacts go to the folder given by
    its `output_dir` parameter (out_dir/<name> unless set). Raises NotebookError naming the failing cell.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    cell_timeout = cell_timeout or int(os.environ.get("ADNLIB_CELL_TIMEOUT", CELL_TIMEOUT_S))
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.is_file():
        raise NotebookError(f"notebook not found: {source}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    params = {"output_dir": str(out_dir / name), **(parameters or {})}
    started = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(output), parameters=params, kernel_name=kernel, cwd=str(NOTEBOOK_DIR),
                            progress_bar=progress, execution_timeout=cell_timeout)
    except PapermillExecutionError as exc:
        first_line = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
        raise NotebookError(f"{name}: cell {exc.cell_index} (In [{exc.exec_count}]: {first_line[:60]!r}) failed "
                            f"with {exc.ename}: {exc.evalue} — see {output}") from exc
    except (CellTimeoutError, DeadKernelError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotebookError(f"{name}: {type(exc).__name__}: {first} — see {output}") from exc
    return NotebookRun(name, output, time.perf_counter() - started)


def run_all(out_dir: str | Path, parameters: dict | None = None, names: tuple[str, ...] = NOTEBOOKS,
            log=print) -> list[NotebookRun]:
    """Run several notebooks in order; a failure is recorded and the next notebook still runs."""
    runs = []
    for name in names:
        log(f"running {name} ...")
        started = time.perf_counter()
        try:
            run = run_notebook(name, out_dir, parameters)
        except NotebookError as exc:
            run = NotebookRun(name, Path(out_dir) / f"{name}.ipynb", time.perf_counter() - started, str(exc))
        log(f"  {'ok' if run.ok else 'FAILED'} in {run.seconds:.0f} s" + ("" if run.ok else f": {run.error}"))
        runs.append(run)
    return runs
