"""Stage 1: cosine distillation of cached 2D teacher (DINOv2) patch features into the 3D patches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pa3d_layers._checks import check_rank

from ._common import check_eps, check_finite_where, check_reduction, require
from .labels import match_teacher_targets

__all__ = ["cosine_distillation_loss", "CosineDistillationLoss"]


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def _shape_mean(per: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid entries of each shape (dim 1...), then over the shapes that have any."""
    count = valid.flatten(1).sum(dim=1)
    total = per.flatten(1).sum(dim=1)
    has = count > 0
    per_shape = total / count.clamp(min=1).to(per.dtype)
    n = has.sum()
    return torch.where(has, per_shape, torch.zeros_like(per_shape)).sum() / n.clamp(min=1).to(per.dtype)


def cosine_distillation_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    eps: float = 1e-8,
) -> torch.Tensor:
    r"""One minus the cosine between student and teacher patch features (PatchAlign3D Stage 1).

    Both sides are L2-normalised here (the official release re-normalises the matched targets), so the loss
    ignores any positive rescaling of either. With ``reduction="mean"`` it is the mean over each shape's valid
    patches, then the mean over shapes (the official per-sample mean over G, summed and divided by B):

    $$
    \mathcal{L} = \frac{1}{|\mathcal{B}|} \sum_{b \in \mathcal{B}} \frac{1}{|V_b|} \sum_{g \in V_b}
    \Bigl(1 - \frac{\langle p_{b,g}, t_{b,g} \rangle}{\lVert p_{b,g} \rVert \, \lVert t_{b,g} \rVert}\Bigr)
    $$

    where $V_b$ are the patches of shape $b$ kept by ``mask`` and $\mathcal{B}$ the shapes with at least one
    (0 when no patch is valid). Masked patches contribute nothing, not even through NaN values.

    Args:
        pred: the student's patch features (the Stage-1 head output).
        target: the teacher's features matched to those patches (see `match_teacher_targets`).
        mask: which patches count (True); default all.
        reduction: ``"mean"`` (above), ``"sum"`` over valid patches, or ``"none"`` for the per-patch
            loss, 0 at masked patches.
        eps: floor on the norms, a finite number > 0 (a zero vector then has cosine 0 with anything).

    Returns:
        A scalar, or ``(B, G)`` for ``reduction="none"``.

    Shape:
        - pred, target: ``(B, G, T)``.
        - mask: ``(B, G)`` bool.

    Examples:
        >>> p = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
        >>> cosine_distillation_loss(p, torch.tensor([[[3.0, 0.0], [1.0, 0.0]]]))
        tensor(0.5000)
    """
    check_reduction(reduction)
    check_eps(eps)
    check_rank(pred, "pred", 3, "(B, G, T) float")
    check_rank(target, "target", 3, "(B, G, T) float")
    if not pred.is_floating_point():
        raise ValueError(f"pred must be (B, G, T) float, got dtype {pred.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"target must be (B, G, T) = {_shape(pred)} like pred, got {_shape(target)}")
    B, G, _ = pred.shape
    if mask is None:
        valid = torch.ones(B, G, dtype=torch.bool, device=pred.device)
    else:
        check_rank(mask, "mask", 2, "(B, G) bool")
        if mask.dtype != torch.bool or tuple(mask.shape) != (B, G):
            raise ValueError(f"mask must be (B, G) = ({B}, {G}) bool, got {_shape(mask)} {mask.dtype}")
        valid = mask
    check_finite_where(pred, "pred", valid[..., None])
    check_finite_where(target, "target", valid[..., None])
    keep = valid[..., None]
    p = F.normalize(torch.where(keep, pred, torch.ones_like(pred)), dim=-1, eps=eps)
    t = F.normalize(torch.where(keep, target.to(pred.dtype), torch.ones_like(pred)), dim=-1, eps=eps)
    per = torch.where(valid, 1.0 - (p * t).sum(dim=-1), torch.zeros((), dtype=pred.dtype, device=pred.device))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return _shape_mean(per, valid)


class CosineDistillationLoss(nn.Module):
    """Stage-1 loss on the shared protocol: match the cached teacher targets, then `cosine_distillation_loss`.

    Reads ``outputs["teacher_feats"]`` and ``outputs["centers"]``, and from the batch
    ``teacher_centers``, ``teacher_targets`` and the optional ``teacher_mask`` (padded caches). Each patch
    takes the target of its nearest cached centre (`match_teacher_targets`). With
    ``match="none"`` the batch's ``teacher_targets`` must already be ``(B, G, T)``, aligned with the patches.

    Returned terms (``return_dict=True``): ``distill_loss``; detached metrics ``distill_cos`` (mean cosine
    over the counted patches) and ``match_distance`` (mean distance to the matched centre; 0 with
    ``match="none"``).

    Args:
        match: ``"nearest"`` (official) or ``"none"``.
        max_match_distance: patches whose nearest cached centre lies farther are left out (default: keep all,
            as the official release does).
        eps: floor on the norms.

    Shape:
        - outputs: ``teacher_feats (B, G, T)``, ``centers (B, G, 3)``.
        - batch: ``teacher_centers (B, G', 3)``, ``teacher_targets (B, G', T)``, ``teacher_mask (B, G')``.

    Examples:
        >>> loss = CosineDistillationLoss()
        >>> outputs = {"teacher_feats": torch.randn(2, 4, 8), "centers": torch.rand(2, 4, 3)}
        >>> batch = {"teacher_centers": torch.rand(2, 6, 3), "teacher_targets": torch.randn(2, 6, 8)}
        >>> sorted(loss(outputs, batch, return_dict=True))
        ['distill_cos', 'distill_loss', 'match_distance']
    """

    loss_name = "cosine_distillation"

    def __init__(
        self,
        *,
        match: Literal["nearest", "none"] = "nearest",
        max_match_distance: float | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not isinstance(match, str) or match not in ("nearest", "none"):
            raise ValueError(f"match must be 'nearest' or 'none', got {match!r}")
        if max_match_distance is not None and (
            isinstance(max_match_distance, bool)
            or not isinstance(max_match_distance, (int, float))
            or not max_match_distance > 0
        ):
            raise ValueError(f"max_match_distance must be > 0 or None, got {max_match_distance!r}")
        if max_match_distance is not None and match == "none":
            raise ValueError("max_match_distance needs match='nearest'")
        self.match = match
        self.max_match_distance = max_match_distance
        self.eps = check_eps(eps)

    def extra_repr(self) -> str:
        return f"match={self.match!r}, max_match_distance={self.max_match_distance}"

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any], *, return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        owner = type(self).__name__
        pred = require(outputs, "teacher_feats", "outputs", owner)
        teacher_targets = require(batch, "teacher_targets", "batch", owner)
        mask = None
        if self.match == "nearest":
            centers = require(outputs, "centers", "outputs", owner)
            teacher_centers = require(batch, "teacher_centers", "batch", owner)
            target, dist = match_teacher_targets(
                centers, teacher_centers, teacher_targets, teacher_mask=batch.get("teacher_mask")
            )
            if self.max_match_distance is not None:
                mask = dist <= self.max_match_distance
        else:
            target, dist = teacher_targets, None
        loss = cosine_distillation_loss(pred, target, mask=mask, eps=self.eps)
        if not return_dict:
            return loss
        with torch.no_grad():
            per = cosine_distillation_loss(pred.detach(), target.detach(), mask=mask, reduction="none")
            valid = torch.ones_like(per, dtype=torch.bool) if mask is None else mask
            cos = ((1 - per) * valid).sum() / valid.sum().clamp(min=1)
            distance = dist.mean() if dist is not None else torch.zeros((), device=pred.device)
        return {"distill_loss": loss, "distill_cos": cos, "match_distance": distance}
