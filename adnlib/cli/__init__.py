"""Command line: `adnlib demo-data | train | evaluate | score | localize | grid | course | notebooks | drift` (also
`python -m adnlib`). The parser is `adnlib.cli.parser`, the commands `adnlib.cli.commands` (each a few lines over the
public API); this module runs one and turns whatever goes wrong into one line.

Bad input ends with one line `error: ...` on stderr and exit status 2, never a traceback; Ctrl-C and SIGTERM with
one line saying how to continue (exit 130 and 143).
"""
from __future__ import annotations

import contextlib
import sys
import warnings

from adnlib.cli.parser import build_parser
from adnlib.errors import AdnlibError
from adnlib.io import one_line

__all__ = ["main", "build_parser"]


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
    if args.command in ("grid", "course"):
        return "; make room, then run the same command again (finished cells are reused, interrupted ones resume)"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 1: a notebook or grid cell failed or a metric drifted, 2: bad
    input, 130: interrupted, 143: terminated).

    Warnings print as one `warning: ...` line while the command runs; the process's warning machinery
    (warnings.formatwarning, showwarning, filters) is restored on return, so an embedding program keeps its own.
    """
    from adnlib.cli.commands import COMMANDS
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad arguments (already reported in one line), --help, --version
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    with _brief_warnings(), _terminate_as_interrupt():
        try:
            return COMMANDS[args.command](args)
        except MemoryError as exc:  # an allocation no estimate foresaw (adnlib.run.memory checks the known ones)
            text = one_line(exc) if isinstance(exc, AdnlibError) else \
                "out of memory; lower the image size (--img-size), the rotations (--tta) or the batch size"
            print(f"error: {text}", file=sys.stderr)
            return 2
        except AdnlibError as exc:
            print(f"error: {one_line(exc)}{_write_hint(args, exc)}", file=sys.stderr)
            return 2
        except OSError as exc:  # a write that no check could foresee (the disk filled up meanwhile)
            from adnlib.io import write_error
            failure = write_error(exc, exc.filename or getattr(args, "out", None) or ".")
            if failure is None:
                raise
            print(f"error: {one_line(failure)}{_write_hint(args, failure)}", file=sys.stderr)
            return 2
        except Terminated:
            print(f"error: terminated (SIGTERM){_resume_hint(args)}", file=sys.stderr)
            return 143
        except KeyboardInterrupt as exc:
            hint = f": {exc}" if args.command == "notebooks" and str(exc) else _resume_hint(args)
            print(f"error: interrupted{hint}", file=sys.stderr)
            return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM while a command runs: stopped like Ctrl-C (files written so far intact, the lock released)."""


def _resume_hint(args) -> str:
    if args.command == "train" and (args.out / "checkpoint.pt").exists():
        return "; continue from the last checkpoint by running the same command with --resume"
    if args.command in ("grid", "course"):
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
