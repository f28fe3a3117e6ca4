"""Argument checks shared by every public entry point of pa3d.

Each check raises ``ValueError`` naming the argument and the expected form, e.g.
``points must be (B, N, 3) float, got shape (2, 3, 2048)``. Tests pin these messages.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_points",
    "check_finite",
    "check_rank",
    "check_batch_vector",
    "check_positive_int",
    "check_tokenizer_widths",
]


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_rank(x: object, name: str, rank: int | tuple[int, ...], layout: str) -> torch.Tensor:
    """Check that ``x`` is a tensor of rank ``rank``; ``layout`` is the expected form, e.g. "(B, N, 3)"."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() not in ranks:
        raise ValueError(f"{name} must be {layout}, got shape {_shape(x)}")
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` holds NaN or Inf values."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/Inf value(s)")
    return x


def check_points(points: object, name: str = "points", *, ragged: bool | None = None) -> torch.Tensor:
    """Check a point tensor: dense ``(B, N, 3)`` (``ragged=False``), ragged ``(P, 3)`` (``ragged=True``),
    or either (``ragged=None``); floating point and finite."""
    if ragged is None:
        layout, rank = "(B, N, 3) or (P, 3)", (2, 3)
    elif ragged:
        layout, rank = "(P, 3)", 2
    else:
        layout, rank = "(B, N, 3)", 3
    check_rank(points, name, rank, layout + " float")
    assert isinstance(points, torch.Tensor)
    if points.shape[-1] != 3:
        raise ValueError(f"{name} must be {layout} float, got shape {_shape(points)}")
    if not points.is_floating_point():
        raise ValueError(f"{name} must be {layout} float, got dtype {points.dtype}")
    return check_finite(points, name)


def check_batch_vector(batch: object, num_points: int, name: str = "batch") -> torch.Tensor:
    """Check a PyG batch vector: ``(P,)`` long, sorted, values in ``[0, B)`` with no empty cloud."""
    check_rank(batch, name, 1, "(P,) long")
    assert isinstance(batch, torch.Tensor)
    if batch.dtype != torch.long:
        raise ValueError(f"{name} must be (P,) long, got dtype {batch.dtype}")
    if batch.numel() != num_points:
        raise ValueError(f"{name} must have one entry per point ({num_points}), got {batch.numel()}")
    if batch.numel() == 0:
        raise ValueError(f"{name} is empty: a ragged batch needs at least one point")
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{name} must be sorted (points of one cloud contiguous, as in PyG)")
    if int(batch[0]) != 0:
        raise ValueError(f"{name} must start at 0, got {int(batch[0])}")
    steps = batch[1:] - batch[:-1]
    if bool((steps > 1).any()):
        raise ValueError(f"{name} skips a cloud index: every cloud in [0, B) must have at least one point")
    return batch


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Check that ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_tokenizer_widths(value: object, name: str = "hidden_dims") -> tuple[int, int, int]:
    """Check the mini-PointNet's three inner widths: a sequence of three ints >= 1 (official (128, 256, 512))."""
    from collections.abc import Sequence

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3 \
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name} must be three ints >= 1 (official: (128, 256, 512)), got {value!r}")
    return int(value[0]), int(value[1]), int(value[2])
