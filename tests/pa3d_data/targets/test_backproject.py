"""Back-projection, unseen-point fill and patch targets: references, properties and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data.targets import (
    backproject,
    bicubic_matrix,
    compute_patch_targets,
    fill_unseen,
    find3d_cameras,
    patch_targets,
    point_features,
    render_views,
)
from pa3d_layers import PatchGrouper
from pa3d_models import TinyTeacher

seeds = st.integers(0, 2**31 - 1)


def loop_backproject(features, pix2point, num_points):
    """Dense reference: upsample every view, mean over each point's pixels, then over its views."""
    num_views, dim = features.shape[:2]
    up = F.interpolate(features, size=pix2point.shape[-2:], mode="bicubic", align_corners=False)
    total = torch.zeros(num_points, dim, dtype=features.dtype)
    views = torch.zeros(num_points)
    for v in range(num_views):
        acc = torch.zeros(num_points, dim, dtype=features.dtype)
        count = torch.zeros(num_points)
        for row in range(pix2point.shape[1]):
            for col in range(pix2point.shape[2]):
                p = int(pix2point[v, row, col])
                if p >= 0:
                    acc[p] += up[v, :, row, col]
                    count[p] += 1
        hit = count > 0
        total[hit] += acc[hit] / count[hit, None]
        views[hit] += 1
    seen = views > 0
    total[seen] /= views[seen, None]
    return total, seen


def test_bicubic_matrix_is_f_interpolate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    a_h, a_w = bicubic_matrix(5, 13, dtype=torch.float64), bicubic_matrix(7, 11, dtype=torch.float64)
    ref = F.interpolate(x[None, None], size=(13, 11), mode="bicubic", align_corners=False)[0, 0]
    assert torch.allclose(a_h @ x @ a_w.T, ref)


@given(seed=seeds, h=st.integers(1, 5), w=st.integers(1, 5), size=st.integers(3, 12), num_points=st.integers(1, 20))
def test_backproject_equals_dense_reference(seed, h, w, size, num_points):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, h, w, generator=g, dtype=torch.float64)
    pix2point = torch.randint(-1, num_points, (3, size, size + 1), generator=g)
    out, seen = backproject(features, pix2point, num_points)
    ref, ref_seen = loop_backproject(features, pix2point, num_points)
    assert out.dtype == torch.float64
    assert torch.equal(seen, ref_seen)
    assert torch.allclose(out, ref)


@given(seed=seeds)
def test_constant_feature_map_gives_the_constant_on_every_seen_point(seed):
    g = torch.Generator().manual_seed(seed)
    constant = torch.randn(6, generator=g)
    features = constant.view(1, 6, 1, 1).expand(4, 6, 3, 3).contiguous()
    points = torch.rand(30, 3, generator=g)
    pix2point = torch.randint(-1, 20, (4, 16, 16), generator=g)  # points 20..29 are never seen
    feats, seen = point_features(features, pix2point, points)
    expected = F.normalize(constant, dim=0)
    assert torch.allclose(feats[seen], expected.expand(int(seen.sum()), 6), atol=1e-5)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(30), atol=1e-5)
    assert not seen[20:].any()


@given(seed=seeds, k=st.integers(1, 6))
def test_fill_touches_only_unseen_points(seed, k):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(25, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(25, 4, generator=g, dtype=torch.float64)
    seen = torch.rand(25, generator=g) < 0.5
    seen[0] = True
    feats[~seen] = 0
    out = fill_unseen(feats, points, seen, k=k)
    assert torch.equal(out[seen], feats[seen])
    seen_idx = torch.nonzero(seen).squeeze(1)
    for u in torch.nonzero(~seen).squeeze(1).tolist():  # brute force: mean of the k nearest seen
        dist = (points[seen_idx] - points[u]).norm(dim=-1)
        nearest = seen_idx[dist.argsort()[: min(k, seen_idx.numel())]]
        assert torch.allclose(out[u], feats[nearest].mean(0))


def test_a_shape_no_view_sees_is_an_error():
    with pytest.raises(ValueError, match="no view sees any point of the shape"):
        point_features(torch.randn(2, 4, 2, 2), torch.full((2, 8, 8), -1), torch.rand(10, 3))
    far_away = torch.rand(64, 3) + 50.0  # outside every view unless fitted: given renders of nothing
    images, pix2point = torch.ones(2, 3, 16, 16), torch.full((2, 16, 16), -1)
    with pytest.raises(ValueError, match="no view sees any point"):
        compute_patch_targets(far_away, TinyTeacher(4), images=images, pix2point=pix2point,
                              num_groups=4, group_size=8)


@given(seed=seeds)
def test_patch_targets_are_unit_norm_and_follow_the_grouping(seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(96, 3, generator=g)
    feats = F.normalize(torch.randn(96, 5, generator=g), dim=-1)
    out = patch_targets(points, feats, num_groups=8, group_size=12, backend="torch")
    groups = PatchGrouper(8, 12, backend="torch")(points[None])
    assert torch.equal(out.patch_idx, groups.patch_idx[0])
    assert torch.equal(out.centers, groups.centers[0])
    assert torch.allclose(out.targets.norm(dim=-1), torch.ones(8), atol=1e-5)
    for i in range(8):
        expected = F.normalize(feats[groups.patch_idx[0, i]].mean(0), dim=0)
        assert torch.allclose(out.targets[i], expected, atol=1e-6)


def test_pipeline_on_a_point_cloud_and_the_find3d_form():
    g = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(512, 3, generator=g), dim=-1) * 2 + 1  # a sphere
    teacher = TinyTeacher(8)
    out = compute_patch_targets(points, teacher, num_views=4, image_size=48, num_groups=16, group_size=16)
    assert out.centers.shape == (16, 3) and out.targets.shape == (16, 8)
    assert torch.allclose(out.targets.norm(dim=-1), torch.ones(16), atol=1e-5)
    assert (out.centers - points[:, None]).norm(dim=-1).min(0).values.max() == 0  # centres are input points
    # Given renders: the same as rendering here.
    images, pix2point = render_views(points, find3d_cameras(4), 48)
    given_renders = compute_patch_targets(points, teacher, images=images, pix2point=pix2point,
                                          num_groups=16, group_size=16)
    assert torch.allclose(given_renders.targets, out.targets)
    # Find3D form: one face per point, so pix2face and point2face = identity reproduce pix2point.
    find3d = compute_patch_targets(points, teacher, images=images, pix2face=pix2point,
                                   point2face=torch.arange(512), num_groups=16, group_size=16)
    assert torch.allclose(find3d.targets, out.targets)


def test_pipeline_bad_input():
    with pytest.raises(ValueError, match="need the images they were rendered with"):
        compute_patch_targets(torch.rand(32, 3), TinyTeacher(4), pix2point=torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="given images need pix2point, or pix2face with point2face"):
        compute_patch_targets(torch.rand(32, 3), TinyTeacher(4), images=torch.ones(1, 3, 8, 8))
    with pytest.raises(ValueError, match="vertices and faces must be given together"):
        render_views(torch.rand(32, 3), find3d_cameras(1), 8, vertices=torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"features and pix2point must have the same number of views V, got 2 and 1"):
        backproject(torch.randn(2, 3, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"pix2point must hold indices in \[-1, 3\)"):
        backproject(torch.randn(1, 3, 2, 2), torch.full((1, 4, 4), 5), 3)
    with pytest.raises(ValueError, match=r"pix2point must be \(V, H, W\) long, got dtype torch.float32"):
        backproject(torch.randn(1, 3, 2, 2), torch.zeros(1, 4, 4), 3)


def test_dense_and_sparse_accumulation_agree(monkeypatch):
    # small shapes take the dense weight matrix; large ones the sparse one: both must give the same sums
    import importlib

    bp = importlib.import_module("pa3d_data.targets.backproject")  # the module (the package re-exports a function)

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 4, 4, generator=gen, dtype=torch.float64)
    pix2point = torch.randint(-1, 20, (3, 12, 12), generator=gen)
    dense, seen_dense = bp.backproject(feats, pix2point, 20)
    monkeypatch.setattr(bp, "_DENSE_LIMIT", 0)
    sparse, seen_sparse = bp.backproject(feats, pix2point, 20)
    assert torch.equal(seen_dense, seen_sparse)
    assert torch.allclose(dense, sparse, atol=1e-12)
