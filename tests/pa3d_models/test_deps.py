"""Optional dependencies: ``require`` imports or names the extra; no library module imports one eagerly."""

from __future__ import annotations

import ast
import importlib
import keyword
import re
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models.deps import OPTIONAL_DEPENDENCIES, MissingDependencyError, require

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
LIBRARY = sorted(p.name for p in ROOT.glob("pa3d_*") if (p / "__init__.py").is_file())
# The compiled extensions are detected by pa3d_layers itself (it may import no other pa3d package).
ACCEL = {"torch_cluster", "torch_scatter"}

_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s))


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def distributions_of(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names an extra installs, following ``pa3d[a,b]`` self-references."""
    out: set[str] = set()
    for req in EXTRAS[extra]:
        if req.startswith("pa3d["):
            for sub in req[len("pa3d[") : req.index("]")].split(","):
                if sub not in seen:
                    out |= distributions_of(sub.strip(), seen | {extra})
        else:
            out.add(_dist_name(req))
    return out


def test_distributions_of_follows_self_references():
    # hand-worked: train = pa3d[data,text,teacher] + pyyaml + matplotlib
    assert {"trimesh", "open-clip-torch", "timm", "pyyaml", "matplotlib"} <= distributions_of("train")
    assert distributions_of("teacher") == {"timm"}


@pytest.mark.parametrize("module", sorted(OPTIONAL_DEPENDENCIES))
def test_each_optional_module_is_installed_by_its_extra(module):
    dist, extra = OPTIONAL_DEPENDENCIES[module]
    assert extra in EXTRAS, f"{module}: extra {extra!r} is not in pyproject.toml"
    assert _dist_name(dist) in distributions_of(extra), f"pa3d[{extra}] does not install {dist} (for {module})"
    assert _dist_name(dist) in distributions_of("all"), f"pa3d[all] does not install {dist}"


def test_require_returns_the_module():
    assert require("json", "a test", extra="dev") is importlib.import_module("json")
    assert require("os.path", "a test", extra="dev") is importlib.import_module("os.path")


def test_require_names_feature_distribution_and_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "trimesh", None)  # None in sys.modules: import raises ImportError
    with pytest.raises(MissingDependencyError) as info:
        require("trimesh", "reading .glb meshes")
    assert str(info.value).startswith("reading .glb meshes needs 'trimesh', which cannot be imported (")
    assert str(info.value).endswith(": pip install 'pa3d[data]'")
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "trimesh"


def test_require_uses_the_distribution_name_and_an_explicit_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match=r"^--dataset-kw needs 'pyyaml', .*: pip install 'pa3d\[cli\]'$"):
        require("yaml", "--dataset-kw", extra="cli")


def test_require_a_submodule_reports_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    monkeypatch.setitem(sys.modules, "open_clip.factory", None)  # another test may have imported it
    with pytest.raises(MissingDependencyError, match=r"needs 'open_clip_torch'.*pip install 'pa3d\[text\]'"):
        require("open_clip.factory", "reading open_clip checkpoints")


def test_require_unknown_module_without_extra_is_a_value_error():
    with pytest.raises(ValueError, match=r"module 'surely_not_a_module' has no known pa3d extra: pass extra="):
        require("surely_not_a_module", "a test")


@given(name=_IDENT, extra=st.sampled_from(sorted(EXTRAS)), feature=st.text(min_size=1, max_size=20))
def test_require_missing_module_property(name, extra, feature):
    module = f"pa3d_missing_{name}"
    with pytest.raises(MissingDependencyError) as info:
        require(module, feature, extra=extra)
    message = str(info.value)
    assert message.startswith(f"{feature} needs {module!r}")
    assert message.endswith(f"pip install 'pa3d[{extra}]'")
    assert module not in sys.modules


@given(name=st.sampled_from(["json", "math", "os.path", "collections.abc", "importlib.util"]))
def test_require_equals_import_module_property(name):
    assert require(name, "a test", extra="dev") is importlib.import_module(name)


# ---------------------------------------------------------------------------------- static rule over the library


def _optional_top(module: str | None) -> str | None:
    top = (module or "").partition(".")[0]
    return top if top in OPTIONAL_DEPENDENCIES or top in ACCEL else None


def _is_guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``if TYPE_CHECKING:`` or a ``try:`` that handles ImportError."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test) and node in parent.body:
            return True
        if isinstance(parent, ast.Try) and node in parent.body:
            names = {ast.unparse(h.type) for h in parent.handlers if h.type is not None}
            if any("ImportError" in n or "Exception" in n for n in names):
                return True
        node = parent
    return False


def optional_import_violations(source: str, path: str) -> list[str]:
    """Eager imports of optional dependencies: at module level, or in a function that never calls require()."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops = [_optional_top(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            tops = [_optional_top(node.module)]
        else:
            continue
        for top in filter(None, tops):
            if _is_guarded(node, parents) or (top in ACCEL and "pa3d_layers" in path):
                continue
            func = node
            while func in parents and not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                func = parents[func]
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append(f"{path}:{node.lineno}: module-level import of {top}")
                continue
            calls = [
                n for n in ast.walk(func)
                if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(("require", "_pyplot"))
                and n.lineno < node.lineno
            ]
            if not any(top in ast.unparse(c) or ast.unparse(c.func).endswith("_pyplot") for c in calls):
                out.append(f"{path}:{node.lineno}: import of {top} in {func.name}() without require() before it")
    return out


def test_violation_finder_on_hand_written_cases():
    bad = "import timm\n\ndef f():\n    import trimesh\n    return trimesh\n"
    good = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import timm\n"
        "def f():\n    oc = require('open_clip', 'x')\n    from open_clip.model import y\n"
        "try:\n    import tqdm\nexcept ImportError:\n    tqdm = None\n"
    )
    assert optional_import_violations(bad, "m.py") == [
        "m.py:1: module-level import of timm",
        "m.py:4: import of trimesh in f() without require() before it",
    ]
    assert optional_import_violations(good, "m.py") == []


@pytest.mark.parametrize("package", LIBRARY)
def test_library_imports_optional_dependencies_only_through_require(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        found += optional_import_violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, (
        "optional dependencies must be imported lazily through pa3d_models.deps.require(MODULE, FEATURE) "
        "so a missing one names its pa3d extra:\n" + "\n".join(found)
    )
