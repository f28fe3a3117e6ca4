"""``pa3d precompute-teacher``: Stage-1 targets for every shape of a dataset, into a resumable cache.

Example::

    pa3d precompute-teacher --dataset lpsb --data ../shared/data/lpsb --out cache/lpsb_vitb14 \\
        --teacher dinov2_vitb14 --weights vit_base_patch14_dinov2.safetensors --shard 0/2
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pa3d_models.deps import require

__all__ = ["add_arguments", "run", "check_args", "parse_shard", "parse_dataset_kw", "shape_settings"]


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
    parser.add_argument("--dataset", required=True, help="dataset name for pa3d_data.build_dataset")
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


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
    yaml = require("yaml", "--dataset-kw", extra="cli")

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--dataset-kw must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise ValueError(f"--dataset-kw {item!r}: the value is not valid YAML ({reason})") from None
    return out


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers and paths before any work (nothing is written), naming the option.

    Raises:
        ValueError: naming the option, its value and what is expected.
    """
    from pathlib import Path

    from pa3d_data.targets.precompute import check_precompute_args

    def at_least(value: object, option: str, minimum: int) -> None:
        if value is not None and value < minimum:  # type: ignore[operator]
            raise ValueError(f"{option} must be >= {minimum}, got {value}")

    at_least(args.views, "--views", 1)
    at_least(args.image_size, "--image-size", 16)
    at_least(args.num_groups, "--num-groups", 1)
    at_least(args.group_size, "--group-size", 1)
    at_least(args.num_points, "--num-points", 1)
    at_least(args.limit, "--limit", 1)
    if args.teacher != "tiny" and (args.teacher_size < 14 or args.teacher_size % 14):
        raise ValueError(f"--teacher-size must be a multiple of 14 (the DINOv2 patch), got {args.teacher_size}")
    if args.num_points is not None and args.num_points < max(args.group_size, args.num_groups):
        raise ValueError(
            f"--num-points must be >= --num-groups ({args.num_groups}) and --group-size ({args.group_size}), "
            f"got {args.num_points}"
        )
    check_precompute_args(views=args.views, image_size=args.image_size, renderer=args.renderer,
                          num_groups=args.num_groups, group_size=args.group_size, limit=args.limit)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder (the cache), {out} is a file")
    if Path(args.data).exists() and out.resolve() == Path(args.data).resolve():
        raise ValueError(f"--out must not be the --data folder ({out}): the cache would be written among the inputs")
    if args.weights is not None:
        weights = Path(args.weights)
        if args.teacher == "tiny":
            raise ValueError("--weights is not used by --teacher tiny (a seeded random teacher); drop it")
        if not weights.is_file():
            raise ValueError(f"--weights {weights} {'is a folder' if weights.is_dir() else 'does not exist'}")


def run(args: argparse.Namespace) -> int:
    """Run the command; every expected failure is one line on stderr and a non-zero exit (``--debug``: raise)."""
    try:
        return _run(args)
    except Exception as err:  # noqa: BLE001 - the command line shows one line, never a traceback
        if getattr(args, "debug", False):
            raise
        expected = (ValueError, TypeError, OSError, RuntimeError, KeyError)
        what = "" if isinstance(err, (ValueError, FileNotFoundError)) else f"{type(err).__name__}: "
        print(f"pa3d precompute-teacher: {what}{err}", file=sys.stderr)
        if not isinstance(err, expected):
            print("pa3d precompute-teacher: unexpected error; rerun with --debug for the traceback", file=sys.stderr)
        return 1 if isinstance(err, OSError) else 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from pa3d_data import build_dataset
    from pa3d_data.targets.cache import CacheMismatchError, TargetCache
    from pa3d_data.targets.precompute import precompute_targets
    from pa3d_models.teachers import MissingWeightsError, build_teacher

    try:
        check_args(args)
        shard, num_shards = parse_shard(args.shard)
        dataset_kw = parse_dataset_kw(args.dataset_kw)
        try:
            device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as err:
            raise ValueError(f"--device {args.device!r} is not a torch device ({err})") from None
    except ValueError as err:
        print(f"pa3d precompute-teacher: {err}", file=sys.stderr)
        return 2
    try:
        teacher = build_teacher(args.teacher, args.weights, allow_download=args.download,
                                image_size=args.teacher_size).to(device)
    except (ValueError, MissingWeightsError) as err:
        print(f"pa3d precompute-teacher: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, KeyError) as err:  # a state dict of another architecture
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        print(f"pa3d precompute-teacher: --weights {args.weights} do not fit teacher {args.teacher!r}: {first}",
              file=sys.stderr)
        return 2
    if args.num_points is not None:
        dataset_kw.setdefault("num_points", args.num_points)
    try:
        dataset = build_dataset(args.dataset, args.data, seed=args.seed, **dataset_kw)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:
        print(f"pa3d precompute-teacher: dataset {args.dataset!r}: {err}", file=sys.stderr)
        return 2
    settings = shape_settings(args, getattr(teacher, "name", args.teacher))
    try:
        cache = TargetCache(args.out, settings, info={"data": str(args.data), "argv": sys.argv[1:],
                                                  "weights": getattr(teacher, "weights", None)})
    except (CacheMismatchError, ValueError) as err:
        print(f"pa3d precompute-teacher: {err}", file=sys.stderr)
        return 2
    if cache.removed_temp_files:
        print(f"pa3d precompute-teacher: removed {len(cache.removed_temp_files)} temporary file(s) of an "
              f"interrupted run in {cache.root}", file=sys.stderr)
    dtype = torch.float16 if args.fp16 else torch.float32
    summary = precompute_targets(
        dataset, teacher, cache, views=args.views, image_size=args.image_size, renderer=args.renderer,
        num_groups=args.num_groups, group_size=args.group_size, dtype=dtype, rank=shard, world_size=num_shards,
        limit=args.limit,
    )
    print(f"precompute-teacher: {summary}; shard {shard}/{num_shards} -> {cache.root}")
    return 1 if summary.failed else 0
