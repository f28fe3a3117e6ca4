#!/usr/bin/env bash
# Create .venv and install the whole pa3d stack in the one order that works on a CPU machine:
#   1. torch + torchvision, pinned exactly (the compiled extensions below are built against this torch);
#   2. torch-scatter + torch-cluster with --no-build-isolation (their build imports torch; no wheels exist,
#      so they compile from source, one file at a time: ~30 minutes measured on 2 cores; pip caches the wheels);
#   3. pa3d itself, editable, with the dev, docs and offline-text extras, constrained to the same torch.
# Idempotent: a stamp records what was installed; a second run with nothing changed returns at once.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PIN="torch==2.15.0"
TORCHVISION_PIN="torchvision==0.29.2"
STAMP="$VENV/.pa3d-installed"
# Everything that changes what gets installed goes into the stamp's key.
KEY=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
    exit 0
fi

t0=$(date +%s)
step() { printf '[setup %4ds] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINTS="$VENV/constraints.txt"
printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" > "$CONSTRAINTS"

step "1/4 build tools (pip, setuptools, wheel)"
"${PIP[@]}" install -q --upgrade pip setuptools wheel

step "2/4 $TORCH_PIN $TORCHVISION_PIN (a large download on a first run)"
"${PIP[@]}" install -q "$TORCH_PIN" "$TORCHVISION_PIN"

if "$VENV/bin/python" -c "import torch_scatter, torch_cluster" 2>/dev/null; then
    step "3/4 torch-scatter and torch-cluster already importable"
else
    step "3/4 torch-scatter + torch-cluster: compiled from source against $TORCH_PIN"
    step "    (no wheels exist: about 30 minutes measured on a 2-core machine the first time, seconds once pip has cached them)"
    MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install --no-build-isolation -c "$CONSTRAINTS" torch-scatter torch-cluster
fi

step "4/4 pa3d (editable) with extras dev, docs, offline-text"
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e ".[accel,dev,docs,offline-text]"

"$VENV/bin/python" - <<'PY'
import torch, torch_scatter, torch_cluster, pa3d_layers, pa3d_losses, pa3d_models
print(f"[setup] torch {torch.__version__}, torch-scatter {torch_scatter.__version__}, "
      f"torch-cluster {torch_cluster.__version__}, pa3d {pa3d_models.__version__}")
PY
echo "$KEY" > "$STAMP"
step "done"
