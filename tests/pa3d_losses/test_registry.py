"""Registry-driven coverage: every registered loss runs forward and backward on one shared (outputs, batch)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pa3d_losses import (
    LOSSES,
    CosineDistillationLoss,
    MultiPositiveSigmoidLoss,
    WeightedSum,
    build_loss,
    register_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch-(scatter|cluster) is not installed")

DEFAULT = "multi_positive_sigmoid"
# How each registered name relates to the default Stage-2 loss on the shared pair. A newly registered
# loss must be added here (test_every_registered_name_is_classified), which forces that decision.
RELATION = {
    "multi_positive_sigmoid": "default",
    "batch_negatives": "differs",
    "softmax_multi_positive": "differs",
    "point_level": "differs",
    "hard_patch_labels": "differs",
    "joint": "differs",
    "cosine_distillation": "stage1",
}


def test_every_registered_name_is_classified():
    assert set(LOSSES) >= set(RELATION)
    unclassified = set(LOSSES) - set(RELATION)
    assert not unclassified, f"add these registered losses to RELATION: {sorted(unclassified)}"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_registered_loss_forward_backward(name, make):
    outputs, batch, leaves = make(0)
    loss = build_loss(name)
    assert isinstance(loss, nn.Module) and not list(loss.parameters()), "losses hold no parameters"
    value = loss(outputs, batch)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    grads = [leaf.grad for leaf in leaves.values() if leaf.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    outputs, batch, _ = make(0)
    terms = loss(outputs, batch, return_dict=True)
    loss_keys = [k for k in terms if k.endswith("_loss")]
    assert loss_keys, "return_dict must give at least one *_loss term"
    for key, term in terms.items():
        assert isinstance(term, torch.Tensor) and term.dim() == 0, key
        if key.endswith("_loss"):
            assert term.requires_grad and torch.isfinite(term), key
        else:
            assert not term.requires_grad, f"metric {key} must be detached"
    torch.testing.assert_close(sum(terms[k] for k in loss_keys), value.detach())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_registered_loss_with_overlapping_masks(name, make):
    outputs, batch, _ = make(2, masks=True)
    value = build_loss(name)(outputs, batch)
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", sorted(n for n, r in RELATION.items() if r == "differs"))
def test_ablation_differs_from_default(name, pair):
    outputs, batch, _ = pair
    default = build_loss(DEFAULT)(outputs, batch)
    other = build_loss(name)(outputs, batch)
    assert not torch.allclose(other, default, rtol=1e-4, atol=1e-6), f"{name} gives the default loss"


def test_joint_is_distillation_plus_alignment(pair):
    outputs, batch, _ = pair
    joint = build_loss({"type": "joint", "distill_weight": 0.25, "align_weight": 2.0})
    terms = joint(outputs, batch, return_dict=True)
    distill = CosineDistillationLoss()(outputs, batch)
    align = MultiPositiveSigmoidLoss()(outputs, batch)
    torch.testing.assert_close(terms["distill_loss"], 0.25 * distill)
    torch.testing.assert_close(terms["align_loss"], 2.0 * align)
    assert {"distill_cos", "match_distance", "patch_acc", "logit_scale"} <= set(terms)
    torch.testing.assert_close(joint(outputs, batch), 0.25 * distill + 2.0 * align)
    # the alignment term of the joint objective can be an ablation
    swapped = build_loss({"type": "joint", "align": "hard_patch_labels"})
    assert type(swapped.losses["align"]).__name__ == "HardPatchLabelsSigmoidLoss"


def test_build_loss_specs(pair):
    outputs, batch, _ = pair
    assert isinstance(build_loss("multi_positive_sigmoid"), MultiPositiveSigmoidLoss)
    built = build_loss({"type": "multi_positive_sigmoid", "pos_weight": "num_labels_minus_one"})
    assert built.pos_weight == "num_labels_minus_one"
    module = CosineDistillationLoss()
    assert build_loss(module) is module
    weighted = build_loss({"type": "multi_positive_sigmoid", "loss_weight": 0.5})
    assert isinstance(weighted, WeightedSum)
    torch.testing.assert_close(weighted(outputs, batch), 0.5 * MultiPositiveSigmoidLoss()(outputs, batch))
    combo = build_loss([{"type": "cosine_distillation", "loss_weight": 2.0}, "multi_positive_sigmoid"])
    assert combo.weights == {"cosine_distillation": 2.0, "multi_positive_sigmoid": 1.0}
    torch.testing.assert_close(
        combo(outputs, batch),
        2.0 * CosineDistillationLoss()(outputs, batch) + MultiPositiveSigmoidLoss()(outputs, batch),
    )


def test_build_loss_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'siglip'; registered losses: .*multi_positive_sigmoid"):
        build_loss("siglip")
    with pytest.raises(ValueError, match="spec dict must have a 'type' key"):
        build_loss({"pos_weight": 1.0})
    with pytest.raises(ValueError, match="bad arguments for loss 'multi_positive_sigmoid'"):
        build_loss({"type": "multi_positive_sigmoid", "temperature": 0.1})
    with pytest.raises(ValueError, match="spec must be a loss name"):
        build_loss(3)


def test_register_loss_warns_on_overwrite():
    @register_loss("_test_tmp")
    class Tmp(CosineDistillationLoss):
        pass

    try:
        assert isinstance(build_loss("_test_tmp"), Tmp)
        with pytest.warns(UserWarning, match="replacing the loss registered as '_test_tmp'"):
            register_loss("_test_tmp")(CosineDistillationLoss)
    finally:
        del LOSSES["_test_tmp"]
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        register_loss("")


class _Const(nn.Module):
    def __init__(self, value, metric=None):
        super().__init__()
        self.value, self.metric = value, metric

    def forward(self, outputs, batch, *, return_dict=False):
        value = outputs["x"] * self.value
        if not return_dict:
            return value
        if self.metric is None:
            return value  # a bare tensor even with return_dict
        return {"shared_loss": value, "m": torch.tensor(self.metric)}


def test_weighted_sum_reports_each_term():
    outputs = {"x": torch.tensor(1.0, requires_grad=True)}
    total = WeightedSum({"a": _Const(2.0, 1.0), "b": _Const(3.0, 2.0), "c": _Const(5.0)}, weights=[1.0, 0.5, 2.0])
    terms = total(outputs, {}, return_dict=True)
    assert set(terms) == {"a_shared_loss", "b_shared_loss", "a_m", "b_m", "c_loss"}
    assert terms["b_shared_loss"].item() == 1.5 and terms["b_m"].item() == 2.0 and terms["c_loss"].item() == 10.0
    assert total(outputs, {}).item() == 2.0 + 1.5 + 10.0
    with pytest.raises(ValueError, match=r"weights must hold one weight per loss \(3\)"):
        WeightedSum({"a": _Const(1.0), "b": _Const(1.0), "c": _Const(1.0)}, weights=[1.0])
    with pytest.raises(ValueError, match="losses must hold at least one loss"):
        WeightedSum([])
    with pytest.raises(ValueError, match=r"weights\['a'\] must be a finite number"):
        WeightedSum({"a": _Const(1.0)}, weights=[float("nan")])
    with pytest.raises(ValueError, match=r"losses\['a'\] must be an nn.Module"):
        WeightedSum({"a": lambda o, b: 0})
    assert "weights=a=1, b=0.5, c=2" in repr(total)
