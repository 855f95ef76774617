"""adnlib: DifferNet and AttentDifferNet (SE, CBAM) for image-level anomaly detection.

Layout (the core never imports the outer layers; `tests/test_layout.py` checks it):

    adnlib.config, adnlib.errors      the Config dataclass with its presets; the error types
    adnlib.model    (core)            attention blocks, AlexNet backbone, FrEIA flow, weights, AttentDifferNet
    adnlib.data     (core)            MVTec-AD-layout datasets, the generated demo data, transforms
    adnlib.run      (core)            train / train_step, evaluate, checkpoints, grids, devices
    adnlib.explain                    Grad-CAM of the anomaly score, attention views, figure browsers
    adnlib.teach                      plots, analyses, toy flows, paper numbers, the headless notebook runner
    adnlib.cli                        the command line, on top of everything

Importing the package stays light (no torch): the names below load on first use, so `adnlib --help` starts fast.
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
    "score_dataset": "adnlib.run.evaluate",
    "score_images": "adnlib.run.evaluate",
    "model_from_checkpoint": "adnlib.run.checkpoint",
    "run_grid": "adnlib.run.grid",
}

__all__ = ["Config", "preset", "AdnlibError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
