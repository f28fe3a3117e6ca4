"""Back-projection of dense 2D teacher features onto points, and per-patch Stage-1 targets.

Per view, the feature grid is upsampled bicubically (``align_corners=False``) to the image and every visible
point receives the mean feature of its pixels; points seen by several views get the mean over those views;
points no view sees get the mean of their ``k`` nearest seen points (COPS ``interpolate_point_cloud``, k=20);
the result is L2-normalised. Patch targets are the normalised mean of each patch's point features, for the
patches ``pa3d_layers.PatchGrouper`` forms.

The upsampling is never materialised: bicubic interpolation is separable with 4 taps per axis, so the
per-point mean of upsampled pixels is a sparse ``(N, V*h*w)`` matrix times the feature grids, which is
exactly equal to upsampling then averaging (tested against the dense form) at a fraction of the memory.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pa3d_layers import PatchGrouper, knn
from pa3d_layers._checks import check_points, check_positive_int, check_rank

__all__ = [
    "backproject",
    "fill_unseen",
    "point_features",
    "patch_targets",
    "PatchTargets",
    "bicubic_matrix",
]


_DENSE_LIMIT = 1 << 24  # entries of the dense weight matrix (64 MB in float32) before switching to sparse


def bicubic_matrix(in_size: int, out_size: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(out_size, in_size)`` matrix of 1-D bicubic upsampling as ``F.interpolate`` does it.

    ``F.interpolate(x, (H, W), mode="bicubic", align_corners=False) == A_H @ x @ A_W.T`` for a 2-D ``x``.

    Examples:
        >>> bicubic_matrix(2, 4).shape
        torch.Size([4, 2])
    """
    eye = torch.eye(in_size, dtype=dtype, device=device)[None, None]
    return F.interpolate(eye, size=(out_size, in_size), mode="bicubic", align_corners=False)[0, 0]


def _check_maps(features: object, pix2point: object) -> tuple[torch.Tensor, torch.Tensor]:
    check_rank(features, "features", 4, "(V, T, h, w) float")
    check_rank(pix2point, "pix2point", 3, "(V, H, W) long")
    assert isinstance(features, torch.Tensor) and isinstance(pix2point, torch.Tensor)
    if not features.is_floating_point():
        raise ValueError(f"features must be (V, T, h, w) float, got dtype {features.dtype}")
    if pix2point.dtype != torch.long:
        raise ValueError(f"pix2point must be (V, H, W) long, got dtype {pix2point.dtype}")
    if features.shape[0] != pix2point.shape[0]:
        raise ValueError(
            f"features and pix2point must have the same number of views V, got {features.shape[0]} and "
            f"{pix2point.shape[0]}"
        )
    return features, pix2point


def backproject(
    features: torch.Tensor, pix2point: torch.Tensor, num_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the bicubically upsampled features of each point's pixels, then over the views that see it.

    Args:
        features: teacher features ``(V, T, h, w)``.
        pix2point: ``(V, H, W)`` long, point index per pixel, ``-1`` for none.
        num_points: ``N``.

    Returns:
        ``point_feats (N, T)`` (zero for unseen points; float32 unless ``features`` is float64) and
        ``seen (N,)`` bool.

    Examples:
        >>> feats = torch.ones(1, 4, 2, 2)
        >>> pix2point = torch.tensor([[[0, 0, -1, -1]] * 4])
        >>> out, seen = backproject(feats, pix2point, 3)
        >>> out[0].tolist(), seen.tolist()
        ([1.0, 1.0, 1.0, 1.0], [True, False, False])
    """
    features, pix2point = _check_maps(features, pix2point)
    check_positive_int(num_points, "num_points")
    if pix2point.numel() and int(pix2point.max()) >= num_points:
        raise ValueError(f"pix2point must hold indices in [-1, {num_points}), got {int(pix2point.max())}")
    dtype = features.dtype if features.dtype == torch.float64 else torch.float32
    device = features.device
    num_views, dim, h, w = features.shape
    height, width = pix2point.shape[-2:]
    pix2point = pix2point.to(device)

    v, r, c = torch.nonzero(pix2point >= 0, as_tuple=True)
    p = pix2point[v, r, c]
    # Pixels per (view, point) and views per point give every pixel its weight 1 / (n_vp * n_p).
    vp = v * num_points + p
    n_vp = torch.bincount(vp, minlength=num_views * num_points)
    views_seeing = (n_vp.view(num_views, num_points) > 0).sum(0)
    seen = views_seeing > 0
    weight = 1.0 / (n_vp[vp] * views_seeing[p]).to(dtype)

    # The 4 taps of each output row / column of the separable bicubic kernel.
    a_h = bicubic_matrix(h, height, dtype=dtype, device=device)
    a_w = bicubic_matrix(w, width, dtype=dtype, device=device)
    tap_h, idx_h = a_h.abs().topk(min(4, h), dim=1)
    tap_w, idx_w = a_w.abs().topk(min(4, w), dim=1)
    tap_h, tap_w = a_h.gather(1, idx_h), a_w.gather(1, idx_w)
    cell = (v[:, None, None] * h + idx_h[r][:, :, None]) * w + idx_w[c][:, None, :]  # (E, 4, 4)
    value = weight[:, None, None] * tap_h[r][:, :, None] * tap_w[c][:, None, :]
    rows = p[:, None, None].expand_as(cell)
    grid = features.to(dtype).permute(0, 2, 3, 1).reshape(num_views * h * w, dim)
    num_cells = num_views * h * w
    if num_points * num_cells <= _DENSE_LIMIT:
        # small enough for a dense (N, V*h*w) weight matrix: accumulate without sorting (the sparse path's
        # coalesce dominated the cost of a demo-sized shape), same sums
        dense = torch.zeros(num_points * num_cells, dtype=dtype, device=device)
        dense.index_add_(0, (rows * num_cells + cell).reshape(-1), value.reshape(-1))
        return dense.view(num_points, num_cells) @ grid, seen
    matrix = torch.sparse_coo_tensor(
        torch.stack([rows.reshape(-1), cell.reshape(-1)]),
        value.reshape(-1),
        (num_points, num_views * h * w),
        check_invariants=False,
    ).coalesce()
    return torch.sparse.mm(matrix, grid), seen


def fill_unseen(point_feats: torch.Tensor, points: torch.Tensor, seen: torch.Tensor, *, k: int = 20) -> torch.Tensor:
    """Give every unseen point the mean feature of its ``k`` nearest seen points; seen points are unchanged.

    Args:
        point_feats: ``(N, T)``.
        points: ``(N, 3)``.
        seen: ``(N,)`` bool.
        k: neighbours (fewer when fewer points are seen).

    Returns:
        ``(N, T)``.

    Raises:
        ValueError: when no point is seen.

    Examples:
        >>> pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 0, 0]])
        >>> feats = torch.tensor([[1.0], [3.0], [0.0]])
        >>> fill_unseen(feats, pts, torch.tensor([True, True, False]), k=1).squeeze(1).tolist()
        [1.0, 3.0, 3.0]
    """
    check_points(points, "points", ragged=True)
    check_positive_int(k, "k")
    if seen.shape != (points.shape[0],) or seen.dtype != torch.bool:
        raise ValueError(f"seen must be (N,) bool with N={points.shape[0]}, got {tuple(seen.shape)} {seen.dtype}")
    if point_feats.dim() != 2 or point_feats.shape[0] != points.shape[0]:
        raise ValueError(f"point_feats must be (N, T) with N={points.shape[0]}, got {tuple(point_feats.shape)}")
    num_seen = int(seen.sum())
    if num_seen == 0:
        raise ValueError("no view sees any point of the shape: check the cameras, image size and point scale")
    if num_seen == points.shape[0]:
        return point_feats
    seen_idx = torch.nonzero(seen).squeeze(1)
    unseen_idx = torch.nonzero(~seen).squeeze(1)
    nearest = knn(points[seen_idx][None], points[unseen_idx][None], min(k, num_seen))[0]  # (U, k)
    out = point_feats.clone()
    out[unseen_idx] = point_feats[seen_idx[nearest]].mean(dim=1)
    return out


def point_features(
    features: torch.Tensor, pix2point: torch.Tensor, points: torch.Tensor, *, k: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm per-point teacher features: back-project, fill the unseen points, L2-normalise.

    Args:
        features: teacher features ``(V, T, h, w)``.
        pix2point: ``(V, H, W)`` long, ``-1`` for none.
        points: ``(N, 3)``.
        k: neighbours of the unseen-point fill.

    Returns:
        ``(N, T)`` unit-norm features and ``seen (N,)`` bool.

    Raises:
        ValueError: when no view sees any point.
    """
    check_points(points, "points", ragged=True)
    feats, seen = backproject(features, pix2point, points.shape[0])
    feats = fill_unseen(feats, points.to(feats.device), seen, k=k)
    return F.normalize(feats, dim=-1), seen


class PatchTargets(NamedTuple):
    """Stage-1 targets of one shape.

    Attributes:
        centers: patch centres ``(G, 3)``.
        targets: unit-norm teacher features per patch ``(G, T)``.
        patch_idx: the ``K`` point indices of each patch ``(G, K)``.
    """

    centers: torch.Tensor
    targets: torch.Tensor
    patch_idx: torch.Tensor


def patch_targets(
    points: torch.Tensor,
    point_feats: torch.Tensor,
    *,
    num_groups: int = 128,
    group_size: int = 32,
    backend: str = "auto",
) -> PatchTargets:
    """Normalised mean of the point features in each patch ``pa3d_layers.PatchGrouper`` forms.

    Args:
        points: ``(N, 3)``.
        point_feats: ``(N, T)`` per-point features.
        num_groups: ``G``.
        group_size: ``K``.
        backend: grouping backend (``"auto"``, ``"torch"``, ``"cluster"``).

    Returns:
        [PatchTargets][pa3d_data.targets.PatchTargets].

    Examples:
        >>> out = patch_targets(torch.rand(64, 3), torch.randn(64, 8), num_groups=4, group_size=8, backend="torch")
        >>> out.centers.shape, out.targets.shape, out.patch_idx.shape
        (torch.Size([4, 3]), torch.Size([4, 8]), torch.Size([4, 8]))
    """
    check_points(points, "points", ragged=True)
    if point_feats.dim() != 2 or point_feats.shape[0] != points.shape[0]:
        raise ValueError(f"point_feats must be (N, T) with N={points.shape[0]}, got {tuple(point_feats.shape)}")
    groups = PatchGrouper(num_groups, group_size, backend=backend)(points[None])
    patch_idx = groups.patch_idx[0]
    targets = F.normalize(point_feats[patch_idx.to(point_feats.device)].mean(dim=1), dim=-1)
    return PatchTargets(groups.centers[0], targets, patch_idx)
