"""Reference points for an evaluation: the patch ceiling and the best one-label predictor.

A patch-level model can at best give each patch one label and spread it to the points, so its mIoU is bounded
by the **patch ceiling**: every patch (FPS + kNN at the run's ``N``/``G``/``K``, as the model forms them) gets
the majority true label of its member points, propagated to the points with the run's assignment. The **one
label** predictor puts a single name on the whole shape; its best choice per shape is the shape's most
frequent true label (an oracle, so an upper bound on every constant predictor). A model's mIoU means something
only between the two: printed beside it in every evaluation report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from pa3d_layers import PatchGrouper, propagate_to_points

from .metrics import SegmentationMeter

__all__ = [
    "patch_majority_labels",
    "patch_ceiling_labels",
    "one_label_labels",
    "reference_baselines",
    "baseline_markdown",
]


def patch_majority_labels(labels: torch.Tensor, patch_idx: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Majority true label of each patch's member points (ties: the smallest label; -1 when no member is
    labelled).

    Args:
        labels: ``(B, N)`` long, -1 for unlabelled points.
        patch_idx: ``(B, G, K)`` member indices into each cloud's ``N`` points.
        num_labels: number of labels ``L`` (labels lie in ``[0, L)``).

    Returns:
        ``(B, G)`` long.

    Examples:
        >>> labels = torch.tensor([[0, 1, 1, -1]])
        >>> patch_majority_labels(labels, torch.tensor([[[0, 1, 2], [3, 3, 3]]]), 2).tolist()
        [[1, -1]]
    """
    if labels.dim() != 2 or patch_idx.dim() != 3 or patch_idx.shape[0] != labels.shape[0]:
        raise ValueError(f"labels must be (B, N) and patch_idx (B, G, K) with the same B, got "
                         f"{tuple(labels.shape)} and {tuple(patch_idx.shape)}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    member = torch.gather(labels, 1, patch_idx.flatten(1)).view(patch_idx.shape)  # (B, G, K)
    valid = member >= 0
    counts = torch.zeros(*member.shape[:2], num_labels, dtype=torch.long, device=labels.device)
    counts.scatter_add_(2, member.clamp(min=0), valid.long())
    best = counts.argmax(dim=2)  # first maximum: the smallest label among ties
    return torch.where(valid.any(dim=2), best, torch.full_like(best, -1))


def patch_ceiling_labels(
    points: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    *,
    num_groups: int,
    group_size: int,
    assign: str = "nearest",
    backend: str = "auto",
) -> torch.Tensor:
    """The best any patch-level predictor can do on one shape: patch majority labels spread to the points.

    Args:
        points: ``(N, 3)`` as the model sees them.
        labels: ``(N,)`` true labels, -1 unlabelled.
        num_labels: ``L``.
        num_groups: ``G`` of the run.
        group_size: ``K`` of the run.
        assign: the run's patch -> point assignment (``"nearest"``, ``"membership"``, ``"idw"``).
        backend: grouping backend (``"auto"`` or ``"torch"``).

    Returns:
        ``(N,)`` long predicted labels in ``[0, L)``.

    Examples:
        >>> pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5, 0, 0], [5.1, 0, 0]])
        >>> patch_ceiling_labels(pts, torch.tensor([0, 0, 1, 1]), 2, num_groups=2, group_size=2).tolist()
        [0, 0, 1, 1]
    """
    if points.dim() != 2 or points.shape[-1] != 3 or labels.shape != points.shape[:1]:
        raise ValueError(f"points must be (N, 3) and labels (N,), got {tuple(points.shape)} and {tuple(labels.shape)}")
    pts = points[None].float()
    groups = PatchGrouper(min(num_groups, points.shape[0]), min(group_size, points.shape[0]), backend=backend)(pts)
    major = patch_majority_labels(labels[None].long(), groups.patch_idx, num_labels)  # (1, G)
    onehot = torch.zeros(*major.shape, num_labels, dtype=pts.dtype)
    onehot.scatter_(2, major.clamp(min=0)[..., None], (major >= 0)[..., None].to(pts.dtype))
    spread = propagate_to_points(onehot, pts, groups.centers, patch_idx=groups.patch_idx, mode=assign,
                                 k=min(3, groups.centers.shape[1]))
    return spread[0].argmax(dim=-1)


def one_label_labels(labels: torch.Tensor, num_labels: int, label: int | None = None) -> torch.Tensor:
    """One label on every point: ``label``, or the shape's most frequent true label (ties: the smallest).

    Examples:
        >>> one_label_labels(torch.tensor([2, 1, 1, -1]), 3).tolist()
        [1, 1, 1, 1]
    """
    if label is None:
        valid = labels[labels >= 0]
        label = int(torch.bincount(valid, minlength=num_labels).argmax()) if valid.numel() else 0
    if not 0 <= label < num_labels:
        raise ValueError(f"label must be in [0, {num_labels}), got {label}")
    return torch.full_like(labels, label)


def reference_baselines(
    samples: Iterable[Any],
    *,
    num_groups: int,
    group_size: int,
    transform: Callable[[Any], Any] | None = None,
    assign: str = "nearest",
    convention: str = "strict",
    prior: Mapping[str, str] | None = None,
    backend: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Score the patch ceiling and the one-label predictor on an evaluation set, as a model would be scored.

    Args:
        samples: ``PartSample`` objects (the evaluated set, at the evaluation's ``N``).
        num_groups: ``G`` of the evaluated model.
        group_size: ``K`` of the evaluated model.
        transform: what the model's input goes through (normalisation); grouping happens after it.
        assign: patch -> point assignment of the run.
        convention: IoU convention (:func:`~pa3d_train.metrics.shape_iou`).
        prior: optional ``category -> part name`` for the one-label predictor (e.g. the most frequent name
            of the category in training); other categories use each shape's most frequent true label.
        backend: grouping backend.

    Returns:
        ``{"patch_ceiling": summary, "one_label": summary}``, each the meter's summary (``instance_miou``,
        ``category_miou``, ``per_category``, ...).
    """
    ceiling, constant = SegmentationMeter(convention=convention), SegmentationMeter(convention=convention)
    for sample in samples:
        names = list(sample.label_names)
        labels = sample.labels.cpu().long()
        model_input = transform(sample) if transform is not None else sample
        pred = patch_ceiling_labels(model_input.points.cpu(), labels, len(names), num_groups=num_groups,
                                    group_size=group_size, assign=assign, backend=backend)
        ceiling.update(pred, labels, num_parts=len(names), category=sample.category, shape_id=str(sample.shape_id))
        fixed = names.index(prior[sample.category]) if prior and prior.get(sample.category) in names else None
        constant.update(one_label_labels(labels, len(names), fixed), labels, num_parts=len(names),
                        category=sample.category, shape_id=str(sample.shape_id))
    return {"patch_ceiling": ceiling.compute(), "one_label": constant.compute()}


def baseline_markdown(baselines: Mapping[str, Mapping[str, Any]], *, num_points: int, num_groups: int,
                      group_size: int) -> str:
    """A short markdown table of :func:`reference_baselines` for a report.

    Examples:
        >>> b = {"patch_ceiling": {"instance_miou": 0.8, "category_miou": 0.75},
        ...      "one_label": {"instance_miou": 0.3, "category_miou": 0.25}}
        >>> print(baseline_markdown(b, num_points=2048, num_groups=128, group_size=32).splitlines()[2])
        | patch ceiling (N=2048, G=128, K=32) | 80.0 | 75.0 |
    """
    rows = ["| reference | instance mIoU | category mIoU |", "| --- | --- | --- |"]
    labels = {"patch_ceiling": f"patch ceiling (N={num_points}, G={num_groups}, K={group_size})",
              "one_label": "best one-label predictor (per-shape majority)"}
    for key, label in labels.items():
        if key in baselines:
            s = baselines[key]
            rows.append(f"| {label} | {100 * s['instance_miou']:.1f} | {100 * s['category_miou']:.1f} |")
    return "\n".join(rows)
