#!/usr/bin/env bash
# The paper's noise claim on real data (docs/results.md): on the L-PSB first_half fold, the default Stage-2 loss
# and the point_level ablation, each at label noise 0 and 0.3, each a whole `all` run per seed within a budget.
# Usage: bash recipes/lpsb_ablation.sh [OUT] [extra recipe flags]; MINUTES (default 6), SEEDS (default 0,1) and
# JOBS (default 1): JOBS=2 runs two configurations side by side, each on one thread (OMP_NUM_THREADS=1), which on
# 2 cores halves the wall clock and gives each run half the compute of its budget.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/lpsb_ablation}
shift || true
PY=${PY:-.venv/bin/python}
DATA=${PA3D_DATA:-../shared/data}/lpsb
MINUTES=${MINUTES:-6}
SEEDS=${SEEDS:-0,1}
COMMON=(all --dataset lpsb --train-root "$DATA" --train-split first_half --max-minutes "$MINUTES" --seeds "$SEEDS" "$@")

JOBS=${JOBS:-1}
running=0
for loss in multi_positive_sigmoid point_level; do
  for noise in 0 0.3; do
    args=("${COMMON[@]}" --loss "$loss" --label-noise "$noise" --out "$OUT/${loss}_noise${noise}")
    if [ "$JOBS" -gt 1 ]; then
      mkdir -p "$OUT"
      OMP_NUM_THREADS=1 $PY recipes/patchalign3d.py "${args[@]}" > "$OUT/${loss}_noise${noise}.log" 2>&1 &
      running=$((running + 1))
      if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    else
      $PY recipes/patchalign3d.py "${args[@]}"
    fi
  done
done
wait
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| Stage-2 loss | label noise | instance mIoU (mean +- sd) | seeds |")
print("| --- | --- | --- | --- |")
for loss in ("multi_positive_sigmoid", "point_level"):
    for noise in ("0", "0.3"):
        summary = json.loads((out / f"{loss}_noise{noise}" / "seeds.json").read_text())["summary"]
        row = next(iter(next(iter(summary.values())).values()))["instance_miou"]  # primary run, evaluated set
        print(f"| {loss} | {noise} | {100 * row['mean']:.1f} +- {100 * row['sd']:.1f} | "
              f"{', '.join(f'{100 * v:.1f}' for v in row['values'])} |")
PY
