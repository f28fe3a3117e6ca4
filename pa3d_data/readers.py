"""Readers for single shapes: OFF, OBJ and other meshes, PCD, PLY, NPY, NPZ, TXT/PTS and `.pt` point files.

Meshes keep the file's vertex and face order exactly (OFF and OBJ are parsed here; other mesh formats go
through `trimesh.load(..., process=False)`), so per-face labels stay aligned. Every reader raises
`DataFormatError` naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pa3d_models.deps import require

from .sample import DataFormatError, PartSample

__all__ = [
    "Mesh",
    "read_shape",
    "read_mesh",
    "read_off",
    "read_obj",
    "read_points",
    "read_pcd",
    "read_ply",
    "read_table",
    "sample_surface",
    "SurfaceSampler",
    "MESH_SUFFIXES",
    "POINT_SUFFIXES",
]

MESH_SUFFIXES = (".off", ".obj", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".pcd", ".ply", ".npy", ".npz", ".txt", ".pts", ".xyz", ".pt")


class Mesh(NamedTuple):
    """A triangle mesh in file order.

    Attributes:
        vertices: `(V, 3)` float64.
        faces: `(F, 3)` int64 vertex indices (0-based).
        face_index: `(F,)` int64, the file's face each triangle comes from (polygons are fan-triangulated, so a
            file face may give several triangles; for triangle meshes this is `arange(F)`).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_index: np.ndarray


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataFormatError(path, "file does not exist") from None


def read_table(path: str | Path) -> np.ndarray:
    """A whitespace-separated numeric table (`.txt`, `.pts`, `.xyz`) as a `(rows, columns)` float64 array."""
    path = Path(path)
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataFormatError(path, "empty file: no point rows")
    ncols = len(lines[0].split())
    try:
        values = np.array(" ".join(lines).split(), dtype=np.float64)
    except ValueError as err:
        raise DataFormatError(path, f"non-numeric value in a point row ({err})") from None
    if values.size != ncols * len(lines):
        counts = [len(ln.split()) for ln in lines]
        bad = next(i for i, c in enumerate(counts) if c != ncols)
        raise DataFormatError(path, f"row {bad + 1} has {counts[bad]} columns, row 1 has {ncols}")
    return values.reshape(len(lines), ncols)


def _ints(tokens: list[str], path: Path, what: str) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.int64)
    except ValueError:
        raise DataFormatError(path, f"non-integer value in the {what}") from None


def read_off(path: str | Path) -> Mesh:
    """An OFF mesh (`OFF`/`COFF`/`NOFF` header, counts `nV nF nE`, vertex rows, `n i1 .. in [colour]` faces).

    Polygons with more than three corners are fan-triangulated; `Mesh.face_index` maps triangles back to
    the file's faces.
    """
    path = Path(path)
    lines = [ln.split("#", 1)[0].strip() for ln in _read_text(path).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].split()[0].upper().endswith("OFF"):
        raise DataFormatError(path, "not an OFF file: the first line must be 'OFF'")
    head = lines[0].split()
    pos = 1
    counts = head[1:]
    if not counts:
        if len(lines) < 2:
            raise DataFormatError(path, "OFF header has no vertex/face counts")
        counts = lines[1].split()
        pos = 2
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        raise DataFormatError(path, f"bad OFF counts line {' '.join(counts)!r}") from None
    if len(lines) < pos + nv + nf:
        raise DataFormatError(
            path, f"declares {nv} vertices and {nf} faces but holds {len(lines) - pos} rows after the header"
        )
    try:
        tokens = " ".join(lines[pos : pos + nv]).split()
        if len(tokens) == 3 * nv:  # fast path: plain xyz rows
            vertices = np.array(tokens, dtype=np.float64).reshape(nv, 3)
        else:
            vertices = np.array([ln.split()[:3] for ln in lines[pos : pos + nv]], dtype=np.float64).reshape(nv, 3)
    except ValueError:
        raise DataFormatError(path, "a vertex row does not hold three numbers") from None
    frows = lines[pos + nv : pos + nv + nf]
    faces, face_index = _faces_from_rows(frows, path)
    _check_faces(faces, nv, path)
    return Mesh(vertices, faces, face_index)


def _faces_from_rows(lines: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not lines:
        return np.zeros((0, 3), np.int64), np.zeros((0,), np.int64)
    flat = " ".join(lines).split()
    if len(flat) == 4 * len(lines):  # fast path: bare triangles
        table = _ints(flat, path, "face rows").reshape(-1, 4)
        if (table[:, 0] == 3).all():
            return table[:, 1:], np.arange(len(lines), dtype=np.int64)
    rows = [ln.split() for ln in lines]
    if all(len(r) >= 4 and r[0] == "3" for r in rows):  # triangles followed by colours
        tri = _ints([t for r in rows for t in r[1:4]], path, "face rows").reshape(-1, 3)
        return tri, np.arange(len(rows), dtype=np.int64)
    faces, index = [], []
    for i, r in enumerate(rows):
        n = int(r[0])
        if n < 3 or len(r) < n + 1:
            raise DataFormatError(path, f"face {i + 1} declares {n} corners but lists {len(r) - 1} values")
        corners = _ints(r[1 : n + 1], path, "face rows")
        for k in range(1, n - 1):
            faces.append((corners[0], corners[k], corners[k + 1]))
            index.append(i)
    return np.array(faces, dtype=np.int64).reshape(-1, 3), np.array(index, dtype=np.int64)


def _check_faces(faces: np.ndarray, num_vertices: int, path: Path) -> None:
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        bad = int(faces.max()) if faces.max() >= num_vertices else int(faces.min())
        raise DataFormatError(path, f"face refers to vertex {bad}, outside the mesh's {num_vertices} vertices")


def read_obj(path: str | Path) -> Mesh:
    """A Wavefront OBJ mesh (`v` and `f` records; `f a/b/c ...`, negative indices, polygons fan-triangulated)."""
    path = Path(path)
    verts: list[list[str]] = []
    faces: list[tuple[int, int, int]] = []
    index: list[int] = []
    nfile = 0
    for line in _read_text(path).splitlines():
        if line.startswith("v "):
            verts.append(line.split()[1:4])
        elif line.startswith("f "):
            corners = []
            for tok in line.split()[1:]:
                try:
                    k = int(tok.split("/", 1)[0])
                except ValueError:
                    raise DataFormatError(path, f"bad face corner {tok!r} in face {nfile + 1}") from None
                corners.append(k - 1 if k > 0 else len(verts) + k)
            if len(corners) < 3:
                raise DataFormatError(path, f"face {nfile + 1} has fewer than three corners")
            for k in range(1, len(corners) - 1):
                faces.append((corners[0], corners[k], corners[k + 1]))
                index.append(nfile)
            nfile += 1
    try:
        vertices = np.array(verts, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        raise DataFormatError(path, "a 'v' record does not hold three numbers") from None
    tri = np.array(faces, dtype=np.int64).reshape(-1, 3)
    _check_faces(tri, len(vertices), path)
    return Mesh(vertices, tri, np.array(index, dtype=np.int64))


def read_mesh(path: str | Path) -> Mesh:
    """A triangle mesh in file order: OFF and OBJ parsed here, other formats (STL, GLB, PLY with faces) through
    `trimesh.load(path, process=False, force="mesh")`."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".off":
        return read_off(path)
    if suffix == ".obj":
        return read_obj(path)
    trimesh = require("trimesh", f"reading {suffix} meshes")

    try:
        mesh = trimesh.load(str(path), process=False, force="mesh")
    except Exception as err:  # trimesh raises many types
        raise DataFormatError(path, f"cannot be read as a mesh ({err})") from None
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    return Mesh(np.asarray(mesh.vertices, dtype=np.float64), faces, np.arange(len(faces), dtype=np.int64))


class SurfaceSampler:
    """Area-weighted uniform samples on one triangle mesh's surface, with the per-triangle work done once.

    The triangles' areas are computed when the sampler is built, so each :meth:`sample` costs the draw and
    the work on the drawn triangles only, not on every triangle of the mesh: a dataset that resamples its
    meshes every epoch keeps one sampler per mesh. :func:`sample_surface` is
    ``SurfaceSampler(vertices, faces).sample(num_points)``: the same draws from the same generator give the
    same points.

    Args:
        vertices: `(V, 3)` vertex coordinates.
        faces: `(F, 3)` vertex indices.
        path: the mesh's file, named in errors.

    Raises:
        DataFormatError: the mesh has no faces, or zero (or non-finite) surface area.

    Examples:
        >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> sampler = SurfaceSampler(v, torch.tensor([[0, 1, 2]]))
        >>> pts, fid, nrm = sampler.sample(4, generator=torch.Generator().manual_seed(0))
        >>> pts.shape, fid.tolist(), sampler.num_faces
        (torch.Size([4, 3]), [0, 0, 0, 0], 1)
    """

    def __init__(self, vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, *,
                 path: str | Path = "<mesh>") -> None:
        v = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
        f = torch.as_tensor(np.asarray(faces), dtype=torch.long).reshape(-1, 3)
        if f.shape[0] == 0:
            raise DataFormatError(path, "mesh has no faces to sample points from")
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        double_area = torch.linalg.cross(b - a, c - a).norm(dim=1)
        if not bool(torch.isfinite(double_area).all()) or float(double_area.sum()) <= 0:
            raise DataFormatError(path, "mesh has zero (or non-finite) surface area")
        self._vertices, self._faces, self._double_area = v, f, double_area  # F floats kept, not F corners

    @property
    def num_faces(self) -> int:
        return int(self._double_area.shape[0])

    def sample(self, num_points: int, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`num_points` samples: `points (N, 3)` float32, `face_ids (N,)` long and `normals (N, 3)` float32."""
        if num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points}")
        face_ids = torch.multinomial(self._double_area, num_points, replacement=True, generator=generator)
        uv = torch.rand(num_points, 2, generator=generator, dtype=torch.float64)
        su = uv[:, :1].sqrt()
        w0, w1, w2 = 1 - su, su * (1 - uv[:, 1:]), su * uv[:, 1:]
        tri = self._faces[face_ids]
        a, b, c = self._vertices[tri[:, 0]], self._vertices[tri[:, 1]], self._vertices[tri[:, 2]]
        points = w0 * a + w1 * b + w2 * c
        normals = torch.linalg.cross(b - a, c - a) / self._double_area[face_ids].clamp_min(1e-30).unsqueeze(1)
        return points.float(), face_ids, normals.float()


def sample_surface(
    vertices: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    num_points: int,
    *,
    generator: torch.Generator | None = None,
    path: str | Path = "<mesh>",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Area-weighted uniform samples on a triangle mesh's surface (a one-off :class:`SurfaceSampler`; keep a
    sampler to draw from the same mesh again).

    Args:
        vertices: `(V, 3)` vertex coordinates.
        faces: `(F, 3)` vertex indices.
        num_points: N, how many points.
        generator: seeds the draw (a CPU `torch.Generator`).
        path: the mesh's file, named in errors.

    Returns:
        `points (N, 3)` float32, `face_ids (N,)` long (the triangle each point lies on) and `normals (N, 3)`
        float32 (that triangle's unit normal).

    Examples:
        >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> pts, fid, nrm = sample_surface(v, torch.tensor([[0, 1, 2]]), 5, generator=torch.Generator().manual_seed(0))
        >>> pts.shape, bool((pts[:, :2].sum(1) <= 1).all()), nrm[0].tolist()
        (torch.Size([5, 3]), True, [0.0, 0.0, 1.0])
    """
    if num_points < 1:  # before the per-triangle work
        raise ValueError(f"num_points must be a positive int, got {num_points}")
    return SurfaceSampler(vertices, faces, path=path).sample(num_points, generator=generator)


# --- point formats -------------------------------------------------------------------------------------------

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}


def _unpack_rgb(values: np.ndarray) -> np.ndarray:
    packed = values.astype(np.float32).view(np.uint32) if values.dtype.kind == "f" else values.astype(np.uint32)
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1)
    return rgb.astype(np.float32) / 255.0


def read_pcd(path: str | Path) -> dict[str, np.ndarray]:
    """A PCD file (`DATA ascii` or `binary`): `points`, and `normals`, `colors` (packed `rgb`/`rgba` fields
    unpacked to [0, 1]) and `labels` when the file has them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, "file does not exist") from None
    header: dict[str, list[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise DataFormatError(path, "PCD header has no DATA line")
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = header.get("TYPE", ["F"] * len(fields))
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        npts = int(header.get("POINTS", [str(int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0]))])[0])
        mode = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as err:
        raise DataFormatError(path, f"incomplete PCD header ({err})") from None
    dtype = np.dtype(
        [(f"{name}_{i}" if cnt > 1 else name, "<" + _PCD_TYPES[(t, s)]) for name, s, t, cnt in
         zip(fields, sizes, types, counts) for i in range(cnt)]
    )
    if mode == "binary":
        if len(raw) - offset < npts * dtype.itemsize:
            raise DataFormatError(path, f"declares {npts} points but the binary data is too short")
        data = np.frombuffer(raw, dtype=dtype, count=npts, offset=offset)
    elif mode == "ascii":
        rows = raw[offset:].decode("ascii", errors="replace").split()
        ncol = len(dtype.names)
        if len(rows) < npts * ncol:
            raise DataFormatError(path, f"declares {npts} points but holds {len(rows) // max(ncol, 1)} rows")
        table = np.array(rows[: npts * ncol], dtype=np.float64).reshape(npts, ncol)
        data = np.zeros(npts, dtype=dtype)
        for i, name in enumerate(dtype.names):
            data[name] = table[:, i].astype(dtype[name]) if name not in ("rgb", "rgba") else table[:, i]
    else:
        raise DataFormatError(path, f"PCD 'DATA {mode}' is not supported (only ascii and binary)")
    names = dtype.names
    if not all(k in names for k in "xyz"):
        raise DataFormatError(path, f"PCD has no x y z fields (fields: {' '.join(fields)})")
    out = {"points": np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)}
    if all(f"normal_{k}" in names for k in "xyz"):
        out["normals"] = np.stack([data[f"normal_{k}"] for k in "xyz"], axis=1).astype(np.float32)
    for key in ("rgb", "rgba"):
        if key in names:
            out["colors"] = _unpack_rgb(np.ascontiguousarray(data[key]))
    if "label" in names:
        out["labels"] = data["label"].astype(np.int64)
    return out


_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4",
              "float": "f4", "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
              "int32": "i4", "uint32": "u4", "float32": "f4", "float64": "f8"}


def read_ply(path: str | Path) -> dict[str, Any]:
    """A PLY file's vertex element: `points`, and `normals`, `colors`, `labels` when present; a PLY with faces
    also gives `faces (F, 3)` (read through trimesh, in file order)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, "file does not exist") from None
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DataFormatError(path, "not a PLY file (no 'ply' magic or 'end_header')")
    body = raw.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", errors="replace").splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property" and elements:
            elements[-1][2].append(tok[1:])
    if not elements or elements[0][0] != "vertex":
        raise DataFormatError(path, "PLY's first element must be 'vertex'")
    _, nv, props = elements[0]
    if any(p[0] == "list" for p in props):
        raise DataFormatError(path, "PLY vertex element with list properties is not supported")
    names = [p[1] for p in props]
    if fmt == "ascii":
        lines = raw[body:].decode("ascii", errors="replace").splitlines()[:nv]
        table = np.array(" ".join(lines).split(), dtype=np.float64)
        if table.size != nv * len(names):
            raise DataFormatError(path, f"declares {nv} vertices but the vertex rows do not match its properties")
        table = table.reshape(nv, len(names))
        cols = {n: table[:, i] for i, n in enumerate(names)}
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        try:
            dtype = np.dtype([(p[1], order + _PLY_TYPES[p[0]]) for p in props])
        except KeyError as err:
            raise DataFormatError(path, f"unknown PLY property type {err}") from None
        if len(raw) - body < nv * dtype.itemsize:
            raise DataFormatError(path, f"declares {nv} vertices but the binary data is too short")
        data = np.frombuffer(raw, dtype=dtype, count=nv, offset=body)
        cols = {n: data[n] for n in names}
    else:
        raise DataFormatError(path, f"unknown PLY format {fmt!r}")
    if not all(k in cols for k in "xyz"):
        raise DataFormatError(path, f"PLY vertex element has no x y z (properties: {' '.join(names)})")
    # double coordinates stay float64 (a cloud far from the origin keeps its precision; PartSample casts later)
    xyz_double = any(p[0] in ("double", "float64") for p in props if p[1] in ("x", "y", "z"))
    out: dict[str, Any] = {
        "points": np.stack([cols[k] for k in "xyz"], axis=1).astype(np.float64 if xyz_double else np.float32)
    }
    for keys in (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")):
        if all(k in cols for k in keys):
            out["normals"] = np.stack([cols[k] for k in keys], axis=1).astype(np.float32)
    for keys in (("red", "green", "blue"), ("r", "g", "b")):
        if all(k in cols for k in keys):
            rgb = np.stack([cols[k] for k in keys], axis=1).astype(np.float32)
            out["colors"] = rgb / 255.0 if rgb.max(initial=0) > 1.0 else rgb
    for key in ("label", "labels", "scalar_label"):
        if key in cols:
            out["labels"] = np.asarray(cols[key]).astype(np.int64)
    if any(name == "face" and count > 0 for name, count, _ in elements[1:]):
        out["faces"] = read_mesh(path).faces
    return out


def read_points(path: str | Path) -> dict[str, Any]:
    """A point file as a dict with `points (N, 3)` and, when the file has them, `normals`, `colors`, `labels`,
    `label_names` and `category`.

    Formats: PCD; PLY; NPY (`(N, >=3)` array, xyz first); NPZ (keys `points`/`xyz`/`pos`, `labels`,
    `label_names`, `normals`, `colors`, `category`, the FAUST layout of PatchAlign3D); `.pt` (a tensor or a dict
    of them); TXT/PTS/XYZ tables with 3 (xyz), 4 (+label), 6 (+normals), 7 (+normals, label, the ShapeNetPart
    row), 9 (+normals, rgb) or 10 (+normals, rgb, alpha) columns.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".pcd":
        return read_pcd(path)
    if suffix == ".ply":
        return read_ply(path)
    if suffix in (".npy", ".npz", ".pt"):
        return _read_array_file(path, suffix)
    table = read_table(path)
    ncols = table.shape[1]
    out: dict[str, Any] = {"points": table[:, :3].copy()}  # float64: text may hold more than float32 keeps
    if ncols == 4:
        out["labels"] = table[:, 3].astype(np.int64)
    elif ncols in (6, 7, 9, 10):
        out["normals"] = table[:, 3:6].astype(np.float32)
        if ncols == 7:
            out["labels"] = table[:, 6].astype(np.int64)
        elif ncols >= 9:
            rgb = table[:, 6:9].astype(np.float32)
            out["colors"] = rgb / 255.0 if rgb.max(initial=0) > 1.0 else rgb
    elif ncols != 3:
        raise DataFormatError(path, f"a point table needs 3, 4, 6, 7, 9 or 10 columns, got {ncols}")
    return out


def _read_array_file(path: Path, suffix: str) -> dict[str, Any]:
    try:
        if suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                obj = {k: npz[k] for k in npz.files}
        else:
            obj = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataFormatError(path, f"cannot be read ({err})") from None
    if isinstance(obj, dict):
        key = next((k for k in ("points", "xyz", "pos", "coords") if k in obj), None)
        if key is None:
            raise DataFormatError(path, f"holds no 'points' array (keys: {', '.join(map(str, obj))})")
        arr = np.asarray(obj[key])
        out: dict[str, Any] = {"points": arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)}
        for name in ("normals", "colors", "labels"):
            if name in obj:
                out[name] = np.asarray(obj[name])
        if "labels" in out:
            out["labels"] = out["labels"].reshape(-1).astype(np.int64)
        if "label_names" in obj:
            out["label_names"] = [str(n) for n in np.asarray(obj["label_names"]).reshape(-1).tolist()]
        if "category" in obj:
            out["category"] = str(np.asarray(obj["category"]).reshape(-1)[0]) if np.size(obj["category"]) else ""
    else:
        arr = np.asarray(obj)
        arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise DataFormatError(path, f"expected an (N, >=3) array, got shape {arr.shape}")
        out = {"points": arr[:, :3]}
    pts = out["points"]
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise DataFormatError(path, f"points must be (N, 3), got shape {pts.shape}")
    out["points"] = pts[:, :3]
    return out


def read_shape(path: str | Path, *, num_points: int | None = None, seed: int = 0) -> PartSample:
    """Read one shape, mesh or point cloud, as a `PartSample`.

    Meshes (`.off`, `.obj`, `.stl`, `.glb`, a `.ply` with faces) are surface-sampled, area weighted, with
    `num_points` points (2048 when None) from a generator seeded by `seed`; `meta` keeps `vertices`, `faces`
    and the per-point `point_face_ids`, so predictions can be carried back to the mesh. Point files keep
    their points (a seeded random subset when `num_points` is given). Unlabelled files give `labels` all -1
    and no `label_names`; a `.npz` with `labels` and `label_names` (the FAUST layout) gives them.

    Args:
        path: the file.
        num_points: points to sample (meshes) or keep (point files).
        seed: seeds the sampling.

    Returns:
        A `PartSample` with `shape_id` the file's stem and `meta["path"]`.

    Raises:
        DataFormatError: the file is missing or unreadable, a mesh has no faces, or a point file has fewer
            than `num_points` points.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file does not exist")
    suffix = path.suffix.lower()
    g = torch.Generator().manual_seed(int(seed))
    data: dict[str, Any]
    if suffix in MESH_SUFFIXES:
        data = {"faces": None}
    elif suffix in POINT_SUFFIXES:
        data = read_points(path)
    else:
        raise DataFormatError(path, f"unknown shape format {suffix!r} (known: {MESH_SUFFIXES + POINT_SUFFIXES})")
    meta: dict[str, Any] = {"path": str(path)}
    if "faces" in data:
        mesh = read_mesh(path)
        if len(mesh.faces) == 0:
            raise DataFormatError(path, "mesh has no faces")
        pts, fid, nrm = sample_surface(mesh.vertices, mesh.faces, num_points or 2048, generator=g, path=path)
        meta.update(vertices=torch.from_numpy(mesh.vertices).float(), faces=torch.from_numpy(mesh.faces),
                    point_face_ids=torch.from_numpy(mesh.face_index)[fid])
        return PartSample(pts, torch.full((len(pts),), -1), [], "", path.stem, normals=nrm, meta=meta)
    names = data.get("label_names", [])
    n = len(data["points"])
    labels = data.get("labels")
    labels = np.full(n, -1, np.int64) if labels is None or not names else labels
    sample = PartSample(
        torch.from_numpy(np.ascontiguousarray(data["points"], dtype=np.float32)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        names,
        data.get("category", ""),
        path.stem,
        normals=data.get("normals"),
        colors=data.get("colors"),
        meta=meta,
    )
    if "labels" in data and not names:
        sample.meta["point_raw_labels"] = torch.as_tensor(np.asarray(data["labels"], dtype=np.int64))
    if num_points is not None:
        from .sampling import random_sample

        sample = random_sample(sample, num_points, generator=g)
    return sample


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "file does not exist") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"invalid JSON ({err})") from None
