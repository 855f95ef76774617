"""Soak check: run the notebooks that display widgets headless, again and again, and count stalls.

A stall is a run whose client went on later than it should: a cell that failed its time limit, or a cell whose end
(papermill's end_time, client side) came more than `--lag` seconds after the kernel's reply was sent (the reply's
date, kernel side). Before the fix (see adnlib/teach/nbengine.py) such a cell waited for the cell timeout.

    python benchmarks/notebook_soak.py --runs 30                      # 03, 04, 05 with the smoke parameters
    python benchmarks/notebook_soak.py --runs 30 --reuse-models       # the same, models trained once up front
    python benchmarks/notebook_soak.py --runs 5 --preset demo          # make demo's parameters (minutes per run)
    python benchmarks/notebook_soak.py --repro --runs 3 --engine papermill   # the synthetic stall, plain papermill

Prints one line per run and a table: runs, stalls, median and maximum seconds per notebook.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from adnlib.data.demo import make_demo_dataset
from adnlib.teach.notebooks import CellLimits, NotebookError, run_notebook

WIDGET_NOTEBOOKS = ("03_training_attentdiffernet", "04_auroc_evaluation", "05_gradcam_comparison")
SMOKE = {"preset": "smoke", "weights": "none", "device": "cpu", "epochs": 1}
SMALL = {"03_training_attentdiffernet": {"n_show": 1, "max_images": 8},
         "05_gradcam_comparison": {"n_normal": 1, "n_defective": 2}}
# The shape of notebook 03's former viewer (an Output widget capturing plt.show() at the end of the cell).
REPRO_CELLS = ["%matplotlib inline\nimport matplotlib.pyplot as plt, numpy as np, ipywidgets as widgets\n"
               "from IPython.display import display",
               "def show(image, block):\n    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))\n"
               "    for ax in axes:\n        ax.imshow(np.random.default_rng(image + block).random((256, 256)))\n"
               "    plt.show()\n    return fig\n"
               "display(widgets.interactive(show, image=widgets.Dropdown(options=[0, 1], value=0),\n"
               "                            block=widgets.IntSlider(value=3, min=1, max=3)))"]


REUSE: dict = {}


def train_once(data_root: Path, folder: Path) -> dict:
    """Smoke runs of the three variants, laid out as a course folder <folder>/disc/<variant>/seed0/ (what a
    notebook's `checkpoints` parameter reads); {variant: checkpoint path}."""
    from adnlib.config import preset
    from adnlib.run.train import train
    paths = {}
    for variant in ("differnet", "se", "cbam"):
        out = folder / "disc" / variant / "seed0"
        train(preset("smoke", variant=variant, epochs=1), data_root, "disc", out, progress=False)
        paths[variant] = str(out / "checkpoint.pt")
    return paths


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def max_reply_lag(path: Path) -> float:
    """The largest delay between a cell's reply leaving the kernel and the client ending that cell (seconds)."""
    lags = [_seconds(c.metadata.papermill.end_time) - _seconds(c.metadata.execution["shell.execute_reply"])
            for c in nbformat.read(path, as_version=4).cells
            if c.cell_type == "code" and "execution" in c.metadata and c.metadata.papermill.get("end_time")
            and "shell.execute_reply" in c.metadata.execution]
    return max(lags, default=0.0)


def repro_notebook(folder: Path, cells: int) -> Path:
    nb = new_notebook(cells=[new_code_cell("output_dir = None", metadata={"tags": ["parameters"]}),
                             new_code_cell(REPRO_CELLS[0])] + [new_code_cell(REPRO_CELLS[1]) for _ in range(cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "repro.ipynb")
    return folder / "repro.ipynb"


def run_plain_papermill(source: Path, output: Path, limit: int) -> None:
    import papermill as pm
    pm.execute_notebook(str(source), str(output), parameters={"output_dir": str(output.parent)},
                        progress_bar=False, execution_timeout=limit)


def soak_one(name: str, source: Path | None, params: dict, out: Path, args) -> dict:
    started = time.perf_counter()
    error = None
    try:
        if args.engine == "papermill":
            output = out / f"{name}.ipynb"
            out.mkdir(parents=True, exist_ok=True)
            run_plain_papermill(source or Path("notebooks") / f"{name}.ipynb", output, args.limit)
        else:
            output = run_notebook(name, out, params, source=source,
                                  limits=CellLimits(short=args.limit, long=args.long_limit)).output
    except (NotebookError, TimeoutError) as exc:
        error, output = str(exc).splitlines()[0][:200], out / f"{name}.ipynb"
    seconds = time.perf_counter() - started
    lag = max_reply_lag(output) if output.is_file() else float("nan")
    timed_out = bool(error) and "did not finish within" in error
    return {"notebook": name, "seconds": round(seconds, 1), "max_reply_lag_s": round(lag, 3),
            "stalled": timed_out or lag >= args.lag, "failed": bool(error) and not timed_out, "error": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per notebook (default 3: minutes with --reuse-models; the soak in "
                             "benchmarks/README.md used 30, about two hours)")
    parser.add_argument("--notebooks", nargs="+", default=list(WIDGET_NOTEBOOKS))
    parser.add_argument("--preset", default="smoke", help="smoke (quick parameters) or demo (make demo's)")
    parser.add_argument("--engine", choices=("adnlib", "papermill"), default="adnlib")
    parser.add_argument("--repro", action="store_true", help="the synthetic Output-widget notebook instead")
    parser.add_argument("--repro-cells", type=int, default=4)
    parser.add_argument("--limit", type=int, default=120, help="per-cell limit, seconds")
    parser.add_argument("--long-limit", type=int, default=3600, help="limit of cells tagged long, seconds")
    parser.add_argument("--lag", type=float, default=0.5, help="a reply lag above this (s) counts as a stall")
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--reuse-models", action="store_true",
                        help="train the models once (smoke) and pass them as `checkpoints`: runs skip training, and "
                             "the widget cells (what can stall) are the same")
    parser.add_argument("--json", type=Path, help="write every run's record here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    names = ["repro"] if args.repro else args.notebooks
    source = repro_notebook(work, args.repro_cells) if args.repro else None
    params = {"data_root": str(make_demo_dataset(args.data).resolve())}
    params.update(SMOKE if args.preset == "smoke" else {})
    if args.reuse_models:
        train_once(Path(params["data_root"]), work / "models")
        REUSE.update({"03_training_attentdiffernet": {"checkpoints": str(work / "models"),
                                                      "compare_attention_init": False},
                      "04_auroc_evaluation": {"checkpoints": str(work / "models")},
                      "05_gradcam_comparison": {"checkpoints": str(work / "models"), "seed_baseline": False}})
    records = []
    for run in range(args.runs):
        for name in names:
            extra = {**(SMALL.get(name, {}) if args.preset == "smoke" else {}), **REUSE.get(name, {})}
            record = soak_one(name, source, {**params, **extra},
                              work / f"run{run}", args)
            records.append(record)
            print(json.dumps({"run": run, **record}), flush=True)
    print(f"\n{'notebook':28} {'runs':>5} {'stalls':>7} {'failed':>7} {'median s':>9} {'max s':>7} {'max lag s':>10}")
    for name in names:
        rows = [r for r in records if r["notebook"] == name]
        times = [r["seconds"] for r in rows if not r["failed"]] or [float("nan")]
        print(f"{name:28} {len(rows):5d} {sum(r['stalled'] for r in rows):7d} {sum(r['failed'] for r in rows):7d} "
              f"{statistics.median(times):9.1f} {max(times):7.1f} {max(r['max_reply_lag_s'] for r in rows):10.3f}")
    print("stalls: cells that hit their limit or woke more than --lag s after the kernel's reply; "
          "failed: any other error (listed in the records)")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 1 if any(r["stalled"] or r["failed"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
