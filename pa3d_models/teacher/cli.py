"""``pa3d precompute-teacher``: Stage-1 targets for every shape of a dataset, into a resumable cache.

Example::

    pa3d precompute-teacher --dataset lpsb --data ../shared/data/lpsb --out cache/lpsb_vitb14 \\
        --teacher dinov2_vitb14 --weights vit_base_patch14_dinov2.safetensors --shard 0/2
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["add_arguments", "run", "parse_shard", "parse_dataset_kw", "shape_settings"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Examples:
        >>> parse_shard("1/4")
        (1, 4)
    """
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n with integers 0 <= i < n, got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard must be i/n with integers 0 <= i < n, got {text!r}")
    return i, n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name for pa3d_models.data.build_dataset")
    parser.add_argument("--data", required=True, help="dataset root folder")
    parser.add_argument("--out", required=True, help="cache folder (created; resumable)")
    parser.add_argument("--teacher", default="dinov2_vitb14",
                        help="tiny | dinov2_vits14 | dinov2_vitb14 | dinov2_vitl14 | dinov2_vitg14 | *_reg | timm name")
    parser.add_argument("--weights", default=None, help="local teacher weights file (.safetensors or .pth)")
    parser.add_argument("--download", action="store_true", help="let timm fetch the teacher weights (needs network)")
    parser.add_argument("--views", type=int, default=10, help="number of views (Find3D: 10)")
    parser.add_argument("--image-size", type=int, default=224, help="render side in pixels")
    parser.add_argument("--teacher-size", type=int, default=518, help="DINOv2 input side (multiple of 14)")
    parser.add_argument("--renderer", choices=("auto", "points", "mesh"), default="auto",
                        help="auto: the shape's mesh when the dataset gives one, splats otherwise")
    parser.add_argument("--num-groups", type=int, default=128, help="G, patches per shape")
    parser.add_argument("--group-size", type=int, default=32, help="K, points per patch")
    parser.add_argument("--num-points", type=int, default=None, help="points per shape (dataset option)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset's point sampling")
    parser.add_argument("--dataset-kw", action="append", metavar="KEY=VALUE",
                        help="extra dataset option (YAML value), repeatable, e.g. categories=[Airplane]")
    parser.add_argument("--fp16", action="store_true", help="store targets as float16")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N shapes (after sharding)")
    parser.add_argument("--shard", default="0/1", help="i/n: this worker takes shapes i, i+n, i+2n, ...")


def shape_settings(args: argparse.Namespace, teacher_name: str) -> dict[str, Any]:
    """The settings that define a cache (stored in ``cache.json`` and each file's metadata)."""
    return {
        "dataset": args.dataset,
        "teacher": teacher_name,
        "views": args.views,
        "image_size": args.image_size,
        "teacher_size": args.teacher_size if teacher_name != "tiny" else None,
        "renderer": args.renderer,
        "num_groups": args.num_groups,
        "group_size": args.group_size,
        "num_points": args.num_points,
        "seed": args.seed,
        "dataset_kw": parse_dataset_kw(args.dataset_kw),
        "dtype": "float16" if args.fp16 else "float32",
    }


def parse_dataset_kw(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}``, values read as YAML (``3``, ``false``, ``[Airplane, Chair]``).

    Examples:
        >>> parse_dataset_kw(["num_shapes=3", "categories=[Airplane]"])
        {'num_shapes': 3, 'categories': ['Airplane']}
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--dataset-kw must be KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


_MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf")


def _mesh_of(sample, renderer: str):
    """The sample's mesh ``(vertices, faces, point2face or None)`` when it has one in the points' frame.

    The mesh comes from ``meta["vertices"]``/``meta["faces"]`` or is read from ``meta["path"]``. With
    ``renderer="auto"`` a missing mesh, or one whose bounding box does not match the points (a transform was
    applied), falls back to splats; ``renderer="mesh"`` raises instead.
    """
    import torch

    if renderer == "points":
        return None
    meta = sample.meta or {}
    vertices, faces, face_index = meta.get("vertices"), meta.get("faces"), None
    path = str(meta.get("path", ""))
    if (vertices is None or faces is None) and path.lower().endswith(_MESH_SUFFIXES):
        from pa3d_models.data import read_mesh

        mesh = read_mesh(path)
        vertices, faces, face_index = mesh.vertices, mesh.faces, mesh.face_index
    if vertices is None or faces is None:
        if renderer == "mesh":
            raise ValueError(f"--renderer mesh: shape {sample.shape_id!r} carries no mesh (meta path/vertices/faces)")
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
    # point_face_ids index the file's faces; they match triangle ids only for triangle meshes.
    point2face = meta.get("point_face_ids")
    if point2face is not None and face_index is not None:
        if not bool((torch.as_tensor(face_index) == torch.arange(len(face_index))).all()):
            point2face = None
    return vertices, faces, None if point2face is None else torch.as_tensor(point2face).long()


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from pa3d_models.data import build_dataset

    from .cache import CacheMismatchError, TargetCache
    from .pipeline import compute_patch_targets
    from .teachers import MissingWeightsError, build_teacher

    try:
        shard, num_shards = parse_shard(args.shard)
        dataset_kw = parse_dataset_kw(args.dataset_kw)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        teacher = build_teacher(args.teacher, args.weights, allow_download=args.download,
                                image_size=args.teacher_size).to(device)
    except (ValueError, MissingWeightsError) as err:
        print(f"pa3d precompute-teacher: {err}", file=sys.stderr)
        return 2
    if args.num_points is not None:
        dataset_kw.setdefault("num_points", args.num_points)
    try:
        dataset = build_dataset(args.dataset, args.data, seed=args.seed, **dataset_kw)
    except (ValueError, TypeError) as err:
        print(f"pa3d precompute-teacher: dataset {args.dataset!r}: {err}", file=sys.stderr)
        return 2
    indices = list(range(shard, len(dataset), num_shards))
    if args.limit is not None:
        indices = indices[: args.limit]
    settings = shape_settings(args, getattr(teacher, "name", args.teacher))
    try:
        cache = TargetCache(args.out, settings, info={"data": str(args.data), "argv": sys.argv[1:]})
    except CacheMismatchError as err:
        print(f"pa3d precompute-teacher: {err}", file=sys.stderr)
        return 2
    dtype = torch.float16 if args.fp16 else torch.float32

    done = skipped = failed = 0
    seen_ids: set[str] = set()
    start = time.perf_counter()
    bar = tqdm(indices, desc="precompute-teacher", unit="shape", file=sys.stderr, dynamic_ncols=True)
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
            mesh = _mesh_of(sample, args.renderer)
            vertices, faces, point2face = mesh if mesh is not None else (None, None, None)
            points = sample.points.float()
            out = compute_patch_targets(
                points,
                teacher,
                num_views=args.views,
                image_size=args.image_size,
                vertices=vertices,
                faces=faces,
                point2face=point2face,
                normals=sample.normals if mesh is None else None,
                num_groups=args.num_groups,
                group_size=args.group_size,
            )
            cache.write(shape_id, out.centers, out.targets, dtype=dtype)
            done += 1
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one bad shape must not stop a long run
            failed += 1
            tqdm.write(f"failed: {shape_id}: {type(err).__name__}: {err}", file=sys.stderr)
        finally:
            bar.set_postfix(done=done, skipped=skipped, failed=failed, refresh=False)
    bar.close()
    seconds = time.perf_counter() - start
    print(f"precompute-teacher: {done} done, {skipped} skipped, {failed} failed "
          f"({len(indices)} shapes of shard {shard}/{num_shards}, {seconds:.1f} s) -> {cache.root}")
    return 1 if failed else 0
