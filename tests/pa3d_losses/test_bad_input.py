"""Issue 18 reproductions for the losses: every one a clear ValueError or a defined result."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_losses import (
    LOSSES,
    CosineDistillationLoss,
    LogitScaleBias,
    MultiPositiveSigmoidLoss,
    PointLevelSigmoidLoss,
    batch_negatives_sigmoid_loss,
    build_loss,
    cosine_distillation_loss,
    fractional_patch_labels,
    multi_positive_sigmoid_loss,
    softmax_multi_positive_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch-(scatter|cluster) is not installed")

PATCH_TEXT = [multi_positive_sigmoid_loss, batch_negatives_sigmoid_loss, softmax_multi_positive_loss]


def _inputs(B=2, G=4, L=3, D=8, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    p = F.normalize(torch.randn(B, G, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_(requires_grad)
    t = F.normalize(torch.randn(B, L, D, generator=g, dtype=torch.float64), dim=-1)
    y = torch.rand(B, G, L, generator=g, dtype=torch.float64)
    return p, t, y


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 1e300, True, "k", 0.0, -2.0])
def test_pos_weight_must_be_finite_and_positive(bad):
    p, t, y = _inputs()
    p32, t32, y32 = p.float(), t.float(), y.float()  # 1e300 is finite in float64 but not in float32
    with pytest.raises(ValueError, match="pos_weight must"):
        multi_positive_sigmoid_loss(p32, t32, y32, logit_scale=10.0, pos_weight=bad)
    with pytest.raises(ValueError, match="pos_weight must"):
        batch_negatives_sigmoid_loss(p32, t32, y32, logit_scale=10.0, pos_weight=bad)
    if bad != 1e300:  # the Module refuses at construction whatever the dtype later is
        with pytest.raises(ValueError, match="pos_weight must"):
            MultiPositiveSigmoidLoss(pos_weight=bad)


@pytest.mark.parametrize("eps", [0, 0.0, -1, -1e-8, float("nan"), float("inf"), "1e-8", None, True])
def test_cosine_eps_must_be_finite_and_positive(eps):
    z = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match=f"eps must be a finite number > 0, got {re_escape(eps)}"):
        cosine_distillation_loss(z, z, eps=eps)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        CosineDistillationLoss(eps=eps)


def re_escape(x):
    import re

    return re.escape(repr(x))


@given(eps=st.floats(min_value=1e-45, max_value=1.0), zero_pred=st.booleans())
def test_zero_vectors_give_a_finite_loss_for_any_positive_eps(eps, zero_pred):
    pred = torch.zeros(1, 3, 4) if zero_pred else torch.rand(1, 3, 4) + 0.1
    target = torch.zeros(1, 3, 4)
    loss = cosine_distillation_loss(pred, target, eps=eps)
    # a zero vector has cosine 0 with anything: the loss is exactly 1
    assert loss.item() == pytest.approx(1.0)


@pytest.mark.parametrize("fn", PATCH_TEXT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_gives_zero_with_a_gradient(fn, reduction):
    p, t, y = _inputs(B=0, requires_grad=True)
    loss = fn(p, t, y, logit_scale=10.0, reduction=reduction)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert p.grad is not None and p.grad.shape == p.shape


def test_empty_batch_distillation_is_zero_with_a_gradient():
    pred = torch.zeros(0, 4, 8, requires_grad=True)
    loss = cosine_distillation_loss(pred, torch.zeros(0, 4, 8))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None


@pytest.mark.parametrize("fn", PATCH_TEXT, ids=lambda f: f.__name__)
def test_no_texts_is_refused_by_every_patch_text_loss(fn):
    p, t, y = _inputs()
    with pytest.raises(ValueError, match=r"text_feats must hold at least one text per shape \(L >= 1\), got L = 0"):
        fn(p, t[:, :0], y[:, :, :0], logit_scale=10.0)


@given(B=st.integers(1, 3), G=st.integers(1, 4), L=st.integers(1, 3), D=st.integers(1, 5), seed=st.integers(0, 99))
def test_batch_negatives_handles_any_small_shape(B, G, L, D, seed):
    p, t, y = _inputs(B, G, L, D, seed)
    loss = batch_negatives_sigmoid_loss(p, t, y, logit_scale=5.0, reduction="none")
    assert loss.shape == (B, G, B, L)
    # the own-shape block equals the default loss's elementwise terms (hand-checked identity)
    own = multi_positive_sigmoid_loss(p, t, y, logit_scale=5.0, reduction="none")
    idx = torch.arange(B)
    torch.testing.assert_close(loss[idx, :, idx, :], own)


def _protocol(B=2, N=16, G=4, K=5, L=3, D=8):
    g = torch.Generator().manual_seed(0)
    outputs = {
        "patch_feats": F.normalize(torch.randn(B, G, D, generator=g), dim=-1),
        "patch_idx": torch.randint(0, N, (B, G, K), generator=g),
        "centers": torch.rand(B, G, 3, generator=g),
        "logit_scale": torch.tensor(10.0),
        "logit_bias": torch.tensor(-10.0),
    }
    batch = {"text_feats": F.normalize(torch.randn(B, L, D, generator=g), dim=-1), "points": torch.rand(B, N, 3)}
    return outputs, batch


@pytest.mark.parametrize("name", ["multi_positive_sigmoid", "batch_negatives", "softmax_multi_positive",
                                  "hard_patch_labels", "point_level"])
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("label_masks", torch.rand(2, 3, 16), r"label_masks'\] must be \(B, L, N\) bool .* dtype torch.float32"),
        ("label_masks", torch.ones(2, 16, dtype=torch.bool), r"batch\['label_masks'\] must be \(B, L, N\) bool"),
        ("label_masks", torch.ones(2, 4, 16, dtype=torch.bool), r"with B = 2 and L = 3 .* got shape \(2, 4, 16\)"),
        ("labels", torch.rand(2, 16), r"batch\['labels'\] must be \(B, N\) long .* dtype torch.float32"),
        ("labels", torch.zeros(3, 16, dtype=torch.long), r"batch\['labels'\] must be \(B, N\) long with B = 2"),
        ("labels", [0, 1, 2], r"batch\['labels'\] must be a torch.Tensor of shape \(B, N\) long, got list"),
    ],
)
def test_bad_label_sources_are_named(name, key, value, message):
    outputs, batch = _protocol()
    with pytest.raises(ValueError, match=message):
        build_loss(name)(outputs, {**batch, key: value})


@pytest.mark.parametrize("bad", ["x", 1.5, None, True])
def test_ignore_index_must_be_an_int(bad):
    with pytest.raises(ValueError, match=f"ignore_index must be an int .*got {re_escape(bad)}"):
        MultiPositiveSigmoidLoss(ignore_index=bad)
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        idx = torch.zeros(1, 1, 2, dtype=torch.long)
        fractional_patch_labels(idx, point_labels=torch.zeros(1, 3, dtype=torch.long), ignore_index=bad)


def test_ignore_index_other_than_minus_one_is_honoured():
    outputs, batch = _protocol()
    labels = torch.randint(0, 3, (2, 16))
    labels[:, ::3] = 99
    a = MultiPositiveSigmoidLoss(ignore_index=99)(outputs, {**batch, "labels": labels})
    b = MultiPositiveSigmoidLoss()(outputs, {**batch, "labels": labels.masked_fill(labels == 99, -1)})
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "linear"}, "mode must be one of"),
        ({"mode": None}, "mode must be one of"),
    ],
)
def test_point_level_mode_is_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PointLevelSigmoidLoss(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init_bias": "x"}, "init_bias must be a finite number or None, got 'x'"),
        ({"init_scale": True}, "init_scale must be a finite number > 0, got True"),
        ({"max_scale": "big"}, "max_scale must be > 0 or None, got 'big'"),
        ({"mode": ["paper"]}, "mode must be 'paper' or 'official'"),
    ],
)
def test_logit_scale_bias_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re_escape_text(message)):
        LogitScaleBias(**kwargs)


def re_escape_text(text):
    import re

    return re.escape(text)


@pytest.mark.parametrize("spec", [{"type": ["multi_positive_sigmoid"]}, {"type": None}, {"type": 3}])
def test_build_loss_names_a_bad_type(spec):
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss(spec)


def test_every_registered_loss_refuses_nan_patch_features():
    outputs, batch = _protocol()
    batch["labels"] = torch.randint(-1, 3, (2, 16))
    outputs["teacher_feats"] = torch.full((2, 4, 6), float("nan"))
    outputs["patch_feats"] = outputs["patch_feats"] * float("nan")
    batch["teacher_centers"] = torch.rand(2, 5, 3)
    batch["teacher_targets"] = torch.randn(2, 5, 6)
    for name in LOSSES:
        with pytest.raises(ValueError, match="must be finite"):
            build_loss(name)(outputs, batch)
