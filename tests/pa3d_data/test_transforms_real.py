"""Augmentation for real meshes: SO(3) and up-axis rotations, the composed default, the name registry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_data import (
    AUGMENTATIONS,
    PartSample,
    RandomAxisRotation,
    RandomSO3Rotation,
    axis_rotation_matrix,
    build_augmentation,
    euler_rotation_matrix,
    random_rotation_matrix,
    real_mesh_augmentation,
)


def _dist(p: torch.Tensor) -> torch.Tensor:
    return (p[:, None] - p[None]).norm(dim=-1)  # exact pairwise distances (cdist's matmul form is not)


def _sample(n: int, seed: int, *, normals: bool = True) -> PartSample:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g) * 2 - 1
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) if normals else None
    labels = torch.randint(-1, 3, (n,), generator=g)
    return PartSample(pts, labels, ["a", "b", "c"], "cat", "0", normals=nrm)


@given(seed=st.integers(0, 2**31 - 1))
def test_random_rotation_matrix_is_a_proper_rotation(seed):
    r = random_rotation_matrix(torch.Generator().manual_seed(seed))
    assert r.dtype == torch.float64 and r.shape == (3, 3)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(r).item() == pytest.approx(1.0, abs=1e-12)


def test_random_rotation_is_uniform_on_the_sphere():
    # Haar-uniform rotations send a fixed axis to a uniform direction: its z coordinate is uniform in [-1, 1]
    # (Archimedes) and the mean rotation is the zero matrix.
    g = torch.Generator().manual_seed(0)
    rs = torch.stack([random_rotation_matrix(g) for _ in range(4000)])
    z = rs[:, 2, 0].sort().values
    uniform = torch.linspace(-1, 1, z.numel(), dtype=torch.float64)
    assert (z - uniform).abs().max() < 0.06  # Kolmogorov-Smirnov distance, scaled to [-1, 1]
    assert rs.mean(0).abs().max() < 0.05
    # an Euler draw within +-20 degrees (the official augmentation) is far from uniform: the test can tell
    eul = torch.stack([euler_rotation_matrix((torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 0.7)
                       for _ in range(500)])
    assert eul.mean(0).diagonal().min() > 0.8


@given(axis=st.sampled_from("xyz"), angle=st.floats(-math.pi, math.pi, allow_nan=False))
def test_axis_rotation_matches_euler_convention(axis, angle):
    angles = torch.zeros(3, dtype=torch.float64)
    angles["xyz".index(axis)] = angle
    assert torch.allclose(axis_rotation_matrix(axis, angle), euler_rotation_matrix(angles), atol=1e-12)


@given(n=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_so3_rotation_is_rigid_and_keeps_labels(n, seed):
    s = _sample(n, seed)
    out = RandomSO3Rotation()(s, generator=torch.Generator().manual_seed(seed))
    assert out.points.shape == s.points.shape and out.points.dtype == s.points.dtype
    assert torch.equal(out.labels, s.labels)
    assert torch.allclose(_dist(out.points), _dist(s.points), atol=1e-5)
    # normals turn with the points: point-normal inner products and unit length are kept
    assert torch.allclose((out.points * out.normals).sum(1), (s.points * s.normals).sum(1), atol=1e-5)
    assert torch.allclose(out.normals.norm(dim=1), torch.ones(n), atol=1e-5)


@given(n=st.integers(1, 40), seed=st.integers(0, 10_000), axis=st.sampled_from("xyz"),
       max_degrees=st.floats(0, 180))
def test_axis_rotation_keeps_the_axis_coordinate_and_bounds_the_angle(n, seed, axis, max_degrees):
    s = _sample(n, seed)
    t = RandomAxisRotation(axis, max_degrees)
    out = t(s, generator=torch.Generator().manual_seed(seed))
    k = "xyz".index(axis)
    assert torch.allclose(out.points[:, k], s.points[:, k], atol=1e-6)
    # the angle between the projections on the plane stays within max_degrees
    i, j = (k + 1) % 3, (k + 2) % 3
    before = torch.atan2(s.points[:, j], s.points[:, i])
    after = torch.atan2(out.points[:, j], out.points[:, i])
    radius = s.points[:, [i, j]].norm(dim=1)
    diff = torch.remainder(after - before + math.pi, 2 * math.pi) - math.pi
    ok = radius > 1e-3
    assert (diff[ok].abs() <= math.radians(max_degrees) + 1e-3).all()


@given(n=st.integers(2, 40), seed=st.integers(0, 10_000), rotation=st.sampled_from(["so3", "up", "none"]))
def test_real_mesh_augmentation_bounds_and_determinism(n, seed, rotation):
    s = _sample(n, seed)
    t = real_mesh_augmentation(rotation, scale=(0.8, 1.2), jitter=0.01, clip=0.03)
    a = t(s, generator=torch.Generator().manual_seed(seed))
    b = t(s, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a.points, b.points)
    assert torch.equal(a.labels, s.labels) and a.num_points == s.num_points
    # distances scale by at most 1.2 and at least 0.8, up to twice the jitter clip
    slack = 2 * 0.03 * math.sqrt(3) + 1e-5
    d0, d1 = _dist(s.points), _dist(a.points)
    assert (d1 <= 1.2 * d0 + slack).all() and (d1 >= 0.8 * d0 - slack).all()


def test_real_mesh_augmentation_none_rotation_only_scales_and_jitters():
    s = _sample(50, 0)
    out = real_mesh_augmentation("none", scale=(2.0, 2.0), jitter=0.0, clip=0.0)(s)
    assert torch.allclose(out.points, 2 * s.points)


def test_build_augmentation_names():
    assert build_augmentation(None) is None and build_augmentation("none") is None and build_augmentation(False) is None
    assert repr(build_augmentation(True)) == repr(AUGMENTATIONS["official"]())
    for name in AUGMENTATIONS:
        if name != "none":
            out = build_augmentation(name)(_sample(8, 1), generator=torch.Generator().manual_seed(0))
            assert out.num_points == 8


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_augmentation("rotate"), r"augmentation must be one of .*'real'.* got 'rotate'"),
        (lambda: real_mesh_augmentation("euler"), r"rotation must be one of \['none', 'so3', 'up'\], got 'euler'"),
        (lambda: RandomAxisRotation("w"), r"axis must be 'x', 'y' or 'z', got 'w'"),
        (lambda: RandomAxisRotation("z", 270), r"max_degrees must be in \[0, 180\], got 270"),
        (lambda: axis_rotation_matrix("q", 0.0), r"axis must be 'x', 'y' or 'z', got 'q'"),
    ],
)
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
