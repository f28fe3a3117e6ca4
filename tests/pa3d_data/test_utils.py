"""Label noise, per-category splits and category name tables."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import (
    LabelNoise,
    LPSBDataset,
    PartSample,
    SyntheticPartDataset,
    category_names,
    corrupt_labels,
    split_by_category,
)


@st.composite
def labelled_sample(draw):
    num_labels = draw(st.integers(1, 5))
    n = draw(st.integers(1, 60))
    labels = torch.tensor(draw(st.lists(st.integers(-1, num_labels - 1), min_size=n, max_size=n)))
    names = [f"part{i}" for i in range(num_labels)]
    masks = None
    if draw(st.booleans()):
        masks = torch.stack([labels == i for i in range(num_labels)])
    return PartSample(torch.zeros(n, 3), labels, names, "cat", "0", label_masks=masks)


@given(labelled_sample(), st.floats(0.0, 0.95), st.integers(0, 1000))
def test_noise_changes_only_labelled_points_to_other_names(sample, p, seed):
    noisy = corrupt_labels(sample, p, seed=(seed,))
    before, after = sample.labels, noisy.labels
    assert torch.equal(before < 0, after < 0), "unlabelled points must stay unlabelled"
    changed = before != after
    present = set(before[before >= 0].tolist())
    pool = present if len(present) >= 2 else set(range(sample.num_labels))
    assert set(after[changed].tolist()) <= pool
    if sample.label_masks is not None:
        assert torch.equal(noisy.label_masks[:, changed].float().sum(0), torch.ones(int(changed.sum())))
        assert bool(noisy.label_masks[after[changed], torch.nonzero(changed).flatten()].all())
    assert torch.equal(sample.labels, before), "the input sample must not be modified"


def test_noise_rate_is_close_to_p_and_reproducible():
    labels = torch.arange(20000) % 4
    s = PartSample(torch.zeros(20000, 3), labels, ["a", "b", "c", "d"], "x", "0")
    noisy = corrupt_labels(s, 0.3, seed=(1, 2))
    rate = float((noisy.labels != labels).float().mean())
    assert abs(rate - 0.3) < 0.02
    assert torch.equal(noisy.labels, corrupt_labels(s, 0.3, seed=(1, 2)).labels)
    g = torch.Generator().manual_seed(0)
    assert LabelNoise(0.3)(s, generator=g).labels.shape == labels.shape
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        LabelNoise(1.0)


def test_split_by_category_halves_every_category_and_is_disjoint():
    ds = SyntheticPartDataset(56, num_points=64, cache=False)  # 4 shapes per training category
    a, b = split_by_category(ds)
    assert len(a) == len(b) == 28
    assert not set(a.indices) & set(b.indices)
    assert sorted({s.category for s in a}) == sorted({s.category for s in b}) == sorted(ds.categories)
    assert a.text_map == ds.text_map  # the subset keeps the dataset's interface
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        split_by_category(ds, 1.0)


def test_category_names_fast_path_equals_reading_every_shape():
    ds = SyntheticPartDataset(20, num_points=64, cache=False, split="heldout_categories")
    fast = category_names(ds)
    slow = {}
    for s in ds:
        slow.setdefault(s.category, (list(s.label_names), list(s.texts)))
    assert fast == slow


@pytest.mark.data
def test_lpsb_halves(shared_data):
    ds = LPSBDataset(shared_data / "lpsb", num_points=256)
    first, second = split_by_category(ds)
    assert len(first) == len(second) == 95
    names = category_names(first)
    assert len(names) == 19 and names["Chair"][0] == ds.label_names["Chair"]
    assert "backrest" in names["Chair"][1]  # prompts go through the L-PSB text map


def test_allow_fewer_keeps_every_point_of_a_smaller_shape():
    """Evaluation at "N points, or all the shape has": a shape with fewer points than asked is kept whole
    when ``allow_fewer`` is set, refused otherwise, and subsampled as usual when it has more."""
    import pytest
    import torch

    from pa3d_data import PartDataset, PartSample

    class Two(PartDataset):
        def __len__(self):
            return 2

        def load(self, index):
            n = (5, 12)[index]
            return PartSample(torch.rand(n, 3), torch.zeros(n, dtype=torch.long), ["a"], "c", str(index))

    ds = Two(num_points=8)
    with pytest.raises(ValueError, match="fewer than the 8 requested"):
        ds[0]
    ds.allow_fewer = True
    assert ds[0].num_points == 5
    assert ds[1].num_points == 8
