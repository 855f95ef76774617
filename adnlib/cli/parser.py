"""The command line's parser: every option, its value types, and the one translation from options to a Config.

It stays light: no torch, numpy or pandas at import (`adnlib --help` answers at once).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from adnlib.config import MAX_SEED, VARIANTS  # dataclasses only
from adnlib.errors import AdnlibError
from adnlib.version import __version__


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
    _add_course_parser(sub)
    _add_notebooks_parser(sub)
    _add_drift_parser(sub)
    _add_localize_parser(sub)
    p = sub.add_parser("score", help="print the anomaly score of each image")
    _add_checkpoint_option(p)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--variant", choices=VARIANTS, help="refuse a checkpoint of another variant")
    p.add_argument("--tta", type=_positive)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    return parser


def _add_checkpoint_option(p) -> None:
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a run's checkpoint.pt or best.pt, checked against the metrics.json beside it (sha256)")
    p.add_argument("--unverified", action="store_true",
                   help="load a bare checkpoint that no metrics.json records (nothing can check it is the right file)")


def _add_config_options(p, *, one_run: bool) -> None:
    """The options that make a Config (`config_from_args`), the same for `train` and `grid`; one_run: also
    --variant and --seed (a grid has --variants and --seeds)."""
    p.add_argument("--preset", default="paper", help="paper (default), demo or smoke")
    if one_run:
        p.add_argument("--variant", choices=VARIANTS, default="differnet")
        p.add_argument("--seed", type=_seed, help=f"0 to {MAX_SEED} (default 0)")
    p.add_argument("--img-size", type=_positive)
    p.add_argument("--epochs", type=_positive)
    p.add_argument("--eval-every", type=_positive)
    p.add_argument("--tta", type=_positive, help="rotations per test image (paper: 64)")
    p.add_argument("--weights", help="auto | imagenet | none | PATH to AlexNet weights")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--feature-cache", action="store_true",
                   help="frozen backbones: embed K rotations per image once (an approximation; faster epochs)")
    p.add_argument("--freeze-attention", action="store_true", help="ablation: do not train the attention blocks")
    _add_maths_options(p)


def config_from_args(args):
    """The Config that a `train` or `grid` command line asks for: the preset with every option given applied (an
    option left out keeps the preset's value; --attention-lr flow: the flow's rate, the faithful one)."""
    from adnlib.config import preset
    overrides = {name: getattr(args, attribute, None) for name, attribute in (
        ("variant", "variant"), ("seed", "seed"), ("img_size", "img_size"), ("epochs", "epochs"),
        ("eval_every", "eval_every"), ("n_test_rotations", "tta"), ("weights", "weights"), ("device", "device"),
        ("attention_init", "attention_init"), ("test_rotations", "test_rotations"),
        ("attention_lr", "attention_lr"))}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("attention_lr") == "flow":
        overrides["attention_lr"] = None  # the faithful rate, also under the demo preset
    flags = {"amp": args.amp, "cbam_spatial_bn": args.cbam_spatial_bn, "feature_cache": args.feature_cache}
    overrides.update({k: True for k, v in flags.items() if v})
    if args.freeze_attention:
        overrides["train_attention"] = False
    return preset(args.preset, **overrides)


def expectation(args):
    """What the user said the checkpoint must be (--preset, --variant), for model_from_checkpoint(expect=...)."""
    from adnlib.config import preset
    variant = getattr(args, "variant", None)
    if getattr(args, "preset", None):
        return preset(args.preset, **({"variant": variant} if variant else {}))
    return {"variant": variant} if variant else None


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one variant on one category, evaluate, save checkpoint and metrics")
    p.add_argument("--data", type=Path, required=True, help="dataset root (MVTec AD layout)")
    p.add_argument("--category", required=True)
    _add_config_options(p, one_run=True)
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
    p = sub.add_parser("grid", help="train categories x variants (x seeds) and compare them: the AUROC table, and "
                                    "with >= 3 seeds the verdict")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--categories", nargs="+", help="default: every category under --data")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=_seed, metavar="SEED",
                   help="train every cell with each seed (paired across variants); default: 0")
    _add_config_options(p, one_run=False)
    p.add_argument("--rerun", action="store_true",
                   help="retrain the cells of --out saved with another config, backbone or data (default: refuse)")
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


def _add_course_parser(sub) -> None:
    p = sub.add_parser("course", help="train the course's models once (every variant x 3 seeds, and SE with open "
                                      "gates) and publish them for notebooks 03-06 (docs/teaching.md)")
    p.add_argument("--data", type=Path, required=True, help="the dataset students will use (MVTec AD layout)")
    p.add_argument("--categories", nargs="+", help="default: every category under --data")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2], metavar="SEED",
                   help="default: 0 1 2 (notebook 06's verdict needs three)")
    _add_config_options(p, one_run=False)
    p.add_argument("--no-open-gates", action="store_true",
                   help="leave out notebook 03's cold-start runs (SE with its gates starting open)")
    p.add_argument("--base-url", help="where release/ will be downloaded from, e.g. "
                                      "https://github.com/ORG/REPO/releases/download/course-v1 (default: URLs "
                                      "relative to the manifest)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True, help="the course folder (runs, and release/ to publish)")
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


def _add_drift_parser(sub) -> None:
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


def notebook_parameters(pairs: list[list[str]]) -> dict:
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


