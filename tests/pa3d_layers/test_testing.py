"""pa3d_layers.testing: the property assertions pass on good ops and fail, with a message, on bad ones."""

from __future__ import annotations

import pytest
import torch

from pa3d_layers import fps, knn
from pa3d_layers.testing import (
    __all__ as testing_all,
)
from pa3d_layers.testing import (
    assert_constant_preserved,
    assert_farthest_point_order,
    assert_function_matches_module,
    assert_knn_matches_brute_force,
    assert_permutation_equivariant,
    assert_permutation_invariant,
    assert_translation_invariant,
)


def pts(seed=0, *shape):
    return torch.rand(*(shape or (2, 30, 3)), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_every_helper_is_exported():
    import pa3d_layers.testing as t

    assert all(callable(getattr(t, n)) for n in testing_all)


def test_farthest_point_order_detects_violations():
    p = pts()
    good = fps(p, 6, backend="torch")
    assert_farthest_point_order(p, good)
    with pytest.raises(AssertionError, match="picks are not distinct"):
        assert_farthest_point_order(p, torch.cat([good[:, :3], good[:, :3]], 1))
    with pytest.raises(AssertionError, match="pick 2"):
        assert_farthest_point_order(p, torch.cat([good[:, :2], good[:, 3:]], 1))
    batch = torch.tensor([0] * 10 + [1] * 20)
    flat = p[0]
    idx = fps(flat, 4, batch=batch, backend="torch")
    assert_farthest_point_order(flat, idx, batch=batch)
    bad = idx.clone()
    bad[1] = 15  # a pick of cloud 0 that lies in cloud 1
    with pytest.raises(AssertionError):
        assert_farthest_point_order(flat, bad, batch=batch)


def test_knn_brute_force_detects_violations():
    x, y = pts(0), pts(1, 2, 5, 3)
    idx = knn(x, y, 4, backend="torch")
    assert_knn_matches_brute_force(x, y, idx)
    with pytest.raises(AssertionError, match="not sorted"):
        assert_knn_matches_brute_force(x, y, idx.flip(-1))
    with pytest.raises(AssertionError, match="differs from brute force"):
        assert_knn_matches_brute_force(x, y, knn(x, y, 5, backend="torch")[..., 1:])
    bx, by = torch.tensor([0] * 10 + [1] * 20), torch.tensor([0, 0, 1])
    ridx = knn(x[0], y[0, :3], 2, batch_x=bx, batch_y=by, backend="torch")
    assert_knn_matches_brute_force(x[0], y[0, :3], ridx, batch_x=bx, batch_y=by)
    with pytest.raises(AssertionError, match="another cloud"):
        assert_knn_matches_brute_force(x[0], y[0, :3], ridx.flip(0), batch_x=bx, batch_y=by)


def test_invariance_helpers():
    x = pts()
    assert_permutation_invariant(lambda t: t.amax(1), x, dim=1)
    with pytest.raises(AssertionError, match="not invariant to a permutation along dim 1"):
        assert_permutation_invariant(lambda t: t[:, 0], x, dim=1, generator=torch.Generator().manual_seed(0))
    assert_permutation_equivariant(lambda t: t * 2, x, dim=1)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_permutation_equivariant(lambda t: t.cumsum(1), x, dim=1, generator=torch.Generator().manual_seed(0))
    assert_translation_invariant(lambda t: t - t.mean(1, keepdim=True), x)
    with pytest.raises(AssertionError, match="not invariant to the translation"):
        assert_translation_invariant(lambda t: t, x)


def test_module_and_constant_helpers():
    lin = torch.nn.Linear(3, 2).double()
    assert_function_matches_module(lambda t: torch.nn.functional.linear(t, lin.weight, lin.bias), lin, pts())
    with pytest.raises(AssertionError, match="module and function differ"):
        assert_function_matches_module(lambda t: t[..., :2], lin, pts())
    assert_constant_preserved(lambda v: v.mean(1, keepdim=True), pts())
    with pytest.raises(AssertionError, match="constant"):
        assert_constant_preserved(lambda v: v * 2, pts())
