"""Loaders on the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import pytest
import torch

from pa3d_data import (
    LPSB_CATEGORIES,
    LPSBDataset,
    PartNetDataset,
    ShapeNetPartDataset,
    build_dataset,
    collate_dense,
    read_shape,
)

pytestmark = pytest.mark.data


def test_lpsb_has_190_shapes_in_19_categories(shared_data):
    ds = LPSBDataset(shared_data / "lpsb", num_points=512)
    assert len(ds) == 190 and ds.categories == sorted(LPSB_CATEGORIES)
    assert all(sum(1 for it in ds.items if it[0] == c) == 10 for c in ds.categories)
    chair = LPSBDataset(shared_data / "lpsb", categories=["Chair"], num_points=512)
    s = chair[0]
    assert s.category == "Chair" and s.shape_id == "101"
    assert s.label_names == ["arm", "backsupport", "leg", "support"]
    assert s.texts == ["arm", "backrest", "leg", "seat"]
    assert (s.labels >= 0).all() and s.labels.unique().numel() == 4
    assert int(s.meta["point_face_ids"].max()) < s.meta["num_faces"] == 16998
    human = LPSBDataset(shared_data / "lpsb", categories=["Armadillo"], num_points=64)[0]
    assert "lowerArm" in human.label_names and "lower arm" in human.texts


def test_shapenetpart_cap_has_16_shapes(shared_data):
    ds = ShapeNetPartDataset(shared_data / "shapenetpart_cap", split=["test", "val"], class_choice=["Cap"],
                             num_points=2048)
    assert len(ds) == 16
    assert len(ShapeNetPartDataset(shared_data / "shapenetpart_cap", class_choice="Cap")) == 11
    s = ds[0]
    assert s.category == "Cap" and s.label_names == ["crown", "brim"] and s.meta["part_ids"] == [6, 7]
    assert s.points.shape == (2048, 3) and s.labels.unique().tolist() == [0, 1]
    assert s.points.abs().max() <= 1.0 + 1e-4  # the release is scaled into the unit cube (PyG NormalizeScale)
    with pytest.raises(ValueError, match="restrict the loader with class_choice"):
        ShapeNetPartDataset(shared_data / "shapenetpart_cap")


def test_partnet_mobility_objects(shared_data):
    ds = PartNetDataset(shared_data / "partnet_mobility")
    assert [it[0] for it in ds.items] == ["Chair", "StorageFurniture", "Keyboard"]
    s = ds[0]
    assert s.shape_id == "179" and s.num_points == 10000 and "back_soft_surface" in s.label_names
    assert (s.labels >= 0).all()
    assert ds[2].label_names == ["frame", "key"]


def test_demo_shapes_and_default_root(shared_data):
    mickey = read_shape(shared_data / "demo" / "find3d" / "mickey.pcd")
    assert mickey.num_points == 5000 and mickey.colors is not None and mickey.normals is not None
    torch.testing.assert_close(mickey.normals.norm(dim=1), torch.ones(5000), rtol=1e-3, atol=1e-3)
    penguin = read_shape(shared_data / "demo" / "satr" / "penguin.obj", num_points=1024)
    assert penguin.num_points == 1024 and penguin.meta["faces"].shape == (9258, 3)
    batch = collate_dense([build_dataset("lpsb", shared_data / "lpsb", categories=["Cup"], num_points=256)[i]
                           for i in range(2)])
    assert batch["points"].shape == (2, 256, 3) and batch["text_mask"].all()
