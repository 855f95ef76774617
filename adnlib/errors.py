"""Exception types the library raises for bad input; the CLI turns them into one `error: ...` line and exit 2."""


class AdnlibError(Exception):
    """Base class: a problem with what the user asked for, not a bug."""


class DatasetError(AdnlibError, ValueError):
    """The dataset folder is missing, incomplete or holds unreadable files."""


class CheckpointError(AdnlibError, ValueError):
    """A checkpoint cannot be loaded, or does not match the requested model."""


class ConfigError(AdnlibError, ValueError):
    """An unknown preset, field or value in the configuration."""


class WeightsError(AdnlibError, RuntimeError):
    """Backbone weights were requested but cannot be had (offline, bad file)."""


class OutputExistsError(AdnlibError, FileExistsError):
    """The output folder already holds a previous run's results."""


class TrainingDivergedError(AdnlibError, FloatingPointError):
    """The loss became NaN or infinite."""


class OutputWriteError(AdnlibError, OSError):
    """An output folder cannot be written: read-only, full, not permitted (the message names the folder or file)."""
