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


@pytest.fixture(scope="session")
def tiny_root(demo_root, tmp_path_factory):
    """8 train, 3 normal and 3 anomalous test images of 'disc'."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    for split, n in (("train/good", 8), ("test/good", 3), ("test/crack", 3)):
        (root / "disc" / split).mkdir(parents=True)
        for f in sorted((demo_root / "disc" / split).iterdir())[:n]:
            shutil.copy(f, root / "disc" / split / f.name)
    return root


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
