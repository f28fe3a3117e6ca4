"""prior_correction / PriorCorrection: the per-shape calibration of point-to-name scores."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pa3d_layers import CALIBRATIONS, PriorCorrection, name_prior, prior_correction

seeds = st.integers(0, 2**31 - 1)
sizes = st.tuples(st.integers(1, 30), st.integers(1, 6))  # N points, L names
scales = st.floats(0.5, 50.0)


def sims(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def loop_reference(s: torch.Tensor, scale: float, strength: float) -> torch.Tensor:
    """The formula written out per point and per name, one shape (N, L)."""
    n, num_labels = s.shape
    p = [[math.exp(scale * float(s[i, j])) for j in range(num_labels)] for i in range(n)]
    p = [[v / sum(row) for v in row] for row in p]
    prior = [sum(p[i][j] for i in range(n)) / n for j in range(num_labels)]
    return torch.tensor([[math.log(p[i][j]) - strength * math.log(prior[j]) for j in range(num_labels)]
                         for i in range(n)], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- hand-worked


def test_hand_worked_dominant_name():
    # "body" (column 0) wins at every point; the third point is where "wing" is relatively strongest
    s = torch.tensor([[0.9, 0.5], [0.8, 0.6], [0.7, 0.65]], dtype=torch.float64)
    out = prior_correction(s, 10.0)
    torch.testing.assert_close(out, loop_reference(s, 10.0, strength=0.5))
    assert s.argmax(-1).tolist() == [0, 0, 0]
    assert out.argmax(-1).tolist() == [0, 0, 1]


def test_one_point_is_the_uniform_prior_ratio():
    # one point: mean p = p, so log p - log p = 0 for every name (strength 1)
    out = prior_correction(torch.tensor([[0.3, -0.2, 0.9]]), 7.0, strength=1.0)
    torch.testing.assert_close(out, torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------- properties


@given(seed=seeds, size=sizes, scale=scales, strength=st.floats(0.0, 1.0))
def test_matches_the_loop_reference(seed, size, scale, strength):
    s = sims(seed, *size)
    torch.testing.assert_close(prior_correction(s, scale, strength=strength), loop_reference(s, scale, strength))


@given(seed=seeds, size=sizes, scale=scales)
def test_a_constant_added_to_one_point_changes_nothing(seed, size, scale):
    s = sims(seed, *size)
    shift = sims(seed + 1, size[0], 1)
    torch.testing.assert_close(prior_correction(s + shift, scale), prior_correction(s, scale))


@given(seed=seeds, size=sizes, scale=scales)
def test_strength_zero_keeps_the_argmax_order(seed, size, scale):
    s = sims(seed, *size)
    torch.testing.assert_close(prior_correction(s, scale, strength=0.0), torch.log_softmax(scale * s, dim=-1))


@given(seed=seeds, size=sizes, scale=scales, data=st.data())
def test_equivariant_to_point_and_name_orders(seed, size, scale, data):
    s = sims(seed, *size)
    rows = torch.tensor(data.draw(st.permutations(range(size[0]))), dtype=torch.long)
    cols = torch.tensor(data.draw(st.permutations(range(size[1]))), dtype=torch.long)
    torch.testing.assert_close(prior_correction(s[rows][:, cols], scale), prior_correction(s, scale)[rows][:, cols])


@given(seed=seeds, b=st.integers(1, 4), size=sizes, scale=scales)
def test_dense_batch_and_ragged_batch_equal_one_shape_at_a_time(seed, b, size, scale):
    s = sims(seed, b, *size)
    dense = prior_correction(s, scale)
    ragged = prior_correction(s.reshape(-1, size[1]), scale, batch=torch.arange(b).repeat_interleave(size[0]))
    for i in range(b):
        one = prior_correction(s[i], scale)
        torch.testing.assert_close(dense[i], one)
        torch.testing.assert_close(ragged[i * size[0]:(i + 1) * size[0]], one)


def test_a_name_raised_at_every_point_no_longer_takes_the_whole_shape():
    # name 1 is relatively strongest at the last points; +0.5 on name 0 everywhere makes the plain argmax
    # give name 0 to all four points, the corrected one gives the last point back to name 1
    s = torch.tensor([[0.0, -0.3], [0.0, -0.1], [0.0, 0.1], [0.0, 0.3]], dtype=torch.float64)
    assert s.argmax(-1).tolist() == [0, 0, 1, 1]
    raised = s + torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert raised.argmax(-1).tolist() == [0, 0, 0, 0]
    assert prior_correction(raised, 10.0, strength=1.0).argmax(-1).tolist() == [0, 0, 0, 1]
    # the default (0.5, the square root of the prior) corrects less: here not enough to move a point
    assert prior_correction(raised, 10.0).argmax(-1).tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(prior_correction(raised, 10.0), loop_reference(raised, 10.0, 0.5))


def test_finite_for_extreme_scores_and_half_precision():
    s = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    out = prior_correction(s, 1e4)
    assert torch.isfinite(out).all()
    half = prior_correction(s.to(torch.bfloat16), 10.0)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_gradcheck():
    s = sims(0, 5, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: prior_correction(x, 3.0), (s,))


def test_module_matches_function():
    s = sims(1, 2, 8, 3)
    module = PriorCorrection(strength=0.25)
    torch.testing.assert_close(module(s, 4.0), prior_correction(s, 4.0, strength=0.25))
    assert repr(module) == "PriorCorrection(strength=0.25)"
    torch.testing.assert_close(PriorCorrection()(s, 4.0), prior_correction(s, 4.0, strength=0.5))
    assert CALIBRATIONS == ("none", "prior")


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"similarities": torch.zeros(4)},
     r"similarities must be a float \(N, L\), \(B, N, L\) or \(P, L\) tensor, got \(4,\)"),
    ({"similarities": torch.zeros(4, 2, dtype=torch.long)}, "similarities must be a float"),
    ({"similarities": torch.zeros(4, 0)}, r"at least one label \(L >= 1\)"),
    ({"similarities": torch.tensor([[0.0, float("nan")]])}, "similarities must be finite, got 1 NaN/Inf"),
    ({"scale": 0.0}, "scale must be one finite number > 0, got 0.0"),
    ({"scale": float("inf")}, "scale must be one finite number > 0"),
    ({"scale": torch.ones(2)}, "scale must be one finite number > 0"),
    ({"strength": 1.5}, r"strength must be a number in \[0, 1\], got 1.5"),
    ({"strength": True}, r"strength must be a number in \[0, 1\], got True"),
    ({"batch": torch.zeros(3, dtype=torch.long)}, r"batch must be a \(P,\) = \(4,\) long tensor, got \(3,\)"),
    ({"similarities": torch.zeros(2, 4, 2), "batch": torch.zeros(4, dtype=torch.long)},
     r"with batch, similarities must be ragged \(P, L\), got \(2, 4, 2\)"),
])
def test_refusals_say_what_was_expected(kwargs, message):
    args = {"similarities": torch.zeros(4, 2), "scale": 10.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        prior_correction(args.pop("similarities"), args.pop("scale"), **args)


# ------------------------------------------------------------------------------------ name_prior and prior=
@given(seeds, sizes, st.integers(1, 3), scales, st.floats(0.0, 1.0))
def test_a_given_prior_of_the_same_points_changes_nothing(seed, size, b, scale, strength):
    n, num_labels = size
    one, dense = sims(seed, n, num_labels), sims(seed, b, n, num_labels)
    prior = name_prior(one, scale)
    assert prior.shape == (num_labels,)
    torch.testing.assert_close(prior.sum(), torch.tensor(1.0, dtype=prior.dtype))
    torch.testing.assert_close(prior_correction(one, scale, strength=strength, prior=prior),
                               prior_correction(one, scale, strength=strength))
    dense_prior = name_prior(dense, scale)
    assert dense_prior.shape == (b, num_labels)
    torch.testing.assert_close(prior_correction(dense, scale, strength=strength, prior=dense_prior),
                               prior_correction(dense, scale, strength=strength))
    batch = torch.arange(b).repeat_interleave(n)
    ragged = dense.reshape(b * n, num_labels)
    torch.testing.assert_close(name_prior(ragged, scale, batch=batch), dense_prior)
    torch.testing.assert_close(prior_correction(ragged, scale, batch=batch, strength=strength, prior=dense_prior),
                               prior_correction(ragged, scale, batch=batch, strength=strength))


@given(seeds, st.integers(2, 20), st.integers(1, 5), scales)
def test_a_prior_from_the_samples_labels_other_points_by_per_name_offsets(seed, n, num_labels, scale):
    """Vertices scored with the samples' prior: argmax of scale * s - 0.5 * log prior, point by point."""
    samples, vertices = sims(seed, n, num_labels), sims(seed + 1, 7, num_labels)
    prior = name_prior(samples, scale)
    got = prior_correction(vertices, scale, prior=prior)
    want = torch.log_softmax(vertices * scale, -1) - 0.5 * prior.log()
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("bad", [torch.ones(3), torch.ones(2, 2), torch.ones(2, dtype=torch.long),
                                 torch.tensor([0.5, float("nan")]), torch.tensor([-0.1, 1.1]), [0.5, 0.5]])
def test_a_bad_prior_is_refused(bad):
    with pytest.raises(ValueError, match="prior"):
        prior_correction(sims(0, 4, 2), 10.0, prior=bad)
