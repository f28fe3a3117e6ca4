"""Checkpoints: pa3d round trip, config mismatch, corrupt files, and the official release's layout.

The official checkpoint could not be downloaded here. Instead the test builds random weights in the
documented key layout (facts section 1) and compares the model with a plain-torch re-statement of the
official forward written from the facts file (channels-first Conv1d tokenizer with the global vector
first, manual attention, position re-added before every block, final norm, cls dropped).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pa3d_models import (
    PatchAlign3D,
    PatchEncoder,
    create_model,
    load_checkpoint,
    load_official_checkpoint,
    load_pretrained,
)

BASE = dict(embed_dim=384, depth=12, num_heads=6, tok=256, mlp=1536, pos_hidden=128)
SMALL = dict(embed_dim=32, depth=2, num_heads=4, tok=24, mlp=64, pos_hidden=16)


def official_encoder_shapes(embed_dim, depth, tok, mlp, pos_hidden, **_):
    """The documented official key list (facts section 1), in registration order."""
    D = embed_dim
    shapes = {"cls_token": (1, 1, D), "cls_pos": (1, 1, D)}
    for conv, (cin, hid, cout) in (("first_conv", (3, 128, 256)), ("second_conv", (512, 512, tok))):
        shapes[f"encoder.{conv}.0.weight"] = (hid, cin, 1)
        shapes[f"encoder.{conv}.0.bias"] = (hid,)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"encoder.{conv}.1.{s}"] = (hid,)
        shapes[f"encoder.{conv}.1.num_batches_tracked"] = ()
        shapes[f"encoder.{conv}.3.weight"] = (cout, hid, 1)
        shapes[f"encoder.{conv}.3.bias"] = (cout,)
    shapes.update({"reduce_dim.weight": (D, tok), "reduce_dim.bias": (D,)})
    shapes.update(
        {
            "pos_embed.0.weight": (pos_hidden, 3),
            "pos_embed.0.bias": (pos_hidden,),
            "pos_embed.2.weight": (D, pos_hidden),
            "pos_embed.2.bias": (D,),
        }
    )
    for i in range(depth):
        p = f"blocks.blocks.{i}."
        shapes.update(
            {
                p + "norm1.weight": (D,),
                p + "norm1.bias": (D,),
                p + "attn.qkv.weight": (3 * D, D),
                p + "attn.proj.weight": (D, D),
                p + "attn.proj.bias": (D,),
                p + "norm2.weight": (D,),
                p + "norm2.bias": (D,),
                p + "mlp.fc1.weight": (mlp, D),
                p + "mlp.fc1.bias": (mlp,),
                p + "mlp.fc2.weight": (D, mlp),
                p + "mlp.fc2.bias": (D,),
            }
        )
    shapes.update({"norm.weight": (D,), "norm.bias": (D,)})
    return shapes


def random_official_checkpoint(cfg, text_dim, *, seed=0, temp=True):
    g = torch.Generator().manual_seed(seed)
    model = {}
    for k, shape in official_encoder_shapes(**cfg).items():
        if k.endswith("num_batches_tracked"):
            model[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            model[k] = torch.rand(shape, generator=g) + 0.5
        else:
            fan = shape[1] if len(shape) >= 2 else 1
            model[k] = torch.randn(shape, generator=g) / math.sqrt(fan)
    ckpt = {
        "epoch": 99,
        "model": model,
        "proj": {
            "proj.weight": torch.randn(text_dim, cfg["embed_dim"], generator=g) * 0.05,
            "proj.bias": torch.randn(text_dim, generator=g) * 0.05,
        },
        "args": {"npoint": 2048, "num_group": 128},
    }
    if temp:
        ckpt["temp"] = {"log_scale": torch.tensor(math.log(1 / 0.07) + 0.3)}
    return ckpt


# ---------------------------------------------------------------- official forward, restated from the facts


def official_fps(xyz, n):  # xyz (N, 3); start at point 0, farthest from the picks so far
    picks = [0]
    dist = ((xyz - xyz[0]) ** 2).sum(-1)
    for _ in range(n - 1):
        i = int(dist.argmax())
        picks.append(i)
        dist = torch.minimum(dist, ((xyz - xyz[i]) ** 2).sum(-1))
    return torch.tensor(picks)


def official_patch_feats(ckpt, pts_bcn, G, M, heads):
    """normalize(proj(forward_patches(pts))) of the release; pts channels-first (B, 3, N) as it takes them."""
    sd, proj = ckpt["model"], ckpt["proj"]
    xyz = pts_bcn.transpose(1, 2)  # (B, N, 3)
    B = xyz.shape[0]
    centers, neigh = [], []
    for b in range(B):
        c_idx = official_fps(xyz[b], G)
        c = xyz[b, c_idx]
        knn = torch.cdist(c, xyz[b]).topk(M, largest=False).indices  # (G, M)
        centers.append(c)
        neigh.append(xyz[b][knn] - c[:, None])
    center, neighborhood = torch.stack(centers), torch.stack(neigh)  # (B,G,3), (B,G,M,3)

    def conv_bn(x, pre):  # Conv1d -> BN (eval) -> ReLU -> Conv1d, channels first
        x = F.conv1d(x, sd[pre + ".0.weight"], sd[pre + ".0.bias"])
        x = F.batch_norm(
            x, sd[pre + ".1.running_mean"], sd[pre + ".1.running_var"], sd[pre + ".1.weight"], sd[pre + ".1.bias"],
            training=False, eps=1e-5,
        )
        return F.conv1d(F.relu(x), sd[pre + ".3.weight"], sd[pre + ".3.bias"])

    x = neighborhood.reshape(B * G, M, 3).transpose(1, 2)  # (BG, 3, M)
    f = conv_bn(x, "encoder.first_conv")  # (BG, 256, M)
    glob = f.max(dim=2, keepdim=True).values
    f = torch.cat([glob.expand(-1, -1, M), f], dim=1)  # global first
    f = conv_bn(f, "encoder.second_conv").max(dim=2).values.reshape(B, G, -1)
    tokens = F.linear(f, sd["reduce_dim.weight"], sd["reduce_dim.bias"])
    pos = F.linear(
        F.gelu(F.linear(center, sd["pos_embed.0.weight"], sd["pos_embed.0.bias"])),
        sd["pos_embed.2.weight"],
        sd["pos_embed.2.bias"],
    )
    D = tokens.shape[-1]
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), tokens], 1)
    pos = torch.cat([sd["cls_pos"].expand(B, -1, -1), pos], 1)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("blocks.blocks."))
    hd = D // heads
    for i in range(depth):
        p = f"blocks.blocks.{i}."
        x = x + pos
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-5)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"]).reshape(B, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * hd**-0.5).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(B, -1, D)
        x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-5)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + h
    x = F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], eps=1e-5)[:, 1:]
    return F.normalize(F.linear(x, proj["proj.weight"], proj["proj.bias"]), dim=-1), center


# ------------------------------------------------------------------------------------------------ tests


def test_official_layout_loads_strictly_into_base_encoder():
    shapes = official_encoder_shapes(**BASE)
    assert len(shapes) == 160
    enc = PatchEncoder(backend="torch")
    sd = enc.state_dict()
    assert list(sd) == list(shapes)  # same keys, same (registration) order
    assert {k: tuple(v.shape) for k, v in sd.items()} == shapes
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == 21_858_816
    ckpt = random_official_checkpoint(BASE, 1280)
    result = enc.load_state_dict(ckpt["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize(
    "cfg, N, G, M",
    [(SMALL, 96, 16, 8), pytest.param(BASE, 300, 128, 32, marks=pytest.mark.slow)],
    ids=["small", "base"],
)
def test_official_checkpoint_reproduces_official_forward(cfg, N, G, M):
    torch.manual_seed(0)
    ckpt = random_official_checkpoint(cfg, text_dim=48)
    model = load_official_checkpoint(ckpt, num_heads=cfg["num_heads"], num_groups=G, group_size=M, backend="torch")
    assert model.text_dim == 48 and model.logit_mode == "official"
    scale, bias = model.logit_params()
    assert bias is None
    torch.testing.assert_close(scale, ckpt["temp"]["log_scale"].exp())
    points = torch.randn(2, N, 3)
    out = model(points)
    expected, centers = official_patch_feats(ckpt, points.transpose(1, 2), G, M, cfg["num_heads"])
    torch.testing.assert_close(out["centers"], centers)
    torch.testing.assert_close(out["patch_feats"], expected, atol=1e-4, rtol=1e-4)


def test_official_checkpoint_from_file_and_heads(tmp_path):
    ckpt = random_official_checkpoint(SMALL, text_dim=768, temp=False)  # Stage-1: proj is the DINO head
    path = tmp_path / "stage1.pt"
    torch.save(ckpt, path)
    model = load_official_checkpoint(path, num_heads=4, num_groups=16, group_size=8, backend="torch")
    torch.testing.assert_close(model.teacher_head.weight, ckpt["proj"]["proj.weight"])
    assert model.logit_mode == "paper"
    via = load_checkpoint(path, num_heads=4, num_groups=16, group_size=8, backend="torch")
    torch.testing.assert_close(via.teacher_head.bias, ckpt["proj"]["proj.bias"])
    forced = load_official_checkpoint(ckpt, head="text", num_heads=4, num_groups=16, group_size=8)
    torch.testing.assert_close(forced.text_head.weight, ckpt["proj"]["proj.weight"])


def test_official_checkpoint_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"corrupt.pt \(8 bytes\) cannot be read: truncated, corrupt or not written"):
        load_official_checkpoint(bad)
    with pytest.raises(ValueError, match="no 'model' entry"):
        load_official_checkpoint({"state_dict": {}})
    ckpt = random_official_checkpoint(SMALL, 32)
    del ckpt["model"]["norm.weight"]
    with pytest.raises(ValueError, match="missing"):
        load_official_checkpoint(ckpt, num_heads=4)


def _tiny(**kw):
    return create_model("patchalign3d_tiny", backend="torch", **kw)


def test_save_load_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = _tiny().eval()
    with torch.no_grad():
        model.logit.bias.fill_(-3.0)
        model.encoder.encoder.first_conv[1].running_mean.uniform_()  # buffers travel too
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = PatchAlign3D.from_pretrained(tmp_path / "ckpt")
    points = torch.rand(2, 200, 3)
    a, b = model(points, return_teacher=True), loaded(points, return_teacher=True)
    for key in ("patch_feats", "teacher_feats", "centers", "logit_scale", "logit_bias"):
        assert torch.equal(a[key], b[key]), key
    assert loaded.config == model.config
    # a free (non-shape) key may be overridden
    assert PatchAlign3D.from_pretrained(tmp_path / "ckpt", drop_path_rate=0.2).encoder.config["drop_path_rate"] == 0.2


def test_load_into_another_config_names_the_mismatch(tmp_path):
    _tiny().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"embed_dim: checkpoint 64 vs model 32"):
        load_pretrained(tmp_path / "ckpt", model=_tiny(embed_dim=32))
    with pytest.raises(ValueError, match=r"text_dim: checkpoint 64 vs model 384"):
        PatchAlign3D.from_pretrained(tmp_path / "ckpt", text_dim=384)


def test_corrupt_or_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        PatchAlign3D.from_pretrained(tmp_path / "nothing")
    _tiny().save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match="corrupt checkpoint weights"):
        PatchAlign3D.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint config"):
        PatchAlign3D.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a pa3d PatchAlign3D config"):
        PatchAlign3D.from_pretrained(tmp_path / "ckpt")


def test_hf_spec_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        load_checkpoint("hf://patchalign3d/patchalign3d-not-cached-here")
