"""propagate_to_points / PatchToPointPropagation."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_layers import PatchToPointPropagation, group_points, propagate_to_points
from pa3d_layers.testing import assert_constant_preserved, assert_function_matches_module

seeds = st.integers(0, 2**31 - 1)
MODES = ["nearest", "membership", "idw"]


def rand(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def setup_dense(seed: int, b: int = 2, n: int = 40, g: int = 6, k: int = 5, c: int = 3):
    points = rand(seed, b, n, 3)
    groups = group_points(points, g, k, backend="torch")
    values = rand(seed + 1, b, g, c)
    return values, points, groups


# ---------------------------------------------------------------------------------------------- hand-worked


def test_hand_worked_line():
    # centres at x=0 (value 0) and x=1 (value 1); points at 0.25 (in patch 0 only), 0.5 (both), 0.9 (none)
    centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]], dtype=torch.float64)
    points = torch.tensor([[[0.0, 0, 0], [0.25, 0, 0], [0.5, 0, 0], [0.9, 0, 0], [1.0, 0, 0]]], dtype=torch.float64)
    values = torch.tensor([[[0.0], [1.0]]], dtype=torch.float64)
    patch_idx = torch.tensor([[[0, 1, 2], [4, 2, 4]]])

    def run(mode, **kw):
        return propagate_to_points(values, points, centers, mode=mode, backend="torch", **kw)[0, :, 0]

    torch.testing.assert_close(run("nearest"), torch.tensor([0.0, 0, 0, 1, 1], dtype=torch.float64))
    # point 2 is in both patches (mean 0.5); point 3 is in none -> nearest centre (1), not label 0;
    # point 4 appears twice in patch 1 -> still 1.
    torch.testing.assert_close(
        run("membership", patch_idx=patch_idx), torch.tensor([0.0, 0, 0.5, 1, 1], dtype=torch.float64)
    )
    # idw with 2 centres on a segment is linear interpolation: w0 = 1/x, w1 = 1/(1-x) -> value x
    torch.testing.assert_close(run("idw", k=2), torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("mode", MODES)
@given(seed=seeds)
def test_constant_is_preserved(mode, seed):
    values, points, groups = setup_dense(seed)
    assert_constant_preserved(
        lambda v: propagate_to_points(
            v, points, groups.centers, patch_idx=groups.patch_idx, mode=mode, backend="torch"
        ),
        values,
    )
    const = torch.full_like(values, 0.37)
    out = propagate_to_points(const, points, groups.centers, patch_idx=groups.patch_idx, mode=mode, backend="torch")
    torch.testing.assert_close(out, torch.full((2, 40, 3), 0.37, dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_wrt_patch_values(mode):
    values, points, groups = setup_dense(3, b=2, n=20, g=4, k=4, c=2)
    values.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: propagate_to_points(
            v, points, groups.centers, patch_idx=groups.patch_idx, mode=mode, backend="torch"
        ),
        (values,),
    )


def test_gradcheck_ragged_membership():
    pos = rand(0, 50, 3)
    batch = torch.tensor([0] * 20 + [1] * 30)
    groups = group_points(pos, 3, 6, batch=batch, backend="torch")
    values = rand(1, groups.centers.shape[0], 2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: propagate_to_points(
            v, pos, groups.centers, patch_idx=groups.patch_idx, batch=batch, center_batch=groups.center_batch,
            mode="membership", backend="torch",
        ),
        (values,),
    )


@pytest.mark.parametrize("mode", MODES)
@given(seed=seeds, sizes=st.lists(st.integers(10, 30), min_size=1, max_size=3))
def test_dense_and_ragged_agree(mode, seed, sizes):
    pos = rand(seed, sum(sizes), 3)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    groups = group_points(pos, 4, 5, batch=batch, backend="torch")
    values = rand(seed + 1, groups.centers.shape[0], 2)
    out = propagate_to_points(
        values, pos, groups.centers, patch_idx=groups.patch_idx, batch=batch, center_batch=groups.center_batch,
        mode=mode, backend="torch",
    )
    assert out.shape == (sum(sizes), 2)
    start = 0
    for c, n in enumerate(sizes):
        g = groups.center_batch == c
        ref = propagate_to_points(
            values[g][None], pos[start : start + n][None], groups.centers[g][None],
            patch_idx=(groups.patch_idx[g] - start)[None], mode=mode, backend="torch",
        )[0]
        torch.testing.assert_close(out[start : start + n], ref)
        start += n


@given(seed=seeds)
def test_membership_on_covered_points_is_patch_mean(seed):
    values, points, groups = setup_dense(seed, b=1)
    out = propagate_to_points(
        values, points, groups.centers, patch_idx=groups.patch_idx, mode="membership", backend="torch"
    )[0]
    for i in range(points.shape[1]):
        hits = (groups.patch_idx[0] == i).sum(-1)
        if int(hits.sum()) == 0:
            continue
        expected = (hits.unsqueeze(1).to(values.dtype) * values[0]).sum(0) / hits.sum()
        torch.testing.assert_close(out[i], expected)


def test_idw_guard_at_zero_distance_and_nearest_of_centres():
    values, points, groups = setup_dense(4)
    out = propagate_to_points(values, points, groups.centers, mode="idw", k=3, backend="torch")
    # every centre is an input point: it gets exactly its own patch value
    got = torch.gather(out, 1, groups.center_idx.unsqueeze(-1).expand(-1, -1, 3))
    torch.testing.assert_close(got, values)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("mode", MODES)
def test_module_equals_function(mode):
    values, points, groups = setup_dense(5)
    module = PatchToPointPropagation(mode, k=2, backend="torch")
    assert_function_matches_module(
        lambda *a, **kw: propagate_to_points(*a, mode=mode, k=2, backend="torch", **kw),
        module, values, points, groups.centers, patch_idx=groups.patch_idx,
    )
    assert repr(module).startswith(f"PatchToPointPropagation(mode={mode!r}")


def test_scatter_backend_agrees_when_installed():
    pytest.importorskip("torch_scatter")
    pytest.importorskip("torch_cluster")
    values, points, groups = setup_dense(6)
    for mode in MODES:
        a = propagate_to_points(values, points, groups.centers, patch_idx=groups.patch_idx, mode=mode)
        b = propagate_to_points(
            values, points, groups.centers, patch_idx=groups.patch_idx, mode=mode, backend="torch"
        )
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- bad input


def bad_cases():
    idx = torch.zeros(2, 4, 5, dtype=torch.long)
    return [
        (dict(mode="mean"), "mode must be one of ('nearest', 'membership', 'idw'), got 'mean'"),
        (dict(mode="idw", k=0), "k must be an int >= 1, got 0"),
        (dict(mode="idw", k=5), "k must be <= the number of centres G=4 (4), got 5"),
        (dict(points=torch.rand(2, 10, 2)), "points must be (B, N, 3) float, got shape (2, 10, 2)"),
        (dict(centers=torch.rand(2, 4, 3).double()), "centers must have the dtype of points (torch.float32)"),
        (dict(centers=torch.rand(3, 4, 3), patch_values=torch.rand(3, 4, 3)),
         "centers must have the batch size of points (B=2), got shape (3, 4, 3)"),
        (dict(patch_values=torch.rand(2, 5, 3)),
         "patch_values must be (B, G, C) float with one row per centre (2, 4), got shape (2, 5, 3)"),
        (dict(points=torch.full((2, 10, 3), float("nan"))), "points must be finite, got 60 NaN/Inf value(s)"),
        (dict(mode="membership"), "patch_idx is required for mode='membership'"),
        (dict(mode="idw", eps=0.0), "eps must be a finite number > 0, got 0.0"),
        (dict(mode="idw", eps=-1e-8), "eps must be a finite number > 0, got -1e-08"),
        (dict(mode="idw", eps=float("nan")), "eps must be a finite number > 0, got nan"),
        (dict(mode="idw", eps="1e-8"), "eps must be a finite number > 0, got '1e-8'"),
        (dict(patch_values=torch.full((2, 4, 3), float("inf"))), "patch_values must be finite, got 24 NaN/Inf"),
        (dict(mode="membership", patch_idx=idx.int()), "patch_idx must be (B, G, K) long"),
        (dict(mode="membership", patch_idx=idx + 10), "patch_idx must index points in [0, 10), got values in [10, 10]"),
        (dict(batch=torch.zeros(20, dtype=torch.long)), "batch and center_batch must be given together"),
        (
            dict(points=torch.rand(10, 3), centers=torch.rand(4, 3), patch_values=torch.rand(4, 3),
                 batch=torch.tensor([0] * 5 + [1] * 5), center_batch=torch.zeros(4, dtype=torch.long)),
            "center_batch must describe the same clouds as batch (2 clouds), got 1 clouds",
        ),
        (
            dict(points=torch.rand(10, 3), centers=torch.rand(4, 3), patch_values=torch.rand(4, 3),
                 batch=torch.tensor([0] * 5 + [1] * 5), center_batch=torch.tensor([0, 0, 0, 1]), mode="idw", k=2),
            "k must be <= the number of centres in every cloud (1), got 2",
        ),
    ]


@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_bad_input(case):
    kwargs, message = bad_cases()[case]
    args = {"patch_values": torch.rand(2, 4, 3), "points": torch.rand(2, 10, 3), "centers": torch.rand(2, 4, 3),
            **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        propagate_to_points(args.pop("patch_values"), args.pop("points"), args.pop("centers"), backend="torch",
                            **args)


# ---------------------------------------------------------------------------------------------- numerics (issue 18)


@pytest.mark.parametrize("mode", MODES)
@given(seed=seeds, low=st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_on_the_torch_backend_matches_float32(mode, seed, low):
    # fp16 IDW used to give NaN (eps 1e-8 underflows) and the torch kNN has no half cdist on the CPU
    values, points, groups = setup_dense(seed, b=2, n=30, g=5, k=4, c=3)
    pts, ctr, val = points.to(low), groups.centers.to(low), values.to(low)
    out = propagate_to_points(val, pts, ctr, patch_idx=groups.patch_idx, mode=mode, backend="torch")
    assert out.dtype == low
    ref = propagate_to_points(val.double(), pts.double(), ctr.double(), patch_idx=groups.patch_idx, mode=mode,
                              backend="torch")
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


@given(seed=seeds, eps=st.floats(1e-45, 1e-8), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_idw_any_positive_eps_is_finite_and_exact_on_centres(seed, eps, dtype):
    values, points, groups = setup_dense(seed, n=30, g=5, k=4)
    values, points, centers = values.to(dtype), points.to(dtype), groups.centers.to(dtype)
    out = propagate_to_points(values, points, centers, mode="idw", k=3, eps=eps, backend="torch")
    assert bool(torch.isfinite(out).all())
    got = torch.gather(out, 1, groups.center_idx.unsqueeze(-1).expand(-1, -1, 3))
    torch.testing.assert_close(got, values, atol=1e-5, rtol=1e-5)  # other centres weigh eps / d < 1e-6


@pytest.mark.parametrize("mode", MODES)
@given(seed=seeds, exponent=st.integers(-30, 30), shift=st.booleans())
def test_every_mode_is_scale_invariant_even_for_huge_and_tiny_clouds(mode, seed, exponent, shift):
    # 1e20 coordinates overflow float32 once squared (IDW gave NaN); 1e-30 underflow
    values, points, groups = setup_dense(seed, n=30, g=5, k=4)
    values, points, centers = values.float(), points.float(), groups.centers.float()
    factor = 10.0 ** (exponent if not shift else 20 * (1 if exponent >= 0 else -1))
    eps = 1e-8 * factor
    ref = propagate_to_points(values, points, centers, patch_idx=groups.patch_idx, mode=mode, backend="torch")
    out = propagate_to_points(values, points * factor, centers * factor, patch_idx=groups.patch_idx, mode=mode,
                              eps=max(eps, 1e-45), backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_gradcheck_idw_wrt_coordinates():
    values, points, groups = setup_dense(7, b=1, n=12, g=4, k=3, c=2)
    points = (points + 0.01).requires_grad_()  # no point exactly on a centre: the weights are smooth there
    centers = groups.centers.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, c: propagate_to_points(values, p, c, mode="idw", k=3, backend="torch"), (points, centers)
    )


@pytest.mark.parametrize("mode", MODES)
@given(B=st.integers(0, 2), N=st.integers(1, 6), C=st.integers(0, 3))
def test_empty_batches_and_zero_channels(mode, B, N, C):
    # B = 0 or C = 0 used to hit an ambiguous reshape(-1) in the membership mode
    points, values = torch.rand(B, N, 3), torch.rand(B, 1, C)
    patch_idx = torch.zeros(B, 1, 2, dtype=torch.long)
    out = propagate_to_points(values, points, points[:, :1], patch_idx=patch_idx, mode=mode, k=1, backend="torch")
    assert out.shape == (B, N, C)
    torch.testing.assert_close(out, values.expand(B, N, C))  # one patch: every point takes its value
