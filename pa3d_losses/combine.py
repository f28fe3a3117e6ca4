"""``WeightedSum``: several losses on the shared protocol, summed with weights, each term reported."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["WeightedSum"]


class WeightedSum(nn.Module):
    r"""A weighted sum of losses that share the protocol ``loss(outputs, batch, *, return_dict=False)``.

    $$
    \mathcal{L} = \sum_i w_i \, \mathcal{L}_i
    $$

    With ``return_dict=True`` every term's ``*_loss`` entries are reported already multiplied by their
    weight, so the sum of all keys ending in ``_loss`` is the total (the recipe's convention); metrics pass
    through unweighted. A key that two terms both report is prefixed with the term's name
    (``distill_align_loss``-style: ``"<name>_<key>"``). A term that returns a bare tensor is reported as
    ``"<name>_loss"``. The paper's joint Stage-1 + Stage-2 training is ``build_loss("joint")``, a
    ``WeightedSum`` of ``cosine_distillation`` and ``multi_positive_sigmoid``.

    Args:
        losses: the terms, as a mapping name -> Module, or a sequence of Modules (named by their
            ``loss_name`` attribute, else ``term<i>``).
        weights: one weight per term (a sequence in order, or a mapping by name); default all 1.

    Examples:
        >>> from pa3d_losses import CosineDistillationLoss
        >>> loss = WeightedSum({"a": CosineDistillationLoss(match="none")}, weights=[0.5])
        >>> outputs = {"teacher_feats": torch.ones(1, 2, 3)}
        >>> loss(outputs, {"teacher_targets": -torch.ones(1, 2, 3)}, return_dict=True)["distill_loss"]
        tensor(1.)
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module] | Sequence[nn.Module],
        weights: Sequence[float] | Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(losses, Mapping):
            named = dict(losses)
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            names = [getattr(m, "loss_name", None) or f"term{i}" for i, m in enumerate(losses)]
            counts = Counter(names)
            named = {(n if counts[n] == 1 else f"{n}_{i}"): m for i, (n, m) in enumerate(zip(names, losses))}
        else:
            raise ValueError(f"losses must be a mapping or a sequence of nn.Module, got {type(losses).__name__}")
        if not named:
            raise ValueError("losses must hold at least one loss")
        for name, module in named.items():
            if not isinstance(module, nn.Module):
                raise ValueError(f"losses[{name!r}] must be an nn.Module, got {type(module).__name__}")
        if weights is None:
            w = {name: 1.0 for name in named}
        elif isinstance(weights, Mapping):
            if set(weights) != set(named):
                raise ValueError(f"weights must name exactly the terms {sorted(named)}, got {sorted(weights)}")
            w = {name: weights[name] for name in named}
        else:
            if len(weights) != len(named):
                raise ValueError(f"weights must hold one weight per loss ({len(named)}), got {len(weights)}")
            w = dict(zip(named, weights))
        for name, value in w.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"weights[{name!r}] must be a finite number, got {value!r}")
        self.losses = nn.ModuleDict(named)
        self.weights = {name: float(value) for name, value in w.items()}

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{k}={v:g}" for k, v in self.weights.items())

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any], *, return_dict: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        terms: dict[str, dict[str, torch.Tensor]] = {}
        for name, loss in self.losses.items():
            result = loss(outputs, batch, return_dict=True)
            if isinstance(result, torch.Tensor):
                result = {f"{name}_loss": result}
            weight = self.weights[name]
            terms[name] = {k: (v * weight if k.endswith("_loss") else v) for k, v in result.items()}
        total = sum(v for term in terms.values() for k, v in term.items() if k.endswith("_loss"))
        if not return_dict:
            return total  # type: ignore[return-value]
        counts = Counter(k for term in terms.values() for k in term)
        out: dict[str, torch.Tensor] = {}
        for name, term in terms.items():
            for key, value in term.items():
                out[key if counts[key] == 1 else f"{name}_{key}"] = value
        return out
