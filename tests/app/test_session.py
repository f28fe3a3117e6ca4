"""The app's logic without a browser: default checkpoint, page messages for bad input, text-embedding cache,
views (parts, heatmaps, point clouds), the trusted-file rule, analytics off, ``pa3d app --help``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pytest
import torch

from pa3d_app import find_default_checkpoint
from pa3d_app.app import GRADIO_ENV, SegmentSession, _error, _import_gradio, legend_html, view_choices
from pa3d_cli.segment import SegmentError, load_shape
from pa3d_data import read_glb, write_ply_points
from pa3d_models import create_model


@pytest.fixture()
def session(tmp_path):
    return SegmentSession(runs_dir=tmp_path / "runs", model_name="patchalign3d_tiny", text_model="fixed:64",
                          num_points=256, workdir=tmp_path / "work")


def _tet(path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0], [1, 1, 1]])
    path.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + "f 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\nf 2 3 5\n")
    return path


def test_default_checkpoint_is_the_newest_stage2_model(tmp_path):
    assert find_default_checkpoint(tmp_path / "runs") is None
    model = create_model("patchalign3d_tiny")
    old, new = tmp_path / "runs" / "a" / "stage2" / "model", tmp_path / "runs" / "b" / "stage2" / "model"
    model.save_pretrained(new)
    model.save_pretrained(old)
    model.save_pretrained(tmp_path / "runs" / "c" / "stage1" / "model")  # Stage 1 has no trained text head
    t = time.time()
    os.utime(old / "model.safetensors", (t - 100, t - 100))
    assert find_default_checkpoint(tmp_path / "runs") == new
    s = SegmentSession(runs_dir=tmp_path / "runs", text_model="fixed:64", workdir=tmp_path / "w")
    assert s.default_checkpoint == str(new)


@pytest.mark.parametrize(
    "upload, parts, match",
    [
        (None, "a,b", "upload a mesh or point cloud first"),
        ("tet", "  ", "type the part names"),
        ("tet", "a,,b", "non-empty part names"),
        ("tet", "leg,Leg", "duplicate part names"),
        ("garbage", "a,b", "cannot read"),
        ("docx", "a,b", "unsupported type"),
    ],
)
def test_bad_input_is_a_message(session, tmp_path, upload, parts, match):
    files = {"tet": _tet(tmp_path / "tet.obj"), "garbage": tmp_path / "g.ply", "docx": tmp_path / "a.docx"}
    files["garbage"].write_bytes(b"ply\nformat ascii 1.0\nelement vertex 9\nproperty float x\nend_header\n1\n")
    files["docx"].write_bytes(b"PK")
    with pytest.raises(SegmentError, match=match) as info:
        session.run(files.get(upload), parts)
    msg = _error(info.value)
    assert msg.startswith("❌ **Error:**") and "Traceback" not in msg and "\n" not in msg


def test_missing_weights_and_untrusted_pickles_are_messages(session, tmp_path):
    tet = _tet(tmp_path / "tet.obj")
    with pytest.raises(SegmentError, match="cannot load checkpoint"):
        session.run(tet, "a,b", checkpoint=str(tmp_path / "nope"))
    legacy = tmp_path / "official.pt"
    torch.save({"model": create_model("patchalign3d_tiny").encoder.state_dict(), "args": argparse.Namespace(x=1)},
               legacy)
    with pytest.raises(SegmentError, match="trusted"):  # the legacy pickle needs the page's explicit tick
        session.run(tet, "a,b", checkpoint=str(legacy), trusted=False)


def test_run_mesh_downloads_views_and_text_cache(session, tmp_path):
    tet = _tet(tmp_path / "tet.obj")
    calls = []
    seg = session.segmenter("", False, "fixed:64")
    encode = seg.encoder.encode
    seg.encoder.encode = lambda names: calls.append(list(names)) or encode(names)
    out = session.run(tet, "top, bottom", text_model="fixed:64")
    assert "UNTRAINED" in out["status"]
    assert [os.path.basename(p) for p in out["downloads"]] == ["tet_parts.glb", "tet_parts.ply", "tet_parts.npz"]
    glb = read_glb(out["downloads"][0])
    assert glb["faces"].shape == (5, 3) and glb["attributes"]["_LABEL"].shape == (5,)
    assert out["choices"] == view_choices(["top", "bottom"]) == ["parts", "heatmap: top", "heatmap: bottom"]
    legend = legend_html(out["result"])
    assert legend.count('class="pa3d-part"') >= 2 and "top" in legend and "bottom" in legend
    heat = session.view(out["result"], "heatmap: bottom", out["folder"])
    colors = read_glb(heat)["attributes"]["COLOR_0"][:, :3]
    assert np.array_equal(colors, out["result"].heatmap_colors("bottom"))
    with pytest.raises(SegmentError, match="not one of the part names"):
        session.view(out["result"], "heatmap: tail")
    session.run(tet, "top, bottom", text_model="fixed:64")
    assert calls == [["top", "bottom"]] and seg.cache_hits == 1  # the second request reuses the embeddings


def test_calibration_is_the_segmenters_and_said_on_the_page(session, tmp_path):
    tet = _tet(tmp_path / "tet.obj")
    seg = session.segmenter("", False, "fixed:64")
    for rule in ("none", "prior"):
        out = session.run(tet, "top, bottom, side", text_model="fixed:64", calibration=rule)
        direct = seg(load_shape(tet), ["top", "bottom", "side"], num_points=256, calibration=rule)
        assert out["result"].info["calibration"] == rule
        assert np.array_equal(out["result"].face_labels, direct.face_labels)  # what pa3d segment gives
        assert ("prior correction" in out["status"]) == (rule == "prior")
    with pytest.raises(SegmentError, match="--calibration must be one of none, prior, got 'softmax'"):
        session.run(tet, "top, bottom", calibration="softmax")


def test_point_cloud_view_draws_every_point(session, tmp_path):
    pts = np.random.default_rng(0).random((300, 3))
    write_ply_points(tmp_path / "c.ply", pts)
    out = session.run(tmp_path / "c.ply", "a,b")
    view = read_glb(out["view"])
    assert view["vertices"].shape == (300 * 6, 3) and view["faces"].shape == (300 * 8, 3)
    np.testing.assert_allclose(view["vertices"].reshape(300, 6, 3).mean(1), pts, atol=1e-6)


def test_a_trained_checkpoint_is_not_flagged(tmp_path):
    ckpt = tmp_path / "runs" / "r" / "stage2" / "model"
    create_model("patchalign3d_tiny").save_pretrained(ckpt)
    s = SegmentSession(runs_dir=tmp_path / "runs", text_model="fixed:64", num_points=256, workdir=tmp_path / "w")
    out = s.run(_tet(tmp_path / "tet.obj"), "a,b")
    assert "UNTRAINED" not in out["status"] and out["result"].info["checkpoint"] == str(ckpt)


def test_gradio_is_imported_offline_and_lazily(monkeypatch):
    pytest.importorskip("gradio") if not os.environ.get("CI") else None
    gr = _import_gradio()
    for key, value in GRADIO_ENV.items():
        assert os.environ[key] == value
    from pa3d_app import build_app

    demo = build_app(SegmentSession(text_model="fixed:64", model_name="patchalign3d_tiny"))
    assert isinstance(demo, gr.Blocks) and demo.analytics_enabled is False
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(ImportError, match=r"pip install 'pa3d\[app\]'"):
        _import_gradio()


def test_app_help_documents_the_command(capsys):
    from pa3d_cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["app", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in ("127.0.0.1", "--host", "--port", "--checkpoint", "UNTRAINED", "trusted", "offline"):
        assert text in out, text
    assert main(["app", "--port", "99999"]) == 2
    assert "--port must be in [0, 65535]" in capsys.readouterr().err
