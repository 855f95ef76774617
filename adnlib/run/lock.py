"""One writer per results folder: an advisory lock on `<folder>/.adnlib.lock`, held while a command writes there.

`adnlib train`, each grid cell (serial and Ray engines), `evaluate --out`, `localize` and `notebooks` hold the lock
of the folder they write. A second writer gets FolderLockedError naming the holder (process id, host, since when),
or, with `wait` seconds, waits that long for the folder first. The lock is the kernel's (flock): it is released
when its holder exits, however it exits (kill -9 included), so a lock left by a killed process is simply free and
the next writer takes it over; nothing stale has to be cleaned up. The file itself stays (removing a lock file
while another process may be opening it would let two writers in) and holds the holder's description, which is
only read to explain a refusal.

flock works between processes of one machine and, on Linux, on NFS (emulated with POSIX locks): the cells of a
Ray grid on a shared file system lock each other out the same way.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from adnlib.errors import AdnlibError
from adnlib.io import open_lock_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: msvcrt's byte-range lock instead
    fcntl = None
    import msvcrt

LOCK_NAME = ".adnlib.lock"
DEFAULT_WAIT_S = 3600  # `--wait` without a number: an hour, then the same refusal as without --wait
POLL_S = 0.2


class FolderLockedError(AdnlibError, BlockingIOError):
    """Another process is writing the folder (the message names it)."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder_text(path: Path) -> str:
    """'pid P on host H since T' from the lock file (written by its holder right after it took the lock)."""
    try:
        info = json.loads(path.read_text() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])} on host {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder took it a moment ago and has not written yet
        return "another process (it has just started)"


def _write_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode())


def _acquire(path: Path, wait: float, command: str) -> int:
    """The lock file's descriptor, locked; FolderLockedError after `wait` seconds of trying."""
    fd = open_lock_file(path)  # never through a link: a planted symlink is refused, its target untouched
    deadline = time.monotonic() + max(0.0, wait)
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            os.close(fd)
            waited = f" (waited {wait:g} s)" if wait > 0 else " (use --wait to wait)"
            raise FolderLockedError(f"{path.parent} is being written by {_holder_text(path)}{waited}")
        time.sleep(POLL_S)
    with contextlib.suppress(OSError):  # the description is a courtesy: a full disk must not stop the holder
        _write_holder(fd, command)
    return fd


_held = threading.local()  # the folders this thread holds: taking one again nests instead of waiting for itself


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, wait: float = 0, command: str = "adnlib") -> Iterator[Path]:
    """Hold the write lock of `folder` (created if missing) for the `with` block -> the folder's Path.

    wait: seconds to wait for another holder to finish (0: refuse at once). Raises FolderLockedError naming the
    holder; OSError (read-only, full disk) where the folder or its lock file cannot be created. Within one thread
    the lock nests (a grid cell holds its folder and the training inside it takes it again); any other thread or
    process is refused while it is held.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    held = _held.__dict__.setdefault("folders", {})
    if key in held:
        held[key] += 1
        try:
            yield folder
        finally:
            held[key] -= 1
        return
    fd = _acquire(folder / LOCK_NAME, wait, command)
    held[key] = 1
    try:
        yield folder
    finally:
        del held[key]
        os.close(fd)  # closing the last descriptor releases the flock

