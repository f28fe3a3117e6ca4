"""Orthographic cameras on a sphere around the origin, as in Find3D's renders.

A camera is described by its position ``eye`` and an orthonormal frame: ``right`` (image x, columns grow
with it), ``up`` (image y, rows grow against it) and ``forward`` (the viewing direction, depth grows with it).
Projection is orthographic: a world point ``p`` lands at ``((p - eye)·right, (p - eye)·up)`` in view units,
and the image spans ``[-extent, extent]`` on both axes (PyTorch3D's ``FoVOrthographicCameras`` default is
``extent=1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pa3d_layers._checks import check_positive_int

__all__ = ["Cameras", "orbit_cameras", "find3d_cameras", "look_at"]


@dataclass(frozen=True)
class Cameras:
    """A batch of ``V`` orthographic cameras.

    Attributes:
        eye: camera positions ``(V, 3)``.
        rotation: orthonormal world-to-view matrices ``(V, 3, 3)``; rows ``right``, ``up``, ``forward`` (x right,
            y up, depth forward: a left-handed frame, determinant -1).
        extent: half-width of the square view in world units.
    """

    eye: torch.Tensor
    rotation: torch.Tensor
    extent: float = 1.0

    def __post_init__(self) -> None:
        if self.eye.dim() != 2 or self.eye.shape[-1] != 3:
            raise ValueError(f"eye must be (V, 3), got shape {tuple(self.eye.shape)}")
        if self.rotation.shape != (self.eye.shape[0], 3, 3):
            raise ValueError(f"rotation must be (V, 3, 3) with V={self.eye.shape[0]}, got {tuple(self.rotation.shape)}")
        if not self.extent > 0:
            raise ValueError(f"extent must be > 0, got {self.extent}")

    def __len__(self) -> int:
        return self.eye.shape[0]

    @property
    def forward(self) -> torch.Tensor:
        """Viewing directions ``(V, 3)``."""
        return self.rotation[:, 2]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        """The same cameras on another device / dtype."""
        return Cameras(self.eye.to(device, dtype), self.rotation.to(device, dtype), self.extent)

    def world_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """View coordinates ``(V, N, 3)`` of world points ``(N, 3)``: ``(x right, y up, depth)``."""
        rotation = self.rotation.to(points)
        return torch.einsum("vij,vnj->vni", rotation, points[None] - self.eye.to(points)[:, None])

    def view_to_pixel(self, xy: torch.Tensor, image_size: int) -> torch.Tensor:
        """Continuous pixel coordinates ``(..., 2)`` as ``(column, row)`` of view-plane points ``(..., 2)``.

        Pixel ``(c, r)`` covers ``[c, c + 1) x [r, r + 1)``; its centre is at ``(c + 0.5, r + 0.5)``.
        """
        scale = image_size / (2.0 * self.extent)
        col = (xy[..., 0] + self.extent) * scale
        row = (self.extent - xy[..., 1]) * scale
        return torch.stack([col, row], dim=-1)


def look_at(eye: torch.Tensor, at: torch.Tensor | None = None, up: Sequence[float] = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """World-to-view rotations ``(V, 3, 3)`` (rows ``right``, ``up``, ``forward``) for cameras at ``eye``.

    Where ``forward`` is parallel to ``up`` another up vector is used, so straight-down views work.

    Args:
        eye: camera positions ``(V, 3)``.
        at: the point looked at, ``(3,)`` (default the origin).
        up: world up direction.
    """
    at = torch.zeros(3, dtype=eye.dtype, device=eye.device) if at is None else at.to(eye)
    forward = torch.nn.functional.normalize(at - eye, dim=-1)
    up_t = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    degenerate = right.norm(dim=-1) < 1e-6
    if bool(degenerate.any()):
        alt = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(forward)
        right = torch.where(degenerate[:, None], torch.linalg.cross(forward, alt, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    return torch.stack([right, true_up, forward], dim=1)


def orbit_cameras(
    elevations: Sequence[float],
    azimuths: Sequence[float],
    *,
    distance: float = 3.0,
    extent: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Cameras:
    """Cameras on a sphere of radius ``distance`` looking at the origin, Y up.

    Angles are in degrees, with PyTorch3D's convention: ``eye = d (cos e sin a, sin e, cos e cos a)``.

    Args:
        elevations: one elevation per view.
        azimuths: one azimuth per view.
        distance: sphere radius (orthographic, so it only orders depth).
        extent: half-width of the square view in world units.
        device: device of the camera tensors.
        dtype: dtype of the camera tensors.

    Examples:
        >>> cams = orbit_cameras([0.0, 90.0], [0.0, 0.0])
        >>> (cams.forward.round(decimals=4) + 0.0).tolist()  # along -z, then straight down
        [[0.0, 0.0, -1.0], [0.0, -1.0, 0.0]]
    """
    if len(elevations) != len(azimuths) or len(elevations) == 0:
        raise ValueError(
            f"elevations and azimuths must be non-empty and of equal length, got {len(elevations)} and {len(azimuths)}"
        )
    if not distance > 0:
        raise ValueError(f"distance must be > 0, got {distance}")
    elev = torch.tensor([math.radians(e) for e in elevations], dtype=torch.float64)
    azim = torch.tensor([math.radians(a) for a in azimuths], dtype=torch.float64)
    eye = distance * torch.stack(
        [torch.cos(elev) * torch.sin(azim), torch.sin(elev), torch.cos(elev) * torch.cos(azim)], dim=-1
    )
    rotation = look_at(eye)
    return Cameras(eye.to(device, dtype), rotation.to(device, dtype), float(extent))


def find3d_cameras(
    num_views: int = 10,
    *,
    elevations: Sequence[float] = (30.0, -20.0),
    distance: float = 3.0,
    extent: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Cameras:
    """Find3D's views: azimuths ``linspace(-180, 180, num_views, endpoint=False)``, elevations cycled.

    With the defaults: 10 views, 36 degrees apart, elevation alternating +30 / -20.

    Args:
        num_views: number of views ``V``.
        elevations: elevations cycled over the views.
        distance: camera distance from the origin.
        extent: half-width of the square view in world units.
        device: device of the camera tensors.
        dtype: dtype of the camera tensors.

    Examples:
        >>> len(find3d_cameras())
        10
    """
    check_positive_int(num_views, "num_views")
    if len(elevations) == 0:
        raise ValueError("elevations must not be empty")
    azimuths = [-180.0 + 360.0 * i / num_views for i in range(num_views)]
    elevs = [float(elevations[i % len(elevations)]) for i in range(num_views)]
    return orbit_cameras(elevs, azimuths, distance=distance, extent=extent, device=device, dtype=dtype)
