"""The package skeleton: importable packages, versions, public surfaces, packaging and the CLI entry."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in ROOT.glob("pa3d_*") if (p / "__init__.py").is_file())
CORE_PACKAGES = ["pa3d_layers", "pa3d_losses", "pa3d_models"]


@pytest.mark.parametrize("name", CORE_PACKAGES)
def test_core_package_has_the_version(name):
    assert importlib.import_module(name).__version__ == "0.1.0"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_has_all(name):
    module = importlib.import_module(name)
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
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("make test")
    assert "scripts/ci_system_deps.sh" in ci  # the browser the app test drives, when that script exists
    assert "make test" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------------------------- set-up and make

SETUP = ROOT / "scripts" / "setup_env.sh"

#: A stand-in for .venv/bin/python: records each call (with MAX_JOBS and start/end times) instead of installing.
#: An extension build takes 1 s and leaves a marker, so `import torch_scatter, torch_cluster` succeeds afterwards.
STUB_PYTHON = r"""#!/usr/bin/env bash
venv="$(cd "$(dirname "$0")/.." && pwd)"
args="$*"
case "$args" in
    *"install -q uv")
        echo "$args" >> "$venv/calls.log"
        printf '#!/usr/bin/env bash\necho "uv $*" >> "%s/calls.log"\n' "$venv" > "$venv/bin/uv"
        chmod +x "$venv/bin/uv"
        ;;
    *"--no-build-isolation"*)
        ext="${!#}"
        echo "build $ext start $(date +%s.%N) MAX_JOBS=${MAX_JOBS:-unset}" >> "$venv/calls.log"
        sleep 1
        touch "$venv/built-$ext"
        echo "build $ext end $(date +%s.%N)" >> "$venv/calls.log"
        ;;
    "-c import torch_scatter, torch_cluster")
        [ -f "$venv/built-torch-scatter" ] && [ -f "$venv/built-torch-cluster" ]
        ;;
    "-")
        cat > /dev/null
        echo "$args" >> "$venv/calls.log"
        ;;
    *)
        echo "$args" >> "$venv/calls.log"
        ;;
esac
"""


def _stub_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(STUB_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    return venv


def _setup(level: str, venv: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(venv), PYTHON="false", **env_vars)
    return subprocess.run(["bash", str(SETUP), level], capture_output=True, text=True, env=env, timeout=120)


def _calls(venv: Path) -> list[str]:
    return (venv / "calls.log").read_text().splitlines() if (venv / "calls.log").exists() else []


def test_setup_demo_installs_the_core_stack_and_compiles_nothing(tmp_path):
    venv = _stub_venv(tmp_path)
    proc = _setup("demo", venv)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(venv)
    assert not any("no-build-isolation" in c or c.startswith("build ") for c in calls), calls
    # uv installs: pip puts it into the venv, then every install goes through it
    assert calls[0].endswith("-m pip --disable-pip-version-check install -q uv"), calls
    assert any(c.startswith("uv pip install -q --python") and " torch==2.15.0 torchvision==0.29.2 " in c
               for c in calls), calls
    assert any(c.startswith("uv pip install") and c.endswith("-e .[train,offline-text]") for c in calls), calls
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("[setup")]
    assert all(re.match(r"\[setup +\d+s\] ", ln) for ln in steps[:-1]) and steps[-1].endswith("done (demo)")
    # idempotent: the stamp makes a second run silent and instant
    again = _setup("demo", venv)
    assert again.returncode == 0 and again.stdout == "" and _calls(venv) == calls


def test_setup_test_builds_both_extensions_at_once_after_every_extra(tmp_path):
    venv = _stub_venv(tmp_path)
    proc = _setup("test", venv)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(venv)
    every = "-e .[text,offline-text,teacher,hub,data,train,cli,app,dev,docs]"
    extras = next(i for i, c in enumerate(calls) if every in c)
    builds = {c.split()[1]: c for c in calls if c.startswith("build ")}
    assert set(builds) == {"torch-scatter", "torch-cluster"}
    assert min(i for i, c in enumerate(calls) if c.startswith("build ")) > extras
    assert all("MAX_JOBS=1" in c for c in calls if " start " in c)
    span = {}
    for c in calls:
        if c.startswith("build "):
            _, ext, what, when = c.split()[:4]
            span.setdefault(ext, {})[what] = float(when)
    # at once: each build starts before the other ends
    assert span["torch-scatter"]["start"] < span["torch-cluster"]["end"]
    assert span["torch-cluster"]["start"] < span["torch-scatter"]["end"]
    assert "both at once" in proc.stdout and "minutes" in proc.stdout  # says how long the slow step takes
    assert proc.stdout.rstrip().endswith("done (test)")
    # `test` covers demo and accel: both return at once afterwards
    for level in ("demo", "accel", "test"):
        again = _setup(level, venv)
        assert again.returncode == 0 and again.stdout == "", level


def test_setup_installs_every_extra_of_pyproject_for_the_tests():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    listed = re.search(r'^TEST_EXTRAS="([^"]+)"', SETUP.read_text(), re.MULTILINE).group(1).split(",")
    # accel is its own step (two builds at once); all = the others plus accel
    assert set(listed) == extras - {"accel", "all"}


def test_setup_accel_after_demo_builds_only_the_extensions(tmp_path):
    venv = _stub_venv(tmp_path)
    assert _setup("demo", venv).returncode == 0
    before = len(_calls(venv))
    proc = _setup("accel", venv)
    assert proc.returncode == 0, proc.stderr
    new = _calls(venv)[before:]
    assert sorted(c.split()[1] for c in new if " start " in c) == ["torch-cluster", "torch-scatter"]
    assert not any("torch==2.15.0" in c or " -e ." in c for c in new), new


def test_setup_with_pip_only(tmp_path):
    venv = _stub_venv(tmp_path)
    proc = _setup("demo", venv, PA3D_INSTALLER="pip")
    assert proc.returncode == 0, proc.stderr
    calls = _calls(venv)
    assert not (venv / "bin" / "uv").exists() and not any(c.startswith("uv ") for c in calls), calls
    assert any(c.startswith("-m pip --disable-pip-version-check install -q torch==2.15.0 ") for c in calls), calls
    assert any(c.endswith("-e .[train,offline-text]") for c in calls), calls


def test_setup_rejects_an_unknown_purpose(tmp_path):
    proc = _setup("everything", _stub_venv(tmp_path))
    assert proc.returncode == 2
    assert "usage: scripts/setup_env.sh [demo|accel|test], got 'everything'" in proc.stderr


def _make_n(target: str) -> str:
    # `make test` runs this suite: a make inside it inherits MAKELEVEL/MAKEFLAGS and prints "Entering directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True,
                          check=True, env=env).stdout


def test_make_demo_does_not_wait_for_the_extensions_and_make_test_builds_them():
    demo, test, accel = _make_n("demo"), _make_n("test"), _make_n("accel")
    assert demo.splitlines()[0] == "bash scripts/setup_env.sh demo"
    assert "recipes/patchalign3d.py" in demo
    assert test.splitlines()[0] == "bash scripts/setup_env.sh test"
    assert accel.strip() == "bash scripts/setup_env.sh accel"
    # the tests and doctests of every library package
    pytest_line = next(ln for ln in test.splitlines() if "-m pytest" in ln)
    for pkg in sorted(p.name for p in ROOT.glob("pa3d_*") if (p / "__init__.py").is_file()):
        assert f" {pkg}" in pytest_line, pkg
