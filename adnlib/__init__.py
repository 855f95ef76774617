"""adnlib: DifferNet and AttentDifferNet (SE, CBAM) for image-level anomaly detection.

Importing the package stays light (no torch): the attention blocks load on first use, so `adnlib --help` and the
command line's parser start fast.
"""
__version__ = "0.1.0"

from .config import Config, preset  # dataclasses only
from .errors import AdnlibError

__all__ = ["CBAM", "SEBlock", "Config", "preset", "AdnlibError", "__version__"]

_LAZY = {"CBAM": "attention", "SEBlock": "attention"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
