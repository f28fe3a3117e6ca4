"""Patch grouping: farthest point sampling, k-nearest neighbours and the patch grouper built on them.

A cloud is cut into G patches: G centres chosen by farthest point sampling (FPS), each with its K nearest
points. torch-cluster runs FPS and kNN when it is installed; the pure-PyTorch references here run
everywhere (``backend="torch"``) and tests hold the two equal.

Two layouts are accepted everywhere: dense ``points (B, N, 3)`` where every cloud has N points, and ragged
PyG ``(pos (P, 3), batch (P,))`` where clouds of different sizes are stacked.

Dimensions: B batch, N points, P stacked points, G patches, Q stacked patches, K points per patch,
S samples, M queries, F coordinates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._backend import WITH_TORCH_CLUSTER, resolve_backend
from ._checks import check_batch_vector, check_finite, check_points, check_positive_int, check_rank

__all__ = ["fps", "knn", "group_points", "PatchGroups", "PatchGrouper", "num_groups_for"]

# Elements of one distance block in the chunked torch kNN (float32: 4 bytes each). 2**25 elements = 128 MiB,
# which keeps a kNN of 100k points with batch 32 well under 2 GB.
_KNN_BLOCK_ELEMENTS = 2**25
# ATen runs an elementwise op on fewer elements than this inline, without waking its thread pool
# (at::internal::GRAIN_SIZE). The FPS loop is 128 steps of tiny ops: below the grain size each op costs no
# thread barrier, which on a busy machine is several times faster than the parallel version.
_GRAIN_SIZE = 32768


def _compiling() -> bool:
    """True while torch.compile traces: data-dependent checks (``bool(tensor)``) are skipped then, so the
    encoder's forward compiles without graph breaks; they run at the eager entry points."""
    return torch.compiler.is_compiling()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Distances are computed in float32 for half / bfloat16 points (``cdist`` has no half kernel on CPU, and
    a half-precision squared distance overflows at coordinates of a few hundred), else in the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _pow2_scale(amax: Tensor) -> Tensor:
    """Per-cloud factor ``2**-e`` with ``amax = m * 2**e``, ``m`` in [0.5, 1).

    Multiplying by a power of two is exact, so distances are scaled by exactly ``4**-e`` and every comparison
    FPS and kNN make is unchanged, but squared distances of huge (1e20) or tiny (1e-30) coordinates no
    longer overflow or underflow.
    """
    _, e = torch.frexp(amax)
    limit = int(math.log2(torch.finfo(amax.dtype).max)) - 1
    return torch.ldexp(torch.ones_like(amax), (-e).clamp(-limit, limit))


def _normalise_dense(*clouds: Tensor) -> tuple[list[Tensor], Tensor]:
    """Cast dense ``(B, *, F)`` tensors to the compute dtype and scale each cloud (row of the batch) by one
    power of two taken over all of them; returns the scaled tensors and the ``(B,)`` factor."""
    dt = _compute_dtype(clouds[0].dtype)
    cast = [c.detach().to(dt) for c in clouds]
    amax = torch.stack([c.abs().amax(dim=(1, 2)) if c.shape[1] else c.new_zeros(c.shape[0]) for c in cast])
    scale = _pow2_scale(amax.amax(0))
    return [c * scale.view(-1, 1, 1) for c in cast], scale


def _normalise_ragged(pairs: list[tuple[Tensor, Tensor]], num_clouds: int) -> tuple[list[Tensor], Tensor]:
    """Ragged version of :func:`_normalise_dense`: ``(pos (P, F), batch (P,))`` pairs sharing clouds."""
    dt = _compute_dtype(pairs[0][0].dtype)
    amax = torch.zeros(num_clouds, dtype=dt, device=pairs[0][0].device)
    cast = []
    for pos, batch in pairs:
        c = pos.detach().to(dt)
        cast.append(c)
        amax = amax.scatter_reduce(0, batch, c.abs().amax(dim=1), "amax", include_self=True)
    scale = _pow2_scale(amax)
    return [c * scale[b].unsqueeze(1) for c, (_, b) in zip(cast, pairs)], scale


# ----------------------------------------------------------------------------------------------------------
# ragged helpers


def _counts(batch: Tensor) -> Tensor:
    """Points per cloud of a checked batch vector, ``(B,)`` long."""
    return torch.bincount(batch)


def _ptr(counts: Tensor) -> Tensor:
    """CSR offsets ``(B + 1,)`` from per-cloud counts."""
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _to_dense(x: Tensor, batch: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ragged rows into ``(B, n_max, F)`` zeros-padded, with the validity mask and the local index."""
    ptr = _ptr(counts)
    local = torch.arange(x.shape[0], device=x.device) - ptr[batch]
    n_max = int(counts.max())
    dense = x.new_zeros((counts.numel(), n_max) + tuple(x.shape[1:]))
    dense[batch, local] = x
    mask = torch.zeros(counts.numel(), n_max, dtype=torch.bool, device=x.device)
    mask[batch, local] = True
    return dense, mask, local


def _check_ragged_pair(
    batch_x: Tensor | None, batch_y: Tensor | None, nx: int, ny: int, names: tuple[str, str]
) -> tuple[Tensor, Tensor] | None:
    """Check two batch vectors given together (or neither) that describe the same number of clouds."""
    if (batch_x is None) != (batch_y is None):
        raise ValueError(f"{names[0]} and {names[1]} must be given together (ragged) or both be None (dense)")
    if batch_x is None or batch_y is None:
        return None
    check_batch_vector(batch_x, nx, names[0])
    check_batch_vector(batch_y, ny, names[1])
    bx, by = int(batch_x[-1]) + 1, int(batch_y[-1]) + 1
    if bx != by:
        raise ValueError(
            f"{names[1]} must describe the same clouds as {names[0]} ({bx} clouds), got {by} clouds"
        )
    return batch_x, batch_y


def _unpack_pyg(points: object, batch: Tensor | None) -> tuple[object, Tensor | None]:
    """Accept a ``torch_geometric.data.Data``/``Batch``: use its ``pos`` and ``batch``."""
    if isinstance(points, Tensor) or not hasattr(points, "pos"):
        return points, batch
    if batch is not None:
        raise ValueError("batch must be None when points is a torch_geometric Data/Batch (it has its own)")
    pos = points.pos
    if pos is None:
        raise ValueError("points is a torch_geometric Data/Batch without pos: it must hold pos (P, 3)")
    data_batch = getattr(points, "batch", None)
    if data_batch is None:  # a single Data: one cloud
        data_batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return pos, data_batch


# ----------------------------------------------------------------------------------------------------------
# farthest point sampling


def _per_cloud_samples(num_samples: object, counts: Tensor, name: str = "num_samples") -> Tensor:
    """Per-cloud sample counts ``(B,)`` from an int or a sequence/tensor of ints, checked against ``counts``."""
    if isinstance(num_samples, Tensor):
        if num_samples.dim() != 1 or num_samples.dtype != torch.long or num_samples.numel() != counts.numel():
            raise ValueError(
                f"{name} must be an int or a (B,) long tensor with B = {counts.numel()}, "
                f"got shape {tuple(num_samples.shape)} dtype {num_samples.dtype}"
            )
        s = num_samples.to(counts.device)
    elif isinstance(num_samples, list | tuple):
        if len(num_samples) != counts.numel():
            raise ValueError(f"{name} must have one entry per cloud ({counts.numel()}), got {len(num_samples)}")
        for v in num_samples:
            check_positive_int(v, name)
        s = torch.tensor(num_samples, dtype=torch.long, device=counts.device)
    else:
        check_positive_int(num_samples, name)
        s = torch.full_like(counts, int(num_samples))  # type: ignore[arg-type]
    if bool((s < 1).any()):
        raise ValueError(f"{name} must be >= 1 for every cloud, got {s.tolist()}")
    too_many = s > counts
    if bool(too_many.any()):
        b = int(too_many.nonzero()[0])
        raise ValueError(
            f"{name} must be <= the number of points in each cloud, got {int(s[b])} for cloud {b} "
            f"which has {int(counts[b])} points"
        )
    return s


@torch.no_grad()
def _fps_torch(points: Tensor, num_samples: int, mask: Tensor | None, start: Tensor) -> Tensor:
    """Iterative FPS on a dense (padded) batch ``(B, N, F)``; returns ``(B, S)`` local indices.

    The minimum squared distance to the picked set is one ``(B, N)`` tensor, updated as
    ``((x - cx)^2 + (y - cy)^2) + (z - cz)^2`` (torch-cluster's order of operations, so both backends pick the
    same points); padding is ``-inf`` so it is never picked. ``argmax`` returns the first maximum, which
    makes ties deterministic (lowest index). In eager mode the batch runs in chunks of clouds small enough
    that every op of the loop stays under ATen's grain size (no thread barriers in the 128-step loop).
    """
    b, n, _ = points.shape
    if b == 0:
        return torch.empty(0, num_samples, dtype=torch.long, device=points.device)
    # Chunk only small clouds: from N ~ grain/4 on, one op per step is big enough to pay for its barrier.
    per = b if _compiling() or n >= _GRAIN_SIZE // 4 else max(1, (_GRAIN_SIZE - 1) // max(1, n))
    outs = [
        _fps_torch_chunk(points[i : i + per], num_samples, None if mask is None else mask[i : i + per],
                         start[i : i + per])
        for i in range(0, b, per)
    ]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _fps_torch_chunk(points: Tensor, num_samples: int, mask: Tensor | None, start: Tensor) -> Tensor:
    b, n, f = points.shape
    dist = torch.full((b, n), math.inf, dtype=points.dtype, device=points.device)
    if mask is not None:
        dist = dist.masked_fill(~mask, -math.inf)
    out = torch.empty(b, num_samples, dtype=torch.long, device=points.device)
    rows = torch.arange(b, device=points.device)
    coords = points.permute(2, 0, 1).contiguous()  # (F, B, N): one contiguous (B, N) plane per coordinate
    cur = start
    for i in range(num_samples):
        out[:, i] = cur
        c = points[rows, cur].unsqueeze(-1)  # (B, F, 1)
        d = (coords[0] - c[:, 0]).square_()
        for j in range(1, f):
            d.add_((coords[j] - c[:, j]).square_())
        dist = torch.minimum(dist, d)
        cur = dist.argmax(dim=1)
    return out


@torch.no_grad()
def _fps_cluster(points: Tensor, batch: Tensor, counts: Tensor, samples: Tensor, random_start: bool) -> Tensor:
    """torch-cluster FPS on a ragged batch, exactly ``samples[b]`` picks per cloud (global row indices)."""
    import torch_cluster

    # torch-cluster takes ceil(ratio * N_b) picks: ask for a little more than S_b, keep each cloud's first S_b
    # (FPS is prefix-consistent: the first S picks of a longer run are the S-pick run).
    ratio = ((samples.to(torch.float64) + 0.5) / counts.to(torch.float64)).clamp(max=1.0)
    ratio = ratio.to(points.dtype)
    out = torch_cluster.fps(points, batch, ratio=ratio, random_start=random_start)
    cloud = batch[out]
    got = torch.bincount(cloud, minlength=counts.numel())
    if bool((got < samples).any()):  # pragma: no cover - defensive against a backend change
        raise RuntimeError(f"torch_cluster.fps returned {got.tolist()} samples, expected {samples.tolist()}")
    rank = torch.arange(out.numel(), device=out.device) - _ptr(got)[cloud]
    return out[rank < samples[cloud]]


def _cluster_fps_dense_impl(points: Tensor, num_samples: int, random_start: bool) -> Tensor:
    """torch-cluster FPS on a dense batch ``(B, N, F)`` -> ``(B, S)`` per-cloud indices."""
    b, n, f = points.shape
    flat = points.reshape(b * n, f)
    fb = torch.arange(b, device=points.device).repeat_interleave(n)
    counts = torch.full((b,), n, dtype=torch.long, device=points.device)
    samples = torch.full_like(counts, num_samples)
    idx = _fps_cluster(flat, fb, counts, samples, random_start)
    return idx.view(b, num_samples) - (torch.arange(b, device=points.device) * n).unsqueeze(1)


def _cluster_knn_dense_impl(x: Tensor, y: Tensor, k: int) -> Tensor:
    """torch-cluster kNN on dense batches ``x (B, N, F)``, ``y (B, M, F)`` -> ``(B, M, k)`` per-cloud indices."""
    b, n, f = x.shape
    m = y.shape[1]
    bx = torch.arange(b, device=x.device).repeat_interleave(n)
    by = torch.arange(b, device=x.device).repeat_interleave(m)
    flat = _knn_cluster(x.reshape(b * n, f), y.reshape(b * m, f), k, bx, by)
    return flat.view(b, m, k) - (torch.arange(b, device=x.device) * n).view(b, 1, 1)


def _register_cluster_ops() -> tuple:
    """The torch-cluster calls as custom ops with fake (meta) kernels: ``torch.compile`` traces through them
    (output shapes are known from the inputs) instead of failing on the extension's opaque call."""
    lib_fps = torch.library.custom_op("pa3d::cluster_fps_dense", _cluster_fps_dense_impl, mutates_args=())
    lib_knn = torch.library.custom_op("pa3d::cluster_knn_dense", _cluster_knn_dense_impl, mutates_args=())

    @lib_fps.register_fake
    def _(points: Tensor, num_samples: int, random_start: bool) -> Tensor:
        return points.new_empty((points.shape[0], num_samples), dtype=torch.long)

    @lib_knn.register_fake
    def _(x: Tensor, y: Tensor, k: int) -> Tensor:
        return x.new_empty((x.shape[0], y.shape[1], k), dtype=torch.long)

    return lib_fps, lib_knn


if WITH_TORCH_CLUSTER:  # pragma: no cover - depends on the environment
    _cluster_fps_dense, _cluster_knn_dense = _register_cluster_ops()
else:
    _cluster_fps_dense, _cluster_knn_dense = _cluster_fps_dense_impl, _cluster_knn_dense_impl


def _fps_dense(scaled: Tensor, num_samples: int, random_start: bool, impl: str,
               generator: torch.Generator | None = None) -> Tensor:
    """FPS on normalised dense points (compute dtype, scaled per cloud)."""
    b, n, _ = scaled.shape
    if b == 0:
        return torch.empty(0, num_samples, dtype=torch.long, device=scaled.device)
    if impl == "torch":
        start = _random_start(torch.full((b,), n, device=scaled.device), random_start, generator)
        return _fps_torch(scaled, num_samples, None, start)
    return _cluster_fps_dense(scaled, num_samples, random_start)


def _fps_ragged(scaled: Tensor, batch: Tensor, counts: Tensor, samples: Tensor, random_start: bool, impl: str,
                generator: torch.Generator | None = None) -> Tensor:
    """FPS on normalised ragged points; global row indices, cloud by cloud."""
    if impl == "cluster":
        return _fps_cluster(scaled, batch, counts, samples, random_start)
    dense, mask, _ = _to_dense(scaled, batch, counts)
    start = _random_start(counts, random_start, generator)
    local = _fps_torch(dense, int(samples.max()), mask, start)
    keep = torch.arange(local.shape[1], device=local.device).unsqueeze(0) < samples.unsqueeze(1)
    return (local + _ptr(counts)[:-1].unsqueeze(1))[keep]


def fps(
    points: Tensor,
    num_samples: int | list[int] | tuple[int, ...] | Tensor,
    *,
    batch: Tensor | None = None,
    random_start: bool = False,
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Farthest point sampling: pick points one at a time, each the farthest from those picked before.

    Without ``random_start`` the first pick is point 0 of each cloud (the official PatchAlign3D order) and
    the result is deterministic; ties go to the lowest index in the torch reference. Unlike the CUDA kernel
    of the official release, points near the origin are not skipped.

    Half and bfloat16 points are compared in float32, and each cloud is scaled by a power of two (exact)
    before distances are taken, so huge (1e20) or tiny coordinates neither overflow nor underflow. An empty
    batch (B = 0) gives an empty result. Under ``torch.compile`` the data-dependent value checks are skipped
    and both backends trace without graph breaks (torch-cluster runs as the custom op
    ``pa3d::cluster_fps_dense``).

    Args:
        points: dense ``(B, N, F)`` or, with ``batch``, ragged ``(P, F)`` float coordinates (F is 3 for
            point clouds; any F works).
        num_samples: S, the picks per cloud. Ragged batches also take one int per cloud (a list or a
            ``(B,)`` long tensor).
        batch: PyG batch vector ``(P,)``: sorted cloud index of each row of ``points``.
        random_start: start each cloud at a random point instead of point 0.
        backend: ``"auto"`` (torch-cluster when installed), ``"torch"`` or ``"cluster"``.
        generator: random generator for ``random_start`` with the torch backend.

    Returns:
        Dense: ``(B, S)`` long indices into each cloud's N points, in pick order. Ragged: ``(sum S_b,)`` long
        row indices into ``points``, cloud by cloud, each cloud in pick order.

    Shape:
        - points: ``(B, N, F)`` or ``(P, F)``
        - batch: ``(P,)``
        - output: ``(B, S)`` or ``(sum_b S_b,)``

    Examples:
        >>> pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 2, 0]]])
        >>> fps(pts, 3, backend="torch")
        tensor([[0, 2, 3]])
    """
    ragged = batch is not None
    layout = "(P, F)" if ragged else "(B, N, F)"
    check_rank(points, "points", 2 if ragged else 3, layout + " float")
    if not points.is_floating_point():
        raise ValueError(f"points must be {layout} float, got dtype {points.dtype}")
    if not _compiling():
        check_finite(points, "points")
    impl = resolve_backend(backend, "cluster", "fps")

    if not ragged:
        if isinstance(num_samples, Tensor | list | tuple):
            raise ValueError(f"num_samples must be an int for dense points, got {type(num_samples).__name__}")
        check_positive_int(num_samples, "num_samples")
        n = points.shape[1]
        if num_samples > n:
            raise ValueError(f"num_samples must be <= the number of points N={n}, got {num_samples}")
        (scaled,), _ = _normalise_dense(points)
        return _fps_dense(scaled, num_samples, random_start, impl, generator)

    check_batch_vector(batch, points.shape[0], "batch")
    assert batch is not None
    counts = _counts(batch)
    samples = _per_cloud_samples(num_samples, counts)
    (scaled,), _ = _normalise_ragged([(points, batch)], counts.numel())
    return _fps_ragged(scaled, batch, counts, samples, random_start, impl, generator)


def _random_start(counts: Tensor, random_start: bool, generator: torch.Generator | None) -> Tensor:
    if not random_start:
        return torch.zeros_like(counts)
    u = torch.rand(counts.shape, generator=generator, device=generator.device if generator else "cpu")
    return (u.to(counts.device) * counts).long().clamp(max=counts - 1)


# ----------------------------------------------------------------------------------------------------------
# k nearest neighbours


def _order_dense(x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    """Order each query's neighbours ``idx (B, M, k)`` by ascending (squared distance, index)."""
    b, m, k = idx.shape
    f = x.shape[-1]
    idx = idx.sort(dim=-1).values
    near = torch.gather(x, 1, idx.reshape(b, m * k, 1).expand(-1, -1, f)).view(b, m, k, f)
    d = (near - y.unsqueeze(2)).square().sum(-1)
    return idx.gather(-1, d.sort(dim=-1, stable=True).indices)


def _order_ragged(x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    """Order each query's neighbours ``idx (R, k)`` (rows of x) by ascending (squared distance, index)."""
    idx = idx.sort(dim=-1).values
    d = (x[idx] - y.unsqueeze(1)).square().sum(-1)
    return idx.gather(-1, d.sort(dim=-1, stable=True).indices)


def _knn_torch_dense(x: Tensor, y: Tensor, k: int, x_mask: Tensor | None) -> Tensor:
    """Chunked brute-force kNN on dense batches: ``(B, M, k)`` indices into x, ascending distance.

    Queries are processed in chunks so that one ``(B, chunk, N)`` distance block holds at most
    ``_KNN_BLOCK_ELEMENTS`` values. Distances are exact differences (no matmul expansion), so a query that
    is itself a point of x finds it at distance 0.
    """
    b, n, _ = x.shape
    m = y.shape[1]
    if b == 0 or m == 0:
        return torch.empty(b, m, k, dtype=torch.long, device=x.device)
    chunk = max(1, _KNN_BLOCK_ELEMENTS // max(1, b * n))
    parts = []
    for s in range(0, m, chunk):
        d = torch.cdist(y[:, s : s + chunk], x, compute_mode="donot_use_mm_for_euclid_dist")
        if x_mask is not None:
            d = d.masked_fill(~x_mask.unsqueeze(1), math.inf)
        parts.append(d.topk(k, dim=-1, largest=False, sorted=False).indices)
    idx = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return _order_dense(x, y, idx)


def _knn_cluster(x: Tensor, y: Tensor, k: int, batch_x: Tensor, batch_y: Tensor) -> Tensor:
    """torch-cluster kNN on a ragged batch: ``(M, k)`` global row indices into x, ascending distance."""
    import torch_cluster

    row, col = torch_cluster.knn(x, y, k, batch_x, batch_y)
    if row.numel() != y.shape[0] * k:  # pragma: no cover - excluded by the checks before
        raise RuntimeError(f"torch_cluster.knn returned {row.numel()} pairs, expected {y.shape[0] * k}")
    # The extension does not promise an order: group by query, then order each query's k neighbours.
    col = col[torch.sort(row, stable=True).indices].view(y.shape[0], k)
    return _order_ragged(x, y, col)


def _knn_dense(xs: Tensor, ys: Tensor, k: int, impl: str) -> Tensor:
    """kNN on normalised dense batches."""
    if xs.shape[0] == 0 or ys.shape[1] == 0:
        return torch.empty(xs.shape[0], ys.shape[1], k, dtype=torch.long, device=xs.device)
    if impl == "torch":
        return _knn_torch_dense(xs, ys, k, None)
    return _cluster_knn_dense(xs, ys, k)


def _knn_ragged(xs: Tensor, ys: Tensor, k: int, batch_x: Tensor, batch_y: Tensor, counts_x: Tensor,
                impl: str) -> Tensor:
    """kNN on normalised ragged batches; global row indices into x."""
    if impl == "cluster":
        return _knn_cluster(xs, ys, k, batch_x, batch_y)
    counts_y = torch.bincount(batch_y, minlength=counts_x.numel())
    dx, mx, _ = _to_dense(xs, batch_x, counts_x)
    dy, _, local_y = _to_dense(ys, batch_y, counts_y)
    dense = _knn_torch_dense(dx, dy, k, mx)
    return dense[batch_y, local_y] + _ptr(counts_x)[batch_y].unsqueeze(1)


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    *,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    backend: str = "auto",
    return_distances: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The k nearest points of ``x`` for every point of ``y``, nearest first.

    Args:
        x: the points searched, dense ``(B, N, F)`` or ragged ``(P, F)`` with ``batch_x``.
        y: the queries, dense ``(B, M, F)`` or ragged ``(R, F)`` with ``batch_y``.
        k: neighbours per query; every cloud of ``x`` needs at least k points.
        batch_x: PyG batch vector of ``x`` ``(P,)``; give ``batch_y`` with it.
        batch_y: PyG batch vector of ``y`` ``(R,)``; a query only searches its own cloud.
        backend: ``"auto"`` (torch-cluster when installed), ``"torch"`` or ``"cluster"``. The torch
            reference is brute force, chunked over queries so that memory stays bounded (100k points with
            batch 32 stay under 2 GB).
        return_distances: also return the Euclidean distances (differentiable w.r.t. ``x`` and ``y``).

    Neighbours are ordered by ascending (squared distance, index) on both backends, so identical points
    come out in index order. When several points tie at the k-th distance, which of them make the cut may
    differ between backends (torch-cluster searches a KD-tree); the torch reference then keeps the ones
    ``torch.topk`` returns. Half / bfloat16 inputs are compared in float32, each cloud is scaled by a power
    of two first (huge or tiny coordinates stay exact), and an empty batch gives an empty result.

    Returns:
        Dense: ``(B, M, k)`` long indices into each cloud's N points. Ragged: ``(R, k)`` long row indices
        into ``x``. Ordered by ascending distance. With ``return_distances``, a tuple ``(index, distance)``
        where ``distance`` has the index's shape.

    Shape:
        - x: ``(B, N, F)`` or ``(P, F)``
        - y: ``(B, M, F)`` or ``(R, F)``
        - output: ``(B, M, k)`` or ``(R, k)``

    Examples:
        >>> line = torch.tensor([[[0.0], [1.0], [3.0], [7.0]]])
        >>> knn(line, torch.tensor([[[2.5]]]), 2, backend="torch")
        tensor([[[2, 1]]])
    """
    pair = _check_ragged_pair(batch_x, batch_y, x.shape[0] if isinstance(x, Tensor) else 0,
                              y.shape[0] if isinstance(y, Tensor) else 0, ("batch_x", "batch_y"))
    ragged = pair is not None
    for name, t, lay in (("x", x, "(B, N, F)"), ("y", y, "(B, M, F)")):
        lay = ("(P, F)" if name == "x" else "(R, F)") if ragged else lay
        check_rank(t, name, 2 if ragged else 3, lay + " float")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be {lay} float, got dtype {t.dtype}")
        if not _compiling():
            check_finite(t, name)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y must have the same last dim F as x ({x.shape[-1]}), got shape {tuple(y.shape)}")
    if y.dtype != x.dtype:
        raise ValueError(f"y must have the dtype of x ({x.dtype}), got {y.dtype}")
    check_positive_int(k, "k")
    impl = resolve_backend(backend, "cluster", "knn")

    if not ragged:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"y must have the batch size of x (B={x.shape[0]}), got shape {tuple(y.shape)}")
        b, n, f = x.shape
        m = y.shape[1]
        if k > n:
            raise ValueError(f"k must be <= the number of points N={n} of x, got {k}")
        (xs, ys), scale = _normalise_dense(x, y)
        idx = _knn_dense(xs, ys, k, impl)
        if not return_distances:
            return idx
        near = torch.gather(x, 1, idx.reshape(b, m * k, 1).expand(-1, -1, f)).view(b, m, k, f)
        s = scale.view(-1, 1, 1, 1)
        dist = ((near.to(s.dtype) - y.unsqueeze(2).to(s.dtype)) * s).norm(dim=-1) / s.squeeze(-1)
        return idx, dist.to(x.dtype)

    assert batch_x is not None and batch_y is not None
    counts_x = _counts(batch_x)
    if k > int(counts_x.min()):
        b = int(counts_x.argmin())
        raise ValueError(
            f"k must be <= the number of points in every cloud of x, got {k} but cloud {b} has "
            f"{int(counts_x[b])} points"
        )
    (xs, ys), scale = _normalise_ragged([(x, batch_x), (y, batch_y)], counts_x.numel())
    idx = _knn_ragged(xs, ys, k, batch_x, batch_y, counts_x, impl)
    if not return_distances:
        return idx
    s = scale[batch_y].unsqueeze(1)
    dist = ((x[idx].to(s.dtype) - y.unsqueeze(1).to(s.dtype)) * s.unsqueeze(-1)).norm(dim=-1) / s
    return idx, dist.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# patch grouping


class PatchGroups(NamedTuple):
    """The patches of a batch of clouds, as returned by :func:`group_points` / :class:`PatchGrouper`.

    Dense batches give ``(B, G, ...)`` tensors with per-cloud point indices; ragged batches give
    ``(Q, ...)`` tensors (Q patches of all clouds stacked) with row indices into the stacked points, and
    ``center_batch`` says which cloud each patch belongs to.

    Attributes:
        centers: patch centres, input points chosen by FPS. ``(B, G, 3)`` or ``(Q, 3)``.
        neighborhoods: the K points of each patch minus its centre, nearest first (the centre itself, at
            0, comes first). ``(B, G, K, 3)`` or ``(Q, K, 3)``.
        patch_idx: index of each patch point: into each cloud's N points (dense) or into the rows of the
            stacked points (ragged). ``(B, G, K)`` or ``(Q, K)``.
        center_idx: index of each centre, same convention as ``patch_idx``. ``(B, G)`` or ``(Q,)``.
        center_batch: cloud of each patch ``(Q,)`` for ragged batches, ``None`` for dense ones.
        features: the per-point features gathered like ``neighborhoods`` (not centred) when ``feats`` was
            given, ``(B, G, K, C)`` or ``(Q, K, C)``; otherwise ``None``.
    """

    centers: Tensor
    neighborhoods: Tensor
    patch_idx: Tensor
    center_idx: Tensor
    center_batch: Tensor | None = None
    features: Tensor | None = None


def num_groups_for(num_points: int, group_size: int = 32, *, coverage: float = 2.0,
                   min_groups: int = 1, max_groups: int | None = None) -> int:
    """The number of patches G that gives ``coverage = G * K / N`` for a cloud of N points.

    The paper's setting (G=128, K=32, N=2048) has coverage 2: every point lies in two patches on average.
    Keeping the coverage constant gives denser clouds proportionally more patches of the same K.

    Args:
        num_points: N, points in the cloud.
        group_size: K, points per patch.
        coverage: average number of patches that contain a point.
        min_groups: lower bound on G.
        max_groups: upper bound on G (None: N).

    Returns:
        ``clamp(round(coverage * N / K), min_groups, min(max_groups, N))``.

    Examples:
        >>> num_groups_for(2048, 32), num_groups_for(8192, 32)
        (128, 512)
    """
    check_positive_int(num_points, "num_points")
    check_positive_int(group_size, "group_size")
    _check_group_bounds(coverage, min_groups, max_groups)
    upper = num_points if max_groups is None else min(max_groups, num_points)
    return max(min_groups, min(upper, int(round(coverage * num_points / group_size))))


def _check_group_bounds(coverage: object, min_groups: object, max_groups: object) -> None:
    if isinstance(coverage, bool) or not (isinstance(coverage, int | float) and coverage > 0
                                           and math.isfinite(coverage)):
        raise ValueError(f"coverage must be a finite number > 0, got {coverage!r}")
    check_positive_int(min_groups, "min_groups")
    if max_groups is not None:
        check_positive_int(max_groups, "max_groups")
        if max_groups < min_groups:  # type: ignore[operator]
            raise ValueError(f"max_groups must be >= min_groups={min_groups}, got {max_groups}")


def _ensure_center_first(patch_idx: Tensor, center_idx: Tensor) -> Tensor:
    """Put each patch's own centre in slot 0.

    kNN finds the centre at distance 0, but duplicated points tie with it; this makes ``patch_idx`` hold
    the centre itself (swapped to the front), which keeps the distance order since ties are at 0.
    """
    hit = patch_idx == center_idx.unsqueeze(-1)
    j = hit.to(torch.uint8).argmax(dim=-1, keepdim=True)  # 0 when absent: slot 0 (a duplicate) is replaced
    first = patch_idx[..., :1]
    out = patch_idx.scatter(-1, j, first)
    out[..., 0] = center_idx
    return out


def group_points(
    points: Tensor,
    num_groups: int | None = 128,
    group_size: int = 32,
    *,
    batch: Tensor | None = None,
    feats: Tensor | None = None,
    coverage: float = 2.0,
    max_groups: int | None = None,
    random_start: bool = False,
    backend: str = "auto",
) -> PatchGroups:
    """Cut clouds into patches: FPS centres and the K nearest points of each centre.

    Centres are input points chosen by FPS from point 0 (the official order). Each patch holds its centre
    (first) and its K - 1 nearest other points, searched among all points of the same cloud.

    With ``num_groups=None`` the number of patches follows the size of each cloud,
    ``G = round(coverage * N / K)`` (:func:`num_groups_for`); the paper's fixed G=128, K=32 at N=2048 is
    coverage 2. In a ragged batch each cloud then gets its own G.

    Args:
        points: dense ``(B, N, 3)`` or, with ``batch``, ragged ``(P, 3)``; also a
            ``torch_geometric.data.Data``/``Batch`` (its ``pos`` and ``batch`` are used).
        num_groups: G, patches per cloud, or None to derive it from N and ``coverage``.
        group_size: K, points per patch.
        batch: PyG batch vector ``(P,)`` for ragged input.
        feats: optional per-point features ``(B, N, C)`` / ``(P, C)`` gathered into ``features``.
        coverage: G * K / N when ``num_groups`` is None.
        max_groups: upper bound on the derived G when ``num_groups`` is None.
        random_start: start FPS at a random point instead of point 0.
        backend: ``"auto"``, ``"torch"`` or ``"cluster"`` for FPS and kNN.

    Returns:
        A :class:`PatchGroups`.

    Shape:
        - points: ``(B, N, 3)`` or ``(P, 3)``
        - centers: ``(B, G, 3)`` or ``(Q, 3)``
        - neighborhoods: ``(B, G, K, 3)`` or ``(Q, K, 3)``
        - patch_idx: ``(B, G, K)`` or ``(Q, K)``

    Examples:
        >>> groups = group_points(torch.rand(2, 256, 3), 16, 8, backend="torch")
        >>> tuple(groups.neighborhoods.shape), tuple(groups.patch_idx.shape)
        ((2, 16, 8, 3), (2, 16, 8))
    """
    points, batch = _unpack_pyg(points, batch)
    ragged = batch is not None
    if _compiling():  # shape checks only: a finite check reads the data (a graph break)
        check_rank(points, "points", 2 if ragged else 3, "(P, 3)" if ragged else "(B, N, 3)")
    else:
        check_points(points, "points", ragged=ragged)
    assert isinstance(points, Tensor)
    check_positive_int(group_size, "group_size")
    if num_groups is not None:
        check_positive_int(num_groups, "num_groups")
    _check_group_bounds(coverage, 1, max_groups)
    if feats is not None:
        check_rank(feats, "feats", 2 if ragged else 3, "(P, C)" if ragged else "(B, N, C)")
        if feats.shape[:-1] != points.shape[:-1]:
            raise ValueError(
                f"feats must have one row per point {tuple(points.shape[:-1])} + (C,), got {tuple(feats.shape)}"
            )
    fps_impl = resolve_backend(backend, "cluster", "fps")
    knn_impl = resolve_backend(backend, "cluster", "knn")

    if not ragged:
        b, n, _ = points.shape
        if n < group_size:
            raise ValueError(f"points must have at least group_size={group_size} points per cloud, got N={n}")
        g = num_groups_for(n, group_size, coverage=coverage, max_groups=max_groups) if num_groups is None \
            else num_groups
        if g > n:
            raise ValueError(f"num_groups must be <= the number of points N={n}, got {g}")
        (scaled,), _ = _normalise_dense(points)
        center_idx = _fps_dense(scaled, g, random_start, fps_impl)
        centers_s = torch.gather(scaled, 1, center_idx.unsqueeze(-1).expand(-1, -1, 3))
        patch_idx = _ensure_center_first(_knn_dense(scaled, centers_s, group_size, knn_impl), center_idx)
        centers = torch.gather(points, 1, center_idx.unsqueeze(-1).expand(-1, -1, 3))
        flat = patch_idx.reshape(b, g * group_size, 1)
        neigh = torch.gather(points, 1, flat.expand(-1, -1, 3)).view(b, g, group_size, 3)
        features = None
        if feats is not None:
            c = feats.shape[-1]
            features = torch.gather(feats, 1, flat.expand(-1, -1, c)).view(b, g, group_size, c)
        return PatchGroups(centers, neigh - centers.unsqueeze(2), patch_idx, center_idx, None, features)

    check_batch_vector(batch, points.shape[0], "batch")
    assert batch is not None
    counts = _counts(batch)
    small = counts < group_size
    if bool(small.any()):
        c = int(small.nonzero()[0])
        raise ValueError(
            f"points must have at least group_size={group_size} points per cloud, got {int(counts[c])} "
            f"in cloud {c}"
        )
    if num_groups is None:
        samples = torch.tensor(
            [num_groups_for(int(c), group_size, coverage=coverage, max_groups=max_groups) for c in counts.tolist()],
            dtype=torch.long, device=points.device,
        )
    else:
        samples = torch.full_like(counts, num_groups)
        over = samples > counts
        if bool(over.any()):
            c = int(over.nonzero()[0])
            raise ValueError(
                f"num_groups must be <= the number of points in each cloud, got {num_groups} but cloud {c} "
                f"has {int(counts[c])} points"
            )
    (scaled,), _ = _normalise_ragged([(points, batch)], counts.numel())
    center_idx = _fps_ragged(scaled, batch, counts, samples, random_start, fps_impl)
    center_batch = batch[center_idx]
    patch_idx = _knn_ragged(scaled, scaled[center_idx], group_size, batch, center_batch, counts, knn_impl)
    patch_idx = _ensure_center_first(patch_idx, center_idx)
    centers = points[center_idx]
    neigh = points[patch_idx] - centers.unsqueeze(1)
    features = feats[patch_idx] if feats is not None else None
    return PatchGroups(centers, neigh, patch_idx, center_idx, center_batch, features)


class PatchGrouper(nn.Module):
    """Cut clouds into patches (FPS centres + kNN); the module form of :func:`group_points`.

    Holds no parameters. Defaults are the paper's: G=128 patches of K=32 points.

    Args:
        num_groups: G, patches per cloud; None derives G from each cloud's size (``coverage``).
        group_size: K, points per patch.
        coverage: ``G * K / N`` kept constant when ``num_groups`` is None (the paper's setting is 2).
        max_groups: cap on the derived G.
        random_start: start FPS at a random point (default: point 0, the official order).
        backend: ``"auto"``, ``"torch"`` or ``"cluster"``.

    Shape:
        - points: ``(B, N, 3)``, or ``(P, 3)`` with ``batch (P,)``
        - output: :class:`PatchGroups`, dense ``(B, G, ...)`` or ragged ``(Q, ...)``

    Examples:
        >>> grouper = PatchGrouper(16, 8, backend="torch")
        >>> groups = grouper(torch.rand(2, 128, 3))
        >>> tuple(groups.centers.shape)
        (2, 16, 3)
    """

    def __init__(
        self,
        num_groups: int | None = 128,
        group_size: int = 32,
        *,
        coverage: float = 2.0,
        max_groups: int | None = None,
        random_start: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_groups is not None:
            check_positive_int(num_groups, "num_groups")
        check_positive_int(group_size, "group_size")
        if backend not in ("auto", "torch", "cluster"):
            raise ValueError(f"backend must be one of 'auto', 'torch', 'cluster'; got {backend!r}")
        _check_group_bounds(coverage, 1, max_groups)
        self.num_groups = num_groups
        self.group_size = group_size
        self.coverage = coverage
        self.max_groups = max_groups
        self.random_start = random_start
        self.backend = backend

    def forward(self, points: Tensor, batch: Tensor | None = None, *, feats: Tensor | None = None) -> PatchGroups:
        """Group ``points`` (dense ``(B, N, 3)``, ragged ``(P, 3)`` + ``batch``, or a PyG Data/Batch)."""
        return group_points(
            points,
            self.num_groups,
            self.group_size,
            batch=batch,
            feats=feats,
            coverage=self.coverage,
            max_groups=self.max_groups,
            random_start=self.random_start,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        if self.num_groups is None:
            g = f"num_groups=None, coverage={self.coverage}"
        else:
            g = f"num_groups={self.num_groups}"
        return f"{g}, group_size={self.group_size}, backend={self.backend!r}"
