"""The layout rule (CONTRIBUTING.md): one role per package, dependencies pointing one way, no import cycles.

Every ``import`` in every library module is read from the source (module level and inside functions alike;
only ``if TYPE_CHECKING:`` blocks are left out), so a lazy import cannot hide an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> the pa3d packages it may import (its own role and those below it).
ALLOWED: dict[str, set[str]] = {
    "pa3d_layers": set(),
    "pa3d_losses": {"pa3d_layers"},
    "pa3d_models": {"pa3d_layers", "pa3d_losses"},
    "pa3d_data": {"pa3d_layers", "pa3d_losses", "pa3d_models"},
    "pa3d_train": {"pa3d_layers", "pa3d_losses", "pa3d_models", "pa3d_data"},
    "pa3d_cli": {"pa3d_layers", "pa3d_losses", "pa3d_models", "pa3d_data", "pa3d_train"},
    "pa3d_app": {"pa3d_layers", "pa3d_losses", "pa3d_models", "pa3d_data", "pa3d_train", "pa3d_cli"},
}
PACKAGES = [p for p in ALLOWED if (ROOT / p).is_dir()]
NOT_IMPORTABLE = {"recipes", "benchmarks", "tests", "docs"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(f): f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """Modules ``name`` imports: ``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_library_packages_exist():
    assert {"pa3d_layers", "pa3d_losses", "pa3d_models", "pa3d_data", "pa3d_train", "pa3d_cli"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    bad = []
    for module, imported in GRAPH.items():
        if module.split(".")[0] != package:
            continue
        for target in imported:
            top = target.split(".")[0]
            if top in NOT_IMPORTABLE or (top in ALLOWED and top != package and top not in ALLOWED[package]):
                bad.append(f"{module} imports {target}")
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}: " + "; ".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles between library modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_all():
    missing = [m for m, p in MODULES.items() if "__all__" not in p.read_text(encoding="utf-8")
               and not m.rpartition(".")[2].startswith("_")]
    assert not missing, f"modules without __all__: {missing}"


def _lines(paths) -> int:
    return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)


def test_models_package_holds_at_most_30_percent_of_the_library():
    total = _lines(MODULES.values())
    models = _lines(p for m, p in MODULES.items() if m.split(".")[0] == "pa3d_models")
    assert models <= 0.30 * total, f"pa3d_models holds {models} of {total} library lines"


def test_recipes_are_short_and_import_no_other_recipe():
    recipes = sorted((ROOT / "recipes").glob("*.py"))
    assert recipes
    for path in recipes:
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 200, f"{path.name} has {n} lines; move reusable parts into a package"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.split(".")[0] in {"recipes", "runpy"} for m in mods), f"{path.name} imports {mods}"
