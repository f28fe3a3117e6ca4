"""PatchEncoder / PatchAlign3D: registry-driven forward and backward, input forms, freezing."""

from __future__ import annotations

import pytest
import torch

from pa3d_models import (
    MODELS,
    STAGE2_TRAINABLE,
    PatchAlign3D,
    PatchEncoder,
    create_model,
    freeze_for_stage2,
    list_models,
)


def _params(name):
    return [pytest.param(n, marks=pytest.mark.slow) if n == "patchalign3d_base" else n for n in name]


@pytest.mark.parametrize("name", _params(list_models()))
def test_every_registered_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, backend="torch")
    G = MODELS[name]["num_groups"]
    points = torch.rand(2 if name != "patchalign3d_base" else 1, max(4 * G, 200), 3)
    out = model(points, return_teacher=True)
    B = points.shape[0]
    assert out["patch_feats"].shape == (B, G, model.text_dim)
    assert out["teacher_feats"].shape == (B, G, model.teacher_dim)
    assert out["centers"].shape == (B, G, 3)
    assert out["patch_idx"].shape == (B, G, MODELS[name]["group_size"])
    torch.testing.assert_close(out["patch_feats"].norm(dim=-1), torch.ones(B, G))
    torch.testing.assert_close(out["teacher_feats"].norm(dim=-1), torch.ones(B, G))
    assert out["logit_scale"].dim() == 0 and out["logit_bias"].dim() == 0
    loss = (out["patch_feats"].sum() + out["teacher_feats"].sum()) * out["logit_scale"] + out["logit_bias"]
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_paper_logit_defaults_and_official_mode():
    scale, bias = create_model("patchalign3d_tiny").logit_params()
    assert scale.item() == pytest.approx(10.0) and bias.item() == pytest.approx(-10.0)
    scale, bias = create_model("patchalign3d_tiny", logit_mode="official").logit_params()
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5) and bias is None
    with pytest.raises(ValueError, match="logit_mode"):
        create_model("patchalign3d_tiny", logit_mode="clip")


def test_base_config_is_the_paper():
    cfg = MODELS["patchalign3d_base"]
    assert (cfg["num_groups"], cfg["group_size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (
        128, 32, 384, 12, 6,
    )
    assert (cfg["teacher_dim"], cfg["text_dim"], cfg["tokenizer_dim"]) == (768, 1280, 256)


def test_tokenizer_widths_are_saved_and_a_config_without_them_means_the_official_ones(tmp_path):
    import json

    from pa3d_models import PatchAlign3D

    model = create_model("patchalign3d_tiny", tokenizer_hidden_dims=(8, 16, 24))
    assert model.encoder.encoder.hidden_dims == (8, 16, 24)
    assert model.config["encoder"]["tokenizer_hidden_dims"] == [8, 16, 24]
    back = PatchAlign3D.from_pretrained(model.save_pretrained(tmp_path / "narrow"))
    assert back.encoder.encoder.hidden_dims == (8, 16, 24)
    x = torch.rand(1, 128, 3)
    torch.testing.assert_close(back.eval()(x)["patch_feats"], model.eval()(x)["patch_feats"])
    # a folder saved before the key existed holds the official widths and still loads as them
    old = create_model("patchalign3d_tiny")
    folder = old.save_pretrained(tmp_path / "old")
    cfg_file = next(f for f in folder.iterdir() if f.suffix == ".json" and "tokenizer_hidden_dims" in f.read_text())
    data = json.loads(cfg_file.read_text())
    enc = data["config"]["encoder"] if "config" in data else data["encoder"]
    del enc["tokenizer_hidden_dims"]
    cfg_file.write_text(json.dumps(data))
    assert PatchAlign3D.from_pretrained(folder).encoder.encoder.hidden_dims == (128, 256, 512)
    with pytest.raises(ValueError, match="tokenizer_hidden_dims must be three ints >= 1"):
        create_model("patchalign3d_tiny", tokenizer_hidden_dims=(8, 16))


def test_any_number_of_points_and_ragged_equals_dense():
    torch.manual_seed(1)
    model = create_model("patchalign3d_tiny", backend="torch").eval()
    a, b = torch.rand(1, 300, 3), torch.rand(1, 123, 3)
    dense_a, dense_b = model(a), model(b)
    pos = torch.cat([a[0], b[0]])
    batch = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(123, dtype=torch.long)])
    ragged = model(pos, batch)
    torch.testing.assert_close(ragged["patch_feats"][0], dense_a["patch_feats"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ragged["patch_feats"][1], dense_b["patch_feats"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ragged["centers"][1], dense_b["centers"][0])
    # ragged patch_idx are rows of the stacked points
    torch.testing.assert_close(pos[ragged["patch_idx"][1, :, 0]], ragged["centers"][1])
    assert ragged["center_batch"].tolist() == [[0] * 32, [1] * 32]


def test_pyg_batch_input():
    pyg = pytest.importorskip("torch_geometric.data")
    torch.manual_seed(2)
    model = create_model("patchalign3d_tiny", backend="torch").eval()
    a, b = torch.rand(200, 3), torch.rand(150, 3)
    data = pyg.Batch.from_data_list([pyg.Data(pos=a), pyg.Data(pos=b)])
    out = model(data)
    torch.testing.assert_close(out["patch_feats"][1], model(b[None])["patch_feats"][0], atol=1e-5, rtol=1e-5)


def test_model_does_not_permute_axes():
    # a rotation of the input changes the output: the model takes points as given, no hidden Y/Z swap
    torch.manual_seed(3)
    model = create_model("patchalign3d_tiny", backend="torch").eval()
    x = torch.rand(1, 200, 3)
    swapped = x[..., [0, 2, 1]]
    assert not torch.allclose(model(x)["patch_feats"], model(swapped)["patch_feats"])


@pytest.mark.parametrize(
    "points, match",
    [
        (torch.rand(2, 3, 256), r"points must be \(B, N, 3\) float, got shape \(2, 3, 256\)"),
        (torch.ones(2, 256, 3, dtype=torch.long), "points must be"),
        (torch.full((1, 256, 3), float("nan")), "points must be finite"),
    ],
)
def test_bad_points_raise(points, match):
    model = create_model("patchalign3d_tiny", backend="torch")
    with pytest.raises(ValueError, match=match):
        model(points)


def test_too_few_points_raise():
    model = create_model("patchalign3d_tiny", backend="torch")
    with pytest.raises(ValueError):
        model(torch.rand(1, 10, 3))


def test_num_groups_must_be_fixed():
    with pytest.raises(ValueError, match="num_groups must be an int"):
        create_model("patchalign3d_tiny", num_groups=None)


def test_unknown_model_name_lists_registry():
    with pytest.raises(ValueError, match="patchalign3d_tiny"):
        create_model("patchalign3d_huge")


def test_encoder_or_kwargs_not_both():
    with pytest.raises(ValueError, match="either an encoder"):
        PatchAlign3D(PatchEncoder(num_groups=8, group_size=4, embed_dim=16, depth=1, num_heads=2), depth=3)


def _expected_trainable(model, policy):
    last = model.encoder.config["depth"] - 1
    prefixes = [p.replace("{last}", str(last)) for p in STAGE2_TRAINABLE[policy]]
    return sorted(n for n, _ in model.named_parameters() if any(n.startswith(p) for p in prefixes))


@pytest.mark.parametrize("policy", ["paper", "official"])
def test_freeze_for_stage2_trains_exactly_the_documented_set(policy):
    model = create_model("patchalign3d_tiny", backend="torch")  # depth 2: the last block is blocks.blocks.1
    trainable = freeze_for_stage2(model, policy)
    documented = [
        *(f"encoder.blocks.blocks.1.{s}" for s in (
            "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
            "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
        )),
        "encoder.norm.weight", "encoder.norm.bias", "text_head.weight", "text_head.bias",
        "logit.log_scale", "logit.bias",
    ]
    if policy == "official":
        documented += ["encoder.reduce_dim.weight", "encoder.reduce_dim.bias", "encoder.cls_token", "encoder.cls_pos"]
    assert trainable == sorted(documented) == _expected_trainable(model, policy)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == trainable
    # a backward pass reaches exactly those parameters
    out = model(torch.rand(2, 200, 3))
    (out["patch_feats"].sum() * out["logit_scale"] + out["logit_bias"]).backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert with_grad == trainable


def test_frozen_batchnorm_stays_in_eval_mode():
    model = create_model("patchalign3d_tiny", backend="torch")
    freeze_for_stage2(model)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(not m.training for m in bns)
    assert model.encoder.blocks.training  # the rest is in train mode
    before = [m.running_mean.clone() for m in bns]
    model(torch.rand(2, 200, 3) * 5)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    # the release's behaviour as an option: statistics drift
    freeze_for_stage2(model, freeze_bn_stats=False)
    model.train()
    assert all(m.training for m in bns)
    model(torch.rand(2, 200, 3) * 5)
    assert not all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))


def test_freeze_rejects_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        freeze_for_stage2(create_model("patchalign3d_tiny"), "everything")
