"""Stage 2: the multi-positive sigmoid loss that aligns patch features with each shape's part names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pa3d_layers._checks import check_finite, check_rank

from ._common import (
    check_finite_where,
    check_ignore_index,
    check_reduction,
    check_text_mask,
    check_unit_interval,
    require,
    resolve_pos_weight,
    to_scalar_tensor,
)
from .labels import fractional_patch_labels, majority_patch_labels

__all__ = ["multi_positive_sigmoid_loss", "MultiPositiveSigmoidLoss"]

PosWeight = float | Literal["num_labels_minus_one"] | None


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_alignment_inputs(
    patch_feats: object, text_feats: object, text_mask: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check ``patch_feats (B, G, D)``, ``text_feats (B, L, D)``, ``text_mask (B, L)``; return them."""
    check_rank(patch_feats, "patch_feats", 3, "(B, G, D) float")
    check_rank(text_feats, "text_feats", 3, "(B, L, D) float")
    assert isinstance(patch_feats, torch.Tensor) and isinstance(text_feats, torch.Tensor)
    if not patch_feats.is_floating_point():
        raise ValueError(f"patch_feats must be (B, G, D) float, got dtype {patch_feats.dtype}")
    if not text_feats.is_floating_point():
        raise ValueError(f"text_feats must be (B, L, D) float, got dtype {text_feats.dtype}")
    B, _, D = patch_feats.shape
    if text_feats.shape[0] != B or text_feats.shape[2] != D:
        raise ValueError(
            f"text_feats must be (B, L, D) with B = {B} and D = {D} (from patch_feats), got {_shape(text_feats)}"
        )
    mask = check_text_mask(text_mask, B, text_feats.shape[1], text_feats.device)
    check_finite(patch_feats, "patch_feats")
    check_finite_where(text_feats, "text_feats", mask[..., None])
    return patch_feats, text_feats, mask


def check_targets(targets: object, name: str, shape: tuple[int, ...], layout: str, valid: torch.Tensor) -> torch.Tensor:
    check_rank(targets, name, len(shape), layout)
    assert isinstance(targets, torch.Tensor)
    if tuple(targets.shape) != shape:
        raise ValueError(f"{name} must be {layout} = {shape}, got {_shape(targets)}")
    check_unit_interval(targets, name, valid)
    return targets


def check_patch_text_targets(
    patch_feats: object, text_feats: object, targets: object, text_mask: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input checks shared by the patch-text losses.

    Returns ``patch_feats``, ``text_feats``, ``text_mask (B, L)`` and the validity ``(B, G, L)`` of every
    (patch, text) pair, after checking ``targets (B, G, L)`` against it.
    """
    patch_feats, text_feats, mask = check_alignment_inputs(patch_feats, text_feats, text_mask)
    B, G, _ = patch_feats.shape
    valid = mask[:, None, :].expand(B, G, text_feats.shape[1])
    check_targets(targets, "targets", tuple(valid.shape), "(B, G, L)", valid)
    return patch_feats, text_feats, mask, valid


def patch_text_logits(
    patch_feats: torch.Tensor,
    text_feats: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: object,
    logit_bias: object,
) -> torch.Tensor:
    """``scale * <p_g, t_l> + bias`` per shape, ``(B, G, L)``; padded texts are zeroed first (no NaN leaks)."""
    scale = to_scalar_tensor(logit_scale, "logit_scale", patch_feats)
    text = torch.where(
        text_mask[..., None],
        text_feats.to(patch_feats.dtype),
        torch.zeros((), dtype=patch_feats.dtype, device=patch_feats.device),
    )
    logits = torch.einsum("bgd,bld->bgl", patch_feats, text) * scale
    if logit_bias is not None:
        logits = logits + to_scalar_tensor(logit_bias, "logit_bias", patch_feats)
    return logits


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """Elementwise BCE-with-logits that is exactly 0, in value and gradient, where not ``valid``."""
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    x = torch.where(valid, logits, zero)
    y = torch.where(valid, targets.to(logits.dtype), zero)
    per = F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction="none")
    return torch.where(valid, per, zero)


def reduce_per_shape(per: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"mean"``: mean over each shape's valid entries, then over shapes; ``"sum"``; ``"none"``: ``per``."""
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    valid = valid.expand_as(per)
    count = valid.flatten(1).sum(dim=1).clamp(min=1).to(per.dtype)
    # sum / B rather than .mean(): an empty batch (B = 0) gives 0 with a gradient, not NaN
    return (per.flatten(1).sum(dim=1) / count).sum() / max(per.shape[0], 1)


def multi_positive_sigmoid_loss(
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
    r"""PatchAlign3D's Stage-2 loss: per-shape sigmoid BCE against fractional, multi-positive targets.

    Each patch $g$ of shape $b$ is scored against that shape's own texts only (the other valid texts of the
    same shape are its negatives), with $s$ = ``logit_scale`` (already exponentiated) and $\beta$ =
    ``logit_bias``:

    $$
    z_{b,g,l} = s \, \langle p_{b,g}, t_{b,l} \rangle + \beta, \qquad
    \ell_{b,g,l} = -\bigl[\, w_b \, y_{b,g,l} \log \sigma(z_{b,g,l})
        + (1 - y_{b,g,l}) \log \sigma(-z_{b,g,l}) \bigr]
    $$

    $$
    \mathcal{L} = \frac{1}{B} \sum_{b=1}^{B} \frac{1}{G \, L_b} \sum_{g=1}^{G} \sum_{l:\, m_{b,l}} \ell_{b,g,l}
    $$

    where $y$ are the label fractions (`fractional_patch_labels`), $m_{b,l}$ = ``text_mask`` and
    $L_b = \sum_l m_{b,l}$. ``"mean"`` is thus the mean over each shape's valid (patch, text) pairs, then the
    mean over shapes: the official release's per-sample mean over G x K followed by the mean over samples.
    Padded texts contribute exactly zero loss and zero gradient (their features, logits and targets are
    replaced with ``torch.where`` before use, so NaN or Inf padding cannot leak). The BCE is computed in the
    log-sigmoid form, finite for $|z|$ up to at least $10^4$. Fully vectorised: no loop over shapes.

    ``pos_weight`` $w_b$: None (1), a positive number, or ``"num_labels_minus_one"`` for the official
    release's $\max(1, L_b - 1)$, counting valid texts per shape.

    Args:
        patch_feats: L2-normalised patch features in text space.
        text_feats: each shape's own text embeddings, padded to L.
        targets: label fractions in [0, 1] (values at padded texts are ignored).
        logit_scale: the scale $s$ (not its log), a number or 0-dim tensor (e.g. from `LogitScaleBias`).
        logit_bias: the bias $\beta$, or None for no bias (official release).
        text_mask: which texts are real (True); default all. Every shape needs at least one.
        pos_weight: weight of the positive term, see above.
        reduction: ``"mean"`` (above), ``"sum"`` over valid pairs, or ``"none"`` for the ``(B, G, L)``
            elementwise loss, 0 at padded texts.

    Returns:
        A scalar, or ``(B, G, L)`` for ``reduction="none"``.

    Shape:
        - patch_feats: ``(B, G, D)``; text_feats: ``(B, L, D)``; targets: ``(B, G, L)``; text_mask: ``(B, L)``.

    Examples:
        >>> p = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
        >>> t = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
        >>> y = torch.rand(2, 5, 3)
        >>> mask = torch.tensor([[True, True, True], [True, True, False]])
        >>> loss = multi_positive_sigmoid_loss(p, t, y, logit_scale=10.0, logit_bias=-10.0, text_mask=mask)
        >>> loss.shape
        torch.Size([])
    """
    check_reduction(reduction)
    patch_feats, text_feats, mask, valid = check_patch_text_targets(patch_feats, text_feats, targets, text_mask)
    B, G, L = valid.shape
    logits = patch_text_logits(patch_feats, text_feats, mask, logit_scale, logit_bias)
    weight = resolve_pos_weight(pos_weight, mask.sum(dim=1), logits)
    per = masked_bce(logits, targets, valid, weight)
    return reduce_per_shape(per, valid, reduction)


class AlignmentLossBase(nn.Module):
    """Shared plumbing of the Stage-2 losses: read the protocol dicts, build targets, compute metrics."""

    loss_name = "alignment"

    def __init__(self, *, targets: Literal["fractional", "majority"] = "fractional", ignore_index: int = -1) -> None:
        super().__init__()
        if not isinstance(targets, str) or targets not in ("fractional", "majority"):
            raise ValueError(f"targets must be 'fractional' or 'majority', got {targets!r}")
        self.targets = targets
        self.ignore_index = check_ignore_index(ignore_index)

    def _loss(self, x: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        """The loss value from the checked inputs ``x`` and the patch ``targets (B, G, L)``."""
        raise NotImplementedError

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any], *, return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        x = self._inputs(outputs, batch)
        targets = self._patch_targets(outputs, batch, x["text_mask"], self.targets, x["patch_feats"].dtype)
        loss = self._loss(x, targets)
        if not return_dict:
            return loss
        with torch.no_grad():
            logits = patch_text_logits(
                x["patch_feats"], x["text_feats"], x["text_mask"], x["logit_scale"], x["logit_bias"]
            )
            acc = self._patch_acc(logits, outputs, batch, x["text_mask"])
            scale = to_scalar_tensor(x["logit_scale"], "logit_scale", logits).detach()
        return {"align_loss": loss, "patch_acc": acc, "logit_scale": scale}

    # -- inputs -------------------------------------------------------------------------------------------
    def _inputs(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
        owner = type(self).__name__
        patch_feats = require(outputs, "patch_feats", "outputs", owner)
        text_feats = require(batch, "text_feats", "batch", owner)
        _, _, text_mask = check_alignment_inputs(patch_feats, text_feats, batch.get("text_mask"))
        return {
            "patch_feats": patch_feats,
            "text_feats": text_feats,
            "text_mask": text_mask,
            "logit_scale": require(outputs, "logit_scale", "outputs", owner),
            "logit_bias": outputs.get("logit_bias"),
        }

    def _label_source(self, batch: Mapping[str, Any], text_mask: torch.Tensor) -> dict[str, Any]:
        """``label_masks`` when the batch has them (they may overlap), else the hard ``labels``."""
        L = text_mask.shape[1]
        B = text_mask.shape[0]
        masks = batch.get("label_masks")
        if masks is not None:
            check_rank(masks, "batch['label_masks']", 3, "(B, L, N) bool")
            if masks.dtype != torch.bool or tuple(masks.shape[:2]) != (B, L):
                raise ValueError(
                    f"batch['label_masks'] must be (B, L, N) bool with B = {B} and L = {L} (from text_feats), "
                    f"got shape {_shape(masks)} dtype {masks.dtype}"
                )
            if bool((masks & ~text_mask[:, :, None]).any()):
                raise ValueError("label_masks must be empty at padded texts (text_mask False)")
            return {"label_masks": masks, "num_labels": L}
        labels = batch.get("labels")
        if labels is None:
            raise ValueError(f"batch is missing 'labels' or 'label_masks' (needed by {type(self).__name__})")
        check_rank(labels, "batch['labels']", 2, "(B, N) long")
        if labels.dtype != torch.long or labels.shape[0] != B:
            raise ValueError(
                f"batch['labels'] must be (B, N) long with B = {B} (from text_feats), "
                f"got shape {_shape(labels)} dtype {labels.dtype}"
            )
        hit = labels != self.ignore_index
        safe = torch.where(hit, labels, torch.zeros_like(labels)).clamp(0, max(L - 1, 0))
        if bool((hit & (labels >= 0) & (labels < L) & ~text_mask.gather(1, safe)).any()):
            raise ValueError("labels must index valid texts of their shape, got a label at a padded text")
        return {"point_labels": labels, "num_labels": L, "ignore_index": self.ignore_index}

    def _patch_targets(
        self,
        outputs: Mapping[str, Any],
        batch: Mapping[str, Any],
        text_mask: torch.Tensor,
        kind: str,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        patch_idx = require(outputs, "patch_idx", "outputs", type(self).__name__)
        source = self._label_source(batch, text_mask)
        if kind == "fractional":
            return fractional_patch_labels(patch_idx, dtype=dtype, **source)
        majority = majority_patch_labels(patch_idx, **source)
        onehot = F.one_hot(majority.clamp(min=0), text_mask.shape[1]).to(dtype)
        return onehot * (majority >= 0)[..., None].to(dtype)

    # -- metrics ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _patch_acc(
        self, logits: torch.Tensor, outputs: Mapping[str, Any], batch: Mapping[str, Any], text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Argmax over the shape's valid texts vs the majority point label per patch (-1 patches skipped)."""
        patch_idx = outputs["patch_idx"]
        if batch.get("labels") is not None:
            source = {"point_labels": batch["labels"], "ignore_index": self.ignore_index}
        else:
            source = {"label_masks": batch["label_masks"]}
        target = majority_patch_labels(patch_idx, num_labels=text_mask.shape[1], **source)
        return _accuracy(logits, target, text_mask)


def _accuracy(logits: torch.Tensor, target: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``argmax_l logits == target`` over entries with ``target >= 0``; NaN when there are none."""
    if logits.numel() == 0:  # an empty batch (B = 0, L = 0 or G = 0): no entry to score
        return torch.full((), float("nan"), dtype=logits.dtype, device=logits.device)
    masked = torch.where(text_mask[:, None, :], logits.detach(), torch.full_like(logits, float("-inf")))
    pred = masked.argmax(dim=-1)
    seen = target >= 0
    return ((pred == target) & seen).sum().to(logits.dtype) / seen.sum().to(logits.dtype)


class MultiPositiveSigmoidLoss(AlignmentLossBase):
    """Stage-2 loss on the shared protocol (the default, registered as ``multi_positive_sigmoid``).

    Builds the targets from the batch: `fractional_patch_labels` of ``outputs["patch_idx"]`` over
    ``batch["label_masks"]`` when present (overlapping names allowed), else over ``batch["labels"]``; then
    calls `multi_positive_sigmoid_loss` with the model's ``logit_scale`` and ``logit_bias``.

    Returned terms (``return_dict=True``): ``align_loss``; detached metrics ``patch_acc`` (argmax over the
    shape's texts against the majority point label of each patch, unlabelled patches skipped) and
    ``logit_scale``.

    Args:
        pos_weight: None (paper), a positive number, or ``"num_labels_minus_one"`` (official release).
        targets: ``"fractional"`` (paper) or ``"majority"`` (one-hot of the majority label per patch: the
            ``hard_patch_labels`` ablation).
        ignore_index: the value of unlabelled points in ``batch["labels"]``.

    Shape:
        - outputs: ``patch_feats (B, G, D)``, ``patch_idx (B, G, K)``, ``logit_scale ()``, ``logit_bias ()``.
        - batch: ``text_feats (B, L, D)``, ``text_mask (B, L)``, ``labels (B, N)`` or ``label_masks (B, L, N)``.

    Examples:
        >>> loss = MultiPositiveSigmoidLoss()
        >>> outputs = {
        ...     "patch_feats": torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1),
        ...     "patch_idx": torch.randint(0, 16, (2, 4, 5)),
        ...     "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(-10.0),
        ... }
        >>> batch = {"text_feats": torch.randn(2, 3, 8), "labels": torch.randint(-1, 3, (2, 16))}
        >>> sorted(loss(outputs, batch, return_dict=True))
        ['align_loss', 'logit_scale', 'patch_acc']
    """

    loss_name = "multi_positive_sigmoid"

    def __init__(
        self,
        *,
        pos_weight: PosWeight = None,
        targets: Literal["fractional", "majority"] = "fractional",
        ignore_index: int = -1,
    ) -> None:
        super().__init__(targets=targets, ignore_index=ignore_index)
        resolve_pos_weight(pos_weight, torch.ones(1), torch.ones(1))  # validate early
        self.pos_weight = pos_weight

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight!r}, targets={self.targets!r}"

    def _loss(self, x: dict[str, Any], targets: torch.Tensor) -> torch.Tensor:
        return multi_positive_sigmoid_loss(
            x["patch_feats"],
            x["text_feats"],
            targets,
            logit_scale=x["logit_scale"],
            logit_bias=x["logit_bias"],
            text_mask=x["text_mask"],
            pos_weight=self.pos_weight,
        )
