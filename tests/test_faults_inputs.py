"""Bad inputs and waits that must end at once with one `error:` line (exit 2) or a correct result (issue 21, items
4-7): notebook summaries against their schema, notebook parameters and environment, grid weights and damaged grid
cells, the Colab/Kaggle setup cell as a security boundary, bounded Ray connections and downloads, Ctrl-C during
`adnlib notebooks`, and the notebook engine importing on its own."""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import CommandRecorder, load_tool, loopback_server

from adnlib import cli
from adnlib.config import preset
from adnlib.errors import CheckpointError, OutputExistsError, WeightsError
from adnlib.regression import KIND, SCHEMA
from adnlib.run import fetch
from adnlib.run.cell import cell_action
from adnlib.run.cluster import ClusterError, check_reachable
from adnlib.teach import hosting
from adnlib.teach.hosting import HostedError, check_branch, github_path, install_command

REPOSITORY = Path(__file__).resolve().parents[1]
WAIT_S = 10  # the longest any helper thread or server here waits for anything
URL = "https://github.com/someone/attentdiffernet-course"
INJECTION = 'main", "--index-url=http://127.0.0.1:9/x'


def _cli(capsys, *args) -> tuple[int, list[str]]:
    """Run the CLI in-process -> (exit status, non-blank stderr lines)."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in args])
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _assert_one_error(rc: int, err: list[str], *fragments: str) -> None:
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


# --- 4. summaries against their schema -----------------------------------------------------------------------------
def _summary(**changes) -> dict:
    summary = {"schema": SCHEMA, "kind": KIND, "notebook": "00_quickstart", "status": "ok", "error": None,
               "settings": {"parameters": {}}, "metrics": {"a.json:auroc": 0.9, "a.json:loss": "nan"}, "units": {},
               "timings_s": {"wall": 1.0}, "artefacts": {"read": [], "missing": [], "skipped": {}, "unreadable": {}}}
    for key, value in changes.items():
        if value is KeyError:
            del summary[key]
        else:
            summary[key] = value
    return summary


def _write_summary(folder: Path, summary: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "00_quickstart.summary.json"
    path.write_text(json.dumps(summary))
    return path


@pytest.mark.parametrize("changes,message", [
    ({"metrics": KeyError}, 'field "metrics" is missing'),
    ({"metrics": None}, 'field "metrics" must be an object of numbers, not null'),
    ({"metrics": [0.9]}, 'field "metrics" must be an object of numbers, not an array'),
    ({"metrics": {"a.json:auroc": "high"}}, "field \"metrics\" entry 'a.json:auroc' must be a number, not a string"),
    ({"metrics": {"a.json:auroc": True}}, "field \"metrics\" entry 'a.json:auroc' must be a number, not a boolean"),
    ({"settings": "x"}, 'field "settings" must be an object, not a string'),
    ({"timings_s": None}, 'field "timings_s" must be an object of numbers, not null'),
    ({"artefacts": []}, 'field "artefacts" must be an object, not an array'),
    ({"artefacts": {"missing": "a.json"}}, 'field "artefacts.missing" must be an array, not a string'),
    ({"notebook": 3}, 'field "notebook" must be a string, not a number'),
])
def test_compare_refuses_a_summary_of_the_wrong_shape_with_exit_2(tmp_path, capsys, changes, message):
    # catches a summary whose field has the wrong type reaching the comparison: a traceback with exit 1, which CI
    # reads as drift
    good = _write_summary(tmp_path / "good", _summary())
    bad = _write_summary(tmp_path / "bad", _summary(**changes))
    rc, err = _cli(capsys, "drift", bad.parent, good.parent)
    _assert_one_error(rc, err, str(bad), message)


def test_compare_accepts_a_well_formed_summary_with_a_non_finite_metric(tmp_path, capsys):
    # catches a schema so strict that it refuses what adnlib writes itself (NaN written as "nan")
    run = _write_summary(tmp_path / "run", _summary())
    rc, err = _cli(capsys, "drift", run.parent, run.parent)
    assert rc == 0, err


@pytest.fixture
def run_all_calls(monkeypatch):
    """adnlib notebooks without running a notebook: the parameters of each run_all call."""
    calls = []

    def fake_run_all(out_dir, parameters=None, names=(), log=print):
        calls.append(parameters)
        return []
    monkeypatch.setattr("adnlib.teach.notebooks.run_all", fake_run_all)
    return calls


def test_a_bad_baseline_is_refused_before_any_notebook_runs(tmp_path, capsys, run_all_calls):
    # catches a baseline checked only after every notebook ran (an hour of notebooks, then a crash)
    baseline = _write_summary(tmp_path / "baseline", _summary(metrics=None))
    rc, err = _cli(capsys, "notebooks", "--only", "00_quickstart", "--out", tmp_path / "nb", "--baseline",
                   baseline.parent)
    _assert_one_error(rc, err, str(baseline), '"metrics"')
    assert run_all_calls == []


@pytest.mark.parametrize("pair,message", [
    (["nosuch", "3"], "parameter 'nosuch' is not in the parameters cell of 00_quickstart"),
    (["preset", '"nope"'], "unknown preset 'nope'; choose one of paper, demo, smoke"),
    (["preset", "3"], "unknown preset 3"),
])
def test_notebook_parameters_are_checked_before_any_notebook_runs(tmp_path, capsys, run_all_calls, pair, message):
    # catches a parameter no notebook declares (papermill only warns) or an unknown preset reaching the notebook
    rc, err = _cli(capsys, "notebooks", "--only", "00_quickstart", "--out", tmp_path / "nb", "-p", *pair)
    _assert_one_error(rc, err, message)
    assert run_all_calls == []


def test_known_notebook_parameters_still_run(tmp_path, capsys, run_all_calls):
    # catches a check that refuses a declared parameter or a known preset
    rc, err = _cli(capsys, "notebooks", "--only", "00_quickstart", "--out", tmp_path / "nb", "-p", "preset",
                   '"smoke"', "-p", "n_show", "2")
    assert rc == 0, err
    assert run_all_calls == [{"preset": "smoke", "n_show": 2}]


@pytest.mark.parametrize("variable", ["ADNLIB_CELL_TIMEOUT", "ADNLIB_LONG_CELL_TIMEOUT"])
def test_a_bad_cell_timeout_variable_is_refused_at_start(tmp_path, capsys, run_all_calls, monkeypatch, variable):
    # catches the variable read only inside the first notebook (reported as a failed notebook, exit 1)
    monkeypatch.setenv(variable, "abc")
    rc, err = _cli(capsys, "notebooks", "--only", "00_quickstart", "--out", tmp_path / "nb")
    _assert_one_error(rc, err, f"{variable} must be a whole number of seconds, got 'abc'")
    assert run_all_calls == []


# --- 4. grid weights and damaged cells -------------------------------------------------------------------------------
@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_grid_refuses_a_missing_weights_file_before_any_cell(tiny_root, tmp_path, capsys):
    # catches the weights path found missing by each cell, tried max_retries + 1 times, exit 1
    out = tmp_path / "grid"
    rc, err = _cli(capsys, "grid", "--data", tiny_root, "--categories", "disc", "--variants", "differnet",
                   "--preset", "smoke", "--epochs", "1", "--weights", tmp_path / "nonexistent.pth", "--out", out,
                   "--no-progress")
    _assert_one_error(rc, err, "weights file not found", "nonexistent.pth")
    assert not out.exists()


REQUESTED = preset("smoke", epochs=1).replace(variant="differnet", seed=0)


def _finished_cell(folder: Path, data_root: Path | None = None, **metrics) -> Path:
    """A cell folder that looks finished with REQUESTED's config (no training needed to plan it), with a stand-in
    checkpoint.pt that its metrics.json records (the grid verifies it before reusing a cell) and, with data_root,
    the backbone and data that REQUESTED would use on 'disc' there (what a grid compares before reusing it)."""
    import hashlib

    from adnlib.run.identity import expected_identity
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"stand-in weights")
    weights = {"checkpoint.pt": {"epoch": 1, "step": 1,
                                 "sha256": hashlib.sha256(b"stand-in weights").hexdigest()}}
    used = {} if data_root is None else expected_identity(REQUESTED, data_root, "disc")
    used.pop("protocol", None)
    saved = {"config": REQUESTED.to_dict(), "auroc": 0.9, "auroc_best": 0.95, "weights": weights, **used, **metrics}
    (folder / "metrics.json").write_text(json.dumps(saved))
    for name in ("scores.csv", "scores_best.csv"):
        (folder / name).write_text("path,label,score\na.png,0,1.0\n")
    return folder


def _edit_metrics(**changes):
    """A damage: metrics.json rewritten with `changes` (as a user editing it would)."""
    def edit(cell: Path) -> None:
        metrics = json.loads((cell / "metrics.json").read_text())
        (cell / "metrics.json").write_text(json.dumps({**metrics, **changes}))
    return edit


def test_an_intact_finished_cell_is_reused(tmp_path):
    # the control for the damaged cells below: catches a check that refuses every finished cell
    assert cell_action(_finished_cell(tmp_path / "cell"), REQUESTED) == "reuse"


@pytest.mark.parametrize("damage,message", [
    (lambda c: (c / "metrics.json").write_text("{not json"), "unreadable metrics.json"),
    (lambda c: (c / "metrics.json").write_text("[1, 2]"), "unreadable metrics.json"),
    (_edit_metrics(auroc="0.9"), "auroc '0.9', not an AUROC in [0, 1]"),
    (_edit_metrics(auroc=None), "auroc None, not an AUROC in [0, 1]"),
    (_edit_metrics(auroc_best=float("nan")), "auroc_best nan"),
    (_edit_metrics(auroc=1.5), "auroc 1.5"),
    (lambda c: (c / "scores.csv").unlink(), "scores.csv missing"),
])
def test_a_damaged_cell_is_refused_and_rerun_replaces_it(tmp_path, damage, message):
    # catches an edited or damaged cell reused (a traceback later, or a wrong table), and --rerun that still refuses
    cell = _finished_cell(tmp_path / "cell")
    damage(cell)
    with pytest.raises(OutputExistsError, match="pass --rerun to replace it") as caught:
        cell_action(cell, REQUESTED)
    assert message in str(caught.value)
    assert cell_action(cell, REQUESTED, rerun=True) == "train"


def test_grid_on_a_cell_with_a_string_auroc_is_one_error_line(tiny_root, tmp_path, capsys):
    # catches the traceback (format code 'f' for a str) the grid's report gave for an edited cell
    out = tmp_path / "grid"
    _finished_cell(out / "disc" / "differnet" / "seed0", tiny_root, auroc="0.9")
    rc, err = _cli(capsys, "grid", "--data", tiny_root, "--categories", "disc", "--variants", "differnet",
                   "--preset", "smoke", "--epochs", "1", "--out", out, "--no-progress")
    _assert_one_error(rc, err, "disc/differnet/seed0", "pass --rerun")


@pytest.mark.slow  # trains one smoke cell (about 10 s)
def test_rerun_replaces_a_corrupt_metrics_json(tiny_root, tmp_path, capsys):
    # catches --rerun answering "pass --rerun to replace it" again (the probe of issue 21)
    out = tmp_path / "grid"
    metrics = out / "disc" / "differnet" / "seed0" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("{not json")
    args = ["grid", "--data", tiny_root, "--categories", "disc", "--variants", "differnet", "--preset", "smoke",
            "--epochs", "1", "--out", out, "--no-progress"]
    rc, err = _cli(capsys, *args)
    _assert_one_error(rc, err, "unreadable metrics.json", "pass --rerun")
    rc, err = _cli(capsys, *args, "--rerun")
    assert rc == 0, err
    assert 0 <= json.loads(metrics.read_text())["auroc"] <= 1


# --- 5. the Colab/Kaggle setup cell as a security boundary ---------------------------------------------------------
hosted = load_tool("hosted.py")  # the repository's authoring tool (tools/hosted.py)
setup_cell_source = hosted.setup_cell_source

@pytest.fixture
def course_copy(tmp_path, monkeypatch):
    """pyproject.toml and the notebooks copied into tmp; hosted.main() writes there, never into the repository."""
    root = tmp_path / "course"
    shutil.copytree(REPOSITORY / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(REPOSITORY / "pyproject.toml", root / "pyproject.toml")
    real = hosted.set_repository
    monkeypatch.setattr(hosted, "set_repository",
                        lambda repository, branch, **kwargs: real(repository, branch, root=root, **kwargs))
    monkeypatch.setattr(hosted, "REPOSITORY", root)  # main() names the files it changed relative to it
    return root


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,message", [
    (["--branch", INJECTION], "not a usable git branch name"),
    (["--repository", "https://github.com/../.."], "not a GitHub repository address"),
    (["--repository", "https://github.com/-/-"], "not a GitHub repository address"),
    (["--repository", ""], "not a GitHub repository address: ''"),
    (["--branch", ""], "not a usable git branch name: '' (it is empty)"),
])
def test_hosted_refuses_bad_addresses_and_branches_and_changes_nothing(course_copy, capsys, args, message):
    # catches an injected pip argument, a path-escaping or invalid address, or '' keeping the old address silently
    before = _contents(course_copy)
    rc = hosted.main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    _assert_one_error(rc, err, message)
    assert _contents(course_copy) == before


def test_hosted_rewrites_the_copy_for_a_valid_address(course_copy, capsys):
    # the control for the refusals above: catches validation that refuses a valid address and branch
    assert hosted.main(["--repository", URL, "--branch", "feature/v1.2+x"]) == 0
    assert f'Repository = "{URL}"' in (course_copy / "pyproject.toml").read_text()


@pytest.mark.parametrize("owner", ["a", "a-b", "A1-b2-c3", "x" * 39])
@pytest.mark.parametrize("name", ["n", "x.y_z-1", ".github", "a..b"])
def test_valid_github_addresses_are_accepted(owner, name):
    assert github_path(f"https://github.com/{owner}/{name}") == f"{owner}/{name}"


@pytest.mark.parametrize("address", [
    "https://github.com/-a/b", "https://github.com/a-/b", "https://github.com/a--b/c",
    f"https://github.com/{'x' * 40}/b",
    "https://github.com/a/.", "https://github.com/a/..", "https://github.com/a/b c", "https://github.com/a/b/c",
    "https://github.com/a/b?x=1", "https://github.com/a/b#x", "http://github.com/a/b", "https://github.com.evil/a/b",
    "https://github.com/a_b/c",
])
def test_invalid_github_addresses_are_refused(address):
    with pytest.raises(HostedError, match="not a GitHub repository address"):
        github_path(address)


@pytest.mark.parametrize("branch", ["main", "v1.2", "feature/x", "release-2024+cu126", "a_b"])
def test_valid_branch_names_are_accepted(branch):
    assert check_branch(branch) == branch


@pytest.mark.parametrize("branch", [INJECTION, "", "-x", "a..b", "a.lock", "a/", "a//b", ".a", "a/.b", "a.", "a b",
                                    'a"b', "a'b", "a#egg=x", "a@{1}", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
                                    "a\tb", "é"])
def test_invalid_branch_names_are_refused(branch):
    with pytest.raises(HostedError, match="not a usable git branch name"):
        check_branch(branch)


def test_install_command_has_a_fixed_shape():
    # catches a branch or address able to add pip arguments: the argv always has the same eight items
    command = install_command(URL, "feature/x", python="py", versions={"torch": "2", "torchvision": "1"})
    assert command == ["py", "-m", "pip", "install", "--quiet", f"adnlib[notebooks] @ git+{URL}@feature/x",
                       "torch==2", "torchvision==1"]
    with pytest.raises(HostedError):
        install_command(URL, INJECTION)
    with pytest.raises(HostedError):
        setup_cell_source(URL, INJECTION)


def test_the_setup_cell_installs_on_kaggle(monkeypatch):
    # catches the Kaggle branch removed or broken (only the Colab branch was ever executed by a test)
    run, prepared = CommandRecorder(), []
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(hosting, "prepare", lambda: prepared.append(True))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(setup_cell_source(URL, "dev"), "setup-cell", "exec"), {})
    assert run.commands == [(install_command(URL, "dev"), {"check": True})]
    assert prepared == [True]


# --- 6. bounded waits: Ray connection ------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_at_once_naming_it():
    # catches a connection attempt without a deadline (Ray retries for many minutes) or a message without the address
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at {address}"):
        check_reachable(address, timeout=5)
    assert time.monotonic() - started < 5


def test_a_listening_ray_address_passes_the_check():
    # the control: catches a check that refuses every address
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert check_reachable(f"127.0.0.1:{listener.getsockname()[1]}", timeout=5) is None


def _namespace_problem() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot make a network namespace: {probe.stderr.strip()}"


@pytest.mark.slow  # imports Ray in a fresh process (15-30 s on 2 busy cores)
def test_grid_on_ray_at_a_dead_address_is_one_error_line(tiny_root, tmp_path):
    # catches `adnlib grid --engine ray --address 127.0.0.1:1` waiting for ever (the probe of issue 21)
    pytest.importorskip("ray")
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    command = (f"ip link set lo up && cd {tmp_path} && PYTHONPATH={REPOSITORY} exec {sys.executable} -m adnlib grid "
               f"--engine ray --address 127.0.0.1:1 --data {tiny_root} --categories disc --variants differnet "
               f"--preset smoke --epochs 1 --out {tmp_path / 'grid'} --no-progress")
    started = time.monotonic()
    proc = subprocess.run(["unshare", "--net", "bash", "-c", command], capture_output=True, text=True, timeout=120)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    _assert_one_error(proc.returncode, err, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert time.monotonic() - started < 60


# --- 6. bounded waits: downloads -----------------------------------------------------------------------------------
DATA = bytes(range(200))


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces DATA's size, then sends one byte every server.pause seconds (until released)."""
    timeout = WAIT_S

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        for byte in DATA:
            if self.server.release.wait(self.server.pause):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return


@pytest.fixture
def trickle(monkeypatch):
    """A server on 127.0.0.1 that trickles (one byte every 2 s): its URL. Shut down whatever the test does."""
    with loopback_server(monkeypatch, _Trickle, pause=2.0) as httpd:
        yield f"{httpd.url}/slow.pt"


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_a_trickling_download_ends_at_its_deadline_and_leaves_nothing(trickle, tmp_path):
    # catches a download bounded only per read: one byte every 2 s (per-read timeout 5 s) never timed out
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="not finished within its deadline of 3 s"):
        fetch.fetch_checkpoint(trickle, sha256=_sha(DATA), cache_dir=cache, progress=False, timeout=5, deadline=3)
    assert time.monotonic() - started < 3 + 5 + 1  # the deadline, at most one read's timeout, a margin
    assert list(cache.iterdir()) == []


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_the_imagenet_download_has_the_same_deadline(trickle, tmp_path, monkeypatch):
    # catches a second downloader for the weights without the overall deadline
    from adnlib.model import weights as weights_mod
    monkeypatch.setattr(weights_mod, "DOWNLOAD_DEADLINE_S", 3)
    target = tmp_path / "hub" / "alexnet-00000000.pth"
    started = time.monotonic()
    with pytest.raises(WeightsError, match="not finished within its deadline of 3 s"):
        weights_mod._download(trickle, target, timeout=5)
    assert time.monotonic() - started < 3 + 5 + 1
    assert list(target.parent.iterdir()) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(WAIT_S)
    return child.pid


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_a_killed_downloads_partial_file_is_removed_by_the_next_call(trickle, tmp_path):
    # catches temporary files of killed downloads left in the cache for ever, or a live download's file removed
    cache = tmp_path / "cache"
    target = fetch.cache_path(trickle, _sha(DATA), cache)
    cache.mkdir()
    from adnlib import io
    host = io._OWNER_TAG.rpartition("-")[0]
    dead = cache / f".{target.name}.{host}-{_dead_pid()}.0123456789ab.partial"
    alive = cache / f".{target.name}.{host}-{os.getpid()}.ba9876543210.partial"
    for path in (dead, alive):
        path.write_bytes(b"half")
    with pytest.raises(CheckpointError, match="deadline"):
        fetch.fetch_checkpoint(trickle, sha256=_sha(DATA), cache_dir=cache, progress=False, timeout=5, deadline=1)
    assert sorted(p.name for p in cache.iterdir()) == [alive.name]


@pytest.mark.parametrize("timeouts,message", [
    ({"timeout": -1}, "timeout must be a positive number of seconds, not -1"),
    ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
    ({"timeout": float("nan")}, "timeout must be a positive number of seconds, not nan"),
    ({"deadline": 0}, "deadline must be a positive number of seconds, not 0"),
])
def test_bad_timeouts_are_a_clear_error(tmp_path, timeouts, message):
    # catches a raw ValueError ("Timeout value out of range") from the socket layer
    with pytest.raises(CheckpointError, match=message) as caught:
        fetch.fetch_checkpoint(f"http://127.0.0.1:9/x.pt#sha256={'0' * 64}", cache_dir=tmp_path, progress=False,
                               **timeouts)
    assert isinstance(caught.value, ValueError)


def test_a_cache_path_that_is_a_file_is_a_clear_error(trickle, tmp_path):
    # catches a raw FileExistsError from mkdir
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    with pytest.raises(CheckpointError, match=f"cannot write into the cache folder {cache}"):
        fetch.fetch_checkpoint(trickle, sha256=_sha(DATA), cache_dir=cache, progress=False, timeout=5, deadline=3)
    assert cache.read_text() == "not a folder"


# --- 7. Ctrl-C during `adnlib notebooks`; the engine imports on its own ----------------------------------------------
def _sleeping_notebook(folder: Path, marker: Path) -> None:
    """notebooks/00_quickstart.ipynb of a stand-in course: a parameters cell, a quick cell, a cell that creates
    `marker` and sleeps (the executed notebook is saved only every 30 s: the marker says when the cell runs)."""
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("output_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(f"import time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(60)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "00_quickstart.ipynb")


# The first line gives Ctrl-C its usual meaning: a pytest-xdist worker ignores SIGINT, and a child started from it
# inherits that (a user's shell never does), so without it the SIGINT below would do nothing.
RUN_STAND_IN = """import signal; signal.signal(signal.SIGINT, signal.default_int_handler)
import sys
from pathlib import Path
import adnlib.teach.notebooks as notebooks
notebooks.NOTEBOOK_DIR = Path(sys.argv[1])
from adnlib.cli import main
sys.exit(main(["notebooks", "--only", "00_quickstart", "--out", sys.argv[2]]))
"""


# Imported by every Python started with it on the path; in the kernel alone (jupyter_client gives only the kernel
# JPY_PARENT_PID) it marks that the kernel is importing `site` and holds it there for a few seconds.
SLOW_KERNEL_START = """import os, time
if "JPY_PARENT_PID" in os.environ:
    open(os.environ["ADNLIB_TEST_KERNEL_MARKER"], "w").close()
    time.sleep(5)
"""


def _ctrl_c_when(tmp_path: Path, ready, python_path: tuple[Path, ...] = ()) -> tuple[int, list[str], Path]:
    """Run the stand-in course's notebook in a real `adnlib notebooks` process, send SIGINT once ready(partial
    notebook, marker) holds -> (exit status, stderr lines, partial notebook)."""
    marker = tmp_path / "sleeping"
    _sleeping_notebook(tmp_path / "course", marker)
    out = tmp_path / "out"
    partial = out / "00_quickstart.ipynb"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (REPOSITORY, *python_path))),
           "ADNLIB_OFFLINE": "1", "ADNLIB_TEST_KERNEL_MARKER": str(tmp_path / "kernel-starting")}
    proc = subprocess.Popen([sys.executable, "-c", RUN_STAND_IN, str(tmp_path / "course"), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready(partial, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT_S)
    return proc.returncode, [line for line in stderr.splitlines() if line.strip()], partial


@pytest.mark.slow  # starts a kernel (10-30 s on 2 busy cores)
def test_ctrl_c_during_a_notebook_is_one_line_naming_the_cell_and_the_partial_file(tmp_path):
    # catches the ~80-240 lines of asyncio "Task exception was never retrieved" and tracebacks, or a line that names
    # neither the notebook, the cell nor the partial notebook
    rc, err, partial = _ctrl_c_when(tmp_path, lambda partial, marker: marker.exists())
    assert rc == 130, err
    assert err == [f"error: interrupted: notebook 00_quickstart, cell 3 ('import time'); the partial notebook is "
                   f"{partial}"]
    assert nbformat.read(partial, as_version=4).cells[3].source.endswith("time.sleep(60)")  # the cell it names


@pytest.mark.slow  # starts a kernel (10-30 s on 2 busy cores)
def test_ctrl_c_while_the_kernel_starts_is_one_line_too(tmp_path):
    # catches a kernel left running after Ctrl-C during its start (it printed its own warning after our line), and
    # a shutdown that interrupts the kernel while it imports `site` ("Fatal Python error: init_import_site" and a
    # traceback: jupyter_client's shutdown sends SIGINT first)
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(SLOW_KERNEL_START)
    kernel_starting = tmp_path / "kernel-starting"
    rc, err, partial = _ctrl_c_when(tmp_path, lambda partial, marker: kernel_starting.exists(), (site_dir,))
    assert kernel_starting.exists(), "the kernel never started"
    assert rc == 130, err
    assert len(err) == 1, err
    assert err[0].startswith("error: interrupted: notebook 00_quickstart"), err
    assert err[0].endswith(f"the partial notebook is {partial}"), err


@pytest.mark.slow(seconds=3)  # over 2 s: left out of `make test-fast`
def test_the_notebook_engine_imports_in_a_fresh_interpreter():
    # catches the papermill entry-point cycle ("partially initialized module ... HeadlessEngine"), and a stand-in
    # engine that does not lead to the real one
    code = ("import adnlib.teach.nbengine as n\n"
            "from papermill.engines import papermill_engines\n"
            "engine = papermill_engines.get_engine('adnlib')\n"
            "assert engine.execute_managed_notebook == n.HeadlessEngine.execute_managed_notebook, engine\n")
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr

