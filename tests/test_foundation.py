"""The package skeleton: importable packages, versions, public surfaces, packaging and the CLI entry."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["pa3d_layers", "pa3d_losses", "pa3d_models"]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_has_version_and_all(name):
    module = importlib.import_module(name)
    assert module.__version__ == "0.1.0"
    assert isinstance(module.__all__, list)
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names that do not exist: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_documented(name):
    module = importlib.import_module(name)
    undocumented = [
        n
        for n in module.__all__
        if (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
        and not inspect.getdoc(getattr(module, n))
    ]
    assert not undocumented, f"public names without a docstring in {name}: {undocumented}"


def test_every_subpackage_is_listed_for_setuptools():
    # setuptools does not auto-discover several top-level packages: a subpackage missing from the explicit
    # list would import from a checkout but vanish from a wheel.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject [tool.setuptools] packages: {on_disk - listed}"


def test_layers_import_neither_losses_nor_models():
    code = (
        "import sys, pa3d_layers; "
        "bad = [m for m in ('pa3d_losses', 'pa3d_models') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pa3d_layers imports {out.stdout.strip()}"


def test_cli_info_reports_backends(capsys):
    from pa3d_cli.main import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pa3d 0.1.0" in out and "torch-cluster:" in out and "torch-scatter:" in out


def test_cli_unknown_command_lists_choices(capsys):
    from pa3d_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "pa3d"
    if not exe.exists():
        pytest.skip("pa3d console script not installed in this environment (pip install -e .)")
    out = subprocess.run([str(exe), "info"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pa3d ")


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
