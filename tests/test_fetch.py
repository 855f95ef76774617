"""fetch_checkpoint, fetch_checkpoints and write_manifest against a real HTTP server on 127.0.0.1 (a thread on
port 0, always shut down): downloads are hash-checked, cached, reused, and never leave a partial file behind."""
import hashlib
import http.server
import io
import itertools
import json
import re
import time

import pytest
import torch
from conftest import loopback_server

from adnlib.errors import AdnlibError, CheckpointError
from adnlib.run.fetch import cache_path, fetch_checkpoint, fetch_checkpoints, fetch_runs, write_manifest

WAIT_S = 5  # the longest any thread here waits for anything


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files {path: bytes}; /r/<rest> redirects to /release/<rest> (as GitHub's asset URLs do);
    paths in server.truncate announce their full size but send half; paths in server.stall send headers only."""
    timeout = WAIT_S  # the server never waits long for a client either

    def log_message(self, *args):
        pass

    def do_GET(self):
        server, path = self.server, self.path.split("?")[0]
        server.requests.append(path)
        if path.startswith("/r/"):
            self.send_response(302)
            self.send_header("Location", "/release/" + path.removeprefix("/r/"))
            self.end_headers()
            return
        body = server.files.get(path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in server.stall:
            server.release.wait(WAIT_S)
        elif path in server.truncate:
            self.wfile.write(body[: len(body) // 2])  # then HTTP/1.0 closes the connection
        else:
            self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    """A live server on 127.0.0.1 (online mode for this test); shut down whatever the test does."""
    with loopback_server(monkeypatch, _Handler, files={}, requests=[], truncate=set(), stall=set()) as httpd:
        yield httpd


def _tiny_checkpoint(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": "adnlib-checkpoint", "seed": seed, "w": torch.arange(256.0) + seed}, buffer)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _serve(server, path: str, data: bytes) -> str:
    server.files[path] = data
    return server.url + path


def test_a_download_is_checked_cached_and_reused(server, tmp_path):
    # catches a download that differs from the served bytes, is not cached, or is fetched again on every call
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/tiny.pt", data)
    path = fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False, timeout=WAIT_S)
    assert path.read_bytes() == data
    assert path.parent == cache
    assert _left(cache) == [path.name]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(256.0))
    again = fetch_checkpoint(url, sha256=_sha(data).upper(), cache_dir=cache, progress=True, timeout=WAIT_S)
    assert again == path
    assert server.requests == ["/tiny.pt"]


def test_a_corrupt_cached_file_is_downloaded_again(server, tmp_path):
    # catches a cache that trusts a file by its name without checking its hash
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/tiny.pt", data)
    stale = cache_path(url, _sha(data), cache)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(data[:100])
    assert fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False).read_bytes() == data
    assert server.requests == ["/tiny.pt"]
    assert _left(cache) == [stale.name]


def test_a_wrong_hash_raises_and_leaves_nothing(server, tmp_path):
    # catches a download kept (or its temporary file left) although its hash is not the expected one
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/tiny.pt", data)
    with pytest.raises(CheckpointError, match="sha256") as caught:
        fetch_checkpoint(url, sha256="0" * 64, cache_dir=cache, progress=False, timeout=WAIT_S)
    assert url in str(caught.value)
    assert _sha(data) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, AdnlibError)
    assert _left(cache) == []


def test_an_interrupted_download_raises_and_leaves_nothing(server, tmp_path):
    # catches a download cut short (fewer bytes than Content-Length) that is kept or reported as a hash mismatch
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/cut.pt", data)
    server.truncate.add("/cut.pt")
    with pytest.raises(CheckpointError, match=rf"closed after {len(data) // 2} of {len(data)} bytes|connection broke"):
        fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False, timeout=WAIT_S)
    assert _left(cache) == []


def test_http_404_names_the_status_and_leaves_nothing(server, tmp_path):
    # catches an HTTP error saved as if it were the file, or reported without its status
    cache = tmp_path / "cache"
    url = server.url + "/missing.pt"
    with pytest.raises(CheckpointError, match="HTTP 404") as caught:
        fetch_checkpoint(url, sha256="a" * 64, cache_dir=cache, progress=False, timeout=WAIT_S)
    assert url in str(caught.value)
    assert _left(cache) == []


def test_a_stalled_server_times_out(server, tmp_path):
    # catches a download without a read timeout, which would hang a notebook for ever
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/slow.pt", data)
    server.stall.add("/slow.pt")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="timed out"):
        fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False, timeout=0.5)
    assert time.monotonic() - start < WAIT_S
    assert _left(cache) == []


def test_the_hash_can_come_from_the_file_name_or_the_url_fragment(server, tmp_path):
    # catches torch.hub's name-<sha256 prefix>.pt convention or #sha256= ignored, or a URL accepted with no hash
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    named = _serve(server, f"/tiny-{_sha(data)[:10]}.pt", data)
    assert fetch_checkpoint(named, cache_dir=cache, progress=False).name == f"tiny-{_sha(data)[:10]}.pt"
    wrong = _serve(server, f"/other-{_sha(data)[:10]}.pt", _tiny_checkpoint(1))
    with pytest.raises(CheckpointError, match=r"expected [0-9a-f]{10}\.\.\. \(from the file name\)"):
        fetch_checkpoint(wrong, cache_dir=cache, progress=False)
    plain = _serve(server, "/plain.pt", data)
    assert fetch_checkpoint(f"{plain}#sha256={_sha(data)}", cache_dir=cache, progress=False).read_bytes() == data
    assert server.requests[-1] == "/plain.pt"  # the fragment is not sent
    with pytest.raises(CheckpointError, match="no sha256"):
        fetch_checkpoint(plain, cache_dir=cache, progress=False)
    assert len(server.requests) == 3
    assert _left(cache) == sorted([f"tiny-{_sha(data)[:10]}.pt",
                                                                 cache_path(plain, _sha(data), cache).name])


def test_offline_refuses_a_download_but_reuses_a_cached_file(server, tmp_path, monkeypatch):
    # catches ADNLIB_OFFLINE ignored (a download attempted), or a cached file refused offline
    data, cache = _tiny_checkpoint(), tmp_path / "cache"
    url = _serve(server, "/tiny.pt", data)
    monkeypatch.setenv("ADNLIB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="ADNLIB_OFFLINE"):
        fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False)
    assert server.requests == []
    assert _left(cache) == []
    monkeypatch.setenv("ADNLIB_OFFLINE", "0")
    path = fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False)
    monkeypatch.setenv("ADNLIB_OFFLINE", "1")
    assert fetch_checkpoint(url, sha256=_sha(data), cache_dir=cache, progress=False) == path
    assert server.requests == ["/tiny.pt"]


def test_the_default_cache_is_adnlib_cache(server, tmp_path, monkeypatch):
    # catches a default cache folder that ignores $ADNLIB_CACHE (students' home quotas, shared classroom caches)
    data = _tiny_checkpoint()
    monkeypatch.setenv("ADNLIB_CACHE", str(tmp_path / "shared"))
    path = fetch_checkpoint(_serve(server, "/tiny.pt", data), sha256=_sha(data), progress=False)
    assert path.parent == tmp_path / "shared"


def test_a_local_path_is_returned_as_is_and_checked(tmp_path):
    # catches a local file copied into the cache, a missing one accepted, or its sha256 not checked
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    path.write_bytes(data := _tiny_checkpoint())
    assert fetch_checkpoint(str(path)) == path
    assert fetch_checkpoint(path, sha256=_sha(data)) == path
    with pytest.raises(CheckpointError, match="expected 0{64}"):
        fetch_checkpoint(path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        fetch_checkpoint(tmp_path / "nothing.pt")


def _fake_grid(root):
    """A grid folder disc/{differnet,se}/seed{0,1} of finished runs holding small checkpoints: {key: bytes}."""
    originals = {}
    for i, (variant, seed) in enumerate(itertools.product(["differnet", "se"], [0, 1])):
        cell = root / "disc" / variant / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "checkpoint.pt").write_bytes(_tiny_checkpoint(i))
        (cell / "metrics.json").write_text("{}")
        originals[("disc", variant, seed)] = _tiny_checkpoint(i)
    return originals


def test_a_manifest_round_trip_through_the_server(server, tmp_path, monkeypatch):
    # catches a manifest whose hashes, keys or asset names do not match the files, a filter that still downloads
    # everything, redirects (GitHub's asset URLs) not followed, or a manifest URL unusable offline afterwards
    originals, cache = _fake_grid(tmp_path / "grid"), tmp_path / "cache"
    manifest = write_manifest(tmp_path / "grid", f"{server.url}/r/v1", tmp_path / "release" / "manifest.json")
    entries = json.loads(manifest.read_text())["checkpoints"]
    assert [(e["category"], e["variant"], e["seed"]) for e in entries] == list(originals)
    for f in manifest.parent.iterdir():
        server.files[f"/release/v1/{f.name}"] = f.read_bytes()
    assert all(re.fullmatch(r"disc_(differnet|se)_seed[01](-[0-9a-f]{8}\.pt|-metrics-[0-9a-f]{8}\.json)", f.name)
               for f in manifest.parent.iterdir() if f.name != "manifest.json")
    url = f"{server.url}/release/v1/manifest.json"
    only = fetch_checkpoints(url, categories="disc", variants=["se"], seeds=0, cache_dir=cache, progress=False)
    assert list(only) == [("disc", "se", 0)]
    assert len(server.requests) == 3
    got = fetch_checkpoints(url, cache_dir=cache, progress=False)
    assert {key: path.read_bytes() for key, path in got.items()} == originals
    monkeypatch.setenv("ADNLIB_OFFLINE", "1")
    count = len(server.requests)
    assert fetch_checkpoints(url, cache_dir=cache, progress=False) == got
    assert len(server.requests) == count


def test_a_local_manifest_with_relative_urls_needs_no_server(tmp_path):
    # catches relative asset URLs resolved against the working folder instead of the manifest's
    originals = _fake_grid(tmp_path / "grid")
    manifest = write_manifest(tmp_path / "grid", None, tmp_path / "release" / "manifest.json")
    got = fetch_checkpoints(manifest, variants="differnet", cache_dir=tmp_path / "cache")
    assert {k: p.read_bytes() for k, p in got.items()} == {k: v for k, v in originals.items() if k[1] == "differnet"}
    assert all(p.parent == manifest.parent for p in got.values())
    assert _left(tmp_path / "cache") == []


def test_bad_manifests_and_unfinished_runs_are_refused(tmp_path):
    # catches an interrupted run published as if finished, or a manifest entry without a hash accepted
    _fake_grid(tmp_path / "grid")
    (tmp_path / "grid" / "disc" / "se" / "seed1" / "metrics.json").unlink()
    with pytest.raises(CheckpointError, match="seed1 has no metrics.json"):
        write_manifest(tmp_path / "grid", None, tmp_path / "release" / "manifest.json")
    with pytest.raises(CheckpointError, match="entry 0 needs a 'url' and a 'sha256'"):
        fetch_checkpoints({"checkpoints": [{"category": "disc", "variant": "se", "seed": 0, "url": "x.pt"}]})
    with pytest.raises(CheckpointError, match="not a checkpoint manifest"):
        fetch_checkpoints({"models": []})


def test_fetch_runs_lays_out_a_published_course_as_run_folders(server, tmp_path, monkeypatch):
    # catches published results that are not the run's (another cell's metrics.json beside a checkpoint), a filter
    # that downloads everything, named runs (the open-gates study) left out, or a fetched folder unusable offline
    originals, cache = _fake_grid(tmp_path / "grid"), tmp_path / "cache"
    for cell in (tmp_path / "grid" / "disc").glob("*/seed*"):
        (cell / "metrics.json").write_text(json.dumps({"cell": cell.relative_to(tmp_path / "grid").as_posix()}))
        (cell / "history.csv").write_text(f"epoch,loss\n1,{len(cell.parent.name)}\n")
    extra = tmp_path / "open" / "disc" / "se" / "seed0"
    extra.mkdir(parents=True)
    (extra / "checkpoint.pt").write_bytes(_tiny_checkpoint(9))
    (extra / "metrics.json").write_text('{"attention_init": "open"}')
    manifest = write_manifest(tmp_path / "grid", f"{server.url}/release/v2", tmp_path / "release" / "manifest.json",
                              named={"open-gates/disc/se/seed0": extra})
    data = json.loads(manifest.read_text())
    assert data["version"] == 2
    assert set(data["checkpoints"][0]["files"]) == {"metrics.json", "history.csv"}
    for f in manifest.parent.iterdir():
        server.files[f"/release/v2/{f.name}"] = f.read_bytes()
    url = f"{server.url}/release/v2/manifest.json"
    root = fetch_runs(url, categories="disc", variants="se", seeds=0, cache_dir=cache, progress=False)
    cell = root / "disc" / "se" / "seed0"
    assert sorted(p.name for p in cell.iterdir()) == ["checkpoint.pt", "history.csv", "metrics.json"]
    assert cell.joinpath("checkpoint.pt").read_bytes() == originals[("disc", "se", 0)]
    assert json.loads((cell / "metrics.json").read_text()) == {"cell": "disc/se/seed0"}
    assert not (root / "disc" / "differnet").exists()  # only what was asked
    assert not (root / "open-gates").exists()
    assert fetch_runs(url, names="open-gates/disc/se/seed0", cache_dir=cache, progress=False) == root
    assert (root / "open-gates" / "disc" / "se" / "seed0" / "checkpoint.pt").read_bytes() == _tiny_checkpoint(9)
    assert not (root / "disc" / "differnet").exists()  # names alone: the named run, not the whole course
    monkeypatch.setenv("ADNLIB_OFFLINE", "1")
    count = len(server.requests)
    assert fetch_runs(url, categories="disc", variants="se", seeds=0, cache_dir=cache, progress=False) == root
    assert len(server.requests) == count  # everything from the cache
    assert not (cell / "metrics.json").stat().st_mode & 0o222  # read-only: edits are not made by accident
    (cell / "metrics.json").chmod(0o644)
    (cell / "metrics.json").write_text('{"cell": "edited"}')  # a changed copy in the fetched folder is replaced
    with pytest.raises(CheckpointError, match="does not match its sha256"):  # offline: said, not used
        fetch_runs(url, categories="disc", variants="se", seeds=0, cache_dir=cache, progress=False)
    monkeypatch.delenv("ADNLIB_OFFLINE")
    fetch_runs(url, categories="disc", variants="se", seeds=0, cache_dir=cache, progress=False)
    assert json.loads((cell / "metrics.json").read_text()) == {"cell": "disc/se/seed0"}


def test_fetch_runs_refuses_entries_that_would_leave_their_folder(tmp_path):
    # catches a manifest (from any server) whose names or keys write outside the fetched folder
    digest = "0" * 64
    for entry in ({"name": "../../etc/x"}, {"name": "/abs/x"}, {"name": ".hidden/x"},
                  {"category": "..", "variant": "se", "seed": 0}, {"category": "disc", "variant": "a/b", "seed": 0}):
        with pytest.raises(CheckpointError, match="name|plain names"):
            fetch_runs({"checkpoints": [{**entry, "url": "https://example.invalid/x.pt", "sha256": digest}]},
                       cache_dir=tmp_path)
    bad_file = {"category": "disc", "variant": "se", "seed": 0, "url": "x.pt", "sha256": digest,
                "files": {"../metrics.json": {"url": "m.json", "sha256": digest}}}
    with pytest.raises(CheckpointError, match="must be one of"):
        fetch_runs({"version": 2, "checkpoints": [bad_file]}, cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="version 3"):
        fetch_runs({"version": 3, "checkpoints": []}, cache_dir=tmp_path)
    cell = {"category": "disc", "variant": "se", "seed": 0, "url": "x.pt", "sha256": digest}
    for name in ("disc/se/seed0", "disc/se/seed0/inner", "disc"):  # two runs' files in one folder
        with pytest.raises(CheckpointError, match="share a run folder"):
            fetch_runs({"checkpoints": [cell, {"name": name, "url": "y.pt", "sha256": digest},
                                        {"name": "disc-x", "url": "z.pt", "sha256": digest}]}, cache_dir=tmp_path)
    sibling = {"name": "disc-x/se/seed0", "url": "z.pt", "sha256": digest}  # 'disc-x' is not inside 'disc'
    fetch_runs({"checkpoints": [cell, sibling]}, names=[], categories="weave", cache_dir=tmp_path)  # not refused
    assert not any(tmp_path.iterdir())


def test_write_manifest_refuses_a_named_run_in_a_grid_cells_folder(tmp_path):
    # catches a course whose named run would overwrite a grid cell's files when fetched
    _fake_grid(tmp_path / "grid")
    with pytest.raises(CheckpointError, match="share a run folder"):
        write_manifest(tmp_path / "grid", None, tmp_path / "release" / "manifest.json",
                       named={"disc/se/seed0": tmp_path / "grid" / "disc" / "differnet" / "seed0"})
    assert not (tmp_path / "release").exists()  # nothing placed


def test_a_release_file_is_copied_whole_where_linking_fails(tmp_path, monkeypatch):
    # catches the copy fallback writing through a link planted at the asset's name, or leaving a partial file
    import os

    from adnlib.run import fetch
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(b"weights")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    release = tmp_path / "release"
    release.mkdir()
    (release / "asset.pt").symlink_to(victim)
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError("cross-device link")))
    fetch._place(source, release / "asset.pt")
    assert (release / "asset.pt").read_bytes() == b"weights"
    assert not (release / "asset.pt").is_symlink()
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in release.iterdir()) == ["asset.pt"]
