"""Cameras and renderers: brute-force references on tiny inputs, occlusion, determinism, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data.targets import (
    Cameras,
    find3d_cameras,
    fit_to_view,
    mesh_pix2point,
    orbit_cameras,
    pix2face_to_pix2point,
    rasterize_mesh,
    render_mesh,
    render_points,
)

seeds = st.integers(0, 2**31 - 1)


def front_camera(extent: float = 1.0, dtype=torch.float64) -> Cameras:
    """One camera on +z looking at the origin: view x = world x, view y = world y, depth = 3 - z."""
    return orbit_cameras([0.0], [0.0], extent=extent, dtype=dtype)


# ----------------------------------------------------------------------------------------------- cameras
def test_find3d_cameras_defaults():
    cams = find3d_cameras(dtype=torch.float64)
    assert len(cams) == 10
    assert torch.allclose(cams.eye.norm(dim=-1), torch.full((10,), 3.0, dtype=torch.float64))
    elevation = torch.rad2deg(torch.asin(cams.eye[:, 1] / 3))
    assert torch.allclose(elevation, torch.tensor([30.0, -20.0] * 5, dtype=torch.float64), atol=1e-9)
    azimuth = torch.rad2deg(torch.atan2(cams.eye[:, 0], cams.eye[:, 2]))
    expected = torch.tensor([-180.0 + 36 * i for i in range(10)], dtype=torch.float64)
    assert torch.allclose(torch.remainder(azimuth - expected + 180, 360) - 180, torch.zeros(10, dtype=torch.float64),
                          atol=1e-9)
    # Orthonormal frames looking at the origin; (x right, y up, depth forward) is a left-handed frame.
    eye3 = torch.eye(3, dtype=torch.float64).expand(10, 3, 3)
    assert torch.allclose(cams.rotation @ cams.rotation.transpose(1, 2), eye3, atol=1e-12)
    assert torch.allclose(torch.linalg.det(cams.rotation), -torch.ones(10, dtype=torch.float64))
    assert torch.allclose(cams.forward, -cams.eye / 3, atol=1e-12)


def test_straight_down_view_is_well_defined():
    cams = orbit_cameras([90.0, -90.0], [0.0, 0.0], dtype=torch.float64)
    assert torch.isfinite(cams.rotation).all()
    eye3 = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    assert torch.allclose(cams.rotation @ cams.rotation.transpose(1, 2), eye3)


def test_front_camera_maps_world_axes_to_image_axes():
    cams = front_camera()
    view = cams.world_to_view(torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.float64))
    assert torch.allclose(view, torch.tensor([[[0.5, 0.25, 2.0]]], dtype=torch.float64))
    pix = cams.view_to_pixel(view[..., :2], 8)  # x right -> columns grow, y up -> rows shrink
    assert torch.allclose(pix, torch.tensor([[[6.0, 3.0]]], dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: orbit_cameras([0.0], [0.0, 1.0]), "elevations and azimuths must be non-empty and of equal length"),
        (lambda: orbit_cameras([0.0], [0.0], distance=0.0), "distance must be > 0"),
        (lambda: find3d_cameras(0), r"num_views must be an int >= 1, got 0"),
        (lambda: Cameras(torch.zeros(2, 3), torch.zeros(3, 3, 3)), r"rotation must be \(V, 3, 3\) with V=2"),
    ],
)
def test_camera_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------------------------------------ splats
def brute_force_splats(points: torch.Tensor, cams: Cameras, size: int, radius: float):
    """Per pixel, loop over points: covered if the centre is within radius (or holds the projection)."""
    view = cams.world_to_view(points)
    pix = cams.view_to_pixel(view[..., :2], size)
    r_pix = radius * size / (2 * cams.extent)
    out = torch.full((len(cams), size, size), -1, dtype=torch.long)
    for v in range(len(cams)):
        for row in range(size):
            for col in range(size):
                best = (math.inf, -1)
                for p in range(points.shape[0]):
                    x, y = float(pix[v, p, 0]), float(pix[v, p, 1])
                    covered = (col + 0.5 - x) ** 2 + (row + 0.5 - y) ** 2 <= r_pix**2
                    covered |= math.floor(x) == col and math.floor(y) == row
                    if covered and (float(view[v, p, 2]), p) < best:
                        best = (float(view[v, p, 2]), p)
                out[v, row, col] = best[1]
    return out


@given(seed=seeds, num_points=st.integers(1, 12), radius=st.sampled_from([0.0, 0.1, 0.3]))
def test_splats_match_brute_force(seed, num_points, radius):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(num_points, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8
    cams = find3d_cameras(2, dtype=torch.float64)
    out = render_points(points, cams, 10, radius=radius)
    assert torch.equal(out.pix2point, brute_force_splats(points, cams, 10, radius))
    # Every drawn pixel shows the nearest point along its ray: its depth is the front depth.
    view = cams.world_to_view(points)
    drawn = out.pix2point >= 0
    v = torch.arange(2)[:, None, None].expand_as(out.pix2point)
    assert torch.equal(out.depth[drawn], view[v[drawn], out.pix2point[drawn], 2])
    assert torch.isinf(out.depth[~drawn]).all()


def test_point_behind_another_is_not_visible():
    # Same (x, y), the second point farther from the camera on +z.
    points = torch.tensor([[0.1, 0.1, 0.5], [0.1, 0.1, -0.5]], dtype=torch.float64)
    out = render_points(points, front_camera(), 16, radius=0.2)
    assert (out.pix2point == 0).any()
    assert not (out.pix2point == 1).any()
    # Seen from behind, the order flips.
    back = orbit_cameras([0.0], [180.0], dtype=torch.float64)
    out = render_points(points, back, 16, radius=0.2)
    assert (out.pix2point == 1).any() and not (out.pix2point == 0).any()


def test_splat_rendering_is_deterministic_and_shaded():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(300, 3, generator=g) - 0.5
    normals = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1)
    cams = find3d_cameras(3)
    a = render_points(points, cams, 32, radius=0.05, normals=normals)
    b = render_points(points, cams, 32, radius=0.05, normals=normals)
    assert torch.equal(a.pix2point, b.pix2point) and torch.equal(a.images, b.images)
    assert a.images.shape == (3, 3, 32, 32) and a.images.dtype == torch.float32
    assert (a.images >= 0).all() and (a.images <= 1).all()
    background = a.pix2point < 0
    assert (a.images.permute(0, 2, 3, 1)[background] == 1).all()  # white background
    assert (a.images.permute(0, 2, 3, 1)[~background] < 1).all()


def test_visible_mask_hides_points_per_view():
    points = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]], dtype=torch.float64)
    cams = orbit_cameras([0.0, 0.0], [0.0, 0.0], dtype=torch.float64)
    visible = torch.tensor([[True, True], [False, True]])
    out = render_points(points, cams, 8, radius=0.1, visible=visible)
    assert (out.pix2point[0] == 0).any() and not (out.pix2point[0] == 1).any()
    assert (out.pix2point[1] == 1).any() and not (out.pix2point[1] == 0).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": torch.zeros(3, 2)}, r"points must be \(P, 3\) float, got shape \(3, 2\)"),
        ({"radius": -1.0}, "radius must be >= 0"),
        ({"image_size": 0}, "image_size must be an int >= 1"),
        ({"visible": torch.ones(2, 4, dtype=torch.bool)}, r"visible must be \(V, N\) = \(1, 4\) bool"),
        ({"normals": torch.zeros(3, 3)}, r"normals must be \(N, 3\) like points"),
    ],
)
def test_render_points_bad_input(kwargs, message):
    call = {"points": torch.zeros(4, 3), "cameras": front_camera(dtype=torch.float32), "image_size": 8,
            "radius": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        render_points(**call)


# -------------------------------------------------------------------------------------------------- mesh
def brute_force_raster(vertices, faces, cams, size):
    """Per pixel, loop over faces in plain Python floats: barycentric inside test, nearest depth wins."""
    view = cams.world_to_view(vertices)
    pix = cams.view_to_pixel(view[..., :2], size).tolist()
    z = view[..., 2].tolist()
    pix2face = torch.full((len(cams), size, size), -1, dtype=torch.long)
    depth = torch.full((len(cams), size, size), math.inf, dtype=vertices.dtype)
    for v in range(len(cams)):
        for row in range(size):
            for col in range(size):
                px, py = col + 0.5, row + 0.5
                best = (math.inf, -1)
                for f, (i, j, k) in enumerate(faces.tolist()):
                    (ax, ay), (bx, by), (cx, cy) = pix[v][i], pix[v][j], pix[v][k]
                    det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
                    if abs(det) < 1e-12:
                        continue
                    l1 = ((px - ax) * (cy - ay) - (py - ay) * (cx - ax)) / det
                    l2 = ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / det
                    bary = (1 - l1 - l2, l1, l2)
                    if min(bary) < -1e-6:
                        continue
                    depth_here = bary[0] * z[v][i] + bary[1] * z[v][j] + bary[2] * z[v][k]
                    best = min(best, (depth_here, f))
                pix2face[v, row, col], depth[v, row, col] = best[1], best[0]
    return pix2face, depth


@given(seed=seeds, num_faces=st.integers(1, 5))
def test_rasterizer_matches_brute_force(seed, num_faces):
    g = torch.Generator().manual_seed(seed)
    vertices = torch.rand(3 * num_faces, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9
    faces = torch.arange(3 * num_faces).view(num_faces, 3)
    cams = find3d_cameras(2, dtype=torch.float64)
    pix2face, depth = rasterize_mesh(vertices, faces, cams, 9)
    ref_face, ref_depth = brute_force_raster(vertices, faces, cams, 9)
    assert torch.equal(pix2face, ref_face)
    drawn = pix2face >= 0
    assert torch.allclose(depth[drawn], ref_depth[drawn])
    assert torch.isinf(depth[~drawn]).all()


def test_rasterizer_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(1)
    vertices = torch.rand(60, 3, generator=g) * 1.6 - 0.8
    faces = torch.randint(0, 60, (40, 3), generator=g)
    cams = find3d_cameras(3)
    whole = rasterize_mesh(vertices, faces, cams, 24)
    chunked = rasterize_mesh(vertices, faces, cams, 24, max_candidates=50)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def quad(z: float, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], dtype=torch.float64)
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_front_quad_hides_the_back_quad():
    front_v, front_f = quad(0.3, 0.4)
    back_v, back_f = quad(-0.3, 0.8)
    vertices = torch.cat([back_v, front_v])  # back faces 0, 1; front faces 2, 3
    faces = torch.cat([back_f, front_f + 4])
    out = render_mesh(vertices, faces, front_camera(), 20)
    centre = out.pix2face[0, 8:12, 8:12]
    assert (centre >= 2).all()  # the front quad covers the middle
    assert ((out.pix2face[0] == 0) | (out.pix2face[0] == 1)).any()  # the larger back quad shows around it
    assert torch.allclose(out.depth[0, 10, 10], torch.tensor(2.7, dtype=torch.float64))
    # Lambertian, two-sided, headlight: both quads face the camera, so they have the same grey.
    lit = out.images[0, :, out.pix2face[0] >= 0]
    assert torch.allclose(lit, lit[:, :1].expand_as(lit))
    assert torch.equal(render_mesh(vertices, faces, front_camera(), 20).images, out.images)


def test_mesh_pix2point_sees_only_the_front_side_of_a_closed_mesh():
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    vertices = torch.tensor(box.vertices, dtype=torch.float64)
    faces = torch.tensor(box.faces)
    g = torch.Generator().manual_seed(0)
    # Points on the +z (front) and -z (back) sides.
    xy = torch.rand(200, 2, generator=g, dtype=torch.float64) - 0.5
    points = torch.cat([torch.cat([xy, torch.full((200, 1), 0.5, dtype=torch.float64)], 1),
                        torch.cat([xy, torch.full((200, 1), -0.5, dtype=torch.float64)], 1)])
    cams = front_camera()
    render = render_mesh(vertices, faces, cams, 32)
    pix2point = mesh_pix2point(render, points, cams, radius=0.05)
    shown = pix2point[pix2point >= 0]
    assert shown.numel() > 0 and (shown < 200).all()
    assert ((pix2point >= 0) <= (render.pix2face >= 0)).all()  # only on the silhouette


def test_pix2face_to_pix2point_is_find3ds_lowest_index_rule():
    point2face = torch.tensor([2, 0, 2, 1, 0])
    pix2face = torch.tensor([[[-1, 0], [1, 2]], [[2, 3], [-1, -1]]])
    out = pix2face_to_pix2point(pix2face, point2face, num_faces=4)
    assert out.tolist() == [[[-1, 1], [3, 0]], [[0, -1], [-1, -1]]]  # face 3 has no point


def test_fit_to_view():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(50, 3, generator=g) * 10 + 3
    shift, scale = fit_to_view(points, fill=0.9)
    fitted = (points - shift) * scale
    assert torch.isclose(fitted.norm(dim=-1).max(), torch.tensor(0.9))


def test_mesh_bad_input():
    with pytest.raises(ValueError, match=r"faces must index vertices in \[0, 3\)"):
        rasterize_mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]), front_camera(dtype=torch.float32), 4)
    with pytest.raises(ValueError, match=r"faces must be \(F, 3\) long"):
        rasterize_mesh(torch.zeros(3, 3), torch.tensor([[0.0, 1.0, 2.0]]), front_camera(dtype=torch.float32), 4)
