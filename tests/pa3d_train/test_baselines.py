"""Reference baselines: patch majority labels, the patch ceiling and the one-label predictor."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import PartSample
from pa3d_train.baselines import (
    baseline_markdown,
    one_label_labels,
    patch_ceiling_labels,
    patch_majority_labels,
    reference_baselines,
)

warnings.filterwarnings("ignore", message=".*torch-cluster is not installed.*")


@given(b=st.integers(1, 3), n=st.integers(1, 20), g=st.integers(1, 6), k=st.integers(1, 5), num=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_patch_majority_equals_a_plain_loop(b, n, g, k, num, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, num, (b, n), generator=gen)
    idx = torch.randint(0, n, (b, g, k), generator=gen)
    got = patch_majority_labels(labels, idx, num)
    for i in range(b):
        for j in range(g):
            members = [int(labels[i, m]) for m in idx[i, j] if labels[i, m] >= 0]
            if not members:
                assert got[i, j] == -1
            else:
                counts = [members.count(c) for c in range(num)]
                assert got[i, j] == counts.index(max(counts))  # first maximum: smallest label among ties


@given(n=st.integers(2, 40), num=st.integers(1, 4), seed=st.integers(0, 10_000),
       assign=st.sampled_from(["nearest", "membership", "idw"]))
def test_one_point_patches_recover_every_label(n, num, seed, assign):
    # G = N and K = 1: each point is its own patch, so the ceiling is the ground truth itself
    gen = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=gen)
    labels = torch.randint(0, num, (n,), generator=gen)
    pred = patch_ceiling_labels(pts, labels, num, num_groups=n, group_size=1, assign=assign, backend="torch")
    assert torch.equal(pred, labels)  # idw: a point on a centre takes that centre's value


@given(n=st.integers(4, 40), num=st.integers(1, 5), label=st.integers(0, 4), seed=st.integers(0, 10_000))
def test_a_constant_label_gives_a_constant_prediction(n, num, label, seed):
    label = label % num
    pts = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))
    labels = torch.full((n,), label)
    pred = patch_ceiling_labels(pts, labels, num, num_groups=max(1, n // 4), group_size=4, backend="torch")
    assert pred.dtype == torch.long and pred.shape == (n,)
    assert (pred == label).all()


def test_ceiling_on_two_far_clusters_is_exact_and_beats_one_label():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(30, 3, generator=gen), torch.rand(10, 3, generator=gen) + 10
    pts, labels = torch.cat([a, b]), torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    sample = PartSample(pts, labels, ["body", "leg"], "thing", "0")
    out = reference_baselines([sample], num_groups=4, group_size=8, backend="torch")
    assert out["patch_ceiling"]["instance_miou"] == pytest.approx(1.0)
    # one label ("body", 30 of 40 points): IoU 0.75 for body, 0 for leg -> 0.375 (strict)
    assert out["one_label"]["instance_miou"] == pytest.approx(0.375)
    # a prior naming the other part scores that part everywhere: 0.25 / 2
    prior = reference_baselines([sample], num_groups=4, group_size=8, prior={"thing": "leg"}, backend="torch")
    assert prior["one_label"]["instance_miou"] == pytest.approx(0.125)


def test_transform_is_applied_before_grouping():
    pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5, 0, 0], [5.1, 0, 0]])
    sample = PartSample(pts, torch.tensor([0, 0, 1, 1]), ["a", "b"], "c", "0")
    seen = []

    def spy(s):
        seen.append(s.shape_id)
        return s.replace(points=s.points * 2)

    out = reference_baselines([sample], num_groups=2, group_size=2, transform=spy, backend="torch")
    assert seen == ["0"] and out["patch_ceiling"]["instance_miou"] == pytest.approx(1.0)


def test_one_label_ties_and_errors():
    assert one_label_labels(torch.tensor([0, 1, -1]), 2).tolist() == [0, 0, 0]
    assert one_label_labels(torch.tensor([-1, -1]), 2).tolist() == [0, 0]
    assert one_label_labels(torch.tensor([0, 0]), 3, label=2).tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"label must be in \[0, 2\), got 5"):
        one_label_labels(torch.tensor([0]), 2, label=5)


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match=r"labels must be \(B, N\) and patch_idx \(B, G, K\)"):
        patch_majority_labels(torch.zeros(4, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"num_labels must be >= 1, got 0"):
        patch_majority_labels(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"points must be \(N, 3\) and labels \(N,\)"):
        patch_ceiling_labels(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, num_groups=2, group_size=2)


def test_markdown_rows():
    b = {"patch_ceiling": {"instance_miou": 0.86, "category_miou": 0.8},
         "one_label": {"instance_miou": 0.31, "category_miou": 0.3}}
    text = baseline_markdown(b, num_points=2048, num_groups=128, group_size=32)
    assert "| patch ceiling (N=2048, G=128, K=32) | 86.0 | 80.0 |" in text
    assert "| best one-label predictor (per-shape majority) | 31.0 | 30.0 |" in text


def test_lpsb_ceiling_is_high_and_one_label_low(shared_data):
    from pa3d_data import LPSBDataset, NormalizeUnitSphere

    ds = LPSBDataset(shared_data / "lpsb", categories=["Cup", "Table"], num_points=1024)
    samples = [ds[0], ds[10]]
    out = reference_baselines(samples, num_groups=64, group_size=16, transform=NormalizeUnitSphere(), backend="torch")
    assert out["patch_ceiling"]["instance_miou"] > out["one_label"]["instance_miou"]
    assert out["patch_ceiling"]["num_shapes"] == 2
