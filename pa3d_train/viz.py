"""Figures: shapes coloured by part, and patch features shown as colours through PCA (as in the paper).

matplotlib runs headless (Agg); nothing here opens a window.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pa3d_models.deps import require

__all__ = ["part_palette", "colorize_labels", "pca_rgb", "save_part_figure", "save_feature_figure"]

# 20 distinguishable colours (tab20 reordered so neighbours differ); -1 (unlabelled) is grey.
_BASE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
        [227, 119, 194], [188, 189, 34], [23, 190, 207], [127, 127, 127], [174, 199, 232], [255, 187, 120],
        [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141],
        [158, 218, 229], [57, 59, 121],
    ],
    dtype=np.uint8,
)
_UNLABELLED = np.array([170, 170, 170], dtype=np.uint8)


def part_palette(num_parts: int) -> np.ndarray:
    """``(num_parts, 3)`` uint8 RGB colours, distinct for up to 20 parts and cycling after.

    Examples:
        >>> part_palette(3).tolist()
        [[31, 119, 180], [255, 127, 14], [44, 160, 44]]
    """
    return _BASE[np.arange(num_parts) % len(_BASE)]


def colorize_labels(labels: torch.Tensor | np.ndarray, num_parts: int) -> np.ndarray:
    """Per-point uint8 RGB for part indices (``-1`` = unlabelled, grey).

    Shape:
        labels: ``(N,)`` -> ``(N, 3)``.

    Examples:
        >>> colorize_labels(torch.tensor([1, -1]), 2).tolist()
        [[255, 127, 14], [170, 170, 170]]
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {labels.shape}")
    if labels.size and labels.max() >= num_parts:
        raise ValueError(f"labels must be < num_parts={num_parts}, got {int(labels.max())}")
    out = np.empty((labels.shape[0], 3), dtype=np.uint8)
    known = labels >= 0
    out[known] = part_palette(num_parts)[labels[known]]
    out[~known] = _UNLABELLED
    return out


def pca_rgb(features: torch.Tensor) -> torch.Tensor:
    """Map features to colours: the first three principal components, each scaled to [0, 1].

    Args:
        features: one feature vector per row (a patch or a point), at least 2 rows.

    Returns:
        RGB in [0, 1], one row per feature vector.

    Shape:
        features: ``(M, D)`` -> ``(M, 3)``.

    Examples:
        >>> rgb = pca_rgb(torch.randn(10, 8))
        >>> rgb.shape, bool(rgb.min() >= 0), bool(rgb.max() <= 1)
        (torch.Size([10, 3]), True, True)
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (M, D) with M >= 2, got shape {tuple(features.shape)}")
    x = features.detach().float().cpu()
    x = x - x.mean(0, keepdim=True)
    q = min(3, x.shape[0], x.shape[1])
    _, sing, v = torch.linalg.svd(x.double(), full_matrices=False)
    v = v[:q]
    # deterministic signs (each component's largest-magnitude loading is positive) and no colour from
    # numerically empty components, so the picture depends on the features, not on the SVD routine
    flip = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True))).clamp(min=0) * 2 - 1
    proj = (x.double() @ (v * flip).T) * (sing[:q] > 1e-6 * sing[0].clamp(min=1e-30)).double()
    proj = proj.float()
    if q < 3:
        proj = torch.cat([proj, torch.zeros(x.shape[0], 3 - q)], dim=1)
    lo, hi = proj.min(0).values, proj.max(0).values
    return (proj - lo) / (hi - lo).clamp(min=1e-12)


def _scatter3d(ax, points: np.ndarray, colors: np.ndarray, title: str, size: float) -> None:
    ax.scatter(points[:, 0], points[:, 2], points[:, 1], c=colors, s=size, linewidths=0, depthshade=False)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    span = (points.max(0) - points.min(0)).max() / 2 + 1e-9
    mid = (points.max(0) + points.min(0)) / 2
    ax.set_xlim(mid[0] - span, mid[0] + span)
    ax.set_ylim(mid[2] - span, mid[2] + span)
    ax.set_zlim(mid[1] - span, mid[1] + span)
    ax.view_init(elev=20, azim=-60)


def save_part_figure(
    path: str | os.PathLike,
    shapes: Sequence[dict],
    *,
    point_size: float = 2.0,
) -> Path:
    """Save a grid: one row per shape, columns for the predicted and (when given) the true parts.

    Args:
        path: the PNG to write (written atomically).
        shapes: dicts with ``points (N, 3)``, ``pred (N,)``, ``names`` (list of part names) and optionally
            ``target (N,)`` and ``title``. Points are drawn with y up.
        point_size: marker size.

    Returns:
        The path written.
    """
    plt = _pyplot("save_part_figure")
    from matplotlib.patches import Patch

    if not shapes:
        raise ValueError("shapes must hold at least one shape to draw")
    cols = 2 if any("target" in s for s in shapes) else 1
    fig = plt.figure(figsize=(3.2 * cols + 1.6, 3.0 * len(shapes)))
    for row, shape in enumerate(shapes):
        pts = np.asarray(torch.as_tensor(shape["points"]).float().cpu())
        names = list(shape["names"])
        panels = [("predicted", shape["pred"])] + ([("ground truth", shape["target"])] if "target" in shape else [])
        for col, (label, values) in enumerate(panels):
            ax = fig.add_subplot(len(shapes), cols, row * cols + col + 1, projection="3d")
            title = f"{shape.get('title', '')}: {label}" if shape.get("title") else label
            _scatter3d(ax, pts, colorize_labels(torch.as_tensor(values), len(names)) / 255.0, title, point_size)
        handles = [Patch(color=c / 255.0, label=n) for n, c in zip(names, part_palette(len(names)))]
        fig.axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    return _save(fig, path)


def save_feature_figure(
    path: str | os.PathLike,
    shapes: Sequence[dict],
    *,
    point_size: float = 2.0,
) -> Path:
    """Save PCA-to-RGB pictures of features, one panel per shape.

    The PCA is fitted jointly over all shapes' features, so equal colours mean similar features across
    shapes (the paper's figure).

    Args:
        path: the PNG to write (atomically).
        shapes: dicts with ``points (M, 3)`` (e.g. patch centres or points), ``features (M, D)`` and
            optionally ``title``.
        point_size: marker size.
    """
    plt = _pyplot("save_feature_figure")

    if not shapes:
        raise ValueError("shapes must hold at least one shape to draw")
    feats = [torch.as_tensor(s["features"]).float() for s in shapes]
    rgb = pca_rgb(torch.cat(feats)).numpy()
    fig = plt.figure(figsize=(3.0 * len(shapes), 3.2))
    start = 0
    for i, (shape, f) in enumerate(zip(shapes, feats)):
        ax = fig.add_subplot(1, len(shapes), i + 1, projection="3d")
        pts = np.asarray(torch.as_tensor(shape["points"]).float().cpu())
        _scatter3d(ax, pts, rgb[start : start + len(f)], shape.get("title", ""), point_size)
        start += len(f)
    return _save(fig, path)


def _pyplot(feature: str):
    """matplotlib.pyplot on the headless Agg backend, or a message naming the extra that installs it."""
    require("matplotlib", feature).use("Agg")
    return require("matplotlib.pyplot", feature)


def _save(fig, path: str | os.PathLike) -> Path:
    import io

    from pa3d_models.files import atomic_write_bytes

    plt = _pyplot("saving figures")

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
