"""Stage-2 multi-positive sigmoid loss and LogitScaleBias."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_losses import (
    LogitScaleBias,
    MultiPositiveSigmoidLoss,
    fractional_patch_labels,
    majority_patch_labels,
    multi_positive_sigmoid_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch-(scatter|cluster) is not installed")


def _case(seed, B=3, G=5, L=4, D=6, counts=(4, 2, 3), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = F.normalize(torch.randn(B, G, D, generator=g, dtype=dtype), dim=-1)
    t = F.normalize(torch.randn(B, L, D, generator=g, dtype=dtype), dim=-1)
    y = torch.rand(B, G, L, generator=g, dtype=dtype)
    mask = torch.arange(L)[None] < torch.tensor(counts)[:, None]
    return p, t, y, mask


def _loop(p, t, y, mask, scale, bias, pos_weight):
    """A plain per-shape loop in the official release's style (per-sample mean over G x L_b, then mean)."""
    losses = []
    for b in range(p.shape[0]):
        tb, yb = t[b, mask[b]], y[b][:, mask[b]]
        logits = p[b] @ tb.T * scale + (0 if bias is None else bias)
        w = None
        if pos_weight == "num_labels_minus_one":
            w = torch.full((tb.shape[0],), float(max(1, tb.shape[0] - 1)), dtype=p.dtype)
        elif pos_weight is not None:
            w = torch.full((tb.shape[0],), float(pos_weight), dtype=p.dtype)
        losses.append(F.binary_cross_entropy_with_logits(logits, yb, pos_weight=w))
    return torch.stack(losses).mean()


def test_equals_torch_bce_for_hard_targets_without_padding():
    p, t, _, _ = _case(0)
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(3, 5, 4, generator=g) < 0.3).double()
    loss = multi_positive_sigmoid_loss(p, t, y, logit_scale=7.0, logit_bias=-2.0)
    logits = torch.einsum("bgd,bld->bgl", p, t) * 7.0 - 2.0
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, y))
    none = multi_positive_sigmoid_loss(p, t, y, logit_scale=7.0, logit_bias=-2.0, reduction="none")
    torch.testing.assert_close(none, F.binary_cross_entropy_with_logits(logits, y, reduction="none"))


@given(
    st.integers(0, 2**16),
    st.sampled_from([None, 2.5, "num_labels_minus_one"]),
    st.sampled_from([None, -3.0]),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
)
def test_vectorised_equals_per_shape_loop(seed, pos_weight, bias, counts):
    p, t, y, mask = _case(seed, B=len(counts), counts=tuple(counts))
    loss = multi_positive_sigmoid_loss(
        p,
        t,
        y,
        logit_scale=torch.tensor(8.0, dtype=torch.float64),
        logit_bias=bias,
        text_mask=mask,
        pos_weight=pos_weight,
    )
    torch.testing.assert_close(loss, _loop(p, t, y, mask, 8.0, bias, pos_weight))
    total = multi_positive_sigmoid_loss(
        p, t, y, logit_scale=8.0, logit_bias=bias, text_mask=mask, pos_weight=pos_weight, reduction="sum"
    )
    per = multi_positive_sigmoid_loss(
        p, t, y, logit_scale=8.0, logit_bias=bias, text_mask=mask, pos_weight=pos_weight, reduction="none"
    )
    torch.testing.assert_close(total, per.sum())
    assert (per[~mask[:, None, :].expand_as(per)] == 0).all()


def test_pos_weight_official_uses_valid_text_count():
    p, t, y, mask = _case(4, counts=(4, 1, 3))
    w = multi_positive_sigmoid_loss(
        p, t, y, logit_scale=5.0, text_mask=mask, pos_weight="num_labels_minus_one", reduction="none"
    )
    plain = multi_positive_sigmoid_loss(p, t, y, logit_scale=5.0, text_mask=mask, reduction="none")
    logits = torch.einsum("bgd,bld->bgl", p, t) * 5.0
    extra = -y * F.logsigmoid(logits)  # the positive term that pos_weight scales
    for b, factor in enumerate([3.0, 1.0, 2.0]):
        valid = mask[b]
        torch.testing.assert_close(w[b][:, valid], plain[b][:, valid] + (factor - 1) * extra[b][:, valid])


@given(st.integers(0, 2**16))
def test_padded_texts_get_zero_gradient_and_nan_padding_cannot_leak(seed):
    p, t, y, mask = _case(seed)
    t = torch.where(mask[..., None], t, torch.full_like(t, float("nan"))).requires_grad_()
    y = torch.where(mask[:, None, :], y, torch.full_like(y, float("inf")))
    p = p.clone().requires_grad_()
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    loss = multi_positive_sigmoid_loss(p, t, y, logit_scale=scale, logit_bias=bias, text_mask=mask)
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (p.grad, scale.grad, bias.grad, t.grad[mask]):
        assert torch.isfinite(grad).all()
    assert (t.grad[~mask] == 0).all()
    # same value as with clean padding, and as dropping the padded texts by hand
    _, t_clean, y_clean, _ = _case(seed)
    clean = multi_positive_sigmoid_loss(p, t_clean, y_clean, logit_scale=10.0, logit_bias=-10.0, text_mask=mask)
    torch.testing.assert_close(loss, clean)


@given(st.integers(0, 2**16))
def test_permuting_patches_or_texts_leaves_loss_unchanged(seed):
    p, t, y, mask = _case(seed)
    g = torch.Generator().manual_seed(seed)
    kw = {"logit_scale": 9.0, "logit_bias": -4.0, "pos_weight": "num_labels_minus_one"}
    ref = multi_positive_sigmoid_loss(p, t, y, text_mask=mask, **kw)
    gp = torch.randperm(p.shape[1], generator=g)
    torch.testing.assert_close(multi_positive_sigmoid_loss(p[:, gp], t, y[:, gp], text_mask=mask, **kw), ref)
    lp = torch.randperm(t.shape[1], generator=g)
    torch.testing.assert_close(multi_positive_sigmoid_loss(p, t[:, lp], y[:, :, lp], text_mask=mask[:, lp], **kw), ref)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_extreme_logits_are_finite(scale):
    p, t, y, mask = _case(5, dtype=torch.float32)
    p = p.clone().requires_grad_()
    t = t.clone().requires_grad_()
    y = (y > 0.5).float()
    t_same = t.detach().clone()
    t_same[:, 0] = p.detach()[:, 0]  # some cosines exactly 1 -> |logit| = scale
    for texts in (t, t_same.requires_grad_()):
        loss = multi_positive_sigmoid_loss(
            p, texts, y, logit_scale=scale, logit_bias=-10.0, text_mask=mask, pos_weight="num_labels_minus_one"
        )
        grads = torch.autograd.grad(loss, (p, texts))
        assert torch.isfinite(loss) and float(loss.detach()) >= 0
        assert all(torch.isfinite(g).all() for g in grads)


def test_gradcheck():
    p, t, y, mask = _case(6, B=2, G=3, L=3, D=4, counts=(3, 2))
    p.requires_grad_()
    t.requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def f(p, t, s, b):
        return multi_positive_sigmoid_loss(
            p, t, y, logit_scale=s, logit_bias=b, text_mask=mask, pos_weight="num_labels_minus_one"
        )

    assert torch.autograd.gradcheck(f, (p, t, scale, bias))


def test_module_equals_function(pair):
    outputs, batch, leaves = pair
    L = batch["text_feats"].shape[1]
    targets = fractional_patch_labels(outputs["patch_idx"], point_labels=batch["labels"], num_labels=L)
    expected = multi_positive_sigmoid_loss(
        outputs["patch_feats"],
        batch["text_feats"],
        targets,
        logit_scale=outputs["logit_scale"],
        logit_bias=outputs["logit_bias"],
        text_mask=batch["text_mask"],
    )
    module = MultiPositiveSigmoidLoss()
    torch.testing.assert_close(module(outputs, batch), expected)
    result = module(outputs, batch, return_dict=True)
    assert set(result) == {"align_loss", "patch_acc", "logit_scale"}
    torch.testing.assert_close(result["align_loss"], expected)
    # patch accuracy: argmax over each shape's valid texts vs the majority point label
    logits = torch.einsum("bgd,bld->bgl", outputs["patch_feats"], batch["text_feats"].nan_to_num())
    logits = logits.masked_fill(~batch["text_mask"][:, None], float("-inf"))
    majority = majority_patch_labels(outputs["patch_idx"], point_labels=batch["labels"], num_labels=L)
    seen = majority >= 0
    acc = (logits.argmax(-1) == majority)[seen].float().mean()
    torch.testing.assert_close(result["patch_acc"], acc)
    assert not result["patch_acc"].requires_grad
    result["align_loss"].backward()
    assert all(leaves[k].grad is not None for k in ("patch_raw", "log_scale", "logit_bias"))


def test_module_prefers_label_masks_and_official_pos_weight(make):
    outputs, batch, _ = make(1, masks=True)
    targets = fractional_patch_labels(outputs["patch_idx"], label_masks=batch["label_masks"])
    expected = multi_positive_sigmoid_loss(
        outputs["patch_feats"],
        batch["text_feats"],
        targets,
        logit_scale=outputs["logit_scale"],
        logit_bias=outputs["logit_bias"],
        text_mask=batch["text_mask"],
        pos_weight="num_labels_minus_one",
    )
    torch.testing.assert_close(MultiPositiveSigmoidLoss(pos_weight="num_labels_minus_one")(outputs, batch), expected)
    # official form: no bias
    no_bias = dict(outputs, logit_bias=None)
    assert torch.isfinite(MultiPositiveSigmoidLoss()(no_bias, batch))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"p": torch.rand(2, 3)}, r"patch_feats must be \(B, G, D\) float, got shape \(2, 3\)"),
        ({"t": torch.rand(2, 4, 5)}, r"text_feats must be \(B, L, D\) with B = 3 and D = 6"),
        ({"y": torch.rand(3, 5, 3)}, r"targets must be \(B, G, L\) = \(3, 5, 4\)"),
        ({"y": torch.full((3, 5, 4), 1.5)}, r"targets must lie in \[0, 1\]"),
        ({"y": torch.full((3, 5, 4), -0.1)}, r"targets must lie in \[0, 1\]"),
        ({"mask": torch.tensor([[True] * 4, [False] * 4, [True] * 4])}, r"text_mask: shape\(s\) \[1\] have no valid"),
        ({"mask": torch.ones(3, 4)}, r"text_mask must be \(B, L\) bool, got dtype"),
        ({"mask": torch.ones(3, 5, dtype=torch.bool)}, r"text_mask must be \(B, L\) = \(3, 4\)"),
        ({"p": torch.full((3, 5, 6), float("nan"))}, "patch_feats must be finite"),
        ({"t": torch.full((3, 4, 6), float("inf"))}, "text_feats must be finite"),
        ({"scale": float("nan")}, "logit_scale must be finite"),
        ({"scale": torch.ones(2)}, "logit_scale must be a number or a 0-dim tensor"),
        ({"bias": "x"}, "logit_bias must be a number or a 0-dim tensor"),
        ({"pos_weight": "k-1"}, "pos_weight must be None, a positive number or 'num_labels_minus_one'"),
        ({"pos_weight": -1.0}, "pos_weight must be None, a positive number"),
        ({"reduction": "batchmean"}, "reduction must be one of"),
    ],
)
def test_bad_input(change, match):
    p, t, y, _ = _case(7, dtype=torch.float32)
    args = {"p": p, "t": t, "y": y, "mask": None, "scale": 10.0, "bias": -10.0, "pos_weight": None, "reduction": "mean"}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        multi_positive_sigmoid_loss(
            args["p"],
            args["t"],
            args["y"],
            logit_scale=args["scale"],
            logit_bias=args["bias"],
            text_mask=args["mask"],
            pos_weight=args["pos_weight"],
            reduction=args["reduction"],
        )


def test_module_bad_input(pair):
    outputs, batch, _ = pair
    with pytest.raises(ValueError, match=r"outputs is missing 'logit_scale' \(needed by MultiPositiveSigmoidLoss\)"):
        MultiPositiveSigmoidLoss()({k: v for k, v in outputs.items() if k != "logit_scale"}, batch)
    with pytest.raises(ValueError, match="batch is missing 'labels' or 'label_masks'"):
        MultiPositiveSigmoidLoss()(outputs, {k: v for k, v in batch.items() if k != "labels"})
    bad = dict(batch, labels=torch.full_like(batch["labels"], 3))  # shape 1 has 3 texts: index 3 is padding
    with pytest.raises(ValueError, match="labels must index valid texts of their shape"):
        MultiPositiveSigmoidLoss()(outputs, bad)
    with pytest.raises(ValueError, match="targets must be 'fractional' or 'majority'"):
        MultiPositiveSigmoidLoss(targets="soft")
    with pytest.raises(ValueError, match="pos_weight must be None"):
        MultiPositiveSigmoidLoss(pos_weight="auto")


def test_logit_scale_bias_paper_and_official():
    paper = LogitScaleBias()
    scale, bias = paper()
    assert scale.dim() == 0 and bias.dim() == 0
    assert scale.item() == pytest.approx(10.0) and bias.item() == -10.0
    assert paper.log_scale.detach().item() == pytest.approx(math.log(10.0))
    assert {n for n, _ in paper.named_parameters()} == {"log_scale", "bias"}
    official = LogitScaleBias(mode="official")
    scale, bias = official()
    assert bias is None and scale.item() == pytest.approx(1 / 0.07)
    assert [n for n, _ in official.named_parameters()] == ["log_scale"]
    # the clamp at max_scale, with zero gradient beyond it
    with torch.no_grad():
        official.log_scale.fill_(math.log(500.0))
    scale, _ = official()
    assert scale.item() == 100.0
    scale.backward()
    assert official.log_scale.grad.item() == 0.0
    official.reset_parameters()
    assert official()[0].item() == pytest.approx(1 / 0.07)
    fixed = LogitScaleBias(learnable=False, init_scale=20.0, init_bias=-5.0)
    assert list(fixed.parameters()) == [] and set(fixed.state_dict()) == {"log_scale", "bias"}
    assert float(fixed()[0]) == pytest.approx(20.0)
    assert "mode='paper'" in repr(paper)


def test_logit_scale_bias_bad_input():
    with pytest.raises(ValueError, match="init_bias must be None in mode='official'"):
        LogitScaleBias(mode="official", init_bias=-10.0)
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0"):
        LogitScaleBias(init_scale=0.0)
    with pytest.raises(ValueError, match="mode must be 'paper' or 'official'"):
        LogitScaleBias(mode="siglip")
    with pytest.raises(ValueError, match="max_scale must be > 0 or None"):
        LogitScaleBias(max_scale=-1.0)
