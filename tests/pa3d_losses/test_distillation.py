"""Stage-1 cosine distillation: function, Module, reference, properties, gradcheck, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_losses import CosineDistillationLoss, cosine_distillation_loss, match_teacher_targets


def _official(pred, target):
    """The official release's loop: per sample mean over G of 1 - cos, summed over samples, divided by B."""
    total = 0.0
    for b in range(pred.shape[0]):
        t = F.normalize(target[b], dim=-1)
        total = total + (1 - F.cosine_similarity(pred[b], t, dim=-1)).mean()
    return total / pred.shape[0]


@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 6), st.integers(1, 8))
def test_zero_for_identical_and_invariant_to_positive_rescaling(seed, B, G, T):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, G, T, generator=g, dtype=torch.float64)
    target = torch.randn(B, G, T, generator=g, dtype=torch.float64)
    assert float(cosine_distillation_loss(pred, pred.clone())) == pytest.approx(0.0, abs=1e-12)
    a = torch.rand(B, G, 1, generator=g, dtype=torch.float64) * 10 + 0.01
    c = torch.rand(B, G, 1, generator=g, dtype=torch.float64) * 10 + 0.01
    torch.testing.assert_close(cosine_distillation_loss(pred * a, target * c), cosine_distillation_loss(pred, target))
    loss = cosine_distillation_loss(pred, target)
    assert 0 <= float(loss) <= 2


def test_equals_official_per_sample_loop():
    g = torch.Generator().manual_seed(1)
    pred = F.normalize(torch.randn(4, 7, 5, generator=g), dim=-1)
    target = torch.randn(4, 7, 5, generator=g)
    torch.testing.assert_close(cosine_distillation_loss(pred, target), _official(pred, target))


def test_hand_worked_and_reductions():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 0.0]]])
    target = torch.tensor([[[3.0, 0.0], [1.0, 0.0]], [[-1.0, -1.0], [5.0, 0.0]]])
    per = cosine_distillation_loss(pred, target, reduction="none")
    torch.testing.assert_close(per, torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    torch.testing.assert_close(cosine_distillation_loss(pred, target, reduction="sum"), torch.tensor(3.0))
    torch.testing.assert_close(cosine_distillation_loss(pred, target), torch.tensor(0.75))
    # mask: per-shape mean over valid patches, then over shapes that have any
    mask = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(cosine_distillation_loss(pred, target, mask=mask), torch.tensor((0.0 + 1.0) / 2))
    mask = torch.tensor([[False, False], [False, True]])
    torch.testing.assert_close(cosine_distillation_loss(pred, target, mask=mask), torch.tensor(0.0))


def test_masked_patches_contribute_nothing_even_nan():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, False], [False, True, True, True, True]])
    poisoned = torch.where(mask[..., None], target, torch.full_like(target, float("nan")))
    loss = cosine_distillation_loss(pred, poisoned, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert (pred.grad[~mask] == 0).all()
    # equal to the loss on the valid patches alone
    ref = sum(cosine_distillation_loss(pred[b, mask[b]][None], target[b, mask[b]][None]) for b in range(2)) / 2
    torch.testing.assert_close(loss, ref)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert torch.autograd.gradcheck(lambda p, t: cosine_distillation_loss(p, t, mask=mask), (pred, target))
    assert torch.autograd.gradcheck(lambda p, t: cosine_distillation_loss(p, t, reduction="none"), (pred, target))


def test_module_equals_function_with_matching(pair):
    outputs, batch, leaves = pair
    module = CosineDistillationLoss()
    result = module(outputs, batch, return_dict=True)
    target, dist = match_teacher_targets(outputs["centers"], batch["teacher_centers"], batch["teacher_targets"])
    expected = cosine_distillation_loss(outputs["teacher_feats"], target)
    torch.testing.assert_close(result["distill_loss"], expected)
    torch.testing.assert_close(module(outputs, batch), expected)
    torch.testing.assert_close(result["match_distance"], dist.mean())
    per = cosine_distillation_loss(outputs["teacher_feats"], target, reduction="none")
    torch.testing.assert_close(result["distill_cos"], (1 - per).mean())
    assert not result["distill_cos"].requires_grad and not result["match_distance"].requires_grad
    result["distill_loss"].backward()
    assert leaves["teacher_raw"].grad.abs().sum() > 0


def test_module_options(pair):
    outputs, batch, _ = pair
    aligned = {"teacher_targets": batch["teacher_targets"][:, : outputs["teacher_feats"].shape[1]]}
    loss = CosineDistillationLoss(match="none")(outputs, aligned)
    torch.testing.assert_close(loss, cosine_distillation_loss(outputs["teacher_feats"], aligned["teacher_targets"]))
    # a distance cap leaves out far matches
    _, dist = match_teacher_targets(outputs["centers"], batch["teacher_centers"], batch["teacher_targets"])
    cap = float(dist.median())
    capped = CosineDistillationLoss(max_match_distance=cap)(outputs, batch)
    target, _ = match_teacher_targets(outputs["centers"], batch["teacher_centers"], batch["teacher_targets"])
    torch.testing.assert_close(capped, cosine_distillation_loss(outputs["teacher_feats"], target, mask=dist <= cap))
    # padded caches: teacher_mask is read from the batch
    masked = dict(batch, teacher_mask=torch.arange(batch["teacher_centers"].shape[1]) < 3)
    masked["teacher_mask"] = masked["teacher_mask"].expand(batch["teacher_centers"].shape[:2])
    target3, _ = match_teacher_targets(
        outputs["centers"], batch["teacher_centers"][:, :3], batch["teacher_targets"][:, :3]
    )
    torch.testing.assert_close(
        CosineDistillationLoss()(outputs, masked), cosine_distillation_loss(outputs["teacher_feats"], target3)
    )
    assert "match='nearest'" in repr(CosineDistillationLoss())


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "match"),
    [
        (torch.rand(2, 3), torch.rand(2, 3), {}, r"pred must be \(B, G, T\) float, got shape \(2, 3\)"),
        (torch.rand(1, 2, 3), torch.rand(1, 2, 4), {}, r"target must be \(B, G, T\) = \(1, 2, 3\) like pred"),
        (torch.ones(1, 2, 3, dtype=torch.long), torch.rand(1, 2, 3), {}, r"pred must be \(B, G, T\) float, got dtype"),
        (torch.full((1, 2, 3), float("inf")), torch.rand(1, 2, 3), {}, "pred must be finite"),
        (torch.rand(1, 2, 3), torch.full((1, 2, 3), float("nan")), {}, "target must be finite"),
        (
            torch.rand(1, 2, 3),
            torch.rand(1, 2, 3),
            {"mask": torch.ones(1, 3, dtype=torch.bool)},
            r"mask must be \(B, G\)",
        ),
        (torch.rand(1, 2, 3), torch.rand(1, 2, 3), {"reduction": "avg"}, "reduction must be one of"),
    ],
)
def test_bad_input(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cosine_distillation_loss(pred, target, **kwargs)


def test_module_bad_input(pair):
    outputs, batch, _ = pair
    with pytest.raises(ValueError, match=r"outputs is missing 'teacher_feats' \(needed by CosineDistillationLoss\)"):
        CosineDistillationLoss()({}, batch)
    with pytest.raises(ValueError, match="batch is missing 'teacher_centers'"):
        CosineDistillationLoss()(outputs, {"teacher_targets": batch["teacher_targets"]})
    with pytest.raises(ValueError, match="match must be 'nearest' or 'none'"):
        CosineDistillationLoss(match="hungarian")
    with pytest.raises(ValueError, match="max_match_distance must be > 0"):
        CosineDistillationLoss(max_match_distance=0.0)
