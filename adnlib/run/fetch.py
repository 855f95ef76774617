"""Trained checkpoints from a URL or a path, checked by SHA-256 and cached (docs/teaching.md, "Publishing trained
checkpoints").

`fetch_checkpoint` works like `torch.hub.load_state_dict_from_url(check_hash=True)`, but checks a full SHA-256 and
returns a path (for `model_from_checkpoint`) instead of a state dict. A URL's file is streamed into a temporary file
in the cache folder, hashed on the way, and renamed into place only when complete and matching: a wrong hash, an
HTTP error, a timeout or a cut connection raise `CheckpointError` and leave nothing in the cache. A cached file is
reused when its hash matches (it is hashed again at every call: about a second for the paper's 0.70 GB).

The expected hash comes from `sha256=`, from a `#sha256=<64 hex>` URL fragment, or (a prefix only, as torch.hub)
from a file name `name-<first 8+ hex of the sha256>.pt`. `ADNLIB_OFFLINE=1` refuses downloads (cached files are
still used). The cache is `cache_dir`, else $ADNLIB_CACHE, else ~/.cache/adnlib/checkpoints.

A manifest (`write_manifest`, `fetch_checkpoints`, `fetch_runs`) lists a trained grid for publication, e.g. as
release assets: {"format": "adnlib-checkpoints", "version": 2, "checkpoints": [{"category": ..., "variant": ...,
"seed": ..., "url": ..., "sha256": ..., "size": ..., "files": {"metrics.json": {"url": ..., "sha256": ...,
"size": ...}, "history.csv": {...}, "scores.csv": {...}}}, ...]}; an entry may carry a "name" (a relative folder
such as "open-gates/disc/se/seed0") instead of category/variant/seed, and a relative "url" is read relative to the
manifest's own URL or folder. "files" (version 2) are the run's results beside its checkpoint: `fetch_runs` lays
each run out as a run folder again, so that a notebook loads a published course exactly as a local one (version 1
manifests, without "files", still give their checkpoints).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlparse

from adnlib.errors import CheckpointError
from adnlib.io import (  # noqa: F401 - file_sha256, offline, download: public here as before
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    NETWORK_ERRORS,
    atomic_write,
    check_timeouts,
    download,
    file_sha256,
    hash_matches,
    http_request,
    network_error,
    offline,
    one_line,
    write_text,
)
from adnlib.version import __version__

MANIFEST_FORMAT = "adnlib-checkpoints"
MANIFEST_VERSION = 2
RUN_FILES = ("metrics.json", "history.csv", "scores.csv")  # published beside each checkpoint (version 2)
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one folder of a named entry
_MAX_MANIFEST_BYTES = 10 << 20
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.\w+$")  # torch.hub's name-<sha256 prefix>.pth
_FRAGMENT_HASH = re.compile(r"(?:^|&)sha256=([0-9a-fA-F]{64})(?:&|$)")
_FULL_HASH = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

Key = tuple[str, str, int] | str


def default_cache_dir() -> Path:
    """$ADNLIB_CACHE, else ~/.cache/adnlib/checkpoints."""
    return Path(os.environ.get("ADNLIB_CACHE") or "~/.cache/adnlib/checkpoints").expanduser()


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def _full_hash(value: str, where: str) -> str:
    text = str(value).strip().lower().removeprefix("sha256:").removeprefix("sha256=")
    if not _FULL_HASH.fullmatch(text):
        raise CheckpointError(one_line(f"{where}: a sha256 must be 64 hex digits, not {value!r}"))
    return text


def _url_name(url: str) -> str:
    name = _UNSAFE.sub("_", Path(unquote(urlparse(url).path)).name).lstrip(".")
    return name or "checkpoint.pt"


def _expected(url: str, sha256: str | None) -> tuple[str, str]:
    """(full sha256 or "", prefix from the file name or ""): what the download from `url` must match."""
    full = _full_hash(sha256, url) if sha256 else ""
    fragment = _FRAGMENT_HASH.search(urlparse(url).fragment)
    if fragment:
        if full and full != fragment.group(1).lower():
            raise CheckpointError(f"{url}: sha256={full} disagrees with the URL's #sha256={fragment.group(1)}")
        full = fragment.group(1).lower()
    named = _NAME_HASH.search(_url_name(url))
    prefix = named.group(1) if named else ""
    if not full and not prefix:
        raise CheckpointError(f"{url}: no sha256 to check the download against: pass sha256=<64 hex>, end the URL "
                              "with #sha256=<64 hex>, or name the file name-<first 8+ hex of its sha256>.pt "
                              "(torch.hub's convention)")
    return full, prefix


def cache_path(url: str, sha256: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Where `fetch_checkpoint(url, sha256=...)` keeps its file: the URL's file name when it carries the hash
    (torch.hub's convention), else the name with the first 16 hex digits of the sha256 added before the suffix."""
    full, prefix = _expected(url, sha256)
    name = _url_name(url)
    if not prefix or (full and not full.startswith(prefix)):
        name = f"{Path(name).stem}-{full[:16]}{Path(name).suffix}"
    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / name


def fetch_checkpoint(source: str | Path, *, sha256: str | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
                     deadline: float | None = DEFAULT_DEADLINE_S) -> Path:
    """A checkpoint's local path: `source` itself when it is a path (checked to exist, and against `sha256` if
    given), else the http(s) URL's file in the cache, downloaded unless a copy with the right hash is there.

    A URL needs a hash (see the module's docstring). CheckpointError, naming the URL and the reason, for a wrong
    hash, an HTTP error, a timeout (`timeout` seconds without data), a transfer past its `deadline` (seconds in all),
    a cut connection, a cache folder that cannot be written, a timeout that is not a positive number, or
    ADNLIB_OFFLINE without a cached copy; nothing partial is ever left in the cache (see `download`).
    """
    source = str(source)
    if not _is_url(source):
        return _local(source, sha256)
    check_timeouts(timeout, deadline, CheckpointError)
    full, prefix = _expected(source, sha256)
    target = cache_path(source, sha256, cache_dir)
    cached = target.is_file()
    if cached and hash_matches(file_sha256(target), full, prefix):
        return target
    if offline():
        state = f"the cached copy {target} does not match its sha256" if cached else f"it is not cached ({target})"
        raise CheckpointError(f"cannot fetch checkpoint {source}: ADNLIB_OFFLINE is set, so nothing is downloaded, "
                              f"and {state}; unset ADNLIB_OFFLINE, or download it elsewhere and put it there")
    download(source, target, full=full, prefix=prefix, timeout=timeout, deadline=deadline, progress=progress,
             error=CheckpointError)
    return target


def _local(source: str, sha256: str | None) -> Path:
    path = Path(source)
    if urlparse(source).scheme == "file":
        path = Path(urllib.request.url2pathname(urlparse(source).path))
    if not path.expanduser().is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if sha256:
        full, digest = _full_hash(sha256, str(path)), file_sha256(path.expanduser())
        if digest != full:
            raise CheckpointError(f"{path}: its sha256 is {digest}, expected {full} (a different or damaged file)")
    return path


# --- manifests ---------------------------------------------------------------------------------------------------
def fetch_checkpoints(manifest: str | Path | dict, *, categories: Iterable[str] | str | None = None,
                      variants: Iterable[str] | str | None = None, seeds: Iterable[int] | int | None = None,
                      cache_dir: str | Path | None = None, progress: bool = True,
                      timeout: float = DEFAULT_TIMEOUT_S, deadline: float | None = DEFAULT_DEADLINE_S
                      ) -> dict[Key, Path]:
    """The checkpoints a manifest lists (a URL, a local file or its dict), fetched and checked: {(category,
    variant, seed) or name: path}, in the manifest's order.

    categories / variants / seeds (one value or several) keep only matching entries, so that a student downloads
    just what a notebook needs; named entries are kept only when no filter is given. No match: an empty dict. A
    manifest URL's copy is cached, and used offline or (with a warning) when the URL cannot be reached.
    """
    check_timeouts(timeout, deadline, CheckpointError)
    data, base, where = _load_manifest(manifest, cache_dir, timeout)
    keep = [_wanted(categories), _wanted(variants), _wanted(seeds)]
    fetched: dict[Key, Path] = {}
    for key, entry in _entries(data, where):
        if isinstance(key, tuple) and not all(k(v) for k, v in zip(keep, key)):
            continue
        if isinstance(key, str) and any(v is not None for v in (categories, variants, seeds)):
            continue
        fetched[key] = fetch_checkpoint(_resolve(str(entry["url"]), base), sha256=str(entry["sha256"]),
                                        cache_dir=cache_dir, progress=progress, timeout=timeout,
                                        deadline=deadline)
    return fetched


def _wanted(values):
    if values is None:
        return lambda value: True
    allowed = {values} if isinstance(values, (str, int)) else set(values)
    return lambda value: value in allowed


def _resolve(url: str, base: str | Path | None) -> str:
    """An entry's url: an http(s) URL as is; a relative one relative to the manifest's URL or folder. Anything
    else (file://, another scheme, an absolute path) is refused: a manifest served over the network must not name
    files of the machine that reads it."""
    if _is_url(url):
        return url
    if urlparse(url).scheme or Path(url).is_absolute() or url.startswith("~"):
        raise CheckpointError(f"checkpoint manifest entry {url!r}: an entry's url must be http(s) or relative to the "
                              "manifest, not a local path or another scheme")
    if base is None:
        raise CheckpointError(f"checkpoint manifest entry {url!r} is relative, but the manifest (a dict) has no "
                              "location to be relative to")
    return urljoin(base, url) if isinstance(base, str) else str(base / url)


def _load_manifest(manifest, cache_dir, timeout) -> tuple[Any, str | Path | None, str]:
    """(parsed manifest, what its relative URLs are relative to, how to name it in errors)."""
    if isinstance(manifest, dict):
        return manifest, None, "checkpoint manifest"
    source = str(manifest)
    if _is_url(source):
        text, where, base = _manifest_text(source, cache_dir, timeout), source, source
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint manifest {path}: {exc.strerror or exc}") from exc
        where, base = str(path), path.parent
    try:
        return json.loads(text), base, where
    except ValueError as exc:
        raise CheckpointError(one_line(f"checkpoint manifest {where} is not JSON ({exc})")) from exc


def _manifest_text(url: str, cache_dir, timeout: float) -> str:
    """The manifest at `url`, kept in the cache for offline use; the cached copy when the URL cannot be had."""
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    copy = folder / f"manifest-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"
    if offline():
        if copy.is_file():
            return copy.read_text(encoding="utf-8")
        raise CheckpointError(f"cannot fetch checkpoint manifest {url}: ADNLIB_OFFLINE is set, so nothing is "
                              f"downloaded, and no copy is cached ({copy}); unset ADNLIB_OFFLINE or pass a local file")
    try:
        with urllib.request.urlopen(http_request(url), timeout=timeout) as response:
            raw = response.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise CheckpointError(f"checkpoint manifest {url} is over {_MAX_MANIFEST_BYTES >> 20} MB: not a manifest")
        text = raw.decode("utf-8")
    except (*NETWORK_ERRORS, UnicodeDecodeError) as exc:
        error = network_error("checkpoint manifest", url, exc, timeout, CheckpointError)
        if not copy.is_file():
            raise error from exc
        warnings.warn(f"{error}; using the copy cached at {copy}", stacklevel=3)
        return copy.read_text(encoding="utf-8")
    write_text(copy, text)
    return text


def _entries(data: Any, where: str) -> list[tuple[Key, dict[str, Any]]]:
    """The manifest's entries with their keys, checked: url and sha256, and category/variant/seed or a name."""
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), list):
        raise CheckpointError(f"{where} is not a checkpoint manifest (no 'checkpoints' list)")
    if not isinstance(data.get("version", 1), int) or not 1 <= data.get("version", 1) <= MANIFEST_VERSION:
        raise CheckpointError(f"{where} has manifest version {data.get('version')!r}; this adnlib reads up to "
                              f"{MANIFEST_VERSION}: upgrade adnlib")
    entries: dict[Key, dict[str, Any]] = {}
    for i, entry in enumerate(data["checkpoints"]):
        if not isinstance(entry, dict) or not entry.get("url") or not entry.get("sha256"):
            raise CheckpointError(f"{where}: checkpoint entry {i} needs a 'url' and a 'sha256'")
        _full_hash(entry["sha256"], f"{where}: checkpoint entry {i}")
        if all(k in entry for k in ("category", "variant", "seed")):
            try:
                key: Key = (str(entry["category"]), str(entry["variant"]), int(entry["seed"]))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: checkpoint entry {i} has a seed that is not a whole number") from exc
            if not all(_NAME_PART.fullmatch(part) for part in key[:2]):  # each becomes a folder (fetch_runs)
                raise CheckpointError(one_line(f"{where}: checkpoint entry {i}: category and variant must be plain "
                                               f"names (letters, digits, '.', '_', '-'), not {key[:2]!r}"))
        elif entry.get("name"):
            key = _check_name(str(entry["name"]), f"{where}: checkpoint entry {i}")
        else:
            raise CheckpointError(f"{where}: checkpoint entry {i} needs a category, variant and seed, or a name")
        if key in entries:
            raise CheckpointError(f"{where}: checkpoint {key} is listed twice")
        entries[key] = entry
    _refuse_overlapping_folders(list(entries), where)
    return list(entries.items())


def _run_folder(key: Key) -> str:
    """Where fetch_runs lays an entry out, relative to the runs folder."""
    return key if isinstance(key, str) else f"{key[0]}/{key[1]}/seed{key[2]}"


def _refuse_overlapping_folders(keys: list[Key], where: str) -> None:
    """Two entries that would share a run folder (a name 'disc/se/seed0' beside that grid cell) or nest one run
    inside another would mix two runs' files: refused."""
    seen: set[str] = set()
    folders = [_run_folder(key) for key in keys]
    for folder in sorted(folders, key=lambda f: f.count("/")):  # parents before what could lie inside them
        parts = folder.split("/")
        inside = next((p for p in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in seen), None)
        if inside is not None:
            raise CheckpointError(f"{where}: the entries {inside!r} and {folder!r} would share a run folder; "
                                  "give the named run another name")
        seen.add(folder)


def write_manifest(run_dirs: str | Path | Iterable[str | Path], base_url: str | None, out: str | Path, *,
                   assets_dir: str | Path | None = None, require_finished: bool = True,
                   named: dict[str, str | Path] | None = None) -> Path:
    """Write a manifest of trained runs, ready to publish (e.g. as GitHub release assets): each run's checkpoint.pt
    and its results (RUN_FILES: metrics.json, history.csv, scores.csv, where present).

    run_dirs: a grid folder (<category>/<variant>/seed<k>/checkpoint.pt, as `adnlib grid` writes), a run folder,
    or several. named: {name: run folder} for runs outside the grid's key, e.g. {"open-gates/disc/se/seed0": ...}
    (folders of letters, digits, '.', '_', '-', separated by '/'). Each file is placed in `assets_dir` (default: the
    manifest's folder; a hard link, or a copy where linking fails) under a unique name carrying its hash,
    <category>_<variant>_seed<k>-<sha256[:8]>.pt and <...>-metrics-<sha256[:8]>.json etc. (a run outside a grid:
    its folder name or its `named` key instead), which is the URL base_url/<name>. base_url None: URLs relative to
    the manifest, to serve the folder as it is. require_finished: refuse a run without metrics.json (interrupted).
    """
    out = Path(out)
    assets = Path(assets_dir) if assets_dir is not None else out.parent
    runs = [(_run_key(checkpoint), checkpoint) for checkpoint in _checkpoint_files(run_dirs)] if run_dirs else []
    for name, folder in (named or {}).items():
        _check_name(name, "write_manifest")
        runs.append(({"name": name}, Path(folder) / "checkpoint.pt"))
    _refuse_overlapping_folders([key["name"] if "name" in key else (key["category"], key["variant"], key["seed"])
                                 for key, _ in runs], "write_manifest")  # before any file is placed
    entries, seen = [], set()

    def publish(source: Path, stem: str, label: str, suffix: str) -> dict[str, Any]:
        digest = file_sha256(source)
        asset = f"{stem}{label}-{digest[:8]}{suffix}"
        if asset in seen:
            raise CheckpointError(f"two runs would be published as {asset} (the same cell from two grids?)")
        seen.add(asset)
        _place(source, assets / asset)
        relative = Path(os.path.relpath(assets / asset, out.parent)).as_posix()
        url = f"{base_url.rstrip('/')}/{quote(asset)}" if base_url else quote(relative)
        return {"url": url, "sha256": digest, "size": source.stat().st_size}

    for key, checkpoint in runs:
        if not checkpoint.is_file():
            raise CheckpointError(f"no checkpoint.pt in {checkpoint.parent}")
        if require_finished and not (checkpoint.parent / "metrics.json").is_file():
            raise CheckpointError(f"{checkpoint.parent} has no metrics.json: an unfinished run? Finish it (--resume), "
                                  "or pass require_finished=False to publish it as it is")
        stem = _UNSAFE.sub("_", key["name"].replace("/", "_") if "name" in key
                           else f"{key['category']}_{key['variant']}_seed{key['seed']}")
        files = {name: publish(checkpoint.parent / name, stem, f"-{Path(name).stem}", Path(name).suffix)
                 for name in RUN_FILES if (checkpoint.parent / name).is_file()}
        entries.append({**key, **publish(checkpoint, stem, "", ".pt"), **({"files": files} if files else {})})
    if not entries:
        raise CheckpointError("nothing to publish: no run given")
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "adnlib": __version__,
                "checkpoints": entries}
    write_text(out, json.dumps(manifest, indent=2) + "\n")
    return out


def _check_name(name: str, where: str) -> str:
    """A named entry's folder, relative and plain ('open-gates/disc/se/seed0'): it becomes a folder under the
    fetched runs, so no absolute path, no '..', no hidden or odd names."""
    parts = str(name).split("/")
    if not all(_NAME_PART.fullmatch(part) for part in parts) or ".." in parts:
        raise CheckpointError(one_line(f"{where}: entry name {name!r} must be folders of letters, digits, '.', '_' "
                                       "and '-' separated by '/', none starting with '.'"))
    return str(name)


def fetch_runs(manifest: str | Path | dict, *, categories: Iterable[str] | str | None = None,
               variants: Iterable[str] | str | None = None, seeds: Iterable[int] | int | None = None,
               names: Iterable[str] | str | None = None, cache_dir: str | Path | None = None,
               progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
               deadline: float | None = DEFAULT_DEADLINE_S) -> Path:
    """The runs a manifest lists, fetched, checked and laid out as a grid folder in the cache: -> that folder, with
    <category>/<variant>/seed<k>/ (and <name>/ for named entries) holding checkpoint.pt and the run's published
    results (metrics.json, history.csv, scores.csv), so that anything reading a local grid reads it unchanged.

    categories / variants / seeds select grid entries, names the named ones (names None: a named entry is taken
    only when no other filter is given; "" or []: none; names alone: no grid entry). Every file is checked against
    the manifest's sha256 (see `fetch_checkpoint`); the folder is <cache>/runs-<first 16 hex of the manifest's
    sha256>/, one per manifest, and each file lands in it by an atomic rename. A version 1 manifest gives
    checkpoint.pt only.
    """
    check_timeouts(timeout, deadline, CheckpointError)
    data, base, where = _load_manifest(manifest, cache_dir, timeout)
    entries = _entries(data, where)
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    canonical = json.dumps(data, sort_keys=True).encode()
    root = cache / f"runs-{hashlib.sha256(canonical).hexdigest()[:16]}"
    keep = [_wanted(categories), _wanted(variants), _wanted(seeds)]
    wanted_names = _wanted([names] if isinstance(names, str) and names else names or [])
    grid_filtered = any(v is not None for v in (categories, variants, seeds))
    take_named = names is not None or not grid_filtered
    take_grid = not names or grid_filtered  # names alone: the named runs only
    for key, entry in entries:
        if isinstance(key, tuple):
            if not take_grid or not all(k(v) for k, v in zip(keep, key)):
                continue
            folder = root / key[0] / key[1] / f"seed{key[2]}"
        else:
            if not take_named or (names is not None and not wanted_names(key)):
                continue
            folder = root / _check_name(key, where)
        for name, item in [("checkpoint.pt", entry), *_run_files(entry, where)]:
            _fetch_into(_resolve(str(item["url"]), base), folder / name, _full_hash(item["sha256"], where),
                        progress=progress and name == "checkpoint.pt", timeout=timeout, deadline=deadline)
    return root


def _fetch_into(source: str, target: Path, sha256: str, *, progress: bool, timeout: float,
                deadline: float | None) -> None:
    """`target` becomes the file at `source` (a URL or a local path) checked against `sha256`; a file already there
    with that hash is kept. The fetched folder holds the only copy (no link into the cache or the published folder,
    so editing it changes nothing else, and the next fetch replaces it); it is made read-only."""
    if target.is_file() and file_sha256(target) == sha256:
        return
    if _is_url(source):
        if offline():
            state = "its copy there does not match its sha256" if target.is_file() else "it is not fetched yet"
            raise CheckpointError(f"cannot fetch {source} into {target}: ADNLIB_OFFLINE is set, so nothing is "
                                  f"downloaded, and {state}; unset ADNLIB_OFFLINE")
        download(source, target, full=sha256, timeout=timeout, deadline=deadline, progress=progress,
                 error=CheckpointError)
    else:
        local = _local(source, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.partial"
        try:
            shutil.copyfile(local, tmp)
            if file_sha256(tmp) != sha256:  # changed while it was copied
                raise CheckpointError(f"{local} changed while it was copied; fetch again")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    target.chmod(0o444)


def _run_files(entry: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """An entry's published results (version 2 "files"), checked: known names, each with a url and a sha256."""
    files = entry.get("files") or {}
    if not isinstance(files, dict):
        raise CheckpointError(f"{where}: an entry's 'files' must be a mapping of file names to url and sha256")
    checked = []
    for name, item in files.items():
        if name not in RUN_FILES or not isinstance(item, dict) or not item.get("url") or not item.get("sha256"):
            raise CheckpointError(one_line(f"{where}: entry file {name!r} must be one of {', '.join(RUN_FILES)} "
                                           "with a 'url' and a 'sha256'"))
        _full_hash(item["sha256"], f"{where}: {name}")
        checked.append((name, item))
    return checked


def _checkpoint_files(run_dirs) -> list[Path]:
    folders = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    files = []
    for folder in map(Path, folders):
        if folder.is_file():
            files.append(folder)
        elif (folder / "checkpoint.pt").is_file():
            files.append(folder / "checkpoint.pt")
        else:
            found = sorted(folder.glob("*/*/seed*/checkpoint.pt"))
            if not found:
                raise CheckpointError(f"no checkpoint.pt in {folder} (a run folder, or a grid folder "
                                      "<category>/<variant>/seed<k>/checkpoint.pt)")
            files += found
    return files


def _run_key(checkpoint: Path) -> dict[str, Any]:
    """{category, variant, seed} from a grid cell's path (<category>/<variant>/seed<k>), else {name: folder}."""
    seed = re.fullmatch(r"seed(\d+)", checkpoint.parent.name)
    if seed and len(checkpoint.parents) > 3:
        return {"category": checkpoint.parents[2].name, "variant": checkpoint.parents[1].name, "seed": int(seed[1])}
    return {"name": checkpoint.resolve().parent.name}


def _place(source: Path, target: Path) -> None:
    """`target` becomes `source`'s content: a hard link, or a copy (`io.atomic_write`) where linking fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.partial"
    try:
        os.link(source, tmp)  # fails, never follows, if the name exists
    except OSError:
        atomic_write(target, lambda path: shutil.copyfile(source, path))
        return
    try:
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


