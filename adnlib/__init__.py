"""adnlib: DifferNet and AttentDifferNet (SE, CBAM) for image-level anomaly detection.

The common things are one call each (docs/api.md shows them, and the tests run its examples):

    config = adnlib.preset("demo", variant="se")                                   # the protocol, one dataclass
    result = adnlib.train(config, "data/demo", "disc", "runs/se-disc")             # train and evaluate
    adnlib.evaluate_checkpoint("runs/se-disc/checkpoint.pt", "data/demo", "disc")   # AUROC of a checkpoint
    adnlib.score("runs/se-disc/checkpoint.pt", ["image.png"])                       # scores of image files
    adnlib.localize("runs/se-disc/checkpoint.pt", "data/demo", "disc")              # pixel maps, PRO
    adnlib.run_grid(config, "data/demo", None, ["differnet", "se"], "runs/grid", seeds=[0, 1, 2])
    adnlib.compare_variants("runs/grid")                                           # the verdict (ORH)
    adnlib.fetch_checkpoints("https://.../manifest.json")                          # published checkpoints
    adnlib.train_course(adnlib.preset("paper"), "data/mvtec", "runs/course")       # a teacher's course, published

Layers, each importing only those below it (tests/test_layout.py checks it): the floor (config, errors, io,
locations, progress, seeds, version), then model, then data, then run, then explain, regression and teach, then
the command line (cli). Importing the package stays light (no torch): the names below load on first use.
"""
from adnlib.config import Config, preset  # dataclasses only
from adnlib.errors import AdnlibError
from adnlib.version import __version__

# public name -> module that defines it (imported on first access)
_LAZY = {
    "AttentDifferNet": "adnlib.model.network",
    "SEBlock": "adnlib.model.attention",
    "CBAM": "adnlib.model.attention",
    "AnomalyDataset": "adnlib.data.datasets",
    "make_demo_dataset": "adnlib.data.demo",
    "train": "adnlib.run.train",
    "train_step": "adnlib.run.train",
    "TrainResult": "adnlib.run.train",
    "evaluate_checkpoint": "adnlib.run.evaluation",
    "score": "adnlib.run.evaluation",
    "score_dataset": "adnlib.run.evaluate",
    "score_images": "adnlib.run.evaluate",
    "model_from_checkpoint": "adnlib.run.checkpoint",
    "run_grid": "adnlib.run.grid",
    "compare_variants": "adnlib.run.grid",
    "collect_grid": "adnlib.run.grid",
    "paired_comparison": "adnlib.run.stats",
    "seed_summary": "adnlib.run.stats",
    "fetch_checkpoints": "adnlib.run.fetch",
    "fetch_runs": "adnlib.run.fetch",
    "write_manifest": "adnlib.run.fetch",
    "train_course": "adnlib.run.course",
    "localize": "adnlib.explain.localize",
    "Localization": "adnlib.explain.localize",
    "run_notebooks": "adnlib.teach.notebooks",
}
_MODULES = ("regression",)  # submodules reached as attributes (adnlib.regression.drift)

__all__ = ["Config", "preset", "AdnlibError", "__version__", *_LAZY, *_MODULES]


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))
