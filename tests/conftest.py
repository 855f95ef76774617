"""Shared fixtures and helpers. Tests never touch the network: ADNLIB_OFFLINE makes 'auto' weights resolve to random."""
import contextlib
import os

os.environ["ADNLIB_OFFLINE"] = "1"

import sys  # noqa: E402

# jsonschema (under nbformat) imports the optional rfc3987_syntax format checker when it is installed (JupyterLab's
# jupyter-events brings it), and that builds 39 lark grammars: 5 s in every test process. nbformat validates without
# format checks, so the tests tell jsonschema it is absent.
sys.modules.setdefault("rfc3987_syntax", None)

import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from adnlib.data.demo import make_demo_dataset  # noqa: E402

# two threads; one per process when pytest-xdist runs several (`make test`), so that they do not oversubscribe.
# The processes the tests start (notebook kernels, CLI runs) inherit OMP_NUM_THREADS: with torch's default of one
# thread per core, two notebooks run side by side on 2 cores took 162 s each instead of 35 s (benchmarks/README.md).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


REPOSITORY = Path(__file__).resolve().parents[1]
NOT_WATCHED = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}


def _tree(root: Path) -> set[str]:
    """Every path under the checkout, except version control, environments and caches Python keeps itself."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_WATCHED and not d.endswith(".egg-info")]
        found.update(os.path.relpath(os.path.join(folder, name), root) for name in dirs + files)
    return found


def _estimated_seconds(item) -> float:
    """A test's rough cost: `@pytest.mark.slow(seconds=...)`, 10 s for other slow tests, half a second otherwise."""
    mark = item.get_closest_marker("slow")
    return 0.5 if mark is None else float(mark.kwargs.get("seconds", 10))


DEFAULT_TIMEOUT_S = 300  # pyproject.toml's `timeout`: every test has a bound, so none can hang


def pytest_collection_modifyitems(items):
    """The costliest test files first. pytest-xdist (`--dist loadfile`) hands whole files to its workers in this
    order, so a long file collected last would otherwise run alone at the end while the other worker idles. A slow
    test without a timeout of its own gets 10 times its estimate (at least the default): bounded, never hanging."""
    cost: dict = {}
    for item in items:
        cost[item.path] = cost.get(item.path, 0.0) + _estimated_seconds(item)
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(max(DEFAULT_TIMEOUT_S, 10 * _estimated_seconds(item))))
    items.sort(key=lambda item: -cost[item.path])  # stable: each file's tests stay together and in their order


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean():
    """Tests write only under pytest's temporary folders (and the user cache): a path that appears in the checkout
    during the session fails it at the end, naming the paths."""
    before = _tree(REPOSITORY)
    yield
    new = sorted(_tree(REPOSITORY) - before)
    assert not new, f"tests wrote into the checkout: {new[:20]}"


def _session_dir(tmp_path_factory) -> Path:
    """A folder of this test session that every pytest-xdist worker sees (each worker's own base folder lies in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


SHARED_WAIT_S = 1800  # how long a worker waits for another one that is making a shared result


def shared(tmp_path_factory, key: str, make) -> Path:
    """The folder `<session>/shared/<key>`, filled by make(folder) once per test session, by whichever worker asks
    first; the others wait for it (its write lock, at most SHARED_WAIT_S) and then read it. A failed make leaves no
    result: the next caller makes it again (and fails the same way, in its own test)."""
    from adnlib.run.lock import folder_lock
    folder = _session_dir(tmp_path_factory) / "shared" / key
    with folder_lock(folder, wait=SHARED_WAIT_S, command=f"test session: {key}"):
        done = folder / ".made"
        if not done.exists():
            for old in folder.iterdir():
                if old.name != ".adnlib.lock":
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
            make(folder)
            done.write_text("made\n")
    return folder


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The generated demo dataset (made once per test session, shared by the workers)."""
    return shared(tmp_path_factory, "demo-data", lambda folder: make_demo_dataset(folder / "demo")) / "demo"


# The whole course with smoke parameters, the exercises' solutions included (`solutions = True`): notebook 03
# trains the three variants (and, in its solutions, seeds 1 and 2), notebooks 04-06 read its runs, notebook 06
# reports the three seeds without training (ORH's verdict needs them); notebook 04 scores with 4 of its 8 rotations.
COURSE = {"preset": "smoke", "weights": "none", "device": "cpu", "solutions": True, "seeds": [0, 1, 2],
          "n_rotations": 4, "categories": ["disc"], "n_show": 1, "max_images": 8, "toy_steps": 30, "toy_blocks": 2,
          "toy_hidden": 16}


@pytest.fixture(scope="session")
def course_run(tmp_path_factory, demo_root):
    """All seven notebooks executed once per test session with COURSE, in course order, into one folder (as `make
    demo` runs them): -> that folder (<notebook>.ipynb and <notebook>/ artefacts). The notebooks' tests, the
    solutions' test and the book read it."""
    from adnlib.teach.notebooks import run_notebooks

    def make(folder: Path) -> None:
        runs, _ = run_notebooks(folder, {"data_root": str(demo_root), **COURSE}, log=lambda line: None)
        failed = [run.error for run in runs if not run.ok]
        assert not failed, failed
    return shared(tmp_path_factory, "course", make)


WORKFLOW_FILE = REPOSITORY / ".github" / "workflows" / "regression.yml"


def workflow_command() -> list[str]:
    """The `adnlib notebooks ...` command that .github/workflows/regression.yml runs, as an argument list."""
    import shlex
    text = WORKFLOW_FILE.read_text()
    found = re.search(r"^\s*(adnlib notebooks (?:.*\\\n)*.*)$", text, flags=re.MULTILINE)
    assert found, "no `adnlib notebooks` command in regression.yml"
    return shlex.split(found.group(1).replace("\\\n", " "))


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory, demo_root):
    """The regression workflow's command run as it stands (notebooks 00 and 04, smoke parameters, compared with the
    committed baseline), once per test session: -> (folder of the run, completed process). Only --out moves (to
    the session's folder) and the data is the generated demo data ($ADNLIB_DATA); every test that reads notebooks
    00 and 04 with the smoke parameters reads this run."""
    import json
    import subprocess
    import sys

    def make(folder: Path) -> None:
        command = workflow_command()
        command[command.index("--out") + 1] = str(folder / "run")
        env = {**os.environ, "ADNLIB_DATA": str(demo_root)}
        done = subprocess.run([sys.executable, "-m", "adnlib", *command[1:]], cwd=REPOSITORY, env=env,
                              capture_output=True, text=True, timeout=900)
        (folder / "process.json").write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout,
                                                         "stderr": done.stderr}))
    folder = shared(tmp_path_factory, "regression-workflow", make)
    process = json.loads((folder / "process.json").read_text())
    return folder / "run", subprocess.CompletedProcess([], process["returncode"], process["stdout"],
                                                      process["stderr"])


@pytest.fixture(scope="session")
def screens(tmp_path_factory):
    """Where the browser tests keep their screenshots (pytest's temporary folder, kept for the last runs)."""
    return tmp_path_factory.mktemp("screens")


def _cut_down(demo_root, root, defects: dict[str, str]):
    """The demo categories in `defects` ({category: one defect}) cut to 8 train, 3 good and 3 defective test images."""
    for category, defect in defects.items():
        for split, n in (("train/good", 8), ("test/good", 3), (f"test/{defect}", 3)):
            (root / category / split).mkdir(parents=True)
            for f in sorted((demo_root / category / split).iterdir())[:n]:
                shutil.copy(f, root / category / split / f.name)
    return root


@pytest.fixture(scope="session")
def tiny_root(demo_root, tmp_path_factory):
    """8 train, 3 normal and 3 anomalous test images of 'disc'."""
    return _cut_down(demo_root, tmp_path_factory.mktemp("tiny") / "data", {"disc": "crack"})


@pytest.fixture(scope="session")
def tiny_grid_root(demo_root, tmp_path_factory):
    """Both demo categories cut down to 8 train, 3 good and 3 defective test images: a grid of 4 cells in seconds."""
    return _cut_down(demo_root, tmp_path_factory.mktemp("grid") / "data", {"disc": "crack", "weave": "hole"})


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def load_tool(filename: str):
    """A module of tools/ (repository scripts, not part of the package), imported as `python tools/<file>` would
    (tools/ on the path, for its imports of its neighbours); once per process."""
    import importlib
    import sys
    folder = str(Path(__file__).resolve().parents[1] / "tools")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(Path(filename).stem)


@contextlib.contextmanager
def serve_folder(folder):
    """A folder on an HTTP server bound to 127.0.0.1 (a free port) -> its base URL; the server stops on exit."""
    import http.server
    import threading
    from functools import partial
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def launch_chromium(playwright):
    """Chromium, headless, driven by Playwright: the one that tools/browser.py finds (`make test` provides it first);
    the test fails with what to install when there is none."""
    browser = load_tool("browser.py")
    executable = browser.find(playwright)  # inside this Playwright: a second one cannot start
    if executable is None:
        pytest.fail(f"no Chromium for this browser test: {browser.ADVICE} (`make test` runs tools/browser.py first)")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=60_000)


@pytest.fixture(scope="session")
def tiny_mask_root(demo_root, tmp_path_factory):
    """tiny_root's images of 'disc' with the ground-truth masks of its 3 defective test images (for localize)."""
    root = _cut_down(demo_root, tmp_path_factory.mktemp("tiny_masks") / "data", {"disc": "crack"})
    masks = root / "disc" / "ground_truth" / "crack"
    masks.mkdir(parents=True)
    for image in sorted((root / "disc" / "test" / "crack").iterdir()):
        shutil.copy(demo_root / "disc" / "ground_truth" / "crack" / f"{image.stem}_mask.png", masks)
    return root


@pytest.fixture
def adnlib_cli(monkeypatch, capsys):
    """Run `adnlib ARGS...` in-process (adnlib.cli.main) -> (exit status, stdout, non-empty stderr lines)."""
    import warnings

    from adnlib import cli
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)

    def run(*args):
        capsys.readouterr()
        rc = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return rc, captured.out, [line for line in captured.err.splitlines() if line.strip()]
    return run


def load_benchmark(filename: str, name: str | None = None):
    """A module of benchmarks/ (not a package), imported with benchmarks/ on the path for its own imports."""
    import importlib.util
    import sys
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name or Path(filename).stem, folder / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


# The generated sentences of notebooks 02, 04 and 06 checked against the numbers their runs saved (used by
# tests/test_notebooks.py with random weights and tests/test_prose.py with a saved weights file).
def _markdown_outputs(notebook) -> str:
    import nbformat
    executed = nbformat.read(notebook, as_version=4)
    return "\n".join(o["data"]["text/markdown"] for c in executed.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))


def check_03_sentences(out, variants) -> None:
    """Every generated sentence of notebook 03's run in `out` against the numbers the run saved."""
    import pandas as pd
    text = _markdown_outputs(out.parent / "03_training_attentdiffernet.ipynb")
    shrink = pd.read_csv(out / "shrinkage.csv")
    norms = shrink[shrink["quantity"] == "feature_norm"].set_index("variant")["last/first"]
    noise = abs(100 * (norms["differnet"] - 1)) if "differnet" in norms else 0.0  # the frozen embedding's drift
    for variant in variants:
        ratio = norms[variant]
        if variant == "differnet":  # the reference: its change is stated, with no verdict
            stated = re.search(r"\*\*differnet\*\*: the embedding of the frozen reference changed \(([-+]\d+\.\d) %",
                               text)
            assert stated, text
            assert float(stated.group(1)) == pytest.approx(100 * (ratio - 1), abs=0.051)
            continue
        sentence = re.search(rf"\*\*{variant}\*\*: the embedding (shrank|grew|kept its size)[^(]*\(([-+]\d+\.\d) %",
                             text)
        assert sentence, text
        assert float(sentence.group(2)) == pytest.approx(100 * (ratio - 1), abs=0.051)
        change, threshold = 100 * (ratio - 1), max(1.0, 2 * noise)
        word = "shrank" if change < -threshold else "grew" if change > threshold else "kept its size"
        assert sentence.group(1) == word
    _check_gate_movement(out, text)
    histories = {"differnet": out / "runs" / "disc" / "differnet" / "seed0" / "history.csv",
                 "se": out / "runs" / "disc" / "se" / "seed0" / "history.csv",
                 "se, open gates": out / "runs" / "open-gates" / "disc" / "se" / "seed0" / "history.csv"}
    histories = {k: pd.read_csv(v) for k, v in histories.items()}
    reference = histories["differnet"]["feature_norm"].iloc[0]
    for name in ("se", "se, open gates"):
        ratio = reference / histories[name]["feature_norm"].iloc[0]
        if 1 / 1.05 <= ratio <= 1.05:
            assert f"**{name}**: its embedding at epoch 1 is about the size of differnet's ({ratio:.2f}x)" in text
        else:
            stated = re.search(rf"\*\*{re.escape(name)}\*\*: its embedding at epoch 1 is (\d+\.\d)x "
                               f"{'smaller' if ratio > 1 else 'larger'}", text)
            assert stated
            assert float(stated.group(1)) == pytest.approx(ratio if ratio > 1 else 1 / ratio, abs=0.051)
        last = histories[name].dropna(subset=["auroc"]).iloc[-1]
        auroc = re.search(rf"\*\*{re.escape(name)}\*\*:[^\n]*AUROC (\d+\.\d) % at epoch {int(last['epoch'])}", text)
        assert auroc
        assert float(auroc.group(1)) == pytest.approx(100 * last["auroc"], abs=0.051)


def _check_gate_movement(out, text: str) -> None:
    """03's "did the gates move?" sentences, recomputed from the saved histories: the largest first-to-last change
    of any block's mean gate, and the verdict on the side of GATES_MOVED that the number falls."""
    import pandas as pd

    from adnlib.teach.analysis import GATES_MOVED
    movement = pd.read_csv(out / "gate_movement.csv")
    assert len(movement), "no attention run in the table"
    for _, row in movement.iterrows():
        history = pd.read_csv(out / "runs" / "disc" / row["variant"] / "seed0" / "history.csv")
        gates = [c for c in history.columns if c.startswith(("gate_mean_", "spatial_mean_"))]
        shift = max(abs(history[c].iloc[-1] - history[c].iloc[0]) for c in gates)
        assert row["shift"] == pytest.approx(shift, abs=1e-9)
        if len(history) < 2:  # one row, an epoch's mean: no movement can be seen, and the sentence says so
            assert f"**{row['variant']}**: one epoch only" in text
            assert "barely trained" not in text
            continue
        sentence = next(line for line in text.splitlines()
                        if line.startswith(f"**{row['variant']}**: the gate that moved most"))
        assert f"from {row['first_epoch']:.4f} to {row['last_epoch']:.4f}" in sentence
        assert ("barely trained" in sentence) == (shift < GATES_MOVED)


def check_04_sentences(out) -> None:
    """Notebook 04's sentences against its AUROC-vs-rotations table."""
    import pandas as pd
    text = _markdown_outputs(out.parent / "04_auroc_evaluation.ipynb")
    table = pd.read_csv(out / "auroc_vs_rotations.csv")
    for _, part in table.groupby("variant"):
        first, last = part.iloc[0], part.iloc[-1]
        assert (f"AUROC {100 * first['auroc']:.1f} % with {int(first['n_rotations'])} rotation(s), "
                f"{100 * last['auroc']:.1f} % with {int(last['n_rotations'])}") in text
        assert f"±{100 * last['fresh_std']:.1f} at {int(last['n_rotations'])}" in text
    from adnlib.run.stats import auroc_interval
    scores = pd.read_csv(out / "scores.csv")  # the n_rotations scores the ranking sentence is about
    for variant, part in scores.groupby("variant"):
        interval = auroc_interval(part["label"], part["score"], n_boot=1000, seed=0)  # the notebook's seed
        assert (f"{variant} {100 * interval['auroc']:.1f} % (95 % interval over the test images "
                f"{100 * interval['low']:.0f}–{100 * interval['high']:.0f})") in text, text


def check_06_sentences(out, random_weights: bool) -> None:
    """Notebook 06's verdict sentences against its paired comparison table."""
    import pandas as pd
    text = _markdown_outputs(out.parent / "06_benchmark_report.ipynb")
    paired = pd.read_csv(out / "paired_comparison.csv")
    for _, mean in paired[paired["category"] == "mean"].iterrows():  # one sentence per attention variant
        sentence = next(line for line in text.splitlines() if line.startswith(f"**{mean['variant']} − "))
        assert f"{mean['delta']:+.1f} AUROC points" in sentence
        assert f"[{mean['ci_low']:+.1f}, {mean['ci_high']:+.1f}]" in sentence
        if pd.isna(mean["p"]):  # fewer than 3 seeds: the sentence must say there is no verdict
            claim = "no verdict"
        else:
            claim = "by more than the noise" if mean["beyond_noise"] else "cannot be told apart from noise"
        assert claim in sentence
    assert ("**random** backbone weights" in text) == random_weights


class CommandRecorder:
    """A stand-in for subprocess.run that records (command, kwargs) and succeeds."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, **kwargs):
        import subprocess
        self.commands.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0)


@contextlib.contextmanager
def loopback_server(monkeypatch, handler, **attributes):
    """A threaded HTTP server on 127.0.0.1 serving `handler` (online mode, no proxy for loopback), with
    `attributes` and a `release` Event set on it, and `url`; shut down and joined (bounded) whatever the test does."""
    import http.server
    import threading
    monkeypatch.setenv("ADNLIB_OFFLINE", "0")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads, httpd.release = True, threading.Event()
    for name, value in attributes.items():
        setattr(httpd, name, value)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
