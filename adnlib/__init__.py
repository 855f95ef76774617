"""adnlib: DifferNet and AttentDifferNet (SE, CBAM) for image-level anomaly detection."""
__version__ = "0.1.0"

from .attention import CBAM, SEBlock  # noqa: E402
from .config import Config, preset  # noqa: E402
from .errors import AdnlibError  # noqa: E402

__all__ = ["CBAM", "SEBlock", "Config", "preset", "AdnlibError", "__version__"]
