"""The commands: each a few lines over the public API (what `import adnlib` offers), plus what it prints.

A command takes the parsed arguments and returns the exit status; errors are raised and turned into one line by
`adnlib.cli.main`.
"""
from __future__ import annotations

import json
import sys
import time

from adnlib.cli.parser import config_from_args, expectation, notebook_parameters


def demo_data(args) -> int:
    from adnlib.data.demo import DEFAULT_DEMO_ROOT, make_demo_dataset
    print(make_demo_dataset(args.out or DEFAULT_DEMO_ROOT, force=args.force))
    return 0


def train(args) -> int:
    from adnlib.run.device import resolve_device
    from adnlib.run.train import train as train_run
    config = config_from_args(args)
    resolve_device(config.device)  # a bad or absent device: one line before anything else
    result = train_run(config, args.data, args.category, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress, skip_corrupt=args.skip_corrupt,
                       checkpoint_every=args.checkpoint_every, keep_optimizer=args.keep_optimizer, wait=args.wait)
    m = result.metrics
    print(json.dumps({k: m[k] for k in ("variant", "category", "auroc", "auroc_best", "best_epoch", "epochs",
                                        "backbone_weights", "train_seconds")}))
    print(f"results in {args.out}", file=sys.stderr)
    return 0


def evaluate(args) -> int:
    from adnlib.run.evaluation import evaluate_checkpoint
    line = evaluate_checkpoint(args.checkpoint, args.data, args.category, tta=args.tta, device=args.device,
                               expect=expectation(args), out_dir=args.out, overwrite=args.overwrite,
                               verify=not args.unverified, skip_corrupt=args.skip_corrupt, wait=args.wait,
                               progress=not args.no_progress)
    print(json.dumps(line))
    return 0


def score(args) -> int:
    from adnlib.run.evaluation import score as score_files
    scores = score_files(args.checkpoint, args.images, tta=args.tta, device=args.device, expect=expectation(args),
                         verify=not args.unverified)
    for path, value in zip(scores["path"], scores["score"]):
        print(f"{path}\t{value:.6f}")
    return 0


def localize(args) -> int:
    from adnlib.explain.localize import localize as localize_maps
    found = localize_maps(args.checkpoint, args.data, args.category, args.method or ["nll-gradient"],
                          out_dir=args.out, overwrite=args.overwrite, overlays=args.overlays, n_boot=args.n_boot,
                          device=args.device, verify=not args.unverified, wait=args.wait)
    print(json.dumps({m: {k: v[k] for k in ("pixel_auroc", "pro", "n_images", "seconds")}
                      for m, v in found.metrics["methods"].items()}))
    return 0


def course(args) -> int:
    from adnlib.run.course import instructions, train_course
    config = config_from_args(args)
    if args.base_url and not args.base_url.startswith(("https://", "http://")):
        from adnlib.errors import ConfigError
        raise ConfigError(f"--base-url must be an http(s) address, not {args.base_url!r}")
    made = train_course(config, args.data, args.out, categories=args.categories, variants=args.variants,
                        seeds=args.seeds, open_gates=not args.no_open_gates, base_url=args.base_url,
                        progress=not args.no_progress, lock_wait=args.wait)
    print(instructions(made, args.base_url))
    return 0


def grid(args) -> int:
    import pandas as pd

    from adnlib.run.grid import CELL_COLUMNS, run_grid
    started = time.perf_counter()
    runs = run_grid(config_from_args(args), args.data, args.categories, args.variants, args.out, seeds=args.seeds,
                    progress=not args.no_progress, rerun=args.rerun, engine=args.engine, address=args.address,
                    gpus_per_cell=args.gpus_per_cell, cpus_per_cell=args.cpus_per_cell,
                    max_retries=args.max_retries, on_cell=_print_cell, on_failure="report", lock_wait=args.wait)
    seconds = time.perf_counter() - started
    cells = pd.DataFrame(runs.attrs["cells"], columns=CELL_COLUMNS)
    if len(runs):
        _print_comparison(args, runs)
    failed = cells[cells["status"] == "failed"]
    if len(failed):
        print(f"\nfailed cells ({len(failed)} of {len(cells)}):")
        for cell, attempts, error in zip(failed["cell"], failed["attempts"], failed["error"]):
            print(f"{cell} ({attempts} attempt{'s' * (attempts != 1)}): {error}")
    print(f"runs in {args.out}; wall time {seconds:.0f} s (cells trained now; reused ones cost nothing)")
    if len(failed):
        print(f"error: {len(failed)} of {len(cells)} grid cells failed (listed above); run the same command again "
              "to retry them (finished cells are reused)", file=sys.stderr)
        return 1
    return 0


def _print_cell(row: dict, finished: int, total: int) -> None:
    """One line on stderr per finished grid cell (above the progress bar), in the order they finish."""
    from tqdm.auto import tqdm
    if row["status"] == "failed":
        attempts = f" after {row['attempts']} attempt{'s' * (row['attempts'] != 1)}" if row["attempts"] else ""
        text = f"FAILED{attempts}: {row['error']}"
    else:
        where = [f"{row['seconds']:.0f} s"] if row["status"] != "reused" else []
        where += [f"{k} {row[k]}" for k in ("node",) if row[k]]
        gpus = row["cuda_visible_devices"]
        if gpus is not None:
            where.append(f"CUDA_VISIBLE_DEVICES={gpus}" if gpus else "no GPU")
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc'] * 100:.2f} %"
        text = f"AUROC {auroc} ({', '.join([row['status'], *where])})"
    tqdm.write(f"cell {finished}/{total} {row['cell']}: {text}", file=sys.stderr)


def _print_comparison(args, runs) -> None:
    from adnlib.run.grid import auroc_table, compare_variants
    from adnlib.run.stats import MIN_SEEDS_FOR_VERDICT, comparison_footer, format_comparison
    weights = ", ".join(sorted(set(runs["backbone_weights"])))
    seeds, categories = sorted(set(runs["seed"])), sorted(set(runs["category"]))
    if len(seeds) == 1:
        print(f"image AUROC (%), last evaluation, seed {seeds[0]}; weights: {weights}")
        print(auroc_table(runs).to_string())
    summary, comparison = compare_variants(args.out, categories, args.variants, seeds)
    if len(seeds) > 1 or comparison is not None:
        print(f"\nimage AUROC (%), last evaluation, mean ± std over seeds {seeds}; paired difference with "
              f"differnet. Weights: {weights}")
        print(format_comparison(summary, comparison).to_string(index=False))
        print(comparison_footer(comparison))
        if len(seeds) < MIN_SEEDS_FOR_VERDICT:
            print(f"no verdict: {len(seeds)} seed{'s' * (len(seeds) != 1)}; a verdict needs "
                  f"{MIN_SEEDS_FOR_VERDICT} (--seeds 0 1 2)")


def notebooks(args) -> int:
    from adnlib.regression import format_drift
    from adnlib.teach.notebooks import run_notebooks
    runs, report = run_notebooks(args.out, notebook_parameters(args.parameter), args.only, baseline=args.baseline,
                                 tolerances=args.tolerance, tolerances_file=args.tolerances, exact=args.exact,
                                 wait=args.wait)
    failed = [r.name for r in runs if not r.ok]
    print(f"executed notebooks and their artefacts are in {args.out}")
    if report is not None:
        print(f"\ncompared with the baseline {args.baseline}:")
        print(format_drift(report, show_all=args.all, max_rows=args.max_rows))
    if failed:
        print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0 if report is None else report.status


def drift(args) -> int:
    from adnlib.regression import drift as drift_report
    from adnlib.regression import format_drift
    report = drift_report(args.run, args.baseline, tolerances=args.tolerance, tolerances_file=args.tolerances,
                          exact=args.exact, only=args.only)
    print(f"run {args.run} against baseline {args.baseline}" + (" (exact)" if args.exact else ""))
    print(format_drift(report, show_all=args.all, max_rows=args.max_rows))
    return report.status


COMMANDS = {"demo-data": demo_data, "train": train, "evaluate": evaluate, "score": score, "localize": localize,
            "grid": grid, "course": course, "notebooks": notebooks, "drift": drift}
