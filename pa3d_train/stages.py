"""The PatchAlign3D stage drivers on top of :func:`~pa3d_train.fit`: datasets from a configuration, the
Stage-1 target cache, Stage 1, Stage 2 (each freeze policy), evaluation of every model on every set, the report.

Each function takes the resolved configuration (see :mod:`pa3d_train.config`) and does one step, so a script
can compose them differently from :func:`pa3d_train.run`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pa3d_data import category_names, collate_dense, corrupt_labels, split_by_category
from pa3d_models import MODELS, PatchAlign3D, build_teacher, create_model, freeze_for_stage2
from pa3d_models.text import TextBank

from .baselines import reference_baselines
from .config import RESUME_KEYS, resolve_loss
from .engine import DistributedContext, FitResult, fit, read_training_state
from .evaluate import evaluate_segmentation
from .schedule import RunProgress

__all__ = [
    "model_transform",
    "eval_num_points",
    "build_datasets",
    "TrainingView",
    "make_collate",
    "all_prompts",
    "new_model",
    "teacher_targets",
    "stage1_teacher_dim",
    "train_stage1",
    "train_stage2",
    "load_for_eval",
    "eval_candidates",
    "evaluate_all",
    "estimate_eval_seconds",
    "eval_grouping",
    "apply_category_split",
    "resolve_freeze_policy",
    "teacher_is_pretrained",
    "steps_per_epoch",
]


# -------------------------------------------------------------------------------------------------- data
def model_transform(cfg: dict[str, Any], *, train: bool):
    """What real data goes through before the model: normalisation, the optional Y/Z swap, augmentation."""
    from pa3d_data import Compose, NormalizeBox, NormalizeUnitSphere, SwapYZ, build_augmentation

    steps = {"unit_sphere": [NormalizeUnitSphere()], "box": [NormalizeBox()], "none": []}[cfg["normalize"]]
    if cfg["swap_yz"]:
        steps.append(SwapYZ())
    name = cfg["augment"]
    if name == "auto":  # real data: the official augmentation (the configuration measured to work on L-PSB)
        name = "none" if cfg["dataset"] == "synthetic" else "official"
    augment = build_augmentation(name) if train else None
    if augment is not None:
        steps.append(augment)
    return Compose(steps) if steps else None


def eval_num_points(cfg: dict[str, Any]) -> int:
    """Points per evaluated shape: ``--eval-num-points``, else >= 2,048 on real data (the patch ceiling rises
    with the resolution) and the training N on the synthetic set."""
    n = cfg["num_points"]
    return cfg.get("eval_num_points") or (n if cfg["dataset"] == "synthetic" else max(n, 2048))


def build_datasets(cfg: dict[str, Any]) -> dict[str, Any]:
    """name -> dataset of PartSamples: ``"train"`` (unless the command is ``eval``) plus the evaluation sets.

    ``eval`` evaluates exactly the set it is given: ``--eval-root`` read as ``--eval-dataset`` (or
    ``--dataset``); only without a root and a real format does it use the synthetic held-out sets.
    """
    from pa3d_data import SyntheticPartDataset, build_dataset

    n, opts = cfg["num_points"], dict(cfg["dataset_option"])
    kw = {"seed": cfg["seed"], "num_points": n, **opts}
    eval_kw = {**kw, "num_points": eval_num_points(cfg)}

    def eval_set(fmt: str, root: Any) -> Any:
        ds = build_dataset(fmt, root, **eval_kw)
        if not cfg.get("eval_num_points") and hasattr(ds, "allow_fewer"):
            ds.allow_fewer = True  # the default resolution: N points, or every point a smaller shape has
        return ds
    real_eval = cfg["eval_root"] or (cfg["eval_dataset"] not in (None, "synthetic"))
    if cfg["command"] == "eval" and real_eval:
        fmt = cfg["eval_dataset"] or cfg["dataset"]
        return {"eval": eval_set(fmt, cfg["eval_root"])}
    if cfg["dataset"] == "synthetic" and not real_eval:  # already centred in the unit sphere
        augment = model_transform({**cfg, "normalize": "none", "swap_yz": False}, train=True)
        return {
            "train": SyntheticPartDataset(cfg["train_shapes"], split="train", transform=augment, **kw),
            "heldout_shapes": SyntheticPartDataset(cfg["eval_shapes"], split="test", **kw),
            "heldout_categories": SyntheticPartDataset(cfg["heldout_shapes"], split="heldout_categories", **kw),
        }
    sets: dict[str, Any] = {}
    if cfg["dataset"] == "synthetic":
        sets["train"] = SyntheticPartDataset(cfg["train_shapes"], split="train",
                                             transform=model_transform({**cfg, "normalize": "none",
                                                                        "swap_yz": False}, train=True), **kw)
    elif cfg["train_root"]:
        train = build_dataset(cfg["dataset"], cfg["train_root"], transform=model_transform(cfg, train=True), **kw)
        if cfg["train_split"]:
            # the evaluated half is read without the model's transform: predictions stay in file coordinates
            raw = eval_set(cfg["dataset"], cfg["train_root"])
            (first, second), (raw_first, raw_second) = split_by_category(train), split_by_category(raw)
            train, held = (first, raw_second) if cfg["train_split"] == "first_half" else (second, raw_first)
            sets["eval"] = held
        sets["train"] = train
    if cfg["eval_root"] or "eval" not in sets:
        fmt = cfg["eval_dataset"] or cfg["dataset"]
        sets["eval"] = eval_set(fmt, cfg["eval_root"] or cfg["train_root"])
    return apply_category_split(sets, cfg)


def apply_category_split(sets: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``--train-categories`` / ``--eval-categories`` / ``--split-file``: keep the training categories in
    ``"train"`` and the evaluation categories in ``"eval"`` (checked first: a category the data lacks, or an
    evaluated category without usable part names, stops the run before training)."""
    from pa3d_data import CategorySplit, check_category_split, load_category_split, select_categories
    from pa3d_data.utils import _categories_by_index

    if cfg["split_file"]:
        split = load_category_split(cfg["split_file"])
    elif cfg["train_categories"] or cfg["eval_categories"]:
        split = CategorySplit(tuple(cfg["train_categories"]), tuple(cfg["eval_categories"]))
    else:
        return sets
    cats = {name: list(dict.fromkeys(_categories_by_index(sets[name]))) for name in ("train", "eval") if name in sets}
    if not split.eval and "eval" in cats:  # only training categories named: evaluate on every other one
        split = CategorySplit(split.train, tuple(c for c in cats["eval"] if c not in split.train))
    if not split.train and "train" in cats:  # only evaluation categories named: train on every other one
        split = CategorySplit(tuple(c for c in cats["train"] if c not in split.eval), split.eval)
    names = {c: v[0] for c, v in category_names(sets["eval"]).items()} if "eval" in sets else None
    split = check_category_split(split, list(dict.fromkeys(cats.get("train", []) + cats.get("eval", []))), names)
    out = dict(sets)
    for name, wanted, flag in (("train", split.train, "--train-categories"), ("eval", split.eval, "--eval-categories")):
        if name in sets:
            missing = [c for c in wanted if c not in cats[name]]
            if missing:
                raise ValueError(f"{flag} {missing} have no shape in the {name} data (it has {cats[name]})")
            out[name] = select_categories(sets[name], list(wanted))
    return out


class TrainingView(torch.utils.data.Dataset):
    """A dataset as the training loop sees it: label noise, and Stage-1 targets from the cache.

    ``set_epoch`` (called by :func:`~pa3d_train.fit`) reaches the wrapped dataset, so augmentation and label
    noise depend on the epoch, also in DataLoader workers and after a resume.
    """

    def __init__(self, base, *, label_noise: float = 0.0, seed: int = 0, cache=None):
        self.base, self.label_noise, self.seed, self.cache = base, label_noise, seed, cache
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        elif hasattr(self.base, "epoch"):
            self.base.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        sample = self.base[index]
        if self.label_noise > 0:
            sample = corrupt_labels(sample, self.label_noise, seed=(self.seed, self.epoch, index))
        if self.cache is not None:
            cached = self.cache.load(sample.shape_id)
            sample.meta["teacher_centers"] = cached["centers"].float()
            sample.meta["teacher_targets"] = cached["targets"].float()
        return sample


def make_collate(bank: TextBank | None) -> Callable:
    """collate_dense plus each shape's text embeddings (padded to L) and, when present, Stage-1 targets."""

    def collate(samples):
        batch = collate_dense(samples)
        if bank is not None:
            texts = batch["texts"]
            feats = torch.zeros(len(samples), batch["text_mask"].shape[1], bank.dim)
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
        for names in category_names(ds).values():
            prompts.update(dict.fromkeys(names[1]))
    return list(prompts)


def steps_per_epoch(num_shapes: int, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps in one epoch: ``(num_shapes // world_size) // (batch_size // world_size)``.

    Examples:
        >>> steps_per_epoch(28, 7), steps_per_epoch(28, 14, 2), steps_per_epoch(29, 14, 2)
        (4, 2, 2)
    """
    per_rank = batch_size // world_size
    return (num_shapes // world_size) // per_rank if per_rank else 0


# ------------------------------------------------------------------------------------------------ models
def new_model(cfg: dict[str, Any], *, text_dim: int, teacher_dim: int) -> PatchAlign3D:
    """The configured model with random weights (the registry's config, ``--model-option`` and the run's
    overrides)."""
    overrides: dict[str, Any] = {**cfg.get("model_option", {}), "text_dim": text_dim, "teacher_dim": teacher_dim,
                                 "logit_mode": cfg["scale_mode"]}
    if cfg["scale_mode"] == "paper":
        overrides.update(logit_scale_init=cfg["init_scale"], logit_bias_init=cfg["init_bias"])
    if cfg["num_groups"]:
        overrides["num_groups"] = cfg["num_groups"]
    if cfg["group_size"]:
        overrides["group_size"] = cfg["group_size"]
    return create_model(cfg["model"], **overrides)


def teacher_targets(cfg: dict[str, Any], dataset, ctx: DistributedContext, out: Path, say=print):
    """Render, run the 2D teacher, back-project and cache the Stage-1 patch targets of the training shapes.

    Returns ``(cache, teacher_dim, weights_note)``. Every process computes its share; a shape that fails
    stops the run with the counts (its targets would be missing from training).
    """
    from pa3d_data.targets import TargetCache, precompute_targets

    teacher = build_teacher(cfg["teacher"], cfg["teacher_weights"], image_size=cfg["teacher_size"],
                            random_weights_ok=True).to(ctx.device)
    note = getattr(teacher, "weights_note", None)
    if note:
        say(f"  teacher: {note}")
    spec = MODELS[cfg["model"]]  # the patches the model will form: the registry's config plus overrides
    settings = {"teacher": getattr(teacher, "name", cfg["teacher"]), "weights": note or "given",
                "views": cfg["views"], "image_size": cfg["image_size"], "teacher_size": cfg["teacher_size"],
                "num_groups": cfg["num_groups"] or spec["num_groups"],
                "group_size": cfg["group_size"] or spec["group_size"], "num_points": cfg["num_points"],
                "seed": cfg["seed"], "dataset": cfg["dataset"], "train_root": str(cfg["train_root"]),
                **({"dataset_option": dict(cfg["dataset_option"])} if cfg["dataset_option"] else {})}
    cache = TargetCache(Path(cfg["teacher_cache"] or out / "teacher_cache"), settings)
    summary = precompute_targets(dataset, teacher, cache, views=cfg["views"], image_size=cfg["image_size"],
                                 rank=ctx.rank, world_size=ctx.world_size, progress=ctx.is_main)
    say(f"  teacher targets: {summary}")
    failed = torch.tensor([summary.failed])
    if ctx.distributed:
        torch.distributed.all_reduce(failed)
    if int(failed):
        raise ValueError(f"Stage-1 targets: {int(failed)} of {len(dataset)} shapes failed (messages above); "
                         "fix the data or the render settings (--views, --image-size, --num-points)")
    return cache, int(teacher.feature_dim), note


def stage1_teacher_dim(path: str | Path) -> int:
    """The teacher width T of a Stage-1 checkpoint (read without unpickling code)."""
    state = read_training_state(path)["model"]
    if "teacher_head.weight" not in state:
        raise ValueError(f"--stage1-checkpoint {path} holds no teacher head: not a Stage-1 checkpoint")
    return int(state["teacher_head.weight"].shape[0])


def _loss_call(loss: Any) -> Callable:
    try:
        takes_dict = "return_dict" in inspect.signature(loss).parameters
    except (TypeError, ValueError):
        takes_dict = False
    return (lambda out, batch: loss(out, batch, return_dict=True)) if takes_dict else loss


def _fit_stage(stage, model, loss, dataset, cfg, *, epochs, lrs, default_lr, collate, ctx, out, budget_s,
               progress, teacher: bool, text: bool, log) -> FitResult:
    return fit(
        model, _loss_call(loss), dataset, epochs=epochs, batch_size=cfg["batch_size"], lr=default_lr, lrs=lrs,
        weight_decay=cfg["weight_decay"], optimizer=cfg["optimizer"], schedule=cfg["lr_schedule"],
        warmup=cfg["warmup"], min_lr_factor=cfg["min_lr_factor"], time_budget_s=budget_s, collate_fn=collate,
        forward=lambda net, batch: net(batch["points"], return_teacher=teacher, return_text=text),
        amp=cfg["amp"], grad_clip=cfg["grad_clip"], bn_eval=cfg["bn_eval"], num_workers=cfg["num_workers"],
        seed=cfg["seed"], ctx=ctx, out_dir=out / stage, name=stage, resume=cfg["resume"], config=cfg,
        resume_keys=RESUME_KEYS, tensorboard=cfg["tensorboard"], progress=progress, ema=cfg["ema"],
        checkpoint_interval_s=cfg["checkpoint_interval"], log=log,
    )


def train_stage1(model: PatchAlign3D, train, cache, cfg: dict[str, Any], *, ctx: DistributedContext, out: Path,
                 budget_s: float | None = None, progress: RunProgress | None = None, log=print) -> FitResult:
    """Stage 1: distil the cached teacher targets into the patch features (``OUT/stage1``).

    The text head and the logit parameters take no part (``requires_grad=False``), so DDP sees only
    parameters that receive gradients.
    """
    for module in (model.text_head, model.logit):
        module.requires_grad_(False)
    return _fit_stage("stage1", model, resolve_loss(cfg["stage1_loss"], None, flag="--stage1-loss"),
                      TrainingView(train, cache=cache), cfg, epochs=cfg["stage1_epochs"],
                      lrs={"teacher_head": cfg["lr_head"]}, default_lr=cfg["stage1_lr_encoder"],
                      collate=make_collate(None), ctx=ctx, out=out, budget_s=budget_s, progress=progress,
                      teacher=True, text=False, log=log)


def teacher_is_pretrained(cfg: dict[str, Any]) -> bool:
    """Whether Stage 1 distils a pretrained 2D teacher: ``--teacher-weights`` given, or DINOv2 weights in the
    default place (the weight-free geometry teacher and a random-weight DINOv2 are not)."""
    from pa3d_models import default_weights_path, resolve_teacher_name
    from pa3d_models.teachers import TEACHERS

    name = resolve_teacher_name(cfg["teacher"], cfg["teacher_weights"])
    arch = TEACHERS.get(name, name)
    return bool(cfg["teacher_weights"]) or ("dinov2" in arch and default_weights_path(arch).is_file())


def resolve_freeze_policy(cfg: dict[str, Any]) -> tuple[str, str]:
    """``(policy, reason)``: ``--freeze-policy`` as given, or for ``auto`` the paper's freezing when Stage 1
    distilled a pretrained teacher (:func:`teacher_is_pretrained`) and the whole encoder otherwise (a
    weight-free or random teacher gives Stage 1 too little to freeze on)."""
    if cfg["freeze_policy"] != "auto":
        return cfg["freeze_policy"], "set by --freeze-policy"
    if cfg.get("init_checkpoint"):
        return "paper", "auto: fine-tuning trained weights (--init-checkpoint) keeps the paper's freezing"
    if teacher_is_pretrained(cfg):
        return "paper", f"auto: Stage 1 distilled the pretrained teacher {cfg['teacher']!r}"
    return "none", (f"auto: Stage 1's teacher {cfg['teacher']!r} has no pretrained weights here, so the whole "
                    "encoder trains")


def train_stage2(stage: str, model: PatchAlign3D, train, bank: TextBank, cache, cfg: dict[str, Any], *,
                 ctx: DistributedContext, out: Path, policy: str | None = None, budget_s: float | None = None,
                 progress: RunProgress | None = None, log=print) -> FitResult:
    """Stage 2 (or the Stage-2-only comparison with ``policy="none"``): align patches with text (``OUT/<stage>``).

    ``policy`` (default ``cfg["freeze_policy"]``) decides what trains; the teacher head is frozen unless the
    loss is ``joint`` (which also distils), so DDP sees only parameters that receive gradients. The trained
    model is saved with ``save_pretrained`` in ``OUT/<stage>/model``.
    """
    if policy is None:
        policy, why = resolve_freeze_policy(cfg)
        log(f"  {stage}: freeze policy {policy!r} ({why})")
    if policy != "none":
        freeze_for_stage2(model, policy=policy, freeze_bn_stats=cfg["freeze_bn_stats"])
    joint = cfg["loss"] == "joint"
    if not joint:
        model.teacher_head.requires_grad_(False)
    view = TrainingView(train, label_noise=cfg["label_noise"], seed=cfg["seed"], cache=cache if joint else None)
    result = _fit_stage(stage, model, resolve_loss(cfg["loss"], cfg["loss_args"]), view, cfg,
                        epochs=cfg["stage2_epochs"], lrs={"text_head": cfg["lr_head"], "logit": cfg["lr_logit"]},
                        default_lr=cfg["lr_encoder"], collate=make_collate(bank), ctx=ctx, out=out,
                        budget_s=budget_s, progress=progress, teacher=joint, text=True, log=log)
    if ctx.is_main:
        model.save_pretrained(out / stage / "model")
    return result


# ---------------------------------------------------------------------------------------------- evaluation
def load_for_eval(cfg: dict[str, Any], bank: TextBank) -> PatchAlign3D:
    """The model ``eval`` scores: ``--checkpoint`` (a save_pretrained folder or an official ``.pt``), at its own
    patch grouping unless ``--num-groups`` / ``--group-size`` name another."""
    from pa3d_models import load_official_checkpoint

    ckpt = cfg["checkpoint"] or str(Path(cfg["out"]) / "stage2" / "model")
    path = Path(ckpt)
    if not path.exists():
        raise ValueError(f"--checkpoint {ckpt} does not exist")
    try:
        grouping = {k: cfg[k] for k in ("num_groups", "group_size") if cfg[k]}
        if path.is_dir():
            model = PatchAlign3D.from_pretrained(path)
            # the grouping shapes no weight: --num-groups / --group-size evaluate a saved model at another one
            grouper = model.encoder.grouper
            grouper.num_groups = grouping.get("num_groups", grouper.num_groups)
            grouper.group_size = grouping.get("group_size", grouper.group_size)
        else:
            model = load_official_checkpoint(path, **grouping)
    except (ValueError, OSError):
        raise
    except Exception as exc:  # a damaged file raises many types
        raise ValueError(f"--checkpoint {ckpt} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if model.text_dim != bank.dim:
        raise ValueError(f"--checkpoint {ckpt} has a {model.text_dim}-d text head but the text model "
                         f"{cfg['text_model']!r} gives {bank.dim}-d embeddings: "
                         "pass the text model it was trained with")
    return model


def eval_candidates(datasets: dict[str, Any], name: str) -> dict[str, tuple[list[str], list[str]]]:
    """Candidate names of each evaluated category: every name the category uses in the training data when it
    is trained on (not only the parts present in a shape), else the evaluated set's own names for it."""
    cands = dict(category_names(datasets[name]))
    if "train" in datasets:
        cands.update({c: v for c, v in category_names(datasets["train"]).items() if c in cands})
    return cands


def eval_grouping(cfg: dict[str, Any], num_groups: int, group_size: int, num_points: int) -> tuple[int, int]:
    """``(G, K)`` to evaluate a model trained in this run with ``num_groups`` / ``group_size`` at
    ``num_points`` points: both scaled by ``num_points / cfg["num_points"]``, so that each patch covers the
    same share of the surface as in training (and the patch ceiling rises with the resolution). A checkpoint
    given to ``eval`` keeps its own grouping (its training resolution is not known here).

    Examples:
        >>> eval_grouping({"command": "all", "num_points": 1024}, 64, 16, 2048)
        (128, 32)
        >>> eval_grouping({"command": "eval", "num_points": 1024}, 128, 32, 2048)
        (128, 32)
    """
    factor = num_points / cfg["num_points"]
    if cfg["command"] == "eval" or factor <= 1.0:
        return num_groups, group_size
    return min(num_points, round(num_groups * factor)), min(num_points, round(group_size * factor))


@contextlib.contextmanager
def _evaluation_grouping(model: PatchAlign3D, cfg: dict[str, Any], name: str):
    """Within the block the model's grouper uses :func:`eval_grouping` for the set ``name``; its training
    grouping is restored after (the saved model keeps it)."""
    # as build_datasets made them: the synthetic held-out sets at the training N, every other set at eval N
    n = cfg["num_points"] if cfg["dataset"] == "synthetic" and name != "eval" else eval_num_points(cfg)
    grouper = model.encoder.grouper
    trained = (grouper.num_groups, grouper.group_size)
    grouper.num_groups, grouper.group_size = eval_grouping(cfg, *trained, n)
    try:
        yield grouper
    finally:
        grouper.num_groups, grouper.group_size = trained


def _eval_transform(cfg: dict[str, Any], name: str):
    """What an evaluated sample goes through: nothing for the synthetic held-out sets (already centred)."""
    return None if cfg["dataset"] == "synthetic" and name != "eval" else model_transform(cfg, train=False)


def evaluate_all(models: dict[str, PatchAlign3D], datasets: dict[str, Any], bank: TextBank, cfg: dict[str, Any],
                 out: Path, say=print) -> dict[str, dict[str, Any]]:
    """Every model on every evaluation set; predictions (the first model, first set) and examples kept."""
    eval_sets = {k: v for k, v in datasets.items() if k != "train"}
    first_run, first_set = next(iter(models)), next(iter(eval_sets))
    votes = cfg.get("eval_votes", 1)
    calibration = cfg.get("eval_calibration", "none")
    results: dict[str, dict[str, Any]] = {}
    references: dict[str, dict[str, Any]] = {}
    for run, model in models.items():
        results[run] = {}
        for name, ds in eval_sets.items():
            with _evaluation_grouping(model, cfg, name) as grouper:  # patches of the training extent
                primary = run == first_run
                transform = _eval_transform(cfg, name)
                if cfg.get("baselines", True) and name not in references:
                    references[name] = reference_baselines(
                        ds, num_groups=grouper.num_groups, group_size=grouper.group_size,
                        transform=transform, assign=cfg["assign"], convention=cfg["iou_convention"])
                    ref = references[name]
                    say(f"  [reference] {name}: patch ceiling {100 * ref['patch_ceiling']['instance_miou']:.1f}, "
                        f"one label {100 * ref['one_label']['instance_miou']:.1f} (instance mIoU; "
                        f"N={ds[0].num_points}, G={grouper.num_groups}, "
                        f"K={grouper.group_size})")
                results[run][name] = summary = evaluate_segmentation(
                    model.eval(), ds, bank, candidates=eval_candidates(datasets, name), assign=cfg["assign"],
                    transform=transform,
                    convention=cfg["iou_convention"], keep=cfg["figures"] if primary else 0, progress=True,
                    votes=votes, calibration=calibration,
                    predictions_dir=out / "predictions" if primary and name == first_set else None,
                )
                if name in references:
                    summary["baselines"] = {k: {m: v[m] for m in ("instance_miou", "category_miou", "per_category")}
                                            for k, v in references[name].items()}
                    summary["baselines"]["num_points"] = int(ds[0].num_points)
                raw = summary.get("uncalibrated")
                say(f"  [{run}] {name}: instance mIoU {100 * summary['instance_miou']:.1f}, "
                    f"category mIoU {100 * summary['category_miou']:.1f} (G={grouper.num_groups}, "
                    f"K={grouper.group_size}" + (f", {votes} votes" if votes > 1 else "")
                    + (f", {calibration} calibration; without it {100 * raw['instance_miou']:.1f} / "
                       f"{100 * raw['category_miou']:.1f}" if raw else "") + ")")
                summary["num_groups"], summary["group_size"] = grouper.num_groups, grouper.group_size
                summary["votes"] = votes
    return results


#: Safety factor on the timed evaluation estimate. 1.5 reserved about twice what the L-PSB runs used (42 s-1m37s
#: reserved, 24-45 s used, docs/results.md); timing 4 shapes instead of 2 steadies the estimate.
EVAL_MARGIN = 1.2


def estimate_eval_seconds(model: PatchAlign3D, datasets: dict[str, Any], bank: TextBank, cfg: dict[str, Any], *,
                          num_models: int, sample: int = 4) -> float:
    """Seconds :func:`evaluate_all` will take, timed on ``sample`` shapes of each evaluation set (reading,
    transforms, the forward pass, metrics) and scaled to every shape, model and reference point, times
    :data:`EVAL_MARGIN`.

    ``--max-minutes`` reserves this for evaluation, so the rest of its share goes to training.
    """
    import time

    seconds = 15.0  # figures, report, metrics files
    for name, ds in datasets.items():
        if name == "train" or len(ds) == 0:
            continue
        with _evaluation_grouping(model, cfg, name):
            kw = {"candidates": eval_candidates(datasets, name), "assign": cfg["assign"],
                  "transform": _eval_transform(cfg, name), "convention": cfg["iou_convention"],
                  "votes": cfg.get("eval_votes", 1), "calibration": cfg.get("eval_calibration", "none")}
            evaluate_segmentation(model.eval(), [ds[0]], bank, **kw)  # warm-up: first calls allocate what others reuse
            idx = list(range(min(1, len(ds) - 1), min(1 + sample, len(ds))))
            t0 = time.monotonic()
            evaluate_segmentation(model, [ds[i] for i in idx], bank, **kw)
            per_shape = (time.monotonic() - t0) / len(idx)
            # each model reads and segments every shape (votes passes each); the reference points read and group
            # them once more, about one pass
            votes = kw["votes"]
            reference = per_shape / votes if cfg.get("baselines", True) else 0.0
            seconds += len(ds) * (per_shape * num_models + reference)
    return EVAL_MARGIN * seconds
