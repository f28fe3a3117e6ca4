"""Targets built from labelled points: per-patch label fractions, majority labels, matched teacher targets."""

from __future__ import annotations

import math

import torch
from einops import rearrange

from pa3d_layers._checks import check_finite, check_rank
from pa3d_layers.scatter import scatter

from ._common import check_ignore_index

__all__ = ["fractional_patch_labels", "majority_patch_labels", "match_teacher_targets"]


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def _check_patch_idx(patch_idx: object) -> torch.Tensor:
    check_rank(patch_idx, "patch_idx", 3, "(B, G, K) long")
    assert isinstance(patch_idx, torch.Tensor)
    if patch_idx.dtype != torch.long:
        raise ValueError(f"patch_idx must be (B, G, K) long, got dtype {patch_idx.dtype}")
    if patch_idx.shape[2] == 0:
        raise ValueError(f"patch_idx must be (B, G, K) long with K >= 1, got shape {_shape(patch_idx)}")
    return patch_idx


def _check_labels(
    patch_idx: torch.Tensor,
    point_labels: torch.Tensor | None,
    label_masks: torch.Tensor | None,
    num_labels: int | None,
    ignore_index: int,
) -> tuple[int, int]:
    """Validate the label source; return ``(N, L)``."""
    if (point_labels is None) == (label_masks is None):
        raise ValueError("pass exactly one of point_labels (B, N) and label_masks (B, L, N)")
    check_ignore_index(ignore_index)
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 0):
        raise ValueError(f"num_labels must be an int >= 0 or None, got {num_labels!r}")
    B = patch_idx.shape[0]
    if point_labels is not None:
        check_rank(point_labels, "point_labels", 2, "(B, N) long")
        if point_labels.dtype != torch.long:
            raise ValueError(f"point_labels must be (B, N) long, got dtype {point_labels.dtype}")
        if point_labels.shape[0] != B:
            raise ValueError(f"point_labels must be (B, N) with B = {B} (from patch_idx), got {_shape(point_labels)}")
        N = point_labels.shape[1]
        valid = point_labels != ignore_index
        if bool((point_labels[valid] < 0).any()):
            raise ValueError(f"point_labels must be >= 0 or the ignore value {ignore_index}")
        top = int(point_labels[valid].max()) + 1 if bool(valid.any()) else 0
        if num_labels is None:
            num_labels = top
        elif top > num_labels:
            raise ValueError(f"point_labels must be < num_labels = {num_labels}, got a label {top - 1}")
    else:
        assert label_masks is not None
        check_rank(label_masks, "label_masks", 3, "(B, L, N) bool")
        if label_masks.dtype != torch.bool:
            raise ValueError(f"label_masks must be (B, L, N) bool, got dtype {label_masks.dtype}")
        if label_masks.shape[0] != B:
            raise ValueError(f"label_masks must be (B, L, N) with B = {B} (from patch_idx), got {_shape(label_masks)}")
        N = label_masks.shape[2]
        if num_labels is not None and num_labels != label_masks.shape[1]:
            raise ValueError(
                f"label_masks must be (B, L, N) with L = num_labels = {num_labels}, got {_shape(label_masks)}"
            )
        num_labels = label_masks.shape[1]
    if patch_idx.numel() and (int(patch_idx.min()) < 0 or int(patch_idx.max()) >= N):
        raise ValueError(f"patch_idx must index points in [0, N) with N = {N}, got values outside")
    return N, num_labels


def fractional_patch_labels(
    patch_idx: torch.Tensor,
    *,
    point_labels: torch.Tensor | None = None,
    label_masks: torch.Tensor | None = None,
    num_labels: int | None = None,
    ignore_index: int = -1,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""The fraction of each patch's K points that carry each label: PatchAlign3D's Stage-2 targets.

    $$
    y_{b,g,l} = \frac{1}{K} \sum_{k=1}^{K} [\, \text{point } \mathrm{idx}_{b,g,k} \text{ carries label } l \,]
    $$

    Points are counted with multiplicity, so a point that appears twice in a patch counts twice (the
    official release counts the K member points the same way). With hard labels, an ignored point (value
    ``ignore_index``) carries no label, so each row sums to the fraction of the patch that is labelled.
    With overlapping masks a point may carry several labels and rows may sum to more than 1.

    Hard labels are counted with a scatter-sum (``pa3d_layers.scatter``: torch-scatter, or its
    pure-torch reference); masks are gathered and averaged.

    Args:
        patch_idx: per-shape indices of each patch's member points (e.g. ``PatchGroups.patch_idx``).
        point_labels: hard labels, one per point, ``ignore_index`` for unlabelled points.
        label_masks: overlapping boolean masks, one per label (the Find3D training format).
        num_labels: L. Default: ``label_masks.shape[1]``, or the largest hard label + 1.
        ignore_index: the value of unlabelled points in ``point_labels``.
        dtype: floating dtype of the result (default ``torch.get_default_dtype()``).
        backend: scatter backend for hard labels: ``"auto"``, ``"torch"`` or ``"scatter"``.

    Returns:
        Label fractions in [0, 1].

    Shape:
        - patch_idx: ``(B, G, K)`` long, values in ``[0, N)``.
        - point_labels: ``(B, N)`` long.
        - label_masks: ``(B, L, N)`` bool.
        - output: ``(B, G, L)``.

    Examples:
        >>> patch_idx = torch.tensor([[[0, 1, 2, 3], [2, 3, 4, 4]]])
        >>> labels = torch.tensor([[0, 0, 1, -1, 1]])
        >>> fractional_patch_labels(patch_idx, point_labels=labels, num_labels=2)
        tensor([[[0.5000, 0.2500],
                 [0.0000, 0.7500]]])
    """
    patch_idx = _check_patch_idx(patch_idx)
    _, L = _check_labels(patch_idx, point_labels, label_masks, num_labels, ignore_index)
    B, G, K = patch_idx.shape
    dtype = dtype or torch.get_default_dtype()
    if label_masks is not None:
        members = label_masks.gather(2, rearrange(patch_idx, "b g k -> b 1 (g k)").expand(B, L, G * K))
        frac = rearrange(members, "b l (g k) -> b g l k", k=K).to(dtype).mean(dim=-1)
        return frac
    assert point_labels is not None
    lab = point_labels.gather(1, rearrange(patch_idx, "b g k -> b (g k)"))
    lab = rearrange(lab, "b (g k) -> b g k", k=K)
    row = torch.arange(B * G, device=patch_idx.device).view(B, G, 1)
    dump = B * G * L  # ignored points go to one extra slot that is dropped
    slot = torch.where(lab != ignore_index, row * L + lab, torch.full_like(lab, dump))
    ones = torch.ones(slot.numel(), dtype=dtype, device=patch_idx.device)
    counts = scatter(ones, slot.flatten(), 0, dim_size=dump + 1, reduce="sum", backend=backend)
    return counts[:dump].view(B, G, L) / K


def majority_patch_labels(
    patch_idx: torch.Tensor,
    *,
    point_labels: torch.Tensor | None = None,
    label_masks: torch.Tensor | None = None,
    num_labels: int | None = None,
    ignore_index: int = -1,
    backend: str = "auto",
) -> torch.Tensor:
    """The label carried by most of each patch's points, for patch accuracy and hard-label targets.

    The argmax of `fractional_patch_labels`; ties go to the lowest label index. A patch with no
    labelled point gets -1.

    Args:
        patch_idx: per-shape indices of each patch's member points.
        point_labels: hard labels, one per point, ``ignore_index`` for unlabelled points.
        label_masks: overlapping boolean masks, one per label.
        num_labels: L (see `fractional_patch_labels`).
        ignore_index: the value of unlabelled points in ``point_labels``.
        backend: scatter backend for hard labels.

    Returns:
        The majority label per patch, -1 where the patch holds no labelled point.

    Shape:
        - patch_idx: ``(B, G, K)`` long.
        - point_labels: ``(B, N)`` long; label_masks: ``(B, L, N)`` bool.
        - output: ``(B, G)`` long.

    Examples:
        >>> patch_idx = torch.tensor([[[0, 1, 2], [3, 3, 4]]])
        >>> majority_patch_labels(patch_idx, point_labels=torch.tensor([[1, 0, 1, -1, -1]]))
        tensor([[ 1, -1]])
    """
    frac = fractional_patch_labels(
        patch_idx,
        point_labels=point_labels,
        label_masks=label_masks,
        num_labels=num_labels,
        ignore_index=ignore_index,
        backend=backend,
    )
    if frac.shape[-1] == 0:
        return torch.full(frac.shape[:2], -1, dtype=torch.long, device=frac.device)
    best, arg = frac.max(dim=-1)
    return torch.where(best > 0, arg, torch.full_like(arg, -1))


def match_teacher_targets(
    centers: torch.Tensor,
    teacher_centers: torch.Tensor,
    teacher_targets: torch.Tensor,
    *,
    teacher_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""For each patch, the cached teacher target of the nearest cached patch centre.

    Stage-1 targets are cached once per shape on all of its points; the model forms its patches on a
    training crop, so its centres differ. Each patch takes the target of the cached centre nearest to its own
    (Euclidean argmin; several patches may share one cached centre, as in the official release; no
    one-to-one matching):

    $$
    j^*(g) = \arg\min_{j} \lVert c_g - c'_j \rVert_2, \qquad \hat t_g = t_{j^*(g)}
    $$

    Args:
        centers: the model's patch centres.
        teacher_centers: the cached centres, possibly padded.
        teacher_targets: the cached per-patch teacher features.
        teacher_mask: which cached centres are real (True) in a padded batch; default all.

    Returns:
        ``(targets, distances)``: the matched targets (differentiable w.r.t. ``teacher_targets``) and the
        match distance of each patch (detached, for logging).

    Shape:
        - centers: ``(B, G, 3)``.
        - teacher_centers: ``(B, G', 3)``; teacher_targets: ``(B, G', T)``; teacher_mask: ``(B, G')`` bool.
        - targets: ``(B, G, T)``; distances: ``(B, G)``.

    Examples:
        >>> centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
        >>> cached = torch.tensor([[[0.9, 0, 0], [0.1, 0, 0], [5.0, 0, 0]]])
        >>> feats = torch.tensor([[[1.0, 0], [0.0, 1], [1.0, 1]]])
        >>> targets, dist = match_teacher_targets(centers, cached, feats)
        >>> targets
        tensor([[[0., 1.],
                 [1., 0.]]])
        >>> dist
        tensor([[0.1000, 0.1000]])
    """
    for name, x, layout in (
        ("centers", centers, "(B, G, 3) float"),
        ("teacher_centers", teacher_centers, "(B, G', 3) float"),
    ):
        check_rank(x, name, 3, layout)
        if x.shape[-1] != 3 or not x.is_floating_point():
            raise ValueError(f"{name} must be {layout}, got shape {_shape(x)} dtype {x.dtype}")
        check_finite(x, name)
    check_rank(teacher_targets, "teacher_targets", 3, "(B, G', T) float")
    B, Gp = teacher_centers.shape[:2]
    if centers.shape[0] != B:
        raise ValueError(f"centers must be (B, G, 3) with B = {B} (from teacher_centers), got {_shape(centers)}")
    if tuple(teacher_targets.shape[:2]) != (B, Gp):
        raise ValueError(
            f"teacher_targets must be (B, G', T) = ({B}, {Gp}, T) like teacher_centers, got {_shape(teacher_targets)}"
        )
    if Gp == 0:
        raise ValueError(f"teacher_centers must hold at least one centre, got {_shape(teacher_centers)}")
    with torch.no_grad():
        # float32 at least (no half cdist on the CPU) on a power-of-two-scaled frame (exact; no overflow at 1e20)
        work = torch.promote_types(centers.dtype, torch.float32)
        a, b = centers.detach().to(work), teacher_centers.detach().to(work)
        big = torch.maximum(a.abs().amax() if a.numel() else a.new_zeros(()),
                            b.abs().amax() if b.numel() else b.new_zeros(()))
        limit = int(math.log2(torch.finfo(work).max)) - 8
        exponent = torch.frexp(big).exponent.clamp(-limit, limit).to(work)
        scale = torch.pow(torch.tensor(2.0, dtype=work, device=a.device), -exponent)
        dist = torch.cdist(a * scale, b * scale, compute_mode="donot_use_mm_for_euclid_dist") / scale
        if teacher_mask is not None:
            check_rank(teacher_mask, "teacher_mask", 2, "(B, G') bool")
            if teacher_mask.dtype != torch.bool or tuple(teacher_mask.shape) != (B, Gp):
                raise ValueError(
                    f"teacher_mask must be (B, G') = ({B}, {Gp}) bool, got {_shape(teacher_mask)} {teacher_mask.dtype}"
                )
            empty = (~teacher_mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"teacher_mask: shape(s) {empty} have no cached centre")
            dist = dist.masked_fill(~teacher_mask[:, None, :], float("inf"))
        distances, nearest = dist.min(dim=-1)
        distances = distances.to(centers.dtype)
    T = teacher_targets.shape[-1]
    targets = teacher_targets.gather(1, nearest.unsqueeze(-1).expand(-1, -1, T))
    return targets, distances
