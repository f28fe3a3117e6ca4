"""One shape -> Stage-1 patch targets: render (mesh or splats), run the teacher, back-project, group.

The shape is fitted into the cameras' view (bounding-box centre, farthest point at ``fill`` of the view's
half-width) for rendering only: pixel maps refer to point indices, and the returned centres are in the
input's own coordinates.
"""

from __future__ import annotations

import torch
from torch import nn

from pa3d_layers import knn
from pa3d_layers._checks import check_points

from .backproject import PatchTargets, patch_targets, point_features
from .cameras import Cameras, find3d_cameras
from .render import fit_to_view, mesh_pix2point, pix2face_to_pix2point, render_mesh, render_points

__all__ = ["render_views", "compute_patch_targets", "splat_radius"]


def splat_radius(points: torch.Tensor, *, scale: float = 1.0) -> float:
    """A splat radius that closes the gaps of a surface sampling: ``scale`` x the mean nearest-neighbour distance.

    Examples:
        >>> splat_radius(torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.3, 0, 0]]))
        0.13333334028720856
    """
    check_points(points, "points", ragged=True)
    if points.shape[0] < 2:
        return 0.0
    _, dist = knn(points[None], points[None], 2, return_distances=True)
    return float(dist[0, :, 1].mean()) * scale


def render_views(
    points: torch.Tensor,
    cameras: Cameras,
    image_size: int = 224,
    *,
    vertices: torch.Tensor | None = None,
    faces: torch.Tensor | None = None,
    point2face: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    radius: float | None = None,
    fill: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and the pixel -> point map of a shape: a mesh render when ``vertices``/``faces`` are given
    (points are then samples of that surface), z-buffered splats of the points otherwise.

    Args:
        points: ``(N, 3)``.
        cameras: ``V`` cameras.
        image_size: ``S``.
        vertices: optional mesh ``(Nv, 3)``, same frame as ``points``.
        faces: optional mesh ``(F, 3)`` long.
        point2face: optional ``(N,)`` face of each point (helps mesh visibility).
        normals: optional ``(N, 3)`` point normals for shaded splats.
        radius: splat radius in the fitted frame (default: the mean nearest-neighbour spacing).
        fill: the shape's farthest point lands at ``fill * cameras.extent``.

    Returns:
        ``images (V, 3, S, S)`` in ``[0, 1]`` and ``pix2point (V, S, S)`` long (``-1`` background).

    Examples:
        >>> images, pix2point = render_views(torch.rand(200, 3), find3d_cameras(3), 32)
        >>> images.shape, pix2point.shape
        (torch.Size([3, 3, 32, 32]), torch.Size([3, 32, 32]))
    """
    check_points(points, "points", ragged=True)
    if (vertices is None) != (faces is None):
        raise ValueError("vertices and faces must be given together (a mesh) or not at all (splats)")
    shift, scale = fit_to_view(points, fill=fill * cameras.extent)
    fitted = (points - shift) * scale
    cameras = cameras.to(points.device, points.dtype)
    if radius is None:
        radius = max(splat_radius(fitted), cameras.extent / image_size)
    if vertices is None:
        out = render_points(fitted, cameras, image_size, radius=radius, normals=normals)
        return out.images, out.pix2point
    mesh = render_mesh((vertices.to(points) - shift) * scale, faces, cameras, image_size)
    pix2point = mesh_pix2point(mesh, fitted, cameras, radius=radius, point2face=point2face)
    return mesh.images, pix2point


@torch.no_grad()
def compute_patch_targets(
    points: torch.Tensor,
    teacher: nn.Module,
    *,
    cameras: Cameras | None = None,
    num_views: int = 10,
    image_size: int = 224,
    vertices: torch.Tensor | None = None,
    faces: torch.Tensor | None = None,
    point2face: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    pix2point: torch.Tensor | None = None,
    pix2face: torch.Tensor | None = None,
    radius: float | None = None,
    num_groups: int = 128,
    group_size: int = 32,
    k: int = 20,
) -> PatchTargets:
    """Stage-1 targets of one shape: patch centres and unit-norm mean teacher features per patch.

    Three input forms: a point cloud (splats), a mesh with points sampled on it (``vertices``, ``faces``), or
    given renders (``images`` with ``pix2point``, or Find3D's ``images`` + ``pix2face`` + ``point2face``).

    Args:
        points: ``(N, 3)``.
        teacher: a [Teacher][pa3d_models.teachers.Teacher] (the library's teachers move images to their device).
        cameras: the views (default: Find3D's ``num_views`` orthographic views).
        num_views: ``V`` when ``cameras`` is None.
        image_size: render side ``S``.
        vertices: optional mesh vertices ``(Nv, 3)``.
        faces: optional mesh faces ``(F, 3)``.
        point2face: ``(N,)`` face per point (mesh visibility, or the Find3D form).
        normals: optional ``(N, 3)`` for shaded splats.
        images: given renders ``(V, 3, H, W)``.
        pix2point: given pixel -> point map ``(V, H, W)``.
        pix2face: given pixel -> face map ``(V, H, W)`` (Find3D form, with ``point2face``).
        radius: splat radius (fitted frame).
        num_groups: ``G``.
        group_size: ``K``.
        k: neighbours of the unseen-point fill.

    Returns:
        [PatchTargets][pa3d_data.targets.PatchTargets] with centres in the input's coordinates.

    Raises:
        ValueError: when no view sees the shape.

    Examples:
        >>> from pa3d_models import TinyTeacher
        >>> out = compute_patch_targets(torch.rand(256, 3), TinyTeacher(8), num_views=2, image_size=32,
        ...                             num_groups=8, group_size=16)
        >>> out.centers.shape, out.targets.shape
        (torch.Size([8, 3]), torch.Size([8, 8]))
    """
    check_points(points, "points", ragged=True)
    if images is None:
        if pix2point is not None or pix2face is not None:
            raise ValueError("pix2point / pix2face need the images they were rendered with")
        cameras = find3d_cameras(num_views) if cameras is None else cameras
        images, pix2point = render_views(
            points, cameras, image_size, vertices=vertices, faces=faces, point2face=point2face,
            normals=normals, radius=radius,
        )
    elif pix2point is None:
        if pix2face is None or point2face is None:
            raise ValueError("given images need pix2point, or pix2face with point2face (the Find3D form)")
        pix2point = pix2face_to_pix2point(pix2face, point2face)
    features = teacher(images)
    feats, _ = point_features(features, pix2point, points, k=k)
    return patch_targets(points.to(feats.device), feats, num_groups=num_groups, group_size=group_size)
