"""The package's shape: the core never imports the teaching side, no import cycle (lazy imports included), short
functions, and a small public API."""
import ast
from pathlib import Path

import pytest

import adnlib

PACKAGE = Path(adnlib.__file__).parent
CORE = ("config", "errors", "version", "model", "data", "run")
OUTER = ("explain", "teach", "cli")


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


def test_the_core_never_imports_the_teaching_side():
    for name, targets in GRAPH.items():
        if name != "adnlib" and name.split(".")[1] in CORE:
            outer = [t for t in targets if t != "adnlib" and t.split(".")[1] in OUTER]
            assert not outer, f"{name} imports {outer}"


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
    assert 5 <= len(adnlib.__all__) <= 25
    for name in adnlib.__all__:
        assert getattr(adnlib, name) is not None, name
    with pytest.raises(AttributeError):
        adnlib.no_such_name  # noqa: B018
