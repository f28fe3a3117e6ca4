"""Fine-tuning from released or saved weights: the run's model initialised from ``--init-checkpoint`` (a
save_pretrained folder, a recipe ``last.pt``, an official ``.pt`` or a cached ``hf://`` id), a frozen copy
kept for the evaluation before fine-tuning, and the before/after comparison for ``metrics.json`` and the
report.

Stage 2 then trains it under the usual freeze policy (``paper``, ``official`` or ``none``). The folder the
run writes (``OUT/stage2/model``) records where it started (``metadata.init_checkpoint``: path, kind,
SHA-256 of the weights), see :func:`pa3d_models.init_from_checkpoint`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pa3d_models import MODELS, InitReport, PatchAlign3D, init_from_checkpoint

from .config import ConfigError
from .stages import new_model

__all__ = [
    "BEFORE",
    "AFTER",
    "check_init_checkpoint",
    "init_for_finetuning",
    "frozen_copy",
    "finetune_summary",
    "finetune_markdown",
]

#: Names of the two evaluated models in the results, the report and ``metrics.json``.
BEFORE, AFTER = "before fine-tuning", "after fine-tuning"


def check_init_checkpoint(cfg: Mapping[str, Any]) -> None:
    """Refuse an unusable ``--init-checkpoint`` before anything is written: a dry run of the initialisation on a
    throw-away model (the text width is checked by :func:`init_for_finetuning`, once the text encoder is known).

    Raises:
        ConfigError: missing, unreadable, untrusted, non-finite, or of another architecture (one line).
    """
    spec = cfg["init_checkpoint"]
    model = new_model(dict(cfg), text_dim=1, teacher_dim=int(MODELS[cfg["model"]].get("teacher_dim", 768)))
    try:
        init_from_checkpoint(model, spec, reinit_text_head=True, trusted=bool(cfg.get("trust_checkpoint")))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"--init-checkpoint {spec}: {err}") from None


def init_for_finetuning(
    cfg: Mapping[str, Any],
    *,
    text_dim: int,
    teacher_dim: int | None = None,
    device: torch.device | str | None = None,
    say: Callable[..., Any] = print,
) -> tuple[PatchAlign3D, InitReport]:
    """Build the configured model and initialise it from ``cfg["init_checkpoint"]``.

    The model is ``cfg["model"]`` with the run's overrides (:func:`~pa3d_train.stages.new_model`) and the
    text encoder's width ``text_dim``; its encoder must fit the checkpoint's. What was taken, kept or
    re-initialised is said through ``say``.

    Args:
        cfg: the resolved configuration (``init_checkpoint``, ``reinit_text_head``, ``trust_checkpoint``,
            ``model``, ...).
        text_dim: the text encoder's embedding width.
        teacher_dim: the teacher head's width (default: the registry's for ``cfg["model"]``; a checkpoint's
            teacher head of another width is not taken, Stage 2 does not use it).
        device: where the model goes.
        say: the logger.

    Returns:
        ``(model, report)``: the initialised model and :class:`~pa3d_models.InitReport` (origin, parts taken).

    Raises:
        ConfigError: the checkpoint is missing, unreadable, untrusted, of another architecture, or has a text
            head of another width without ``--reinit-text-head`` (one line naming the flag and the reason).
    """
    spec = cfg["init_checkpoint"]
    teacher_dim = teacher_dim or int(MODELS[cfg["model"]].get("teacher_dim", 768))
    model = new_model(dict(cfg), text_dim=text_dim, teacher_dim=teacher_dim)
    try:
        report = init_from_checkpoint(model, spec, reinit_text_head=bool(cfg.get("reinit_text_head")),
                                      trusted=bool(cfg.get("trust_checkpoint")))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"--init-checkpoint {spec}: {err}") from None
    origin = report.origin
    say(f"  fine-tuning from {origin.path} ({origin.kind.replace('_', ' ')}, sha256 {origin.sha256[:12]}): "
        f"took {', '.join(report.loaded)}")
    for note in report.notes:
        say(f"    {note}")
    if device is not None:
        model = model.to(device)
    return model, report


def frozen_copy(model: PatchAlign3D) -> PatchAlign3D:
    """A detached copy of ``model`` in eval mode with no trainable parameters (scored before fine-tuning)."""
    twin = copy.deepcopy(model).eval()
    twin.requires_grad_(False)
    return twin


def finetune_summary(results: Mapping[str, Mapping[str, Mapping[str, Any]]], report: InitReport) -> dict[str, Any]:
    """The before/after comparison per evaluation set, for ``metrics.json["fine_tuning"]``.

    Args:
        results: ``{run: {set: summary}}`` from :func:`~pa3d_train.stages.evaluate_all`, holding the runs
            :data:`BEFORE` and :data:`AFTER`.
        report: what :func:`init_for_finetuning` returned.

    Returns:
        ``{"init_checkpoint": origin, "loaded", "reinitialised", "notes", "sets": {set: {"before": {...},
        "after": {...}, "gain": {...}}}}`` with instance and category mIoU.

    Examples:
        >>> from pa3d_models import CheckpointOrigin, InitReport
        >>> r = InitReport(CheckpointOrigin("x", "/x", "official", "/x", "ab"), ("encoder",), (), ())
        >>> res = {BEFORE: {"eval": {"instance_miou": 0.25, "category_miou": 0.5}},
        ...        AFTER: {"eval": {"instance_miou": 0.75, "category_miou": 0.5}}}
        >>> finetune_summary(res, r)["sets"]["eval"]["gain"]
        {'instance_miou': 0.5, 'category_miou': 0.0}
    """
    for run in (BEFORE, AFTER):
        if run not in results:
            raise ValueError(f"results must hold the runs {BEFORE!r} and {AFTER!r}, got {sorted(results)}")
    keys = ("instance_miou", "category_miou")
    sets = {}
    for name, after in results[AFTER].items():
        before = results[BEFORE].get(name)
        if before is None:
            continue
        b = {k: float(before[k]) for k in keys}
        a = {k: float(after[k]) for k in keys}
        sets[name] = {"before": b, "after": a, "gain": {k: a[k] - b[k] for k in keys}}
    return {
        "init_checkpoint": report.origin.to_dict(),
        "loaded": list(report.loaded),
        "reinitialised": list(report.reinitialised),
        "notes": list(report.notes),
        "sets": sets,
    }


def finetune_markdown(summary: Mapping[str, Any]) -> str:
    """A markdown section for the report: where the weights came from and mIoU before and after, per set."""
    origin = summary["init_checkpoint"]
    lines = [
        f"Initialised from `{origin['path']}` ({origin['kind'].replace('_', ' ')}; SHA-256 of "
        f"`{origin['weights']}`: `{origin['sha256']}`). Taken: {', '.join(summary['loaded'])}"
        + (f"; re-initialised: {', '.join(summary['reinitialised'])}" if summary["reinitialised"] else "") + ".",
        "",
        "| evaluation set | instance mIoU before | after | gain | category mIoU before | after | gain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in summary["sets"].items():
        b, a, g = row["before"], row["after"], row["gain"]
        lines.append(f"| {name} | {100 * b['instance_miou']:.1f} | {100 * a['instance_miou']:.1f} | "
                     f"{100 * g['instance_miou']:+.1f} | {100 * b['category_miou']:.1f} | "
                     f"{100 * a['category_miou']:.1f} | {100 * g['category_miou']:+.1f} |")
    lines += [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines)
