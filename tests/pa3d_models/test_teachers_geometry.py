"""The weight-free geometry teacher: shapes, equivariance, standardisation, informative Stage-1 targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pa3d_models import GeometryTeacher, Teacher, build_teacher, geometry_features, resolve_teacher_name
from pa3d_models.teachers import _gaussian_blur


def _box_image(size: int, top: int, left: int, h: int, w: int, shade: float = 0.5) -> torch.Tensor:
    img = torch.ones(1, 3, size, size)
    img[..., top:top + h, left:left + w] = shade
    return img


def test_shapes_protocol_and_background():
    img = _box_image(32, 8, 10, 12, 6)
    t = GeometryTeacher(patch_size=4)
    out = t(img)
    assert isinstance(t, Teacher) and t.feature_dim == 30 and t.name == "geometry" and not t.pretrained
    assert out.shape == (1, 30, 8, 8) and out.dtype == torch.float32
    full = geometry_features(img)
    assert full.shape == (1, 30, 32, 32)
    assert full[..., :4, :].abs().max() == 0 and full[..., :, :4].abs().max() == 0  # background is zero
    assert torch.allclose(out, F.avg_pool2d(full, 4))


@given(dy=st.integers(-4, 4), dx=st.integers(-4, 4), h=st.integers(3, 10), w=st.integers(3, 10))
def test_features_move_with_the_shape(dy, dx, h, w):
    # translation equivariance away from the border: the same shape shifted gives shifted features
    a = geometry_features(_box_image(48, 16, 16, h, w), (0.03, 0.06))
    b = geometry_features(_box_image(48, 16 + dy, 16 + dx, h, w), (0.03, 0.06))
    assert torch.allclose(torch.roll(a, (dy, dx), dims=(2, 3)), b, atol=1e-4)


@given(seed=st.integers(0, 1000), views=st.integers(1, 3))
def test_each_channel_is_standardised_over_the_surface(seed, views):
    g = torch.Generator().manual_seed(seed)
    img = torch.ones(views, 3, 32, 32)
    for v in range(views):
        top, left = torch.randint(2, 12, (2,), generator=g).tolist()
        img[v, :, top:top + 14, left:left + 10] = 0.3 + 0.4 * torch.rand(14, 10, generator=g)
    f = geometry_features(img, (0.05, 0.1))
    mask = img.mean(1) < 0.99
    for v in range(views):
        vals = f[v][:, mask[v]]
        assert torch.allclose(vals.mean(1), torch.zeros(12), atol=1e-4)
        std = vals.std(1, unbiased=False)
        assert ((std - 1).abs() < 1e-3).logical_or(std < 1e-3).all()


@given(sigma=st.floats(0.5, 3.0), seed=st.integers(0, 1000))
def test_blur_equals_a_2d_convolution_with_the_outer_kernel(sigma, seed):
    x = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    ref = F.conv2d(x, torch.outer(k, k).expand(2, 1, -1, -1), padding=radius, groups=2)
    assert torch.allclose(_gaussian_blur(x, sigma), ref, atol=1e-12)


def test_thin_parts_and_thick_parts_get_different_features():
    # a thick block with a thin limb: the coarse fill fraction separates them, so their features differ
    img = torch.ones(1, 3, 64, 64)
    img[..., 10:40, 10:40] = 0.5  # body
    img[..., 40:60, 22:26] = 0.5  # leg
    f = geometry_features(img)
    body, leg = f[0, :, 25, 25], f[0, :, 55, 24]
    assert F.cosine_similarity(body, leg, dim=0) < 0.0


def test_stage1_targets_from_the_geometry_teacher_carry_part_information():
    from pa3d_data import SYNTHETIC_PART_NAMES, synthetic_shape
    from pa3d_data.targets import compute_patch_targets
    from pa3d_layers import knn

    pts, labels = synthetic_shape("chair", np.random.default_rng(0), 1024)
    pts, labels = torch.from_numpy(pts), torch.from_numpy(labels)
    out = compute_patch_targets(pts, GeometryTeacher(), num_views=4, image_size=64, num_groups=32, group_size=16)
    tgt = F.normalize(out.targets, dim=1)
    cos = tgt @ tgt.T
    off = ~torch.eye(len(tgt), dtype=torch.bool)
    assert cos[off].mean() < 0.5  # not nearly collinear (a random-weight DINOv2 gives ~0.97)
    nearest = knn(pts[None], out.centers[None].to(pts), 1)[0, :, 0]
    part = labels[nearest]
    same = (part[:, None] == part[None]) & off
    assert len(SYNTHETIC_PART_NAMES["chair"]) > 1 and same.any()
    assert cos[same].mean() > cos[~same & off].mean() + 0.1  # patches of one part look alike


def test_auto_resolves_to_geometry_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PA3D_WEIGHTS", str(tmp_path))
    assert resolve_teacher_name("auto") == "geometry"
    assert resolve_teacher_name("auto", tmp_path / "w.safetensors") == "dinov2_vits14"
    assert resolve_teacher_name("dinov2_vitb14") == "dinov2_vitb14"
    assert isinstance(build_teacher("auto"), GeometryTeacher)
    assert isinstance(build_teacher("geometry"), GeometryTeacher)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scales": ()}, r"scales must be positive fractions of the image height, got \(\)"),
     ({"scales": (0.1, -1.0)}, r"scales must be positive fractions"),
     ({"patch_size": 0}, r"patch_size must be >= 1, got 0")],
)
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GeometryTeacher(**kwargs)


def test_bad_images_name_the_argument():
    with pytest.raises(ValueError, match=r"images must be \(V, 3, H, W\) float"):
        geometry_features(torch.ones(1, 1, 8, 8))
