"""A small name -> loss registry, so a recipe can swap losses and ablations from its command line."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from .ablations import (
    BatchNegativesSigmoidLoss,
    HardPatchLabelsSigmoidLoss,
    PointLevelSigmoidLoss,
    SoftmaxMultiPositiveLoss,
)
from .alignment import MultiPositiveSigmoidLoss
from .combine import WeightedSum
from .distillation import CosineDistillationLoss

__all__ = ["LOSSES", "register_loss", "build_loss", "joint_loss"]

LOSSES: dict[str, Callable[..., nn.Module]] = {}
"""Registered losses: name -> a class or factory that builds the ``nn.Module`` from keyword arguments."""

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_loss(name: str) -> Callable[[F], F]:
    """Decorator registering a loss class or factory under ``name`` (warns when it replaces one).

    Args:
        name: the registry key, as used by `build_loss` and recipes.

    Returns:
        The decorator; it returns the object unchanged.

    Examples:
        >>> @register_loss("my_distill")
        ... class MyDistill(CosineDistillationLoss):
        ...     pass
        >>> type(build_loss("my_distill")).__name__
        'MyDistill'
        >>> del LOSSES["my_distill"]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")

    def decorator(obj: F) -> F:
        if not callable(obj):
            raise ValueError(f"register_loss({name!r}) needs a class or factory, got {type(obj).__name__}")
        if name in LOSSES and LOSSES[name] is not obj:
            warnings.warn(f"register_loss: replacing the loss registered as {name!r}", UserWarning, stacklevel=2)
        LOSSES[name] = obj
        return obj

    return decorator


def _build_one(spec: Any) -> tuple[nn.Module, float | None]:
    if isinstance(spec, nn.Module):
        return spec, None
    if isinstance(spec, str):
        name, kwargs, weight = spec, {}, None
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        if "type" not in kwargs:
            raise ValueError(f"spec dict must have a 'type' key naming a loss, got keys {sorted(kwargs)}")
        name = kwargs.pop("type")
        weight = kwargs.pop("loss_weight", None)
    else:
        raise ValueError(
            f"spec must be a loss name, a dict with 'type', an nn.Module or a list of those, got {type(spec).__name__}"
        )
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(LOSSES))}")
    try:
        module = LOSSES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for loss {name!r}: {err}") from err
    return module, weight


def build_loss(spec: str | Mapping[str, Any] | nn.Module | Sequence[Any]) -> nn.Module:
    """Build a loss from a recipe spec.

    - ``"name"``: the registered loss with its defaults.
    - ``{"type": "name", "loss_weight": w, **kwargs}``: with keyword arguments; a ``loss_weight`` wraps it in a
      one-term `WeightedSum`.
    - an ``nn.Module``: returned unchanged.
    - a list of the above: a `WeightedSum` of them, each weighted by its ``loss_weight`` (default 1).

    Args:
        spec: the spec.

    Returns:
        A Module called as ``loss(outputs, batch, *, return_dict=False)``.

    Examples:
        >>> build_loss("multi_positive_sigmoid")
        MultiPositiveSigmoidLoss(pos_weight=None, targets='fractional')
        >>> build_loss({"type": "multi_positive_sigmoid", "pos_weight": "num_labels_minus_one"})
        MultiPositiveSigmoidLoss(pos_weight='num_labels_minus_one', targets='fractional')
        >>> build_loss([{"type": "cosine_distillation", "loss_weight": 0.5}, "multi_positive_sigmoid"]).weights
        {'cosine_distillation': 0.5, 'multi_positive_sigmoid': 1.0}
    """
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        built = [_build_one(item) for item in spec]
        return WeightedSum([m for m, _ in built], weights=[1.0 if w is None else w for _, w in built])
    module, weight = _build_one(spec)
    if weight is None:
        return module
    return WeightedSum([module], weights=[weight])


def joint_loss(
    *,
    distill_weight: float = 1.0,
    align_weight: float = 1.0,
    distill: str | Mapping[str, Any] | nn.Module = "cosine_distillation",
    align: str | Mapping[str, Any] | nn.Module = "multi_positive_sigmoid",
) -> WeightedSum:
    """The paper's "joint training" ablation: Stage-1 distillation and Stage-2 alignment optimised together.

    Registered as ``joint``; reports ``distill_loss`` and ``align_loss`` (each already weighted) and both
    terms' metrics.

    Args:
        distill_weight: weight of the distillation term.
        align_weight: weight of the alignment term.
        distill: spec of the distillation term (see `build_loss`).
        align: spec of the alignment term, e.g. an ablation name.

    Returns:
        ``WeightedSum({"distill": ..., "align": ...})``.

    Examples:
        >>> joint_loss(distill_weight=0.5).weights
        {'distill': 0.5, 'align': 1.0}
    """
    return WeightedSum(
        {"distill": build_loss(distill), "align": build_loss(align)}, weights=[distill_weight, align_weight]
    )


register_loss("cosine_distillation")(CosineDistillationLoss)
register_loss("multi_positive_sigmoid")(MultiPositiveSigmoidLoss)
register_loss("batch_negatives")(BatchNegativesSigmoidLoss)
register_loss("softmax_multi_positive")(SoftmaxMultiPositiveLoss)
register_loss("point_level")(PointLevelSigmoidLoss)
register_loss("hard_patch_labels")(HardPatchLabelsSigmoidLoss)
register_loss("joint")(joint_loss)
