"""Probe a training setting quickly: Stage 2 alone (random init, every parameter trained) for SECONDS, scored on
the shapes it trained on and on the held-out ones, at the trained patch grouping and at G/K scaled to the
evaluation resolution. One JSON line on stdout. This is how the defaults of issue 14 were chosen
(docs/results.md, "Choosing the defaults").

    python scripts/stage2_probe.py 180 --dataset lpsb --train-root ../shared/data/lpsb --train-split first_half
    python scripts/stage2_probe.py 180 --dataset lpsb --train-root ../shared/data/lpsb --train-split first_half \\
        --init-bias -10 --amp none                                   # the previous defaults

    python scripts/stage2_probe.py 180 --dataset lpsb --train-root ../shared/data/lpsb \\
        --eval-categories Bird,Cup,Octopus,Teddy                     # cross-category: unseen categories only

Every recipe flag is accepted (recipes/configs/default.yaml < flags); a --train-split (the held-out half is
scored, and the trained-on half) or a category split (--eval-categories / --train-categories / --split-file:
the evaluated categories are scored) is needed so that held-out shapes exist.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    from pa3d_data import build_dataset, split_by_category
    from pa3d_models import resolve_text_encoder
    from pa3d_models.text import TextBank
    from pa3d_train import resolve_config
    from pa3d_train.engine import init_distributed, seed_everything
    from pa3d_train.evaluate import evaluate_segmentation
    from pa3d_train.stages import (
        all_prompts,
        build_datasets,
        eval_candidates,
        eval_grouping,
        model_transform,
        new_model,
        train_stage2,
    )

    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(argv[0])
    cfg = resolve_config(["all", *argv[1:]], config_dir=ROOT / "recipes" / "configs")
    split = cfg["eval_categories"] or cfg["train_categories"] or cfg["split_file"]
    if not cfg["train_split"] and not split:
        print("stage2_probe: pass --train-split first_half (or second_half), or a category split "
              "(--eval-categories ...)", file=sys.stderr)
        return 2
    cfg.update(stage2_epochs=None, resume=False)
    ctx = init_distributed(cfg["device"])
    seed_everything(cfg["seed"])
    sets = build_datasets(cfg)
    bank = TextBank.build(all_prompts(sets), resolve_text_encoder(cfg["text_model"]))
    model = new_model(cfg, text_dim=bank.dim, teacher_dim=1).to(ctx.device)
    with tempfile.TemporaryDirectory() as out:
        cfg["out"] = out
        t0 = time.monotonic()
        result = train_stage2("stage2", model, sets["train"], bank, None, cfg, ctx=ctx, out=Path(out), policy="none",
                              budget_s=seconds, log=None)
        train_seconds = time.monotonic() - t0
    steps = sum(row.get("steps", 0) for row in result.history)
    eval_n = sets["eval"][0].num_points
    scored = {"held_out": sets["eval"]}
    if cfg["train_split"]:
        raw = build_dataset(cfg["dataset"], cfg["train_root"], seed=cfg["seed"], num_points=eval_n,
                            **dict(cfg["dataset_option"]))
        raw.allow_fewer = True
        first, second = split_by_category(raw)
        scored["trained_on"] = first if cfg["train_split"] == "first_half" else second
    grouper = model.encoder.grouper
    trained = (grouper.num_groups, grouper.group_size)
    scores = {}
    for gk in (trained, eval_grouping(cfg, *trained, eval_n)):
        grouper.num_groups, grouper.group_size = gk
        for name, ds in scored.items():
            summary = evaluate_segmentation(model.eval(), ds, bank, transform=model_transform(cfg, train=False),
                                            candidates=eval_candidates({"train": sets["train"], "eval": ds}, "eval"))
            scores[f"{name}@G{gk[0]}K{gk[1]}"] = round(100 * summary["instance_miou"], 1)
            if split and name == "held_out":
                scores[f"per_category@G{gk[0]}K{gk[1]}"] = {
                    c: round(100 * v, 1) for c, v in summary["per_category"].items()}
    scale, bias = model.logit()
    print(json.dumps({"args": argv, "train_seconds": round(train_seconds), "steps": steps,
                      "final_loss": round(result.history[-1]["loss"], 4), "logit_scale": round(float(scale), 2),
                      "logit_bias": None if bias is None else round(float(bias), 2), "eval_points": eval_n,
                      "instance_miou": scores}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
