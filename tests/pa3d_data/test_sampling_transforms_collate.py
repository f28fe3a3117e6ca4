"""Sampling, transforms and collate: properties on small seeded inputs."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pa3d_data import (
    Compose,
    DataFormatError,
    Find3DAxes,
    FPSSample,
    MaskAwareSample,
    NormalizeBox,
    NormalizeUnitSphere,
    PartSample,
    RandomJitter,
    RandomRotation,
    RandomSample,
    RandomScale,
    RandomTranslate,
    SwapYZ,
    UpAxis,
    collate_dense,
    collate_ragged,
    euler_rotation_matrix,
    fps_sample,
    mask_aware_indices,
    official_augmentation,
    prompt_names,
    random_sample,
    readable_part_name,
)

warnings.filterwarnings("ignore", message=".*torch-cluster is not installed.*")


def _sample(n: int, num_labels: int, seed: int, *, masks: bool = False, path: str | None = None) -> PartSample:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, num_labels, (n,), generator=g)
    lm = torch.rand(num_labels, n, generator=g) < 0.3 if masks else None
    return PartSample(torch.rand(n, 3, generator=g), labels, [f"p{i}" for i in range(num_labels)], "cat", str(seed),
                      label_masks=lm, normals=torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1),
                      meta={"path": path} if path else {})


# --- PartSample -------------------------------------------------------------------------------------------------

def test_partsample_validates_with_named_messages():
    with pytest.raises(ValueError, match=r"points must be \(N, 3\) float, got shape \(3, 4\)"):
        PartSample(torch.zeros(3, 4), torch.zeros(3), ["a"])
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 1\)"):
        PartSample(torch.zeros(3, 3), torch.tensor([0, 1, 0]), ["a"])
    with pytest.raises(ValueError, match=r"label_masks must be \(L, N\) = \(1, 3\) bool"):
        PartSample(torch.zeros(3, 3), torch.zeros(3), ["a"], label_masks=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="prompts must have one text per label"):
        PartSample(torch.zeros(3, 3), torch.zeros(3), ["a"], prompts=["a", "b"])


def test_select_keeps_per_point_fields_aligned():
    s = _sample(20, 3, 0, masks=True)
    s.meta["point_face_ids"] = torch.arange(20) * 10
    s.meta["scale"] = 2.0
    idx = torch.tensor([5, 1, 19])
    t = s.select(idx)
    assert torch.equal(t.points, s.points[idx]) and torch.equal(t.labels, s.labels[idx])
    assert torch.equal(t.label_masks, s.label_masks[:, idx]) and torch.equal(t.normals, s.normals[idx])
    assert t.meta["point_face_ids"].tolist() == [50, 10, 190] and t.meta["scale"] == 2.0


def test_prompt_text_is_separate_from_names():
    assert readable_part_name("upperLeg") == "upper leg" and readable_part_name("chair_back") == "chair back"
    assert prompt_names(["support", "leg"], {"Chair/support": "seat"}, category="Table") == ["support", "leg"]


# --- sampling ---------------------------------------------------------------------------------------------------

@given(n=st.integers(40, 120), num_labels=st.integers(1, 4), m=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_mask_aware_sampling_keeps_the_minimum_per_label(n, num_labels, m, seed):
    s = _sample(n, num_labels, seed, masks=True)
    k = 32
    idx = mask_aware_indices(s.points, s.label_masks, k, min_per_label=m, generator=torch.Generator().manual_seed(seed))
    assert idx.shape == (k,) and idx.unique().numel() == k and torch.equal(idx, idx.sort().values)
    kept = s.label_masks[:, idx].sum(dim=1)
    need = s.label_masks.sum(dim=1).clamp(max=m)
    if num_labels * m <= k:
        assert bool((kept >= need).all()), (kept, need)


def test_mask_aware_sampling_is_seeded():
    s = _sample(200, 3, 1, masks=True)
    a = MaskAwareSample(64, min_per_label=8)(s, generator=torch.Generator().manual_seed(3))
    b = MaskAwareSample(64, min_per_label=8)(s, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.points, b.points) and torch.equal(a.label_masks, b.label_masks)


def test_mask_aware_keeps_a_tiny_part_that_random_sampling_would_likely_miss():
    n = 2000
    labels = torch.zeros(n, dtype=torch.long)
    labels[:10] = 1  # a 10-point part
    s = PartSample(torch.rand(n, 3, generator=torch.Generator().manual_seed(0)), labels, ["big", "tiny"])
    out = MaskAwareSample(100, min_per_label=8)(s, generator=torch.Generator().manual_seed(0))
    assert int((out.labels == 1).sum()) >= 8


@given(n=st.integers(5, 60), seed=st.integers(0, 10_000))
def test_fps_sampling_returns_distinct_points(n, seed):
    s = _sample(n, 2, seed)
    k = max(1, n // 2)
    out = fps_sample(s, k, generator=torch.Generator().manual_seed(seed), random_start=True)
    assert out.num_points == k
    assert torch.unique(out.points, dim=0).shape[0] == k
    again = FPSSample(k, random_start=True)(s, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out.points, again.points)


def test_random_sampling_and_too_few_points():
    s = _sample(10, 2, 0, path="/data/shape7.txt")
    out = random_sample(s, 6, generator=torch.Generator().manual_seed(0))
    assert out.num_points == 6 and torch.unique(out.points, dim=0).shape[0] == 6
    assert RandomSample(25, replace=True)(s).num_points == 25
    with pytest.raises(DataFormatError, match=r"shape7.txt: shape has 10 points, fewer than the 11 requested"):
        random_sample(s, 11)
    with pytest.raises(ValueError, match="fewer than the 11 requested"):
        MaskAwareSample(11)(s)
    with pytest.raises(ValueError, match="num_points must be a positive int"):
        RandomSample(0)


# --- transforms -------------------------------------------------------------------------------------------------

@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_normalisation_bounds(seed, scale):
    s = _sample(50, 2, seed)
    s = s.replace(points=s.points * scale + 3.0)
    unit = NormalizeUnitSphere()(s)
    assert unit.points.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)
    assert unit.points.mean(dim=0).abs().max() < 1e-4
    box = NormalizeBox(0.75)(s)
    assert box.points.abs().max() == pytest.approx(0.75, abs=1e-5)
    lo, hi = box.points.min(0).values, box.points.max(0).values
    assert (lo + hi).abs().max() < 1e-4
    back = unit.points * unit.meta["scale"] + unit.meta["center"]
    torch.testing.assert_close(back, s.points, rtol=1e-4, atol=1e-4)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_augmentation_keeps_labels_and_masks_aligned(seed):
    s = _sample(64, 3, seed, masks=True)
    g = torch.Generator().manual_seed(seed)
    aug = Compose([RandomRotation(180.0), RandomScale(0.5, 2.0), RandomTranslate(0.3), RandomJitter(0.01, 0.05)])
    out = aug(s, generator=g)
    assert torch.equal(out.labels, s.labels) and torch.equal(out.label_masks, s.label_masks)
    # point i still corresponds to point i: pairwise distances change only by the scale (and the small jitter)
    d0, d1 = torch.cdist(s.points, s.points), torch.cdist(out.points, out.points)
    ratio = (d1.sum() / d0.sum()).item()
    assert (d1 - ratio * d0).abs().max() < 0.25
    torch.testing.assert_close(out.normals.norm(dim=1), torch.ones(64), rtol=1e-5, atol=1e-5)


def test_rotation_is_seeded_and_proper():
    s = _sample(10, 1, 0)
    a = RandomRotation(20.0)(s, generator=torch.Generator().manual_seed(1))
    b = RandomRotation(20.0)(s, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.points, b.points)
    r = euler_rotation_matrix(torch.tensor([0.3, -0.2, 0.1]))
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64))
    assert torch.linalg.det(r).item() == pytest.approx(1.0)
    assert len(official_augmentation().transform.transforms) == 4


def test_axis_conventions():
    s = PartSample(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]), ["a"], normals=torch.tensor([[0.0, 1.0, 0.0]]))
    swapped = SwapYZ()(s)
    assert swapped.points.tolist() == [[1.0, 3.0, 2.0]] and swapped.normals.tolist() == [[0.0, 0.0, 1.0]]
    assert not SwapYZ().is_rotation and Find3DAxes().is_rotation
    assert Find3DAxes()(s).points.tolist() == [[-1.0, 3.0, 2.0]]
    up = UpAxis("y", "z")(s)
    assert up.normals.tolist() == [[0.0, 0.0, 1.0]]
    torch.testing.assert_close(UpAxis("z", "y")(up).points, s.points)
    with pytest.raises(ValueError, match="axis must be one of x, y, z"):
        UpAxis("w", "z")


# --- collate ----------------------------------------------------------------------------------------------------

def test_dense_collate_pads_texts_and_masks():
    a, b = _sample(16, 3, 0), _sample(16, 1, 1, masks=True)
    batch = collate_dense([a, b])
    assert batch["points"].shape == (2, 16, 3) and batch["labels"].dtype == torch.long
    assert batch["label_masks"].shape == (2, 3, 16) and batch["label_masks"].dtype == torch.bool
    assert batch["text_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(batch["label_masks"][0], a.labels.unsqueeze(0) == torch.arange(3).unsqueeze(1))
    assert torch.equal(batch["label_masks"][1, :1], b.label_masks) and not batch["label_masks"][1, 1:].any()
    assert batch["label_names"] == [a.label_names, b.label_names] and batch["texts"][0] == ["p 0", "p 1", "p 2"]
    assert batch["normals"].shape == (2, 16, 3)
    with pytest.raises(ValueError, match="points must have the same N in a dense batch"):
        collate_dense([a, _sample(8, 1, 2)])
    with pytest.raises(ValueError, match="non-empty"):
        collate_dense([])


def test_ragged_collate_and_pyg_batch():
    a, b = _sample(5, 2, 0), _sample(3, 4, 1)
    r = collate_ragged([a, b])
    assert r["pos"].shape == (8, 3) and r["batch"].tolist() == [0] * 5 + [1] * 3 and r["ptr"].tolist() == [0, 5, 8]
    assert r["label_masks"].shape == (8, 4) and not r["label_masks"][:5, 2:].any()
    assert torch.equal(r["labels"][5:], b.labels)
    pyg = collate_ragged([a, b], as_pyg=True)
    assert torch.equal(pyg.pos, r["pos"]) and torch.equal(pyg.batch, r["batch"])
    assert pyg.text_mask.shape == (2, 4) and pyg.label_names[1] == b.label_names
