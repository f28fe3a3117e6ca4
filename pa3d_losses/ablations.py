"""The paper's Stage-2 ablations, each a function plus a Module on the shared protocol.

- ``batch_negatives``: texts of the other shapes in the batch are negatives too (what the paper argues
  against: the same name on two shapes becomes a false negative).
- ``softmax_multi_positive``: InfoNCE over the shape's texts with the fractional targets as the distribution.
- ``point_level``: Find3D-style per-point BCE after propagating the patch logits to the points.
- ``hard_patch_labels``: the default loss with the one-hot majority label per patch as target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F

from pa3d_layers import PROPAGATION_MODES, propagate_to_points
from pa3d_layers._checks import check_points

from ._common import check_reduction, check_unit_interval, require, resolve_pos_weight, to_scalar_tensor
from .alignment import (
    AlignmentLossBase,
    MultiPositiveSigmoidLoss,
    PosWeight,
    _accuracy,
    check_alignment_inputs,
    check_patch_text_targets,
    check_targets,
    masked_bce,
    patch_text_logits,
    reduce_per_shape,
)

__all__ = [
    "batch_negatives_sigmoid_loss",
    "softmax_multi_positive_loss",
    "point_level_sigmoid_loss",
    "BatchNegativesSigmoidLoss",
    "SoftmaxMultiPositiveLoss",
    "PointLevelSigmoidLoss",
    "HardPatchLabelsSigmoidLoss",
]


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def batch_negatives_sigmoid_loss(
    patch_feats: torch.Tensor,
    text_feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    text_mask: torch.Tensor | None = None,
    pos_weight: PosWeight = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    r"""Ablation ``batch_negatives``: sigmoid BCE of every patch against every valid text in the batch.

    The positives are the shape's own fractional targets; every text of another shape is a negative
    ($y = 0$), even when it names the same part:

    $$
    \ell_{b,g,c,l} = \mathrm{BCE}\bigl(s \langle p_{b,g}, t_{c,l} \rangle + \beta,\;
        [c = b]\, y_{b,g,l}\bigr), \qquad
    \mathcal{L} = \frac{1}{B} \sum_b \frac{1}{G \, L_{\mathrm{tot}}} \sum_{g} \sum_{c,l:\, m_{c,l}} \ell_{b,g,c,l}
    $$

    with $L_{\mathrm{tot}} = \sum_{c,l} m_{c,l}$. With ``reduction="sum"`` it equals
    `multi_positive_sigmoid_loss` plus the cross-shape terms $\sum \mathrm{softplus}(z_{b,g,c,l})$,
    $c \ne b$ (for ``pos_weight`` None or a number). ``"num_labels_minus_one"`` counts the candidate texts:
    $\max(1, L_{\mathrm{tot}} - 1)$.

    Args:
        patch_feats: L2-normalised patch features.
        text_feats: each shape's texts, padded.
        targets: each shape's label fractions against its own texts.
        logit_scale: the scale (not its log).
        logit_bias: the bias, or None.
        text_mask: which texts are real; default all.
        pos_weight: None, a positive number or ``"num_labels_minus_one"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, G, B, L)``, 0 at padded texts).

    Returns:
        A scalar, or ``(B, G, B, L)`` for ``reduction="none"``.

    Shape:
        - patch_feats: ``(B, G, D)``; text_feats: ``(B, L, D)``; targets: ``(B, G, L)``; text_mask: ``(B, L)``.

    Examples:
        >>> p = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> t = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
        >>> batch_negatives_sigmoid_loss(p, t, torch.rand(2, 4, 3), logit_scale=10.0).shape
        torch.Size([])
    """
    check_reduction(reduction)
    patch_feats, text_feats, mask, own_valid = check_patch_text_targets(patch_feats, text_feats, targets, text_mask)
    B, G, L = own_valid.shape
    D = text_feats.shape[-1]
    flat_text = text_feats.reshape(1, B * L, D).expand(B, B * L, D)
    flat_mask = mask.reshape(1, B * L).expand(B, B * L)
    logits = patch_text_logits(patch_feats, flat_text, flat_mask, logit_scale, logit_bias).view(B, G, B, L)
    same = torch.eye(B, dtype=torch.bool, device=mask.device)[:, None, :, None]  # (b, 1, c, 1)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    own = torch.where(own_valid, targets.to(logits.dtype), zero)[:, :, None, :]
    full_targets = torch.where(same, own, zero)
    valid = mask[None, None, :, :].expand(B, G, B, L)
    weight = resolve_pos_weight(pos_weight, mask.sum().expand(B), logits)
    per = masked_bce(logits, full_targets, valid, None if weight is None else weight[..., None])
    return reduce_per_shape(per, valid, reduction)


def softmax_multi_positive_loss(
    patch_feats: torch.Tensor,
    text_feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    text_mask: torch.Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    r"""Ablation ``softmax_multi_positive``: InfoNCE over each shape's texts with fractional targets.

    The fractions of a patch, renormalised to sum to 1, are the target distribution of a softmax over the
    shape's valid texts (the texts compete, unlike in the sigmoid loss):

    $$
    q_{b,g,l} = \frac{y_{b,g,l}}{\sum_{l'} y_{b,g,l'}}, \qquad
    \ell_{b,g} = -\sum_{l:\, m_{b,l}} q_{b,g,l} \log \frac{\exp(s \langle p_{b,g}, t_{b,l} \rangle)}
        {\sum_{l':\, m_{b,l'}} \exp(s \langle p_{b,g}, t_{b,l'} \rangle)}
    $$

    Patches with no labelled point ($\sum_l y_{b,g,l} = 0$) have no target distribution and are skipped.
    ``"mean"`` averages over each shape's remaining patches, then over the shapes that have any (0 if none).
    ``logit_bias`` is accepted for the shared signature and has no effect (softmax is shift invariant).

    Args:
        patch_feats: L2-normalised patch features.
        text_feats: each shape's texts, padded.
        targets: label fractions in [0, 1].
        logit_scale: the scale (not its log).
        logit_bias: ignored.
        text_mask: which texts are real; default all.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, G)``, 0 at skipped patches).

    Returns:
        A scalar, or ``(B, G)`` for ``reduction="none"``.

    Shape:
        - patch_feats: ``(B, G, D)``; text_feats: ``(B, L, D)``; targets: ``(B, G, L)``; text_mask: ``(B, L)``.

    Examples:
        >>> p = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> t = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
        >>> softmax_multi_positive_loss(p, t, torch.rand(2, 4, 3), logit_scale=10.0).shape
        torch.Size([])
    """
    check_reduction(reduction)
    patch_feats, text_feats, mask, valid = check_patch_text_targets(patch_feats, text_feats, targets, text_mask)
    B, G, L = valid.shape
    logits = patch_text_logits(patch_feats, text_feats, mask, logit_scale, None)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    logp = torch.where(valid, logits, torch.full_like(logits, float("-inf"))).log_softmax(dim=-1)
    y = torch.where(valid, targets.to(logits.dtype), zero)
    mass = y.sum(dim=-1, keepdim=True)
    has = mass > 0
    q = torch.where(has, y / mass.clamp(min=torch.finfo(y.dtype).tiny), zero)
    per = -torch.where(valid & has, q * logp, zero).sum(dim=-1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    has = has.squeeze(-1)
    count = has.sum(dim=1)
    per_shape = per.sum(dim=1) / count.clamp(min=1).to(per.dtype)
    return per_shape.sum() / (count > 0).sum().clamp(min=1).to(per.dtype)


def point_level_sigmoid_loss(
    patch_feats: torch.Tensor,
    text_feats: torch.Tensor,
    point_targets: torch.Tensor,
    *,
    points: torch.Tensor,
    centers: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    text_mask: torch.Tensor | None = None,
    patch_idx: torch.Tensor | None = None,
    pos_weight: PosWeight = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    mode: str = "nearest",
) -> torch.Tensor:
    r"""Ablation ``point_level`` (Find3D-style): per-point sigmoid BCE on propagated patch logits.

    The patch logits $z_{b,g,l}$ of `multi_positive_sigmoid_loss` are carried to the points with
    ``pa3d_layers.propagate_to_points`` (``mode="nearest"``: each point takes its nearest patch centre's
    logits) and compared with hard per-point targets $y_{b,n,l} \in \{0, 1\}$:

    $$
    \mathcal{L} = \frac{1}{B} \sum_b \frac{1}{N L_b} \sum_{n} \sum_{l:\, m_{b,l}}
        \mathrm{BCE}\bigl(\hat z_{b,n,l},\, y_{b,n,l}\bigr), \qquad \hat z = \mathrm{propagate}(z)
    $$

    Args:
        patch_feats: L2-normalised patch features.
        text_feats: each shape's texts, padded.
        point_targets: per-point targets (one-hot of the hard label, or the label masks), in [0, 1].
        points: the points the model saw.
        centers: the patch centres.
        logit_scale: the scale (not its log).
        logit_bias: the bias, or None.
        text_mask: which texts are real; default all.
        patch_idx: passed to ``propagate_to_points`` (used by its ``"membership"`` mode).
        pos_weight: None, a positive number or ``"num_labels_minus_one"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, N, L)``, 0 at padded texts).
        mode: ``propagate_to_points`` mode.

    Returns:
        A scalar, or ``(B, N, L)`` for ``reduction="none"``.

    Shape:
        - patch_feats: ``(B, G, D)``; text_feats: ``(B, L, D)``; point_targets: ``(B, N, L)``.
        - points: ``(B, N, 3)``; centers: ``(B, G, 3)``; text_mask: ``(B, L)``; patch_idx: ``(B, G, K)``.

    Examples:
        >>> p = torch.nn.functional.normalize(torch.randn(1, 4, 8), dim=-1)
        >>> t = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
        >>> pts = torch.rand(1, 20, 3)
        >>> y = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 20)), 3).float()
        >>> point_level_sigmoid_loss(p, t, y, points=pts, centers=pts[:, :4], logit_scale=10.0).shape
        torch.Size([])
    """
    check_reduction(reduction)
    patch_feats, text_feats, mask = check_alignment_inputs(patch_feats, text_feats, text_mask)
    B, G, _ = patch_feats.shape
    L = text_feats.shape[1]
    check_points(points, "points", ragged=False)
    check_points(centers, "centers", ragged=False)
    if points.shape[0] != B:
        raise ValueError(f"points must be (B, N, 3) with B = {B} (from patch_feats), got {_shape(points)}")
    if tuple(centers.shape[:2]) != (B, G):
        raise ValueError(f"centers must be (B, G, 3) = ({B}, {G}, 3) like patch_feats, got {_shape(centers)}")
    N = points.shape[1]
    valid = mask[:, None, :].expand(B, N, L)
    check_targets(point_targets, "point_targets", (B, N, L), "(B, N, L)", valid)
    logits = patch_text_logits(patch_feats, text_feats, mask, logit_scale, logit_bias)
    point_logits = propagate_to_points(logits, points, centers.to(points.dtype), patch_idx=patch_idx, mode=mode)
    weight = resolve_pos_weight(pos_weight, mask.sum(dim=1), point_logits)
    per = masked_bce(point_logits, point_targets, valid, weight)
    return reduce_per_shape(per, valid, reduction)


class BatchNegativesSigmoidLoss(MultiPositiveSigmoidLoss):
    """Ablation ``batch_negatives`` on the shared protocol (`batch_negatives_sigmoid_loss`).

    Same inputs, targets, terms and metrics as `MultiPositiveSigmoidLoss` (``align_loss``,
    ``patch_acc``, ``logit_scale``); only the negatives change.

    Args:
        pos_weight: None, a positive number or ``"num_labels_minus_one"`` (over all valid batch texts).
        targets: ``"fractional"`` or ``"majority"``.
        ignore_index: the value of unlabelled points in ``batch["labels"]``.

    Examples:
        >>> BatchNegativesSigmoidLoss()
        BatchNegativesSigmoidLoss(pos_weight=None, targets='fractional')
    """

    loss_name = "batch_negatives"

    def _loss(self, x: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        return batch_negatives_sigmoid_loss(
            x["patch_feats"],
            x["text_feats"],
            targets,
            logit_scale=x["logit_scale"],
            logit_bias=x["logit_bias"],
            text_mask=x["text_mask"],
            pos_weight=self.pos_weight,
        )


class SoftmaxMultiPositiveLoss(AlignmentLossBase):
    """Ablation ``softmax_multi_positive`` on the shared protocol (`softmax_multi_positive_loss`).

    Terms and metrics as `MultiPositiveSigmoidLoss`. There is no ``pos_weight``.

    Args:
        targets: ``"fractional"`` or ``"majority"``.
        ignore_index: the value of unlabelled points in ``batch["labels"]``.

    Examples:
        >>> SoftmaxMultiPositiveLoss()
        SoftmaxMultiPositiveLoss(targets='fractional')
    """

    loss_name = "softmax_multi_positive"

    def extra_repr(self) -> str:
        return f"targets={self.targets!r}"

    def _loss(self, x: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        return softmax_multi_positive_loss(
            x["patch_feats"],
            x["text_feats"],
            targets,
            logit_scale=x["logit_scale"],
            logit_bias=x["logit_bias"],
            text_mask=x["text_mask"],
        )


class HardPatchLabelsSigmoidLoss(MultiPositiveSigmoidLoss):
    """Ablation ``hard_patch_labels``: `MultiPositiveSigmoidLoss` with ``targets="majority"``.

    Each patch's target is the one-hot of its majority label (all zeros for a patch with no labelled
    point) instead of the label fractions.

    Args:
        pos_weight: None, a positive number or ``"num_labels_minus_one"``.
        ignore_index: the value of unlabelled points in ``batch["labels"]``.

    Examples:
        >>> HardPatchLabelsSigmoidLoss()
        HardPatchLabelsSigmoidLoss(pos_weight=None, targets='majority')
    """

    loss_name = "hard_patch_labels"

    def __init__(self, *, pos_weight: PosWeight = None, ignore_index: int = -1) -> None:
        super().__init__(pos_weight=pos_weight, targets="majority", ignore_index=ignore_index)


class PointLevelSigmoidLoss(AlignmentLossBase):
    """Ablation ``point_level`` on the shared protocol (`point_level_sigmoid_loss`).

    Per-point targets are hard: the rows of ``batch["label_masks"]`` when present (a point may carry
    several names), else the one-hot of ``batch["labels"]`` (an unlabelled point is a negative for every
    text, as it is in the fractional patch targets). Reads ``batch["points"]`` and ``outputs["centers"]``
    (and ``outputs["patch_idx"]``, passed on to the propagation).

    Returned terms: ``align_loss``; detached metrics ``point_acc`` (argmax of the propagated logits against
    the hard point labels), ``patch_acc`` and ``logit_scale``.

    Args:
        pos_weight: None, a positive number or ``"num_labels_minus_one"``.
        mode: ``pa3d_layers.propagate_to_points`` mode (``"nearest"``: each point takes its nearest centre).
        ignore_index: the value of unlabelled points in ``batch["labels"]``.

    Examples:
        >>> PointLevelSigmoidLoss()
        PointLevelSigmoidLoss(pos_weight=None, mode='nearest')
    """

    loss_name = "point_level"

    def __init__(self, *, pos_weight: PosWeight = None, mode: str = "nearest", ignore_index: int = -1) -> None:
        super().__init__(ignore_index=ignore_index)
        resolve_pos_weight(pos_weight, torch.ones(1), torch.ones(1))
        if not isinstance(mode, str) or mode not in PROPAGATION_MODES:
            raise ValueError(f"mode must be one of {PROPAGATION_MODES}, got {mode!r}")
        self.pos_weight = pos_weight
        self.mode = mode

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight!r}, mode={self.mode!r}"

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any], *, return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        owner = type(self).__name__
        x = self._inputs(outputs, batch)
        points = require(batch, "points", "batch", owner)
        centers = require(outputs, "centers", "outputs", owner)
        mask = x["text_mask"]
        L = mask.shape[1]
        dtype = x["patch_feats"].dtype
        source = self._label_source(batch, mask)
        if "label_masks" in source:
            masks = source["label_masks"]
            if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or masks.dtype != torch.bool:
                raise ValueError("label_masks must be (B, L, N) bool")
            point_targets = masks.transpose(1, 2).to(dtype)
        else:
            labels = source["point_labels"]
            if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.dtype != torch.long:
                raise ValueError("labels must be (B, N) long")
            hit = labels != self.ignore_index
            if bool((hit & ((labels < 0) | (labels >= L))).any()):
                raise ValueError(f"labels must be in [0, L) with L = {L}, or {self.ignore_index} (unlabelled)")
            onehot = F.one_hot(torch.where(hit, labels, torch.zeros_like(labels)), L).to(dtype)
            point_targets = onehot * hit[..., None].to(dtype)
        check_unit_interval(point_targets, "point_targets")
        loss = point_level_sigmoid_loss(
            x["patch_feats"],
            x["text_feats"],
            point_targets,
            points=points,
            centers=centers,
            logit_scale=x["logit_scale"],
            logit_bias=x["logit_bias"],
            text_mask=mask,
            patch_idx=outputs.get("patch_idx"),
            pos_weight=self.pos_weight,
            mode=self.mode,
        )
        if not return_dict:
            return loss
        with torch.no_grad():
            logits = patch_text_logits(x["patch_feats"], x["text_feats"], mask, x["logit_scale"], x["logit_bias"])
            point_logits = propagate_to_points(
                logits, points, centers.to(points.dtype), patch_idx=outputs.get("patch_idx"), mode=self.mode
            )
            if batch.get("labels") is not None:
                point_label = torch.where(batch["labels"] == self.ignore_index, -1, batch["labels"])
            else:
                covered = point_targets.amax(dim=-1) > 0
                point_label = torch.where(covered, point_targets.argmax(dim=-1), -1)
            point_acc = _accuracy(point_logits, point_label, mask)
            patch_acc = (
                self._patch_acc(logits, outputs, batch, mask) if "patch_idx" in outputs else point_acc * float("nan")
            )
            scale = to_scalar_tensor(x["logit_scale"], "logit_scale", logits).detach()
        return {"align_loss": loss, "point_acc": point_acc, "patch_acc": patch_acc, "logit_scale": scale}
