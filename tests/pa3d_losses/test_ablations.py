"""The Stage-2 ablations against references and against the default loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_losses import (
    BatchNegativesSigmoidLoss,
    HardPatchLabelsSigmoidLoss,
    MultiPositiveSigmoidLoss,
    PointLevelSigmoidLoss,
    SoftmaxMultiPositiveLoss,
    batch_negatives_sigmoid_loss,
    majority_patch_labels,
    multi_positive_sigmoid_loss,
    point_level_sigmoid_loss,
    softmax_multi_positive_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch-(scatter|cluster) is not installed")


def _case(seed, B=3, G=5, L=4, D=6, counts=(4, 2, 3), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = F.normalize(torch.randn(B, G, D, generator=g, dtype=dtype), dim=-1)
    t = F.normalize(torch.randn(B, L, D, generator=g, dtype=dtype), dim=-1)
    y = torch.rand(B, G, L, generator=g, dtype=dtype)
    mask = torch.arange(L)[None] < torch.tensor(counts)[:, None]
    return p, t, y, mask


@given(st.integers(0, 2**16), st.sampled_from([None, 3.0]))
def test_batch_negatives_differ_exactly_by_cross_shape_terms(seed, pos_weight):
    p, t, y, mask = _case(seed)
    kw = {"logit_scale": 6.0, "logit_bias": -2.0, "text_mask": mask, "pos_weight": pos_weight}
    full = batch_negatives_sigmoid_loss(p, t, y, reduction="none", **kw)
    own = multi_positive_sigmoid_loss(p, t, y, reduction="none", **kw)
    B = p.shape[0]
    for b in range(B):
        torch.testing.assert_close(full[b, :, b], own[b])
    logits = torch.einsum("bgd,cld->bgcl", p, t) * 6.0 - 2.0
    cross = ~torch.eye(B, dtype=torch.bool)[:, None, :, None] & mask[None, None]
    cross_terms = F.softplus(logits)[cross.expand_as(logits)].sum()  # BCE with target 0
    in_sample = multi_positive_sigmoid_loss(p, t, y, reduction="sum", **kw)
    torch.testing.assert_close(batch_negatives_sigmoid_loss(p, t, y, reduction="sum", **kw), in_sample + cross_terms)
    # mean: per shape over G x (all valid batch texts), then over shapes
    torch.testing.assert_close(
        batch_negatives_sigmoid_loss(p, t, y, **kw), (full.sum(dim=(1, 2, 3)) / (p.shape[1] * mask.sum())).mean()
    )


def test_batch_negatives_equal_default_for_one_shape():
    p, t, y, mask = _case(1, B=1, counts=(3,))
    kw = {"logit_scale": 6.0, "logit_bias": -2.0, "text_mask": mask, "pos_weight": "num_labels_minus_one"}
    torch.testing.assert_close(batch_negatives_sigmoid_loss(p, t, y, **kw), multi_positive_sigmoid_loss(p, t, y, **kw))


def _softmax_loop(p, t, y, mask, scale):
    per_shape = []
    for b in range(p.shape[0]):
        logits = p[b] @ t[b, mask[b]].T * scale
        yb = y[b][:, mask[b]]
        has = yb.sum(-1) > 0
        if has.any():
            per_shape.append(F.cross_entropy(logits[has], yb[has] / yb[has].sum(-1, keepdim=True)))
    return torch.stack(per_shape).mean()


@given(st.integers(0, 2**16))
def test_softmax_multi_positive_equals_loop(seed):
    p, t, y, mask = _case(seed)
    y = y * (y > 0.4)  # some patches end up with no labelled point
    y[0, 0] = 0
    loss = softmax_multi_positive_loss(p, t, y, logit_scale=7.0, logit_bias=-3.0, text_mask=mask)
    torch.testing.assert_close(loss, _softmax_loop(p, t, y, mask, 7.0))


def test_softmax_padding_and_extreme_logits():
    p, t, y, mask = _case(2)
    t = torch.where(mask[..., None], t, torch.full_like(t, float("nan"))).requires_grad_()
    p = p.clone().requires_grad_()
    loss = softmax_multi_positive_loss(p, t, y, logit_scale=1e4, text_mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all() and torch.isfinite(t.grad[mask]).all()
    assert (t.grad[~mask] == 0).all()
    # no labelled patch anywhere -> 0
    zero = softmax_multi_positive_loss(p, t, torch.zeros_like(y), logit_scale=10.0, text_mask=mask)
    assert float(zero.detach()) == 0.0


def test_hard_patch_labels_module(pair):
    outputs, batch, _ = pair
    L = batch["text_feats"].shape[1]
    majority = majority_patch_labels(outputs["patch_idx"], point_labels=batch["labels"], num_labels=L)
    onehot = F.one_hot(majority.clamp(min=0), L).float() * (majority >= 0)[..., None]
    expected = multi_positive_sigmoid_loss(
        outputs["patch_feats"],
        batch["text_feats"],
        onehot,
        logit_scale=outputs["logit_scale"],
        logit_bias=outputs["logit_bias"],
        text_mask=batch["text_mask"],
    )
    torch.testing.assert_close(HardPatchLabelsSigmoidLoss()(outputs, batch), expected)
    # pure patches (one label per shape): majority one-hot == fractions, so it equals the default
    pure = dict(batch, labels=torch.zeros_like(batch["labels"]))
    torch.testing.assert_close(HardPatchLabelsSigmoidLoss()(outputs, pure), MultiPositiveSigmoidLoss()(outputs, pure))


def test_module_forms_equal_functions(pair):
    outputs, batch, _ = pair
    from pa3d_losses import fractional_patch_labels

    y = fractional_patch_labels(outputs["patch_idx"], point_labels=batch["labels"], num_labels=4)
    args = (outputs["patch_feats"], batch["text_feats"], y)
    kw = {"logit_scale": outputs["logit_scale"], "logit_bias": outputs["logit_bias"], "text_mask": batch["text_mask"]}
    torch.testing.assert_close(BatchNegativesSigmoidLoss()(outputs, batch), batch_negatives_sigmoid_loss(*args, **kw))
    torch.testing.assert_close(SoftmaxMultiPositiveLoss()(outputs, batch), softmax_multi_positive_loss(*args, **kw))
    assert repr(SoftmaxMultiPositiveLoss()) == "SoftmaxMultiPositiveLoss(targets='fractional')"


def test_gradcheck_batch_negatives_and_softmax():
    p, t, y, mask = _case(3, B=2, G=3, L=3, D=4, counts=(3, 2))
    p.requires_grad_()
    t.requires_grad_()
    s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p, t, s, b: batch_negatives_sigmoid_loss(
            p, t, y, logit_scale=s, logit_bias=b, text_mask=mask, pos_weight="num_labels_minus_one"
        ),
        (p, t, s, b),
    )
    assert torch.autograd.gradcheck(
        lambda p, t, s: softmax_multi_positive_loss(p, t, y, logit_scale=s, text_mask=mask), (p, t, s)
    )


def _nearest_reference(p, t, targets, points, centers, mask, scale, bias):
    logits = torch.einsum("bgd,bld->bgl", p, t.nan_to_num()) * scale + bias
    nearest = torch.cdist(points, centers).argmin(-1)  # (B, N)
    point_logits = logits.gather(1, nearest[..., None].expand(-1, -1, logits.shape[-1]))
    per_shape = []
    for b in range(p.shape[0]):
        per_shape.append(F.binary_cross_entropy_with_logits(point_logits[b][:, mask[b]], targets[b][:, mask[b]]))
    return torch.stack(per_shape).mean()


def test_point_level_equals_nearest_centre_reference(pair):
    outputs, batch, _ = pair
    L = batch["text_feats"].shape[1]
    labels = batch["labels"]
    targets = F.one_hot(labels.clamp(min=0), L).float() * (labels >= 0)[..., None]
    expected = _nearest_reference(
        outputs["patch_feats"],
        batch["text_feats"],
        targets,
        batch["points"],
        outputs["centers"],
        batch["text_mask"],
        outputs["logit_scale"],
        outputs["logit_bias"],
    )
    torch.testing.assert_close(PointLevelSigmoidLoss()(outputs, batch), expected)
    fn = point_level_sigmoid_loss(
        outputs["patch_feats"],
        batch["text_feats"],
        targets,
        points=batch["points"],
        centers=outputs["centers"],
        logit_scale=outputs["logit_scale"],
        logit_bias=outputs["logit_bias"],
        text_mask=batch["text_mask"],
    )
    torch.testing.assert_close(fn, expected)
    result = PointLevelSigmoidLoss()(outputs, batch, return_dict=True)
    assert set(result) == {"align_loss", "point_acc", "patch_acc", "logit_scale"}


def test_point_level_gradcheck():
    g = torch.Generator().manual_seed(4)
    p, t, _, mask = _case(4, B=2, G=3, L=3, D=4, counts=(3, 2))
    points = torch.rand(2, 7, 3, generator=g, dtype=torch.float64)
    centers = points[:, :3]
    targets = (torch.rand(2, 7, 3, generator=g, dtype=torch.float64) < 0.3).double()
    p.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: point_level_sigmoid_loss(
            p, t, targets, points=points, centers=centers, logit_scale=3.0, logit_bias=-1.0, text_mask=mask
        ),
        (p,),
    )


def test_point_level_bad_input():
    p, t, _, mask = _case(5)
    points = torch.rand(3, 10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"point_targets must be \(B, N, L\) = \(3, 10, 4\)"):
        point_level_sigmoid_loss(p, t, torch.rand(3, 9, 4), points=points, centers=points[:, :5], logit_scale=1.0)
    with pytest.raises(ValueError, match=r"centers must be \(B, G, 3\) = \(3, 5, 3\)"):
        point_level_sigmoid_loss(p, t, torch.rand(3, 10, 4), points=points, centers=points[:, :4], logit_scale=1.0)
    with pytest.raises(ValueError, match=r"points must be \(B, N, 3\)"):
        point_level_sigmoid_loss(p, t, torch.rand(3, 10, 4), points=points[..., :2], centers=points, logit_scale=1.0)


@pytest.mark.parametrize(
    "fn", [batch_negatives_sigmoid_loss, softmax_multi_positive_loss], ids=["batch_negatives", "softmax"]
)
def test_ablation_bad_input(fn):
    p, t, y, mask = _case(6)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
        fn(p, t, y + 1.0, logit_scale=1.0, text_mask=mask)
    with pytest.raises(ValueError, match=r"text_mask: shape\(s\) \[0\] have no valid text"):
        fn(p, t, y, logit_scale=1.0, text_mask=mask & torch.tensor([[False], [True], [True]]))
    with pytest.raises(ValueError, match="patch_feats must be finite"):
        fn(p * float("nan"), t, y, logit_scale=1.0)
