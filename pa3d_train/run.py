"""One PatchAlign3D run from a resolved configuration: :func:`run` (Python) and :func:`main` (a command line).

``main(argv)`` is what ``recipes/patchalign3d.py`` calls, and what a script or a tutorial calls in-process
(``pa3d_train.main(["stage2", "--loss", "my_losses:Focal", ...])``). Bad settings, unreadable files and
``OSError`` end it with one line on stderr and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pa3d_models import resolve_text_encoder
from pa3d_models.deps import require
from pa3d_models.files import atomic_write_bytes
from pa3d_models.text import TextBank

from .baselines import baseline_markdown
from .config import RESUME_KEYS, ConfigError, resolve_config
from .engine import (
    DistributedContext,
    check_resume,
    grouping_backend,
    init_distributed,
    load_training_state,
    resolve_amp,
    seed_everything,
)
from .finetune import (
    AFTER,
    BEFORE,
    check_init_checkpoint,
    finetune_markdown,
    finetune_summary,
    frozen_copy,
    init_for_finetuning,
)
from .report import write_metrics, write_report
from .schedule import Budget, RunProgress
from .stages import (
    all_prompts,
    build_datasets,
    estimate_eval_seconds,
    evaluate_all,
    load_for_eval,
    new_model,
    resolve_freeze_policy,
    stage1_teacher_dim,
    steps_per_epoch,
    teacher_is_pretrained,
    teacher_targets,
    train_stage1,
    train_stage2,
)

__all__ = ["main", "run", "STAGES", "wants_stage2_only", "budget_weights"]

#: command -> the training stages it runs (their checkpoints live in ``OUT/<stage>/last.pt``).
STAGES = {"all": ("stage1", "stage2", "stage2_only"), "stage1": ("stage1",), "stage2": ("stage2",), "eval": ()}


def main(argv: Sequence[str] | None = None, *, config_dir: str | Path | None = None, prog: str = "patchalign3d",
         description: str | None = None) -> int:
    """Resolve the command line (see :func:`pa3d_train.resolve_config`) and :func:`run` it; return the exit status.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).
        config_dir: folder of ``default.yaml`` and preset files (``recipes/configs``).
        prog: the program name in messages.
        description: the ``--help`` text.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = resolve_config(argv, config_dir=config_dir, prog=prog, description=description)
        if cfg["seeds"]:
            from .seeds import run_seeds

            run_seeds(cfg, cfg["seeds"], run)
        else:
            run(cfg)
    except (ValueError, OSError) as exc:  # ConfigError, unreadable files, refused resumes, a full disk, ...
        if "--debug" in argv:
            raise
        name = "" if isinstance(exc, (ConfigError, ValueError)) else f"{type(exc).__name__}: "
        print(f"{prog}: error: {name}{exc}", file=sys.stderr)
        return 2
    return 0


def budget_weights(cfg: dict[str, Any]) -> tuple[dict[str, float], str]:
    """``--max-minutes`` shares by part, and why Stage 1 got its weight when it was left to ``auto`` (null).

    Stage 1 after a pretrained 2D teacher gets the paper's 1 (Stage 2: 2); after the weight-free geometry
    teacher 0.4: on the L-PSB fold, 2 minutes of it before 3 of Stage 2 scored as Stage 2 alone (49.3 vs 49.0
    instance mIoU, docs/results.md), so most of the budget goes to Stage 2.
    """
    weights = {k: float(v) for k, v in cfg["budget_weights"].items() if v is not None}
    if "stage1" in weights:
        return weights, ""
    if teacher_is_pretrained(cfg):
        weights["stage1"] = 1.0
        return weights, "stage1 weight 1 (pretrained teacher)"
    weights["stage1"] = 0.4
    return weights, (f"stage1 weight 0.4: the teacher {cfg['teacher']!r} has no pretrained weights, so most of the "
                     "budget goes to Stage 2 (set budget_weights.stage1 to change it)")


def _precision(amp: str, device: torch.device) -> str:
    resolved = resolve_amp(amp, device)
    text = {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + loss scaling"}[resolved]
    return f"{text} (--amp auto)" if amp == "auto" else text


def wants_stage2_only(cfg: dict[str, Any]) -> bool:
    """Whether ``all`` trains the Stage-2-only comparison: ``--stage2-only`` / ``--no-stage2-only``, else only
    on the synthetic demo (on real data it would take half of the budget from the model the run is for)."""
    return bool(cfg["stage2_only"]) if cfg["stage2_only"] is not None else cfg["dataset"] == "synthetic"


def _check_resumes(cfg: dict[str, Any], out: Path) -> None:
    """Refuse a resume before anything is written (``OUT/config.yaml`` included)."""
    if not cfg["resume"]:
        return
    for stage in STAGES[cfg["command"]]:
        last = out / stage / "last.pt"
        if last.is_file():
            check_resume(last, cfg, RESUME_KEYS)


def _check_batch(cfg: dict[str, Any], train, ctx: DistributedContext) -> None:
    bs, world = cfg["batch_size"], ctx.world_size
    if bs < world or bs % world:
        raise ConfigError(f"--batch-size {bs} must be a positive multiple of the {world} process(es)")
    if bs // world > len(train) // world:
        raise ConfigError(f"--batch-size {bs} is larger than the training set: {len(train)} shapes give "
                          f"{len(train) // world} per process for {bs // world} per process per step")


def run(cfg: dict[str, Any], *, ctx: DistributedContext | None = None) -> dict[str, Any]:
    """Run ``cfg["command"]``: Stage 1, Stage 2 (and the Stage-2-only comparison), evaluation and the report.

    Writes under ``cfg["out"]``: ``config.yaml`` (once a resume is accepted), ``<stage>/last.pt`` and
    ``<stage>/log.jsonl``, ``<stage>/model`` (Stage 2), ``text_bank.safetensors``, and for ``all``/``eval``
    ``metrics.json``, ``report.md``, figures and ``predictions/<Category>/<shape_id>.npz``. With
    ``max_minutes`` the whole command (evaluation included) shares that budget by ``budget_weights``.

    Returns:
        ``{"stages": {stage: FitResult}, "results": {run: {set: summary}}, "budget": str}``.
    """
    started = time.monotonic()
    ctx = ctx or init_distributed(cfg["device"])
    say = print if ctx.is_main else (lambda *a, **k: None)
    out = Path(cfg["out"])
    say(f"pa3d: {cfg['command']} on {cfg['dataset']} -> {out} ({ctx.describe()}; grouping: {grouping_backend()}; "
        f"precision: {_precision(cfg['amp'], ctx.device)})")
    seed_everything(cfg["seed"])
    datasets = build_datasets(cfg)
    for name, ds in datasets.items():
        if len(ds) == 0:
            raise ConfigError(f"the {name} set is empty (check --train-root/--eval-root and --dataset-option)")
        say(f"  {name}: {len(ds)} shapes")
    stages = STAGES[cfg["command"]] if wants_stage2_only(cfg) else tuple(s for s in STAGES[cfg["command"]]
                                                                         if s != "stage2_only")
    if cfg["init_checkpoint"]:  # fine-tuning (pa3d_train.finetune): the checkpoint replaces Stage 1
        stages = tuple(s for s in stages if s != "stage1")
        check_init_checkpoint(cfg)
    if stages:
        _check_batch(cfg, datasets["train"], ctx)
    if cfg["command"] == "stage2" and cfg["stage1_checkpoint"]:
        stage1_teacher_dim(cfg["stage1_checkpoint"])  # a truncated or foreign file stops here, before any work
    _check_resumes(cfg, out)
    if ctx.is_main:
        yaml = require("yaml", "writing config.yaml")

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(dict(cfg), sort_keys=True))
    evaluates = cfg["command"] in ("all", "eval") or bool(cfg["init_checkpoint"])
    parts = [*stages, "eval"] if evaluates else list(stages)
    weights, why = budget_weights(cfg)
    budget = Budget(cfg["max_minutes"], {p: weights.get(p, 1.0) for p in parts}, started=started)
    if cfg["max_minutes"] is not None and "stage1" in parts and why:
        say(f"  budget: {why}")
    per_epoch = steps_per_epoch(len(datasets["train"]), cfg["batch_size"], ctx.world_size) if stages else 0
    epochs = {s: cfg["stage1_epochs"] if s == "stage1" else cfg["stage2_epochs"] for s in stages}
    progress = RunProgress({s: per_epoch * (epochs[s] or 0) for s in stages}, deadline=budget.deadline)

    text = resolve_text_encoder(cfg["text_model"])
    bank = TextBank.build(all_prompts(datasets), text)
    if ctx.is_main:
        bank.save(out / "text_bank.safetensors")
    report: dict[str, Any] = {"text_encoder": text.name, "stages": {}, "teacher": None}

    def allot(part: str) -> float | None:
        seconds = budget.allot(part)
        if seconds is not None:
            say(f"  budget: {part} gets {seconds / 60:.2f} of the {budget.remaining() / 60:.2f} min left")
            if seconds <= 0:  # earlier parts overran (the Stage-1 targets are not time-bounded): say so, go on
                say(f"  budget: --max-minutes {cfg['max_minutes']} is used up before {part}; it runs 0 steps "
                    "(give more minutes)")
        return None if seconds is None else max(seconds, 0.0)

    if budget.minutes is not None and evaluates:  # evaluation reserves what it will take
        probe = new_model(cfg, text_dim=bank.dim, teacher_dim=1).to(ctx.device)
        n_models = len([s for s in stages if s != "stage1"]) or 1
        need = estimate_eval_seconds(probe, datasets, bank, cfg, num_models=n_models)
        if ctx.distributed:  # every process must split the budget alike (they stop training together)
            t = torch.tensor([need], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            need = float(t.item())
        budget.reserve("eval", need)
        left = budget.remaining() or 0.0
        if stages and left - need < 10.0 * len(stages):  # not even a few steps per stage: refuse before training
            at_least = math.ceil((need + 30.0 * len(stages)) / 6.0) / 10.0
            raise ConfigError(f"--max-minutes {cfg['max_minutes']:g} is too small: evaluation alone is estimated at "
                              f"{need:.0f} s of the {left:.0f} s left, which leaves under 10 s for each of "
                              f"{len(stages)} training stage(s); give at least {at_least:g} minutes")
        say(f"  budget: evaluation is estimated at {need / 60:.2f} min (timed on a few shapes); the rest of its "
            "share goes to training")
        del probe

    cache, teacher_dim = None, None
    needs_teacher = "stage1" in stages or (cfg["loss"] == "joint" and "stage2" in stages)
    if "stage1" in stages:
        seconds = allot("stage1")
        t0 = time.monotonic()
        cache, teacher_dim, note = teacher_targets(cfg, datasets["train"], ctx, out, say=say)
        report["teacher"] = note or cfg["teacher"]
        if seconds is not None:
            seconds -= time.monotonic() - t0
            if seconds <= 0:
                say(f"  budget: the Stage-1 targets used the whole Stage-1 share of --max-minutes "
                    f"{cfg['max_minutes']}; Stage 1 trains 0 steps (give more minutes or budget_weights.stage1)")
                seconds = 0.0
        model = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim).to(ctx.device)
        report["stages"]["stage1"] = train_stage1(model, datasets["train"], cache, cfg, ctx=ctx, out=out,
                                                  budget_s=seconds, progress=progress, log=say)
    elif needs_teacher:
        cache, teacher_dim, note = teacher_targets(cfg, datasets["train"], ctx, out, say=say)
        report["teacher"] = note or cfg["teacher"]

    models: dict[str, Any] = {}
    if "stage2" in stages and cfg["init_checkpoint"]:  # fine-tuning: the model, and a frozen copy to compare
        model, report["init"] = init_for_finetuning(cfg, text_dim=bank.dim, teacher_dim=teacher_dim,
                                                    device=ctx.device, say=say)
        models[AFTER], models[BEFORE] = model, frozen_copy(model)
    elif "stage2" in stages:
        init = Path(cfg["stage1_checkpoint"] or out / "stage1" / "last.pt")
        if not init.is_file():
            raise ConfigError(f"stage2 needs Stage-1 weights: {init} does not exist "
                              "(run stage1 first, or pass --stage1-checkpoint)")
        teacher_dim = teacher_dim or stage1_teacher_dim(init)
        model = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim).to(ctx.device)
        load_training_state(init, model=model, restore_rng=False, average=True)
        say(f"  stage2 starts from the Stage-1 weights in {init}")
    if "stage2" in stages:
        report["stages"]["stage2"] = train_stage2("stage2", model, datasets["train"], bank, cache, cfg, ctx=ctx,
                                                  out=out, budget_s=allot("stage2"), progress=progress, log=say)
        if not cfg["init_checkpoint"]:
            models["stage1+stage2"] = model
    if "stage2_only" in stages:
        seed_everything(cfg["seed"])
        scratch = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim or 1).to(ctx.device)
        report["stages"]["stage2_only"] = train_stage2("stage2_only", scratch, datasets["train"], bank, cache, cfg,
                                                       ctx=ctx, out=out, policy="none",
                                                       budget_s=allot("stage2_only"), progress=progress, log=say)
        models["stage2 only"] = scratch
    if cfg["command"] == "eval":
        models["checkpoint"] = load_for_eval(cfg, bank).to(ctx.device)

    results: dict[str, Any] = {}
    if ctx.is_main and evaluates:
        allot("eval")
        results = evaluate_all(models, datasets, bank, cfg, out, say)
        _finish_report(out, cfg, results, models, report, started, budget)
    say("  " + budget.summary())
    if ctx.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"stages": report["stages"], "results": results, "budget": budget.summary()}


def _finish_report(out: Path, cfg, results, models, report, started: float, budget: Budget) -> None:
    from .viz import save_feature_figure, save_part_figure

    primary_run = next(iter(results))
    primary = results[primary_run]
    first_set = next(iter(primary))
    figures: dict[str, str] = {}
    examples = primary[first_set]["examples"]
    if examples:
        save_part_figure(out / "parts.png", examples)
        figures[f"{primary_run} on {first_set}: predicted vs true parts"] = "parts.png"
        model = models[primary_run]
        feats = []
        with torch.no_grad():
            for ex in examples:
                o = model(ex["points"][None].to(next(model.parameters()).device))
                feats.append({"points": o["centers"][0].cpu(), "features": o["patch_feats"][0].cpu(),
                              "title": ex["title"]})
        save_feature_figure(out / "patch_features_pca.png", feats, point_size=12)
        figures["patch features, PCA to RGB (shared across shapes)"] = "patch_features_pca.png"
    histories = {k: v.history for k, v in report["stages"].items()}
    metrics = {
        "instance_miou": primary[first_set]["instance_miou"],
        "category_miou": primary[first_set]["category_miou"],
        "per_category": primary[first_set]["per_category"],
        "evaluations": results,
        "text_encoder": report["text_encoder"],
        "teacher": report.get("teacher"),
        "minutes": (time.monotonic() - started) / 60,
        "budget": budget.summary(),
        "training": {k: h[-1] if h else {} for k, h in histories.items()},
        "history": histories,
        "config": cfg,
    }
    sections: dict[str, str] = {}
    for name, summary in primary.items():  # reference points: where the model's mIoU sits
        if "baselines" in summary:
            sections[f"Reference points: {name}"] = baseline_markdown(
                summary["baselines"], num_points=summary["baselines"]["num_points"], num_groups=summary["num_groups"],
                group_size=summary["group_size"]) + (
                f"\n\nModel ({primary_run}): instance mIoU {100 * summary['instance_miou']:.1f}, category mIoU "
                f"{100 * summary['category_miou']:.1f}"
                + (f" ({summary['calibration']} calibration; the model's own argmax: instance "
                   f"{100 * summary['uncalibrated']['instance_miou']:.1f}, category "
                   f"{100 * summary['uncalibrated']['category_miou']:.1f})" if "uncalibrated" in summary else "")
                + ". The patch ceiling gives each patch its true majority label; "
                "the one-label predictor puts each shape's most frequent true label everywhere.")
    if report.get("init") is not None:  # fine-tuning: mIoU before and after, on the same evaluation sets
        metrics["fine_tuning"] = finetune_summary(results, report["init"])
        sections["Fine-tuning: before and after"] = finetune_markdown(metrics["fine_tuning"])
    write_metrics(out / "metrics.json", metrics)
    notes = [
        f"dataset: {cfg['dataset']}; model: {cfg['model']}; text encoder: {report['text_encoder']}",
        f"Stage-1 teacher: {report.get('teacher') or 'not run (weights from a checkpoint)'}",
        f"IoU convention: {cfg['iou_convention']}; patch -> point assignment: {cfg['assign']}; "
        + (f"{cfg['eval_votes']} votes per shape (passes over reordered points, similarities averaged)"
           if cfg.get("eval_votes", 1) > 1 else "one pass per shape")
        + ("; labels read after the per-shape prior correction (--eval-calibration prior: each name's probability "
           "divided by its mean over the shape; the model's own argmax is the mIoU 'without it')"
           if cfg.get("eval_calibration", "none") == "prior" else "; labels: each point's best-scoring name"),
        f"learning rate: {cfg['lr_schedule']} schedule, warm-up {cfg['warmup']:g} of each stage; {budget.summary()}",
        ("weights evaluated: each stage's average over about its last {:.0%} (--ema {:g}; last.pt also keeps the last "
         "step's)".format(cfg["ema"], cfg["ema"]) if cfg.get("ema") else "weights evaluated: each stage's last step")
        if cfg["command"] != "eval" else "weights evaluated: --checkpoint",
        "training precision: {}; evaluation in float32".format(
            "none (eval)" if cfg["command"] == "eval" else
            _precision(cfg["amp"], next(iter(models.values())).logit.log_scale.device)),
    ]
    if report.get("init") is not None:
        notes.append("{}: the --init-checkpoint weights after Stage 2 with freeze policy {!r} ({}); {}: the same "
                     "weights before it (Stage 1 not run)".format(AFTER, *resolve_freeze_policy(cfg), BEFORE))
    if cfg["command"] == "all":
        notes += [
            "stage1+stage2: Stage 2 trains what freeze policy {!r} leaves trainable ({}; paper: the last block, "
            "the final norm, the text head, logit scale and bias; none: everything) on the Stage-1 encoder".format(
                *resolve_freeze_policy(cfg)),
            "stage2 only: the same Stage-2 loss and epochs on a randomly initialised model, every parameter trained"
            if wants_stage2_only(cfg) else "stage2 only: not run ({})".format(
                "--no-stage2-only" if cfg["stage2_only"] is False else "real data: pass --stage2-only to compare"),
        ][1 if report.get("init") is not None else 0:]
    notes.append(f"wall clock: {metrics['minutes']:.1f} min")
    rows = []
    for stage, history in histories.items():
        for row in history:
            rows.append(f"| {stage} | {row['epoch']}{' (partial)' if row.get('partial') else ''} | "
                        f"{row.get('loss', float('nan')):.4f} | {row.get('lr', 0.0):.2e} | {row.get('steps', 0)} |")
    training = ("| stage | epoch | loss | lr | steps |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
                if rows else "(no training in this run)")
    write_report(out / "report.md", title="PatchAlign3D recipe report", results=results, notes=notes,
                 figures=figures, extra_sections={**sections,
                                                  "Training (every epoch, resumed runs included)": training})
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}" + (", figures" if figures else ""))
