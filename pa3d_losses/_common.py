"""Helpers shared by the losses: argument checks beyond ``pa3d_layers._checks`` and dict access."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from pa3d_layers._checks import check_finite, check_rank

__all__ = [
    "REDUCTIONS",
    "check_eps",
    "check_finite_where",
    "check_ignore_index",
    "check_reduction",
    "check_same",
    "check_text_mask",
    "check_unit_interval",
    "require",
    "resolve_pos_weight",
    "to_scalar_tensor",
]

REDUCTIONS = ("mean", "sum", "none")


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_reduction(reduction: object) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def check_eps(eps: object, name: str = "eps") -> float:
    """A finite number > 0 (a floor on norms or distances); 0 or less would let 0/0 through as NaN."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {eps!r}")
    return float(eps)


def check_ignore_index(ignore_index: object) -> int:
    """The label value of unlabelled points: an int (not a bool)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int (the label of unlabelled points), got {ignore_index!r}")
    return ignore_index


def check_same(name: str, got: int, expected: int, what: str, x: torch.Tensor) -> None:
    """Raise when one dimension of ``x`` (called ``name``) disagrees with another argument."""
    if got != expected:
        raise ValueError(f"{name} must have {what} = {expected}, got shape {_shape(x)}")


def check_text_mask(text_mask: object, batch_size: int, num_labels: int, device: torch.device) -> torch.Tensor:
    """``text_mask (B, L)`` bool with at least one valid text per shape; all-True when None."""
    if num_labels == 0:
        raise ValueError("text_feats must hold at least one text per shape (L >= 1), got L = 0")
    if text_mask is None:
        return torch.ones(batch_size, num_labels, dtype=torch.bool, device=device)
    check_rank(text_mask, "text_mask", 2, "(B, L) bool")
    assert isinstance(text_mask, torch.Tensor)
    if text_mask.dtype != torch.bool:
        raise ValueError(f"text_mask must be (B, L) bool, got dtype {text_mask.dtype}")
    if tuple(text_mask.shape) != (batch_size, num_labels):
        raise ValueError(f"text_mask must be (B, L) = ({batch_size}, {num_labels}), got {_shape(text_mask)}")
    empty = (~text_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"text_mask: shape(s) {empty} have no valid text; drop them from the batch")
    return text_mask


def check_unit_interval(x: torch.Tensor, name: str, valid: torch.Tensor | None = None) -> None:
    """Raise unless every entry of ``x`` (where ``valid``) is finite and in [0, 1]."""
    bad = (x < 0) | (x > 1) | torch.isnan(x)
    if valid is not None:
        bad = bad & valid
    if bool(bad.any()):
        raise ValueError(f"{name} must lie in [0, 1], got {int(bad.sum())} value(s) outside it")


def check_finite_where(x: torch.Tensor, name: str, valid: torch.Tensor) -> None:
    """``check_finite`` restricted to the rows where ``valid`` (padding may hold anything)."""
    bad = ~torch.isfinite(x) & valid
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite, got {int(bad.sum())} NaN/Inf value(s) in valid entries")


def to_scalar_tensor(value: object, name: str, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor on ``like``'s device and dtype from a number or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a 0-dim tensor, got shape {_shape(value)}")
        out = value.reshape(()).to(dtype=like.dtype)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    else:
        raise ValueError(f"{name} must be a number or a 0-dim tensor, got {type(value).__name__}")
    check_finite(out.detach(), name)
    return out


def resolve_pos_weight(pos_weight: object, num_candidates: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
    """The positive-class weight per shape as ``(B, 1, 1)``, or None for weight 1.

    ``num_candidates (B,)`` is the number of texts each patch is scored against; ``"num_labels_minus_one"``
    gives ``max(1, num_candidates - 1)`` (the official release's ``max(1, K - 1)``).
    """
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != "num_labels_minus_one":
            raise ValueError(
                f"pos_weight must be None, a positive number or 'num_labels_minus_one', got {pos_weight!r}"
            )
        w = (num_candidates.to(like.dtype) - 1).clamp(min=1)
        return w.view(-1, 1, 1)
    if (
        isinstance(pos_weight, (int, float))
        and not isinstance(pos_weight, bool)
        and math.isfinite(pos_weight)
        and pos_weight > 0
    ):
        if like.is_floating_point() and pos_weight > torch.finfo(like.dtype).max:
            raise ValueError(f"pos_weight must be finite in {like.dtype}, got {pos_weight!r}")
        return torch.full((num_candidates.numel(), 1, 1), float(pos_weight), dtype=like.dtype, device=like.device)
    raise ValueError(f"pos_weight must be None, a positive number or 'num_labels_minus_one', got {pos_weight!r}")


def require(mapping: Mapping[str, Any], key: str, where: str, owner: str) -> Any:
    """``mapping[key]``, or a ValueError saying which dict lacks it and which loss needs it."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where} must be a dict of tensors, got {type(mapping).__name__}")
    value = mapping.get(key)
    if value is None:
        raise ValueError(f"{where} is missing {key!r} (needed by {owner})")
    return value
