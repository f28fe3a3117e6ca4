"""PatchAlign3D, end to end: Stage 1 (distil a 2D teacher into patches), Stage 2 (align patches with text),
evaluation. With no arguments it runs the main job on the embedded synthetic part dataset.

    python recipes/patchalign3d.py                      # all stages on the embedded default
    python recipes/patchalign3d.py stage2 --loss point_level --label-noise 0.3
    python recipes/patchalign3d.py stage2 --import my_losses --loss my_losses:Focal --loss-args '{"gamma": 2}'
    python recipes/patchalign3d.py all --dataset lpsb --train-root A --eval-root B --out runs/lpsb
    python recipes/patchalign3d.py eval --checkpoint model_dir --eval-dataset shapenetpart --eval-root R \\
        --dataset-option class_choice=Cap
    torchrun --standalone --nproc-per-node 2 recipes/patchalign3d.py stage2 ...

Settings: recipes/configs/default.yaml < --preset NAME (recipes/configs/NAME.yaml, e.g. paper) < --config
FILE.yaml < the command line. The resolved configuration is written to OUT/config.yaml. `--max-minutes M`
bounds the whole command, evaluation included, and the learning-rate schedule spans it.

This file only composes: the engine, the stages, evaluation and the report live in `pa3d_train`
(`pa3d_train.main(argv)` runs the same thing from Python).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pa3d_train import main

CONFIGS = Path(__file__).resolve().parent / "configs"

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], config_dir=CONFIGS, prog="patchalign3d", description=__doc__))
