"""Writers of labelled shapes: GLB, PLY (mesh and points), NPZ; round trips against readers (ours and trimesh)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import read_glb, read_ply, write_glb, write_npz, write_ply_mesh, write_ply_points
from pa3d_data.writers import heatmap_colors


def _shape(seed: int, n: int, f: int, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    v = rng.random((n, 3)) + offset
    faces = rng.integers(0, n, (f, 3))
    colors = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    labels = rng.integers(-1, 4, n)
    return v, faces, colors, labels, rng.random(n).astype(np.float32), rng.integers(-1, 4, f)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 40), f=st.integers(0, 30),
       offset=st.sampled_from([0.0, -3.5, 1e6]), binary=st.booleans())
def test_ply_mesh_round_trips_exactly(tmp_path_factory, seed, n, f, offset, binary):
    v, faces, colors, labels, scores, face_labels = _shape(seed, n, f, offset)
    path = tmp_path_factory.mktemp("ply") / "m.ply"
    write_ply_mesh(path, v, faces, colors=colors, labels=labels, scores=scores, face_labels=face_labels,
                   binary=binary, comments=["label 0 tête"])
    head = path.read_bytes().split(b"end_header")[0]
    head.decode("ascii")  # non-ASCII names are escaped: the header stays ASCII
    assert b"t\\u00eate" in head
    data = _parse_ply(path)
    assert np.array_equal(data["xyz"], v)  # doubles, exact (ASCII through repr)
    assert np.array_equal(data["rgb"], colors) and np.array_equal(data["label"], labels)
    assert np.array_equal(data["score"], scores)
    if f:
        assert np.array_equal(data["faces"], faces) and np.array_equal(data["face_label"], face_labels)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 50), binary=st.booleans())
def test_far_off_points_keep_precision(tmp_path_factory, seed, n, binary):
    """Issue 18: a cloud at 1e6 + U(0, 1) round-trips within 1e-3 (here: exactly) through our reader."""
    pts = 1e6 + np.random.default_rng(seed).random((n, 3))
    path = tmp_path_factory.mktemp("pts") / "p.ply"
    write_ply_points(path, pts, labels=np.zeros(n, int), binary=binary)
    back = read_ply(path)["points"]
    assert back.dtype == np.float64
    assert np.abs(back - pts).max() < 1e-9
    assert len(np.unique(back[:, 0])) == len(np.unique(pts[:, 0]))


@given(seed=st.integers(0, 2**16), n=st.integers(1, 40), f=st.integers(0, 30), offset=st.sampled_from([0.0, 1e6]),
       up=st.sampled_from(["x", "y", "z"]))
def test_glb_round_trips(tmp_path_factory, seed, n, f, offset, up):
    v, faces, colors, labels, scores, face_labels = _shape(seed, n, f, offset)
    path = tmp_path_factory.mktemp("glb") / "m.glb"
    write_glb(path, v, faces, colors=colors, labels=labels, scores=scores, face_labels=face_labels, up_axis=up,
              extras={"parts": ["tête", "b"]})
    raw = path.read_bytes()
    assert raw[:4] == b"glTF" and int.from_bytes(raw[8:12], "little") == len(raw) and len(raw) % 4 == 0
    g = read_glb(path)
    assert np.abs(g["vertices"] - v).max() < 1e-6  # float32 offsets from a float64 centre: far-off shapes too
    assert np.array_equal(g["attributes"]["COLOR_0"][:, :3], colors)
    assert np.array_equal(g["attributes"]["_LABEL"], labels.astype(np.float32))
    assert np.array_equal(g["attributes"]["_SCORE"], scores)
    assert g["gltf"]["extras"]["pa3d"]["parts"] == ["tête", "b"]
    assert g["gltf"]["meshes"][0]["primitives"][0]["mode"] == (4 if f else 0)
    if f:
        assert np.array_equal(g["faces"], faces) and np.array_equal(g["face_labels"], face_labels.astype(np.float32))


def test_glb_and_ply_read_by_trimesh():
    """Reference reader: trimesh sees the same geometry and colours."""
    trimesh = pytest.importorskip("trimesh")
    import tempfile
    from pathlib import Path

    v, faces, colors, labels, scores, face_labels = _shape(0, 30, 20, 5.0)
    d = Path(tempfile.mkdtemp())
    write_glb(d / "m.glb", v, faces, colors=colors, labels=labels, up_axis="y")
    mesh = trimesh.load(d / "m.glb", force="mesh", process=False)
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-5)
    assert np.array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(np.ravel(mesh.vertex_attributes["_LABEL"]), labels.astype(np.float32))
    for binary in (False, True):
        write_ply_mesh(d / "m.ply", v, faces, colors=colors, labels=labels, binary=binary)
        m = trimesh.load(d / "m.ply", process=False)
        assert np.array_equal(m.vertices, v) and np.array_equal(m.faces, faces)
        assert np.array_equal(m.visual.vertex_colors[:, :3], colors)


def test_glb_node_rotation_puts_the_up_axis_on_y():
    from scipy.spatial.transform import Rotation

    from pa3d_data import UP_AXIS_ROTATIONS

    for axis, vec in (("x", [1, 0, 0]), ("y", [0, 1, 0]), ("z", [0, 0, 1])):
        np.testing.assert_allclose(Rotation.from_quat(UP_AXIS_ROTATIONS[axis]).apply(vec), [0, 1, 0], atol=1e-12)


def test_npz_and_permissions(tmp_path):
    path = write_npz(tmp_path / "a.npz", labels=np.arange(3), names=np.array(["a", "tête"]))
    with np.load(path, allow_pickle=False) as data:
        assert data["names"].tolist() == ["a", "tête"]
    umask = os.umask(0)
    os.umask(umask)
    written = [path, write_ply_points(tmp_path / "p.ply", np.zeros((1, 3))),
               write_glb(tmp_path / "g.glb", np.ones((1, 3)))]
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # like any file the user writes, not 0600
    with pytest.raises(ValueError, match="dtype object"):
        write_npz(tmp_path / "b.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vertices=np.zeros((3, 2))), r"vertices must be \(N, 3\)"),
        (dict(vertices=np.full((3, 3), np.nan)), "vertices must be finite"),
        (dict(faces=np.array([[0, 1, 5]])), "faces must index the 3 vertices"),
        (dict(faces=np.array([[0.0, 1, 2]])), "integer vertex indices"),
        (dict(colors=np.zeros((2, 3), np.uint8)), r"colors must be \(N, 3\) uint8 RGB with N = 3"),
        (dict(labels=np.zeros(4)), r"labels must have shape \(3,\)"),
        (dict(scores=np.array([0.0, np.inf, 1])), "scores must be finite"),
    ],
)
def test_writers_name_the_bad_argument(tmp_path, kwargs, match):
    args = dict(vertices=np.zeros((3, 3)), faces=np.array([[0, 1, 2]]))
    args.update(kwargs)
    for write in (write_glb, write_ply_mesh):
        with pytest.raises(ValueError, match=match):
            write(tmp_path / "x.out", args["vertices"], args["faces"],
                  **{k: v for k, v in args.items() if k not in ("vertices", "faces")})
    assert list(tmp_path.iterdir()) == []


def test_heatmap_colors():
    c = heatmap_colors(np.linspace(-1, 1, 9))
    assert c.dtype == np.uint8 and c[0].tolist() == [68, 1, 84] and c[-1].tolist() == [253, 231, 37]
    assert heatmap_colors([2.0, 2.0]).tolist() == heatmap_colors([0.5], vmin=0, vmax=1).tolist() * 2
    with pytest.raises(ValueError, match="finite"):
        heatmap_colors([0.0, np.nan])


def _parse_ply(path):
    """A plain reader for the PLYs written here (a reference independent of pa3d_data.read_ply)."""
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    binary = "format binary_little_endian 1.0" in lines
    elements, cur = [], None
    for ln in lines:
        t = ln.split()
        if t[0] == "element":
            cur = [t[1], int(t[2]), []]
            elements.append(cur)
        elif t[0] == "property":
            cur[2].append(t[1:])
    np_t = {"double": "<f8", "float": "<f4", "uchar": "u1", "int": "<i4"}
    out = {}
    if binary:
        off = 0
        for name, count, props in elements:
            if name == "vertex":
                dt = np.dtype([(p[1], np_t[p[0]]) for p in props])
            else:
                dt = np.dtype([("n", "u1"), ("idx", "<i4", 3)] + [(p[1], np_t[p[0]]) for p in props if p[0] != "list"])
            rec = np.frombuffer(body, dtype=dt, count=count, offset=off)
            off += count * dt.itemsize
            out[name] = rec
    else:
        rows = body.decode("ascii").splitlines()
        vcount = elements[0][1]
        vnames = [p[1] for p in elements[0][2]]
        table = [r.split() for r in rows[:vcount]]
        out["vertex"] = {n: np.array([float(r[i]) for r in table]) for i, n in enumerate(vnames)}
        if len(elements) > 1:
            ft = [r.split() for r in rows[vcount:]]
            out["face"] = {"idx": np.array([[int(x) for x in r[1:4]] for r in ft]).reshape(-1, 3),
                           "label": np.array([int(r[4]) for r in ft]) if ft and len(ft[0]) > 4 else None}
    v = out["vertex"]
    res = {"xyz": np.stack([np.asarray(v["x"], np.float64), np.asarray(v["y"], np.float64),
                            np.asarray(v["z"], np.float64)], 1),
           "rgb": np.stack([np.asarray(v[c]) for c in ("red", "green", "blue")], 1).astype(np.uint8),
           "label": np.asarray(v["label"]).astype(int), "score": np.asarray(v["score"]).astype(np.float32)}
    if "face" in out:
        res["faces"] = np.asarray(out["face"]["idx"]).reshape(-1, 3).astype(int)
        face_label = out["face"]["label"]
        res["face_label"] = None if face_label is None else np.asarray(face_label).astype(int)
    return res
