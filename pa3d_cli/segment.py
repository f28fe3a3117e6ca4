"""The ``pa3d segment`` subcommand, and the segmentation pipeline it shares with ``pa3d app``.

``pa3d segment INPUT... --parts "leg,seat,back"`` reads meshes or point clouds, runs zero-shot part
segmentation on points sampled from each, and carries the result back to the source: every vertex and face
of a mesh, every point of a point cloud. The output's suffix picks the format:

- ``.glb``: binary glTF of the whole source mesh (or cloud) with per-vertex part colours (``COLOR_0``) and
  the labels and scores as the custom attributes ``_LABEL`` and ``_SCORE``;
- ``.ply``: a mesh input gives the mesh with its faces (per-vertex colour, label, score; per-face label), a
  point cloud gives every input point (full-precision ``double`` coordinates);
- ``.npz``: every array (labels, scores, per-part similarities, faces, samples, part names).

Several inputs, a folder or a glob are segmented in one call with a progress bar, one output per input in
``--out-dir``. ``--scores`` adds the NPZ beside another format, ``--heatmap PART`` a file coloured by that
part's similarity, ``--png`` a picture from several views with the up axis upright.

No output may name an input or another output (the command refuses, naming both paths). Every output is
written to a temporary file first and moved into place only when all of one input's outputs are ready, so
an error never leaves a partial file. Errors are one line on stderr and a non-zero exit; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pa3d_layers import CALIBRATIONS, name_prior

from .outputs import (
    detect_up_axis,
    face_similarities,
    labels_from_similarities,
    save_views_png,
    transfer_similarities,
)

__all__ = [
    "SegmentError",
    "LoadedShape",
    "ShapeSegmentation",
    "Segmenter",
    "load_shape",
    "load_model",
    "load_text_encoder",
    "expand_inputs",
    "segment_file",
    "segment_files",
    "parse_part_names",
    "write_ply",
    "add_arguments",
    "run",
    "transfer_similarities",
    "face_similarities",
    "labels_from_similarities",
    "detect_up_axis",
    "save_views_png",
    "SHAPE_SUFFIXES",
]

#: Suffixes ``pa3d segment`` reads (meshes, then point clouds; a PLY with faces is a mesh).
SHAPE_SUFFIXES = (".obj", ".off", ".stl", ".glb", ".gltf", ".ply", ".pcd", ".npz", ".npy", ".xyz", ".txt", ".pts")
_MESH_SUFFIXES = (".obj", ".off", ".stl", ".glb", ".gltf")
_FORMATS = ("glb", "ply", "npz")


class SegmentError(ValueError):
    """A user-facing error of ``pa3d segment`` / ``pa3d build-text-bank`` / ``pa3d app``."""


def parse_part_names(spec: str | Sequence[str]) -> list[str]:
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


@dataclass
class LoadedShape:
    """A shape read for segmentation, in the file's coordinates (float64).

    Attributes:
        path: the file.
        vertices: ``(V, 3)`` mesh vertices, or every point of a point cloud.
        faces: ``(F, 3)`` triangles of a mesh; None for a point cloud.
        face_index: ``(F,)`` the file's face each triangle comes from (polygons are fan-triangulated).
    """

    path: Path
    vertices: np.ndarray
    faces: np.ndarray | None = None
    face_index: np.ndarray | None = None

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None


def _ply_has_faces(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(8192).split(b"end_header")[0]
    return bool(re.search(rb"element face [1-9]", head))


def load_shape(path: str | os.PathLike) -> LoadedShape:
    """Read a mesh (OBJ, OFF, STL, GLB/GLTF, a PLY with faces) or a point cloud (PLY, PCD, NPZ, NPY, XYZ, TXT,
    PTS) at full precision.

    Raises:
        SegmentError: the file is missing, of an unknown type, unreadable, empty or holds NaN/Inf coordinates.
        OSError: the file cannot be opened (permissions).
    """
    from pa3d_data import DataFormatError, read_mesh, read_points

    path = Path(path)
    if not path.exists():
        raise SegmentError(f"input {path} does not exist")
    if path.is_dir():
        raise SegmentError(f"input {path} is a directory (pass its files, or several inputs with --out-dir)")
    suffix = path.suffix.lower()
    if suffix not in SHAPE_SUFFIXES:
        raise SegmentError(f"input {path} has an unsupported type {suffix!r}; known: {' '.join(SHAPE_SUFFIXES)}")
    try:
        if suffix in _MESH_SUFFIXES or (suffix == ".ply" and _ply_has_faces(path)):
            mesh = read_mesh(path)
            shape = LoadedShape(path, np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                                np.asarray(mesh.face_index, np.int64))
            if len(shape.faces) == 0:
                raise SegmentError(f"cannot read {path}: the mesh has no faces")
        else:
            data = read_points(path)
            shape = LoadedShape(path, np.asarray(data["points"], dtype=np.float64).reshape(-1, 3))
    except DataFormatError as err:
        raise SegmentError(f"cannot read {path}: {err}") from err
    except (UnicodeDecodeError, ValueError, IndexError) as err:
        raise SegmentError(f"cannot read {path}: {err}") from err
    if len(shape.vertices) == 0:
        raise SegmentError(f"{path} holds no points")
    bad = ~np.isfinite(shape.vertices).all(axis=1)
    if bad.any():
        raise SegmentError(f"{path} holds {int(bad.sum())} points with NaN/Inf coordinates")
    return shape


def expand_inputs(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Turn input arguments (files, folders, glob patterns) into a sorted, de-duplicated list of files.

    A folder gives its files with a known suffix (not recursive); a pattern with ``*``, ``?`` or ``[`` is
    expanded (``**`` recurses). A missing file is kept, so reading it gives the clear error.
    """
    out: list[Path] = []
    for spec in specs:
        s = str(spec)
        if Path(s).is_dir():
            found = sorted(p for p in Path(s).iterdir() if p.is_file() and p.suffix.lower() in SHAPE_SUFFIXES)
            if not found:
                raise SegmentError(f"folder {s} holds no shape files ({' '.join(SHAPE_SUFFIXES)})")
            out += found
        elif any(ch in s for ch in "*?[") and not Path(s).exists():
            found = sorted(Path(p) for p in glob.glob(s, recursive=True) if Path(p).is_file())
            if not found:
                raise SegmentError(f"pattern {s!r} matches no file")
            out += found
        else:
            out.append(Path(s))
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------------------------- model


def load_text_encoder(spec: str, *, verbose: bool = True):
    """:func:`~pa3d_models.resolve_text_encoder` with every failure as one :class:`SegmentError` naming the spec."""
    from pa3d_models.text import resolve_text_encoder

    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if kind.lower() == "fixed" and sep:
        if not re.fullmatch(r"\d+", rest.strip()) or int(rest) < 1:
            raise SegmentError(f"--text-model fixed:DIM needs a positive integer DIM, got {spec!r}")
    try:
        return resolve_text_encoder(spec, verbose=verbose)
    except (RuntimeError, ValueError, ImportError, OSError) as err:
        raise SegmentError(f"--text-model {spec}: {err}") from err


def load_model(
    checkpoint: str | os.PathLike | None,
    *,
    model_name: str = "patchalign3d_base",
    text_dim: int | None = None,
    trusted: bool = False,
    seed: int = 0,
) -> tuple[Any, bool]:
    """Load a checkpoint (a pa3d folder, an official ``.pt``, ``hf://...`` from the cache when offline), or
    build untrained weights when ``checkpoint`` is None.

    Args:
        checkpoint: the checkpoint spec, or None.
        model_name: the registered config built without a checkpoint.
        text_dim: the text encoder's width: checked against the checkpoint's text head, and used to build
            the untrained model.
        trusted: allow the legacy official ``.pt`` pickle (it can run code: only for files you trust).
        seed: seeds the untrained weights.

    Returns:
        ``(model in eval mode, untrained: bool)``.
    """
    from pa3d_models import load_checkpoint
    from pa3d_models.model import create_model

    if checkpoint is None or str(checkpoint) == "":
        torch.manual_seed(seed)
        try:
            model = create_model(model_name, **({"text_dim": text_dim} if text_dim else {}))
        except ValueError as err:
            raise SegmentError(f"--model: {err}") from err
        return model.eval(), True
    try:
        model = load_checkpoint(checkpoint, trusted=trusted) if trusted else load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError, ImportError) as err:
        raise SegmentError(f"cannot load checkpoint {checkpoint}: {err}") from err
    if text_dim is not None and model.text_dim != text_dim:
        raise SegmentError(
            f"text dimension mismatch: the text encoder gives {text_dim}-d embeddings but the checkpoint's text "
            f"head is {model.text_dim}-d; pass the --text-model it was trained with"
        )
    return model.eval(), False


@dataclass
class ShapeSegmentation:
    """One shape's segmentation, carried back to the source.

    Attributes:
        shape: the source shape.
        names: the L part names.
        similarities: ``(V, L)`` cosine similarity of every vertex / input point with every part name.
        labels: ``(V,)`` part index per vertex / input point (-1 below ``min_score``).
        scores: ``(V,)`` probability of the chosen part.
        face_labels: ``(F,)`` part index per face (None for a point cloud).
        face_scores: ``(F,)`` probability of each face's part.
        sample_points: ``(S, 3)`` the points the model saw (file coordinates).
        sample_labels: ``(S,)`` their labels; ``sample_similarities`` ``(S, L)``.
        up_axis: the up axis used for pictures and the GLB's node rotation.
        info: text encoder, checkpoint, untrained flag, settings.
    """

    shape: LoadedShape
    names: list[str]
    similarities: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    face_labels: np.ndarray | None
    face_scores: np.ndarray | None
    sample_points: np.ndarray
    sample_labels: np.ndarray
    sample_similarities: np.ndarray
    up_axis: str
    info: dict[str, Any] = field(default_factory=dict)

    def palette(self) -> np.ndarray:
        from pa3d_train.viz import part_palette

        return part_palette(len(self.names))

    def colors(self) -> np.ndarray:
        """``(V, 3)`` uint8 part colours (grey for -1)."""
        from pa3d_train.viz import colorize_labels

        return colorize_labels(self.labels, len(self.names))

    def part_index(self, part: str) -> int:
        """The index of ``part`` (matched after cleaning); a clear error when it is not one of the names."""
        from pa3d_models.text import clean_part_name

        cleaned = [clean_part_name(n) for n in self.names]
        key = clean_part_name(str(part))
        if key not in cleaned:
            raise SegmentError(f"--heatmap part {part!r} is not one of the part names {self.names}")
        return cleaned.index(key)

    def heatmap_colors(self, part: str) -> np.ndarray:
        """``(V, 3)`` uint8 colours of ``part``'s similarity (viridis, scaled to its range on this shape)."""
        from pa3d_data.writers import heatmap_colors

        return heatmap_colors(self.similarities[:, self.part_index(part)])

    def legend(self) -> dict[str, Any]:
        """Part names, colours and counts (vertices or points, and faces) as a JSON-ready dict."""
        pal = self.palette()
        parts = []
        for i, n in enumerate(self.names):
            entry = {"label": i, "name": n, "color": [int(c) for c in pal[i]], "points": int((self.labels == i).sum())}
            if self.face_labels is not None:
                entry["faces"] = int((self.face_labels == i).sum())
            parts.append(entry)
        out = {
            "input": str(self.shape.path),
            "kind": "mesh" if self.shape.is_mesh else "points",
            "vertices" if self.shape.is_mesh else "points": int(len(self.labels)),
            **({"faces": int(len(self.shape.faces))} if self.shape.is_mesh else {}),
            **self.info,
            "parts": parts,
            "unlabelled": int((self.labels < 0).sum()),
        }
        return out

    def _comments(self) -> list[str]:
        pal = self.palette()
        lines = [f"pa3d segment {self.shape.path.name}", f"text_encoder {self.info.get('text_encoder')}"]
        lines += [f"label {i} {n} color {' '.join(str(int(c)) for c in pal[i])}" for i, n in enumerate(self.names)]
        if self.info.get("untrained"):
            lines.append("untrained weights: labels are not meaningful")
        return lines

    def write(self, path: str | os.PathLike, *, colors: np.ndarray | None = None, binary: bool = False) -> Path:
        """Write the result in the format the suffix names (``.glb``, ``.ply``, ``.npz``)."""
        from pa3d_data.writers import write_glb, write_npz, write_ply_mesh, write_ply_points

        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        colors = self.colors() if colors is None else colors
        s = self.shape
        if fmt == "glb":
            extras = {"parts": self.names, "colors": self.palette().tolist(), "source": str(s.path.name),
                      **{k: v for k, v in self.info.items() if isinstance(v, (str, bool, int, float, type(None)))}}
            return write_glb(path, s.vertices, s.faces, colors=colors, labels=self.labels, scores=self.scores,
                             face_labels=self.face_labels, up_axis=self.up_axis, extras=extras)
        if fmt == "ply":
            if s.is_mesh:
                return write_ply_mesh(path, s.vertices, s.faces, colors=colors, labels=self.labels,
                                      scores=self.scores, face_labels=self.face_labels, binary=binary,
                                      comments=self._comments())
            return write_ply_points(path, s.vertices, colors=colors, labels=self.labels, scores=self.scores,
                                    binary=binary, comments=self._comments())
        if fmt == "npz":
            arrays: dict[str, Any] = {
                "vertices" if s.is_mesh else "points": s.vertices,
                "labels": self.labels, "scores": self.scores, "similarities": self.similarities.astype(np.float32),
                "colors": colors, "part_names": np.array(self.names, dtype=str),
                "sample_points": self.sample_points, "sample_labels": self.sample_labels,
                "sample_similarities": self.sample_similarities.astype(np.float32),
                "legend_json": np.array(json.dumps(self.legend())),
            }
            if s.is_mesh:
                arrays.update(faces=s.faces, face_labels=self.face_labels, face_scores=self.face_scores)
            return write_npz(path, **arrays)
        raise SegmentError(f"output {path} must end in .glb, .ply or .npz")

    def write_png(self, path: str | os.PathLike, *, colors: np.ndarray | None = None, title: str = "") -> Path:
        """Several views of the coloured vertices / points with the up axis upright."""
        pal = self.palette()
        legend = [(n, pal[i].tolist()) for i, n in enumerate(self.names)] if colors is None else []
        pts, col = self.shape.vertices, self.colors() if colors is None else colors
        if self.shape.is_mesh and len(pts) < 4 * len(self.sample_points):  # sparse vertices: draw the samples
            pts = np.concatenate([pts, self.sample_points])
            from pa3d_train.viz import colorize_labels

            extra = colorize_labels(self.sample_labels, len(self.names)) if colors is None else None
            if extra is None:
                pts = self.shape.vertices
            else:
                col = np.concatenate([col, extra])
        return save_views_png(path, pts, col, legend=legend, up_axis=self.up_axis,
                              title=title or self.shape.path.name)


class Segmenter:
    """A model and a text encoder ready to segment shapes; caches text embeddings between calls.

    Args:
        model: a :class:`~pa3d_models.PatchAlign3D`.
        encoder: a text encoder (``encode(names) -> (L, D)``).
        untrained: the weights are random (results are flagged and a warning is printed).
        checkpoint: what was loaded (for the legend).
        cache_size: part-name lists whose embeddings are kept.
    """

    def __init__(self, model: torch.nn.Module, encoder: Any, *, untrained: bool = False, checkpoint: str | None = None,
                 cache_size: int = 64) -> None:
        self.model = model.eval()
        self.encoder = encoder
        self.untrained = untrained
        self.checkpoint = checkpoint
        self._cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self.cache_hits = 0

    def text(self, names: Sequence[str]) -> torch.Tensor:
        """``(L, D)`` embeddings of ``names``, from the cache when these names were encoded before."""
        key = tuple(names)
        if key in self._cache:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return self._cache[key]
        feats = self.encoder.encode(list(names))
        if not isinstance(feats, torch.Tensor) or not bool(torch.isfinite(feats).all()):
            raise SegmentError(f"the text encoder {getattr(self.encoder, 'name', '?')} gave NaN/Inf features "
                               f"for the part names {list(names)}")
        self._cache[key] = feats
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return feats

    def __call__(
        self,
        shape: LoadedShape,
        names: Sequence[str],
        *,
        num_points: int = 2048,
        seed: int = 0,
        normalize: bool = True,
        up_axis: str | None = None,
        swap_yz: bool = False,
        min_score: float | None = None,
        assign: str = "nearest",
        k: int = 3,
        votes: int = 1,
        calibration: str = "none",
    ) -> ShapeSegmentation:
        """Segment ``shape``: sample ``num_points``, run the model, carry the result to every vertex/point.

        ``normalize`` centres (on the samples' mean, in float64) and scales to the unit sphere before the
        cast to the model's dtype; ``up_axis`` (the input's up axis) is rotated onto +z for the model and
        sets the pictures' vertical (detected from the extent when None); ``swap_yz`` applies the official
        release's Y/Z swap. ``votes > 1`` averages the similarities of that many passes over the samples in
        other orders (other patch centres; :func:`pa3d_train.segment_votes`): smoother part borders, ``votes``
        times the model's time. ``calibration="prior"`` reads every label (samples, vertices, faces) after the
        per-shape prior correction computed on the samples (:func:`pa3d_layers.prior_correction`: a name that
        wins nearly everywhere gives way where another is relatively strongest; what the recipe evaluates with).
        """
        from pa3d_data import sample_surface

        names = parse_part_names(list(names))
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise SegmentError(f"--num-points must be an int >= 1, got {num_points!r}")
        if min_score is not None and (not isinstance(min_score, (int, float)) or not math.isfinite(min_score)):
            raise SegmentError(f"--min-score must be a finite number, got {min_score!r}")
        if up_axis not in (None, "x", "y", "z"):
            raise SegmentError(f"--up-axis must be x, y or z, got {up_axis!r}")
        if isinstance(votes, bool) or not isinstance(votes, int) or votes < 1:
            raise SegmentError(f"--votes must be an int >= 1, got {votes!r}")
        if calibration not in CALIBRATIONS:
            raise SegmentError(f"--calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        g = torch.Generator().manual_seed(int(seed))
        centre = (shape.vertices.min(0) + shape.vertices.max(0)) / 2  # float64: far-off shapes keep precision
        face_ids = None
        if shape.is_mesh:
            try:
                pts, fid, _ = sample_surface(shape.vertices - centre, shape.faces, num_points, generator=g,
                                             path=shape.path)
            except ValueError as err:
                raise SegmentError(f"cannot sample {shape.path}: {err}") from err
            samples = pts.double().numpy() + centre
            face_ids = fid.numpy()
        else:
            n = len(shape.vertices)
            keep = torch.randperm(n, generator=g)[:num_points].numpy() if n > num_points else np.arange(n)
            samples = shape.vertices[keep]
        need = max(int(self.model.encoder.config["group_size"]), int(self.model.encoder.num_groups))
        if len(samples) < need:
            raise SegmentError(
                f"{shape.path} gives {len(samples)} points, fewer than the model needs ({need}); "
                "raise --num-points or use a denser input"
            )
        x = samples - samples.mean(0)  # float64 centring first, then the cast
        if swap_yz:
            x = x[:, [0, 2, 1]]
        if up_axis is not None and up_axis != "z":  # cyclic (proper) rotation putting the given axis on +z
            x = x[:, [1, 2, 0]] if up_axis == "x" else x[:, [2, 0, 1]]
        if normalize:
            radius = float(np.linalg.norm(x, axis=1).max())
            if radius > 0:
                x = x / radius
        else:
            x = x + samples.mean(0)  # the file's coordinates, as asked
        device = next(self.model.parameters()).device
        model_points = torch.as_tensor(x, dtype=torch.float32, device=device)
        try:
            if votes == 1:
                result = self.model.segment(model_points, names, self.text(names), assign=assign,
                                            min_score=min_score, k=k)
                sample_sims = result.similarities.double().cpu().numpy()
            else:
                from pa3d_train.evaluate import segment_votes

                sample_sims = segment_votes(self.model, model_points, names, self.text(names), votes=votes,
                                            assign=assign, k=k, seed=int(seed)).double().cpu().numpy()
        except ValueError as err:
            raise SegmentError(f"{shape.path}: {err}") from err
        scale, bias = self.model.logit_params()
        scale_f = float(scale.detach())
        bias_f = None if bias is None else float(bias.detach())
        prior = (name_prior(torch.from_numpy(sample_sims), scale_f).numpy() if calibration == "prior" else None)
        sample_labels = (result.labels.cpu().numpy() if votes == 1 and prior is None
                         else labels_from_similarities(sample_sims, scale_f, bias_f, min_score, prior=prior)[0])
        sims = transfer_similarities(samples, sample_sims, shape.vertices, k=k)
        labels, scores = labels_from_similarities(sims, scale_f, bias_f, min_score, prior=prior)
        face_labels = face_scores = None
        if shape.is_mesh:
            fsims = face_similarities(shape.faces, sims, face_ids, sample_sims)
            face_labels, face_scores = labels_from_similarities(fsims, scale_f, bias_f, min_score, prior=prior)
        info = {
            "text_encoder": getattr(self.encoder, "name", type(self.encoder).__name__),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "untrained": bool(self.untrained),
            "num_points": int(len(samples)),
            "min_score": min_score,
            "assign": assign,
            "votes": votes,
            "calibration": calibration,
        }
        return ShapeSegmentation(
            shape=shape, names=names, similarities=sims, labels=labels, scores=scores, face_labels=face_labels,
            face_scores=face_scores, sample_points=samples, sample_labels=sample_labels,
            sample_similarities=sample_sims, up_axis=up_axis or detect_up_axis(shape.vertices), info=info,
        )


# --------------------------------------------------------------------------------------------- outputs


def write_ply(
    path: str | os.PathLike,
    points: torch.Tensor | np.ndarray,
    colors: np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    binary: bool = False,
    comments: Sequence[str] = (),
) -> Path:
    """Write ``x y z red green blue label`` points as PLY (full-precision doubles; atomically).

    Kept for scripts; :func:`pa3d_data.write_ply_points` is the general writer.
    """
    from pa3d_data.writers import write_ply_points

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(colors).reshape(-1, 3)
    lab = np.asarray(labels).reshape(-1)
    if not (len(pts) == len(rgb) == len(lab)):
        raise ValueError(f"points, colors and labels must have the same length, got {len(pts)}, {len(rgb)}, {len(lab)}")
    return write_ply_points(path, pts, colors=rgb, labels=lab, binary=binary, comments=comments)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("_") or "part"


@dataclass
class _Plan:
    """The files one input produces: kind -> path (``output``, ``png``, ``legend``, ``scores``, heatmaps)."""

    source: Path
    files: dict[str, Path]


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_plans(plans: list[_Plan], inputs: Sequence[Path]) -> None:
    """Refuse any output that names an input or another output."""
    flag = {"output": "--output", "png": "--png", "legend": "--legend", "scores": "--scores"}
    seen: list[tuple[Path, str]] = []
    for plan in plans:
        for kind, path in plan.files.items():
            what = flag.get(kind, f"--heatmap {kind.split(':', 1)[-1]}")
            if len(plans) > 1:
                what = f"the {what.lstrip('-')} of {plan.source}"
            for src in inputs:
                if _same(path, src):
                    raise SegmentError(f"refusing to overwrite the input {src} with {what} {path}")
            for other, other_what in seen:
                if _same(path, other):
                    raise SegmentError(f"{what} {path} and {other_what} {other} name the same file")
            seen.append((path, what))


def _check_folder(folder: Path, flag: str) -> None:
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SegmentError(f"{flag} folder {folder} cannot be created: {parent} exists and is a file")
            break


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{path.suffix}")


def _write_plan(seg: ShapeSegmentation, plan: _Plan, *, binary: bool) -> None:
    """Write every file of ``plan`` to a temporary name, then move them all into place."""
    from pa3d_models.files import atomic_write_bytes

    temps: list[tuple[Path, Path]] = []
    try:
        for kind, final in plan.files.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_beside(final)
            temps.append((tmp, final))
            if kind == "output":
                seg.write(tmp, binary=binary)
            elif kind == "scores":
                seg.write(tmp)
            elif kind == "png":
                seg.write_png(tmp)
            elif kind == "legend":
                atomic_write_bytes(tmp, json.dumps(seg.legend(), indent=2, ensure_ascii=False) + "\n")
            elif kind.startswith(("heatmap:", "heatmap-png:")):
                part = kind.split(":", 1)[1]
                colors = seg.heatmap_colors(part)
                if final.suffix == ".png":
                    seg.write_png(tmp, colors=colors, title=f"{seg.shape.path.name}: {part}")
                else:
                    seg.write(tmp, colors=colors, binary=binary)
        for tmp, final in temps:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def _plan_for(
    source: Path,
    *,
    output: Path,
    png: str | None,
    legend: str | None,
    scores: bool,
    heatmaps: Sequence[str],
    single: bool,
) -> _Plan:
    stem = output.with_suffix("")
    files: dict[str, Path] = {"output": output}
    if png is not None:
        files["png"] = Path(png) if (single and png != _AUTO) else Path(f"{stem}.png")
    if legend is not None:
        files["legend"] = Path(legend) if (single and legend != _AUTO) else Path(f"{stem}.legend.json")
    if scores and output.suffix.lower() != ".npz":
        files["scores"] = Path(f"{stem}.scores.npz")
    for part in heatmaps:
        ext = output.suffix.lower() if output.suffix.lower() in (".glb", ".ply") else ".ply"
        files[f"heatmap:{part}"] = Path(f"{stem}.heatmap-{_slug(part)}{ext}")
        if png is not None:  # the pictures too: one PNG per heatmap beside the parts' PNG
            base = files["png"]
            files[f"heatmap-png:{part}"] = base.with_name(f"{base.stem}.heatmap-{_slug(part)}.png")
    return _Plan(source, files)


_AUTO = "\0auto"


def segment_files(
    inputs: Sequence[str | os.PathLike],
    parts: str | Sequence[str],
    *,
    output: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    fmt: str | None = None,
    checkpoint: str | None = None,
    trusted: bool = False,
    text_model: str = "auto",
    model_name: str = "patchalign3d_base",
    png: str | None = None,
    legend: str | None = None,
    scores: bool = False,
    heatmaps: Sequence[str] = (),
    normalize: bool = True,
    up_axis: str | None = None,
    swap_yz: bool = False,
    min_score: float | None = None,
    num_points: int = 2048,
    assign: str = "nearest",
    votes: int = 1,
    calibration: str = "none",
    binary: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Segment one or more inputs and write one set of outputs per input; the library form of ``pa3d segment``.

    Args:
        inputs: files, folders or glob patterns.
        parts: the part names (``"a,b,c"`` or a list).
        output: the output file for a single input (``.glb``, ``.ply`` or ``.npz``).
        out_dir: the folder for several inputs (``<stem>.<fmt>`` each).
        fmt: ``"glb"``, ``"ply"`` or ``"npz"`` in ``out_dir`` (default: ``glb`` for meshes, ``ply`` for points).
        png: a PNG path for a single input, or ``"auto"`` (``<output stem>.png``).
        legend: a JSON path for a single input, or ``"auto"`` (``<output stem>.legend.json``).
        scores: also write ``<output stem>.scores.npz`` (labels, scores, per-part similarities).
        heatmaps: parts to write ``<output stem>.heatmap-<part>.<ext>`` for (coloured by similarity).

    Returns:
        One legend dict per input (see :meth:`ShapeSegmentation.legend`).

    The other keywords are the command-line flags of ``pa3d segment``.
    """
    names = parse_part_names(parts)
    paths = expand_inputs(inputs)
    if not paths:
        raise SegmentError("no input given")
    png = _AUTO if png == "auto" else png
    legend = _AUTO if legend == "auto" else legend
    single = len(paths) == 1 and out_dir is None
    if fmt is not None and fmt not in _FORMATS:
        raise SegmentError(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if single:
        if output is None:
            raise SegmentError("give --output FILE (.glb, .ply or .npz) for one input, or --out-dir DIR")
        output = Path(output)
        if output.suffix.lower() not in (".glb", ".ply", ".npz"):
            raise SegmentError(f"--output must end in .glb, .ply or .npz, got {output}")
        if output.is_dir():
            raise SegmentError(f"--output {output} is a directory; name a file, or use --out-dir for folders")
        _check_folder(output.parent if str(output.parent) else Path("."), "--output")
    else:
        if output is not None:
            raise SegmentError(f"{len(paths)} inputs need --out-dir DIR (one output per input), not --output")
        if out_dir is None:
            raise SegmentError(f"{len(paths)} inputs need --out-dir DIR (one output per input)")
        for flag, value in (("--png", png), ("--legend", legend)):
            if value not in (None, _AUTO):
                raise SegmentError(f"with several inputs {flag} takes no file name (each input gets <stem>"
                                   f"{'.png' if flag == '--png' else '.legend.json'} in --out-dir)")
        _check_folder(Path(out_dir), "--out-dir")
    for part in heatmaps:
        from pa3d_models.text import clean_part_name

        if clean_part_name(part) not in [clean_part_name(n) for n in names]:
            raise SegmentError(f"--heatmap part {part!r} is not one of the part names {names}")
    plans = []
    for p in paths:
        if single:
            out = output
        else:
            kind = fmt or ("glb" if p.suffix.lower() in _MESH_SUFFIXES else "ply")
            out = Path(out_dir) / f"{p.stem}.{kind}"
        plans.append(_plan_for(p, output=Path(out), png=png, legend=legend, scores=scores, heatmaps=heatmaps,
                               single=single))
    _check_plans(plans, paths)

    encoder = load_text_encoder(text_model)
    model, untrained = load_model(checkpoint, model_name=model_name, text_dim=encoder.dim, trusted=trusted,
                                  seed=seed)
    if untrained:
        log(f"WARNING: no --checkpoint given: running UNTRAINED (random) {model_name} weights; the parts it finds "
            "are meaningless. Pass --checkpoint DIR|official.pt|hf://... for real results.")
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise SegmentError(f"--device {device}: {err}") from err
    segmenter = Segmenter(model, encoder, untrained=untrained, checkpoint=checkpoint)
    legends = []
    errors: list[str] = []
    bar = plans
    if progress and len(plans) > 1:
        try:
            from tqdm import tqdm

            bar = tqdm(plans, desc="pa3d segment", unit="shape", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm ships with the cli extra
            pass
    for plan in bar:
        try:
            shape = load_shape(plan.source)
            seg = segmenter(shape, names, num_points=num_points, seed=seed, normalize=normalize, up_axis=up_axis,
                            swap_yz=swap_yz, min_score=min_score, assign=assign, votes=votes,
                            calibration=calibration)
            _write_plan(seg, plan, binary=binary)
        except SegmentError as err:
            if single:
                raise
            errors.append(str(err))
            continue
        leg = seg.legend()
        leg["files"] = {k: str(v) for k, v in plan.files.items()}
        legends.append(leg)
    if errors:
        raise SegmentError(f"{len(errors)} of {len(plans)} inputs failed (the others were written): "
                           + "; ".join(errors))
    return legends


def segment_file(
    input_path: str | os.PathLike,
    parts: str | list[str],
    *,
    output: str | os.PathLike,
    **kwargs: Any,
) -> dict[str, Any]:
    """Segment one file and write its outputs (see :func:`segment_files` for the keywords).

    Returns:
        The legend: ``{"parts": [{"label", "name", "color", "points", "faces"}], "unlabelled": n, ...}``.
    """
    return segment_files([input_path], parts, output=output, **kwargs)[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pa3d segment``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  pa3d segment penguin.obj --parts head,body,wing,foot --output penguin.glb\n"
        "  pa3d segment penguin.obj --parts head,body,wing,foot -o penguin.ply --png --scores --heatmap wing\n"
        "  pa3d segment 'shapes/*.obj' scans/ --parts leg,seat,back --out-dir out --format ply\n"
        "Without --checkpoint the weights are random (a loud warning); train with recipes/patchalign3d.py."
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="meshes (OBJ, OFF, STL, GLB/GLTF, PLY with faces) or point clouds (PLY, PCD, NPZ, "
                             "NPY, XYZ, TXT); a folder or a quoted glob gives many")
    parser.add_argument("--parts", required=True, help='comma-separated part names, e.g. "leg,seat,back"')
    parser.add_argument("--output", "-o", help="the file to write for one input: .glb (mesh with vertex colours, "
                                               "labels, scores), .ply (mesh with faces, or every point) or .npz")
    parser.add_argument("--out-dir", help="folder for several inputs: <stem>.<format> per input")
    parser.add_argument("--format", choices=_FORMATS, dest="fmt",
                        help="output format in --out-dir (default: glb for meshes, ply for point clouds)")
    parser.add_argument("--checkpoint", help="pa3d checkpoint dir, official .pt, or hf://ORG/REPO[/FILE]")
    parser.add_argument("--trusted", action="store_true",
                        help="allow a legacy official .pt pickle (it can run code: only for files you trust)")
    parser.add_argument("--text-model", default="auto",
                        help="text encoder spec: auto (default), open_clip[:MODEL[:PRETRAINED]], minilm, "
                             "sentence-transformers:PATH, fixed[:DIM]")
    parser.add_argument("--model", default="patchalign3d_base", help="registered config used without --checkpoint")
    parser.add_argument("--png", nargs="?", const="auto",
                        help="also draw several views to this PNG (alone: <output stem>.png)")
    parser.add_argument("--legend", nargs="?", const="auto",
                        help="also write the legend as JSON (alone: <output stem>.legend.json)")
    parser.add_argument("--scores", action="store_true",
                        help="also write <output stem>.scores.npz: labels, scores and per-part similarities")
    parser.add_argument("--heatmap", action="append", default=[], metavar="PART",
                        help="also write <output stem>.heatmap-PART.<ext> coloured by PART's similarity "
                             "(repeatable)")
    parser.add_argument("--no-normalize", action="store_true", help="do not centre and scale to the unit sphere")
    parser.add_argument("--up-axis", choices=["x", "y", "z"],
                        help="input's up axis: rotated onto +z for the model, upright in pictures and the GLB "
                             "(default: the model sees the file's axes; pictures guess from the extent)")
    parser.add_argument("--swap-yz", action="store_true", help="swap Y and Z (the official release's convention)")
    parser.add_argument("--min-score", type=float, help="points scoring below this get label -1 (no label)")
    parser.add_argument("--num-points", type=int, default=2048, help="points the model sees per shape (2048)")
    parser.add_argument("--assign", default="nearest", choices=["nearest", "membership", "idw"],
                        help="patch -> point assignment (nearest centre by default)")
    parser.add_argument("--votes", type=int, default=1,
                        help="passes over the samples in other orders (other patch centres), similarities "
                             "averaged: smoother part borders for VOTES times the time (default 1; the recipe "
                             "evaluates with 8)")
    parser.add_argument("--calibration", default="none", choices=list(CALIBRATIONS),
                        help="prior: read each label after the per-shape prior correction (a part name that wins "
                             "nearly everywhere gives way where another is relatively strongest; the recipe "
                             "evaluates with it); none: each point's best-scoring name (default, the official rule)")
    parser.add_argument("--binary", action="store_true", help="write binary little-endian PLY")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and untrained weights")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _fail(command: str, err: BaseException, debug: bool) -> int:
    if debug:
        raise err
    if isinstance(err, OSError):
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"pa3d {command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    print(f"pa3d {command}: error: {err}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``pa3d segment``."""
    try:
        if args.min_score is not None and not math.isfinite(args.min_score):
            raise SegmentError(f"--min-score must be a finite number, got {args.min_score}")
        legends = segment_files(
            args.inputs, args.parts, output=args.output, out_dir=args.out_dir, fmt=args.fmt,
            checkpoint=args.checkpoint, trusted=args.trusted, text_model=args.text_model, model_name=args.model,
            png=args.png, legend=args.legend, scores=args.scores, heatmaps=args.heatmap,
            normalize=not args.no_normalize, up_axis=args.up_axis, swap_yz=args.swap_yz, min_score=args.min_score,
            num_points=args.num_points, assign=args.assign, votes=args.votes, calibration=args.calibration,
            binary=args.binary, seed=args.seed, device=args.device,
        )
    except (SegmentError, ValueError, RuntimeError, OSError) as err:
        return _fail("segment", err, getattr(args, "debug", False))
    for legend in legends:
        count = legend.get("vertices", legend.get("points"))
        what = f"{count} vertices, {legend['faces']} faces" if legend["kind"] == "mesh" else f"{count} points"
        print(f"wrote {', '.join(legend['files'].values())} ({what})")
        for p in legend["parts"]:
            print(f"  {p['label']:>3}  {p['name']:<24} rgb{tuple(p['color'])}  {p['points']} "
                  f"{'vertices' if legend['kind'] == 'mesh' else 'points'}")
        if legend["unlabelled"]:
            print(f"   -1  {'(no label)':<24} rgb(170, 170, 170)  {legend['unlabelled']}")
    return 0
