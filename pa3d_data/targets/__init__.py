"""pa3d_data.targets: Stage-1 targets in plain PyTorch.

Render a shape from several views (mesh z-buffer or point splats), run a 2D teacher
(``pa3d_models.build_teacher``), back-project the dense features onto the points, and average them over the
patches ``pa3d_layers.PatchGrouper`` forms. ``pa3d precompute-teacher`` caches the result per shape.
"""

from .backproject import PatchTargets, backproject, bicubic_matrix, fill_unseen, patch_targets, point_features
from .cache import FORMAT, CacheMismatchError, TargetCache, load_targets
from .cameras import Cameras, find3d_cameras, look_at, orbit_cameras
from .pipeline import compute_patch_targets, render_views, splat_radius
from .precompute import PrecomputeSummary, precompute_targets, shape_mesh
from .render import (
    MeshRender,
    PointRender,
    fit_to_view,
    mesh_pix2point,
    pix2face_to_pix2point,
    rasterize_mesh,
    render_mesh,
    render_points,
)

__all__ = [
    # cameras
    "Cameras",
    "orbit_cameras",
    "find3d_cameras",
    "look_at",
    # rendering
    "MeshRender",
    "PointRender",
    "rasterize_mesh",
    "render_mesh",
    "render_points",
    "mesh_pix2point",
    "pix2face_to_pix2point",
    "fit_to_view",
    # back-projection and targets
    "backproject",
    "bicubic_matrix",
    "fill_unseen",
    "point_features",
    "patch_targets",
    "PatchTargets",
    "render_views",
    "compute_patch_targets",
    "splat_radius",
    # precompute over a dataset
    "precompute_targets",
    "PrecomputeSummary",
    "shape_mesh",
    # cache
    "TargetCache",
    "CacheMismatchError",
    "load_targets",
    "FORMAT",
]
