"""The precompute loop: Stage-1 targets of every shape of a dataset into a target cache.

Shared by ``pa3d precompute-teacher`` and the recipes. Done shapes are skipped untouched, damaged files are
computed again, and a failing shape is reported and counted without stopping the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from pa3d_models.deps import require

from .cache import TargetCache
from .pipeline import compute_patch_targets

__all__ = ["precompute_targets", "check_precompute_args", "PrecomputeSummary", "shape_mesh"]

_MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf")


class PrecomputeSummary(NamedTuple):
    """Counts of one precompute run; ``str()`` gives ``"3 done, 1 skipped, 0 failed"``.

    Attributes:
        done: shapes computed and written.
        skipped: shapes whose valid file was already there.
        failed: shapes that raised (reported on stderr).
        seconds: wall time.
    """

    done: int
    skipped: int
    failed: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.done} done, {self.skipped} skipped, {self.failed} failed ({self.seconds:.1f} s)"


def shape_mesh(sample: Any, renderer: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """The sample's mesh ``(vertices, faces, point2face or None)`` when it has one in the points' frame.

    The mesh comes from ``meta["vertices"]``/``meta["faces"]`` or is read from ``meta["path"]`` (a mesh file).
    With ``renderer="auto"`` a missing mesh, or one whose bounding box does not match the points (a transform
    was applied to them), gives None (splats); ``renderer="mesh"`` raises instead; ``"points"`` gives None.
    """
    if renderer not in ("auto", "points", "mesh"):
        raise ValueError(f"renderer must be 'auto', 'points' or 'mesh', got {renderer!r}")
    if renderer == "points":
        return None
    meta = getattr(sample, "meta", None) or {}
    vertices, faces, face_index = meta.get("vertices"), meta.get("faces"), None
    path = str(meta.get("path", ""))
    if (vertices is None or faces is None) and path.lower().endswith(_MESH_SUFFIXES):
        from pa3d_data import read_mesh

        mesh = read_mesh(path)
        vertices, faces, face_index = mesh.vertices, mesh.faces, mesh.face_index
    if vertices is None or faces is None:
        if renderer == "mesh":
            raise ValueError(f"renderer='mesh': shape {sample.shape_id!r} carries no mesh (meta path/vertices/faces)")
        return None
    vertices = torch.as_tensor(vertices).to(sample.points.dtype)
    faces = torch.as_tensor(faces).long()
    lo, hi = sample.points.amin(0), sample.points.amax(0)
    vlo, vhi = vertices.amin(0), vertices.amax(0)
    tol = 0.05 * float((vhi - vlo).norm())
    if float((lo - vlo).abs().max()) > tol or float((hi - vhi).abs().max()) > tol:
        if renderer == "mesh":
            raise ValueError(f"shape {sample.shape_id!r}: the points are not in the mesh's frame (transformed?)")
        return None
    # point_face_ids index the file's faces; they equal triangle ids only for triangle meshes.
    point2face = meta.get("point_face_ids")
    if point2face is not None and face_index is not None:
        if not bool((torch.as_tensor(face_index) == torch.arange(len(face_index))).all()):
            point2face = None
    return vertices, faces, None if point2face is None else torch.as_tensor(point2face).long()


def _int_at_least(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_precompute_args(
    *,
    views: object,
    image_size: object,
    renderer: object,
    num_groups: object,
    group_size: object,
    dtype: object = torch.float32,
    rank: object = 0,
    world_size: object = 1,
    limit: object = None,
) -> None:
    """Check the arguments of [precompute_targets][pa3d_data.targets.precompute_targets] before any work.

    Args:
        views: number of views, >= 1.
        image_size: render side, >= 16.
        renderer: ``"auto"``, ``"points"`` or ``"mesh"``.
        num_groups: G, >= 1.
        group_size: K, >= 1.
        dtype: float32 or float16.
        rank: this worker's index, in ``[0, world_size)``.
        world_size: number of workers, >= 1.
        limit: None or >= 0.

    Raises:
        ValueError: naming the argument, its value and what is expected.

    Examples:
        >>> check_precompute_args(views=0, image_size=224, renderer="auto", num_groups=128, group_size=32)
        Traceback (most recent call last):
        ...
        ValueError: views must be an int >= 1, got 0
    """
    _int_at_least(views, "views", 1)
    _int_at_least(image_size, "image_size", 16)
    _int_at_least(num_groups, "num_groups", 1)
    _int_at_least(group_size, "group_size", 1)
    if renderer not in ("auto", "points", "mesh"):
        raise ValueError(f"renderer must be 'auto', 'points' or 'mesh', got {renderer!r}")
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype!r}")
    _int_at_least(world_size, "world_size", 1)
    _int_at_least(rank, "rank", 0)
    if not rank < world_size:  # type: ignore[operator]
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if limit is not None:
        _int_at_least(limit, "limit", 0)


def precompute_targets(
    dataset: Sequence,
    teacher: nn.Module,
    cache: TargetCache,
    *,
    views: int = 10,
    image_size: int = 224,
    renderer: str = "auto",
    num_groups: int | None = None,
    group_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
    progress: bool = True,
) -> PrecomputeSummary:
    """Compute and cache the Stage-1 targets of every shape of ``dataset`` (this worker's share).

    Worker ``rank`` of ``world_size`` takes shapes ``rank, rank + world_size, ...`` (then the first ``limit``
    of them). Each shape is rendered from ``views`` Find3D views (its mesh when it carries one, see
    [shape_mesh][pa3d_data.targets.shape_mesh], splats otherwise), run through ``teacher``, back-projected and
    grouped, and written to ``cache`` under its ``shape_id``.

    Args:
        dataset: indexable, yields ``PartSample``-like items (``points``, ``shape_id``, optional ``normals``
            and ``meta``).
        teacher: a [Teacher][pa3d_models.teachers.Teacher].
        cache: the target cache.
        views: number of views ``V``.
        image_size: render side.
        renderer: ``"auto"``, ``"mesh"`` or ``"points"``.
        num_groups: ``G`` (default: ``cache.settings["num_groups"]``, else 128).
        group_size: ``K`` (default: ``cache.settings["group_size"]``, else 32).
        dtype: storage dtype of the targets (float32 or float16).
        rank: this worker's index.
        world_size: number of workers.
        limit: at most this many shapes for this worker.
        progress: show a tqdm bar (shapes/s, ETA) on stderr.

    Returns:
        A [PrecomputeSummary][pa3d_data.targets.PrecomputeSummary].

    Raises:
        ValueError: for invalid arguments, before any shape is read.
        CacheMismatchError: when another run claimed the cache with other settings meanwhile.
        OSError: when the cache cannot be written (a full disk, a read-only folder): no use going on.
    """
    tqdm = require("tqdm", "precompute_targets").tqdm

    num_groups = int(cache.settings.get("num_groups") or 128) if num_groups is None else num_groups
    group_size = int(cache.settings.get("group_size") or 32) if group_size is None else group_size
    check_precompute_args(views=views, image_size=image_size, renderer=renderer, num_groups=num_groups,
                          group_size=group_size, dtype=dtype, rank=rank, world_size=world_size, limit=limit)
    indices = list(range(rank, len(dataset), world_size))[:limit]
    done = skipped = failed = 0
    seen_ids: set[str] = set()
    start = time.perf_counter()
    bar = tqdm(indices, desc="teacher targets", unit="shape", file=sys.stderr, dynamic_ncols=True,
               disable=not progress)
    for index in bar:
        shape_id = f"index {index}"
        try:
            sample = dataset[index]
            shape_id = sample.shape_id or str(index)
            if shape_id in seen_ids:
                raise ValueError(f"duplicate shape_id {shape_id!r}: cache files are named by shape id")
            seen_ids.add(shape_id)
            if cache.is_done(shape_id):
                skipped += 1
                continue
            mesh = shape_mesh(sample, renderer)
            vertices, faces, point2face = mesh if mesh is not None else (None, None, None)
            out = compute_patch_targets(
                sample.points.float(),
                teacher,
                num_views=views,
                image_size=image_size,
                vertices=vertices,
                faces=faces,
                point2face=point2face,
                normals=getattr(sample, "normals", None) if mesh is None else None,
                num_groups=num_groups,
                group_size=group_size,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # one bad shape must not stop a long run
            failed += 1
            tqdm.write(f"failed: {shape_id}: {type(err).__name__}: {err}", file=sys.stderr)
            bar.set_postfix(done=done, skipped=skipped, failed=failed, refresh=False)
            continue
        # a write error (full disk, read-only folder, a rival run's settings) is no shape's fault: stop
        cache.write(shape_id, out.centers, out.targets, dtype=dtype)
        done += 1
        bar.set_postfix(done=done, skipped=skipped, failed=failed, refresh=False)
    bar.close()
    return PrecomputeSummary(done, skipped, failed, time.perf_counter() - start)
