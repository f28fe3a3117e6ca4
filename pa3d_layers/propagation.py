"""Propagate per-patch values (features, logits) back to the points of the cloud.

Dimensions: B batch, N points, P stacked points, G patches, Q stacked patches, K points per patch,
C channels.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_finite, check_points, check_positive_int, check_rank
from .grouping import _check_ragged_pair, knn
from .scatter import scatter

__all__ = ["propagate_to_points", "PatchToPointPropagation", "PROPAGATION_MODES"]

Mode = Literal["nearest", "membership", "idw"]
PROPAGATION_MODES: tuple[str, ...] = ("nearest", "membership", "idw")


def _gather_rows(values: Tensor, idx: Tensor, dense: bool) -> Tensor:
    """``values[idx]`` per cloud: dense ``(B, G, C)`` x ``(B, N, k)`` -> ``(B, N, k, C)``; ragged plain."""
    if not dense:
        return values[idx]
    b, n, k = idx.shape
    c = values.shape[-1]
    return torch.gather(values, 1, idx.reshape(b, n * k, 1).expand(-1, -1, c)).view(b, n, k, c)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _search_frame(points: Tensor, centers: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``points`` and ``centers`` in float32 at least, scaled by one power of two so their largest |coordinate|
    lies in [0.5, 1); returns them and the (detached, 0-dim) scale.

    Half precision has no CPU ``cdist`` and its smallest normal number (6e-5) is far above the distances
    a weight floor must handle; coordinates of 1e20 overflow float32 once squared, and 1e-25 underflow.
    A power-of-two scale is exact (no mantissa changes) and every mode is scale invariant, so the
    neighbours and the weights are those of the original cloud.
    """
    work = torch.promote_types(points.dtype, torch.float32)
    pts, ctr = points.to(work), centers.to(work)
    with torch.no_grad():
        big = torch.maximum(pts.detach().abs().amax() if pts.numel() else pts.new_zeros(()),
                            ctr.detach().abs().amax() if ctr.numel() else ctr.new_zeros(()))
        limit = int(math.log2(torch.finfo(work).max)) - 8  # keep the scale itself finite and normal
        exponent = torch.frexp(big).exponent.clamp(-limit, limit).to(work)
        scale = torch.pow(torch.tensor(2.0, dtype=work, device=pts.device), -exponent)
    return pts * scale, ctr * scale, scale


def propagate_to_points(
    patch_values: Tensor,
    points: Tensor,
    centers: Tensor,
    *,
    patch_idx: Tensor | None = None,
    mode: Mode = "nearest",
    k: int = 3,
    batch: Tensor | None = None,
    center_batch: Tensor | None = None,
    eps: float = 1e-8,
    backend: str = "auto",
) -> Tensor:
    """Give every point a value computed from the values of the patches.

    Modes:

    - ``"nearest"``: the value of the nearest patch centre.
    - ``"membership"``: the mean over the patches whose ``patch_idx`` contains the point; a point in no
      patch takes the value of its nearest centre (the official code gives it label 0 instead).
    - ``"idw"``: inverse-distance weighting over the k nearest centres,
      $v_i = \\sum_j w_{ij} v_j / \\sum_j w_{ij}$ with $w_{ij} = 1 / \\max(\\lVert p_i - c_j\\rVert, \\epsilon)$,
      so a point on a centre takes that centre's value.

    Every mode is an average of patch values, so a constant is propagated unchanged. Gradients flow to
    ``patch_values`` (and, for ``"idw"``, to the coordinates through the weights).

    Args:
        patch_values: per-patch values, dense ``(B, G, C)`` or ragged ``(Q, C)``.
        points: the points to fill, dense ``(B, N, 3)`` or ragged ``(P, 3)``.
        centers: patch centres, dense ``(B, G, 3)`` or ragged ``(Q, 3)``.
        patch_idx: patch members (required for ``"membership"``), ``(B, G, K)`` indices into each cloud's
            N points or ``(Q, K)`` row indices into ``points``, as in :class:`~pa3d_layers.PatchGroups`.
        mode: ``"nearest"``, ``"membership"`` or ``"idw"``.
        k: centres per point for ``"idw"``.
        batch: PyG batch vector of ``points`` ``(P,)`` for ragged input.
        center_batch: batch vector of ``centers`` ``(Q,)``; given together with ``batch``.
        eps: smallest distance used in the ``"idw"`` weights, a finite number > 0 (any dtype: the search
            and the weights run in float32 at least).
        backend: ``"auto"`` (torch-cluster / torch-scatter when installed) or ``"torch"``.

    Returns:
        Per-point values, ``(B, N, C)`` or ``(P, C)``, in the dtype of ``patch_values``.

    Shape:
        - patch_values: ``(B, G, C)`` or ``(Q, C)``
        - points: ``(B, N, 3)`` or ``(P, 3)``
        - centers: ``(B, G, 3)`` or ``(Q, 3)``
        - output: ``(B, N, C)`` or ``(P, C)``

    Examples:
        >>> centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
        >>> points = torch.tensor([[[0.1, 0, 0], [0.75, 0, 0]]])
        >>> values = torch.tensor([[[0.0], [1.0]]])
        >>> propagate_to_points(values, points, centers, mode="nearest", backend="torch")
        tensor([[[0.],
                 [1.]]])
        >>> propagate_to_points(values, points, centers, mode="idw", k=2, backend="torch")
        tensor([[[0.1000],
                 [0.7500]]])
    """
    if mode not in PROPAGATION_MODES:
        raise ValueError(f"mode must be one of {PROPAGATION_MODES}, got {mode!r}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend must be 'auto' or 'torch', got {backend!r}")
    check_positive_int(k, "k")
    eps = _check_eps(eps)
    pair = _check_ragged_pair(
        batch, center_batch,
        points.shape[0] if isinstance(points, Tensor) else 0,
        centers.shape[0] if isinstance(centers, Tensor) else 0,
        ("batch", "center_batch"),
    )
    ragged = pair is not None
    check_points(points, "points", ragged=ragged)
    check_points(centers, "centers", ragged=ragged)
    lead = "(Q" if ragged else "(B, G"
    check_rank(patch_values, "patch_values", 2 if ragged else 3, f"{lead}, C) float")
    if patch_values.shape[:-1] != centers.shape[:-1] or not patch_values.is_floating_point():
        raise ValueError(
            f"patch_values must be {lead}, C) float with one row per centre {tuple(centers.shape[:-1])}, "
            f"got shape {tuple(patch_values.shape)} dtype {patch_values.dtype}"
        )
    if not ragged and points.shape[0] != centers.shape[0]:
        raise ValueError(
            f"centers must have the batch size of points (B={points.shape[0]}), got shape {tuple(centers.shape)}"
        )
    if centers.dtype != points.dtype:
        raise ValueError(f"centers must have the dtype of points ({points.dtype}), got {centers.dtype}")
    check_finite(patch_values, "patch_values")

    if ragged:
        assert batch is not None and center_batch is not None
        fewest = int(torch.bincount(center_batch).min())
    else:
        fewest = centers.shape[1]
    kk = 1 if mode != "idw" else k
    if kk > fewest:
        where = "in every cloud" if ragged else f"G={fewest}"
        raise ValueError(f"k must be <= the number of centres {where} ({fewest}), got {k}")

    knn_backend = "torch" if backend == "torch" else "auto"
    kw = dict(batch_x=center_batch, batch_y=batch, backend=knn_backend)
    pts, ctr, scale = _search_frame(points, centers)
    if mode == "idw":
        idx, dist = knn(ctr, pts, kk, return_distances=True, **kw)  # type: ignore[arg-type]
        # w_j = 1 / max(d_j, eps), written as max(d_min, eps) / max(d_j, eps) in (0, 1] so that no weight is
        # infinite (a point on a centre with a subnormal eps) before the normalisation, which cancels the factor.
        floor = torch.tensor(eps, dtype=dist.dtype, device=dist.device) * scale
        floor = floor.clamp(min=torch.finfo(dist.dtype).tiny)
        d = dist.clamp(min=floor)
        w = d.amin(dim=-1, keepdim=True) / d
        w = (w / w.sum(dim=-1, keepdim=True)).to(patch_values.dtype)
        return (w.unsqueeze(-1) * _gather_rows(patch_values, idx, not ragged)).sum(dim=-2)

    near = knn(ctr, pts, 1, **kw)  # type: ignore[arg-type]
    nearest = _gather_rows(patch_values, near, not ragged).squeeze(-2)
    if mode == "nearest":
        return nearest

    if patch_idx is None:
        raise ValueError("patch_idx is required for mode='membership': (B, G, K) or (Q, K) long, as in PatchGroups")
    exp = "(Q, K)" if ragged else "(B, G, K)"
    check_rank(patch_idx, "patch_idx", 2 if ragged else 3, f"{exp} long")
    if patch_idx.dtype != torch.long or patch_idx.shape[:-1] != centers.shape[:-1]:
        raise ValueError(
            f"patch_idx must be {exp} long with one row per centre {tuple(centers.shape[:-1])}, "
            f"got shape {tuple(patch_idx.shape)} dtype {patch_idx.dtype}"
        )
    n = points.shape[0] if ragged else points.shape[1]
    if patch_idx.numel() and (int(patch_idx.min()) < 0 or int(patch_idx.max()) >= n):
        raise ValueError(f"patch_idx must index points in [0, {n}), got values in "
                         f"[{int(patch_idx.min())}, {int(patch_idx.max())}]")
    if ragged:
        assert batch is not None and center_batch is not None
        if bool((batch[patch_idx] != center_batch.unsqueeze(1)).any()):
            raise ValueError("patch_idx must index points of the patch's own cloud (batch[patch_idx] == center_batch)")
        index = patch_idx.reshape(-1)
        src = patch_values.unsqueeze(1).expand(-1, patch_idx.shape[1], -1)
        size = n
    else:
        b = points.shape[0]
        index = (patch_idx + torch.arange(b, device=patch_idx.device).view(b, 1, 1) * n).reshape(-1)
        src = patch_values.unsqueeze(2).expand(-1, -1, patch_idx.shape[2], -1)
        size = b * n
    scatter_backend = "torch" if backend == "torch" else "auto"
    c = patch_values.shape[-1]  # explicit sizes: -1 is ambiguous for an empty batch or C = 0
    src = src.reshape(index.numel(), c)
    sums = scatter(src, index, 0, dim_size=size, reduce="sum", backend=scatter_backend)
    ones = torch.ones_like(index, dtype=patch_values.dtype)
    counts = scatter(ones, index, 0, dim_size=size, reduce="sum", backend=scatter_backend).unsqueeze(-1)
    mean = sums / counts.clamp(min=1)
    out = torch.where(counts > 0, mean, nearest.reshape(size, c))
    return out if ragged else out.view(points.shape[0], n, c)


class PatchToPointPropagation(nn.Module):
    """Module form of :func:`propagate_to_points`: stores the mode and k.

    Args:
        mode: ``"nearest"``, ``"membership"`` or ``"idw"``.
        k: centres per point for ``"idw"``.
        eps: smallest distance in the ``"idw"`` weights.
        backend: ``"auto"`` or ``"torch"``.

    Shape:
        - patch_values: ``(B, G, C)`` or ``(Q, C)``
        - output: ``(B, N, C)`` or ``(P, C)``

    Examples:
        >>> prop = PatchToPointPropagation("idw", k=2, backend="torch")
        >>> prop(torch.ones(1, 4, 5), torch.rand(1, 10, 3), torch.rand(1, 4, 3)).shape
        torch.Size([1, 10, 5])
    """

    def __init__(self, mode: Mode = "nearest", k: int = 3, *, eps: float = 1e-8, backend: str = "auto") -> None:
        super().__init__()
        if mode not in PROPAGATION_MODES:
            raise ValueError(f"mode must be one of {PROPAGATION_MODES}, got {mode!r}")
        check_positive_int(k, "k")
        self.mode = mode
        self.k = k
        self.eps = eps
        self.backend = backend

    def forward(
        self, patch_values: Tensor, points: Tensor, centers: Tensor, *, patch_idx: Tensor | None = None,
        batch: Tensor | None = None, center_batch: Tensor | None = None,
    ) -> Tensor:
        """Propagate ``patch_values`` from ``centers`` to ``points`` (see :func:`propagate_to_points`)."""
        return propagate_to_points(
            patch_values, points, centers, patch_idx=patch_idx, mode=self.mode, k=self.k, batch=batch,
            center_batch=center_batch, eps=self.eps, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", k={self.k}" if self.mode == "idw" else "")
