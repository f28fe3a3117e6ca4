"""An exponential moving average of a model's weights, with its horizon measured in the run's progress.

The usual EMA (timm's ``ModelEma``, ``torch.optim.swa_utils``) decays by a fixed factor per step, so its
horizon is a number of steps: right for a run of a known length, wrong for a run bounded by ``--max-minutes``,
whose step count depends on the machine (a 12-minute run makes about 2,500 steps on one 2-core CPU and 6,000 on
another). :class:`ProgressEMA` decays by the progress each step adds (the same progress that drives the
learning-rate schedule, :func:`pa3d_train.fit`): after progress ``p`` the average is

    ema(p) = sum_i w_i * weights_i / sum_i w_i,   w_i proportional to exp(-(p - p_i) / horizon)

so ``horizon=0.1`` averages over about the last tenth of the run, whatever that is in steps or seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ProgressEMA", "check_ema_horizon"]


def check_ema_horizon(horizon: object, *, flag: str = "horizon") -> float:
    """``horizon`` as a float in (0, 1], or a ``ValueError`` naming ``flag`` and what was given."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or not math.isfinite(horizon) \
            or not 0.0 < horizon <= 1.0:
        raise ValueError(f"{flag} must be a fraction of the run in (0, 1] (0.1: about its last tenth), "
                         f"got {horizon!r}")
    return float(horizon)


class ProgressEMA:
    """Average a model's state (parameters and floating-point buffers) over the last ``horizon`` of a run.

    Integer buffers (BatchNorm's ``num_batches_tracked``) take the latest value. The average is kept in each
    tensor's own dtype on its own device; it never takes part in a backward pass.

    Args:
        horizon: the average's time constant as a fraction of the run's progress, in (0, 1].

    Examples:
        >>> net = torch.nn.Linear(1, 1, bias=False)
        >>> ema = ProgressEMA(horizon=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(0.0); ema.update(net, progress=0.0)
        ...     _ = net.weight.fill_(1.0); ema.update(net, progress=0.5)
        >>> round(ema.weights["weight"].item(), 4)  # 1 - exp(-1)
        0.6321
    """

    def __init__(self, horizon: float) -> None:
        self.horizon = check_ema_horizon(horizon)
        self.weights: dict[str, Tensor] | None = None
        self.progress: float | None = None
        self.updates = 0

    @staticmethod
    def _state(model: nn.Module) -> Mapping[str, Tensor]:
        return getattr(model, "module", model).state_dict()

    @torch.no_grad()
    def update(self, model: nn.Module, progress: float) -> None:
        """Fold the model's current state in, ``progress`` being the run's progress after this step."""
        if not math.isfinite(progress):
            raise ValueError(f"progress must be finite, got {progress!r}")
        state = self._state(model)
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in state.items()}
        else:
            if state.keys() != self.weights.keys():
                raise ValueError("the model's state has other keys than the average's: "
                                 f"{sorted(set(state) ^ set(self.weights))[:5]}")
            keep = math.exp(-max(0.0, progress - self.progress) / self.horizon)
            floats = [k for k, v in self.weights.items() if v.is_floating_point()]
            if floats:
                torch._foreach_lerp_([self.weights[k] for k in floats],
                                     [state[k].detach().to(self.weights[k].dtype) for k in floats], 1.0 - keep)
            for k, v in self.weights.items():
                if not v.is_floating_point():
                    v.copy_(state[k])
        self.progress = float(progress)
        self.updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the average into ``model`` (strict); nothing happens before the first :meth:`update`."""
        if self.weights is not None:
            getattr(model, "module", model).load_state_dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (a checkpoint of it loads with ``weights_only=True``)."""
        return {"horizon": self.horizon, "progress": self.progress, "updates": self.updates,
                "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the horizon stays this object's)."""
        weights = state.get("weights")
        if weights is not None and not (isinstance(weights, Mapping)
                                        and all(isinstance(v, Tensor) for v in weights.values())):
            raise ValueError("an EMA state's 'weights' must map names to tensors")
        self.weights = {k: v.clone() for k, v in weights.items()} if weights is not None else None
        progress = state.get("progress")
        self.progress = float(progress) if progress is not None else None
        self.updates = int(state.get("updates", 0))
