"""The floor every layer stands on: how adnlib writes, hashes and refuses, in one place.

* Writes are atomic and durable (`atomic_write`, `write_json`, `write_csv`, `write_text`): a temporary file with an
  unpredictable name beside the target, synced, renamed onto it; a kill leaves the previous file. No write follows
  a symbolic link: temporary and probe files are created with O_CREAT | O_EXCL | O_NOFOLLOW (a link planted at
  their name makes the creation fail instead of writing through it), the rename replaces a link at the target
  instead of writing into what it points at, and lock files are opened with O_NOFOLLOW and must be regular files.
* `write_error` turns a failed write (full disk, read-only folder, quota) into one OutputWriteError naming it.
* Hashing: `file_sha256`, `tensors_sha256`.
* `offline()`: ADNLIB_OFFLINE, read here only.

Nothing here imports another adnlib module but `adnlib.errors`.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import http.client
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adnlib.errors import AdnlibError, OutputExistsError, OutputWriteError
from adnlib.progress import progress_bar
from adnlib.version import __version__

CHUNK = 1 << 22  # 4 MB reads: a 700 MB paper checkpoint hashes in about a second
DEFAULT_TIMEOUT_S = 60.0  # per connection attempt and per read: a stalled transfer fails instead of hanging
DEFAULT_DEADLINE_S = 3600.0  # the whole transfer (the paper's 0.70 GB checkpoint at 200 kB/s): a trickle ends too
_DOWNLOAD_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # urllib's errors (HTTPError, URLError) are OSErrors
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# What a write failure on an output folder looks like; any other OSError stays itself (a bug, a vanished disk).
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}
MARGIN_BYTES = 1 << 20  # room kept beyond the largest file: the small files written beside it


class DownloadError(AdnlibError, OSError):
    """A download failed (network, HTTP, timeout, deadline, hash): the message names the URL and the reason."""


class UnsafePathError(AdnlibError, OSError):
    """A name adnlib writes (a lock or probe file) is held by something that is not a plain file: a symbolic link,
    a folder, a device. Nothing is written through it."""


def offline() -> bool:
    """True when ADNLIB_OFFLINE is set (to anything but 0): nothing is downloaded or probed on the network."""
    return os.environ.get("ADNLIB_OFFLINE", "") not in ("", "0")


# --- hashing -----------------------------------------------------------------------------------------------------
def file_sha256(path: str | Path, chunk: int = CHUNK) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(named: Iterable[tuple[str, object]]) -> str:
    """The sha256 (hex) of named tensors, in the order given: each name, dtype, shape and the bytes of its values
    (on the CPU, contiguous). Two state dicts with equal keys and equal values hash alike on any device."""
    import torch  # here: hashing files must not cost torch's import
    digest = hashlib.sha256()
    for name, tensor in named:
        values = tensor.detach().to("cpu").contiguous().view(-1)
        digest.update(f"{name}|{values.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# What torch.load raises when a file is not a loadable checkpoint: pickle's errors on foreign bytes (KeyError,
# IndexError, UnpicklingError, also weights_only's refusal), EOFError (empty), RuntimeError (the zip reader:
# truncated, corrupt), ValueError / UnicodeDecodeError. Anything else (MemoryError, KeyboardInterrupt, a bug)
# propagates as itself instead of being reported as "not a checkpoint".
NOT_A_CHECKPOINT = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, IndexError)


def why_unloadable(exc: Exception) -> str:
    """torch.load's many failure texts -> one short reason (never the advice to disable weights_only)."""
    text = str(exc)
    unsafe = re.search(r"unsupported (?:global:? )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
    if unsafe:
        return (f"it holds pickled Python code ({unsafe.group(1)}), which safe loading (weights_only) refuses; "
                "adnlib checkpoints hold only tensors and plain values, so this file was not written by adnlib")
    if isinstance(exc, EOFError) or "central directory" in text or "truncated" in text.lower():
        return "the file is empty or truncated (an interrupted copy or download?)"
    if isinstance(exc, (KeyError, IndexError)) or "invalid load key" in text:  # pickle choking on foreign bytes
        return "not a PyTorch checkpoint file (text, an image or another format?)"
    if "weights only load failed" in text.lower() or "weights_only" in text:  # torch's advice is not ours to give
        reason = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        return ("safe loading (weights_only) refused it" + (f": {reason.group(1)[:120]}" if reason else "")
                + "; adnlib never loads a file unsafely")
    return f"not a PyTorch checkpoint file ({type(exc).__name__}: {text.splitlines()[0][:120] if text else ''})"


# --- files that are never written through a link -----------------------------------------------------------------
def create_new(folder: str | Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """(descriptor open for writing, path) of a new, empty file `<prefix><16 random hex><suffix>` in `folder`,
    with the mode any new file gets (0666 less the umask). The name cannot be guessed and the creation follows no
    link (O_EXCL | O_NOFOLLOW): another user's planted link makes it fail, never write elsewhere."""
    folder = Path(folder)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, _NEW_FILE, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new file in {folder}")


def probe_folder(folder: str | Path, name: str = ".adnlib-write-check-") -> int:
    """Write and remove a probe file in `folder` (create_new) -> the file system's clock at that moment (the
    probe's mtime, ns). OSError when the folder cannot be written."""
    fd, path = create_new(folder, name)
    try:
        os.write(fd, b"adnlib write check\n")
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def open_lock_file(path: str | Path) -> int:
    """A descriptor (read/write) of the lock file at `path`, created if missing; UnsafePathError (one line) when the
    name holds a symbolic link or anything but a regular file, which is then left alone."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or path.is_symlink():
            raise UnsafePathError(_not_a_lock(path)) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(_not_a_lock(path))
    return fd


def _not_a_lock(path: Path) -> str:
    kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
    return (f"{path} is {kind}, not adnlib's lock file: nothing is written through it; remove it (or choose "
            "another output folder)")


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _blocking_file(folder: Path) -> Path | None:
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def check_output_folder(folder: str | Path, need_bytes: int = 0, largest: str = "its largest file",
                        option: str = "--out") -> Path:
    """Before any work: create `folder`, write and remove a probe file there, and check that at least
    `need_bytes` (+ a 1 MB margin) are free -> the folder's Path.

    OutputExistsError where a file stands in the way; OutputWriteError (one line naming the folder) where it cannot
    be created or written (read-only, permissions) or lacks room for `largest` (need_bytes)."""
    folder = Path(folder)
    blocking = _blocking_file(folder)
    if blocking is not None:
        where = "is a file" if blocking == folder else f"cannot be a folder: {blocking} is a file"
        raise OutputExistsError(f"{option} {folder} {where}; choose another {option}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_folder(folder)  # a new file of an unguessable name, never written through a link
    except OSError as exc:
        raise OutputWriteError(f"{option} {folder} cannot be written ({exc.strerror or exc}); choose another "
                               f"{option}") from exc
    free = free_bytes(folder)
    if free is not None and free < need_bytes + MARGIN_BYTES:
        raise OutputWriteError(f"{option} {folder} has {megabytes(free)} free, but this run needs "
                               f"{megabytes(need_bytes + MARGIN_BYTES)} there ({largest}); free some space or choose "
                               f"another {option}")
    return folder


# --- atomic, durable writes ----------------------------------------------------------------------------------------
def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _make_parent(path: Path) -> None:
    """Create the folder of `path`; OutputExistsError (one clear line) where a file stands in its way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()),
                        path.parent)
        raise OutputExistsError(f"cannot write {path}: {blocking} is a file, not a folder") from exc


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_error(exc: BaseException, path: str | Path) -> OutputWriteError | None:
    """The OutputWriteError for a failed write of `path` (None: not a write failure of the output folder).

    A RuntimeError counts when PyTorch's zip writer raised it (it reports a full disk that way, without errno)."""
    path = Path(path)
    if isinstance(exc, OutputWriteError):
        return exc
    torch_writer = isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                                      or "inline_container" in str(exc))
    if not torch_writer and not (isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS):
        return None
    free = free_bytes(path.parent if path.parent.exists() else Path.cwd())
    room = f"{free / 1e6:.1f} MB free there" if free is not None else "free space unknown"
    if torch_writer:  # no errno: tell a full disk by the room left
        what = "No space left on device" if free is not None and free < MARGIN_BYTES else "an I/O error"
        reason = f"{what} (PyTorch's checkpoint writer failed; {room})"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = f"{exc.strerror or exc} ({room})"
    else:
        reason = exc.strerror or str(exc)
    error = OutputWriteError(f"cannot write {path}: {reason}")
    error.errno = getattr(exc, "errno", None) or errno.ENOSPC
    return error


def _raise_write_error(exc: BaseException, path: Path) -> None:
    failure = write_error(exc, path)
    if failure is None:
        raise exc
    raise failure from exc


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) then rename onto `path`: a kill mid-write leaves the previous file intact.

    The temporary file sits beside `path` (same file system, so the rename is atomic) under a name nobody can guess
    (create_new: no link followed), and is synced to disk before the rename, so that a crash of the machine cannot
    leave a renamed but empty file either. A link at `path` is replaced, never written through. The result has the
    mode of any new file (the umask's). A write that fails for want of room or permission (full disk, read-only
    folder) raises OutputWriteError naming the file (`write_error`), with the previous file intact.
    """
    path = Path(path)
    try:
        _make_parent(path)
        fd, tmp = create_new(path.parent, f".{path.name}.", ".tmp")
        os.close(fd)
    except OSError as exc:
        _raise_write_error(exc, path)
    try:
        write(str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except (OSError, RuntimeError) as exc:
        _raise_write_error(exc, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON (atomic_write); values JSON cannot hold are written as their str()."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
    return atomic_write(path, write)


def write_csv(path: str | Path, frame) -> Path:
    """A pandas DataFrame as CSV without its index (atomic_write)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(path: str | Path, text: str) -> Path:
    """Text in UTF-8 (atomic_write)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# --- downloads ------------------------------------------------------------------------------------------------
def one_line(message: str | BaseException) -> str:
    """A message, or an error's message, as one line. A DataLoader worker wraps its error in a traceback: its last
    line is kept (without the exception's name)."""
    text = str(message)
    if isinstance(message, BaseException) and "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        name = type(message).__name__
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(name) and ": " in last else last
    return " ".join(text.split())


def hash_matches(digest: str, full: str, prefix: str) -> bool:
    """A full expected hash is checked in full (a file-name prefix then only names the file); else the prefix."""
    return digest == full if full else digest.startswith(prefix)


def check_timeouts(timeout: float, deadline: float | None = None, error: type[Exception] = DownloadError) -> None:
    """`error` (a ValueError) unless timeout (seconds per connection and read) and deadline (seconds for the whole
    transfer, None: none) are positive finite numbers."""
    for name, value in (("timeout", timeout), ("deadline", deadline)):
        if value is None and name == "deadline":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise error(f"{name} must be a positive number of seconds, not {value!r}")


def download(url: str, target: Path, *, full: str = "", prefix: str = "", timeout: float = DEFAULT_TIMEOUT_S,
             deadline: float | None = DEFAULT_DEADLINE_S, progress: bool = False, what: str = "checkpoint",
             error: type[Exception] = DownloadError) -> None:
    """The one downloader (checkpoints here, the ImageNet weights in adnlib.model.weights): stream `url` into a
    temporary file beside `target`, hashed on the way, renamed onto it only when complete and matching `full` (a
    sha256) or `prefix` (its first hex digits; both empty: no check).

    Bounded: `timeout` seconds per connection attempt and per read, and `deadline` seconds for the whole transfer (a
    server that trickles a byte now and then ends too). On any failure `error` names the URL and the reason, and
    nothing is left behind; temporary files of killed downloads (their process gone) are removed first.
    """
    check_timeouts(timeout, deadline, error)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        tmp = target.parent / f".{target.name}.{_OWNER_TAG}.{secrets.token_hex(6)}.partial"
        out = open(tmp, "xb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise error(one_line(f"cannot download {what} {url}: cannot write into the cache folder {target.parent} "
                              f"({exc.strerror or exc})")) from exc
    try:
        with out:
            digest, received, size = _stream(url, out, progress, timeout, deadline, target.name, what, error)
            out.flush()
            os.fsync(out.fileno())
        if size is not None and received != size:
            raise error(f"cannot download {what} {url}: the connection closed after {received} of {size} bytes "
                        "(an interrupted download; nothing was kept)")
        if not hash_matches(digest, full, prefix):
            wanted = full or f"{prefix}... (from the file name)"
            raise error(f"cannot download {what} {url}: its SHA-256 is {digest}, expected {wanted}: the file on the "
                        "server changed or the sha256 given is wrong (nothing was kept)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# A temporary file's name carries its writer (host and process id): a later call removes those whose process is gone.
_OWNER_TAG = f"{_UNSAFE.sub('_', socket.gethostname())}-{os.getpid()}"
STALE_PARTIAL_S = 24 * 3600  # another host's temporary file: removed when this old


def _remove_stale_partials(target: Path) -> None:
    """Delete the temporary files of earlier downloads of `target` whose process is gone (killed): on this host when
    its process id is not running, from another host (a shared cache) when older than STALE_PARTIAL_S."""
    host = _UNSAFE.sub("_", socket.gethostname())
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        owner = tmp.name[len(target.name) + 2:].rsplit(".", 2)[0]
        writer_host, _, pid = owner.rpartition("-")
        try:
            gone = (not _running(int(pid)) if writer_host == host and pid.isdigit()
                    else time.time() - tmp.stat().st_mtime > STALE_PARTIAL_S)
            if gone:
                tmp.unlink()
        except OSError:  # removed meanwhile, or not ours to remove: the next call tries again
            continue


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def http_request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": f"adnlib/{__version__}"})


def _stream(url: str, out, progress: bool, timeout: float, deadline: float | None, label: str, what: str,
            error: type[Exception]) -> tuple[str, int, int | None]:
    """Copy `url`'s body into `out`: (sha256, bytes received, Content-Length or None)."""
    digest, received = hashlib.sha256(), 0
    ends = None if deadline is None else time.monotonic() + deadline
    try:
        with urllib.request.urlopen(http_request(url), timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else None
            with progress_bar(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                      disable=not progress) as bar:
                while chunk := response.read1(_DOWNLOAD_CHUNK):  # what one read brings: the deadline is checked often
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if ends is not None and time.monotonic() > ends:
                        raise error(f"cannot download {what} {url}: not finished within its deadline of {deadline:g} "
                                    f"s ({received} bytes received; nothing was kept)")
    except NETWORK_ERRORS as exc:
        raise network_error(what, url, exc, timeout, error) from exc
    return digest.hexdigest(), received, size


def network_error(what: str, url: str, exc: BaseException, timeout: float,
                   error: type[Exception] = DownloadError) -> Exception:
    """One line saying why `url` could not be had."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.HTTPError):
        why = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
        why = f"timed out (nothing received for {timeout:g} s)"
    elif isinstance(exc, urllib.error.URLError):
        why = f"cannot connect ({reason}); no network? Download the file elsewhere and pass its path"
    elif isinstance(exc, (http.client.HTTPException, ConnectionError)):
        why = f"the connection broke ({type(exc).__name__}: {exc})"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return error(one_line(f"cannot download {what} {url}: {why} (nothing was kept)"))
