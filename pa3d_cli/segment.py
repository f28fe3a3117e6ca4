"""The ``pa3d segment`` and ``pa3d build-text-bank`` subcommands.

``pa3d segment INPUT --parts "leg,seat,back" --output OUT.ply`` reads a mesh (surface-sampled) or a point
cloud, runs zero-shot part segmentation and writes the points coloured by part with a ``label`` property,
a legend, and optionally a PNG. Every output is written to a temporary file first and moved into place only
when all of them are ready, so an error never leaves a partial file.

``pa3d build-text-bank --names FILE --text-model SPEC --out BANK.safetensors`` encodes part names once
for training and evaluation (:class:`~pa3d_models.TextBank`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pa3d_models.deps import require

__all__ = [
    "add_arguments",
    "run",
    "segment_file",
    "write_ply",
    "read_points_for_segmentation",
    "parse_part_names",
    "build_text_bank_command",
]


class SegmentError(ValueError):
    """A user-facing error of ``pa3d segment`` / ``pa3d build-text-bank``."""


def parse_part_names(spec: str | list[str]) -> list[str]:
    """Split ``"leg, seat,back"`` into names; reject empty and duplicate names (after cleaning).

    Examples:
        >>> parse_part_names("leg, seat ,Back_Rest")
        ['leg', 'seat', 'Back_Rest']
    """
    from pa3d_models.text import clean_part_name

    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [str(n).strip() for n in spec]
    if not names or any(not clean_part_name(n) for n in names):
        raise SegmentError(f"--parts must be a comma-separated list of non-empty part names, got {spec!r}")
    cleaned = [clean_part_name(n) for n in names]
    dups = sorted({c for c in cleaned if cleaned.count(c) > 1})
    if dups:
        raise SegmentError(f"--parts holds duplicate part names: {dups}")
    return names


# --------------------------------------------------------------------------------------------- reading


def read_points_for_segmentation(path: str | os.PathLike, *, num_points: int = 2048, seed: int = 0) -> torch.Tensor:
    """Read a mesh (surface-sampled, ``num_points``) or a point cloud (a seeded subset of ``num_points``).

    Uses :func:`pa3d_data.read_shape` when available, else trimesh / numpy directly.

    Returns:
        ``(N, 3)`` float32 points in the file's coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise SegmentError(f"input {path} does not exist")
    try:
        from pa3d_data import read_shape  # the data issue's readers
    except ImportError:
        read_shape = None
    if read_shape is not None:
        try:
            sample = read_shape(path, num_points=None, seed=seed) if _is_point_file(path) else read_shape(
                path, num_points=num_points, seed=seed
            )
        except ValueError as err:
            raise SegmentError(f"cannot read {path}: {err}") from err
        pts = torch.as_tensor(sample.points, dtype=torch.float32)
    else:
        pts = _read_fallback(path, num_points, seed)
    if pts.dim() != 2 or pts.shape[-1] != 3 or pts.shape[0] == 0:
        raise SegmentError(f"{path} holds no points (got an array of shape {tuple(pts.shape)})")
    if not bool(torch.isfinite(pts).all()):
        raise SegmentError(f"{path} holds {int((~torch.isfinite(pts)).any(-1).sum())} points with NaN/Inf coordinates")
    if pts.shape[0] > num_points:
        g = torch.Generator().manual_seed(seed)
        pts = pts[torch.randperm(pts.shape[0], generator=g)[:num_points]]
    return pts.contiguous()


_POINT_SUFFIXES = {".pcd", ".npy", ".npz", ".txt", ".xyz", ".pts"}


def _is_point_file(path: Path) -> bool:
    if path.suffix.lower() in _POINT_SUFFIXES:
        return True
    if path.suffix.lower() == ".ply":  # a PLY without faces is a point cloud
        with open(path, "rb") as fh:
            head = fh.read(4096).split(b"end_header")[0]
        return b"element face" not in head or b"element face 0" in head
    return False


def _read_fallback(path: Path, num_points: int, seed: int) -> torch.Tensor:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return torch.as_tensor(np.load(path)[..., :3], dtype=torch.float32)
        if suffix == ".npz":
            with np.load(path) as data:
                key = "points" if "points" in data else data.files[0]
                return torch.as_tensor(data[key][..., :3], dtype=torch.float32)
        if suffix in (".txt", ".xyz", ".pts"):
            return torch.as_tensor(np.loadtxt(path, ndmin=2)[:, :3], dtype=torch.float32)
        trimesh = require("trimesh", f"reading {suffix} files", extra="cli")

        geom = trimesh.load(str(path), process=False)
        if isinstance(geom, trimesh.Scene):
            geom = geom.to_geometry() if hasattr(geom, "to_geometry") else geom.dump(concatenate=True)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            pts, _ = trimesh.sample.sample_surface(geom, num_points, seed=seed)
            return torch.as_tensor(np.asarray(pts), dtype=torch.float32)
        vertices = np.asarray(getattr(geom, "vertices", np.zeros((0, 3))))
        return torch.as_tensor(vertices, dtype=torch.float32)
    except SegmentError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise SegmentError(f"cannot read {path}: {err}") from err


def _prepare(points: torch.Tensor, *, normalize: bool, up_axis: str | None, swap_yz: bool) -> torch.Tensor:
    """Axis conventions then centring/unit-sphere scaling, applied to the copy the model sees."""
    x = points.clone()
    if swap_yz:  # the official release's convention (a reflection, no sign flip)
        x = x[:, [0, 2, 1]]
    if up_axis is not None and up_axis != "z":  # cyclic (proper) rotation putting the given axis on +z
        x = x[:, [1, 2, 0]] if up_axis == "x" else x[:, [2, 0, 1]]
    if normalize:
        x = x - x.mean(dim=0, keepdim=True)
        radius = x.norm(dim=-1).max()
        if float(radius) > 0:
            x = x / radius
    return x


# --------------------------------------------------------------------------------------------- writing


def write_ply(
    path: str | os.PathLike,
    points: torch.Tensor | np.ndarray,
    colors: np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    binary: bool = False,
    comments: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write ``x y z red green blue label`` vertices as an ASCII or binary little-endian PLY (atomically)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    lab = np.asarray(labels, dtype=np.int32).reshape(-1)
    if not (len(pts) == len(rgb) == len(lab)):
        raise ValueError(f"points, colors and labels must have the same length, got {len(pts)}, {len(rgb)}, {len(lab)}")
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {len(pts)}"]
    header += [f"property float {a}" for a in "xyz"] + [f"property uchar {c}" for c in ("red", "green", "blue")]
    header += ["property int label", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                        ("b", "u1"), ("label", "<i4")])
        rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        rec["r"], rec["g"], rec["b"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        rec["label"] = lab
        body = rec.tobytes()
    else:
        body = "".join(
            f"{p[0]:.6g} {p[1]:.6g} {p[2]:.6g} {c[0]} {c[1]} {c[2]} {lb}\n" for p, c, lb in zip(pts, rgb, lab)
        ).encode("ascii")
    from pa3d_models.files import atomic_write_bytes as atomic_write

    return atomic_write(path, head + body)


# --------------------------------------------------------------------------------------------- segment


def segment_file(
    input_path: str | os.PathLike,
    parts: str | list[str],
    *,
    output: str | os.PathLike,
    checkpoint: str | None = None,
    text_model: str = "auto",
    model_name: str = "patchalign3d_base",
    png: str | os.PathLike | None = None,
    legend: str | os.PathLike | None = None,
    normalize: bool = True,
    up_axis: str | None = None,
    swap_yz: bool = False,
    min_score: float | None = None,
    num_points: int = 2048,
    assign: str = "nearest",
    binary: bool = False,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> dict[str, Any]:
    """Segment one file and write the outputs; the library form of ``pa3d segment``.

    Returns:
        The legend: ``{"parts": [{"label", "name", "color", "points"}], "unlabelled": n, ...}``.
    """
    from pa3d_models import load_checkpoint
    from pa3d_models.model import create_model
    from pa3d_models.text import resolve_text_encoder

    names = parse_part_names(parts)
    output = Path(output)
    if output.suffix.lower() != ".ply":
        raise SegmentError(f"--output must be a .ply file, got {output}")
    if num_points < 1:
        raise SegmentError(f"--num-points must be >= 1, got {num_points}")
    torch.manual_seed(seed)
    if checkpoint:
        try:
            model = load_checkpoint(checkpoint)
        except (FileNotFoundError, ValueError) as err:
            raise SegmentError(f"cannot load checkpoint {checkpoint}: {err}") from err
    else:
        model = None
    encoder = resolve_text_encoder(text_model, verbose=True)
    if model is None:
        log(
            f"WARNING: no --checkpoint given: running UNTRAINED (random) {model_name} weights; "
            "the parts it finds are meaningless. Pass --checkpoint DIR|official.pt|hf://... for real results."
        )
        model = create_model(model_name, text_dim=encoder.dim)
    elif model.text_dim != encoder.dim:
        raise SegmentError(
            f"text dimension mismatch: the text encoder {encoder.name} gives {encoder.dim}-d embeddings but the "
            f"checkpoint's text head is {model.text_dim}-d; pass the --text-model it was trained with"
        )
    model = model.to(device).eval()
    raw = read_points_for_segmentation(input_path, num_points=num_points, seed=seed)
    min_points = model.encoder.config["group_size"]
    if raw.shape[0] < max(min_points, model.encoder.num_groups):
        raise SegmentError(
            f"{input_path} gives {raw.shape[0]} points, fewer than the model needs "
            f"({max(min_points, model.encoder.num_groups)}); raise --num-points or use a denser input"
        )
    pts = _prepare(raw, normalize=normalize, up_axis=up_axis, swap_yz=swap_yz).to(device)
    result = model.segment(pts, names, encoder, assign=assign, min_score=min_score)
    labels = result.labels.cpu()
    from pa3d_train.viz import colorize_labels, part_palette

    colors = colorize_labels(labels, len(names))
    palette = part_palette(len(names))
    legend_data = {
        "input": str(input_path),
        "text_encoder": encoder.name,
        "checkpoint": checkpoint,
        "untrained": checkpoint is None,
        "parts": [
            {"label": i, "name": n, "color": [int(c) for c in palette[i]], "points": int((labels == i).sum())}
            for i, n in enumerate(names)
        ],
        "unlabelled": int((labels < 0).sum()),
        "min_score": min_score,
    }
    comments = [f"pa3d segment {Path(input_path).name}", f"text_encoder {encoder.name}"]
    comments += [f"label {p['label']} {p['name']} color {' '.join(map(str, p['color']))}" for p in legend_data["parts"]]
    if checkpoint is None:
        comments.append("untrained weights: labels are not meaningful")

    # Write everything to temporary files, then move them into place together.
    temps: list[tuple[Path, Path]] = []
    try:
        out_dir = output.parent if str(output.parent) else Path(".")
        out_dir.mkdir(parents=True, exist_ok=True)
        ply_tmp = Path(tempfile.mkstemp(prefix=f".{output.name}.", suffix=".ply", dir=out_dir)[1])
        temps.append((ply_tmp, output))
        write_ply(ply_tmp, raw, colors, labels, binary=binary, comments=comments)
        if png is not None:
            png = Path(png)
            png.parent.mkdir(parents=True, exist_ok=True)
            png_tmp = Path(tempfile.mkstemp(prefix=f".{png.name}.", suffix=".png", dir=png.parent)[1])
            temps.append((png_tmp, png))
            from pa3d_train.viz import save_part_figure

            save_part_figure(png_tmp, [{"points": pts.cpu(), "pred": labels, "names": names,
                                        "title": Path(input_path).stem}])
        if legend is not None:
            legend = Path(legend)
            legend.parent.mkdir(parents=True, exist_ok=True)
            leg_tmp = Path(tempfile.mkstemp(prefix=f".{legend.name}.", suffix=".json", dir=legend.parent)[1])
            temps.append((leg_tmp, legend))
            leg_tmp.write_text(json.dumps(legend_data, indent=2) + "\n")
        for tmp, final in temps:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    return legend_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pa3d segment``."""
    parser.add_argument("input", help="mesh (OBJ, PLY, OFF, GLB, STL) or point cloud (PLY, PCD, NPY, NPZ, TXT)")
    parser.add_argument("--parts", required=True, help='comma-separated part names, e.g. "leg,seat,back"')
    parser.add_argument("--output", "-o", required=True, help="the PLY to write (x y z red green blue label)")
    parser.add_argument("--checkpoint", help="pa3d checkpoint dir, official .pt, or hf://ORG/REPO[/FILE]")
    parser.add_argument("--text-model", default="auto",
                        help="text encoder spec: auto (default), open_clip[:MODEL[:PRETRAINED]], minilm, "
                             "sentence-transformers:PATH, fixed[:DIM]")
    parser.add_argument("--model", default="patchalign3d_base", help="registered config used without --checkpoint")
    parser.add_argument("--png", help="also render the coloured points to this PNG")
    parser.add_argument("--legend", help="also write the legend as JSON to this file")
    parser.add_argument("--no-normalize", action="store_true", help="do not centre and scale to the unit sphere")
    parser.add_argument("--up-axis", choices=["x", "y", "z"], help="input's up axis; rotated onto +z")
    parser.add_argument("--swap-yz", action="store_true", help="swap Y and Z (the official release's convention)")
    parser.add_argument("--min-score", type=float, help="points scoring below this get label -1 (no label)")
    parser.add_argument("--num-points", type=int, default=2048, help="points sampled from the input (2048)")
    parser.add_argument("--assign", default="nearest", choices=["nearest", "membership", "idw"],
                        help="patch -> point assignment (nearest centre by default)")
    parser.add_argument("--binary", action="store_true", help="write a binary little-endian PLY")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and untrained weights")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")


def run(args: argparse.Namespace) -> int:
    """Run ``pa3d segment``."""
    try:
        legend = segment_file(
            args.input, args.parts, output=args.output, checkpoint=args.checkpoint, text_model=args.text_model,
            model_name=args.model, png=args.png, legend=args.legend, normalize=not args.no_normalize,
            up_axis=args.up_axis, swap_yz=args.swap_yz, min_score=args.min_score, num_points=args.num_points,
            assign=args.assign, binary=args.binary, seed=args.seed, device=args.device,
        )
    except (SegmentError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"pa3d segment: error: {err}", file=sys.stderr)
        return 2
    total = sum(p["points"] for p in legend["parts"]) + legend["unlabelled"]
    print(f"wrote {args.output} ({total} points)" + (f" and {args.png}" if args.png else ""))
    for p in legend["parts"]:
        print(f"  {p['label']:>3}  {p['name']:<24} rgb{tuple(p['color'])}  {p['points']} points")
    if legend["unlabelled"]:
        print(f"   -1  {'(no label)':<24} rgb(170, 170, 170)  {legend['unlabelled']} points")
    return 0


# ------------------------------------------------------------------------------------- build-text-bank


def _bank_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--names", help="text file with one part name per line (# comments allowed)")
    src.add_argument("--dataset", help="a registered dataset name (pa3d_data.DATASETS)")
    parser.add_argument("--data", help="dataset root for --dataset (default: found under $PA3D_DATA)")
    parser.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                        help='dataset keyword (JSON value), e.g. class_choice=\'["Cap"]\' (repeatable)')
    parser.add_argument("--text-model", default="auto", help="text encoder spec (see pa3d segment --help)")
    parser.add_argument("--out", required=True, help="the bank to write (.safetensors)")


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SegmentError(f"--dataset-option must be KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _names_from_dataset(name: str, root: str | None, options: dict[str, Any] | None = None) -> list[str]:
    """Every label text (the dataset's prompt map, else the cleaned names) over all shapes of a dataset."""
    from pa3d_data import build_dataset

    # root None: the dataset's folder under the default data root
    dataset = build_dataset(name, root, **(options or {}))
    names: list[str] = []
    for i in range(len(dataset)):
        sample = dataset[i]
        names.extend(sample.texts if hasattr(sample, "texts") else sample.label_names)
    return names


def _bank_run(args: argparse.Namespace) -> int:
    from pa3d_models.text import TextBank, resolve_text_encoder

    try:
        if args.names:
            path = Path(args.names)
            if not path.is_file():
                raise SegmentError(f"--names file {path} does not exist")
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        else:
            names = _names_from_dataset(args.dataset, args.data, _parse_options(args.dataset_option))
        if not names:
            raise SegmentError("no part names to encode")
        encoder = resolve_text_encoder(args.text_model)
        bank = TextBank.build(names, encoder)
        bank.save(args.out)
    except (SegmentError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"pa3d build-text-bank: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(bank)} names, {bank.dim}-d, encoder {bank.encoder}")
    return 0


#: ``pa3d build-text-bank`` (registered in :data:`pa3d_cli.main.COMMANDS` as ``pa3d_cli.segment:...``).
build_text_bank_command = SimpleNamespace(add_arguments=_bank_arguments, run=_bank_run)
