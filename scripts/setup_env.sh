#!/usr/bin/env bash
# Create .venv and install pa3d for one purpose, printing one line per step with the elapsed time:
#
#   scripts/setup_env.sh demo    torch + torchvision (pinned) and pa3d with the extras the demo needs
#                                (train, offline-text): a few minutes. The compiled extensions are NOT built:
#                                every op has a pure-PyTorch path, and the demo's log says which one it runs.
#   scripts/setup_env.sh accel   demo + torch-scatter and torch-cluster, compiled from source against the pinned
#                                torch, both at once (each compiles one file at a time, so two processes use two
#                                cores); pip caches the wheels, so later set-ups take seconds.
#   scripts/setup_env.sh test    everything `make test` needs: demo + every extra (all, dev, docs) + accel.
#
# uv installs (much faster than pip for torch's large wheels); PA3D_INSTALLER=pip uses pip throughout.
# Idempotent: a stamp per purpose records a hash of pyproject.toml and this script; a second run with nothing
# changed returns at once. Change dependencies in pyproject.toml only. PYTHON (default python3, >= 3.11) and
# VENV (default .venv) may be set in the environment.
set -euo pipefail

cd "$(dirname "$0")/.."
LEVEL=${1:-test}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PIN="torch==2.15.0"
TORCHVISION_PIN="torchvision==0.29.2"
DEMO_EXTRAS="train,offline-text"
# Every extra except accel (built by its own step, two processes at once) and all (which includes accel).
TEST_EXTRAS="text,offline-text,teacher,hub,data,train,cli,app,dev,docs"
EXTENSIONS=(torch-scatter torch-cluster)
# The longer build, torch-cluster, is the whole wait when both run at once: about 18 CPU-minutes measured on the
# 2-core development machine (AMD EPYC); one after the other, both took 19 minutes on a quiet machine (README).
ACCEL_EXPECTED="10 to 20 minutes on 2 free cores, longer when other jobs share them"

case "$LEVEL" in
    demo | accel | test) ;;
    *) echo "usage: scripts/setup_env.sh [demo|accel|test], got '$LEVEL'" >&2; exit 2 ;;
esac

KEY=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
stamped() { [ -f "$VENV/.pa3d-$1" ] && [ "$(cat "$VENV/.pa3d-$1")" = "$KEY" ]; }
stamp() { echo "$KEY" > "$VENV/.pa3d-$1"; }

# Nothing to do when this purpose (or `test`, which covers the others) is already installed.
if stamped "$LEVEL" || stamped test; then
    exit 0
fi

t0=$(date +%s)
step() { printf '[setup %4ds] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "pa3d needs Python >= 3.11: PYTHON=$PYTHON is $("$PYTHON" --version 2>&1 || echo 'not found')." \
             "Set PYTHON=/path/to/python3.11 and run again." >&2
        exit 1
    fi
    step "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
CONSTRAINTS="$VENV/constraints.txt"
printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" > "$CONSTRAINTS"

# The installer: uv (put into the venv by pip in seconds) downloads in parallel and installs faster than pip
# (measured on the development machine: torch + torchvision 92 s against pip's 239 s, the demo's extras 19 s against
# 165 s). PA3D_INSTALLER=pip forces pip, and pip takes over when uv cannot be installed. The compiled extensions
# are always built by pip, whose cache keeps the wheels.
INSTALL=("${PIP[@]}" install -q)
if [ "${PA3D_INSTALLER:-uv}" = uv ]; then
    if [ -x "$VENV/bin/uv" ] || { "${PIP[@]}" install -q uv > "$VENV/uv-install.log" 2>&1 && [ -x "$VENV/bin/uv" ]; }
    then
        INSTALL=("$VENV/bin/uv" pip install -q --python "$PY")
    else
        step "uv could not be installed (see $VENV/uv-install.log): pip installs instead"
    fi
fi

# --- the core stack and the demo's extras: what `make demo` waits for ------------------------------------------
if stamped demo; then
    step "core stack already installed ($TORCH_PIN)"
else
    step "$TORCH_PIN $TORCHVISION_PIN with ${INSTALL[0]##*/} (a large download the first time: 1.5 minutes measured)"
    "${INSTALL[@]}" "$TORCH_PIN" "$TORCHVISION_PIN" pip "setuptools>=77" wheel
    step "pa3d (editable) with the demo's extras [$DEMO_EXTRAS]"
    "${INSTALL[@]}" -c "$CONSTRAINTS" -e ".[$DEMO_EXTRAS]"
    stamp demo
fi

# --- every other extra: what the tests and the docs need ----------------------------------------------------------
if [ "$LEVEL" = test ]; then
    step "pa3d with every extra [$TEST_EXTRAS]"
    "${INSTALL[@]}" -c "$CONSTRAINTS" -e ".[$TEST_EXTRAS]"
fi

# --- the compiled extensions, both at once ------------------------------------------------------------------------
if [ "$LEVEL" = accel ] || [ "$LEVEL" = test ]; then
    if "$PY" -c "import torch_scatter, torch_cluster" 2>/dev/null; then
        step "torch-scatter and torch-cluster already importable"
    else
        cached=$("${PIP[@]}" cache list 'torch_scatter-*' 2>/dev/null | grep -c torch_scatter || true)
        cached=$(( cached + $("${PIP[@]}" cache list 'torch_cluster-*' 2>/dev/null | grep -c torch_cluster || true) ))
        if [ "$cached" -ge 2 ]; then
            expected="both wheels are in pip's cache: seconds"
        else
            expected="no wheels exist, compiled from source: $ACCEL_EXPECTED"
        fi
        step "torch-scatter + torch-cluster against $TORCH_PIN, both at once ($expected)"
        mkdir -p "$VENV/accel-logs"
        pids=()
        for ext in "${EXTENSIONS[@]}"; do
            # MAX_JOBS=1: each build is one process on one core; the two builds together use both cores.
            (
                start=$(date +%s)
                rc=0
                MAX_JOBS=1 "${PIP[@]}" install --no-build-isolation -c "$CONSTRAINTS" "$ext" \
                    > "$VENV/accel-logs/$ext.log" 2>&1 || rc=$?
                if [ "$rc" = 0 ]; then
                    step "    $ext ready in $(( $(date +%s) - start ))s (log: $VENV/accel-logs/$ext.log)"
                else
                    step "    $ext FAILED after $(( $(date +%s) - start ))s; the end of $VENV/accel-logs/$ext.log:"
                    tail -n 30 "$VENV/accel-logs/$ext.log" >&2
                fi
                exit "$rc"
            ) &
            pids+=($!)
        done
        failed=0
        for pid in "${pids[@]}"; do
            wait "$pid" || failed=1
        done
        [ "$failed" = 0 ] || exit 1
    fi
    "$PY" -c "import torch_scatter, torch_cluster" || { echo "torch-scatter/torch-cluster do not import" >&2; exit 1; }
    stamp accel
fi

"$PY" - <<'PY'
import torch, pa3d_layers, pa3d_losses, pa3d_models
from pa3d_layers._backend import WITH_TORCH_CLUSTER, WITH_TORCH_SCATTER

ext = "compiled" if WITH_TORCH_CLUSTER and WITH_TORCH_SCATTER else "pure-PyTorch (run `make accel` to compile them)"
print(f"[setup] torch {torch.__version__}, pa3d {pa3d_models.__version__}, backends: {ext}")
PY
[ "$LEVEL" = test ] && stamp test
step "done ($LEVEL)"
