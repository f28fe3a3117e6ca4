"""Zero-shot segmentation: ``model.segment`` after a little training, and the ``pa3d segment`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pa3d_cli.main import main
from pa3d_cli.segment import parse_part_names, write_ply
from pa3d_losses import fractional_patch_labels, multi_positive_sigmoid_loss
from pa3d_models import FixedTextEncoder, TextBank, create_model

NAMES = ["cap", "stem"]


def toy_shape(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A mushroom-like toy: a flat disc ("cap", label 0) above a thin vertical rod ("stem", label 1)."""
    n_cap = n // 2
    r = torch.rand(n_cap, generator=generator).sqrt() * 0.9
    t = torch.rand(n_cap, generator=generator) * 2 * torch.pi
    cap = torch.stack([r * t.cos(), r * t.sin(), 0.5 + 0.1 * torch.rand(n_cap, generator=generator)], -1)
    m = n - n_cap
    stem = torch.stack(
        [0.1 * torch.randn(m, generator=generator), 0.1 * torch.randn(m, generator=generator),
         -0.9 + 1.2 * torch.rand(m, generator=generator)], -1
    )
    points = torch.cat([cap, stem])
    labels = torch.cat([torch.zeros(n_cap, dtype=torch.long), torch.ones(m, dtype=torch.long)])
    perm = torch.randperm(n, generator=generator)
    return points[perm], labels[perm]


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = create_model("patchalign3d_tiny", backend="torch")
    encoder = FixedTextEncoder(dim=model.text_dim)
    text = encoder.encode(NAMES)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for m in model.modules():  # a cumulative average: 12 steps are too few for momentum 0.1 to settle
        if isinstance(m, torch.nn.BatchNorm1d):
            m.momentum = None
    for _ in range(12):
        pts, labels = zip(*(toy_shape(256, g) for _ in range(4)))
        pts, labels = torch.stack(pts), torch.stack(labels)
        out = model(pts)
        targets = fractional_patch_labels(out["patch_idx"], point_labels=labels, num_labels=2)
        loss = multi_positive_sigmoid_loss(
            out["patch_feats"], text.expand(4, -1, -1), targets,
            logit_scale=out["logit_scale"], logit_bias=out["logit_bias"],
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), encoder


def test_segment_recovers_parts_after_a_few_steps(trained):
    model, encoder = trained
    g = torch.Generator().manual_seed(123)
    pts, labels = toy_shape(400, g)
    result = model.segment(pts, NAMES, encoder)
    assert result.labels.shape == (400,) and result.scores.shape == (400,)
    assert result.similarities.shape == (400, 2)
    acc = (result.labels == labels).float().mean().item()
    assert acc > 0.9, acc
    # untrained weights do not: the test measures learning, not the toy's geometry
    untrained = create_model("patchalign3d_tiny", backend="torch").eval()
    acc0 = (untrained.segment(pts, NAMES, encoder).labels == labels).float().mean().item()
    assert acc0 < acc


def test_segment_batch_bank_and_tensor_agree(trained):
    model, encoder = trained
    g = torch.Generator().manual_seed(5)
    batch = torch.stack([toy_shape(300, g)[0] for _ in range(2)])
    by_encoder = model.segment(batch, NAMES, encoder)
    by_bank = model.segment(batch, NAMES, TextBank.build(NAMES, encoder))
    by_tensor = model.segment(batch, NAMES, encoder.encode(NAMES))
    assert by_encoder.labels.shape == (2, 300)
    assert torch.equal(by_encoder.labels, by_bank.labels) and torch.equal(by_encoder.labels, by_tensor.labels)
    single = model.segment(batch[1], NAMES, encoder)
    assert torch.equal(single.labels, by_encoder.labels[1])
    membership = model.segment(batch, NAMES, encoder, assign="membership")
    assert membership.labels.shape == (2, 300)


def test_segment_min_score_leaves_points_unlabelled(trained):
    model, encoder = trained
    pts = toy_shape(300, torch.Generator().manual_seed(9))[0]
    res = model.segment(pts, NAMES, encoder, min_score=0.0)
    assert (res.labels >= 0).all()
    cut = float(res.scores.median())
    res_cut = model.segment(pts, NAMES, encoder, min_score=cut)
    assert torch.equal(res_cut.labels == -1, res.scores < cut)
    assert ((res.scores >= 0) & (res.scores <= 1)).all()


def test_segment_bad_inputs(trained):
    model, encoder = trained
    pts = torch.rand(300, 3)
    with pytest.raises(ValueError, match="duplicates"):
        model.segment(pts, ["leg", "Leg"], encoder)
    with pytest.raises(ValueError, match="empty part name"):
        model.segment(pts, ["leg", " "], encoder)
    with pytest.raises(ValueError, match=r"text dimension 16 does not match the model's text head \(64\)"):
        model.segment(pts, ["leg"], FixedTextEncoder(dim=16))
    with pytest.raises(ValueError, match="finite"):
        model.segment(torch.full((300, 3), float("nan")), ["leg"], encoder)


def test_parse_part_names():
    assert parse_part_names("leg, seat") == ["leg", "seat"]
    with pytest.raises(ValueError, match="non-empty"):
        parse_part_names("leg,,seat")
    with pytest.raises(ValueError, match="duplicate"):
        parse_part_names("leg,LEG")


# ------------------------------------------------------------------------------------------------ CLI


def read_ply(path):
    """A small reader for the PLYs we write (vertex element only): returns (header lines, dict of columns)."""
    from pa3d_data import read_ply as library_read_ply

    raw = path.read_bytes()
    header = raw.split(b"end_header\n", 1)[0].decode("ascii").splitlines()
    props = [line.split()[-1] for line in header if line.startswith("property") and "list" not in line]
    assert props[:7] == ["x", "y", "z", "red", "green", "blue", "label"], props
    data = library_read_ply(path)
    return header, {"xyz": data["points"], "rgb": np.rint(data["colors"] * 255).astype(int),
                    "label": data["labels"], "faces": data.get("faces")}


CLI_BASE = ["--model", "patchalign3d_tiny", "--text-model", "fixed:64", "--num-points", "512"]


@pytest.mark.data
def test_cli_writes_the_whole_penguin_mesh(shared_data, tmp_path, capsys):
    """Issue 16's "done when": GLB and PLY of the whole source mesh (9,258 faces) with per-vertex labels."""
    from pa3d_data import read_glb, read_mesh

    penguin = shared_data / "demo" / "satr" / "penguin.obj"
    if not penguin.is_file():
        pytest.skip(f"{penguin} is absent")
    mesh = read_mesh(penguin)
    assert len(mesh.faces) == 9258
    out, png, legend = tmp_path / "p.glb", tmp_path / "penguin.png", tmp_path / "legend.json"
    rc = main(["segment", str(penguin), "--parts", "head,body,wing,foot", "--output", str(out),
               "--png", str(png), "--legend", str(legend), *CLI_BASE])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "UNTRAINED" in captured.out
    glb = read_glb(out)
    assert out.read_bytes()[:4] == b"glTF"
    assert glb["faces"].shape == (9258, 3) and np.array_equal(glb["faces"], mesh.faces)
    np.testing.assert_allclose(glb["vertices"], mesh.vertices, atol=1e-5)
    labels = glb["attributes"]["_LABEL"]
    assert labels.shape == (len(mesh.vertices),) and set(np.unique(labels)) <= {0, 1, 2, 3}
    from pa3d_train.viz import colorize_labels

    assert np.array_equal(glb["attributes"]["COLOR_0"][:, :3], colorize_labels(labels.astype(int), 4))
    assert glb["gltf"]["extras"]["pa3d"]["parts"] == ["head", "body", "wing", "foot"]
    assert glb["face_labels"].shape == (9258,)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leg = json.loads(legend.read_text())
    assert [p["name"] for p in leg["parts"]] == ["head", "body", "wing", "foot"] and leg["untrained"]
    assert sum(p["points"] for p in leg["parts"]) == len(mesh.vertices)
    assert sum(p["faces"] for p in leg["parts"]) == 9258
    # the PLY holds the mesh with its faces, colours and labels, and agrees with the GLB
    out_ply = tmp_path / "p.ply"
    assert main(["segment", str(penguin), "--parts", "head,body,wing,foot", "--output", str(out_ply),
                 "--binary", *CLI_BASE]) == 0
    header, data = read_ply(out_ply)
    assert "element face 9258" in header
    assert np.array_equal(data["faces"], mesh.faces)
    assert np.array_equal(data["label"], labels.astype(int))
    np.testing.assert_allclose(data["xyz"], mesh.vertices, atol=1e-12)


def _saved_tiny_model_and_toy_cloud(tmp_path):
    """A random tiny model saved at ``tmp_path/ckpt`` and a 600-point toy cloud saved as ``tmp_path/toy.npy``."""
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    create_model("patchalign3d_tiny").save_pretrained(ckpt)
    pts = toy_shape(600, torch.Generator().manual_seed(1))[0].numpy()
    np.save(tmp_path / "toy.npy", pts)
    return ckpt, pts


def test_cli_with_a_checkpoint_and_a_point_cloud(tmp_path, capsys):
    ckpt, pts = _saved_tiny_model_and_toy_cloud(tmp_path)
    out = tmp_path / "toy.ply"
    rc = main(["segment", str(tmp_path / "toy.npy"), "--parts", "cap,stem", "--checkpoint", str(ckpt),
               "--text-model", "fixed:64", "--output", str(out), "--min-score", "0.99", "--swap-yz",
               "--up-axis", "y", "--num-points", "256"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "UNTRAINED" not in captured.out and "no label" in captured.out
    _, data = read_ply(out)
    assert data["xyz"].shape == (600, 3)  # every input point, not only the 256 the model saw
    np.testing.assert_allclose(data["xyz"], pts, atol=1e-7)
    assert (data["label"] == -1).all()  # an untrained head scores far below 0.99
    assert set(map(tuple, data["rgb"])) == {(170, 170, 170)}


def test_cli_votes_average_passes_over_other_patch_centres(tmp_path, capsys):
    ckpt, _ = _saved_tiny_model_and_toy_cloud(tmp_path)
    written = {}
    for votes in (1, 4):
        out = tmp_path / f"toy{votes}.npz"
        rc = main(["segment", str(tmp_path / "toy.npy"), "--parts", "cap,stem", "--checkpoint", str(ckpt),
                   "--text-model", "fixed:64", "--output", str(out), "--num-points", "256",
                   "--votes", str(votes)])
        assert rc == 0, capsys.readouterr().err
        written[votes] = dict(np.load(out))
    one, four = written[1], written[4]
    assert one["points"].shape == four["points"].shape == (600, 3)
    assert four["labels"].shape == (600,) and set(np.unique(four["labels"])) <= {0, 1}
    assert not np.array_equal(one["similarities"], four["similarities"])  # other patches in the other passes


def test_cli_calibration_prior_relabels_with_the_samples_prior(tmp_path, capsys):
    """--calibration prior: every label is the argmax of scale * s - 0.5 * log(prior of the model's samples)."""
    from pa3d_cli.outputs import labels_from_similarities
    from pa3d_layers import name_prior

    ckpt, _ = _saved_tiny_model_and_toy_cloud(tmp_path)
    written = {}
    for calibration in ("none", "prior"):
        out = tmp_path / f"toy_{calibration}.npz"
        rc = main(["segment", str(tmp_path / "toy.npy"), "--parts", "cap,stem,leg", "--checkpoint", str(ckpt),
                   "--text-model", "fixed:64", "--output", str(out), "--num-points", "256",
                   "--calibration", calibration, "--legend"])
        assert rc == 0, capsys.readouterr().err
        written[calibration] = dict(np.load(out))
        legend = json.loads(out.with_suffix(".legend.json").read_text())
        assert legend["calibration"] == calibration
    none, prior = written["none"], written["prior"]
    np.testing.assert_array_equal(none["similarities"], prior["similarities"])  # the scores are the model's
    np.testing.assert_array_equal(none["labels"], none["similarities"].argmax(1))
    from pa3d_models import load_pretrained

    scale = float(load_pretrained(ckpt).logit_params()[0].detach())
    sims, samples = (torch.from_numpy(prior[k]).double() for k in ("similarities", "sample_similarities"))
    want = labels_from_similarities(sims.numpy(), scale, None, prior=name_prior(samples, scale).numpy())[0]
    by_hand = (torch.log_softmax(sims * scale, -1) - 0.5 * torch.softmax(samples * scale, -1).mean(0).log())
    # the files hold float32 copies of the float64 scores: ties may round apart on a rare point
    assert (prior["labels"] == want).mean() > 0.99 and (want == by_hand.argmax(1).numpy()).all()
    # a name winning everywhere gives way where another is relatively strongest (the samples' prior)
    s = np.array([[0.9, 0.5], [0.8, 0.6], [0.7, 0.65]])
    assert labels_from_similarities(s, 10.0, None)[0].tolist() == [0, 0, 0]
    lab, sc = labels_from_similarities(s, 10.0, -5.0, prior=name_prior(torch.from_numpy(s), 10.0).numpy())
    assert lab.tolist() == [0, 0, 1] and sc[2] == pytest.approx(1 / (1 + np.exp(-(6.5 - 5.0))))


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_checkpoint", "cannot load checkpoint"),
        ("corrupt_checkpoint", "cannot load checkpoint"),
        ("text_dim", "text dimension mismatch"),
        ("empty_name", "non-empty part names"),
        ("duplicate_name", "duplicate part names"),
        ("nan_points", "NaN"),
        ("empty_mesh", "test"),
        ("missing_input", "does not exist"),
        ("unsupported", "unsupported type '.docx'"),
        ("garbage_ply", "cannot read"),
        ("heatmap_not_a_part", "--heatmap part 'tail' is not one of the part names"),
        ("fixed_abc", "fixed:DIM needs a positive integer DIM, got 'fixed:abc'"),
        ("fixed_neg", "fixed:DIM needs a positive integer DIM, got 'fixed:-4'"),
        ("fixed_zero", "fixed:DIM needs a positive integer DIM, got 'fixed:0'"),
        ("min_score_nan", "--min-score must be a finite number"),
        ("votes_zero", "--votes must be an int >= 1, got 0"),
        ("bad_suffix", "--output must end in .glb, .ply or .npz"),
        ("output_is_input", "refusing to overwrite the input"),
        ("png_is_input", "refusing to overwrite the input"),
        ("legend_is_input", "refusing to overwrite the input"),
        ("legend_is_output", "name the same file"),
        ("folder_is_a_file", "exists and is a file"),
        ("output_is_a_dir", "is a directory"),
        ("nan_weights", "NaN"),  # the loader (or segment) refuses non-finite weights
    ],
)
def test_cli_bad_input_is_a_clear_error_and_writes_nothing(case, match, tmp_path, capsys):
    pts = toy_shape(600, torch.Generator().manual_seed(1))[0].numpy()
    inp = tmp_path / "toy.npy"
    np.save(inp, pts)
    parts = "cap,stem"
    out = tmp_path / "out.ply"
    text_model = "fixed:32" if case == "text_dim" else "fixed:64"
    extra: list[str] = ["--png", str(tmp_path / "o.png")]
    if case == "missing_checkpoint":
        extra += ["--checkpoint", str(tmp_path / "nope")]
    elif case == "corrupt_checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        extra += ["--checkpoint", str(tmp_path / "bad.pt")]
    elif case == "text_dim":
        create_model("patchalign3d_tiny").save_pretrained(tmp_path / "ckpt")
        extra += ["--checkpoint", str(tmp_path / "ckpt")]
    elif case == "nan_weights":
        model = create_model("patchalign3d_tiny")
        with torch.no_grad():
            model.text_head.weight[0, 0] = float("nan")
        model.save_pretrained(tmp_path / "ckpt")
        extra += ["--checkpoint", str(tmp_path / "ckpt")]
    elif case == "empty_name":
        parts = "cap,,stem"
    elif case == "duplicate_name":
        parts = "cap,Cap"
    elif case == "nan_points":
        pts[3, 1] = np.nan
        np.save(inp, pts)
    elif case == "empty_mesh":
        inp = tmp_path / "empty.obj"
        inp.write_text("# no vertices, no faces\n")
        match = "empty.obj"
    elif case == "missing_input":
        inp = tmp_path / "missing.obj"
    elif case == "unsupported":
        inp = tmp_path / "notes.docx"
        inp.write_bytes(b"PK\x03\x04")
    elif case == "garbage_ply":
        inp = tmp_path / "garbage.ply"
        inp.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nend_header\n1 2\n")
    elif case == "heatmap_not_a_part":
        extra += ["--heatmap", "tail"]
    elif case.startswith("fixed_"):
        text_model = {"fixed_abc": "fixed:abc", "fixed_neg": "fixed:-4", "fixed_zero": "fixed:0"}[case]
    elif case == "min_score_nan":
        extra += ["--min-score", "nan"]
    elif case == "votes_zero":
        extra += ["--votes", "0"]
    elif case == "bad_suffix":
        out = tmp_path / "out.txt"
    elif case == "output_is_input":
        inp = tmp_path / "toy.ply"
        from pa3d_data import write_ply_points

        write_ply_points(inp, pts)
        out = inp
    elif case == "png_is_input":
        extra = ["--png", str(inp)]
    elif case == "legend_is_input":
        extra = ["--legend", str(inp)]
    elif case == "legend_is_output":
        extra = ["--legend", str(out)]
    elif case == "folder_is_a_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.ply"
    elif case == "output_is_a_dir":
        out = tmp_path / "adir.ply"
        out.mkdir()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    rc = main(["segment", str(inp), "--parts", parts, "--output", str(out), "--model", "patchalign3d_tiny",
               "--text-model", text_model, "--num-points", "256", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pa3d segment: error:" in err and match in err, err
    assert len(err.strip().splitlines()) == 1 or "pa3d: text encoder" in err, err  # one line, no traceback
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing overwritten, no temporary left


def test_write_ply_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), np.zeros((2, 3)), np.zeros(3))
    assert not list(tmp_path.iterdir())


def test_cli_build_text_bank(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("# parts\nleg\nSeat\nback_rest\nleg\n")
    out = tmp_path / "bank.safetensors"
    assert main(["build-text-bank", "--names", str(names), "--text-model", "fixed:16", "--out", str(out)]) == 0
    assert "3 names, 16-d" in capsys.readouterr().out
    bank = TextBank.load(out, encoder=FixedTextEncoder(dim=16))
    assert bank.names == ["leg", "seat", "back rest"]
    assert main(["build-text-bank", "--names", str(tmp_path / "none.txt"), "--text-model", "fixed:16",
                 "--out", str(tmp_path / "b2.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build-text-bank", "--dataset", "nonesuch", "--data", str(tmp_path), "--text-model", "fixed:16",
                 "--out", str(tmp_path / "b3.safetensors")]) == 2
    assert "unknown dataset 'nonesuch'" in capsys.readouterr().err


@pytest.mark.data
def test_cli_build_text_bank_from_a_dataset(shared_data, tmp_path, capsys):
    root = shared_data / "shapenetpart_cap"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    out = tmp_path / "bank.safetensors"
    rc = main(["build-text-bank", "--dataset", "shapenetpart", "--data", str(root), "--text-model", "fixed:16",
               "--dataset-option", 'class_choice=["Cap"]', "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    names = TextBank.load(out).names
    assert len(names) >= 2 and len(set(names)) == len(names)
    assert main(["build-text-bank", "--dataset", "shapenetpart", "--dataset-option", "oops", "--text-model",
                 "fixed:16", "--out", str(out)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
