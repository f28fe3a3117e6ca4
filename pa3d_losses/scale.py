"""The learnable logit scale (temperature) and bias that the MODEL owns and passes to the Stage-2 losses."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["LogitScaleBias"]

_DEFAULTS = {"paper": (10.0, -10.0), "official": (1.0 / 0.07, None)}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class LogitScaleBias(nn.Module):
    r"""Holds the logit scale $s$ and bias $\beta$ of $z = s \langle p, t \rangle + \beta$.

    Losses hold no parameters: a model owns this module and puts its output into ``outputs["logit_scale"]``
    and ``outputs["logit_bias"]``, so swapping a loss changes neither the optimiser's groups nor the
    checkpoint keys. The scale is learned in log space, $s = \min(e^{\texttt{log\_scale}}, s_{\max})$.

    - ``mode="paper"``: $s$ initialised to $1/0.1 = 10$, bias $\beta$ to $-10$, both learnable.
    - ``mode="official"``: $s$ initialised to $1/0.07$, clamped at 100, no bias (``forward`` returns None
      for it). The parameter is named ``log_scale`` like the official release's, so its checkpoints load.

    Args:
        mode: ``"paper"`` or ``"official"``: picks the defaults above.
        init_scale: initial $s$ (not its log); default 10 (paper) or 1/0.07 (official).
        init_bias: initial $\beta$; default -10 (paper). Must be None in official mode (the release has no
            bias).
        learnable: parameters (True) or fixed buffers (False).
        max_scale: upper clamp on $s$ (None for no clamp).

    ``forward()`` gives ``(scale, bias)``: 0-dim tensors, bias None in official mode.

    Shape:
        - scale: ``()``; bias: ``()`` or None.

    Examples:
        >>> scale, bias = LogitScaleBias()()
        >>> round(scale.item(), 4), bias.item()
        (10.0, -10.0)
        >>> scale, bias = LogitScaleBias(mode="official")()
        >>> round(scale.item(), 4), bias
        (14.2857, None)
    """

    def __init__(
        self,
        *,
        mode: Literal["paper", "official"] = "paper",
        init_scale: float | None = None,
        init_bias: float | None = None,
        learnable: bool = True,
        max_scale: float | None = 100.0,
    ) -> None:
        super().__init__()
        if not isinstance(mode, str) or mode not in _DEFAULTS:
            raise ValueError(f"mode must be 'paper' or 'official', got {mode!r}")
        default_scale, default_bias = _DEFAULTS[mode]
        if mode == "official" and init_bias is not None:
            raise ValueError(f"init_bias must be None in mode='official' (the release has no bias), got {init_bias!r}")
        init_scale = default_scale if init_scale is None else init_scale
        init_bias = default_bias if init_bias is None else init_bias
        if not (_is_number(init_scale) and math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        if max_scale is not None and not (_is_number(max_scale) and max_scale > 0):
            raise ValueError(f"max_scale must be > 0 or None, got {max_scale!r}")
        if init_bias is not None and not (_is_number(init_bias) and math.isfinite(init_bias)):
            raise ValueError(f"init_bias must be a finite number or None, got {init_bias!r}")
        self.mode = mode
        self.learnable = learnable
        self.max_scale = max_scale
        log_scale = torch.tensor(math.log(init_scale))
        bias = None if init_bias is None else torch.tensor(float(init_bias))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
            self.bias = None if bias is None else nn.Parameter(bias)
        else:
            self.register_buffer("log_scale", log_scale)
            self.register_buffer("bias", bias)
        self._init = (math.log(init_scale), init_bias)

    def reset_parameters(self) -> None:
        """Restore the initial scale and bias."""
        with torch.no_grad():
            self.log_scale.fill_(self._init[0])
            if self.bias is not None:
                self.bias.fill_(self._init[1])

    def extra_repr(self) -> str:
        bias = None if self.bias is None else round(self.bias.detach().item(), 4)
        return (
            f"mode={self.mode!r}, scale={self.log_scale.detach().exp().item():.4g}, bias={bias}, "
            f"learnable={self.learnable}, max_scale={self.max_scale}"
        )

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale = self.log_scale.exp()
        if self.max_scale is not None:
            scale = scale.clamp(max=self.max_scale)
        return scale, self.bias
