"""The package's shape: layers that import only downwards (floor < model < data < run < explain, regression <
teach < cli), no private name used across modules, no import cycle (lazy imports included), short functions, and a
small public API."""
import ast
from pathlib import Path

import pytest

import adnlib

PACKAGE = Path(adnlib.__file__).parent
# The layers, bottom up: a module may import its own layer and those below it, never one above.
LAYERS = {"config": 0, "errors": 0, "io": 0, "locations": 0, "progress": 0, "seeds": 0, "version": 0,
          "model": 1, "data": 2, "run": 3, "explain": 4, "regression": 4, "teach": 5, "cli": 6, "__main__": 6}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """adnlib modules imported anywhere in the file (top level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adnlib"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("adnlib"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package uses absolute imports")
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_every_module_belongs_to_a_layer():
    # catches a new top-level module or package that no layer rule covers
    assert not [n for n in MODULES if n != "adnlib" and n.split(".")[1] not in LAYERS]


def test_layers_import_only_downwards():
    # catches the model importing the data or run layer (the model/weights.py -> run.fetch), the data layer
    # importing the run layer, the core importing explain/teach/cli, and so on: floor < model < data < run <
    # explain, regression < teach < cli
    upward = [f"{name} ({_layer(name)}) imports {target} ({_layer(target)})" for name, targets in GRAPH.items()
              if name != "adnlib" for target in targets if target != "adnlib" and _layer(target) > _layer(name)]
    assert not upward, upward


def _private_uses(path: Path) -> list[str]:
    """Private names (a leading underscore) that `path` takes from another adnlib module: `from adnlib.x import
    _y`, or `m._y` where m is an adnlib module it imported."""
    tree, found, aliases = ast.parse(path.read_text()), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adnlib"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                      and not a.name.startswith("__")]
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in MODULES})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("adnlib")})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    # catches `from adnlib.run.cell import RefusedCell` and the like: what another module needs is public there
    crossing = {name: _private_uses(path) for name, path in MODULES.items()}
    assert not {k: v for k, v in crossing.items() if v}


def test_there_is_no_import_cycle_even_through_lazy_imports():
    graph = {n: {t for t in ts if t != "adnlib"} for n, ts in GRAPH.items() if n != "adnlib"}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, target]))
            if target not in state:
                visit(target, [*stack, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def test_no_library_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, long


def test_the_public_api_is_small_and_importable():
    assert 5 <= len(adnlib.__all__) <= 32
    for name in adnlib.__all__:
        assert getattr(adnlib, name) is not None, name
    with pytest.raises(AttributeError):
        adnlib.no_such_name  # noqa: B018


# Third-party packages the child processes below start with: none of them imports adnlib (papermill is left out on
# purpose: its entry points import adnlib.teach.nbengine, the cycle a fresh import must survive).
# Third-party packages imported once before the forks: each child then imports only adnlib's own code (what the test
# is about: an import order inside adnlib), not seconds of matplotlib, papermill and Jupyter per module.
PRELOADED = ("numpy", "torch", "PIL.Image", "pandas", "scipy.stats", "scipy.ndimage", "sklearn.metrics",
             "FrEIA.framework", "matplotlib.pyplot", "tqdm.auto", "platformdirs", "nbformat", "nbclient",
             "ipywidgets", "IPython.display", "pytorch_grad_cam", "seaborn", "torchvision")  # not papermill: see above
IMPORT_EACH = """
import importlib, os, sys
for name in {preloaded!r}:
    importlib.import_module(name)
failed = []
for name in {modules!r}:
    pid = os.fork()
    if pid == 0:  # a child that has imported no adnlib module: the module alone, as `python -c "import ..."` does
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{{name}}: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print(failed)
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # catches an import cycle that only shows when a module is imported first (e.g. through a papermill entry point)
    import subprocess
    import sys
    modules = sorted(set(MODULES) - {"adnlib.__main__"})  # `python -m adnlib`: importing it runs the CLI
    code = IMPORT_EACH.format(preloaded=PRELOADED, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stderr[-3000:]


@pytest.mark.slow
def test_the_train_and_score_paths_import_no_torchvision_sklearn_or_matplotlib():
    # catches a top-level import that costs seconds at every process start (a grid starts one per cell):
    # torchvision (it pulls in torch._dynamo), scikit-learn (AUROC only, imported when computed), matplotlib
    import subprocess
    import sys
    code = ("import sys, adnlib.cli, adnlib.run.train, adnlib.run.evaluate, adnlib.run.checkpoint; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'sklearn', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def _third_party(path: Path, top_level: bool) -> set[str]:
    """Top-level names of the non-adnlib, non-standard-library packages a file imports (at its top level only, or
    anywhere in it)."""
    import sys
    names = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return {n for n in names if n != "adnlib" and n not in sys.stdlib_module_names and n != "__future__"}


def _declared() -> tuple[set[str], set[str]]:
    """(core, core + every extra) of pyproject.toml, as normalised distribution names (read with a pattern: tomllib
    is not in Python 3.10)."""
    import re
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    core_block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    extras_block = text.split("[project.optional-dependencies]")[1].split("\n[project.scripts]")[0]

    def names(block):
        return {m.lower().replace("_", "-") for m in re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M)}
    core = names(core_block)
    return core, core | names(extras_block)


def test_every_import_is_a_declared_dependency():
    # catches a package used but declared nowhere, arriving only as another package's dependency (scipy came with
    # scikit-learn): the core's top-level imports must be core dependencies, any other import a declared one
    from importlib.metadata import packages_distributions
    distributions = packages_distributions()
    core, everything = _declared()

    def dists(module):
        return {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
    for name, path in MODULES.items():
        if name == "adnlib" or _layer(name) <= LAYERS["run"]:  # the core: floor, model, data, run
            for module in _third_party(path, top_level=True):
                assert dists(module) & core, f"{name} imports {module} at its top: a core dependency"
        for module in _third_party(path, top_level=False):
            assert dists(module) & everything, f"{name} imports {module}: declare it"


def test_no_figure_text_is_set_below_9_pt():
    # catches a legend or title written at 7-8 pt: figures are saved at 100 dpi and shown at their own size in the
    # book, so 9 pt (12.5 px) is the smallest text a reader gets; matplotlib's default is 10 pt
    small = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
             for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.keyword) and node.arg in ("fontsize", "labelsize")
             and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (int, float))
             and node.value.value < 9]
    assert not small, small


def test_the_per_defect_legend_covers_no_bar():
    # catches a legend drawn inside the axes over the bars (notebook 04's figure: it hid CBAM's short 'stain' bar)
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from adnlib.teach import plots
    rows = [(variant, defect, auroc) for defect, values in {"chip": (0.84, 0.78, 0.86), "crack": (0.88, 0.72, 0.62),
                                                             "stain": (0.72, 0.52, 0.46)}.items()
            for variant, auroc in zip(("differnet", "se", "cbam"), values)]
    fig = plots.auroc_per_defect(pd.DataFrame(rows, columns=["variant", "defect_type", "auroc"]))
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [patch.get_window_extent() for patch in ax.patches if patch.get_height() > 0]
    assert len(bars) == 9
    assert not [bar for bar in bars if bar.overlaps(legend)]
