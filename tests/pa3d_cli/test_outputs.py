"""Results carried back to the source (vertices, faces, every point), the outputs of ``pa3d segment`` and its
issue-18 cases: precision, no overwrites, OS errors, permissions, descriptors, several inputs."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_cli.main import main
from pa3d_cli.outputs import detect_up_axis, face_similarities, labels_from_similarities, transfer_similarities
from pa3d_cli.segment import segment_file
from pa3d_data import read_glb, read_ply, write_ply_points

TINY = ["--model", "patchalign3d_tiny", "--text-model", "fixed:64", "--num-points", "256"]
KW = dict(model_name="patchalign3d_tiny", text_model="fixed:64", num_points=256, log=lambda *_: None)


# ------------------------------------------------------------------------------------------ transfer


def _idw_loop(samples, values, targets, k):
    out = []
    for t in targets:
        d = np.linalg.norm(samples - t, axis=1)
        idx = np.argsort(d, kind="stable")[:k]
        if d[idx[0]] == 0:
            out.append(values[idx[0]])
            continue
        w = 1 / d[idx]
        out.append((w[:, None] * values[idx]).sum(0) / w.sum())
    return np.array(out)


@given(seed=st.integers(0, 2**16), s=st.integers(1, 30), t=st.integers(0, 30), k=st.integers(1, 4),
       offset=st.sampled_from([0.0, 1e6]))
def test_transfer_equals_a_plain_loop(seed, s, t, k, offset):
    rng = np.random.default_rng(seed)
    samples = rng.random((s, 3)) + offset
    values = rng.normal(size=(s, 2))
    targets = np.concatenate([rng.random((t, 3)) + offset, samples[: min(3, s)]])
    got = transfer_similarities(samples, values, targets, k=k, chunk=7)
    want = _idw_loop(samples - samples.mean(0), values, targets - samples.mean(0), min(k, s))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got[t:], values[: min(3, s)])  # a target on a sample takes its values
    const = transfer_similarities(samples, np.full((s, 1), 0.7), targets, k=k)
    np.testing.assert_allclose(const, 0.7, rtol=1e-12)


def test_transfer_bad_arguments():
    with pytest.raises(ValueError, match=r"sample_points must be \(S, 3\) with S >= 1"):
        transfer_similarities(np.zeros((0, 3)), np.zeros((0, 1)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        transfer_similarities(np.zeros((1, 3)), np.zeros((1, 1)), np.zeros((1, 3)), k=0)


@given(seed=st.integers(0, 2**16), v=st.integers(3, 12), f=st.integers(1, 10), s=st.integers(0, 20))
def test_face_similarities_equal_a_loop(seed, v, f, s):
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, v, (f, 3))
    vv, ids, sv = rng.normal(size=(v, 2)), rng.integers(0, f, s), rng.normal(size=(s, 2))
    got = face_similarities(faces, vv, ids, sv)
    for i in range(f):
        on = sv[ids == i]
        np.testing.assert_allclose(got[i], on.mean(0) if len(on) else vv[faces[i]].mean(0))


def test_labels_from_similarities_match_the_model_formula():
    sims = np.array([[0.1, 0.3], [0.9, -0.2], [0.0, 0.0]])
    labels, scores = labels_from_similarities(sims, 10.0, -10.0, min_score=5e-4)
    np.testing.assert_allclose(scores, torch.sigmoid(10 * torch.tensor([0.3, 0.9, 0.0]) - 10).numpy(), rtol=1e-6)
    assert labels.tolist() == [1, 0, -1]


@given(perm=st.permutations([0, 1, 2]), tall=st.floats(2.0, 10.0))
def test_detect_up_axis_finds_the_tall_axis(perm, tall):
    box = np.array([[0, 0, 0], [1, tall, 0.9]])[:, list(perm)]  # the tall axis lands at perm.index(1)
    up = "xyz"[list(perm).index(1)]
    assert detect_up_axis(box) == (up if up in "yz" else detect_up_axis(box))


# ------------------------------------------------------------------------------------------ CLI


def _cloud(path: Path, n: int = 400, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    pts = np.random.default_rng(seed).random((n, 3)) * [1.0, 2.0, 0.5] + offset
    write_ply_points(path, pts)
    return pts


def test_far_off_cloud_keeps_precision_and_labels(tmp_path, capsys):
    """Issue 18: 1e6 + U(0, 1) round-trips within 1e-3, and float64 centring gives the labels of the same
    cloud at the origin (a float32 cast first would merge neighbourhoods)."""
    near = _cloud(tmp_path / "near.ply", seed=3)
    far = _cloud(tmp_path / "far.ply", offset=1e6, seed=3)
    for name in ("near", "far"):
        assert main(["segment", str(tmp_path / f"{name}.ply"), "--parts", "a,b,c", "-o",
                     str(tmp_path / f"{name}_out.ply"), *TINY]) == 0, capsys.readouterr().err
    out_far, out_near = read_ply(tmp_path / "far_out.ply"), read_ply(tmp_path / "near_out.ply")
    assert np.abs(out_far["points"] - far).max() < 1e-3
    np.testing.assert_array_equal(out_near["points"], near)
    assert np.array_equal(out_far["labels"], out_near["labels"])


def test_point_cloud_every_point_labelled_with_scores_and_heatmap(tmp_path, capsys):
    _cloud(tmp_path / "c.ply", n=1000)
    out = tmp_path / "res" / "c.ply"
    rc = main(["segment", str(tmp_path / "c.ply"), "--parts", "tête,corps", "-o", str(out), "--scores",
               "--heatmap", "corps", "--legend", "--png", *TINY])
    assert rc == 0, capsys.readouterr().err
    data = read_ply(out)
    assert len(data["points"]) == 1000 and set(np.unique(data["labels"])) <= {0, 1}
    out.read_bytes().split(b"end_header")[0].decode("ascii")  # non-ASCII part names: header still ASCII
    with np.load(tmp_path / "res" / "c.scores.npz", allow_pickle=False) as npz:
        assert npz["similarities"].shape == (1000, 2) and npz["scores"].shape == (1000,)
        assert npz["part_names"].tolist() == ["tête", "corps"]
        assert np.array_equal(npz["labels"], data["labels"])
        np.testing.assert_array_equal(npz["labels"], npz["similarities"].argmax(1))
        sims = npz["similarities"][:, 1]
    heat = read_ply(tmp_path / "res" / "c.heatmap-corps.ply")
    from pa3d_data import heatmap_colors

    np.testing.assert_allclose(heat["colors"] * 255, heatmap_colors(sims), atol=0.51)
    legend = json.loads((tmp_path / "res" / "c.legend.json").read_text(encoding="utf-8"))
    assert [p["name"] for p in legend["parts"]] == ["tête", "corps"] and legend["points"] == 1000
    umask = os.umask(0)
    os.umask(umask)
    for f in ("c.ply", "c.legend.json", "c.png", "c.scores.npz"):
        assert stat.S_IMODE((tmp_path / "res" / f).stat().st_mode) == 0o666 & ~umask, f
    assert (tmp_path / "res" / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "res" / "c.heatmap-corps.png").read_bytes()[:4] == b"\x89PNG"  # --png draws heatmaps too


def test_several_inputs_folder_and_glob(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        _cloud(src / f"c{i}.ply", seed=i)
    np.savez(src / "n.npz", points=np.random.default_rng(5).random((300, 3)))
    (src / "notes.md").write_text("not a shape")
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    (tmp_path / "tet.obj").write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v)
                                      + "f 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    out = tmp_path / "out"
    rc = main(["segment", str(src), str(tmp_path / "*.obj"), "--parts", "a,b", "--out-dir", str(out), "--png", *TINY])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["c0.ply", "c0.png", "c1.ply", "c1.png", "n.ply", "n.png",
                                                     "tet.glb", "tet.png"]
    assert len(read_ply(out / "n.ply")["points"]) == 300
    tet = read_glb(out / "tet.glb")
    assert tet["faces"].shape == (4, 3) and tet["face_labels"].shape == (4,)
    # --format; --output with several inputs is refused; the same stem twice is refused
    assert main(["segment", str(src), "--parts", "a,b", "--out-dir", str(tmp_path / "o2"), "--format", "npz",
                 *TINY]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["c0.npz", "c1.npz", "n.npz"]
    assert main(["segment", str(src), "--parts", "a,b", "-o", str(tmp_path / "x.ply"), *TINY]) == 2
    assert "3 inputs need --out-dir" in capsys.readouterr().err
    _cloud(tmp_path / "c0.ply")
    assert main(["segment", str(src / "c0.ply"), str(tmp_path / "c0.ply"), "--parts", "a,b", "--out-dir",
                 str(tmp_path / "o3"), *TINY]) == 2
    assert "name the same file" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


def test_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    _cloud(tmp_path / "c.ply")
    rc = main(["segment", str(tmp_path / "c.ply"), "--parts", "a,b", "-o", "/proc/pa3d-no/x.ply", *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("pa3d segment: error:") == 1 and "Traceback" not in err, err

    import pa3d_models.files as files

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    rc = main(["segment", str(tmp_path / "c.ply"), "--parts", "a,b", "-o", str(tmp_path / "o.ply"), *TINY])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ply"]  # no partial or temporary file
    with pytest.raises(OSError):
        main(["segment", str(tmp_path / "c.ply"), "--parts", "a,b", "-o", str(tmp_path / "o.ply"), "--debug", *TINY])


def test_segment_file_leaks_no_descriptor(tmp_path):
    _cloud(tmp_path / "c.ply")
    segment_file(tmp_path / "c.ply", "a,b", output=tmp_path / "o.ply", png="auto", legend="auto", **KW)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        segment_file(tmp_path / "c.ply", "a,b", output=tmp_path / "o.ply", png="auto", legend="auto", **KW)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_build_text_bank_refuses_to_overwrite_and_binary_names(tmp_path, capsys):
    names = tmp_path / "n.txt"
    names.write_text("leg\nseat\n")
    original = names.read_bytes()
    assert main(["build-text-bank", "--names", str(names), "--out", str(names), "--text-model", "fixed:8"]) == 2
    assert "refusing to overwrite the input --names" in capsys.readouterr().err
    assert names.read_bytes() == original
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01\x02garbage\xff")
    assert main(["build-text-bank", "--names", str(blob), "--out", str(tmp_path / "b.st"), "--text-model",
                 "fixed:8"]) == 2
    assert "is a binary file" in capsys.readouterr().err
    assert main(["build-text-bank", "--names", str(names), "--out", str(tmp_path), "--text-model", "fixed:8"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["build-text-bank", "--names", str(names), "--out", str(tmp_path / "b.st"), "--text-model",
                 "fixed:0"]) == 2
    assert "positive integer DIM" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "n.txt"]
