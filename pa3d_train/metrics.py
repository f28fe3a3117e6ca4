"""Part-segmentation metrics under the conventions found in the literature.

Three published conventions differ in what they do with parts that are absent from a shape:

| name | parts scored for one shape | empty union |
| --- | --- | --- |
| ``"strict"`` (default) | every candidate name whose ground truth or prediction is non-empty | never scored |
| ``"patchalign3d"`` | only parts present in the ground truth (predicted-but-absent ignored) | never scored |
| ``"find3d"`` | every part whose union is non-empty | skipped |
| ``"pointnet"`` | every candidate part | counts 1.0 |

``"strict"`` and ``"find3d"`` score the same set (a non-empty union is exactly "ground truth or prediction
non-empty"): a part predicted but absent from the ground truth scores 0 under both. ``"patchalign3d"`` is
the official release's ``compute_point_metrics``; ``"pointnet"`` is the PointNet/COPS convention.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

__all__ = [
    "IOU_CONVENTIONS",
    "shape_iou",
    "per_part_iou",
    "instance_miou",
    "category_miou",
    "point_accuracy",
    "patch_accuracy",
    "SegmentationMeter",
]

Convention = Literal["strict", "patchalign3d", "find3d", "pointnet"]
IOU_CONVENTIONS: tuple[str, ...] = ("strict", "patchalign3d", "find3d", "pointnet")


def _check_labels(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(
            f"pred and target must both be (N,) integer tensors of the same length, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer label tensors, got floating point")


def per_part_iou(
    pred: torch.Tensor, target: torch.Tensor, num_parts: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union counts of each part for one shape.

    Points whose target is negative (unlabelled) are ignored.

    Args:
        pred: predicted part index per point.
        target: true part index per point, -1 for unlabelled.
        num_parts: number of candidate parts P.

    Returns:
        ``(intersection, union)``, each ``(P,)`` long.

    Shape:
        pred, target: ``(N,)``.

    Examples:
        >>> i, u = per_part_iou(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), 3)
        >>> i.tolist(), u.tolist()
        ([1, 2, 0], [2, 3, 0])
    """
    _check_labels(pred, target)
    keep = target >= 0
    pred, target = pred[keep].long(), target[keep].long()
    if pred.numel() and (int(pred.max()) >= num_parts or int(target.max()) >= num_parts or pred.min() < 0):
        raise ValueError(f"labels must lie in [0, num_parts={num_parts}); got pred/target outside that range")
    pred_count = torch.bincount(pred, minlength=num_parts)
    true_count = torch.bincount(target, minlength=num_parts)
    inter = torch.bincount(pred[pred == target], minlength=num_parts)
    return inter, pred_count + true_count - inter


def shape_iou(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_parts: int,
    *,
    convention: Convention = "strict",
) -> float | None:
    """Mean IoU of one shape over its candidate parts, under a named convention.

    Args:
        pred: predicted part index per point, in ``[0, num_parts)``.
        target: true part index per point, -1 for unlabelled points (ignored).
        num_parts: number of candidate part names of the shape.
        convention: ``"strict"``, ``"patchalign3d"``, ``"find3d"`` or ``"pointnet"`` (module docs).

    Returns:
        The shape's mIoU, or None when the convention scores no part of this shape (the shape is then
        left out of averages, as the official code does).

    Shape:
        pred, target: ``(N,)``.

    Examples:
        >>> pred, gt = torch.tensor([0, 0, 2, 2]), torch.tensor([0, 0, 1, 1])
        >>> shape_iou(pred, gt, 3)  # part 2 predicted but absent: scored 0
        0.3333333432674408
        >>> shape_iou(pred, gt, 3, convention="patchalign3d")  # only parts present in the ground truth
        0.5
        >>> shape_iou(pred, gt, 3, convention="pointnet")  # empty union (none here) would count 1.0
        0.3333333432674408
    """
    if convention not in IOU_CONVENTIONS:
        raise ValueError(f"convention must be one of {IOU_CONVENTIONS}, got {convention!r}")
    inter, union = per_part_iou(pred, target, num_parts)
    iou = inter.float() / union.clamp(min=1).float()
    if convention in ("strict", "find3d"):
        scored = union > 0
    elif convention == "patchalign3d":
        scored = torch.bincount(target[target >= 0].long(), minlength=num_parts) > 0
    else:  # pointnet
        iou = torch.where(union == 0, torch.ones_like(iou), iou)
        scored = torch.ones_like(union, dtype=torch.bool)
    if not bool(scored.any()):
        return None
    return float(iou[scored].mean())


def instance_miou(shape_ious: Iterable[float | None]) -> float:
    """Mean over shapes of their mIoU (shapes with None are left out).

    Examples:
        >>> instance_miou([0.5, 1.0, None])
        0.75
    """
    values = [v for v in shape_ious if v is not None]
    if not values:
        raise ValueError("shape_ious has no scored shape: cannot average an empty set")
    return sum(values) / len(values)


def category_miou(
    shape_ious: Sequence[float | None], categories: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """Mean over categories of the mean of their shapes' mIoU (a true per-category instance mean).

    Args:
        shape_ious: one mIoU (or None) per shape.
        categories: the category of each shape.

    Returns:
        ``(category_mean, per_category)``.

    Examples:
        >>> category_miou([0.2, 0.4, 1.0], ["chair", "chair", "mug"])
        (0.65, {'chair': 0.30000000000000004, 'mug': 1.0})
    """
    if len(shape_ious) != len(categories):
        raise ValueError(
            "shape_ious and categories must have the same length, "
            f"got {len(shape_ious)} and {len(categories)}"
        )
    groups: dict[str, list[float]] = defaultdict(list)
    for value, cat in zip(shape_ious, categories):
        if value is not None:
            groups[cat].append(value)
    if not groups:
        raise ValueError("shape_ious has no scored shape: cannot average an empty set")
    per_category = {cat: sum(v) / len(v) for cat, v in sorted(groups.items())}
    return sum(per_category.values()) / len(per_category), per_category


def point_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Fraction of labelled points whose prediction is right (None when no point is labelled).

    Examples:
        >>> point_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, -1]))
        0.5
    """
    _check_labels(pred, target)
    keep = target >= 0
    if not bool(keep.any()):
        return None
    return float((pred[keep] == target[keep]).float().mean())


def patch_accuracy(patch_pred: torch.Tensor, patch_target: torch.Tensor) -> float | None:
    """Accuracy of per-patch argmax labels against each patch's majority label (-1 = no labelled point).

    Shape:
        patch_pred, patch_target: ``(G,)`` or ``(B, G)``.

    Examples:
        >>> patch_accuracy(torch.tensor([2, 0, 1]), torch.tensor([2, 1, -1]))
        0.5
    """
    return point_accuracy(patch_pred.reshape(-1), patch_target.reshape(-1))


class SegmentationMeter:
    """Accumulates per-shape results and reports instance, category and per-category mIoU.

    Args:
        convention: IoU convention (see :func:`shape_iou`).

    Examples:
        >>> meter = SegmentationMeter()
        >>> meter.update(torch.tensor([0, 1]), torch.tensor([0, 1]), num_parts=2, category="mug")
        1.0
        >>> meter.update(torch.tensor([0, 0]), torch.tensor([0, 1]), num_parts=2, category="cap")
        0.25
        >>> meter.compute()["instance_miou"]
        0.625
    """

    def __init__(self, convention: Convention = "strict") -> None:
        if convention not in IOU_CONVENTIONS:
            raise ValueError(f"convention must be one of {IOU_CONVENTIONS}, got {convention!r}")
        self.convention = convention
        self.shape_ious: list[float | None] = []
        self.categories: list[str] = []
        self.shape_ids: list[str] = []
        self._correct = 0
        self._labelled = 0

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, *, num_parts: int, category: str, shape_id: str = ""
    ) -> float | None:
        """Score one shape and remember it; returns its mIoU."""
        value = shape_iou(pred, target, num_parts, convention=self.convention)
        self.shape_ious.append(value)
        self.categories.append(category)
        self.shape_ids.append(shape_id)
        keep = target >= 0
        self._correct += int((pred[keep] == target[keep]).sum())
        self._labelled += int(keep.sum())
        return value

    def compute(self) -> dict[str, object]:
        """Summary dict: ``instance_miou``, ``category_miou``, ``per_category``, ``accuracy``,
        ``num_shapes`` and ``convention``."""
        cat_mean, per_cat = category_miou(self.shape_ious, self.categories)
        return {
            "instance_miou": instance_miou(self.shape_ious),
            "category_miou": cat_mean,
            "per_category": per_cat,
            "accuracy": self._correct / max(self._labelled, 1),
            "num_shapes": sum(v is not None for v in self.shape_ious),
            "convention": self.convention,
        }
