"""Multi-view rendering in plain PyTorch: a z-buffered mesh rasteriser and a z-buffered point splatter.

Both are vectorised over views and primitives (no Python loop over pixels or faces) and deterministic: the
z-buffer keeps, per pixel, the smallest depth, and among equal depths the smallest primitive index.
Everything follows the device and dtype of the geometry.

Pixel ``(row, col)`` of a ``S x S`` image is covered by a primitive when its centre ``(col + 0.5, row + 0.5)``
is inside the projected triangle (mesh) or within ``radius`` of the projected point (splats; the pixel that
holds the projection is always covered, so a point never vanishes between pixels).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pa3d_layers._checks import check_points, check_positive_int, check_rank

from .cameras import Cameras

__all__ = [
    "MeshRender",
    "PointRender",
    "rasterize_mesh",
    "render_mesh",
    "render_points",
    "mesh_pix2point",
    "pix2face_to_pix2point",
    "fit_to_view",
]

_BACKGROUND = 1.0  # white, as PyTorch3D's default blend background


class MeshRender(NamedTuple):
    """Output of [render_mesh][pa3d_data.targets.render_mesh].

    Attributes:
        images: shaded RGB in ``[0, 1]``, white background, ``(V, 3, S, S)``.
        pix2face: index of the front face per pixel, ``-1`` for background, ``(V, S, S)`` long.
        depth: view depth of the front surface, ``+inf`` for background, ``(V, S, S)``.
    """

    images: torch.Tensor
    pix2face: torch.Tensor
    depth: torch.Tensor


class PointRender(NamedTuple):
    """Output of [render_points][pa3d_data.targets.render_points].

    Attributes:
        images: shaded RGB in ``[0, 1]``, white background, ``(V, 3, S, S)``.
        pix2point: index of the front point per pixel, ``-1`` for background, ``(V, S, S)`` long.
        depth: view depth of the front point, ``+inf`` for background, ``(V, S, S)``.
    """

    images: torch.Tensor
    pix2point: torch.Tensor
    depth: torch.Tensor


def _zbuffer(
    pixel: torch.Tensor, depth: torch.Tensor, ids: torch.Tensor, num_pixels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the smallest depth and, among candidates at that depth, the smallest id (-1 if none)."""
    zbuf = torch.full((num_pixels,), math.inf, dtype=depth.dtype, device=depth.device)
    zbuf = zbuf.scatter_reduce(0, pixel, depth, reduce="amin", include_self=True)
    front = depth <= zbuf[pixel]
    sentinel = torch.iinfo(torch.long).max
    idbuf = torch.full((num_pixels,), sentinel, dtype=torch.long, device=depth.device)
    idbuf = idbuf.scatter_reduce(0, pixel[front], ids[front], reduce="amin", include_self=True)
    return idbuf.masked_fill(idbuf == sentinel, -1), zbuf


def _check_faces(faces: object, num_vertices: int) -> torch.Tensor:
    check_rank(faces, "faces", 2, "(F, 3) long")
    assert isinstance(faces, torch.Tensor)
    if faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces must be (F, 3) long, got shape {tuple(faces.shape)} dtype {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ValueError(f"faces must index vertices in [0, {num_vertices}), got values outside")
    return faces.long()


def rasterize_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    image_size: int,
    *,
    max_candidates: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer rasterisation of a triangle mesh: front face index and depth per pixel.

    Each face is tested at the pixel centres of its bounding box (edge functions, either winding); the faces
    are processed in chunks of at most ``max_candidates`` (face, pixel) pairs to bound memory.

    Args:
        vertices: ``(Nv, 3)`` float.
        faces: ``(F, 3)`` long vertex indices.
        cameras: ``V`` cameras.
        image_size: ``S``, the side of the square images.
        max_candidates: memory bound of one chunk.

    Returns:
        ``pix2face (V, S, S)`` long (``-1`` background) and ``depth (V, S, S)`` (``+inf`` background).

    Examples:
        >>> from pa3d_data.targets import find3d_cameras
        >>> verts = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
        >>> pix2face, depth = rasterize_mesh(verts, torch.tensor([[0, 1, 2]]), find3d_cameras(2), 8)
        >>> pix2face.shape, bool((pix2face == 0).any())
        (torch.Size([2, 8, 8]), True)
    """
    check_points(vertices, "vertices", ragged=True)
    faces = _check_faces(faces, vertices.shape[0])
    size = check_positive_int(image_size, "image_size")
    num_views = len(cameras)
    view = cameras.world_to_view(vertices)  # (V, Nv, 3)
    pix = cameras.view_to_pixel(view[..., :2], size)  # (V, Nv, 2) as (col, row)
    tri = pix[:, faces].reshape(-1, 3, 2)  # (V*F, 3, 2)
    tri_z = view[..., 2][:, faces].reshape(-1, 3)  # (V*F, 3)
    num_faces = faces.shape[0]

    # Pixel centres c + 0.5 inside [min, max]  <=>  c in [ceil(min - 0.5), floor(max - 0.5)].
    lo = torch.ceil(tri.amin(dim=1) - 0.5).clamp(0, size - 1).long()
    hi = torch.floor(tri.amax(dim=1) - 0.5).clamp(-1, size - 1).long()
    in_view = (tri.amax(dim=1) - 0.5 >= 0).all(-1) & (tri.amin(dim=1) - 0.5 <= size - 1).all(-1)
    span = (hi - lo + 1).clamp(min=0) * in_view[:, None]
    counts = span[:, 0] * span[:, 1]

    pixels, depths, ids = [], [], []
    tri_ids = torch.nonzero(counts > 0).squeeze(1)
    ends = torch.cumsum(counts[tri_ids], 0)
    start = 0
    while start < tri_ids.numel():
        # Largest chunk of triangles whose (face, pixel) pairs fit the bound (at least one triangle).
        base = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, base + max_candidates, right=True)), start + 1)
        chunk = tri_ids[start:stop]
        start = stop
        cnt = counts[chunk]
        owner = torch.repeat_interleave(torch.arange(chunk.numel(), device=cnt.device), cnt)
        offset = torch.arange(owner.numel(), device=cnt.device) - (torch.cumsum(cnt, 0) - cnt)[owner]
        t = chunk[owner]
        width = span[t, 0]
        col = lo[t, 0] + offset % width
        row = lo[t, 1] + torch.div(offset, width, rounding_mode="floor")
        px = col.to(tri.dtype) + 0.5
        py = row.to(tri.dtype) + 0.5
        a, b, c = tri[t, 0], tri[t, 1], tri[t, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        w0 = (c[:, 0] - b[:, 0]) * (py - b[:, 1]) - (c[:, 1] - b[:, 1]) * (px - b[:, 0])
        w1 = (a[:, 0] - c[:, 0]) * (py - c[:, 1]) - (a[:, 1] - c[:, 1]) * (px - c[:, 0])
        w2 = (b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px - a[:, 0])
        safe = torch.where(area == 0, torch.ones_like(area), area)
        bary = torch.stack([w0, w1, w2], dim=-1) / safe[:, None]
        inside = (area.abs() > 1e-12) & (bary >= -1e-6).all(dim=-1)
        t, row, col, bary = t[inside], row[inside], col[inside], bary[inside]
        v = torch.div(t, num_faces, rounding_mode="floor")
        pixels.append((v * size + row) * size + col)
        depths.append((bary * tri_z[t]).sum(-1))
        ids.append(t - v * num_faces)

    num_pixels = num_views * size * size
    if pixels:
        pix2face, zbuf = _zbuffer(torch.cat(pixels), torch.cat(depths), torch.cat(ids), num_pixels)
    else:
        pix2face = torch.full((num_pixels,), -1, dtype=torch.long, device=vertices.device)
        zbuf = torch.full((num_pixels,), math.inf, dtype=vertices.dtype, device=vertices.device)
    return pix2face.view(num_views, size, size), zbuf.view(num_views, size, size)


def _shade(
    normals: torch.Tensor, cameras: Cameras, albedo: torch.Tensor, ambient: float, diffuse: float
) -> torch.Tensor:
    """Two-sided Lambertian shading with a headlight: ``albedo * (ambient + diffuse * |n . forward|)``."""
    cos = torch.einsum("v...c,vc->v...", normals, cameras.forward.to(normals)).abs()
    return albedo * (ambient + diffuse * cos)[..., None]


def _compose(index: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Images ``(V, 3, S, S)`` from per-pixel colours ``(V, S, S, 3)`` on a white background."""
    rgb = torch.where(index[..., None] >= 0, rgb, torch.full_like(rgb, _BACKGROUND))
    return rgb.permute(0, 3, 1, 2).contiguous()


def render_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    image_size: int = 224,
    *,
    albedo: float = 0.75,
    ambient: float = 0.35,
    diffuse: float = 0.65,
) -> MeshRender:
    """Render a triangle mesh from ``V`` views: Lambertian-shaded images and the per-pixel face index.

    Shading is two-sided with a light at the camera (meshes in the wild have inconsistent winding).

    Args:
        vertices: ``(Nv, 3)`` float.
        faces: ``(F, 3)`` long.
        cameras: ``V`` cameras.
        image_size: ``S``.
        albedo: grey level of the surface.
        ambient: ambient light weight.
        diffuse: diffuse light weight.

    Returns:
        A [MeshRender][pa3d_data.targets.MeshRender].

    Examples:
        >>> from pa3d_data.targets import find3d_cameras
        >>> verts = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
        >>> out = render_mesh(verts, torch.tensor([[0, 1, 2]]), find3d_cameras(4), 16)
        >>> out.images.shape, out.pix2face.shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4, 16, 16]))
    """
    pix2face, depth = rasterize_mesh(vertices, faces, cameras, image_size)
    faces = faces.long()
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_normals = F.normalize(torch.linalg.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)
    normals = face_normals[pix2face.clamp(min=0)]  # (V, S, S, 3)
    rgb = _shade(normals, cameras, vertices.new_full((3,), albedo), ambient, diffuse)
    return MeshRender(_compose(pix2face, rgb), pix2face, depth)


def render_points(
    points: torch.Tensor,
    cameras: Cameras,
    image_size: int = 224,
    *,
    radius: float,
    normals: torch.Tensor | None = None,
    colors: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
    ambient: float = 0.35,
    diffuse: float = 0.65,
) -> PointRender:
    """Render a point cloud as z-buffered disks: images and the per-pixel index of the front point.

    Each point covers the pixels whose centre lies within ``radius`` (world units) of its projection, plus the
    pixel holding the projection. Colour: Lambertian shading when ``normals`` are given, else ``colors``, else
    a depth cue (nearer is brighter).

    Args:
        points: ``(N, 3)`` float.
        cameras: ``V`` cameras.
        image_size: ``S``.
        radius: splat radius in world units.
        normals: optional ``(N, 3)`` point normals.
        colors: optional ``(N, 3)`` RGB in ``[0, 1]``.
        visible: optional ``(V, N)`` bool; points marked ``False`` are not drawn in that view.
        ambient: ambient light weight (with ``normals``).
        diffuse: diffuse light weight (with ``normals``).

    Returns:
        A [PointRender][pa3d_data.targets.PointRender].

    Examples:
        >>> from pa3d_data.targets import find3d_cameras
        >>> out = render_points(torch.rand(100, 3) - 0.5, find3d_cameras(2), 32, radius=0.05)
        >>> out.pix2point.shape, int(out.pix2point.max()) < 100
        (torch.Size([2, 32, 32]), True)
    """
    check_points(points, "points", ragged=True)
    size = check_positive_int(image_size, "image_size")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    num_views, num_points = len(cameras), points.shape[0]
    if visible is not None and (visible.shape != (num_views, num_points) or visible.dtype != torch.bool):
        raise ValueError(
            f"visible must be (V, N) = ({num_views}, {num_points}) bool, got {tuple(visible.shape)} {visible.dtype}"
        )
    view = cameras.world_to_view(points)  # (V, N, 3)
    pix = cameras.view_to_pixel(view[..., :2], size)  # (V, N, 2)
    r_pix = radius * size / (2.0 * cameras.extent)
    reach = int(math.ceil(r_pix))
    steps = torch.arange(-reach, reach + 1, device=points.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    dx, dy = dx.reshape(-1), dy.reshape(-1)  # (O,)

    base = torch.floor(pix).long()  # (V, N, 2) pixel holding the projection
    col = base[..., 0:1] + dx  # (V, N, O)
    row = base[..., 1:2] + dy
    dist2 = (col.to(pix.dtype) + 0.5 - pix[..., 0:1]) ** 2 + (row.to(pix.dtype) + 0.5 - pix[..., 1:2]) ** 2
    keep = (dist2 <= r_pix * r_pix) | ((dx == 0) & (dy == 0))
    keep &= (col >= 0) & (col < size) & (row >= 0) & (row < size)
    if visible is not None:
        keep &= visible[..., None]
    v_idx = torch.arange(num_views, device=points.device)[:, None, None].expand_as(keep)
    p_idx = torch.arange(num_points, device=points.device)[None, :, None].expand_as(keep)
    pixel = (v_idx[keep] * size + row[keep]) * size + col[keep]
    depth = view[..., 2][:, :, None].expand_as(keep)[keep]
    pix2point, zbuf = _zbuffer(pixel, depth, p_idx[keep], num_views * size * size)
    pix2point = pix2point.view(num_views, size, size)
    zbuf = zbuf.view(num_views, size, size)

    front = pix2point.clamp(min=0)
    if normals is not None:
        check_rank(normals, "normals", 2, "(N, 3)")
        if normals.shape != points.shape:
            raise ValueError(f"normals must be (N, 3) like points, got {tuple(normals.shape)}")
        rgb = _shade(F.normalize(normals, dim=-1)[front], cameras, points.new_full((3,), 0.75), ambient, diffuse)
    elif colors is not None:
        if colors.shape != points.shape:
            raise ValueError(f"colors must be (N, 3) like points, got {tuple(colors.shape)}")
        rgb = colors.to(points)[front]
    else:
        finite = torch.isfinite(zbuf)
        near = torch.where(finite, zbuf, torch.full_like(zbuf, math.inf)).flatten(1).amin(1)
        far = torch.where(finite, zbuf, torch.full_like(zbuf, -math.inf)).flatten(1).amax(1)
        rel = (zbuf - near[:, None, None]) / (far - near).clamp(min=1e-12)[:, None, None]
        rgb = (0.9 - 0.6 * rel.nan_to_num(0.0).clamp(0, 1))[..., None].expand(-1, -1, -1, 3)
    return PointRender(_compose(pix2point, rgb), pix2point, zbuf)


def mesh_pix2point(
    render: MeshRender,
    points: torch.Tensor,
    cameras: Cameras,
    *,
    radius: float,
    point2face: torch.Tensor | None = None,
    depth_tolerance: float = 2.0,
) -> torch.Tensor:
    """Pixel -> point map of a mesh render, for points sampled on that mesh.

    A point is visible in a view when it is not behind the rendered surface at its pixel (depth within
    ``depth_tolerance`` pixel widths of the z-buffer) or, with ``point2face``, when its face is the front face
    there. Visible points are splatted (``radius``, z-buffered) and the map is cut to the mesh's silhouette.

    Args:
        render: the mesh render, from the same ``cameras``.
        points: ``(N, 3)`` points on the mesh surface.
        cameras: the ``V`` cameras of ``render``.
        radius: splat radius in world units.
        point2face: optional ``(N,)`` face of each point.
        depth_tolerance: visibility slack, in pixel widths.

    Returns:
        ``pix2point (V, S, S)`` long, ``-1`` where no point is visible.
    """
    check_points(points, "points", ragged=True)
    num_views, size = render.pix2face.shape[0], render.pix2face.shape[-1]
    if len(cameras) != num_views:
        raise ValueError(f"cameras must have the render's {num_views} views, got {len(cameras)}")
    view = cameras.world_to_view(points)
    pix = torch.floor(cameras.view_to_pixel(view[..., :2], size)).long()  # (V, N, 2)
    inside = ((pix >= 0) & (pix < size)).all(-1)
    col, row = pix[..., 0].clamp(0, size - 1), pix[..., 1].clamp(0, size - 1)
    v_idx = torch.arange(num_views, device=points.device)[:, None]
    surface = render.depth[v_idx, row, col].to(view.dtype)
    slack = depth_tolerance * 2.0 * cameras.extent / size
    visible = inside & (view[..., 2] <= surface + slack)
    if point2face is not None:
        if point2face.shape != (points.shape[0],):
            raise ValueError(f"point2face must be (N,) = ({points.shape[0]},), got {tuple(point2face.shape)}")
        visible |= inside & (render.pix2face[v_idx, row, col] == point2face.to(render.pix2face)[None])
    splat = render_points(points, cameras, size, radius=radius, visible=visible)
    return splat.pix2point.masked_fill(render.pix2face < 0, -1)


def pix2face_to_pix2point(
    pix2face: torch.Tensor, point2face: torch.Tensor, num_faces: int | None = None
) -> torch.Tensor:
    """Find3D's pixel -> point map: each face stands for its lowest-index point (``-1`` for faces with none).

    Args:
        pix2face: ``(V, S, S)`` long, ``-1`` for background.
        point2face: ``(N,)`` long, face of each point.
        num_faces: number of faces (default: enough for both inputs).

    Returns:
        ``pix2point (V, S, S)`` long.

    Examples:
        >>> pix2face_to_pix2point(torch.tensor([[[0, 1], [-1, 2]]]), torch.tensor([1, 0, 1]))
        tensor([[[ 1,  0],
                 [-1, -1]]])
    """
    check_rank(pix2face, "pix2face", 3, "(V, S, S) long")
    check_rank(point2face, "point2face", 1, "(N,) long")
    point2face = point2face.to(pix2face.device).long()
    needed = max(
        int(pix2face.max()) + 1 if pix2face.numel() else 0,
        int(point2face.max()) + 1 if len(point2face) else 0,
    )
    num_faces = needed if num_faces is None else max(num_faces, needed)
    sentinel = torch.iinfo(torch.long).max
    first = torch.full((num_faces,), sentinel, dtype=torch.long, device=pix2face.device)
    first = first.scatter_reduce(0, point2face, torch.arange(point2face.numel(), device=pix2face.device), "amin")
    first = first.masked_fill(first == sentinel, -1)
    return torch.where(pix2face >= 0, first[pix2face.clamp(min=0)], torch.full_like(pix2face, -1))


def fit_to_view(points: torch.Tensor, *, fill: float = 0.9) -> tuple[torch.Tensor, float]:
    """Centre (bounding-box centre) and scale so the farthest point is at ``fill``; returns ``(shift, scale)``.

    Apply as ``(x - shift) * scale`` to points and mesh vertices alike.

    Examples:
        >>> shift, scale = fit_to_view(torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), fill=1.0)
        >>> shift.tolist(), scale
        ([1.0, 0.0, 0.0], 1.0)
    """
    check_points(points, "points", ragged=True)
    shift = (points.amin(0) + points.amax(0)) / 2
    norm = float((points - shift).norm(dim=-1).max())
    return shift, fill / norm if norm > 0 else 1.0
