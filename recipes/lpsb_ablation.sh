#!/usr/bin/env bash
# L-PSB ablation of docs/results.md: train on the first half of every category's shapes, evaluate on the other
# half; the default Stage-2 loss and the point_level ablation, each at label noise 0 and 0.3. Stage 1 runs
# once and every Stage-2 run starts from it. Usage: bash recipes/lpsb_ablation.sh [OUT] [extra recipe flags]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/lpsb_ablation}
shift || true
PY=${PY:-.venv/bin/python}
DATA=${PA3D_DATA:-../shared/data}/lpsb
COMMON=(--dataset lpsb --train-root "$DATA" --train-split first_half "$@")

$PY recipes/patchalign3d.py stage1 "${COMMON[@]}" --out "$OUT/stage1"
for loss in multi_positive_sigmoid point_level; do
  for noise in 0 0.3; do
    run="$OUT/${loss}_noise${noise}"
    $PY recipes/patchalign3d.py stage2 "${COMMON[@]}" --loss "$loss" --label-noise "$noise" \
        --stage1-checkpoint "$OUT/stage1/stage1/last.pt" --out "$run"
    $PY recipes/patchalign3d.py eval "${COMMON[@]}" --checkpoint "$run/stage2/model" --out "$run/eval"
  done
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| Stage-2 loss | label noise | instance mIoU | category mIoU |")
print("| --- | --- | --- | --- |")
for loss in ("multi_positive_sigmoid", "point_level"):
    for noise in ("0", "0.3"):
        m = json.loads((out / f"{loss}_noise{noise}" / "eval" / "metrics.json").read_text())
        print(f"| {loss} | {noise} | {100 * m['instance_miou']:.1f} | {100 * m['category_miou']:.1f} |")
PY
