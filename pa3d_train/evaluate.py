"""Zero-shot segmentation evaluation over a dataset: candidates per category, metrics, predictions on disk.

The candidate names of a shape are, by default, every name its category uses (``PartSample.label_names``);
a ``candidates`` map can widen them (e.g. every name the category uses in a training root). Ground-truth
names outside the candidates stay in the scoring (they can only be missed), so a restricted candidate list
never inflates the score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pa3d_layers import prior_correction
from pa3d_layers.calibration import check_calibration
from pa3d_models.deps import require
from pa3d_models.text import text_embeddings

from .metrics import SegmentationMeter, point_accuracy

__all__ = ["Candidates", "evaluate_segmentation", "segment_votes", "write_prediction"]

Candidates = Mapping[str, tuple[Sequence[str], Sequence[str]]]
"""category -> (names, prompts): the part names a shape of that category is scored against and their texts."""


def write_prediction(
    directory: str | os.PathLike, category: str, shape_id: str, points: torch.Tensor, pred: torch.Tensor, names
) -> Path:
    """Write ``<directory>/<category>/<shape_id>.npz`` with ``points (N, 3)``, ``pred (N,)`` and ``names``
    (atomically), so that anyone can score the predictions independently."""
    import io

    from pa3d_models.files import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        points=points.detach().cpu().numpy().astype(np.float32),
        pred=pred.detach().cpu().numpy().astype(np.int64),
        names=np.array(list(names)),
    )
    safe_id = str(shape_id).replace(os.sep, "_")
    return atomic_write_bytes(Path(directory) / str(category) / f"{safe_id}.npz", buf.getvalue())


def _check_votes(votes: Any) -> None:
    if not isinstance(votes, int) or isinstance(votes, bool) or votes < 1:
        raise ValueError(f"votes must be an int >= 1, got {votes!r}")


@torch.no_grad()
def segment_votes(
    model: torch.nn.Module,
    points: torch.Tensor,
    part_names: Sequence[str],
    text: Any,
    *,
    votes: int = 8,
    assign: str = "nearest",
    k: int = 3,
    seed: int | Sequence[int] = 0,
) -> torch.Tensor:
    """Mean per-point similarities of ``votes`` segmentation passes over one shape, each over its points in
    another order.

    The first pass takes the points as given; pass ``v > 0`` reorders them by a permutation drawn from a
    generator seeded by ``(seed, v)``. Farthest-point sampling starts from the first point, so each order gives
    other patch centres: a point near a patch border in one pass sits inside a patch in another, and the mean
    smooths the patch-level labels into point-level ones (on L-PSB, 8 passes add about 2 mIoU points:
    docs/results.md). Inference only; the model is called as is.

    Args:
        model: a :class:`~pa3d_models.PatchAlign3D` (anything with its ``segment`` method).
        points: ``(N, 3)`` one shape.
        part_names: the ``L`` candidate names.
        text: a text encoder, a :class:`~pa3d_models.TextBank` or the ``(L, D)`` embeddings.
        votes: passes (1 = the model's own single pass).
        assign: patch -> point assignment of each pass.
        k: neighbours for ``assign="idw"``.
        seed: an int or a tuple of ints seeding the orders.

    Returns:
        ``(N, L)`` mean cosine similarities in the input order (argmax over ``L`` gives the labels).

    Examples:
        >>> from pa3d_models import FixedTextEncoder, create_model
        >>> m = create_model("patchalign3d_tiny").eval()
        >>> sims = segment_votes(m, torch.rand(200, 3), ["leg", "seat"], FixedTextEncoder(dim=64), votes=3)
        >>> tuple(sims.shape)
        (200, 2)
    """
    from pa3d_data.base import item_generator

    _check_votes(votes)
    if not torch.is_tensor(points) or points.dim() != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be one shape (N, 3), got {getattr(points, 'shape', type(points).__name__)}")
    seeds = tuple(seed) if isinstance(seed, (tuple, list)) else (int(seed),)
    total: torch.Tensor | None = None
    for v in range(votes):
        if v == 0:
            order = None
        else:
            order = torch.randperm(points.shape[0], generator=item_generator(*seeds, v)).to(points.device)
        sims = model.segment(points if order is None else points[order], part_names, text, assign=assign,
                             k=k).similarities
        if order is not None:
            sims = torch.empty_like(sims).index_copy_(0, order, sims)
        total = sims.float() if total is None else total + sims.float()
    assert total is not None
    return total / votes


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    samples: Iterable[Any],
    text: Any,
    *,
    candidates: Candidates | None = None,
    transform: Callable[[Any], Any] | None = None,
    assign: str = "nearest",
    convention: str = "strict",
    predictions_dir: str | os.PathLike | None = None,
    keep: int = 0,
    progress: bool = False,
    votes: int = 1,
    vote_seed: int = 0,
    calibration: str = "none",
) -> dict[str, Any]:
    """Segment every shape zero-shot and score it.

    Args:
        model: a :class:`~pa3d_models.PatchAlign3D` (anything with its ``segment`` method).
        samples: ``PartSample`` objects with points in the source coordinates.
        text: a :class:`TextBank` holding every prompt, or a text encoder.
        candidates: per-category ``(names, prompts)``; default: each sample's ``label_names`` and prompts.
        transform: applied to a sample before the model sees it (normalisation, axis swap); predictions are
            written for the sample's own points, in its source coordinates.
        assign: patch -> point assignment (``"nearest"``, ``"membership"``, ``"idw"``).
        convention: IoU convention (:func:`~pa3d_train.metrics.shape_iou`).
        predictions_dir: when given, one ``.npz`` per shape is written under it.
        keep: return this many shapes' points, predictions and targets (for figures).
        progress: show a tqdm bar.
        votes: passes per shape (:func:`segment_votes`): each over the points in another seeded random order, so
            farthest-point sampling picks other patch centres and every point is labelled through several
            patchings; the similarities are averaged. 1 is the official protocol (one pass, points in file order).
        vote_seed: seed of the orders (shape ``i`` of ``samples`` draws from ``(vote_seed, i)``).
        calibration: ``"none"`` (each point takes its best-scoring name) or ``"prior"``
            (:func:`~pa3d_layers.prior_correction` of each shape's (voted) similarities with the model's logit
            scale before the argmax); see :meth:`~pa3d_models.PatchAlign3D.segment`.

    Returns:
        The meter's summary (``instance_miou``, ``category_miou``, ``per_category``, ``accuracy``, ...),
        plus ``calibration``, ``per_shape`` rows and ``examples`` (the first ``keep`` shapes); with a
        calibration, ``uncalibrated`` holds the instance, category and per-category mIoU of the same
        similarities read without it.
    """
    from pa3d_data import prompt_names

    meter = SegmentationMeter(convention=convention)
    per_shape: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    cache: dict[tuple[str, ...], torch.Tensor] = {}
    iterator: Iterable[Any] = samples
    if progress:
        tqdm = require("tqdm.auto", "evaluate(progress=True)", extra="train").tqdm

        iterator = tqdm(samples, desc="eval", unit="shape", dynamic_ncols=True)
    _check_votes(votes)
    check_calibration(calibration)
    raw_meter = SegmentationMeter(convention=convention) if calibration != "none" else None
    for index, sample in enumerate(iterator):
        if candidates is not None and sample.category in candidates:
            names, prompts = (list(x) for x in candidates[sample.category])
        else:
            names = list(sample.label_names)
            prompts = list(sample.prompts) if sample.prompts is not None else prompt_names(names)
        if not names:
            raise ValueError(f"shape {sample.category}/{sample.shape_id} has no candidate part names")
        key = tuple(prompts)
        if key not in cache:
            cache[key] = text_embeddings(text, prompts)
        model_input = transform(sample) if transform is not None else sample
        # raw names stand for the part identities (prompts may coincide after mapping)
        ids = [f"{i}:{n}" for i, n in enumerate(names)]
        if votes == 1:
            extra_kw = {"calibration": calibration} if calibration != "none" else {}  # any model with segment()
            res = model.segment(model_input.points, ids, cache[key], assign=assign, **extra_kw)
            pred, sims = res.labels.cpu(), res.similarities
        else:
            sims = segment_votes(model, model_input.points, ids, cache[key], votes=votes, assign=assign,
                                 seed=(vote_seed, index))
            ranked = prior_correction(sims, model.logit_params()[0].detach()) if calibration == "prior" else sims
            pred = ranked.argmax(dim=-1).cpu()
        # ground truth in candidate space; names outside the candidates get extra slots (never predicted)
        index = {n: i for i, n in enumerate(names)}
        extra = [n for n in sample.label_names if n not in index]
        full = {**index, **{n: len(names) + j for j, n in enumerate(extra)}}
        mapping = torch.tensor([full[n] for n in sample.label_names] or [0], dtype=torch.long)
        labels = sample.labels.cpu()
        target = torch.where(labels >= 0, mapping[labels.clamp(min=0)], torch.full_like(labels, -1))
        miou = meter.update(
            pred, target, num_parts=len(names) + len(extra), category=sample.category, shape_id=str(sample.shape_id)
        )
        if raw_meter is not None:  # the same similarities read without the calibration (no extra forward pass)
            raw_meter.update(sims.argmax(dim=-1).cpu(), target, num_parts=len(names) + len(extra),
                             category=sample.category, shape_id=str(sample.shape_id))
        per_shape.append(
            {
                "category": sample.category,
                "shape_id": str(sample.shape_id),
                "miou": miou,
                "accuracy": point_accuracy(pred, target),
            }
        )
        if predictions_dir is not None:
            write_prediction(predictions_dir, sample.category, sample.shape_id, sample.points, pred, names)
        if len(examples) < keep:
            examples.append(
                {
                    "points": model_input.points.cpu(),
                    "pred": pred,
                    "target": target,
                    "names": names + extra,
                    "title": f"{sample.category} {sample.shape_id}",
                }
            )
    summary = meter.compute()
    summary["calibration"] = calibration
    if raw_meter is not None:
        raw = raw_meter.compute()
        summary["uncalibrated"] = {k: raw[k] for k in ("instance_miou", "category_miou", "per_category")}
    summary["per_shape"] = per_shape
    summary["examples"] = examples
    return summary
