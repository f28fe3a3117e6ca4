"""Metrics: hand-worked cases for each convention, a plain-loop reference, and properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_train.metrics import (
    IOU_CONVENTIONS,
    SegmentationMeter,
    category_miou,
    instance_miou,
    patch_accuracy,
    per_part_iou,
    point_accuracy,
    shape_iou,
)


def _loop_iou(pred, target, num_parts, convention):
    """Plain per-part loop, written from the definitions in the module docstring."""
    values = []
    for part in range(num_parts):
        p = [int(a) == part for a, t in zip(pred, target) if t >= 0]
        g = [int(t) == part for t in target if t >= 0]
        inter = sum(a and b for a, b in zip(p, g))
        union = sum(a or b for a, b in zip(p, g))
        if convention in ("strict", "find3d"):
            if union:
                values.append(inter / union)
        elif convention == "patchalign3d":
            if any(g):
                values.append(inter / union)
        else:
            values.append(inter / union if union else 1.0)
    return sum(values) / len(values) if values else None


@st.composite
def labelled_shape(draw):
    num_parts = draw(st.integers(1, 5))
    n = draw(st.integers(1, 30))
    pred = draw(st.lists(st.integers(0, num_parts - 1), min_size=n, max_size=n))
    target = draw(st.lists(st.integers(-1, num_parts - 1), min_size=n, max_size=n))
    return torch.tensor(pred), torch.tensor(target), num_parts


@given(labelled_shape(), st.sampled_from(IOU_CONVENTIONS))
def test_shape_iou_equals_plain_loop(case, convention):
    pred, target, num_parts = case
    got = shape_iou(pred, target, num_parts, convention=convention)
    want = _loop_iou(pred.tolist(), target.tolist(), num_parts, convention)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, abs=1e-6)


@given(labelled_shape())
def test_perfect_prediction_scores_one(case):
    _, target, num_parts = case
    pred = target.clamp(min=0)
    for convention in IOU_CONVENTIONS:
        value = shape_iou(pred, target, num_parts, convention=convention)
        assert value is None or value == pytest.approx(1.0)


@given(labelled_shape())
def test_strict_is_never_above_patchalign3d(case):
    # strict scores a superset of the parts patchalign3d scores, and the extra ones (predicted but absent)
    # score 0, so strict can only be lower or equal.
    pred, target, num_parts = case
    strict = shape_iou(pred, target, num_parts)
    pa3d = shape_iou(pred, target, num_parts, convention="patchalign3d")
    if pa3d is not None:
        assert strict is not None and strict <= pa3d + 1e-6


def test_hand_worked_conventions():
    pred = torch.tensor([0, 0, 2, 2, 1])
    gt = torch.tensor([0, 0, 1, 1, -1])  # the last point is unlabelled and ignored
    inter, union = per_part_iou(pred, gt, 4)
    assert inter.tolist() == [2, 0, 0, 0] and union.tolist() == [2, 2, 2, 0]
    assert shape_iou(pred, gt, 4) == pytest.approx(1 / 3)
    assert shape_iou(pred, gt, 4, convention="find3d") == pytest.approx(1 / 3)
    assert shape_iou(pred, gt, 4, convention="patchalign3d") == pytest.approx(0.5)
    assert shape_iou(pred, gt, 4, convention="pointnet") == pytest.approx((1 + 0 + 0 + 1) / 4)


def test_category_and_instance_means():
    ious = [0.2, 0.4, 1.0, None]
    cats = ["chair", "chair", "mug", "mug"]
    assert instance_miou(ious) == pytest.approx(1.6 / 3)
    mean, per = category_miou(ious, cats)
    assert per == pytest.approx({"chair": 0.3, "mug": 1.0})
    assert mean == pytest.approx(0.65)


def test_meter_matches_functions():
    meter = SegmentationMeter(convention="patchalign3d")
    gen = torch.Generator().manual_seed(0)
    ious, cats = [], []
    for i in range(6):
        pred = torch.randint(0, 3, (50,), generator=gen)
        gt = torch.randint(-1, 3, (50,), generator=gen)
        cat = "ab"[i % 2]
        ious.append(meter.update(pred, gt, num_parts=3, category=cat, shape_id=str(i)))
        cats.append(cat)
    out = meter.compute()
    assert out["instance_miou"] == pytest.approx(instance_miou(ious))
    assert out["category_miou"] == pytest.approx(category_miou(ious, cats)[0])
    assert out["num_shapes"] == 6 and out["convention"] == "patchalign3d"


def test_accuracies():
    assert point_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, -1])) == pytest.approx(0.5)
    assert point_accuracy(torch.tensor([1]), torch.tensor([-1])) is None
    assert patch_accuracy(torch.tensor([[1, 2], [0, 0]]), torch.tensor([[1, 1], [0, -1]])) == pytest.approx(2 / 3)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="convention must be one of"):
        shape_iou(torch.tensor([0]), torch.tensor([0]), 1, convention="iou")
    with pytest.raises(ValueError, match="same length"):
        shape_iou(torch.tensor([0, 1]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="integer label tensors"):
        point_accuracy(torch.tensor([0.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_parts=2\)"):
        shape_iou(torch.tensor([5]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="no scored shape"):
        instance_miou([None])
