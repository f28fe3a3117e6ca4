"""Scatter reductions with torch-scatter as the fast backend and ``Tensor.scatter_reduce`` as reference."""

from __future__ import annotations

from typing import Literal

import torch

from ._backend import resolve_backend

__all__ = ["scatter"]

Reduce = Literal["sum", "mean", "max", "min"]
_TORCH_REDUCE = {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin"}


def scatter(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = 0,
    *,
    dim_size: int | None = None,
    reduce: Reduce = "sum",
    backend: str = "auto",
) -> torch.Tensor:
    """Reduce the slices of ``src`` along ``dim`` that share an ``index`` value.

    Slots that receive nothing are 0 for every reduction (torch-scatter's convention).

    Args:
        src: values to reduce.
        index: 1-D long tensor with ``src.shape[dim]`` entries, the output slot of each slice.
        dim: the dimension of ``src`` that ``index`` runs along.
        dim_size: number of output slots (default ``index.max() + 1``).
        reduce: ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``.
        backend: ``"auto"``, ``"torch"`` or ``"scatter"`` (torch-scatter).

    Returns:
        ``src``'s shape with ``dim`` resized to ``dim_size``.

    Examples:
        >>> scatter(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0, 0, 2]), reduce="mean", dim_size=3)
        tensor([1.5000, 0.0000, 4.0000])
    """
    if reduce not in _TORCH_REDUCE:
        raise ValueError(f"reduce must be one of {sorted(_TORCH_REDUCE)}, got {reduce!r}")
    if index.dim() != 1 or index.dtype != torch.long:
        raise ValueError(f"index must be (E,) long, got shape {tuple(index.shape)} dtype {index.dtype}")
    dim = dim % src.dim()
    if index.numel() != src.shape[dim]:
        raise ValueError(f"index must have src.shape[{dim}] = {src.shape[dim]} entries, got {index.numel()}")
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    if resolve_backend(backend, "scatter", "scatter") == "scatter":
        import torch_scatter

        return torch_scatter.scatter(src, index, dim=dim, dim_size=dim_size, reduce=reduce)
    shape = [1] * src.dim()
    shape[dim] = -1
    idx = index.view(shape).expand_as(src)
    out_shape = list(src.shape)
    out_shape[dim] = dim_size
    out = torch.zeros(out_shape, dtype=src.dtype, device=src.device)
    return out.scatter_reduce(dim, idx, src, reduce=_TORCH_REDUCE[reduce], include_self=False)
