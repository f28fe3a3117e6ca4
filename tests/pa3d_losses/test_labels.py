"""Label construction: fractional patch labels, majority labels, teacher matching."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_layers._backend import WITH_TORCH_SCATTER
from pa3d_losses import fractional_patch_labels, majority_patch_labels, match_teacher_targets

pytestmark = pytest.mark.filterwarnings("ignore:torch-(scatter|cluster) is not installed")


def _random_case(seed: int, B: int, N: int, G: int, K: int, L: int):
    g = torch.Generator().manual_seed(seed)
    patch_idx = torch.randint(0, N, (B, G, K), generator=g)
    labels = torch.randint(-1, L, (B, N), generator=g)
    masks = torch.rand(B, L, N, generator=g) < 0.4
    return patch_idx, labels, masks


def _brute_hard(patch_idx, labels, L):
    B, G, K = patch_idx.shape
    out = torch.zeros(B, G, L)
    for b in range(B):
        for g in range(G):
            for k in range(K):
                lab = int(labels[b, patch_idx[b, g, k]])
                if lab >= 0:
                    out[b, g, lab] += 1
    return out / K


def _brute_masks(patch_idx, masks):
    B, G, K = patch_idx.shape
    L = masks.shape[1]
    out = torch.zeros(B, G, L)
    for b in range(B):
        for g in range(G):
            for l in range(L):
                out[b, g, l] = sum(bool(masks[b, l, patch_idx[b, g, k]]) for k in range(K)) / K
    return out


sizes = st.tuples(
    st.integers(0, 2**16),
    st.integers(1, 3),
    st.integers(1, 12),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 4),
)


@given(sizes)
def test_fractional_hard_labels_equal_brute_force_count(case):
    seed, B, N, G, K, L = case
    patch_idx, labels, _ = _random_case(seed, B, N, G, K, L)
    frac = fractional_patch_labels(patch_idx, point_labels=labels, num_labels=L)
    assert frac.shape == (B, G, L) and frac.dtype == torch.get_default_dtype()
    torch.testing.assert_close(frac, _brute_hard(patch_idx, labels, L), rtol=0, atol=1e-6)


@given(sizes)
def test_fractional_rows_sum_to_covered_fraction(case):
    seed, B, N, G, K, L = case
    patch_idx, labels, _ = _random_case(seed, B, N, G, K, L)
    frac = fractional_patch_labels(patch_idx, point_labels=labels, num_labels=L)
    covered = (labels.gather(1, patch_idx.flatten(1)).view(B, G, K) >= 0).float().mean(-1)
    torch.testing.assert_close(frac.sum(-1), covered)
    assert bool((frac >= 0).all() and (frac <= 1).all())


@given(sizes)
def test_fractional_masks_equal_brute_force_count(case):
    seed, B, N, G, K, L = case
    patch_idx, _, masks = _random_case(seed, B, N, G, K, L)
    frac = fractional_patch_labels(patch_idx, label_masks=masks)
    torch.testing.assert_close(frac, _brute_masks(patch_idx, masks), rtol=0, atol=1e-6)


def test_one_hot_masks_equal_hard_labels():
    patch_idx, labels, _ = _random_case(3, 2, 20, 5, 4, 3)
    masks = torch.stack([labels == l for l in range(3)], dim=1)
    torch.testing.assert_close(
        fractional_patch_labels(patch_idx, label_masks=masks),
        fractional_patch_labels(patch_idx, point_labels=labels, num_labels=3),
    )


def test_fractional_hand_worked_and_dtype():
    patch_idx = torch.tensor([[[0, 1, 2, 3], [2, 3, 4, 4]]])
    labels = torch.tensor([[0, 0, 1, -1, 1]])
    frac = fractional_patch_labels(patch_idx, point_labels=labels, num_labels=3, dtype=torch.float64)
    expected = torch.tensor([[[0.5, 0.25, 0.0], [0.0, 0.75, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(frac, expected)
    # num_labels defaults to the largest label + 1; a custom ignore value works too
    assert fractional_patch_labels(patch_idx, point_labels=labels).shape == (1, 2, 2)
    frac99 = fractional_patch_labels(patch_idx, point_labels=labels.masked_fill(labels < 0, 99), ignore_index=99)
    torch.testing.assert_close(frac99, expected[..., :2].float())


@pytest.mark.skipif(not WITH_TORCH_SCATTER, reason="torch-scatter not installed")
def test_scatter_backend_equals_torch_reference():
    patch_idx, labels, _ = _random_case(5, 3, 30, 7, 5, 4)
    torch.testing.assert_close(
        fractional_patch_labels(patch_idx, point_labels=labels, num_labels=4, backend="scatter"),
        fractional_patch_labels(patch_idx, point_labels=labels, num_labels=4, backend="torch"),
    )


def test_majority_patch_labels():
    patch_idx = torch.tensor([[[0, 1, 2], [3, 3, 4], [0, 2, 5]]])
    labels = torch.tensor([[1, 0, 1, -1, -1, 0]])
    # patch 2: labels 1, 1, 0 -> 1; patch 1: nothing labelled -> -1
    assert majority_patch_labels(patch_idx, point_labels=labels).tolist() == [[1, -1, 1]]
    # ties go to the lowest label index
    assert majority_patch_labels(torch.tensor([[[0, 1]]]), point_labels=torch.tensor([[2, 1]])).tolist() == [[1]]
    masks = torch.tensor([[[1, 0, 1, 0, 0, 0], [1, 1, 1, 0, 0, 1]]], dtype=torch.bool)
    assert majority_patch_labels(patch_idx, label_masks=masks).tolist() == [[1, -1, 1]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_idx": torch.zeros(2, 3, dtype=torch.long)}, r"patch_idx must be \(B, G, K\) long, got shape"),
        ({"patch_idx": torch.zeros(1, 2, 3)}, r"patch_idx must be \(B, G, K\) long, got dtype"),
        ({"point_labels": None}, "pass exactly one of point_labels"),
        ({"label_masks": torch.zeros(1, 2, 5, dtype=torch.bool)}, "pass exactly one of point_labels"),
        ({"point_labels": torch.zeros(1, 5)}, r"point_labels must be \(B, N\) long, got dtype"),
        ({"point_labels": torch.zeros(2, 5, dtype=torch.long)}, r"point_labels must be \(B, N\) with B = 1"),
        ({"point_labels": torch.full((1, 5), -2)}, "point_labels must be >= 0 or the ignore value -1"),
        ({"num_labels": 1}, "point_labels must be < num_labels = 1, got a label 2"),
        ({"patch_idx": torch.full((1, 2, 3), 5)}, r"patch_idx must index points in \[0, N\) with N = 5"),
        ({"num_labels": -1}, "num_labels must be an int >= 0"),
    ],
)
def test_fractional_bad_input(kwargs, match):
    args = {"patch_idx": torch.zeros(1, 2, 3, dtype=torch.long), "point_labels": torch.tensor([[0, 1, 2, -1, 0]])}
    args.update(kwargs)
    patch_idx = args.pop("patch_idx")
    if args.get("point_labels") is None:
        args.pop("point_labels", None)
    with pytest.raises(ValueError, match=match):
        fractional_patch_labels(patch_idx, **args)


def test_fractional_bad_masks():
    patch_idx = torch.zeros(1, 2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"label_masks must be \(B, L, N\) bool, got dtype"):
        fractional_patch_labels(patch_idx, label_masks=torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match=r"label_masks must be \(B, L, N\) with L = num_labels = 3"):
        fractional_patch_labels(patch_idx, label_masks=torch.zeros(1, 2, 5, dtype=torch.bool), num_labels=3)


@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 6), st.integers(1, 8))
def test_match_teacher_targets_equals_brute_force(seed, B, G, Gp):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(B, G, 3, generator=g)
    cached = torch.rand(B, Gp, 3, generator=g)
    feats = torch.randn(B, Gp, 5, generator=g)
    targets, dist = match_teacher_targets(centers, cached, feats)
    assert targets.shape == (B, G, 5) and dist.shape == (B, G)
    for b in range(B):
        for i in range(G):
            d = ((cached[b] - centers[b, i]) ** 2).sum(-1).sqrt()
            j = int(d.argmin())
            torch.testing.assert_close(targets[b, i], feats[b, j])
            torch.testing.assert_close(dist[b, i], d[j])


def test_match_teacher_targets_respects_mask_and_is_many_to_one():
    centers = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0]]])
    cached = torch.tensor([[[0.05, 0, 0], [3.0, 0, 0], [0.0, 0, 0]]])
    feats = torch.tensor([[[1.0], [2.0], [3.0]]])
    targets, _ = match_teacher_targets(centers, cached, feats)
    assert targets.flatten().tolist() == [3.0, 1.0]
    # many-to-one: both patches match the one real cached centre; padding (index 2) is never picked
    mask = torch.tensor([[True, False, False]])
    targets, dist = match_teacher_targets(centers, cached, feats, teacher_mask=mask)
    assert targets.flatten().tolist() == [1.0, 1.0]
    torch.testing.assert_close(dist, torch.tensor([[0.05, 0.05]]))


def test_match_teacher_targets_gradient_reaches_targets_only():
    centers = torch.rand(2, 3, 3, requires_grad=True)
    feats = torch.randn(2, 4, 5, requires_grad=True)
    targets, dist = match_teacher_targets(centers, torch.rand(2, 4, 3), feats)
    assert not dist.requires_grad
    targets.sum().backward()
    assert feats.grad is not None and centers.grad is None


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.rand(1, 2, 2), torch.rand(1, 3, 3), torch.rand(1, 3, 4)), {}, r"centers must be \(B, G, 3\) float"),
        ((torch.rand(1, 2, 3), torch.rand(1, 3), torch.rand(1, 3, 4)), {}, r"teacher_centers must be \(B, G', 3\)"),
        ((torch.rand(2, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 3, 4)), {}, "centers must be .* with B = 1"),
        ((torch.rand(1, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 4, 4)), {}, "teacher_targets must be"),
        ((torch.rand(1, 2, 3), torch.rand(1, 0, 3), torch.rand(1, 0, 4)), {}, "at least one centre"),
        (
            (torch.full((1, 2, 3), float("nan")), torch.rand(1, 3, 3), torch.rand(1, 3, 4)),
            {},
            "centers must be finite",
        ),
        (
            (torch.rand(1, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 3, 4)),
            {"teacher_mask": torch.zeros(1, 3, dtype=torch.bool)},
            r"teacher_mask: shape\(s\) \[0\] have no cached centre",
        ),
        (
            (torch.rand(1, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 3, 4)),
            {"teacher_mask": torch.ones(1, 2, dtype=torch.bool)},
            r"teacher_mask must be \(B, G'\) = \(1, 3\) bool",
        ),
    ],
)
def test_match_teacher_targets_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        match_teacher_targets(*args, **kwargs)
