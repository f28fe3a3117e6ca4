"""The embedded synthetic dataset: coverage, names, determinism, splits, interleaving, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pa3d_data import (
    SYNTHETIC_HELDOUT_CATEGORIES,
    SYNTHETIC_PART_NAMES,
    SYNTHETIC_TRAIN_CATEGORIES,
    SyntheticPartDataset,
    collate_dense,
    generate_synthetic,
    synthetic_shape,
)


def test_at_least_ten_training_categories_and_disjoint_heldout():
    assert len(SYNTHETIC_TRAIN_CATEGORIES) >= 10
    assert len(SYNTHETIC_HELDOUT_CATEGORIES) >= 2
    assert not set(SYNTHETIC_TRAIN_CATEGORIES) & set(SYNTHETIC_HELDOUT_CATEGORIES)


def test_heldout_part_names_are_seen_in_training():
    seen = {n for c in SYNTHETIC_TRAIN_CATEGORIES for n in SYNTHETIC_PART_NAMES[c]}
    for cat in SYNTHETIC_HELDOUT_CATEGORIES:
        assert set(SYNTHETIC_PART_NAMES[cat]) <= seen, cat
    assert SYNTHETIC_PART_NAMES["stool"] == ["seat", "leg"]


@pytest.mark.parametrize("category", SYNTHETIC_TRAIN_CATEGORIES + SYNTHETIC_HELDOUT_CATEGORIES)
def test_every_category_labels_every_point_and_fits_the_unit_sphere(category):
    names = SYNTHETIC_PART_NAMES[category]
    fractions = []
    for i in range(6):
        pts, lab = synthetic_shape(category, np.random.default_rng([3, i]), 1024)
        assert pts.shape == (1024, 3) and pts.dtype == np.float32
        assert lab.min() >= 0 and lab.max() < len(names)  # every point labelled with a name of its category
        assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert np.abs(pts.mean(axis=0)).max() < 1e-4
        counts = np.bincount(lab, minlength=len(names)) / len(lab)
        fractions.append(counts)
    fractions = np.stack(fractions)
    # every part occurs, and when present it is big enough for patches to hit it
    assert (fractions.max(axis=0) > 0).all(), fractions
    assert fractions[fractions > 0].min() >= 0.015


def test_split_categories_interleave_and_never_mix():
    train = SyntheticPartDataset(30, num_points=64, cache=False)
    cats = [train[i].category for i in range(30)]
    c = len(SYNTHETIC_TRAIN_CATEGORIES)
    assert cats == [SYNTHETIC_TRAIN_CATEGORIES[i % c] for i in range(30)]
    held = SyntheticPartDataset(8, num_points=64, split="heldout_categories", cache=False)
    assert {held[i].category for i in range(8)} == set(SYNTHETIC_HELDOUT_CATEGORIES)
    test = SyntheticPartDataset(14, num_points=64, split="test", cache=False)
    assert {test[i].category for i in range(14)} == set(SYNTHETIC_TRAIN_CATEGORIES)
    assert not torch.equal(test[0].points, train[0].points)  # held-out shapes differ from training shapes


def test_sample_fields():
    s = SyntheticPartDataset(3, num_points=128, cache=False)[2]
    assert s.category == "lamp" and s.label_names == ["base", "pole", "lampshade"]
    assert s.labels.dtype == torch.long and s.points.dtype == torch.float32
    assert s.shape_id == "train_2" and s.texts == s.label_names


def test_seeds_reproduce_and_prefixes_agree():
    a = generate_synthetic(6, seed=1, num_points=256)
    b = generate_synthetic(6, seed=1, num_points=256)
    c = generate_synthetic(6, seed=2, num_points=256)
    longer = generate_synthetic(9, seed=1, num_points=256)
    np.testing.assert_array_equal(a["points"], b["points"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not np.array_equal(a["points"], c["points"])
    np.testing.assert_array_equal(a["points"], longer["points"][:6])


def test_cache_is_written_atomically_and_reused(tmp_path):
    first = SyntheticPartDataset(5, num_points=64, cache_dir=tmp_path, seed=4)
    assert first.cache_path is not None and first.cache_path.exists()
    assert "v1" in first.cache_path.name and "seed4" in first.cache_path.name
    assert not list(tmp_path.glob(".tmp-*"))
    second = SyntheticPartDataset(5, num_points=64, cache_dir=tmp_path, seed=4)
    assert second.cache_path == first.cache_path
    assert torch.equal(first[3].points, second[3].points)
    other = SyntheticPartDataset(5, num_points=64, cache_dir=tmp_path, seed=5)
    assert other.cache_path != first.cache_path


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticPartDataset(2, split="val", cache=False)
    with pytest.raises(ValueError, match="num_shapes must be a positive int"):
        SyntheticPartDataset(0, cache=False)
    with pytest.raises(ValueError, match="category must be one of"):
        synthetic_shape("spaceship", np.random.default_rng(0))


def test_batches_with_the_loss_protocol_keys():
    ds = SyntheticPartDataset(4, num_points=128, cache=False)
    batch = collate_dense([ds[i] for i in range(4)])
    assert batch["points"].shape == (4, 128, 3)
    assert batch["label_masks"].shape == (4, 4, 128)
    assert batch["text_mask"].sum(1).tolist() == [4, 2, 3, 2]
