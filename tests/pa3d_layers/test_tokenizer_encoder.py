"""PointNetTokenizer, PatchEmbedding, TransformerEncoder and drop-path."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from pa3d_layers import (
    Attention,
    DropPath,
    PatchEmbedding,
    PointNetTokenizer,
    TransformerBlock,
    TransformerEncoder,
    drop_path,
    to_dense_batch,
)
from pa3d_layers.testing import assert_permutation_invariant
from pa3d_layers.tokenizer import _unfactorised_reference

seeds = st.integers(0, 2**31 - 1)


def randomise_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g)
            m.running_mean = torch.randn(m.num_features, generator=g)
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return module


# ---------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 16, 3), (5, 16, 3)])
def test_factorised_tokenizer_equals_unfactorised_formula(train, shape):
    torch.manual_seed(0)
    tok = randomise_bn(PointNetTokenizer(3, 64)).train(train)
    ref = copy.deepcopy(tok)
    x = torch.randn(*shape)
    out = tok(x)
    expected = _unfactorised_reference(ref, x)
    assert out.shape == shape[:-2] + (64,)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if train:  # the same batch statistics reached the running buffers
        torch.testing.assert_close(tok.second_conv[1].running_mean, ref.second_conv[1].running_mean)
        torch.testing.assert_close(tok.first_conv[1].running_var, ref.first_conv[1].running_var)


def test_factorised_tokenizer_gradients_match():
    torch.manual_seed(1)
    tok = randomise_bn(PointNetTokenizer(4, 32)).double()
    ref = copy.deepcopy(tok)
    x = torch.randn(3, 6, 8, 4, dtype=torch.float64)
    tok(x).square().sum().backward()
    _unfactorised_reference(ref, x).square().sum().backward()
    for (name, a), b in zip(tok.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


@given(seed=seeds, k=st.integers(2, 12))
def test_tokenizer_invariant_to_point_order(seed, k):
    torch.manual_seed(seed)
    tok = randomise_bn(PointNetTokenizer(3, 16), seed).eval()
    x = torch.randn(2, 3, k, 3)
    g = torch.Generator().manual_seed(seed)
    assert_permutation_invariant(tok, x, dim=2, generator=g, atol=1e-5, rtol=1e-5)


def test_tokenizer_official_layout():
    tok = PointNetTokenizer()
    shapes = {k: tuple(v.shape) for k, v in tok.state_dict().items()}
    assert shapes["first_conv.0.weight"] == (128, 3, 1)
    assert shapes["first_conv.3.weight"] == (256, 128, 1)
    assert shapes["second_conv.0.weight"] == (512, 512, 1)
    assert shapes["second_conv.3.weight"] == (256, 512, 1)
    assert shapes["second_conv.1.running_var"] == (512,)
    assert len(shapes) == 18
    assert repr(tok).startswith("PointNetTokenizer(\n  in_channels=3, embed_dim=256")
    narrow = {k: tuple(v.shape) for k, v in PointNetTokenizer(3, 128, hidden_dims=(64, 128, 256)).state_dict().items()}
    assert narrow.keys() == shapes.keys()  # the same keys at other widths
    assert (narrow["first_conv.0.weight"], narrow["first_conv.3.weight"], narrow["second_conv.0.weight"],
            narrow["second_conv.3.weight"]) == ((64, 3, 1), (128, 64, 1), (256, 256, 1), (128, 256, 1))


@pytest.mark.parametrize("hidden", [(128, 256), (0, 1, 1), (1.5, 2, 2), "abc", (True, 2, 2)])
def test_tokenizer_bad_hidden_dims(hidden):
    with pytest.raises(ValueError, match=r"hidden_dims must be three ints >= 1 \(official: \(128, 256, 512\)\)"):
        PointNetTokenizer(3, 16, hidden_dims=hidden)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(2, 8), "neighborhoods must be (B, G, K, 3) or (Q, K, 3) float, got shape (2, 8)"),
        (torch.rand(2, 4, 8, 6), "neighborhoods must be (B, G, K, 3) or (Q, K, 3) float, got shape (2, 4, 8, 6)"),
        (torch.ones(2, 4, 8, 3, dtype=torch.long), "got shape (2, 4, 8, 3) dtype torch.int64"),
    ],
)
def test_tokenizer_bad_input(x, message):
    tok = PointNetTokenizer()
    with pytest.raises(ValueError, match=re.escape(message)):
        tok(x)


# ---------------------------------------------------------------------------------------------- embedding


def test_patch_embedding_layout_and_formula():
    pe = PatchEmbedding(3, 48, 16)
    assert {k: tuple(v.shape) for k, v in pe.state_dict().items()} == {
        "0.weight": (16, 3), "0.bias": (16,), "2.weight": (48, 16), "2.bias": (48,)
    }
    c = torch.randn(2, 5, 3)
    expected = F.linear(F.gelu(F.linear(c, pe[0].weight, pe[0].bias)), pe[2].weight, pe[2].bias)
    torch.testing.assert_close(pe(c), expected)
    assert pe(c[0]).shape == (5, 48)
    with pytest.raises(ValueError, match=re.escape("centers must be (B, G, 3) or (Q, 3), got (2, 5, 4)")):
        pe(torch.rand(2, 5, 4))


# ---------------------------------------------------------------------------------------------- encoder


def official_param_count():
    tok = PointNetTokenizer(3, 256)
    reduce_dim = nn.Linear(256, 384)
    pos = PatchEmbedding(3, 384)
    enc = TransformerEncoder(cls_token=True)
    modules = (tok, reduce_dim, pos, enc)
    keys = sum(len(m.state_dict()) for m in modules)
    return keys, sum(p.numel() for m in modules for p in m.parameters())


def test_encoder_official_layout():
    enc = TransformerEncoder()
    sd = enc.state_dict()
    assert "blocks.0.attn.qkv.weight" in sd and "blocks.0.attn.qkv.bias" not in sd
    assert tuple(sd["blocks.11.attn.qkv.weight"].shape) == (1152, 384)
    assert tuple(sd["blocks.3.mlp.fc1.weight"].shape) == (1536, 384)
    assert "blocks.0.attn.proj.bias" in sd and "norm.weight" in sd
    assert sum(p.numel() for p in enc.blocks[0].parameters()) == 1_773_312
    # the facts sheet: 160 keys, 21,858,816 parameters for the whole official encoder
    assert official_param_count() == (160, 21_858_816)
    assert isinstance(enc.blocks[0].drop_path, nn.Identity)
    rates = [b.drop_path.drop_prob for b in enc.blocks[1:]]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 12)[1:])
    assert enc.blocks[0].norm1.eps == 1e-5 and isinstance(enc.blocks[0].mlp.act, nn.GELU)
    assert enc.blocks[0].mlp.act.approximate == "none"


def test_encoder_init():
    torch.manual_seed(0)
    enc = TransformerEncoder(cls_token=True)
    w = enc.blocks[0].mlp.fc1.weight
    w = w.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and float(w.abs().max()) <= 2.0
    assert float(enc.blocks[0].mlp.fc1.bias.detach().abs().max()) == 0.0
    assert torch.equal(enc.blocks[0].norm1.weight, torch.ones(384))
    assert torch.equal(enc.cls_token, torch.zeros(1, 1, 384))
    assert 0.8 < float(enc.cls_pos.detach().std()) < 1.2


def reference_forward(enc: TransformerEncoder, x, pos):
    """The official formula written out by hand (eval mode): x <- block(x + pos), pre-norm, final norm."""
    if enc.cls_token is not None:
        b = x.shape[0]
        x = torch.cat([enc.cls_token.expand(b, -1, -1), x], 1)
        pos = torch.cat([enc.cls_pos.expand(b, -1, -1), pos], 1)
    for blk in enc.blocks:
        x = x + pos
        h = blk.norm1(x)
        b, n, d = h.shape
        heads = blk.attn.num_heads
        qkv = blk.attn.qkv(h).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (d // heads) ** -0.5
        h = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + blk.attn.proj(h)
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))
    x = enc.norm(x)
    return x[:, 1:] if enc.cls_token is not None else x


@pytest.mark.parametrize("cls_token", [False, True])
def test_encoder_matches_hand_written_formula(cls_token):
    torch.manual_seed(0)
    enc = TransformerEncoder(32, depth=3, num_heads=4, cls_token=cls_token).eval()
    x, pos = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(enc(x, pos), reference_forward(enc, x, pos), atol=1e-5, rtol=1e-5)


def test_encoder_compile_matches_eager():
    torch.manual_seed(0)
    enc = TransformerEncoder(32, depth=2, num_heads=4, cls_token=True).eval()
    x, pos = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    compiled = torch.compile(enc, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, pos), enc(x, pos))


def test_eval_mode_is_deterministic_and_train_drops():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, depth=4, num_heads=2, drop_path_rate=0.9, drop_rate=0.5, attn_drop_rate=0.5)
    x, pos = torch.randn(4, 5, 16), torch.randn(4, 5, 16)
    enc.eval()
    assert torch.equal(enc(x, pos), enc(x, pos))
    enc.train()
    assert not torch.equal(enc(x, pos), enc(x, pos))


def test_forward_intermediates():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, depth=4, num_heads=2, cls_token=True).eval()
    x, pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    final, inter = enc.forward_intermediates(x, pos, (1, -1))
    torch.testing.assert_close(final, enc(x, pos))
    assert len(inter) == 2 and inter[0].shape == (2, 5, 16)
    torch.testing.assert_close(enc.norm(inter[1]), final)
    _, normed = enc.forward_intermediates(x, pos, 1, norm=True)
    torch.testing.assert_close(normed[0], final)
    none, early = enc.forward_intermediates(x, pos, [1], stop_early=True)
    assert none is None
    torch.testing.assert_close(early[0], inter[0])
    _, every = enc.forward_intermediates(x, pos)
    assert len(every) == 4
    with pytest.raises(ValueError, match=re.escape("layers must be block indices in [-4, 4), got 4")):
        enc.forward_intermediates(x, pos, (4,))


def test_mask_hides_padding_tokens():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, depth=2, num_heads=2, cls_token=True).eval()
    x, pos = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    padded_x = torch.cat([x, torch.randn(1, 3, 16)], 1)
    padded_pos = torch.cat([pos, torch.randn(1, 3, 16)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(enc(padded_x, padded_pos, mask=mask)[:, :5], enc(x, pos), atol=1e-5, rtol=1e-5)


def test_encoder_token_permutation_equivariant():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, depth=2, num_heads=2).eval()
    x, pos = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    perm = torch.randperm(6)
    torch.testing.assert_close(enc(x[:, perm], pos[:, perm]), enc(x, pos)[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.rand(2, 5, 8)), "x must be (B, G, 16) float, got shape (2, 5, 8) dtype torch.float32"),
        (dict(x=torch.rand(5, 16)), "x must be (B, G, 16) float, got shape (5, 16)"),
        (dict(pos=torch.rand(2, 4, 16)), "pos must be None or have the shape of x (2, 5, 16), got (2, 4, 16)"),
        (dict(mask=torch.ones(2, 5)), "mask must be None or (B, G) = (2, 5) bool"),
    ],
)
def test_encoder_bad_input(kwargs, message):
    enc = TransformerEncoder(16, depth=1, num_heads=2)
    args = {"x": torch.rand(2, 5, 16), "pos": torch.rand(2, 5, 16), **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        enc(args.pop("x"), args.pop("pos"), **args)


def test_encoder_bad_config():
    with pytest.raises(ValueError, match=re.escape("num_heads must divide embed_dim=384, got 5")):
        TransformerEncoder(384, num_heads=5)
    with pytest.raises(ValueError, match=re.escape("depth must be an int >= 1, got 0")):
        TransformerEncoder(depth=0)


def test_block_uses_sdpa_formula():
    torch.manual_seed(0)
    blk = TransformerBlock(8, 2).eval()
    x = torch.randn(2, 4, 8)
    enc = TransformerEncoder(8, depth=1, num_heads=2, drop_path_rate=0.0, final_norm=False).eval()
    enc.blocks[0].load_state_dict(blk.state_dict())
    torch.testing.assert_close(enc(x), blk(x))


# ---------------------------------------------------------------------------------------------- drop path


def test_drop_path_function_and_module():
    x = torch.ones(1000, 3)
    torch.manual_seed(0)
    out = drop_path(x, 0.25, training=True)
    rows = out[:, 0]
    assert set(rows.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert bool((out == out[:, :1]).all()), "drop-path must drop whole samples"
    assert abs(float(out.mean()) - 1.0) < 0.1
    torch.manual_seed(0)
    torch.testing.assert_close(DropPath(0.25).train()(x), out)
    assert torch.equal(DropPath(0.25).eval()(x), x)
    assert repr(DropPath(0.25)) == "DropPath(drop_prob=0.25)"
    with pytest.raises(ValueError, match=re.escape("drop_prob must be in [0, 1], got 1.5")):
        DropPath(1.5)


# ---------------------------------------------------------------------------------------------- performance forms


@given(seed=seeds, k=st.integers(1, 10), m=st.integers(0, 5), c=st.integers(1, 5), train=st.booleans(),
       hidden=st.one_of(st.just((128, 256, 512)), st.tuples(*[st.integers(1, 40)] * 3)))
def test_rearranged_tokenizer_equals_official_formula(seed, k, m, c, train, hidden):
    # Eval mode folds both BatchNorms; both modes use (W_l W_1) and biases after the max. Same function, at
    # the official widths and at any narrower (or wider) hidden_dims.
    torch.manual_seed(seed)
    tok = randomise_bn(PointNetTokenizer(c, 24, hidden_dims=hidden), seed).double().train(train)
    ref = copy.deepcopy(tok)
    x = torch.randn(m, k, c, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if train and m * k < 2:
        return  # BatchNorm needs two values per channel in training
    out = tok(x)
    assert out.shape == (m, 24) and out.dtype == torch.float64
    torch.testing.assert_close(out, _unfactorised_reference(ref, x), atol=1e-10, rtol=1e-10)


def test_tokenizer_bf16_autocast_stays_bf16_and_close():
    torch.manual_seed(0)
    tok = randomise_bn(PointNetTokenizer(3, 64)).eval()
    x = torch.randn(2, 8, 16, 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tok(x)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        ref = _unfactorised_reference(tok, x)
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-2


def test_tokenizer_empty_batch():
    out = PointNetTokenizer(3, 16).eval()(torch.zeros(0, 4, 8, 3))
    assert out.shape == (0, 4, 16)


@given(seed=seeds, b=st.integers(1, 3), n=st.integers(1, 12), masked=st.booleans())
def test_low_precision_attention_equals_sdpa(seed, b, n, masked):
    from pa3d_layers.encoder import _attention_low_precision

    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, 2, n, 8, generator=g).bfloat16() for _ in range(3))
    mask = None
    if masked:
        mask = torch.rand(b, 1, 1, n, generator=g) < 0.7
        mask[..., 0] = True
    out = _attention_low_precision(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_attention_block_uses_low_precision_path_under_autocast():
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    torch.testing.assert_close(out.float(), attn(x), atol=3e-2, rtol=3e-2)


# ---------------------------------------------------------------------------------------------- ragged


@given(seed=seeds, sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), fill=st.floats(-2, 2))
def test_to_dense_batch_matches_a_plain_loop(seed, sizes, fill):
    x = torch.randn(sum(sizes), 3, generator=torch.Generator().manual_seed(seed))
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    dense, mask = to_dense_batch(x, batch, fill_value=fill)
    assert dense.shape == (len(sizes), max(sizes), 3)
    start = 0
    for b, n in enumerate(sizes):
        assert torch.equal(dense[b, :n], x[start : start + n])
        assert bool((dense[b, n:] == fill).all()) and mask[b].tolist() == [True] * n + [False] * (max(sizes) - n)
        start += n
    assert torch.equal(dense[mask], x)


def test_to_dense_batch_bad_input():
    with pytest.raises(ValueError, match=re.escape("batch must have one entry per point (3), got 2")):
        to_dense_batch(torch.rand(3, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=re.escape("max_num_nodes must be None or an int >= the largest cloud (2)")):
        to_dense_batch(torch.rand(3, 2), torch.tensor([0, 0, 1]), max_num_nodes=1)


@given(seed=seeds, sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3), cls_token=st.booleans())
def test_ragged_encoder_equals_each_cloud_alone(seed, sizes, cls_token):
    torch.manual_seed(seed)
    enc = TransformerEncoder(16, depth=2, num_heads=2, cls_token=cls_token).eval()
    g = torch.Generator().manual_seed(seed)
    x, pos = torch.randn(sum(sizes), 16, generator=g), torch.randn(sum(sizes), 16, generator=g)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    out = enc(x, pos, batch=batch)
    assert out.shape == x.shape
    start = 0
    for n in sizes:
        alone = enc(x[None, start : start + n], pos[None, start : start + n])[0]
        torch.testing.assert_close(out[start : start + n], alone, atol=1e-5, rtol=1e-5)
        start += n


def test_ragged_encoder_bad_input():
    enc = TransformerEncoder(16, depth=1, num_heads=2)
    batch = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="mask must be None when batch is given"):
        enc(torch.rand(3, 16), batch=batch, mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("x must be (Q, 16) float when batch is given, got shape")):
        enc(torch.rand(1, 3, 16), batch=batch)
    with pytest.raises(ValueError, match=re.escape("pos must be None or have the shape of x (3, 16), got (3, 8)")):
        enc(torch.rand(3, 16), torch.rand(3, 8), batch=batch)


@given(seed=seeds, m=st.integers(1, 9), chunk=st.integers(1, 4))
def test_eval_tokenizer_chunks_equal_one_pass(seed, m, chunk):
    import pa3d_layers.tokenizer as tokenizer

    torch.manual_seed(seed)
    tok = randomise_bn(PointNetTokenizer(3, 16), seed).eval()
    x = torch.randn(m, 5, 3, generator=torch.Generator().manual_seed(seed))
    whole = tok(x)
    old = tokenizer._CHUNK
    tokenizer._CHUNK = chunk
    try:
        chunked = tok(x)
    finally:
        tokenizer._CHUNK = old
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked, _unfactorised_reference(tok, x), atol=1e-5, rtol=1e-5)
