"""The mini-PointNet that turns each patch into one token.

Dimensions: B batch, G patches, Q stacked patches, K points per patch, C input channels, D token dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_rank

__all__ = ["PointNetTokenizer"]


class PointNetTokenizer(nn.Module):
    """Mini-PointNet patch tokenizer of PatchAlign3D / Point-BERT: one token per patch.

    Per point: ``C -> 128 -> BN -> ReLU -> 256`` (``first_conv``); max over the K points gives a global
    vector g, which is placed in front of every point's feature f (``[g, f]``, 512 channels); then
    ``512 -> 512 -> BN -> ReLU -> D`` (``second_conv``) and a second max over K.

    The first layer of ``second_conv`` is computed factorised: with its weight split as ``W = [W_g | W_l]``,
    ``W [g, f] + b = W_l f + (W_g g + b)``, and ``W_g g + b`` is computed once per patch instead of once
    per point (the same arithmetic, about a third fewer multiply-adds per point). The parameters keep the
    official layout (1x1 ``Conv1d`` weights in ``first_conv.{0,1,3}`` and ``second_conv.{0,1,3}``), so
    official ``encoder.*`` weights load with ``load_state_dict``.

    Args:
        in_channels: C, channels per point (3 for xyz; more for xyz + extra features).
        embed_dim: D, channels of the output token (256 in the official model, which then applies its
            own ``reduce_dim`` Linear(256, 384)).

    Shape:
        - neighborhoods: ``(B, G, K, C)`` or ``(Q, K, C)``, channels last
        - output: ``(B, G, D)`` or ``(Q, D)``

    Examples:
        >>> tok = PointNetTokenizer(3, 256)
        >>> tuple(tok(torch.rand(2, 16, 32, 3)).shape)
        (2, 16, 256)
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 256) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("embed_dim", embed_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, 128, 1),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Conv1d(128, 256, 1),
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Conv1d(512, embed_dim, 1),
        )

    def forward(self, neighborhoods: Tensor) -> Tensor:
        """Tokenize patches ``(..., K, C)`` channels-last into ``(..., D)``."""
        x = neighborhoods
        check_rank(x, "neighborhoods", (3, 4), f"(B, G, K, {self.in_channels}) or (Q, K, {self.in_channels}) float")
        if x.shape[-1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"neighborhoods must be (B, G, K, {self.in_channels}) or (Q, K, {self.in_channels}) float, "
                f"got shape {tuple(x.shape)} dtype {x.dtype}"
            )
        lead, k = x.shape[:-2], x.shape[-2]
        conv0, bn0, act0, conv1 = self.first_conv
        conv2, bn1, act1, conv3 = self.second_conv

        h = F.linear(x.reshape(-1, self.in_channels), conv0.weight.squeeze(-1), conv0.bias)
        h = F.linear(act0(bn0(h)), conv1.weight.squeeze(-1), conv1.bias)  # (M*K, 256)
        f = h.view(-1, k, 256)
        g = f.amax(dim=1)  # (M, 256)

        w = conv2.weight.squeeze(-1)  # (512, 512) acting on [global (256), local (256)]
        h = F.linear(f, w[:, 256:]) + F.linear(g, w[:, :256], conv2.bias).unsqueeze(1)  # (M, K, 512)
        h = act1(bn1(h.reshape(-1, 512)))
        h = F.linear(h, conv3.weight.squeeze(-1), conv3.bias).view(-1, k, self.embed_dim)
        return h.amax(dim=1).reshape(*lead, self.embed_dim)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, embed_dim={self.embed_dim}"


def _unfactorised_reference(tokenizer: PointNetTokenizer, neighborhoods: Tensor) -> Tensor:
    """The official channels-first formula (concat then full 512x512 conv), kept for tests."""
    lead, (k, c) = neighborhoods.shape[:-2], neighborhoods.shape[-2:]
    x = neighborhoods.reshape(-1, k, c).transpose(1, 2)  # (M, C, K)
    f = tokenizer.first_conv(x)  # (M, 256, K)
    g = f.amax(dim=2, keepdim=True)
    h = tokenizer.second_conv(torch.cat([g.expand(-1, -1, k), f], dim=1))
    return h.amax(dim=2).reshape(*lead, tokenizer.embed_dim)
