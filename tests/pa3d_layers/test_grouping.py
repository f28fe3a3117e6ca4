"""fps, knn, group_points / PatchGrouper: hand-worked cases, references, properties and bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_layers import PatchGrouper, PatchGroups, fps, group_points, knn, num_groups_for
from pa3d_layers._backend import WITH_TORCH_CLUSTER
from pa3d_layers.testing import (
    assert_farthest_point_order,
    assert_knn_matches_brute_force,
    assert_translation_invariant,
)

seeds = st.integers(0, 2**31 - 1)


def rand_points(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


def ragged(seed: int, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    pos = rand_points(seed, sum(sizes), 3)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


# ---------------------------------------------------------------------------------------------- hand-worked


def test_fps_hand_worked_order():
    # From 0: farthest is (3,0,0) at 3; then min-dist: (1,0,0) -> 1, (0,2,0) -> 2, so (0,2,0); then (1,0,0).
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 2, 0]]])
    assert fps(pts, 4, backend="torch").tolist() == [[0, 2, 3, 1]]


def test_fps_ties_go_to_lowest_index():
    # Unit square: from corner 0, the opposite corner 3 (dist 2 squared) then corners 1 and 2 tie at 1.
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]])
    assert fps(pts, 4, backend="torch").tolist() == [[0, 3, 1, 2]]


def test_knn_hand_worked_line():
    line = torch.tensor([[[0.0], [1.0], [3.0], [7.0], [4.5]]])
    queries = torch.tensor([[[2.8], [6.0]]])
    idx, dist = knn(line, queries, 3, backend="torch", return_distances=True)
    # |2.8 - .| = 2.8, 1.8, 0.2, 4.2, 1.7 and |6 - .| = 6, 5, 3, 1, 1.5
    assert idx.tolist() == [[[2, 4, 1], [3, 4, 2]]]
    torch.testing.assert_close(dist, torch.tensor([[[0.2, 1.7, 1.8], [1.0, 1.5, 3.0]]]))


def test_group_points_hand_worked():
    # Two clusters on a line: FPS from 0 picks 0 then the far end 5; each patch is its cluster.
    pts = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [0.3, 0, 0], [5.0, 0, 0], [5.2, 0, 0], [5.5, 0, 0]]])
    g = group_points(pts, 2, 3, backend="torch")
    assert g.center_idx.tolist() == [[0, 5]]
    assert g.patch_idx.tolist() == [[[0, 1, 2], [5, 4, 3]]]
    torch.testing.assert_close(g.neighborhoods[0, 1, :, 0], torch.tensor([0.0, -0.3, -0.5]))


# ---------------------------------------------------------------------------------------------- properties


@given(seed=seeds, b=st.integers(1, 3), n=st.integers(1, 40), data=st.data())
def test_fps_distinct_and_farthest(seed, b, n, data):
    s = data.draw(st.integers(1, n))
    pts = rand_points(seed, b, n, 3)
    idx = fps(pts, s, backend="torch")
    assert idx.shape == (b, s) and idx.dtype == torch.long
    assert_farthest_point_order(pts, idx)


@given(seed=seeds, b=st.integers(1, 3), n=st.integers(1, 40), m=st.integers(1, 10), data=st.data())
def test_knn_equals_brute_force(seed, b, n, m, data):
    k = data.draw(st.integers(1, n))
    x, y = rand_points(seed, b, n, 3), rand_points(seed + 1, b, m, 3)
    idx = knn(x, y, k, backend="torch")
    assert idx.shape == (b, m, k)
    assert_knn_matches_brute_force(x, y, idx)


@given(seed=seeds, sizes=st.lists(st.integers(8, 30), min_size=1, max_size=4))
def test_dense_and_ragged_agree(seed, sizes):
    pos, batch = ragged(seed, sizes)
    r = group_points(pos, 4, 8, batch=batch, backend="torch")
    assert r.center_batch.tolist() == torch.arange(len(sizes)).repeat_interleave(4).tolist()
    start = 0
    for c, n in enumerate(sizes):
        d = group_points(pos[start : start + n][None], 4, 8, backend="torch")
        assert torch.equal(r.center_idx[4 * c : 4 * c + 4], d.center_idx[0] + start)
        assert torch.equal(r.patch_idx[4 * c : 4 * c + 4], d.patch_idx[0] + start)
        torch.testing.assert_close(r.neighborhoods[4 * c : 4 * c + 4], d.neighborhoods[0])
        start += n


@given(seed=seeds, sizes=st.lists(st.integers(3, 30), min_size=1, max_size=4), k=st.integers(1, 3))
def test_knn_ragged_matches_per_cloud(seed, sizes, k):
    x, bx = ragged(seed, sizes)
    y, by = ragged(seed + 7, [max(1, s // 3) for s in sizes])
    idx = knn(x, y, k, batch_x=bx, batch_y=by, backend="torch")
    assert idx.shape == (y.shape[0], k)
    assert bool((bx[idx] == by.unsqueeze(1)).all()), "a query found a point of another cloud"
    sx, sy = 0, 0
    for c, n in enumerate(sizes):
        m = int((by == c).sum())
        ref = knn(x[sx : sx + n][None], y[sy : sy + m][None], k, backend="torch")[0] + sx
        assert torch.equal(idx[sy : sy + m], ref)
        sx, sy = sx + n, sy + m


@given(seed=seeds, n=st.integers(8, 60), g=st.integers(1, 8), k=st.integers(1, 8))
def test_patch_contains_its_centre_first(seed, n, g, k):
    pts = rand_points(seed, 2, n, 3)
    out = group_points(pts, g, k, backend="torch")
    assert torch.equal(out.patch_idx[..., 0], out.center_idx)
    assert torch.equal(out.neighborhoods[..., 0, :], torch.zeros_like(out.neighborhoods[..., 0, :]))
    centers = torch.gather(pts, 1, out.center_idx.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(out.centers, centers)
    # nearest first
    d = out.neighborhoods.norm(dim=-1)
    assert bool((d[..., 1:] >= d[..., :-1]).all())


def test_duplicate_points_still_hold_their_centre():
    pts = torch.zeros(1, 10, 3, dtype=torch.float64)
    pts[0, 5:] = 1.0
    out = group_points(pts, 2, 4, backend="torch")
    assert torch.equal(out.patch_idx[..., 0], out.center_idx)
    for g in range(2):
        assert len(set(out.patch_idx[0, g].tolist())) == 4


@given(seed=seeds, shift=st.tuples(*[st.floats(-5, 5)] * 3))
def test_neighborhoods_translation_invariant(seed, shift):
    pts = rand_points(seed, 2, 50, 3)
    assert_translation_invariant(
        lambda p: group_points(p, 8, 6, backend="torch").neighborhoods, pts, torch.tensor(shift, dtype=pts.dtype)
    )
    a = group_points(pts, 8, 6, backend="torch").patch_idx
    b = group_points(pts + torch.tensor(shift, dtype=pts.dtype), 8, 6, backend="torch").patch_idx
    assert torch.equal(a, b)


def test_neighborhoods_carry_gradient_to_points():
    pts = rand_points(0, 1, 40, 3).requires_grad_()
    group_points(pts, 4, 5, backend="torch").neighborhoods.pow(2).sum().backward()
    assert pts.grad is not None and bool(pts.grad.abs().sum() > 0)


def test_random_start_uses_generator():
    pts = rand_points(0, 3, 50, 3)
    a = fps(pts, 5, random_start=True, backend="torch", generator=torch.Generator().manual_seed(1))
    b = fps(pts, 5, random_start=True, backend="torch", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert_farthest_point_order(pts, a)


def test_fps_ragged_per_cloud_counts():
    pos, batch = ragged(3, [10, 20, 5])
    idx = fps(pos, [2, 7, 5], batch=batch, backend="torch")
    assert torch.bincount(batch[idx]).tolist() == [2, 7, 5]
    assert_farthest_point_order(pos, idx, batch=batch)


# ---------------------------------------------------------------------------------------------- adaptive G


def test_num_groups_for_keeps_paper_coverage():
    assert num_groups_for(2048, 32) == 128
    assert num_groups_for(4096, 32) == 256
    assert num_groups_for(2048, 32, coverage=1.0) == 64
    assert num_groups_for(10, 32) == 1
    assert num_groups_for(100_000, 32, max_groups=512) == 512


def test_adaptive_grouper_scales_with_cloud_size():
    grouper = PatchGrouper(None, 8, backend="torch")
    pos, batch = ragged(1, [64, 256])
    out = grouper(pos, batch)
    assert torch.bincount(out.center_batch).tolist() == [16, 64]  # coverage 2: G = 2 N / K
    dense = grouper(rand_points(1, 2, 128, 3))
    assert dense.centers.shape == (2, 32, 3)
    assert "coverage=2.0" in repr(grouper)


def test_accepts_pyg_batch():
    pyg = pytest.importorskip("torch_geometric.data")
    data = [pyg.Data(pos=rand_points(s, n, 3)) for s, n in ((0, 30), (1, 50))]
    b = pyg.Batch.from_data_list(data)
    out = PatchGrouper(4, 8, backend="torch")(b)
    ref = group_points(b.pos, 4, 8, batch=b.batch, backend="torch")
    assert torch.equal(out.patch_idx, ref.patch_idx)
    single = PatchGrouper(4, 8, backend="torch")(data[0])
    assert torch.equal(single.patch_idx, group_points(data[0].pos[None], 4, 8, backend="torch").patch_idx[0])


def test_features_are_gathered():
    pts = rand_points(0, 2, 30, 3)
    feats = torch.arange(60.0).view(2, 30, 1)
    out = group_points(pts, 4, 5, feats=feats, backend="torch")
    assert torch.equal(out.features[..., 0], out.patch_idx.to(feats.dtype) + torch.tensor([0.0, 30.0]).view(2, 1, 1))
    assert isinstance(out, PatchGroups) and out.center_batch is None


def test_module_equals_function_and_repr():
    pts = rand_points(0, 2, 64, 3)
    m = PatchGrouper(8, 4, backend="torch")
    assert torch.equal(m(pts).patch_idx, group_points(pts, 8, 4, backend="torch").patch_idx)
    assert repr(m) == "PatchGrouper(num_groups=8, group_size=4, backend='torch')"
    assert len(list(m.parameters())) == 0


# ---------------------------------------------------------------------------------------------- torch-cluster


@pytest.mark.parametrize("sizes", [[50], [17, 64, 33]])
def test_fps_cluster_equals_torch(sizes):
    pytest.importorskip("torch_cluster")
    pos, batch = ragged(5, sizes)
    for s in (1, 5, 17):
        a = fps(pos, s, batch=batch, backend="torch")
        b = fps(pos, s, batch=batch, backend="cluster")
        assert torch.equal(a, b)
    dense = rand_points(2, 3, 40, 3)
    assert torch.equal(fps(dense, 13, backend="torch"), fps(dense, 13, backend="cluster"))
    assert torch.equal(fps(dense, 40, backend="torch"), fps(dense, 40, backend="cluster"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_and_grouping_cluster_equals_torch(dtype):
    pytest.importorskip("torch_cluster")
    pos, batch = ragged(6, [40, 70, 25])
    pos = pos.to(dtype)
    a = group_points(pos, 6, 9, batch=batch, backend="torch")
    b = group_points(pos, 6, 9, batch=batch, backend="cluster")
    assert torch.equal(a.patch_idx, b.patch_idx) and torch.equal(a.center_idx, b.center_idx)
    dense = rand_points(3, 2, 80, 3).to(dtype)
    q = rand_points(4, 2, 11, 3).to(dtype)
    assert torch.equal(knn(dense, q, 7, backend="torch"), knn(dense, q, 7, backend="cluster"))


@given(seed=seeds, sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), data=st.data())
def test_fps_and_knn_cluster_equal_torch_property(seed, sizes, data):
    pytest.importorskip("torch_cluster")
    pos, batch = ragged(seed, sizes)
    s = data.draw(st.integers(1, min(sizes)))
    assert torch.equal(fps(pos, s, batch=batch, backend="torch"), fps(pos, s, batch=batch, backend="cluster"))
    k = data.draw(st.integers(1, min(sizes)))
    y, by = ragged(seed + 1, [max(1, n // 2) for n in sizes])
    a = knn(pos, y, k, batch_x=batch, batch_y=by, backend="torch")
    b = knn(pos, y, k, batch_x=batch, batch_y=by, backend="cluster")
    assert torch.equal(a, b)
    assert_knn_matches_brute_force(pos, y, b, batch_x=batch, batch_y=by)


def test_auto_backend_warns_once_without_extension(monkeypatch):
    from pa3d_layers import _backend

    monkeypatch.setattr(_backend, "WITH_TORCH_CLUSTER", False)
    monkeypatch.setattr(_backend, "_warned", set())
    with pytest.warns(UserWarning, match="torch-cluster is not installed"):
        knn(rand_points(0, 1, 5, 3), rand_points(1, 1, 2, 3), 2)
    with pytest.raises(ValueError, match=re.escape("backend='cluster' for fps needs torch-cluster")):
        fps(rand_points(0, 1, 5, 3), 2, backend="cluster")


def test_auto_picks_the_measured_faster_backend(monkeypatch):
    from pa3d_layers import _backend

    monkeypatch.setattr(_backend, "WITH_TORCH_CLUSTER", True)
    assert _backend.resolve_backend("auto", "cluster", "fps") == "torch"  # faster in every measured size
    assert _backend.resolve_backend("auto", "cluster", "knn") == "cluster"
    assert _backend.resolve_backend("cluster", "cluster", "fps") == "cluster"  # an explicit choice is kept


@pytest.mark.skipif(not WITH_TORCH_CLUSTER, reason="torch-cluster not installed")
def test_auto_uses_cluster_when_installed():
    pts = rand_points(0, 2, 30, 3)
    assert torch.equal(fps(pts, 6), fps(pts, 6, backend="torch"))


# ---------------------------------------------------------------------------------------------- bad input

BAD_GROUP = [
    (dict(points=torch.rand(2, 3, 64)), "points must be (B, N, 3) float, got shape (2, 3, 64)"),
    (dict(points=torch.rand(64, 3)), "points must be (B, N, 3) float, got shape (64, 3)"),
    (dict(points=torch.ones(2, 64, 3, dtype=torch.long)), "points must be (B, N, 3) float, got dtype torch.int64"),
    (dict(points=torch.full((1, 64, 3), float("nan"))), "points must be finite, got 192 NaN/Inf value(s)"),
    (dict(points=torch.rand(1, 16, 3)), "points must have at least group_size=32 points per cloud, got N=16"),
    (dict(points=torch.rand(1, 64, 3), num_groups=65), "num_groups must be <= the number of points N=64, got 65"),
    (dict(points=torch.rand(1, 64, 3), num_groups=0), "num_groups must be an int >= 1, got 0"),
    (dict(points=torch.rand(1, 64, 3), group_size=0), "group_size must be an int >= 1, got 0"),
    (
        dict(points=torch.rand(70, 3), batch=torch.tensor([0] * 40 + [1] * 30)),
        "points must have at least group_size=32 points per cloud, got 30 in cloud 1",
    ),
    (
        dict(points=torch.rand(70, 3), batch=torch.tensor([0] * 40 + [2] * 30)),
        "batch skips a cloud index: every cloud in [0, B) must have at least one point",
    ),
    (
        dict(points=torch.rand(70, 3), batch=torch.zeros(60, dtype=torch.long)),
        "batch must have one entry per point (70), got 60",
    ),
    (
        dict(points=torch.rand(70, 3), batch=torch.tensor([1] * 40 + [0] * 30)),
        "batch must be sorted (points of one cloud contiguous, as in PyG)",
    ),
    (
        dict(points=torch.rand(70, 3), batch=torch.zeros(70, dtype=torch.long), num_groups=71),
        "num_groups must be <= the number of points in each cloud, got 71 but cloud 0 has 70 points",
    ),
    (
        dict(points=torch.rand(1, 64, 3), feats=torch.rand(1, 60, 2)),
        "feats must have one row per point (1, 64) + (C,), got (1, 60, 2)",
    ),
]


@pytest.mark.parametrize("kwargs, message", BAD_GROUP)
def test_group_points_bad_input(kwargs, message):
    kwargs = dict(kwargs)
    points = kwargs.pop("points")
    with pytest.raises(ValueError, match=re.escape(message)):
        group_points(points, **{"num_groups": 4, **kwargs}, backend="torch")


BAD_KNN = [
    (dict(k=0), "k must be an int >= 1, got 0"),
    (dict(k=11), "k must be <= the number of points N=10 of x, got 11"),
    (dict(y=torch.rand(2, 4, 2)), "y must have the same last dim F as x (3), got shape (2, 4, 2)"),
    (dict(y=torch.rand(3, 4, 3)), "y must have the batch size of x (B=2), got shape (3, 4, 3)"),
    (dict(x=torch.rand(10, 3)), "x must be (B, N, F) float, got shape (10, 3)"),
    (dict(y=torch.rand(2, 4, 3).double()), "y must have the dtype of x (torch.float32), got torch.float64"),
    (dict(batch_x=torch.zeros(20, dtype=torch.long)), "batch_x and batch_y must be given together"),
    (
        dict(x=torch.rand(20, 3), y=torch.rand(4, 3), batch_x=torch.tensor([0] * 10 + [1] * 10),
             batch_y=torch.zeros(4, dtype=torch.long)),
        "batch_y must describe the same clouds as batch_x (2 clouds), got 1 clouds",
    ),
    (
        dict(x=torch.rand(20, 3), y=torch.rand(4, 3), batch_x=torch.tensor([0] * 17 + [1] * 3),
             batch_y=torch.tensor([0, 0, 1, 1]), k=4),
        "k must be <= the number of points in every cloud of x, got 4 but cloud 1 has 3 points",
    ),
]


@pytest.mark.parametrize("kwargs, message", BAD_KNN)
def test_knn_bad_input(kwargs, message):
    args = {"x": torch.rand(2, 10, 3), "y": torch.rand(2, 4, 3), "k": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        knn(args.pop("x"), args.pop("y"), args.pop("k"), backend="torch", **args)


BAD_FPS = [
    (dict(num_samples=0), "num_samples must be an int >= 1, got 0"),
    (dict(num_samples=11), "num_samples must be <= the number of points N=10, got 11"),
    (dict(points=torch.rand(2, 10, 3).int()), "points must be (B, N, F) float, got dtype torch.int32"),
    (
        dict(points=torch.tensor([[[0.0, 0, float("inf")]]]), num_samples=1),
        "points must be finite, got 1 NaN/Inf value(s)",
    ),
    (
        dict(points=torch.rand(15, 3), batch=torch.tensor([0] * 10 + [1] * 5), num_samples=6),
        "num_samples must be <= the number of points in each cloud, got 6 for cloud 1 which has 5 points",
    ),
    (
        dict(points=torch.rand(15, 3), batch=torch.tensor([0] * 10 + [1] * 5), num_samples=[3]),
        "num_samples must have one entry per cloud (2), got 1",
    ),
]


@pytest.mark.parametrize("kwargs, message", BAD_FPS)
def test_fps_bad_input(kwargs, message):
    args = {"points": torch.rand(2, 10, 3), "num_samples": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        fps(args.pop("points"), args.pop("num_samples"), backend="torch", **args)


def test_pyg_data_without_pos():
    pyg = pytest.importorskip("torch_geometric.data")
    with pytest.raises(ValueError, match="points is a torch_geometric Data/Batch without pos"):
        group_points(pyg.Data(x=torch.rand(4, 3)), 1, 1)


@pytest.mark.slow
def test_torch_knn_memory_is_bounded():
    # 100k points, batch 32, 128 queries each: the distance block is chunked, so the peak stays under 2 GB.
    code = (
        "import resource, torch; from pa3d_layers import knn; "
        "x = torch.rand(32, 100_000, 3); y = x[:, :128].clone(); "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "idx = knn(x, y, 32, backend='torch'); "
        "assert torch.equal(idx[..., 0], torch.arange(128).expand(32, -1)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) * 1024 < 2 * 2**30


# ---------------------------------------------------------------------------------------------- numerics (issue 18)

BACKENDS = ["torch"] + (["cluster"] if WITH_TORCH_CLUSTER else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_points_group_like_their_float32_values(backend, dtype):
    pts = rand_points(0, 2, 200, 3).to(dtype)
    exact = pts.float()  # the same (rounded) coordinates
    assert torch.equal(fps(pts, 16, backend=backend), fps(exact, 16, backend=backend))
    assert torch.equal(knn(pts, pts[:, :5], 4, backend=backend), knn(exact, exact[:, :5], 4, backend=backend))
    g, ref = group_points(pts, 16, 8, backend=backend), group_points(exact, 16, 8, backend=backend)
    assert torch.equal(g.patch_idx, ref.patch_idx) and g.neighborhoods.dtype == dtype
    idx, dist = knn(pts, pts[:, :5], 4, backend=backend, return_distances=True)
    assert dist.dtype == dtype and torch.equal(dist[..., 0], torch.zeros_like(dist[..., 0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_results(backend):
    assert fps(torch.zeros(0, 10, 3), 1, backend=backend).shape == (0, 1)
    assert knn(torch.zeros(0, 10, 3), torch.zeros(0, 4, 3), 2, backend=backend).shape == (0, 4, 2)
    g = group_points(torch.zeros(0, 300, 3), 16, 8, backend=backend)
    assert g.centers.shape == (0, 16, 3) and g.neighborhoods.shape == (0, 16, 8, 3)
    assert g.patch_idx.shape == (0, 16, 8) and g.center_idx.shape == (0, 16)


@given(seed=seeds, e=st.integers(-100, 100), n=st.integers(8, 60))
def test_grouping_is_exact_under_power_of_two_scaling(seed, e, n):
    # Huge (2**100 ~ 1e30) and tiny (2**-100) clouds: squared distances would overflow / underflow float32;
    # scaling by a power of two is exact, so the patches must be the very same.
    pts = rand_points(seed, 2, n, 3, dtype=torch.float32)
    ref = group_points(pts, min(6, n), min(5, n), backend="torch")
    out = group_points(pts * 2.0**e, min(6, n), min(5, n), backend="torch")
    assert torch.equal(out.center_idx, ref.center_idx) and torch.equal(out.patch_idx, ref.patch_idx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_coordinates_find_the_true_neighbours(backend):
    # 1e20: squared differences overflow float32 (max 3.4e38) without the per-cloud scaling.
    base = rand_points(3, 1, 64, 3)
    pts = (base * 1e20).float()
    idx = knn(pts, pts[:, :8], 5, backend=backend)
    assert_knn_matches_brute_force(pts.double(), pts[:, :8].double(), idx)
    assert_farthest_point_order(pts.double(), fps(pts, 10, backend=backend), atol=1e26)
    ragged_idx = knn(pts[0], pts[0, :8], 5, batch_x=torch.zeros(64, dtype=torch.long),
                     batch_y=torch.zeros(8, dtype=torch.long), backend=backend)
    assert torch.equal(ragged_idx, idx[0])
    _, dist = knn(pts, pts[:, :8], 5, backend=backend, return_distances=True)
    assert bool(torch.isfinite(dist).all()) and float(dist.max()) > 1e19


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_groups=None, max_groups=0), "max_groups must be an int >= 1, got 0"),
        (dict(num_groups=4, max_groups=-2), "max_groups must be an int >= 1, got -2"),
        (dict(num_groups=None, coverage=0.0), "coverage must be a finite number > 0, got 0.0"),
    ],
)
def test_group_bounds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        group_points(rand_points(0, 1, 64, 3), group_size=8, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        PatchGrouper(kwargs["num_groups"], 8, **{k: v for k, v in kwargs.items() if k != "num_groups"})
    if kwargs["num_groups"] is None:
        with pytest.raises(ValueError, match=re.escape(message)):
            num_groups_for(64, 8, **{k: v for k, v in kwargs.items() if k != "num_groups"})


@given(seed=seeds, n=st.integers(2, 40), m=st.integers(1, 6), data=st.data())
def test_knn_ties_come_in_index_order(seed, n, m, data):
    # Integer grids: many equal distances. Each query's neighbours are sorted by (distance, index).
    k = data.draw(st.integers(1, n))
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (2, n, 3), generator=g).double()
    y = torch.randint(0, 3, (2, m, 3), generator=g).double()
    for backend in BACKENDS:
        idx = knn(x, y, k, backend=backend)
        near = torch.gather(x, 1, idx.reshape(2, -1, 1).expand(-1, -1, 3)).view(2, m, k, 3)
        d = (near - y.unsqueeze(2)).square().sum(-1)
        key = d * (n + 1) + idx  # exact in float64 for these small integers
        assert bool((key[..., 1:] > key[..., :-1]).all()), f"{backend}: not (distance, index) ordered"
        assert_knn_matches_brute_force(x, y, idx)


def test_identical_points_come_in_index_order_on_every_backend():
    pts = torch.zeros(1, 12, 3)
    pts[0, 6:] = 1.0
    for backend in BACKENDS:
        idx = knn(pts, pts[:, [0, 6]], 6, backend=backend)
        assert idx.tolist() == [[[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]], backend


@given(seed=seeds, b=st.integers(1, 5), n=st.integers(2, 40), data=st.data())
def test_chunked_fps_equals_one_chunk(seed, b, n, data):
    # The eager loop runs clouds in chunks under ATen's grain size; any chunking gives the same picks.
    import pa3d_layers.grouping as grouping

    s = data.draw(st.integers(1, n))
    grain = data.draw(st.integers(1, 4 * n))
    pts = rand_points(seed, b, n, 3)
    whole = fps(pts, s, backend="torch")
    old = grouping._GRAIN_SIZE
    grouping._GRAIN_SIZE = grain
    try:
        chunked = fps(pts, s, backend="torch")
    finally:
        grouping._GRAIN_SIZE = old
    assert torch.equal(chunked, whole)
    assert_farthest_point_order(pts, chunked)
