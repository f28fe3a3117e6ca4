"""Calibrate point-to-name scores within each shape before the argmax that labels the points.

Dimensions: B batch, N points, P stacked points, L labels (part names).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_finite
from .scatter import scatter

__all__ = ["prior_correction", "name_prior", "PriorCorrection", "CALIBRATIONS"]

CALIBRATIONS: tuple[str, ...] = ("none", "prior")
"""Names accepted where a segmentation takes ``calibration=``: ``"none"`` (argmax of the similarities) and
``"prior"`` (:func:`prior_correction`)."""


def check_calibration(calibration: object) -> str:
    """Raise unless ``calibration`` is one of :data:`CALIBRATIONS` (the check every ``calibration=`` shares)."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {list(CALIBRATIONS)}, got {calibration!r}")
    return str(calibration)


def _check_strength(strength: object) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    return float(strength)


def _check_inputs(similarities: object, scale: object, batch: Tensor | None) -> float:
    if not torch.is_tensor(similarities) or not similarities.is_floating_point() or similarities.dim() not in (2, 3):
        got = tuple(similarities.shape) if torch.is_tensor(similarities) else type(similarities).__name__
        raise ValueError(f"similarities must be a float (N, L), (B, N, L) or (P, L) tensor, got {got}")
    if similarities.shape[-1] == 0:
        raise ValueError(f"similarities must have at least one label (L >= 1), got {tuple(similarities.shape)}")
    scale_t = torch.as_tensor(scale, dtype=torch.float64)
    if scale_t.numel() != 1 or not math.isfinite(float(scale_t)) or float(scale_t) <= 0:
        raise ValueError(f"scale must be one finite number > 0, got {scale!r}")
    check_finite(similarities, "similarities")
    if batch is not None:
        if similarities.dim() != 2:
            raise ValueError(f"with batch, similarities must be ragged (P, L), got {tuple(similarities.shape)}")
        if batch.dim() != 1 or batch.shape[0] != similarities.shape[0] or batch.dtype != torch.long:
            raise ValueError(f"batch must be a (P,) = ({similarities.shape[0]},) long tensor, got "
                             f"{tuple(batch.shape)} {batch.dtype}")
    return float(scale_t)


def _log_probs(similarities: Tensor, scale: float) -> Tensor:
    work = torch.promote_types(similarities.dtype, torch.float32)
    return torch.log_softmax(similarities.to(work) * scale, dim=-1)


def _prior(logp: Tensor, batch: Tensor | None) -> Tensor:
    """Mean probability per shape and name: ``(L,)`` for one shape, ``(B, L)`` for a dense or ragged batch."""
    if batch is not None:
        return scatter(logp.exp(), batch, dim=0, reduce="mean")
    return logp.exp().mean(dim=-2)


def _check_prior(prior: object, similarities: Tensor, batch: Tensor | None) -> Tensor:
    labels = similarities.shape[-1]
    if batch is None:
        want = (labels,) if similarities.dim() == 2 else (similarities.shape[0], labels)
    else:
        want = (int(batch.max()) + 1 if batch.numel() else 0, labels)
    if not torch.is_tensor(prior) or not prior.is_floating_point() or tuple(prior.shape) != want:
        got = tuple(prior.shape) if torch.is_tensor(prior) else type(prior).__name__
        raise ValueError(f"prior must be a float {want} tensor (name_prior of the same shapes), got {got}")
    check_finite(prior, "prior")
    if bool((prior < 0).any()):
        raise ValueError("prior must hold shares >= 0 (name_prior of the same shapes)")
    return prior


def name_prior(similarities: Tensor, scale: Tensor | float, *, batch: Tensor | None = None) -> Tensor:
    """The share of each shape the model gives each name: the mean over its points of ``softmax(scale * s)``.

    What :func:`prior_correction` divides by. Compute it on the points the model saw and pass it as
    ``prior=`` to correct scores carried elsewhere (a mesh's vertices) with the same per-name offsets.

    Args:
        similarities: as in :func:`prior_correction`.
        scale: the model's logit scale.
        batch: ``(P,)`` cloud index of each row for ragged ``(P, L)`` input.

    Returns:
        ``(L,)`` for one shape ``(N, L)``; ``(B, L)`` for ``(B, N, L)`` or ragged input. Each row sums to 1.

    Examples:
        >>> name_prior(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 10.0).tolist()
        [0.5, 0.5]
    """
    return _prior(_log_probs(similarities, _check_inputs(similarities, scale, batch)), batch)


def prior_correction(
    similarities: Tensor,
    scale: Tensor | float,
    *,
    batch: Tensor | None = None,
    strength: float = 0.5,
    prior: Tensor | None = None,
) -> Tensor:
    """Correct each shape's point-to-name scores for the model's bias toward some names.

    The scores become per-point probabilities over the ``L`` candidate names, ``p = softmax(scale * s)``; the
    mean of ``p`` over a shape's points is the share of the shape the model gives each name. Dividing by it
    (in log space, to the power ``strength``) lowers a name that wins nearly everywhere and raises one that wins
    almost nowhere:

    ``out[n, l] = log p[n, l] - strength * log mean_n p[n, l]``

    A text model that places some part names close to every patch (a frequent training name, a generic word
    such as "body") makes one name win over a whole unseen shape; the correction keeps the points where each
    name is *relatively* strongest. Argmax of the result gives the labels; it is unchanged by adding a
    constant to one point's scores, and equals the argmax of ``s`` when ``strength`` is 0.

    The default strength, 0.5, divides by the square root of the prior. The full division (1) assumes every
    candidate name covers part of the shape; when a shape lacks some of them (a category's names scored on
    one shape that has only a few of those parts) it forces the missing names onto points: on the L-PSB fold
    it cost 2 mIoU points against 1 gained at 0.5 (docs/results.md).

    Args:
        similarities: cosine similarities of points (or patches) with the names.
        scale: the model's logit scale (the temperature of the softmax is ``1 / scale``), a number or 0-dim tensor.
        batch: ``(P,)`` cloud index of each row for ragged ``(P, L)`` input; the mean is taken per cloud.
        strength: exponent of the prior in ``[0, 1]`` (0: no correction, 1: divide by the prior).
        prior: each shape's name prior from :func:`name_prior` (``(L,)`` for ``(N, L)``, ``(B, L)`` otherwise),
            computed on other points of the same shapes; default: from ``similarities`` themselves.

    Returns:
        Corrected log-scores, the shape and dtype (float32 at least) of ``similarities``.

    Shape:
        - similarities: ``(N, L)`` one shape, ``(B, N, L)`` a dense batch, or ``(P, L)`` with ``batch (P,)``
        - output: the same

    Examples:
        >>> s = torch.tensor([[0.9, 0.5], [0.8, 0.6], [0.7, 0.65]])  # "body" wins everywhere
        >>> s.argmax(-1).tolist(), prior_correction(s, 10.0).argmax(-1).tolist()
        ([0, 0, 0], [0, 0, 1])
    """
    scale_f = _check_inputs(similarities, scale, batch)
    strength = _check_strength(strength)
    logp = _log_probs(similarities, scale_f)
    if prior is None:
        prior = _prior(logp, batch)
    else:
        prior = _check_prior(prior, similarities, batch).to(logp.dtype)
    prior = prior[batch] if batch is not None else prior.unsqueeze(-2)
    return logp - strength * prior.clamp_min(torch.finfo(logp.dtype).tiny).log()


class PriorCorrection(nn.Module):
    """Module form of :func:`prior_correction`; the model passes its own logit scale in.

    Args:
        strength: exponent of the prior in ``[0, 1]`` (1 divides by it, 0 leaves the scores' order as it is).

    Examples:
        >>> PriorCorrection()
        PriorCorrection(strength=0.5)
    """

    def __init__(self, strength: float = 0.5):
        super().__init__()
        self.strength = _check_strength(strength)

    def forward(self, similarities: Tensor, scale: Tensor | float, batch: Tensor | None = None) -> Tensor:
        return prior_correction(similarities, scale, batch=batch, strength=self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"
