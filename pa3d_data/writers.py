"""Writers for labelled shapes: binary glTF (GLB) and PLY meshes with per-vertex colours, labels and scores,
full-precision PLY point clouds, and NPZ archives.

Every writer is atomic (:mod:`pa3d_models.files`): a reader never sees a partial file and an error leaves the
target untouched. Coordinates are never rounded: PLY stores them as ``double`` (binary or ``%.17g``), and the
GLB stores float32 offsets from the shape's centre with the centre itself, in float64, as the node's
translation, so a shape far from the origin (1e6 + U(0, 1)) keeps sub-millimetre precision.

Part names go into PLY comments and glTF ``extras`` as JSON strings (``\\uXXXX`` escapes), so the PLY
header stays ASCII whatever the names are.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "write_glb",
    "write_ply_mesh",
    "write_ply_points",
    "write_npz",
    "read_glb",
    "heatmap_colors",
    "UP_AXIS_ROTATIONS",
]

#: Node rotation (glTF quaternion ``x, y, z, w``) that turns a shape whose up axis is the key into glTF's
#: y-up frame without touching its vertex data.
UP_AXIS_ROTATIONS: dict[str, list[float]] = {
    "y": [0.0, 0.0, 0.0, 1.0],
    "z": [-float(np.sqrt(0.5)), 0.0, 0.0, float(np.sqrt(0.5))],  # -90 deg about x: +z -> +y
    "x": [0.0, 0.0, float(np.sqrt(0.5)), float(np.sqrt(0.5))],  # +90 deg about z: +x -> +y
}

# A perceptually ordered ramp (viridis, 9 stops) for heatmaps; no matplotlib needed.
_RAMP = np.array(
    [
        [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
        [31, 158, 137], [53, 183, 121], [109, 205, 89], [253, 231, 37],
    ],
    dtype=np.float64,
)


def heatmap_colors(values: Any, *, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map scalars to uint8 RGB along a viridis ramp (low = purple, high = yellow).

    Args:
        values: ``(N,)`` scalars.
        vmin: value drawn as the lowest colour (default: the minimum).
        vmax: value drawn as the highest colour (default: the maximum).

    Returns:
        ``(N, 3)`` uint8 colours; a constant input is drawn in the middle colour.

    Examples:
        >>> heatmap_colors([0.0, 1.0]).tolist()
        [[68, 1, 84], [253, 231, 37]]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise ValueError(f"values must be finite, got {int((~np.isfinite(v)).sum())} NaN/Inf values")
    if v.size == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    lo = float(v.min()) if vmin is None else float(vmin)
    hi = float(v.max()) if vmax is None else float(vmax)
    t = np.full_like(v, 0.5) if hi <= lo else np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    x = t * (len(_RAMP) - 1)
    i = np.minimum(np.floor(x).astype(np.int64), len(_RAMP) - 2)
    f = (x - i)[:, None]
    return np.rint(_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ checks


def _vertices(vertices: Any, name: str = "vertices") -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(v)).any(1).sum())} rows with NaN/Inf")
    return v


def _faces(faces: Any, num_vertices: int) -> np.ndarray:
    f = np.asarray(faces)
    if f.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise ValueError(f"faces must be (F, 3) integer vertex indices, got shape {f.shape} dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= num_vertices:
        raise ValueError(f"faces must index the {num_vertices} vertices, got indices in [{f.min()}, {f.max()}]")
    return f


def _per_row(values: Any, n: int, name: str, dtype: Any, width: int | None = None) -> np.ndarray | None:
    if values is None:
        return None
    a = np.asarray(values)
    want = (n,) if width is None else (n, width)
    if a.shape != want:
        raise ValueError(f"{name} must have shape {want} (one row per element), got {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a.astype(dtype)


def _colors(colors: Any, n: int, name: str = "colors") -> np.ndarray | None:
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"{name} must be (N, 3) uint8 RGB with N = {n}, got shape {c.shape}")
    if c.dtype.kind == "f":
        if not np.isfinite(c).all() or c.min() < 0 or c.max() > 1:
            raise ValueError(f"float {name} must lie in [0, 1]")
        return np.rint(c * 255).astype(np.uint8)
    if c.min(initial=0) < 0 or c.max(initial=0) > 255:
        raise ValueError(f"{name} must lie in [0, 255]")
    return c.astype(np.uint8)


def _comment_lines(comments: Sequence[str]) -> list[str]:
    out = []
    for c in comments:
        text = json.dumps(str(c), ensure_ascii=True)[1:-1]  # ASCII, no newlines, names recoverable
        out.append(f"comment {text}")
    return out


def _atomic(path: str | os.PathLike, data: bytes) -> Path:
    from pa3d_models.files import atomic_write_bytes

    return atomic_write_bytes(path, data)


# ------------------------------------------------------------------------------------------------ PLY


def _ply_bytes(
    vertices: np.ndarray,
    vertex_fields: list[tuple[str, str, np.ndarray]],
    faces: np.ndarray | None,
    face_fields: list[tuple[str, str, np.ndarray]],
    *,
    binary: bool,
    comments: Sequence[str],
) -> bytes:
    """PLY with double xyz plus the given per-vertex and per-face scalar fields ``(name, ply_type, values)``."""
    ply_np = {"uchar": "u1", "int": "<i4", "float": "<f4", "double": "<f8"}
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", *_comment_lines(comments)]
    header.append(f"element vertex {len(vertices)}")
    header += [f"property double {a}" for a in "xyz"]
    header += [f"property {t} {n}" for n, t, _ in vertex_fields]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        header += [f"property {t} {n}" for n, t, _ in face_fields]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        vdt = np.dtype([("xyz", "<f8", 3)] + [(n, ply_np[t]) for n, t, _ in vertex_fields])
        rec = np.empty(len(vertices), dtype=vdt)
        rec["xyz"] = vertices
        for n, _, v in vertex_fields:
            rec[n] = v
        body = [rec.tobytes()]
        if faces is not None:
            fdt = np.dtype([("n", "u1"), ("idx", "<i4", 3)] + [(n, ply_np[t]) for n, t, _ in face_fields])
            frec = np.empty(len(faces), dtype=fdt)
            frec["n"] = 3
            frec["idx"] = faces
            for n, _, v in face_fields:
                frec[n] = v
            body.append(frec.tobytes())
        return head + b"".join(body)

    def rows(cols: list[np.ndarray], fmts: list[str]) -> bytes:
        if not cols or len(cols[0]) == 0:
            return b""
        fmt = " ".join(fmts) + "\n"
        return "".join(fmt % tuple(r) for r in zip(*[c.tolist() for c in cols])).encode("ascii")

    fmt_of = {"uchar": "%d", "int": "%d", "float": "%r", "double": "%r"}  # repr: shortest exact form
    vcols = [vertices[:, 0], vertices[:, 1], vertices[:, 2]] + [v for _, _, v in vertex_fields]
    body = rows(vcols, ["%r"] * 3 + [fmt_of[t] for _, t, _ in vertex_fields])
    if faces is not None:
        fcols = [np.full(len(faces), 3), faces[:, 0], faces[:, 1], faces[:, 2]] + [v for _, _, v in face_fields]
        body += rows(fcols, ["%d"] * 4 + [fmt_of[t] for _, t, _ in face_fields])
    return head + body


def write_ply_points(
    path: str | os.PathLike,
    points: Any,
    *,
    colors: Any = None,
    labels: Any = None,
    scores: Any = None,
    binary: bool = False,
    comments: Sequence[str] = (),
) -> Path:
    """Write a point cloud as PLY: ``double x y z`` and, when given, ``uchar red green blue``, ``int label``,
    ``float score`` per point.

    Args:
        path: the file to write (atomically).
        points: ``(N, 3)`` coordinates, written at full (float64) precision.
        colors: ``(N, 3)`` uint8 RGB (or float in [0, 1]).
        labels: ``(N,)`` integer part indices (-1 = no label).
        scores: ``(N,)`` per-point scores.
        binary: binary little-endian instead of ASCII.
        comments: header comments (written ASCII-escaped).

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib
        >>> p = write_ply_points(pathlib.Path(tempfile.mkdtemp()) / "p.ply", [[1e6 + 0.123456789, 0, 0]])
        >>> p.read_text().splitlines()[-1]
        '1000000.123456789 0.0 0.0'
    """
    v = _vertices(points, "points")
    fields = _point_fields(len(v), colors, labels, scores)
    return _atomic(path, _ply_bytes(v, fields, None, [], binary=binary, comments=comments))


def _point_fields(n: int, colors: Any, labels: Any, scores: Any) -> list[tuple[str, str, np.ndarray]]:
    fields: list[tuple[str, str, np.ndarray]] = []
    rgb = _colors(colors, n)
    if rgb is not None:
        fields += [("red", "uchar", rgb[:, 0]), ("green", "uchar", rgb[:, 1]), ("blue", "uchar", rgb[:, 2])]
    lab = _per_row(labels, n, "labels", np.int64)
    if lab is not None:
        fields.append(("label", "int", lab))
    sc = _per_row(scores, n, "scores", np.float32)
    if sc is not None:
        fields.append(("score", "float", sc))
    return fields


def write_ply_mesh(
    path: str | os.PathLike,
    vertices: Any,
    faces: Any,
    *,
    colors: Any = None,
    labels: Any = None,
    scores: Any = None,
    face_labels: Any = None,
    binary: bool = False,
    comments: Sequence[str] = (),
) -> Path:
    """Write a triangle mesh as PLY with per-vertex colours, labels and scores and per-face labels.

    Args:
        path: the file to write (atomically).
        vertices: ``(V, 3)`` coordinates (written as ``double``).
        faces: ``(F, 3)`` vertex indices.
        colors: ``(V, 3)`` uint8 RGB per vertex.
        labels: ``(V,)`` part index per vertex.
        scores: ``(V,)`` score per vertex.
        face_labels: ``(F,)`` part index per face.
        binary: binary little-endian instead of ASCII.
        comments: header comments (written ASCII-escaped).

    Returns:
        The path written.
    """
    v = _vertices(vertices)
    f = _faces(faces, len(v))
    fields = _point_fields(len(v), colors, labels, scores)
    flab = _per_row(face_labels, len(f), "face_labels", np.int64)
    face_fields = [("label", "int", flab)] if flab is not None else []
    return _atomic(path, _ply_bytes(v, fields, f, face_fields, binary=binary, comments=comments))


# ------------------------------------------------------------------------------------------------ GLB

_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125


def write_glb(
    path: str | os.PathLike,
    vertices: Any,
    faces: Any = None,
    *,
    colors: Any = None,
    labels: Any = None,
    scores: Any = None,
    face_labels: Any = None,
    attributes: Mapping[str, Any] | None = None,
    up_axis: str = "y",
    extras: Mapping[str, Any] | None = None,
) -> Path:
    """Write a mesh (or, without faces, a point cloud) as binary glTF 2.0.

    Vertex colours go to ``COLOR_0`` (shown by every glTF viewer), labels and scores to the custom vertex
    attributes ``_LABEL`` and ``_SCORE`` (float32), per-face labels to an accessor named ``face_labels``
    referenced from ``extras["pa3d"]["face_labels_accessor"]``. Positions are float32 offsets from the
    bounding-box centre; the centre (float64) is the node's translation, and ``up_axis`` sets the node's
    rotation so viewers (y-up) show the shape upright. The vertex data keeps the file's frame.

    Args:
        path: the file to write (atomically).
        vertices: ``(V, 3)`` coordinates.
        faces: ``(F, 3)`` triangle vertex indices; None or empty writes points (mode ``POINTS``).
        colors: ``(V, 3)`` uint8 RGB per vertex.
        labels: ``(V,)`` part index per vertex (-1 = none).
        scores: ``(V,)`` score per vertex.
        face_labels: ``(F,)`` part index per face.
        attributes: more ``(V,)`` float per-vertex attributes, named without the leading underscore.
        up_axis: the shape's up axis, ``"x"``, ``"y"`` or ``"z"``.
        extras: JSON-serialisable data stored under ``extras["pa3d"]`` (e.g. the part names).

    Returns:
        The path written.
    """
    if up_axis not in UP_AXIS_ROTATIONS:
        raise ValueError(f"up_axis must be 'x', 'y' or 'z', got {up_axis!r}")
    v = _vertices(vertices)
    if len(v) == 0:
        raise ValueError("vertices must hold at least one vertex, got 0")
    f = _faces(faces, len(v)) if faces is not None else np.zeros((0, 3), np.int64)
    centre = (v.min(0) + v.max(0)) / 2
    local = (v - centre).astype(np.float32)
    blobs: list[bytes] = []
    views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []

    def add(array: np.ndarray, component: int, kind: str, *, target: int | None, normalized: bool = False,
            minmax: bool = False, name: str | None = None) -> int:
        data = np.ascontiguousarray(array).tobytes()
        offset = sum(len(b) for b in blobs)
        blobs.append(data + b"\x00" * (-len(data) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        acc: dict[str, Any] = {"bufferView": len(views) - 1, "componentType": component, "count": len(array),
                               "type": kind}
        if normalized:
            acc["normalized"] = True
        if minmax:
            acc["min"] = [float(x) for x in array.min(0)]
            acc["max"] = [float(x) for x in array.max(0)]
        if name:
            acc["name"] = name
        accessors.append(acc)
        return len(accessors) - 1

    attrs: dict[str, int] = {"POSITION": add(local, _FLOAT, "VEC3", target=34962, minmax=True)}
    rgb = _colors(colors, len(v))
    if rgb is not None:
        rgba = np.concatenate([rgb, np.full((len(v), 1), 255, np.uint8)], axis=1)
        attrs["COLOR_0"] = add(rgba, _UBYTE, "VEC4", target=34962, normalized=True)
    named = [("LABEL", "labels", labels), ("SCORE", "scores", scores)]
    named += [(str(k).upper(), f"attributes[{k!r}]", a) for k, a in dict(attributes or {}).items()]
    for key, argname, values in named:
        arr = _per_row(values, len(v), argname, np.float32)
        if arr is not None:
            attrs[f"_{key}"] = add(arr, _FLOAT, "SCALAR", target=34962)
    primitive: dict[str, Any] = {"attributes": attrs, "mode": 4 if len(f) else 0, "material": 0}
    if len(f):
        primitive["indices"] = add(f.reshape(-1).astype(np.uint32), _UINT, "SCALAR", target=34963)
    pa3d_extras: dict[str, Any] = dict(extras or {})
    flab = _per_row(face_labels, len(f), "face_labels", np.float32)
    if flab is not None:
        pa3d_extras["face_labels_accessor"] = add(flab, _FLOAT, "SCALAR", target=None, name="face_labels")
    binary = b"".join(blobs)
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "pa3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "translation": [float(x) for x in centre], "rotation": UP_AXIS_ROTATIONS[up_axis]}],
        "meshes": [{"primitives": [primitive]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0,
                                                "roughnessFactor": 1.0}, "doubleSided": True}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if pa3d_extras:
        gltf["extras"] = {"pa3d": pa3d_extras}
    js = json.dumps(gltf, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    out = struct.pack("<4sII", b"glTF", 2, total)
    out += struct.pack("<I4s", len(js), b"JSON") + js
    out += struct.pack("<I4s", len(binary), b"BIN\x00") + binary
    return _atomic(path, out)


def read_glb(path: str | os.PathLike) -> dict[str, Any]:
    """Read back a GLB written by :func:`write_glb` (one mesh, one primitive).

    Returns:
        ``{"gltf": the JSON, "vertices": (V, 3) float64 in the file's frame, "faces": (F, 3),
        "attributes": {name: array}, "face_labels": (F,) or None}``.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 20 or raw[:4] != b"glTF":
        raise ValueError(f"{path} is not a binary glTF file (no 'glTF' magic)")
    _, version, total = struct.unpack_from("<4sII", raw, 0)
    if version != 2 or total != len(raw):
        raise ValueError(f"{path}: glTF version {version}, length {total} (file holds {len(raw)} bytes)")
    jlen, jtype = struct.unpack_from("<I4s", raw, 12)
    if jtype != b"JSON":
        raise ValueError(f"{path}: the first chunk is not JSON")
    gltf = json.loads(raw[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<I4s", raw, 20 + jlen)
    if btype != b"BIN\x00":
        raise ValueError(f"{path}: the second chunk is not BIN")
    binary = raw[28 + jlen : 28 + jlen + blen]
    kinds = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
    dtypes = {_FLOAT: np.float32, _UBYTE: np.uint8, _UINT: np.uint32}

    def accessor(i: int) -> np.ndarray:
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        width = kinds[acc["type"]]
        arr = np.frombuffer(binary, dtype=dtypes[acc["componentType"]], count=acc["count"] * width,
                            offset=view["byteOffset"])
        return arr.reshape(acc["count"], width) if width > 1 else arr

    prim = gltf["meshes"][0]["primitives"][0]
    node = gltf["nodes"][0]
    vertices = accessor(prim["attributes"]["POSITION"]).astype(np.float64) + np.asarray(node["translation"])
    faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64) if "indices" in prim else np.zeros((0, 3))
    attrs = {k: accessor(i) for k, i in prim["attributes"].items() if k != "POSITION"}
    extra = gltf.get("extras", {}).get("pa3d", {})
    face_labels = accessor(extra["face_labels_accessor"]) if "face_labels_accessor" in extra else None
    return {"gltf": gltf, "vertices": vertices, "faces": faces, "attributes": attrs, "face_labels": face_labels}


# ------------------------------------------------------------------------------------------------ NPZ


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write arrays to a compressed ``.npz`` atomically (strings as unicode arrays: no pickles needed to read).

    Examples:
        >>> import tempfile, pathlib
        >>> p = write_npz(pathlib.Path(tempfile.mkdtemp()) / "a.npz", labels=np.array([0, 1]), names=["a", "b"])
        >>> sorted(np.load(p, allow_pickle=False).files)
        ['labels', 'names']
    """
    if not arrays:
        raise ValueError("write_npz needs at least one array")
    clean: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        a = np.asarray(value)
        if a.dtype == object:
            raise ValueError(f"array {key!r} has dtype object (it would need a pickle to read); pass numbers or str")
        clean[key] = a
    from pa3d_models.files import atomic_write_with

    return atomic_write_with(path, lambda fh: np.savez_compressed(fh, **clean))
