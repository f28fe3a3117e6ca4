"""Reusable property assertions for point-cloud ops, for pa3d's tests and for code built on pa3d.

Each function raises ``AssertionError`` with a message saying what broke; none needs pytest.

Examples:
    >>> from pa3d_layers import fps
    >>> from pa3d_layers.testing import assert_farthest_point_order
    >>> pts = torch.rand(2, 50, 3, dtype=torch.float64)
    >>> assert_farthest_point_order(pts, fps(pts, 8, backend="torch"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "assert_farthest_point_order",
    "assert_knn_matches_brute_force",
    "assert_permutation_invariant",
    "assert_permutation_equivariant",
    "assert_translation_invariant",
    "assert_function_matches_module",
    "assert_constant_preserved",
]


def _close(actual: Any, expected: Any, atol: float | None, rtol: float | None, msg: str) -> None:
    if isinstance(expected, Tensor):
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{msg}\n{m}")
    elif isinstance(expected, Sequence) and not isinstance(expected, str):
        assert isinstance(actual, Sequence) and len(actual) == len(expected), f"{msg}: structure differs"
        for a, e in zip(actual, expected):
            _close(a, e, atol, rtol, msg)
    elif hasattr(expected, "_fields"):  # NamedTuple
        _close(tuple(actual), tuple(expected), atol, rtol, msg)
    else:
        assert actual == expected, f"{msg}: {actual!r} != {expected!r}"


def assert_farthest_point_order(
    points: Tensor, idx: Tensor, *, batch: Tensor | None = None, atol: float = 1e-6
) -> None:
    """Check the farthest-point-sampling property.

    Picks are distinct points of their own cloud and each pick after the first is (up to ``atol``) the
    farthest point of its cloud from the picks before it.

    Args:
        points: dense ``(B, N, F)`` or ragged ``(P, F)``.
        idx: dense ``(B, S)`` per-cloud indices, or ragged ``(Q,)`` row indices grouped by cloud in pick
            order (as :func:`pa3d_layers.fps` returns them).
        batch: PyG batch vector ``(P,)`` for ragged input.
        atol: tolerance on the distance comparison.
    """
    if batch is not None:
        clouds = batch[idx]
        for c in torch.unique(clouds).tolist():
            rows = (batch == c).nonzero().squeeze(1)
            picks = idx[clouds == c]
            assert bool((batch[picks] == c).all()), f"cloud {c}: a pick lies in another cloud"
            local = torch.searchsorted(rows, picks)
            assert_farthest_point_order(points[rows].unsqueeze(0), local.unsqueeze(0), atol=atol)
        return
    assert idx.dim() == 2 and idx.shape[0] == points.shape[0], f"idx must be (B, S), got {tuple(idx.shape)}"
    n = points.shape[1]
    assert bool(((idx >= 0) & (idx < n)).all()), "a pick is out of range"
    for b in range(points.shape[0]):
        picks = idx[b].tolist()
        assert len(set(picks)) == len(picks), f"cloud {b}: picks are not distinct: {picks}"
        p = points[b].to(torch.float64)
        for i in range(1, len(picks)):
            d = torch.cdist(p, p[picks[:i]]).min(dim=1).values
            assert float(d[picks[i]]) >= float(d.max()) - atol, (
                f"cloud {b}: pick {i} (point {picks[i]}) is at {float(d[picks[i]]):.6g} from the picks before, "
                f"but point {int(d.argmax())} is at {float(d.max()):.6g}"
            )


def assert_knn_matches_brute_force(
    x: Tensor, y: Tensor, idx: Tensor, *, batch_x: Tensor | None = None, batch_y: Tensor | None = None,
    atol: float = 1e-6,
) -> None:
    """Check kNN indices against brute force: the same distances (ties may pick other points), sorted.

    Args:
        x: searched points, dense ``(B, N, F)`` or ragged ``(P, F)``.
        y: queries, dense ``(B, M, F)`` or ragged ``(R, F)``.
        idx: the kNN result, ``(B, M, k)`` or ``(R, k)``.
        batch_x: batch vector of ``x`` for ragged input.
        batch_y: batch vector of ``y`` for ragged input.
        atol: tolerance on distances.
    """
    if batch_x is not None and batch_y is not None:
        assert bool((batch_x[idx] == batch_y.unsqueeze(1)).all()), "a query found a point of another cloud"
        d = torch.cdist(y.double(), x.double())
        d = d.masked_fill(batch_y.unsqueeze(1) != batch_x.unsqueeze(0), float("inf"))
        got = d.gather(1, idx)
    else:
        d = torch.cdist(y.double(), x.double())
        got = d.gather(2, idx)
    k = idx.shape[-1]
    ref = d.topk(k, dim=-1, largest=False).values
    for row in idx.reshape(-1, k).tolist():
        assert len(set(row)) == k, f"a query has repeated neighbours: {row}"
    assert bool((got[..., 1:] >= got[..., :-1] - atol).all()), "neighbours are not sorted nearest first"
    torch.testing.assert_close(got, ref, atol=atol, rtol=0, msg=lambda m: f"kNN differs from brute force\n{m}")


def assert_permutation_invariant(
    fn: Callable[[Tensor], Any], x: Tensor, dim: int, *, generator: torch.Generator | None = None,
    atol: float | None = None, rtol: float | None = None,
) -> None:
    """Check ``fn(x)`` is unchanged when ``x`` is shuffled along ``dim`` (e.g. the points of a patch).

    Args:
        fn: the function or module under test.
        x: its input.
        dim: the axis that is shuffled.
        generator: random generator for the permutation.
        atol: absolute tolerance (``torch.testing.assert_close`` default when None).
        rtol: relative tolerance.
    """
    perm = torch.randperm(x.shape[dim], generator=generator).to(x.device)
    _close(fn(x.index_select(dim, perm)), fn(x), atol, rtol, f"not invariant to a permutation along dim {dim}")


def assert_permutation_equivariant(
    fn: Callable[[Tensor], Tensor], x: Tensor, dim: int, *, out_dim: int | None = None,
    generator: torch.Generator | None = None, atol: float | None = None, rtol: float | None = None,
) -> None:
    """Check ``fn(x[perm]) == fn(x)[perm]`` along ``dim`` of the input (``out_dim`` of the output).

    Args:
        fn: the function or module under test.
        x: its input.
        dim: the input axis that is shuffled.
        out_dim: the output axis that follows it (default ``dim``).
        generator: random generator for the permutation.
        atol: absolute tolerance.
        rtol: relative tolerance.
    """
    perm = torch.randperm(x.shape[dim], generator=generator).to(x.device)
    out_dim = dim if out_dim is None else out_dim
    _close(fn(x.index_select(dim, perm)), fn(x).index_select(out_dim, perm), atol, rtol,
           f"not equivariant to a permutation along dim {dim}")


def assert_translation_invariant(
    fn: Callable[[Tensor], Any], points: Tensor, offset: Tensor | None = None, *,
    atol: float | None = None, rtol: float | None = None,
) -> None:
    """Check ``fn(points + offset) == fn(points)`` for a rigid shift of every point.

    Args:
        fn: the function or module under test, taking points ``(..., 3)``.
        points: its input.
        offset: the shift ``(3,)`` (default ``(1.5, -2.0, 0.25)``).
        atol: absolute tolerance.
        rtol: relative tolerance.
    """
    if offset is None:
        offset = torch.tensor([1.5, -2.0, 0.25])
    offset = offset.to(points)
    _close(fn(points + offset), fn(points), atol, rtol, f"not invariant to the translation {offset.tolist()}")


def assert_function_matches_module(
    fn: Callable[..., Any], module: torch.nn.Module, *args: Any, atol: float | None = None,
    rtol: float | None = None, **kwargs: Any,
) -> None:
    """Check that a module and its function form give the same result for the same call.

    Args:
        fn: the function form, called as ``fn(*args, **kwargs)``.
        module: the module form, called the same way.
        *args: positional inputs.
        atol: absolute tolerance.
        rtol: relative tolerance.
        **kwargs: keyword inputs.
    """
    _close(module(*args, **kwargs), fn(*args, **kwargs), atol, rtol, "module and function differ")


def assert_constant_preserved(
    fn: Callable[[Tensor], Tensor], values: Tensor, *, atol: float | None = None, rtol: float | None = None
) -> None:
    """Check that an averaging op (e.g. propagation) maps a constant input to the same constant.

    ``fn`` is called with ``values`` filled by one value per channel (the first row of ``values``), and every
    row of its output (any leading shape, the same last dim C) must equal that row.

    Args:
        fn: the op, taking values ``(..., C)`` and returning ``(..., C)``.
        values: a template input; only its shape, dtype and first row are used.
        atol: absolute tolerance.
        rtol: relative tolerance.
    """
    const = values.reshape(-1, values.shape[-1])[0]
    out = fn(const.expand_as(values).clone())
    _close(out, const.expand_as(out), atol, rtol, "a constant input did not give the same constant")
