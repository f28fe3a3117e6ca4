"""PatchAlign3D, end to end: Stage 1 (distil a 2D teacher into patches), Stage 2 (align patches with text),
evaluation. With no arguments it runs the main job on the embedded synthetic part dataset.

    python recipes/patchalign3d.py                      # all stages on the embedded default
    python recipes/patchalign3d.py stage2 --loss point_level --label-noise 0.3
    python recipes/patchalign3d.py all --dataset lpsb --train-root A --eval-root B --out runs/lpsb
    torchrun --nproc-per-node 2 recipes/patchalign3d.py stage2 ...

A ``--config file.yaml`` sets defaults; the command line wins; the resolved configuration is written next to
the checkpoints (``OUT/config.yaml``). Everything reusable lives in the packages; this file only composes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from pa3d_data import DATASETS, category_names, collate_dense, corrupt_labels, split_by_category
from pa3d_data.targets import TargetCache, precompute_targets
from pa3d_losses import LOSSES, build_loss
from pa3d_models import (
    MODELS,
    PatchAlign3D,
    build_teacher,
    create_model,
    freeze_for_stage2,
    list_models,
    resolve_text_encoder,
)
from pa3d_models.text import TextBank
from pa3d_train.engine import (
    JsonlLogger,
    init_distributed,
    load_training_state,
    param_groups,
    save_training_state,
    seed_everything,
)
from pa3d_train.evaluate import evaluate_segmentation
from pa3d_train.report import write_report

COMMANDS = ("all", "stage1", "stage2", "eval")

# Defaults of the main job: small enough to run Stage 1, Stage 2, the Stage-2-only comparison and both
# evaluations within 15 minutes on 2 CPU cores (a narrower, shallower model, 1024 points, 6 renders of
# 112 px, and learning rates raised for a few hundred steps). The paper's configuration is `--preset paper`.
DEFAULTS: dict[str, Any] = {
    "out": "runs/patchalign3d",
    "dataset": "synthetic",
    "eval_dataset": None,
    "train_root": None,
    "eval_root": None,
    "train_shapes": 420,
    "eval_shapes": 84,
    "heldout_shapes": 48,
    "train_split": None,
    "model": "patchalign3d_small",
    "num_points": 1024,
    "normalize": "unit_sphere",
    "swap_yz": False,
    "num_groups": None,
    "group_size": None,
    "seed": 0,
    "device": None,
    "amp": "none",
    "batch_size": 16,
    "num_workers": 0,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "lr_encoder": 5e-4,
    "lr_head": 2e-3,
    "lr_logit": 2e-3,
    "stage1_lr_encoder": 5e-4,
    "stage1_epochs": 8,
    "stage2_epochs": 20,
    "stage1_loss": "cosine_distillation",
    "loss": "multi_positive_sigmoid",
    "loss_args": {},
    "freeze_policy": "paper",
    "freeze_bn_stats": True,
    "scale_mode": "paper",
    "init_scale": 10.0,
    "init_bias": -10.0,
    "augment": False,
    "label_noise": 0.0,
    "teacher": "dinov2_vits14",
    "teacher_weights": None,
    "teacher_cache": None,
    "views": 6,
    "image_size": 112,
    "teacher_size": 112,
    "text_model": "auto",
    "stage2_only": True,
    "assign": "nearest",
    "iou_convention": "strict",
    "max_minutes": None,
    "resume": False,
    "stage1_checkpoint": None,
    "checkpoint": None,
    "tensorboard": False,
    "figures": 4,
}

PRESETS: dict[str, dict[str, Any]] = {
    # the paper / official release (facts file sections 2-3); needs real data and, to be faithful, DINOv2-base
    # weights and the ViT-bigG-14 text tower
    "paper": {
        "model": "patchalign3d_base",
        "num_points": 2048,
        "batch_size": 32,
        "stage1_epochs": 100,
        "stage2_epochs": 100,
        "stage1_lr_encoder": 1e-4,
        "lr_encoder": 1e-4,
        "lr_head": 5e-4,
        "lr_logit": 5e-4,
        "teacher": "dinov2_vitb14",
        "views": 10,
        "image_size": 500,
        "teacher_size": 518,
    },
}

# Keys whose change makes a checkpoint useless for a resume (others, like epochs or max_minutes, may change).
RESUME_KEYS = ("model", "optimizer", "num_points", "num_groups", "group_size", "dataset", "seed", "batch_size", "loss",
               "loss_args", "freeze_policy", "scale_mode", "label_noise", "augment", "text_model")


# --------------------------------------------------------------------------------------------- configuration
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="patchalign3d", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", nargs="?", choices=COMMANDS, default="all", help="what to run (default: all)")
    p.add_argument("--config", help="YAML file of defaults (keys as below, with _ for -)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named set of defaults (paper = the paper's config)")
    p.add_argument("--out", help="output folder (checkpoints, logs, metrics.json, report.md, figures)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=sorted(DATASETS), help="dataset (default: synthetic, embedded)")
    g.add_argument("--train-root", help="training data root")
    g.add_argument("--eval-root", help="evaluation data root (default: the training root)")
    g.add_argument("--eval-dataset", choices=sorted(DATASETS), help="format of --eval-root (default: --dataset)")
    g.add_argument("--train-split", choices=["first_half", "second_half"],
                   help="train on one half of the shapes of each category of --train-root, evaluate on the other")
    g.add_argument("--train-shapes", type=int, help="synthetic: training shapes")
    g.add_argument("--eval-shapes", type=int, help="synthetic: held-out shapes of the training categories")
    g.add_argument("--heldout-shapes", type=int, help="synthetic: shapes of the held-out categories")
    g.add_argument("--num-points", type=int, help="points per training shape (N)")
    g.add_argument("--normalize", choices=["unit_sphere", "box", "none"],
                   help="real data: centre and scale before the model (predictions stay in file coordinates)")
    g.add_argument("--swap-yz", action=argparse.BooleanOptionalAction,
                   help="the official release's Y/Z swap (a reflection) before the model")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, help="official augmentation (p=0.9)")
    g.add_argument("--label-noise", type=float, help="fraction of training points given another name of the shape")
    g.add_argument("--num-workers", type=int, help="DataLoader workers")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list_models(), help="registered model config")
    g.add_argument("--num-groups", type=int, help="G, patches per shape (default: the model config's)")
    g.add_argument("--group-size", type=int, help="K, points per patch (default: the model config's)")
    g.add_argument("--scale-mode", choices=["paper", "official"], help="logit scale/bias parameterisation")
    g.add_argument("--init-scale", type=float, help="initial logit scale (paper: 10)")
    g.add_argument("--init-bias", type=float, help="initial logit bias (paper: -10)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision through torch.autocast")
    g.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], help="AdamW (the paper) or plain SGD")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-encoder", type=float, help="Stage 2: trainable encoder parameters")
    g.add_argument("--lr-head", type=float, help="both stages: the projection heads")
    g.add_argument("--lr-logit", type=float, help="Stage 2: logit scale and bias")
    g.add_argument("--stage1-lr-encoder", type=float, help="Stage 1: the whole encoder")
    g.add_argument("--stage1-epochs", type=int)
    g.add_argument("--stage2-epochs", type=int)
    g.add_argument("--stage1-loss", help=f"Stage-1 loss by registry name ({', '.join(sorted(LOSSES))})")
    g.add_argument("--loss", help=f"Stage-2 loss by registry name ({', '.join(sorted(LOSSES))})")
    g.add_argument("--loss-args", type=json.loads,
                   help='keyword arguments of the loss as JSON, e.g. \'{"pos_weight": 2}\'')
    g.add_argument("--freeze-policy", choices=["paper", "official", "none"], help="what Stage 2 trains")
    g.add_argument("--freeze-bn-stats", action=argparse.BooleanOptionalAction, help="keep frozen BN stats frozen")
    g.add_argument("--max-minutes", type=float, help="end training cleanly after this many minutes, then evaluate")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, help="continue from OUT/<stage>/last.pt")
    g.add_argument("--stage1-checkpoint", help="Stage 2: initialise from this Stage-1 checkpoint (a last.pt)")
    g.add_argument("--checkpoint", help="eval: a save_pretrained folder or an official .pt")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="also log to TensorBoard")
    g = p.add_argument_group("teacher (Stage 1)")
    g.add_argument("--teacher", help="tiny, dinov2_vits14, dinov2_vitb14, ... (timm DINOv2 names)")
    g.add_argument("--teacher-weights", help="local DINOv2 weights file")
    g.add_argument("--teacher-cache", help="folder of cached patch targets (default OUT/teacher_cache)")
    g.add_argument("--views", type=int, help="rendered views per shape")
    g.add_argument("--image-size", type=int, help="render side in pixels")
    g.add_argument("--teacher-size", type=int, help="teacher input side (multiple of 14)")
    g = p.add_argument_group("text and evaluation")
    g.add_argument("--text-model", help="auto, minilm, a sentence-transformers path, or open_clip:MODEL[:PRETRAINED]")
    g.add_argument("--stage2-only", action=argparse.BooleanOptionalAction,
                   help="all: also train Stage 2 alone (no Stage 1) on the same data, for comparison")
    g.add_argument("--assign", choices=["nearest", "membership", "idw"], help="patch -> point assignment")
    g.add_argument("--iou-convention", choices=["strict", "patchalign3d", "find3d", "pointnet"])
    g.add_argument("--figures", type=int, help="shapes drawn in the figures")
    return p


def resolve_config(argv: list[str] | None = None) -> dict[str, Any]:
    """Defaults < preset < YAML file < command line."""
    args = build_parser().parse_args(argv)
    cfg = dict(DEFAULTS)
    if args.preset:
        cfg.update(PRESETS[args.preset])
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise SystemExit(f"--config {args.config}: unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}")
        cfg.update(loaded)
    for key, value in vars(args).items():
        if key in DEFAULTS and value is not None:
            cfg[key] = value
    cfg["command"] = args.command
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    """Refuse bad settings before any work starts."""
    for key in ("loss", "stage1_loss"):
        if cfg[key] not in LOSSES:
            flag = '--' + key.replace('_', '-')
            raise SystemExit(f"{flag} {cfg[key]!r} is not a registered loss; valid: {sorted(LOSSES)}")
    if cfg["dataset"] not in DATASETS:
        raise SystemExit(f"--dataset {cfg['dataset']!r} is unknown; valid: {sorted(DATASETS)}")
    if cfg["dataset"] != "synthetic" and not cfg["train_root"] and cfg["command"] != "eval":
        raise SystemExit(f"--dataset {cfg['dataset']} needs --train-root")
    if not 0.0 <= float(cfg["label_noise"]) < 1.0:
        raise SystemExit(f"--label-noise must be in [0, 1), got {cfg['label_noise']}")
    if cfg["model"] not in list_models():
        raise SystemExit(f"--model {cfg['model']!r} is unknown; valid: {list_models()}")


# -------------------------------------------------------------------------------------------------- data
def model_transform(cfg: dict[str, Any], *, train: bool):
    """What real data goes through before the model: normalisation, the optional Y/Z swap, augmentation."""
    from pa3d_data import Compose, NormalizeBox, NormalizeUnitSphere, SwapYZ, official_augmentation

    steps = {"unit_sphere": [NormalizeUnitSphere()], "box": [NormalizeBox()], "none": []}[cfg["normalize"]]
    if cfg["swap_yz"]:
        steps.append(SwapYZ())
    if train and cfg["augment"]:
        steps.append(official_augmentation())
    return Compose(steps) if steps else None


def build_datasets(cfg: dict[str, Any]) -> dict[str, Any]:
    """name -> dataset of PartSamples: 'train' plus the evaluation sets."""
    from pa3d_data import SyntheticPartDataset, build_dataset

    n = cfg["num_points"]
    if cfg["dataset"] == "synthetic":  # already centred in the unit sphere
        kw = {"seed": cfg["seed"], "num_points": n}
        augment = model_transform({**cfg, "normalize": "none", "swap_yz": False}, train=True)
        return {
            "train": SyntheticPartDataset(cfg["train_shapes"], split="train", transform=augment, **kw),
            "heldout_shapes": SyntheticPartDataset(cfg["eval_shapes"], split="test", **kw),
            "heldout_categories": SyntheticPartDataset(cfg["heldout_shapes"], split="heldout_categories", **kw),
        }
    sets: dict[str, Any] = {}
    kw = {"seed": cfg["seed"], "num_points": n}
    if cfg["train_root"]:
        train = build_dataset(cfg["dataset"], cfg["train_root"], transform=model_transform(cfg, train=True), **kw)
        if cfg["train_split"]:
            # the evaluated half is read without the model's transform: predictions stay in file coordinates
            raw = build_dataset(cfg["dataset"], cfg["train_root"], **kw)
            (first, second), (raw_first, raw_second) = split_by_category(train), split_by_category(raw)
            train, held = (first, raw_second) if cfg["train_split"] == "first_half" else (second, raw_first)
            sets["eval"] = held
        sets["train"] = train
    if cfg["eval_root"] or "eval" not in sets:
        root = cfg["eval_root"] or cfg["train_root"]
        sets["eval"] = build_dataset(cfg["eval_dataset"] or cfg["dataset"], root, **kw)
    return sets


class TrainingView(torch.utils.data.Dataset):
    """A dataset as the training loop sees it: label noise, and Stage-1 targets from the cache."""

    def __init__(self, base, *, label_noise: float = 0.0, seed: int = 0, cache: TargetCache | None = None):
        self.base, self.label_noise, self.seed, self.cache = base, label_noise, seed, cache

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        sample = self.base[index]
        if self.label_noise > 0:
            sample = corrupt_labels(sample, self.label_noise, seed=(self.seed, getattr(self.base, 'epoch', 0), index))
        if self.cache is not None:
            cached = self.cache.load(sample.shape_id)
            sample.meta["teacher_centers"] = cached["centers"].float()
            sample.meta["teacher_targets"] = cached["targets"].float()
        return sample


def make_collate(bank: TextBank | None):
    """collate_dense plus each shape's text embeddings (padded to L) and, when present, Stage-1 targets."""

    def collate(samples):
        batch = collate_dense(samples)
        if bank is not None:
            texts = batch["texts"]
            num_labels = batch["text_mask"].shape[1]
            feats = torch.zeros(len(samples), num_labels, bank.dim)
            for b, names in enumerate(texts):
                feats[b, : len(names)] = bank.lookup(names)
            batch["text_feats"] = feats
        if "teacher_centers" in samples[0].meta:
            batch["teacher_centers"] = torch.stack([s.meta["teacher_centers"] for s in samples])
            batch["teacher_targets"] = torch.stack([s.meta["teacher_targets"] for s in samples])
        return batch

    return collate


def all_prompts(datasets: dict[str, Any]) -> list[str]:
    """Every prompt text any training or evaluation shape may need (its category's names)."""
    prompts: dict[str, None] = {}
    for ds in datasets.values():
        for names in category_prompts(ds).values():
            prompts.update(dict.fromkeys(names[1]))
    return list(prompts)


def category_prompts(dataset) -> dict[str, tuple[list[str], list[str]]]:
    """category -> (label names, prompts) for a dataset."""
    return category_names(dataset)


# ------------------------------------------------------------------------------------------------ training
def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_stage(
    stage: str,
    model: PatchAlign3D,
    loss_fn: torch.nn.Module,
    dataset,
    cfg: dict[str, Any],
    *,
    epochs: int,
    lrs: dict[str, float],
    default_lr: float,
    collate,
    ctx,
    out: Path,
    deadline: float | None,
    teacher: bool,
    text: bool,
) -> dict[str, Any]:
    """Train one stage; checkpoints every epoch (atomically) and resumes exactly from OUT/<stage>/last.pt."""
    from tqdm.auto import tqdm

    device = ctx.device
    stage_dir = out / stage
    logger = JsonlLogger(stage_dir / "log.jsonl", tensorboard=cfg["tensorboard"], enabled=ctx.is_main)
    net: torch.nn.Module = model
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    groups = param_groups(model, lrs, default_lr=default_lr, weight_decay=cfg["weight_decay"])
    opt = torch.optim.AdamW(groups) if cfg["optimizer"] == "adamw" else torch.optim.SGD(groups)
    start_epoch, step = 0, 0
    last = stage_dir / "last.pt"
    if cfg["resume"] and last.is_file():
        meta = load_training_state(last, model=model, optimizer=opt, config=cfg, compare_keys=RESUME_KEYS)
        start_epoch, step = meta["epoch"], meta["step"]
        if ctx.is_main:
            print(f"[{stage}] resumed from {last} at epoch {start_epoch}, step {step}")
    per_rank = max(1, cfg["batch_size"] // ctx.world_size)
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg["seed"], drop_last=True
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate, num_workers=cfg["num_workers"],
        drop_last=True,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["amp"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: list[dict[str, float]] = []
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        if hasattr(dataset.base, "epoch"):
            dataset.base.epoch = epoch
        net.train()
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{epochs}", unit="step", disable=not ctx.is_main,
                   dynamic_ncols=True, leave=False)
        for batch in bar:
            batch = _to(batch, device)
            autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                outputs = net(batch["points"], return_teacher=teacher, return_text=text)
                terms = loss_fn(outputs, batch, return_dict=True)
            loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            for k, v in terms.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    totals[k] = totals.get(k, 0.0) + float(v.detach())
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
            if deadline is not None and time.monotonic() > deadline:
                stopped_early = True
                break
        num_steps = max(1, len(loader) if not stopped_early else bar.n)
        record = {"stage": stage, "epoch": epoch + 1, **{k: v / num_steps for k, v in totals.items()}}
        history.append(record)
        logger.log(record, step=step)
        if ctx.is_main:
            print(f"[{stage}] epoch {epoch + 1}/{epochs} " + " ".join(
                f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))
            save_training_state(last, model=model, optimizer=opt, epoch=epoch + (0 if stopped_early else 1),
                                step=step, config=cfg, extra={"history": history, "partial_epoch": stopped_early})
        if stopped_early:
            if ctx.is_main:
                print(f"[{stage}] --max-minutes reached: stopped during epoch {epoch + 1}, checkpoint written")
            break
    logger.close()
    return {"history": history, "stopped_early": stopped_early, "steps": step}


def stage_deadline(cfg: dict[str, Any], started: float) -> float | None:
    return None if cfg["max_minutes"] is None else started + 60.0 * float(cfg["max_minutes"])


def new_model(cfg: dict[str, Any], *, text_dim: int, teacher_dim: int) -> PatchAlign3D:
    overrides: dict[str, Any] = {"text_dim": text_dim, "teacher_dim": teacher_dim, "logit_mode": cfg["scale_mode"]}
    if cfg["scale_mode"] == "paper":
        overrides.update(logit_scale_init=cfg["init_scale"], logit_bias_init=cfg["init_bias"])
    if cfg["num_groups"]:
        overrides["num_groups"] = cfg["num_groups"]
    if cfg["group_size"]:
        overrides["group_size"] = cfg["group_size"]
    return create_model(cfg["model"], **overrides)


def stage2_loss(cfg: dict[str, Any]) -> torch.nn.Module:
    return build_loss({"type": cfg["loss"], **cfg["loss_args"]})


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    cfg = resolve_config(argv)
    started = time.monotonic()
    ctx = init_distributed(cfg["device"])
    seed_everything(cfg["seed"])
    out = Path(cfg["out"])
    say = print if ctx.is_main else (lambda *a, **k: None)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items()}, sort_keys=True))
    say(f"pa3d recipe: {cfg['command']} on {cfg['dataset']} -> {out} ({ctx.world_size} process(es), {ctx.device})")

    datasets = build_datasets(cfg)
    for name, ds in datasets.items():
        say(f"  {name}: {len(ds)} shapes")
    text = resolve_text_encoder(cfg["text_model"])
    bank_path = out / "text_bank.safetensors"
    bank = TextBank.build(all_prompts(datasets), text)
    if ctx.is_main:
        bank.save(bank_path)
    report: dict[str, Any] = {"config": cfg, "text_encoder": text.name, "stages": {}}

    needs_teacher = cfg["command"] in ("all", "stage1") or (cfg["loss"] == "joint" and cfg["command"] == "stage2")
    cache, teacher_dim, teacher_note = (None, None, None)
    if needs_teacher:
        cache, teacher_dim, teacher_note = teacher_targets(cfg, datasets["train"], ctx, out)
        report["teacher"] = teacher_note or cfg["teacher"]
    if cfg["command"] in ("all", "stage1"):
        model = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim).to(ctx.device)
        report["stages"]["stage1"] = train_stage(
            "stage1", model, build_loss(cfg["stage1_loss"]), TrainingView(datasets["train"], cache=cache), cfg,
            epochs=cfg["stage1_epochs"], lrs={"teacher_head": cfg["lr_head"]}, default_lr=cfg["stage1_lr_encoder"],
            collate=make_collate(None), ctx=ctx, out=out, deadline=stage_deadline(cfg, started), teacher=True,
            text=False,
        )

    models: dict[str, PatchAlign3D] = {}
    if cfg["command"] in ("all", "stage2"):
        init = Path(cfg["stage1_checkpoint"] or out / "stage1" / "last.pt")
        if not init.is_file():
            raise SystemExit(f"stage2 needs Stage-1 weights: {init} does not exist "
                             "(run stage1 first, or pass --stage1-checkpoint)")
        teacher_dim = teacher_dim or stage1_teacher_dim(init)
        model = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim).to(ctx.device)
        load_training_state(init, model=model, restore_rng=False)
        say(f"  stage2 starts from the Stage-1 weights in {init}")
        models["stage1+stage2"] = run_stage2("stage2", model, datasets, bank, cache, cfg, ctx, out, started, report)
        if cfg["command"] == "all" and cfg["stage2_only"]:
            seed_everything(cfg["seed"])
            scratch = new_model(cfg, text_dim=bank.dim, teacher_dim=teacher_dim).to(ctx.device)
            models["stage2 only"] = run_stage2("stage2_only", scratch, datasets, bank, cache, cfg, ctx, out,
                                               started, report, policy="none")
    if cfg["command"] == "eval":
        models["checkpoint"] = load_for_eval(cfg, bank).to(ctx.device)

    if ctx.is_main and cfg["command"] in ("all", "eval"):
        results = evaluate_all(models, datasets, bank, cfg, out, say)
        finish_report(out, cfg, results, models, report, started)
    if ctx.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def teacher_targets(cfg: dict[str, Any], dataset, ctx, out: Path) -> tuple[TargetCache, int, str | None]:
    """Render, run the 2D teacher, back-project and cache the Stage-1 patch targets of the training shapes."""
    teacher = build_teacher(cfg["teacher"], cfg["teacher_weights"], image_size=cfg["teacher_size"],
                            random_weights_ok=True).to(ctx.device)
    note = getattr(teacher, "weights_note", None)
    if note and ctx.is_main:
        print(f"  teacher: {note}")
    spec = MODELS[cfg["model"]]  # the patches the model will form: the registry's config plus overrides
    enc = {"num_groups": cfg["num_groups"] or spec["num_groups"], "group_size": cfg["group_size"] or spec["group_size"]}
    settings = {"teacher": getattr(teacher, "name", cfg["teacher"]), "weights": note or "given",
                "views": cfg["views"], "image_size": cfg["image_size"], "teacher_size": cfg["teacher_size"],
                "num_groups": enc["num_groups"], "group_size": enc["group_size"], "num_points": cfg["num_points"],
                "seed": cfg["seed"], "dataset": cfg["dataset"], "train_root": str(cfg["train_root"])}
    cache = TargetCache(Path(cfg["teacher_cache"] or out / "teacher_cache"), settings)
    summary = precompute_targets(dataset, teacher, cache, views=cfg["views"], image_size=cfg["image_size"],
                                 rank=ctx.rank, world_size=ctx.world_size, progress=ctx.is_main)
    if ctx.is_main:
        print(f"  teacher targets: {summary}")
    if ctx.distributed:
        torch.distributed.barrier()
    return cache, int(teacher.feature_dim), note


def stage1_teacher_dim(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return int(state["teacher_head.weight"].shape[0])


def evaluate_all(models, datasets, bank, cfg, out: Path, say) -> dict[str, dict[str, Any]]:
    """Every model on every evaluation set; predictions (the first model, first set) and figures kept."""
    eval_sets = {k: v for k, v in datasets.items() if k != "train"}
    first_run, first_set = next(iter(models)), next(iter(eval_sets))
    results: dict[str, dict[str, Any]] = {}
    for run, model in models.items():
        results[run] = {}
        for name, ds in eval_sets.items():
            primary = run == first_run
            results[run][name] = summary = evaluate_segmentation(
                model.eval(), ds, bank, candidates=eval_candidates(datasets, name), assign=cfg["assign"],
                transform=None if cfg["dataset"] == "synthetic" else model_transform(cfg, train=False),
                convention=cfg["iou_convention"], keep=cfg["figures"] if primary else 0, progress=True,
                predictions_dir=out / "predictions" if primary and name == first_set else None,
            )
            say(f"  [{run}] {name}: instance mIoU {100 * summary['instance_miou']:.1f}, "
                f"category mIoU {100 * summary['category_miou']:.1f}")
    return results


def run_stage2(stage, model, datasets, bank, cache, cfg, ctx, out, started, report, policy=None) -> PatchAlign3D:
    """Stage 2 (or the Stage-2-only comparison with ``policy="none"``): align patches with text."""
    policy = policy or cfg["freeze_policy"]
    if policy != "none":
        freeze_for_stage2(model, policy=policy, freeze_bn_stats=cfg["freeze_bn_stats"])
    joint = cfg["loss"] == "joint"
    view = TrainingView(datasets["train"], label_noise=cfg["label_noise"], seed=cfg["seed"],
                        cache=cache if joint else None)
    lrs = {"text_head": cfg["lr_head"], "logit": cfg["lr_logit"]}
    report["stages"][stage] = train_stage(
        stage, model, stage2_loss(cfg), view, cfg, epochs=cfg["stage2_epochs"], lrs=lrs,
        default_lr=cfg["lr_encoder"], collate=make_collate(bank), ctx=ctx, out=out,
        deadline=stage_deadline(cfg, started), teacher=joint, text=True,
    )
    if ctx.is_main:
        model.save_pretrained(out / stage / "model")
    return model


def load_for_eval(cfg: dict[str, Any], bank: TextBank) -> PatchAlign3D:
    from pa3d_models import load_official_checkpoint

    ckpt = cfg["checkpoint"] or str(Path(cfg["out"]) / "stage2" / "model")
    path = Path(ckpt)
    model = PatchAlign3D.from_pretrained(path) if path.is_dir() else load_official_checkpoint(path)
    if model.text_dim != bank.dim:
        raise SystemExit(f"--checkpoint {ckpt} has a {model.text_dim}-d text head but the text model "
                         f"{cfg['text_model']!r} gives {bank.dim}-d embeddings: "
                         "pass the text model it was trained with")
    return model


def eval_candidates(datasets: dict[str, Any], name: str) -> dict[str, tuple[list[str], list[str]]]:
    """Candidate names of each evaluated category: every name the category uses in the training data when it
    is trained on (not only the parts present in a shape), else the evaluated set's own names for it."""
    cands = dict(category_prompts(datasets[name]))
    if "train" in datasets:
        cands.update({c: v for c, v in category_prompts(datasets["train"]).items() if c in cands})
    return cands


def finish_report(out, cfg, results, models, report, started) -> None:
    from pa3d_train.report import write_metrics
    from pa3d_train.viz import save_feature_figure, save_part_figure

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
    metrics = {
        "instance_miou": primary[first_set]["instance_miou"],
        "category_miou": primary[first_set]["category_miou"],
        "per_category": primary[first_set]["per_category"],
        "evaluations": results,
        "text_encoder": report["text_encoder"],
        "teacher": report.get("teacher"),
        "minutes": (time.monotonic() - started) / 60,
        "training": {k: v["history"][-1] if v["history"] else {} for k, v in report["stages"].items()},
        "config": cfg,
    }
    write_metrics(out / "metrics.json", metrics)
    notes = [
        f"dataset: {cfg['dataset']}; model: {cfg['model']}; text encoder: {report['text_encoder']}",
        f"Stage-1 teacher: {report.get('teacher') or 'not run (weights from a checkpoint)'}",
        f"IoU convention: {cfg['iou_convention']}; patch -> point assignment: {cfg['assign']}",
        f"stage1+stage2: Stage 2 trains what freeze policy {cfg['freeze_policy']!r} leaves trainable "
        "(paper: the last block, the final norm, the text head, logit scale and bias) on the Stage-1 encoder",
        "stage2 only: the same Stage-2 loss and epochs on a randomly initialised model, every parameter trained"
        if cfg["stage2_only"] else "stage2 only: not run (--no-stage2-only)",
        f"wall clock: {metrics['minutes']:.1f} min",
    ]
    training = "\n".join(f"- {k}: " + ", ".join(f"{m}={v:.4f}" for m, v in row.items() if isinstance(v, float))
                          for k, row in metrics["training"].items())
    write_report(out / "report.md", title="PatchAlign3D recipe report", results=results, notes=notes,
                 figures=figures, extra_sections={"Final training losses": training or "(no training in this run)"})
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}" + (", figures" if figures else ""))


if __name__ == "__main__":
    sys.exit(main())
