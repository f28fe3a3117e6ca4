"""Readers and dataset loaders on tiny fixtures written in each format, plus bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pa3d_data import (
    DATASETS,
    DataFormatError,
    FaustNpzDataset,
    Find3DDataset,
    LPSBDataset,
    MaskAwareSample,
    ObjaverseGeneralDataset,
    PartNetDataset,
    PartNetEDataset,
    ScanObjectNNPartDataset,
    ShapeNetPartDataset,
    SurfaceSampler,
    build_dataset,
    default_data_root,
    read_lpsb_labels,
    read_mesh,
    read_pcd,
    read_ply,
    read_points,
    read_shape,
    sample_surface,
)

# A unit square in z = 0 made of two triangles, plus a triangle above it in z = 1.
VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]], float)
FACES = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])


def write_off(path, verts=VERTS, faces=FACES):
    rows = ["OFF", f"{len(verts)} {len(faces)} 0"] + [" ".join(map(str, v)) for v in verts]
    rows += [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\r\n".join(rows) + "\r\n")


def write_lpsb(root, category, stem, labels):
    (root / category).mkdir(parents=True, exist_ok=True)
    write_off(root / category / f"{stem}.off")
    text = "".join(f"{name}\r\n{' '.join(map(str, ids))}\r\n" for name, ids in labels)
    (root / category / f"{stem}_labels.txt").write_text(text)


# --- readers ----------------------------------------------------------------------------------------------------

def test_off_obj_meshes_keep_file_order(tmp_path):
    write_off(tmp_path / "a.off")
    m = read_mesh(tmp_path / "a.off")
    assert m.faces.tolist() == FACES.tolist() and m.vertices.shape == (7, 3)
    obj = ["v " + " ".join(map(str, v)) for v in VERTS] + ["vn 0 0 1", "f 1//1 2//1 3//1 4//1", "f -3 -2 -1"]
    (tmp_path / "b.obj").write_text("\n".join(obj) + "\n")
    m = read_mesh(tmp_path / "b.obj")
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6]] and m.face_index.tolist() == [0, 0, 1]
    poly = "OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    (tmp_path / "q.off").write_text(poly)
    assert read_mesh(tmp_path / "q.off").face_index.tolist() == [0, 0]


def test_read_shape_samples_meshes_with_face_ids(tmp_path):
    write_off(tmp_path / "a.off")
    s = read_shape(tmp_path / "a.off", num_points=500, seed=1)
    assert s.points.shape == (500, 3) and s.shape_id == "a" and (s.labels == -1).all()
    fid = s.meta["point_face_ids"]
    on_top = s.points[:, 2] > 0.5
    assert torch.equal(on_top, fid == 2)  # each point lies on its face
    # area-weighted: the square (area 1) gets about twice the points of the triangle (area 0.5)
    assert 0.2 < on_top.float().mean().item() < 0.45
    assert torch.equal(read_shape(tmp_path / "a.off", num_points=500, seed=1).points, s.points)


def _sample_all_triangles(v, f, n, g):
    """The per-call reference: every triangle's corners, cross product and area formed for each draw."""
    v, f = torch.as_tensor(v, dtype=torch.float64), torch.as_tensor(f, dtype=torch.long)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = torch.linalg.cross(b - a, c - a)
    area2 = cross.norm(dim=1)
    fid = torch.multinomial(area2, n, replacement=True, generator=g)
    uv = torch.rand(n, 2, generator=g, dtype=torch.float64)
    su = uv[:, :1].sqrt()
    pts = (1 - su) * a[fid] + su * (1 - uv[:, 1:]) * b[fid] + su * uv[:, 1:] * c[fid]
    return pts.float(), fid, (cross[fid] / area2[fid].unsqueeze(1)).float()


@settings(max_examples=25, deadline=None)
@given(num_faces=st.integers(1, 40), num_points=st.integers(1, 300), seed=st.integers(0, 2**31 - 1),
       draws=st.integers(1, 3))
def test_surface_sampler_draws_what_sampling_every_triangle_draws(num_faces, num_points, seed, draws):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(num_faces * 3, 3))
    f = np.arange(num_faces * 3).reshape(num_faces, 3)
    sampler = SurfaceSampler(v, f)
    g_ref, g = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for _ in range(draws):  # the same sampler, drawn from again, follows the generator like the reference
        want_pts, want_fid, want_nrm = _sample_all_triangles(v, f, num_points, g_ref)
        pts, fid, nrm = sampler.sample(num_points, generator=g)
        assert torch.equal(fid, want_fid) and torch.equal(pts, want_pts)
        torch.testing.assert_close(nrm, want_nrm, rtol=1e-6, atol=1e-6)
        assert pts.shape == (num_points, 3) and pts.dtype == torch.float32 and nrm.dtype == torch.float32
    torch.testing.assert_close(nrm.norm(dim=1), torch.ones(num_points), rtol=1e-5, atol=1e-5)


def test_surface_sampler_and_sample_surface_agree_and_refuse_bad_meshes():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    one_off = sample_surface(VERTS, FACES, 200, generator=g1)
    kept = SurfaceSampler(VERTS, FACES).sample(200, generator=g2)
    assert all(torch.equal(x, y) for x, y in zip(one_off, kept))
    on_top = kept[0][:, 2] > 0.5
    assert torch.equal(on_top, kept[1] == 2)  # each point lies on the triangle it names
    with pytest.raises(DataFormatError, match="m.off: mesh has no faces"):
        SurfaceSampler(VERTS, np.zeros((0, 3), int), path="m.off")
    with pytest.raises(DataFormatError, match="zero .* surface area"):
        SurfaceSampler(np.zeros((3, 3)), [[0, 1, 2]])
    with pytest.raises(ValueError, match="num_points must be a positive int, got 0"):
        SurfaceSampler(VERTS, FACES).sample(0)


def test_bad_meshes_name_the_file(tmp_path):
    (tmp_path / "empty.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(DataFormatError, match=r"empty.off: mesh has no faces"):
        read_shape(tmp_path / "empty.off")
    (tmp_path / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    with pytest.raises(DataFormatError, match=r"bad.off: face refers to vertex 7"):
        read_mesh(tmp_path / "bad.off")
    (tmp_path / "short.off").write_text("OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(DataFormatError, match=r"short.off: declares 3 vertices and 2 faces"):
        read_mesh(tmp_path / "short.off")
    with pytest.raises(DataFormatError, match=r"missing.ply: file does not exist"):
        read_shape(tmp_path / "missing.ply")
    with pytest.raises(DataFormatError, match="unknown shape format"):
        (tmp_path / "x.abc").write_text("1")
        read_shape(tmp_path / "x.abc")


def _pcd_header(n, data):
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z normal_x normal_y normal_z rgb\nSIZE 4 4 4 4 4 4 4\n"
            f"TYPE F F F F F F F\nCOUNT 1 1 1 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {n}\nDATA {data}\n").encode()


def test_pcd_binary_and_ascii_with_packed_rgb(tmp_path):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    nrm = np.tile(np.array([0, 0, 1], np.float32), (4, 1))
    rgb = np.array([(255 << 16) | (128 << 8) | 0] * 4, np.uint32).view(np.float32)
    rows = np.concatenate([pts, nrm, rgb[:, None]], axis=1).astype(np.float32)
    (tmp_path / "b.pcd").write_bytes(_pcd_header(4, "binary") + rows.tobytes())
    out = read_pcd(tmp_path / "b.pcd")
    np.testing.assert_array_equal(out["points"], pts)
    np.testing.assert_allclose(out["colors"][0], [1.0, 128 / 255, 0.0])
    ascii_rows = "\n".join(" ".join(f"{v:.1f}" for v in r[:6]) + f" {int(rgb.view(np.uint32)[0])}" for r in rows)
    (tmp_path / "a.pcd").write_bytes(_pcd_header(4, "ascii").replace(b"TYPE F F F F F F F", b"TYPE F F F F F F U")
                                     + ascii_rows.encode())
    out = read_pcd(tmp_path / "a.pcd")
    np.testing.assert_array_equal(out["points"], pts)
    np.testing.assert_allclose(out["colors"][0], [1.0, 128 / 255, 0.0])
    (tmp_path / "c.pcd").write_bytes(_pcd_header(4, "binary_compressed"))
    with pytest.raises(DataFormatError, match="binary_compressed"):
        read_pcd(tmp_path / "c.pcd")


def test_ply_ascii_and_binary(tmp_path):
    head = "ply\nformat {}\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n" \
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    (tmp_path / "a.ply").write_text(head.format("ascii 1.0") + "0 1 2 255 0 0\n3 4 5 0 255 0\n")
    out = read_ply(tmp_path / "a.ply")
    assert out["points"].tolist() == [[0, 1, 2], [3, 4, 5]] and out["colors"][1].tolist() == [0, 1, 0]
    body = struct.pack("<fffBBB", 0, 1, 2, 255, 0, 0) + struct.pack("<fffBBB", 3, 4, 5, 0, 255, 0)
    (tmp_path / "b.ply").write_bytes(head.format("binary_little_endian 1.0").encode() + body)
    out2 = read_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(out2["points"], out["points"])
    np.testing.assert_array_equal(out2["colors"], out["colors"])


def test_npy_npz_txt_points(tmp_path):
    pts = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "p.npy")["points"], pts)
    np.savez(tmp_path / "f.npz", points=pts, labels=np.array([0, 1, 1, 0, -1, 1]), label_names=np.array(["arm", "leg"]))
    s = read_shape(tmp_path / "f.npz")
    assert s.label_names == ["arm", "leg"] and s.labels.tolist() == [0, 1, 1, 0, -1, 1]
    np.savetxt(tmp_path / "t.txt", np.concatenate([pts, np.ones((6, 3)), np.full((6, 1), 7)], axis=1))
    out = read_points(tmp_path / "t.txt")
    assert out["labels"].tolist() == [7] * 6 and out["normals"].shape == (6, 3)
    (tmp_path / "ragged.txt").write_text("0 0 0\n1 1\n")
    with pytest.raises(DataFormatError, match=r"ragged.txt: row 2 has 2 columns, row 1 has 3"):
        read_points(tmp_path / "ragged.txt")
    with pytest.raises(DataFormatError, match=r"p.npy: shape has 6 points, fewer than the 7 requested"):
        read_shape(tmp_path / "p.npy", num_points=7)


# --- L-PSB ------------------------------------------------------------------------------------------------------

def test_lpsb_loader(tmp_path):
    root = tmp_path / "LabeledDB_new"
    write_lpsb(root, "Chair", "2", [("support", [1, 2]), ("backsupport", [3])])
    write_lpsb(root, "Chair", "10", [("support", [1, 2, 3])])
    write_lpsb(root, "Cup", "21", [("handle", [3]), ("body", [1, 2])])
    ds = LPSBDataset(tmp_path, num_points=300)
    assert len(ds) == 3 and ds.categories == ["Chair", "Cup"]
    assert [ds.items[i][1].stem for i in range(3)] == ["2", "10", "21"]  # numeric order
    s = ds[0]
    assert s.category == "Chair" and s.shape_id == "2" and s.label_names == ["backsupport", "support"]
    assert s.texts == ["backrest", "seat"]
    # points inherit their face's label: the top triangle (face 3) is the backsupport
    assert torch.equal(s.labels == 0, s.points[:, 2] > 0.5)
    assert torch.equal(ds[0].points, s.points)  # seeded
    assert ds[1].label_names == ["backsupport", "support"]  # the category's names, not only those present
    assert LPSBDataset(root, categories=["Cup"])[0].label_names == ["body", "handle"]
    with pytest.raises(DataFormatError, match=r"categories \['Plane'\] not found"):
        LPSBDataset(root, categories=["Plane"])


@settings(max_examples=10, deadline=None)
@given(epoch=st.integers(1, 10_000))
def test_lpsb_training_epochs_resample_the_surface_evaluation_keeps_one_sample(tmp_path_factory, epoch):
    root = tmp_path_factory.mktemp("lpsb") / "LabeledDB_new"
    write_lpsb(root, "Chair", "2", [("support", [1, 2]), ("backsupport", [3])])
    ds = LPSBDataset(root, num_points=200)
    fixed = ds[0]
    ds.set_epoch(epoch)
    fresh = ds[0]
    assert not torch.equal(fresh.points, fixed.points)  # another surface sample this epoch
    assert torch.equal(fresh.labels == 0, fresh.points[:, 2] > 0.5)  # labels still follow the faces
    assert torch.equal(ds[0].points, fresh.points)  # seeded by (seed, epoch, index)
    ds.set_epoch(0)
    assert torch.equal(ds[0].points, fixed.points)  # epoch 0 (evaluation sets) is the fixed sample


def test_lpsb_bad_input(tmp_path):
    root = tmp_path / "db"
    write_lpsb(root, "Cup", "1", [("body", [1, 2, 4])])  # face 4 of 3
    with pytest.raises(DataFormatError, match=r"1_labels.txt: face index 4 of 'body' is beyond the mesh's 3 faces"):
        LPSBDataset(root)[0]
    write_lpsb(root, "Cup", "2", [("body", [1, 2, 3])])
    ds = LPSBDataset(root, on_error="skip")
    with pytest.warns(UserWarning, match="skipping"):
        s = ds[0]
    assert s.shape_id == "2" and len(ds.skipped) == 1 and "beyond the mesh" in ds.skipped[0][1]
    (root / "Cup" / "3.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    (root / "Cup" / "3_labels.txt").write_text("")
    with pytest.raises(DataFormatError, match=r"3.off: mesh has no faces"):
        LPSBDataset(root)[2]
    write_off(root / "Cup" / "4.off")
    with pytest.raises(DataFormatError, match=r"4_labels.txt: label file of this mesh does not exist"):
        LPSBDataset(root)
    with pytest.raises(DataFormatError, match="L-PSB root does not exist"):
        LPSBDataset(tmp_path / "nowhere")
    assert read_lpsb_labels(root / "Cup" / "2_labels.txt", 3)["body"].tolist() == [0, 1, 2]


# --- ShapeNetPart -----------------------------------------------------------------------------------------------

def write_shapenetpart(root, present=("Cap",)):
    root.mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\nCap\t02954340\n")
    (root / "train_test_split").mkdir()
    lists = {"test": ["shape_data/02954340/c1", "shape_data/02691156/a1"], "val": ["shape_data/02954340/c2"],
             "train": []}
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    rng = np.random.default_rng(0)
    for synset, tok, ids in (("02954340", "c1", (6, 7)), ("02954340", "c2", (6, 7)), ("02691156", "a1", (0, 3))):
        if (synset == "02954340") != ("Cap" in present) and synset == "02954340":
            continue
        if synset == "02691156" and "Airplane" not in present:
            continue
        (root / synset).mkdir(exist_ok=True)
        rows = np.concatenate([rng.random((20, 6)), rng.choice(ids, (20, 1))], axis=1)
        np.savetxt(root / synset / f"{tok}.txt", rows, fmt="%.6f")


def test_shapenetpart_loader(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    write_shapenetpart(root, present=("Cap", "Airplane"))
    ds = ShapeNetPartDataset(tmp_path, split="test")
    assert len(ds) == 2
    a = ds[1]
    assert a.category == "Airplane" and a.label_names == ["body", "wing", "tail", "engine or frame"]
    assert set(a.labels.tolist()) <= {0, 3} and a.meta["part_ids"] == [0, 1, 2, 3]
    cap = ShapeNetPartDataset(root, split=["test", "val"], class_choice=["Cap"], prompt_set="find3d")
    assert len(cap) == 2 and cap[0].label_names == ["crown", "brim"]
    assert cap[0].texts == ["panels or crown", "visor or peak"] and cap[0].normals.shape == (20, 3)
    assert cap[0].meta["part_ids"] == [6, 7] and set(cap[0].labels.tolist()) <= {0, 1}
    assert ShapeNetPartDataset(root, class_choice="Cap", num_points=8)[0].num_points == 8


def test_shapenetpart_missing_files(tmp_path):
    root = tmp_path / "snp"
    write_shapenetpart(root, present=("Cap",))
    with pytest.raises(DataFormatError, match=r"1 shape files listed in split 'test' are missing \(categories "
                                              r"\['Airplane'\]\); restrict the loader with class_choice"):
        ShapeNetPartDataset(root)
    with pytest.warns(UserWarning, match="missing"):
        ds = ShapeNetPartDataset(root, on_error="skip")
    assert len(ds) == 1 and ds.skipped == [(str(root / "02691156" / "a1.txt"), "listed in the split but missing")]
    with pytest.raises(DataFormatError, match="holds no shapes"):
        ShapeNetPartDataset(root, split="train", class_choice=["Cap"])
    with pytest.raises(ValueError, match="class_choice must name ShapeNetPart categories"):
        ShapeNetPartDataset(root, class_choice=["Spoon"])


# --- PartNet / PartNet-E ----------------------------------------------------------------------------------------

def test_partnet_loader(tmp_path):
    obj = tmp_path / "assets" / "12"
    (obj / "point_sample").mkdir(parents=True)
    tree = [{"id": 0, "name": "chair", "text": "Chair", "children": [
        {"id": 1, "name": "chair_back", "children": [{"id": 3, "name": "back_surface"}]},
        {"id": 2, "name": "chair_base", "children": [{"id": 4, "name": "leg"}, {"id": 5, "name": "leg"}]}]}]
    (obj / "result.json").write_text(json.dumps(tree))
    (obj / "meta.json").write_text(json.dumps({"model_cat": "Chair"}))
    np.savetxt(obj / "point_sample" / "pts-10000.txt", np.random.default_rng(0).random((6, 3)), fmt="%.6f")
    (obj / "point_sample" / "label-10000.txt").write_text("3\n4\n5\n5\n3\n4\n")
    s = PartNetDataset(tmp_path)[0]
    assert s.category == "Chair" and s.shape_id == "12" and s.label_names == ["back_surface", "leg"]
    assert s.labels.tolist() == [0, 1, 1, 1, 0, 1] and s.meta["point_node_ids"].tolist() == [3, 4, 5, 5, 3, 4]
    assert s.texts == ["back surface", "leg"]
    coarse = PartNetDataset(tmp_path, level=1)[0]
    assert coarse.label_names == ["chair_back", "chair_base"] and coarse.labels.tolist() == [0, 1, 1, 1, 0, 1]
    (obj / "point_sample" / "label-10000.txt").write_text("3\n4\n9\n5\n3\n4\n")
    with pytest.raises(DataFormatError, match=r"label-10000.txt: node ids \[9\] are not in result.json"):
        PartNetDataset(tmp_path)[0]


def test_partnete_loader(tmp_path):
    obj = tmp_path / "test" / "Chair" / "179"
    obj.mkdir(parents=True)
    (tmp_path / "PartNetE_meta.json").write_text(json.dumps({"Chair": ["arm", "back", "leg", "seat", "wheel"]}))
    head = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n" \
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    (obj / "pc.ply").write_text(head + "0 0 0 255 0 0\n1 0 0 0 255 0\n0 1 0 0 0 255\n")
    label = {"semantic_seg": np.array([3, -1, 1]), "instance_seg": np.array([0, -1, 1])}
    np.save(obj / "label.npy", np.array(label, dtype=object), allow_pickle=True)  # PartSLIP: a pickled dict
    s = PartNetEDataset(tmp_path)[0]
    assert s.category == "Chair" and s.shape_id == "179" and s.labels.tolist() == [3, -1, 1]
    assert s.label_names[3] == "seat" and s.colors[1].tolist() == [0, 1, 0]
    assert s.meta["point_instance_ids"].tolist() == [0, -1, 1]


# --- ScanObjectNN-Part, Objaverse-General, Find3D, FAUST -------------------------------------------------------

def test_scanobjectnn_part_loader(tmp_path):
    base = tmp_path / "object_dataset_complete_with_parts_"
    (base / "chair").mkdir(parents=True)
    (base / "split_new.txt").write_text("scene1_00.bin\t4\tt\nscene2_00.bin\t4\tn\n")
    cloud = np.zeros((4, 11), np.float32)
    cloud[:, :3] = np.arange(12).reshape(4, 3)
    cloud[:, 6:9] = 255
    cloud[:, 10] = [5, 5, 5, 1]  # three object points, one background
    np.concatenate([[4], cloud.reshape(-1)]).astype(np.float32).tofile(base / "chair" / "scene1_00.bin")
    part = np.array([[0, 0], [0, 2], [0, 1], [0, 0]], np.float32)
    np.concatenate([[4], part.reshape(-1)]).astype(np.float32).tofile(base / "chair" / "scene1_00_part.bin")
    names = {"chair": ["background", "back", "seat", "leg", "arm"]}
    ds = ScanObjectNNPartDataset(tmp_path, part_names=names)
    assert len(ds) == 1
    s = ds[0]
    assert s.category == "chair" and s.shape_id == "scene1_00" and s.labels.tolist() == [0, 1, -1, 0]
    assert s.colors.max() == 1.0
    fg = ScanObjectNNPartDataset(tmp_path, part_names=names, filter_background=True, remap_labels=False)[0]
    assert fg.num_points == 3 and fg.labels.tolist() == [0, 2, 1]
    with pytest.raises(DataFormatError, match="part-name file does not exist"):
        ScanObjectNNPartDataset(tmp_path)


def test_objaverse_general_loader(tmp_path):
    obj = tmp_path / "unseen" / "coffee_maker_ab12"
    obj.mkdir(parents=True)
    rows = np.concatenate([np.random.default_rng(0).random((3, 6)), np.zeros((3, 1))], axis=1).astype(np.float32)
    (obj / "points5000.pcd").write_bytes(_pcd_header(3, "binary") + rows.tobytes())
    (obj / "label_map.json").write_text(json.dumps({"1": "handle", "2": "lid"}))
    np.save(obj / "labels.npy", np.array([0, 2, 1]))
    s = ObjaverseGeneralDataset(tmp_path)[0]
    assert s.category == "coffee maker" and s.shape_id == "ab12"
    assert s.label_names == ["handle", "lid"] and s.labels.tolist() == [-1, 1, 0]
    with pytest.raises(DataFormatError, match="subset folder does not exist"):
        ObjaverseGeneralDataset(tmp_path, subsets=["seenclass"])


def write_find3d(root, n=40):
    lab = root / "labeled"
    (lab / "split").mkdir(parents=True)
    (lab / "split" / "train.txt").write_text("office_chair_u1\n")
    (lab / "points" / "u1").mkdir(parents=True)
    torch.save(torch.rand(n, 3, generator=torch.Generator().manual_seed(0)), lab / "points" / "u1" / "points.pt")
    mdir = lab / "rendered" / "office_chair_u1" / "oriented" / "masks" / "merged"
    mdir.mkdir(parents=True)
    masks = torch.zeros(4, n, dtype=torch.uint8)
    masks[0, :10] = 1
    masks[1, 10:25] = 1
    masks[2, 5:12] = 1  # the same name from another view, overlapping
    masks[3, 30:] = 1
    torch.save(masks, mdir / "mask2points.pt")
    (mdir / "mask_labels.txt").write_text("leg\nseat\nleg\noffice chair\n")


def test_find3d_loader_merges_masks(tmp_path):
    write_find3d(tmp_path)
    s = Find3DDataset(tmp_path, "train")[0]
    assert s.category == "office_chair" and s.shape_id == "u1" and s.meta["item_id"] == "office_chair_u1"
    assert s.label_names == ["leg", "seat", "office chair"] and s.label_masks.shape == (3, 40)
    assert s.label_masks[0, :12].all() and not s.label_masks[0, 12:].any()
    assert s.labels[10].item() == 1 and s.labels[5].item() == 0 and s.labels[12].item() == 1  # last covering label
    assert s.labels[26].item() == -1
    dropped = Find3DDataset(tmp_path, "train", exclude_category_label=True)[0]
    assert dropped.label_names == ["leg", "seat"]
    sampled = Find3DDataset(tmp_path, "train", sampler=MaskAwareSample(20, min_per_label=4))[0]
    assert sampled.num_points == 20 and (sampled.label_masks.sum(1) >= 4).all()
    with pytest.raises(DataFormatError, match=r"val.txt: split file does not exist"):
        Find3DDataset(tmp_path, "val")
    (tmp_path / "labeled" / "split" / "val.txt").write_text("\n")
    with pytest.raises(DataFormatError, match=r"val.txt: split is empty"):
        Find3DDataset(tmp_path, "val")


def test_faust_npz_loader(tmp_path):
    for i in range(2):
        np.savez(tmp_path / f"tr_scan_00{i}.npz", points=np.random.default_rng(i).random((10, 3)),
                 labels=np.arange(10) % 4, label_names=np.array(["arm", "head", "leg", "torso"]))
    ds = FaustNpzDataset(tmp_path)
    assert len(ds) == 2 and ds[1].shape_id == "tr_scan_001" and ds[0].category == "human"
    assert ds[0].label_names == ["arm", "head", "leg", "torso"]
    assert len(FaustNpzDataset(str(tmp_path / "*.npz"), num_points=4)[0].points) == 4
    with pytest.raises(DataFormatError, match="path does not exist"):
        FaustNpzDataset(tmp_path / "none")


# --- registry ---------------------------------------------------------------------------------------------------

def test_registry(tmp_path, monkeypatch):
    assert set(DATASETS) == {"synthetic", "shapenetpart", "lpsb", "partnet", "partnete", "scanobjectnn_part",
                             "objaverse_general", "find3d", "faust"}
    with pytest.raises(ValueError, match=r"unknown dataset 'modelnet'; valid names: faust, find3d, lpsb"):
        build_dataset("modelnet")
    write_lpsb(tmp_path / "lpsb" / "LabeledDB_new", "Cup", "1", [("body", [1, 2, 3])])
    monkeypatch.setenv("PA3D_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    assert len(build_dataset("lpsb", num_points=16)) == 1
    with pytest.raises(ValueError, match="root: no folder given for dataset 'faust'"):
        build_dataset("faust")
    assert build_dataset("synthetic", tmp_path / "cache", num_shapes=2, num_points=32).cache_path.parent == \
        tmp_path / "cache"
