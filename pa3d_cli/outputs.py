"""Carry a segmentation of sampled points back to the source shape, and draw it.

The model sees a few thousand points sampled from a mesh's surface (or drawn from a point cloud). These
helpers give every vertex, face and input point a result from those labelled samples, in float64 so a shape
far from the origin keeps its precision, and draw the result from several views with the up axis upright.

- :func:`transfer_similarities`: inverse-distance weighting over the ``k`` nearest labelled samples
  (a target on a sample takes that sample's values exactly).
- :func:`face_similarities`: a face takes the mean of the samples that lie on it, else of its three
  vertices.
- :func:`detect_up_axis`: the up axis of a shape, guessed from its extent.
- :func:`save_views_png`: a PNG with several views, coloured by part, with a legend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "transfer_similarities",
    "face_similarities",
    "labels_from_similarities",
    "detect_up_axis",
    "save_views_png",
]


def transfer_similarities(
    sample_points: np.ndarray | torch.Tensor,
    sample_values: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    *,
    k: int = 3,
    chunk: int = 8192,
) -> np.ndarray:
    """Give every target point values interpolated from its ``k`` nearest samples (inverse distance).

    Distances are computed in float64 after subtracting the samples' mean, so far-off shapes keep their
    neighbourhoods. A target that coincides with a sample gets exactly that sample's values, and a constant
    is transferred unchanged.

    Args:
        sample_points: ``(S, 3)`` positions of the labelled samples.
        sample_values: ``(S, L)`` values at the samples (e.g. part similarities).
        targets: ``(T, 3)`` positions to fill (mesh vertices, every input point).
        k: samples per target (clamped to ``S``).
        chunk: targets per distance block (bounds memory to ``chunk * S`` doubles).

    Returns:
        ``(T, L)`` float64 values.

    Examples:
        >>> transfer_similarities([[0.0, 0, 0], [1, 0, 0]], [[1.0], [3.0]], [[0.0, 0, 0], [0.5, 0, 0]]).tolist()
        [[1.0], [2.0]]
    """
    s = torch.as_tensor(np.asarray(sample_points, dtype=np.float64))
    v = torch.as_tensor(np.asarray(sample_values, dtype=np.float64))
    t = torch.as_tensor(np.asarray(targets, dtype=np.float64))
    if s.dim() != 2 or s.shape[1] != 3 or s.shape[0] == 0:
        raise ValueError(f"sample_points must be (S, 3) with S >= 1, got shape {tuple(s.shape)}")
    if v.dim() != 2 or v.shape[0] != s.shape[0]:
        raise ValueError(f"sample_values must be (S, L) with S = {s.shape[0]}, got shape {tuple(v.shape)}")
    if t.dim() != 2 or t.shape[1] != 3:
        raise ValueError(f"targets must be (T, 3), got shape {tuple(t.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    centre = s.mean(0, keepdim=True)
    s, t = s - centre, t - centre
    k = min(k, s.shape[0])
    out = torch.empty(t.shape[0], v.shape[1], dtype=torch.float64)
    for start in range(0, t.shape[0], chunk):
        d = torch.cdist(t[start : start + chunk], s)
        dist, idx = d.topk(k, dim=1, largest=False)
        exact = dist[:, :1] <= 0
        w = 1.0 / dist.clamp_min(1e-300)
        w = torch.where(exact, torch.zeros_like(w), w)
        w[:, :1] = torch.where(exact, torch.ones_like(w[:, :1]), w[:, :1])
        w = w / w.sum(1, keepdim=True)
        out[start : start + chunk] = (w.unsqueeze(-1) * v[idx]).sum(1)
    return out.numpy()


def face_similarities(
    faces: np.ndarray, vertex_values: np.ndarray, sample_face_ids: np.ndarray, sample_values: np.ndarray
) -> np.ndarray:
    """Per-face values: the mean over the samples lying on the face, else the mean of its three vertices.

    Args:
        faces: ``(F, 3)`` vertex indices.
        vertex_values: ``(V, L)`` values per vertex.
        sample_face_ids: ``(S,)`` the face each sample lies on.
        sample_values: ``(S, L)`` values per sample.

    Returns:
        ``(F, L)`` float64.

    Examples:
        >>> f = np.array([[0, 1, 2], [1, 2, 3]])
        >>> face_similarities(f, np.array([[0.0], [0], [0], [3]]), np.array([0, 0]), np.array([[4.0], [6]])).tolist()
        [[5.0], [1.0]]
    """
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    vv = np.asarray(vertex_values, dtype=np.float64)
    out = vv[faces].mean(axis=1)
    ids = np.asarray(sample_face_ids, dtype=np.int64).reshape(-1)
    sv = np.asarray(sample_values, dtype=np.float64)
    if ids.size:
        if ids.min() < 0 or ids.max() >= len(faces):
            raise ValueError(f"sample_face_ids must index the {len(faces)} faces, got [{ids.min()}, {ids.max()}]")
        sums = np.zeros_like(out)
        np.add.at(sums, ids, sv)
        counts = np.bincount(ids, minlength=len(faces))
        hit = counts > 0
        out[hit] = sums[hit] / counts[hit, None]
    return out


def labels_from_similarities(
    similarities: np.ndarray, logit_scale: float, logit_bias: float | None, min_score: float | None = None, *,
    prior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` from ``(M, L)`` similarities: the best part, and its probability
    ``sigmoid(scale * cos + bias)``; points below ``min_score`` get label -1 (as :meth:`PatchAlign3D.segment`).
    With ``prior`` (``(L,)``, :func:`pa3d_layers.name_prior` of the points the model saw) the best part is read
    after the per-shape prior correction (:func:`pa3d_layers.prior_correction`, ``--calibration prior``); the
    score stays the chosen part's probability.

    Examples:
        >>> lab, sc = labels_from_similarities(np.array([[0.1, 0.9], [0.2, -0.3]]), 10.0, -5.0)
        >>> lab.tolist(), [round(float(x), 3) for x in sc]
        ([1, 0], [0.982, 0.047])
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2 or sims.shape[1] == 0:
        raise ValueError(f"similarities must be (M, L) with L >= 1, got shape {sims.shape}")
    if prior is not None and len(sims):
        from pa3d_layers import prior_correction

        corrected = prior_correction(torch.from_numpy(sims), logit_scale,
                                     prior=torch.as_tensor(np.asarray(prior, dtype=np.float64)))
        labels = corrected.argmax(dim=1).numpy().astype(np.int64)
    else:
        labels = sims.argmax(axis=1).astype(np.int64)
    best = sims[np.arange(len(sims)), labels] if len(sims) else np.zeros(0)
    scores = 1.0 / (1.0 + np.exp(-(logit_scale * best + (logit_bias or 0.0))))
    if min_score is not None:
        labels = np.where(scores >= min_score, labels, -1)
    return labels, scores.astype(np.float32)


def detect_up_axis(points: np.ndarray | torch.Tensor) -> str:
    """Guess a shape's up axis, ``"y"`` or ``"z"``: the one along which the shape is taller.

    A heuristic (most standing objects are taller than deep); pass the axis explicitly
    (``--up-axis``) when it guesses wrong. Ties go to ``"y"`` (OBJ and glTF convention).

    Examples:
        >>> detect_up_axis(np.array([[0.0, 0, 0], [1, 0.2, 2]]))
        'z'
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        return "y"
    ext = p.max(0) - p.min(0)
    return "z" if ext[2] > ext[1] * 1.05 else "y"


def save_views_png(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray,
    *,
    legend: Sequence[tuple[str, Sequence[int]]] = (),
    up_axis: str = "y",
    title: str = "",
    views: Sequence[tuple[str, float]] = (("front", -90.0), ("side", 0.0), ("back", 90.0), ("3/4", -45.0)),
    max_points: int = 30000,
) -> Path:
    """Draw points from several azimuths with ``up_axis`` vertical; one PNG (written atomically).

    Args:
        path: the PNG to write.
        points: ``(N, 3)`` positions.
        colors: ``(N, 3)`` uint8 RGB.
        legend: ``(name, rgb)`` entries drawn beside the views.
        up_axis: ``"x"``, ``"y"`` or ``"z"``.
        title: a title over the views.
        views: ``(name, azimuth in degrees)`` per panel.
        max_points: draw at most this many points (an even subset).

    Returns:
        The path written.
    """
    import io

    from pa3d_models.deps import require
    from pa3d_models.files import atomic_write_bytes

    require("matplotlib", "save_views_png", extra="cli").use("Agg")
    plt = require("matplotlib.pyplot", "save_views_png", extra="cli")
    from matplotlib.patches import Patch

    if up_axis not in ("x", "y", "z"):
        raise ValueError(f"up_axis must be 'x', 'y' or 'z', got {up_axis!r}")
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(colors).reshape(-1, 3)
    if len(p) != len(c) or len(p) == 0:
        raise ValueError(f"points and colors must be non-empty with one row each, got {len(p)} and {len(c)}")
    if len(p) > max_points:
        keep = np.linspace(0, len(p) - 1, max_points).astype(np.int64)
        p, c = p[keep], c[keep]
    p = p - (p.min(0) + p.max(0)) / 2
    up = "xyz".index(up_axis)
    horiz = [i for i in range(3) if i != up]
    # matplotlib's 3D axes draw their z vertically: (a, b, up)
    q = np.stack([p[:, horiz[0]], p[:, horiz[1]], p[:, up]], axis=1)
    span = float(np.abs(q).max()) or 1.0
    fig = plt.figure(figsize=(3.0 * len(views) + (1.8 if legend else 0), 3.4))
    for i, (name, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], c=c / 255.0, s=1.5, linewidths=0, depthshade=False)
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_zlim(-span, span)
        ax.view_init(elev=15, azim=azim)
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
    if legend:
        handles = [Patch(color=np.asarray(rgb) / 255.0, label=str(n)) for n, rgb in legend]
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
