"""Command line: `adnlib demo-data | train | evaluate | score | localize ...` (also `python -m adnlib`).

Bad input ends with one line `error: ...` on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

from adnlib.config import MAX_SEED  # dataclasses only: the parser stays light
from adnlib.errors import AdnlibError, OutputExistsError
from adnlib.io import one_line
from adnlib.version import __version__

# The parser stays light: no torch, numpy or pandas at import (`adnlib --help` answers at once). The commands import
# what they need.
DEMO_BYTES = 10_000_000  # the demo dataset takes 6.5 MB


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None


def _non_negative(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED} (2**32 - 1), not {value}")
    return value


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _add_wait_option(p) -> None:
    from adnlib.run.lock import DEFAULT_WAIT_S
    p.add_argument("--wait", type=_wait_seconds, nargs="?", const=DEFAULT_WAIT_S, default=0, metavar="SECONDS",
                   help="when another process is writing --out, wait for it up to SECONDS (--wait alone: "
                        f"{DEFAULT_WAIT_S} s) instead of refusing at once")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adnlib", description="DifferNet / AttentDifferNet anomaly detection.")
    parser.add_argument("--version", action="version", version=f"adnlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("demo-data", help="generate the small offline demo dataset")
    p.add_argument("--out", type=Path, default=None,
                   help="folder (default: data/demo in a clone, else the user's data folder)")
    p.add_argument("--force", action="store_true", help="regenerate even if it exists")
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_grid_parser(sub)
    _add_notebooks_parser(sub)
    _add_compare_parser(sub)
    _add_localize_parser(sub)
    p = sub.add_parser("score", help="print the anomaly score of each image")
    _add_checkpoint_option(p)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--variant", choices=("differnet", "se", "cbam"), help="refuse a checkpoint of another variant")
    p.add_argument("--tta", type=_positive)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return parser


def _add_checkpoint_option(p) -> None:
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a run's checkpoint.pt or best.pt, checked against the metrics.json beside it (sha256)")
    p.add_argument("--unverified", action="store_true",
                   help="load a bare checkpoint that no metrics.json records (nothing can check it is the right file)")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one variant on one category, evaluate, save checkpoint and metrics")
    p.add_argument("--data", type=Path, required=True, help="dataset root (MVTec AD layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--variant", choices=("differnet", "se", "cbam"), default="differnet")
    p.add_argument("--preset", default="paper", help="paper (default), demo or smoke")
    p.add_argument("--img-size", type=_positive)
    p.add_argument("--epochs", type=_positive)
    p.add_argument("--eval-every", type=_positive)
    p.add_argument("--tta", type=_positive, help="rotations per test image (paper: 64)")
    p.add_argument("--weights", help="auto | imagenet | none | PATH to AlexNet weights")
    p.add_argument("--seed", type=_seed, help=f"0 to {MAX_SEED} (default 0)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--feature-cache", action="store_true",
                   help="frozen backbones: embed K rotations per image once (an approximation; faster epochs)")
    p.add_argument("--freeze-attention", action="store_true", help="ablation: do not train the attention blocks")
    _add_maths_options(p)
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--checkpoint-every", type=_non_negative, metavar="N",
                   help="save the resumable checkpoint every N epochs (default: every epoch while cheap; "
                        "0: only at evaluations)")
    p.add_argument("--keep-optimizer", action="store_true",
                   help="keep the optimizer state in the finished checkpoint.pt, so that --resume can extend the run "
                        "with more epochs (default: weights only, about a third of the size)")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    _add_wait_option(p)


def _add_maths_options(p) -> None:
    """Options that change the maths (each recorded in metrics.json); the defaults are the official protocol."""
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast for the backbone (CUDA with bf16, or CPU); default float32 as officially")
    p.add_argument("--attention-init", choices=("standard", "open", "reference"),
                   help="SE/CBAM gates: standard init (default, gates near 0.5), open (gates start at 0.95) or "
                        "reference (the CBAM authors' code: needs --variant cbam --cbam-spatial-bn)")
    p.add_argument("--attention-lr", type=_attention_lr, metavar="LR|flow",
                   help="learning rate of the SE/CBAM blocks, or 'flow' for the flow's (2e-4, as officially); "
                        "default: the preset's (paper: the flow's; demo: 2e-3, a recorded deviation)")
    p.add_argument("--cbam-spatial-bn", action="store_true",
                   help="CBAM: the BatchNorm after the spatial convolution of the authors' code (not in the paper)")
    p.add_argument("--test-rotations", choices=("random", "fixed"),
                   help="random (official: fresh angles at every evaluation) or fixed (evenly spaced)")


def _add_localize_parser(sub) -> None:
    p = sub.add_parser("localize", help="anomaly maps vs ground-truth masks: pixel AUROC and PRO per method")
    _add_checkpoint_option(p)
    p.add_argument("--data", type=Path, required=True, help="dataset root with <category>/ground_truth masks")
    p.add_argument("--category", required=True)
    p.add_argument("--method", action="extend", nargs="+", choices=("nll-gradient", "gradcam", "cbam-spatial"),
                   help="one or more (default nll-gradient: DifferNet's gradient map); cbam-spatial only for CBAM "
                        "checkpoints")
    p.add_argument("--overlays", type=_non_negative, default=4, help="overlay PNGs per method (default 4)")
    p.add_argument("--n-boot", type=_positive, default=1000, help="bootstrap resamples comparing methods")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--out", type=Path, required=True, help="localization.json and overlays/<method>/")
    p.add_argument("--overwrite", action="store_true", help="replace a localization already in --out")
    _add_wait_option(p)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a category's test split with a checkpoint; print AUROC as JSON")
    _add_checkpoint_option(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--variant", choices=("differnet", "se", "cbam"),
                   help="refuse a checkpoint of another variant (guards against mixed-up run folders)")
    p.add_argument("--preset", help="refuse a checkpoint whose model differs from this preset's (size, flow...)")
    p.add_argument("--tta", type=_positive)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--skip-corrupt", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_wait_option(p)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _attention_lr(text: str) -> float | str:
    """A positive learning rate, or 'flow' (the attention blocks learn at the flow's rate: faithful)."""
    return "flow" if text == "flow" else _positive_float(text)


def _add_grid_parser(sub) -> None:
    p = sub.add_parser("grid", help="train categories x variants and print an AUROC table")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--categories", nargs="+", help="default: every category under --data")
    p.add_argument("--variants", nargs="+", default=["differnet", "se", "cbam"],
                   choices=("differnet", "se", "cbam"))
    p.add_argument("--preset", default="paper")
    p.add_argument("--epochs", type=_positive)
    p.add_argument("--weights", help="auto | imagenet | none | PATH")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--seeds", nargs="+", type=_seed, metavar="SEED",
                   help="train every cell with each seed (paired across variants); default: 0")
    _add_maths_options(p)
    p.add_argument("--rerun", action="store_true",
                   help="retrain the cells of --out saved with another config (default: refuse them)")
    p.add_argument("--engine", choices=("serial", "ray"), default="serial",
                   help="serial: one cell after another here (default); ray: a Ray task per cell (docs/cluster.md)")
    p.add_argument("--address", help="Ray cluster for --engine ray: none starts a local Ray on this machine; auto "
                                     "(the cluster this machine belongs to), HOST:PORT or ray://HOST:10001")
    p.add_argument("--gpus-per-cell", type=_non_negative_float, default=0, metavar="N",
                   help="GPUs per cell with --engine ray (0.5: two cells share a GPU); default 0")
    p.add_argument("--cpus-per-cell", type=_positive_float, default=1, metavar="N",
                   help="CPUs (and torch threads) per cell with --engine ray; default 1")
    p.add_argument("--max-retries", type=_non_negative, default=2, metavar="N",
                   help="run a failed cell again up to N times (it resumes its checkpoint); default 2")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    _add_wait_option(p)


def _add_notebooks_parser(sub) -> None:
    p = sub.add_parser("notebooks", help="run the teaching notebooks headless (papermill) into --out")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", nargs="+", help="notebook names (default: all, in order)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a notebook parameter; VALUE is JSON (3, 0.5, true, null, '[\"se\"]', "
                        "'\"text\"'); NAME:str takes VALUE as a plain string (-p category:str bottle)")
    p.add_argument("--baseline", type=Path, help="a folder of *.summary.json (an earlier --out): compare this run "
                                                  "with it; exit 1 when a metric moved past its tolerance")
    _add_wait_option(p)
    _add_comparison_options(p)


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("drift", help="what moved between the notebook summaries of a run and of a baseline (exit 1: "
                                     "a metric drifted)")
    p.add_argument("run", type=Path, help="the run's --out folder (its *.summary.json files)")
    p.add_argument("baseline", type=Path, help="the baseline's folder of *.summary.json files")
    p.add_argument("--only", nargs="+", help="notebook names (default: every notebook of both)")
    _add_comparison_options(p)


def _add_comparison_options(p) -> None:
    p.add_argument("--tolerance", action="append", default=[], metavar="PATTERN=VALUE",
                   help="tolerance of the metrics matching PATTERN (a glob): 0.02 absolute, 5%% relative, "
                        "abs:0.01+rel:0.05, exact; repeatable, the last one given wins (docs/regression.md)")
    p.add_argument("--tolerances", type=Path, metavar="FILE.json", help="a JSON object {PATTERN: VALUE}")
    p.add_argument("--exact", action="store_true", help="fail on any difference of a metric (timings excepted)")
    p.add_argument("--all", action="store_true", help="list every metric and timing, unchanged ones included")
    p.add_argument("--max-rows", type=_non_negative, default=40, help="rows per table (0: all; default 40)")


def _config_from_args(args):
    from adnlib.config import preset
    overrides = {name: value for name, value in {
        "variant": args.variant, "img_size": args.img_size, "epochs": args.epochs, "eval_every": args.eval_every,
        "n_test_rotations": args.tta, "weights": args.weights, "seed": args.seed, "device": args.device,
    }.items() if value is not None}
    overrides.update(_maths_overrides(args))
    if args.feature_cache:
        overrides["feature_cache"] = True
    if args.freeze_attention:
        overrides["train_attention"] = False
    return preset(args.preset, **overrides)


def _maths_overrides(args) -> dict:
    overrides = {"attention_init": args.attention_init, "test_rotations": args.test_rotations,
                 "attention_lr": args.attention_lr}
    flags = {"amp": args.amp, "cbam_spatial_bn": args.cbam_spatial_bn}
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if chosen.get("attention_lr") == "flow":
        chosen["attention_lr"] = None  # the faithful rate, also under the demo preset
    return {**chosen, **{k: True for k, v in flags.items() if v}}


def _out_folder(path: Path | None) -> None:
    """An --out naming an existing file: one error line now, not a traceback when the first result is written."""
    if path is not None and path.exists() and not path.is_dir():
        raise OutputExistsError(f"--out {path} is a file, not a folder; choose another --out")


def _inputs_exist(args) -> None:
    """The dataset's category folder and the --checkpoint exist: checked before an --out is created for them."""
    from adnlib.data.datasets import category_dir
    from adnlib.errors import CheckpointError
    category_dir(args.data, args.category)
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None and not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")


def _train(args) -> int:
    from adnlib.run.device import resolve_device
    from adnlib.run.lock import folder_lock
    from adnlib.run.outputs import check_output_folder
    from adnlib.run.train import train
    config = _config_from_args(args)
    resolve_device(config.device)  # a bad or absent device: one error line before any data is read
    _inputs_exist(args)
    check_output_folder(args.out)  # writable now (train checks the room for its checkpoints before reading data)
    with folder_lock(args.out, wait=args.wait, command="adnlib train"):
        result = train(config, args.data, args.category, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress, skip_corrupt=args.skip_corrupt,
                       checkpoint_every=args.checkpoint_every, keep_optimizer=args.keep_optimizer)
    m = result.metrics
    print(json.dumps({k: m[k] for k in ("variant", "category", "auroc", "auroc_best", "best_epoch", "epochs",
                                        "backbone_weights", "train_seconds")}))
    print(f"results in {args.out}", file=sys.stderr)
    return 0


def _expectation(args):
    """What the user said the checkpoint must be (--preset, --variant), for model_from_checkpoint(expect=...)."""
    from adnlib.config import preset
    variant = getattr(args, "variant", None)
    if getattr(args, "preset", None):
        return preset(args.preset, **({"variant": variant} if variant else {}))
    return {"variant": variant} if variant else None


def _evaluate(args) -> int:
    from adnlib.run.evaluation import check_evaluation_output, evaluate_checkpoint
    if args.out is not None:
        check_evaluation_output(args.out, args.overwrite)  # before the inputs are looked at
    _inputs_exist(args)
    line = evaluate_checkpoint(args.checkpoint, args.data, args.category, tta=args.tta, device=args.device,
                               expect=_expectation(args), out_dir=args.out, overwrite=args.overwrite,
                               verify=not args.unverified, skip_corrupt=args.skip_corrupt, wait=args.wait,
                               progress=not args.no_progress)
    print(json.dumps(line))
    return 0


def _localize(args) -> int:
    from adnlib.errors import CheckpointError
    from adnlib.explain.localize import check_localization_output, localize
    from adnlib.run.checkpoint import model_from_checkpoint
    from adnlib.run.device import resolve_device
    from adnlib.run.lock import folder_lock
    from adnlib.run.outputs import check_output_folder
    device = resolve_device(args.device)
    check_localization_output(args.out, args.overwrite)  # before any work
    model = model_from_checkpoint(args.checkpoint, device, verify=not args.unverified)
    _inputs_exist(args)
    check_output_folder(args.out)
    trained_on = model.checkpoint_info.get("category")
    if trained_on and trained_on != args.category:
        raise CheckpointError(f"{args.checkpoint} was trained on category {trained_on!r}, not {args.category!r}")
    with folder_lock(args.out, wait=args.wait, command="adnlib localize"):
        found = localize(model, args.data, args.category, args.method or ["nll-gradient"], out_dir=args.out,
                         overwrite=args.overwrite, overlays=args.overlays, n_boot=args.n_boot, source=args.checkpoint)
    print(json.dumps({m: {k: v[k] for k in ("pixel_auroc", "pro", "n_images", "seconds")}
                      for m, v in found.metrics["methods"].items()}))
    return 0


def _score(args) -> int:
    from adnlib.errors import DatasetError
    from adnlib.run.checkpoint import model_from_checkpoint
    from adnlib.run.device import resolve_device
    from adnlib.run.evaluate import score_images
    from adnlib.run.memory import check_memory
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise DatasetError(f"image not found: {', '.join(missing)}")
    device = resolve_device(args.device)
    model = model_from_checkpoint(args.checkpoint, device, expect=_expectation(args), verify=not args.unverified)
    config = model.config
    check_memory(config, copies=min(config.test_batch_size, len(args.images)) * (args.tta or config.n_test_rotations),
                 images=0, training=False, device=device, what="scoring these images")
    scores = score_images(model, args.images, n_rotations=args.tta, device=device, seed=model.config.seed,
                          evaluation=model.checkpoint_info.get("epoch") or 0,
                          progress=False)
    for path, score in zip(scores["path"], scores["score"]):
        print(f"{path}\t{score:.6f}")
    return 0


def _grid(args) -> int:
    import pandas as pd

    from adnlib.config import preset
    from adnlib.data.datasets import category_dir, list_categories
    from adnlib.errors import DatasetError
    from adnlib.run.device import check_precision, resolve_device
    from adnlib.run.grid import CELL_COLUMNS, run_grid
    _out_folder(args.out)
    if args.engine == "serial" and (args.address or args.gpus_per_cell or args.cpus_per_cell != 1):
        raise AdnlibError("--address, --gpus-per-cell and --cpus-per-cell are options of --engine ray")
    if args.engine == "ray":
        from adnlib.run.cluster import require_ray
        require_ray()  # before anything: say what to install
    categories = args.categories or list_categories(args.data)
    if not categories:
        raise DatasetError(f"no categories found under {args.data}")
    for category in categories:
        category_dir(args.data, category)  # fail before training anything
    overrides = {k: v for k, v in {"epochs": args.epochs, "weights": args.weights, "device": args.device}.items()
                 if v is not None}
    base = preset(args.preset, **overrides, **_maths_overrides(args))
    if args.engine == "serial":  # on Ray the workers' devices count, not this machine's
        check_precision(base.amp, resolve_device(base.device))
    started = time.perf_counter()
    runs = run_grid(base, args.data, categories, args.variants, args.out, seeds=args.seeds,
                    progress=not args.no_progress, rerun=args.rerun, engine=args.engine, address=args.address,
                    gpus_per_cell=args.gpus_per_cell, cpus_per_cell=args.cpus_per_cell,
                    max_retries=args.max_retries, on_cell=_print_cell, on_failure="report")
    seconds = time.perf_counter() - started
    cells = pd.DataFrame(runs.attrs["cells"], columns=CELL_COLUMNS)
    if len(runs):
        _print_grid_report(args, categories, runs)
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


def _print_grid_report(args, categories: list[str], runs) -> None:
    from adnlib.run.grid import auroc_table, grid_report
    from adnlib.run.stats import MIN_SEEDS_FOR_VERDICT, comparison_footer, format_comparison
    weights = ", ".join(sorted(set(runs["backbone_weights"])))
    seeds = sorted(set(runs["seed"]))
    if len(seeds) == 1:
        print(f"image AUROC (%), last evaluation, seed {seeds[0]}; weights: {weights}")
        print(auroc_table(runs).to_string())
    summary, comparison = grid_report(args.out, categories, args.variants, seeds)
    if len(seeds) > 1 or comparison is not None:
        print(f"\nimage AUROC (%), last evaluation, mean ± std over seeds {seeds}; paired difference with "
              f"differnet. Weights: {weights}")
        print(format_comparison(summary, comparison).to_string(index=False))
        print(comparison_footer(comparison))
        if len(seeds) < MIN_SEEDS_FOR_VERDICT:
            print(f"no verdict: {len(seeds)} seed{'s' * (len(seeds) != 1)}; a verdict needs "
                  f"{MIN_SEEDS_FOR_VERDICT} (--seeds 0 1 2)")


def _notebooks(args) -> int:
    from adnlib.run.lock import folder_lock
    from adnlib.run.outputs import check_output_folder
    from adnlib.teach.notebooks import NOTEBOOKS, CellLimits, check_parameters, run_all
    names = tuple(args.only) if args.only else NOTEBOOKS
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise AdnlibError(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    params = _notebook_parameters(args.parameter)
    check_parameters(params, names)  # names and preset, and the environment's cell limits: before any run
    CellLimits.for_run(params)
    baseline = _baseline(args, names) if args.baseline else None  # a bad baseline stops us before any run
    check_output_folder(args.out)
    with folder_lock(args.out, wait=args.wait, command="adnlib notebooks"):
        runs = run_all(args.out, params, names)
    failed = [r.name for r in runs if not r.ok]
    print(f"executed notebooks and their artefacts are in {args.out}")
    status = 0
    if baseline is not None:
        from adnlib.regression import load_summaries
        print(f"\ncompared with the baseline {args.baseline}:")
        status = _report(args, load_summaries(args.out), baseline, names)
    if failed:
        print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return status


def _baseline(args, names) -> dict:
    """The baseline's summaries, checked before anything runs: readable, this schema, every notebook present."""
    from adnlib.regression import load_summaries, tolerance_rules
    tolerance_rules(args.tolerance, args.tolerances)  # a malformed tolerance: the error now, not after the run
    summaries = load_summaries(args.baseline)
    absent = [n for n in names if n not in summaries]
    if absent:
        raise AdnlibError(f"--baseline {args.baseline} has no summary of {', '.join(absent)} (it has "
                          f"{', '.join(sorted(summaries))}); run it with the same --only")
    return summaries


def _report(args, run: dict, baseline: dict, names=None) -> int:
    """Compare, print the report, return 0 (nothing past its tolerance) or 1."""
    from adnlib.regression import compare_summaries, format_drift, tolerance_rules
    rules = tolerance_rules(args.tolerance, args.tolerances)
    result = compare_summaries(run, baseline, rules, exact=args.exact, only=names)
    print(format_drift(result, show_all=args.all, max_rows=args.max_rows))
    return result.status


def _drift(args) -> int:
    from adnlib.regression import load_summaries
    run, baseline = load_summaries(args.run), load_summaries(args.baseline)
    print(f"run {args.run} against baseline {args.baseline}" + (" (exact)" if args.exact else ""))
    return _report(args, run, baseline, args.only)


def _notebook_parameters(pairs: list[list[str]]) -> dict:
    """-p NAME VALUE (VALUE parsed as JSON) and -p NAME:str VALUE (VALUE as it is) -> {NAME: value}."""
    params = {}
    for name, value in pairs:
        base, sep, kind = name.partition(":")
        if sep and kind != "str":
            raise AdnlibError(f"-p {name}: unknown type {kind!r}; write -p {base}:str VALUE for a string, or "
                              f"-p {base} VALUE for a JSON value")
        if not base:
            raise AdnlibError(f"-p {name!r}: the parameter name is empty")
        if kind == "str":
            params[base] = value
            continue
        try:
            params[base] = json.loads(value)
        except json.JSONDecodeError:
            raise AdnlibError(f"-p {base}: {value!r} is not JSON; for a string write -p {base}:str {value} "
                              f"(or quote it as JSON: '\"{value}\"')") from None
    return params


def _demo_data(args) -> int:
    from adnlib.data.demo import _MARKER, DEFAULT_DEMO_ROOT, make_demo_dataset
    from adnlib.run.outputs import check_output_folder
    root = args.out or DEFAULT_DEMO_ROOT
    if args.force or not (root / _MARKER).exists():  # an existing dataset is kept: nothing to write
        check_output_folder(root, DEMO_BYTES, largest="the demo dataset")
    root = make_demo_dataset(root, force=args.force)
    print(root)
    return 0


def _short_warning(message, category, filename, lineno, line=None) -> str:
    """warnings.formatwarning while a command runs: `warning: <message>` on one line."""
    return f"warning: {one_line(str(message))}\n"


@contextlib.contextmanager
def _brief_warnings():
    """Warnings shown while a command runs read `warning: ...`; on exit the process's warnings.formatwarning,
    showwarning and filters are as they were. Only the formatting changes, so a program that records or shows
    warnings its own way (a custom showwarning, pytest.warns) still gets them."""
    saved = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.formatwarning = _short_warning
        try:
            yield
        finally:
            warnings.formatwarning = saved


def _write_hint(args, exc: BaseException) -> str:
    """What to do after a failed write (full disk, read-only folder): the results already written are intact."""
    from adnlib.errors import OutputWriteError
    if not isinstance(exc, OutputWriteError):
        return ""
    if args.command == "train" and (args.out / "checkpoint.pt").exists():
        return "; make room, then run the same command with --resume (it continues from the last checkpoint)"
    if args.command == "grid":
        return "; make room, then run the same command again (finished cells are reused, interrupted ones resume)"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 1: a notebook or grid cell failed, 2: bad input, 130: interrupted).

    Warnings print as one `warning: ...` line while the command runs; the process's warning machinery
    (warnings.formatwarning, showwarning, filters) is restored on return, so an embedding program keeps its own.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad arguments (already reported in one line), --help, --version
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command = {"demo-data": _demo_data, "train": _train, "evaluate": _evaluate, "score": _score,
               "grid": _grid, "notebooks": _notebooks,
               "drift": _drift, "localize": _localize}[args.command]
    with _brief_warnings(), _terminate_as_interrupt():
        try:
            return command(args)
        except MemoryError as exc:  # an allocation no estimate foresaw (adnlib.run.memory checks the known ones)
            text = one_line(exc) if isinstance(exc, AdnlibError) else \
                "out of memory; lower the image size (--img-size), the rotations (--tta) or the batch size"
            print(f"error: {text}", file=sys.stderr)
            return 2
        except AdnlibError as exc:
            print(f"error: {one_line(exc)}{_write_hint(args, exc)}", file=sys.stderr)
            return 2
        except OSError as exc:  # a write that no check could foresee (the disk filled up meanwhile)
            from adnlib.run.outputs import write_error
            failure = write_error(exc, exc.filename or getattr(args, "out", None) or ".")
            if failure is None:
                raise
            print(f"error: {one_line(failure)}{_write_hint(args, failure)}", file=sys.stderr)
            return 2
        except Terminated:
            print(f"error: terminated (SIGTERM){_resume_hint(args)}", file=sys.stderr)
            return 143
        except KeyboardInterrupt as exc:
            hint = ""
            if args.command == "notebooks" and str(exc):  # NotebookInterrupted: the notebook, cell, partial file
                hint = f": {exc}"
            else:
                hint = _resume_hint(args)
            print(f"error: interrupted{hint}", file=sys.stderr)
            return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM while a command runs: stopped like Ctrl-C (files written so far intact, the lock released)."""


def _resume_hint(args) -> str:
    if args.command == "train" and (args.out / "checkpoint.pt").exists():
        return "; continue from the last checkpoint by running the same command with --resume"
    if args.command == "grid":
        return "; run the same command again: finished cells are reused, interrupted ones resume"
    return ""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a command runs in the main thread, SIGTERM raises Terminated (a KeyboardInterrupt) instead of killing
    the process without a word; the previous handler is put back afterwards."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
