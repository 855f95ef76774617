"""Shared fixtures. Tests never touch the network: ADNLIB_OFFLINE makes 'auto' weights resolve to random."""
import os

os.environ["ADNLIB_OFFLINE"] = "1"

import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from adnlib.data.demo import make_demo_dataset  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The generated demo dataset (made once per test session)."""
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo")


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
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name or Path(filename).stem, folder / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
