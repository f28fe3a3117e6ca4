"""Packaging: what a plain ``pip install .`` gives.

The wheel is built from a copy of the source (so the checkout gets no ``build/`` or ``*.egg-info``) and checked:
pure Python (nothing compiles), every library package and module, the ``pa3d`` entry point, core requirements
only (everything else is an extra), no tests, data or weights. Installed into a folder of its own, it imports
and runs ``pa3d`` with every optional dependency hidden, and an optional feature then names its extra.
"""

from __future__ import annotations

import configparser
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE = {"torch", "einops", "numpy", "safetensors"}
#: The library packages a wheel must hold (pa3d_app joins once it exists).
EXPECTED_PACKAGES = [
    "pa3d_layers", "pa3d_losses", "pa3d_models", "pa3d_data", "pa3d_data.targets", "pa3d_train", "pa3d_cli",
] + (["pa3d_app"] if (ROOT / "pa3d_app" / "__init__.py").is_file() else [])
LIBRARY_DIRS = sorted(p.name for p in ROOT.glob("pa3d_*") if (p / "__init__.py").is_file())
#: Suffixes of data, weights and compiled code: none belongs in the wheel.
FORBIDDEN_SUFFIXES = {
    ".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".npz", ".npy", ".h5", ".hdf5", ".ply", ".obj", ".off",
    ".glb", ".gltf", ".stl", ".pcd", ".so", ".pyd", ".c", ".cpp", ".cu", ".onnx", ".tar", ".gz", ".zip",
}


def _copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    for pkg in LIBRARY_DIRS:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = _copy_source(work / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
         "-w", str(work / "dist"), f"{src}{os.sep}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (found,) = (work / "dist").glob("*.whl")
    return found


@pytest.fixture(scope="module")
def names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def _read(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name).decode()


def test_wheel_is_pure_python(wheel, names):
    assert wheel.name == "pa3d-0.1.0-py3-none-any.whl"  # no platform tag: nothing was compiled
    assert "Root-Is-Purelib: true" in _read(wheel, ".dist-info/WHEEL")
    compiled = [n for n in names if Path(n).suffix in {".so", ".pyd", ".c", ".cpp", ".cu"}]
    assert not compiled


def test_wheel_holds_every_library_package_and_module(names):
    packages = {n.rpartition("/")[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert set(EXPECTED_PACKAGES) <= packages, f"missing packages: {set(EXPECTED_PACKAGES) - packages}"
    on_disk = {
        str(p.relative_to(ROOT)).replace(os.sep, "/")
        for pkg in LIBRARY_DIRS
        for p in (ROOT / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in FORBIDDEN_SUFFIXES | {".pyc"}
    }
    missing = sorted(on_disk - set(names))
    assert not missing, (
        f"files of the library missing from the wheel: {missing} (a new subpackage goes into "
        "[tool.setuptools] packages, a non-Python file into [tool.setuptools.package-data])"
    )


def test_wheel_holds_no_tests_data_or_weights(names):
    tops = {n.split("/")[0] for n in names}
    assert tops == set(LIBRARY_DIRS) | {"pa3d-0.1.0.dist-info"}, tops
    forbidden = [n for n in names if Path(n).suffix.lower() in FORBIDDEN_SUFFIXES]
    assert not forbidden, f"data, weights or compiled code in the wheel: {forbidden}"
    assert not [n for n in names if re.search(r"(^|/)(tests?|conftest\.py|test_[^/]*\.py)($|/)", n)]


def test_wheel_declares_the_pa3d_console_script(wheel):
    entry = configparser.ConfigParser()
    entry.read_string(_read(wheel, ".dist-info/entry_points.txt"))
    assert dict(entry["console_scripts"]) == {"pa3d": "pa3d_cli:main"}


def test_wheel_requires_only_the_core_and_lists_every_extra(wheel):
    meta = email.parser.Parser().parsestr(_read(wheel, ".dist-info/METADATA"))
    unconditional = {
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in meta.get_all("Requires-Dist") if "extra ==" not in r
    }
    assert unconditional == CORE
    assert set(meta.get_all("Provides-Extra")) == set(PYPROJECT["project"]["optional-dependencies"])
    assert meta["Requires-Python"] == ">=3.11"


def test_pyproject_lists_the_library_packages():
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for pkg in LIBRARY_DIRS
        for p in (ROOT / pkg).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(listed) == on_disk, f"pyproject [tool.setuptools] packages vs disk: {set(listed) ^ on_disk}"
    assert set(EXPECTED_PACKAGES) <= set(listed)


# ------------------------------------------------------------------ installed, with optional dependencies hidden

#: Put first on PYTHONPATH as sitecustomize: every module outside the standard library, the core requirements
#: (with what they pull in) and pa3d itself is hidden, as in a clean environment holding only torch & co.
HIDE = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata as md, re, sys
    from packaging.requirements import Requirement

    def _norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo = set(), ["torch", "einops", "numpy", "safetensors"]
    while todo:
        dist = _norm(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        for r in requires:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    allowed = set(sys.stdlib_module_names) | {"sitecustomize", "_distutils_hack", "pkg_resources", "packaging"}
    allowed |= {m for m, dists in md.packages_distributions().items() if {_norm(d) for d in dists} & seen}

    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top not in allowed and not top.startswith("pa3d_") and not top.startswith("_"):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, _Hide())
    """
)

#: Run with HIDE active: import every module of the wheel, then try one feature per extra.
PROBE = textwrap.dedent(
    """
    import importlib, json, pathlib, pkgutil, sys, tempfile
    import torch

    site = pathlib.Path(sys.argv[1])
    imported = {}
    for pkg in sys.argv[2:]:
        mod = importlib.import_module(pkg)
        imported[pkg] = mod.__file__
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            imported[info.name] = importlib.import_module(info.name).__file__
    outside = {k: v for k, v in imported.items() if not pathlib.Path(v).is_relative_to(site)}

    from pa3d_models import DINOv2Teacher, MissingDependencyError, OpenCLIPTextEncoder
    from pa3d_models import SentenceTransformerTextEncoder
    from pa3d_models.checkpoint import resolve_checkpoint
    from pa3d_data.readers import read_mesh
    from pa3d_train.viz import save_part_figure
    from pa3d_cli.precompute_teacher import parse_dataset_kw

    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "mesh.ply").write_text("ply\\n")
    features = {
        "DINOv2Teacher": lambda: DINOv2Teacher(random_weights_ok=True),
        "OpenCLIPTextEncoder": lambda: OpenCLIPTextEncoder("ViT-B-32", None),
        "SentenceTransformerTextEncoder": lambda: SentenceTransformerTextEncoder(tmp),
        "hf://": lambda: resolve_checkpoint("hf://org/repo/model.pt"),
        "read_mesh(.ply)": lambda: read_mesh(tmp / "mesh.ply"),
        "save_part_figure": lambda: save_part_figure(tmp / "x.png", [{"points": torch.rand(4, 3)}]),
        "parse_dataset_kw": lambda: parse_dataset_kw(["a=1"]),
    }
    (tmp / "modules.json").write_text("[]")
    errors = {}
    for name, call in features.items():
        try:
            call()
            errors[name] = "no error"
        except MissingDependencyError as err:
            errors[name] = str(err)
    print(json.dumps({"outside": outside, "count": len(imported), "errors": errors}))
    """
)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(the folder the wheel is installed into, a folder whose sitecustomize hides the optional dependencies)"""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    hide = tmp_path_factory.mktemp("hide")
    (hide / "sitecustomize.py").write_text(HIDE)
    return target, hide


def _env(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join(map(str, paths)), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def test_installed_wheel_imports_and_names_extras_with_optional_dependencies_hidden(installed, tmp_path):
    site, hide = installed
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(site), *EXPECTED_PACKAGES],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(hide, site),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["outside"] == {}, "modules imported from outside the installed wheel"
    assert out["count"] >= 40
    expected = {
        "DINOv2Teacher": ("'timm'", "teacher"),
        "OpenCLIPTextEncoder": ("'open_clip_torch'", "text"),
        "SentenceTransformerTextEncoder": ("'sentence-transformers'", "offline-text"),
        "hf://": ("'huggingface_hub'", "hub"),
        "read_mesh(.ply)": ("'trimesh'", "data"),
        "save_part_figure": ("'matplotlib'", "train"),
        "parse_dataset_kw": ("'pyyaml'", "cli"),
    }
    for feature, (dist, extra) in expected.items():
        message = out["errors"][feature]
        assert f"needs {dist}, which cannot be imported" in message, (feature, message)
        assert message.endswith(f"pip install 'pa3d[{extra}]'"), (feature, message)


def test_installed_console_script_runs_with_optional_dependencies_hidden(installed, tmp_path):
    site, hide = installed
    proc = subprocess.run(
        [sys.executable, str(site / "bin" / "pa3d"), "info"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(hide, site),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("pa3d 0.1.0")
    assert "torch-cluster:" in proc.stdout


def test_installed_pa3d_segment_writes_a_labelled_ply(installed, tmp_path):
    # What `pip install .[cli]` gives: the installed wheel with this environment's extras, end to end.
    site, _ = installed
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).uniform(-1, 1, (512, 3)).astype(np.float32))
    out = tmp_path / "out.ply"
    proc = subprocess.run(
        [sys.executable, str(site / "bin" / "pa3d"), "segment", str(cloud), "--parts", "leg,seat",
         "--model", "patchalign3d_tiny", "--text-model", "fixed:16", "--output", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(site),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    head = out.read_bytes().split(b"end_header")[0].decode()
    assert "element vertex 512" in head and "property" in head and "label" in head
