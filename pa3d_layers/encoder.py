"""Transformer encoder over patch tokens, its blocks, drop-path and the centre position embedding.

The layout follows the official PatchAlign3D (Point-BERT) backbone so its weights load: pre-norm blocks
with ``norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2``; the position sequence is re-added before
every block (``x <- block(x + pos)``); a final LayerNorm.

Dimensions: B batch, G patches (tokens), D embedding dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_batch_vector, check_rank

__all__ = [
    "to_dense_batch",
    "drop_path",
    "DropPath",
    "Attention",
    "Mlp",
    "TransformerBlock",
    "TransformerEncoder",
    "PatchEmbedding",
    "init_weights",
]


def to_dense_batch(
    x: Tensor, batch: Tensor, *, fill_value: float = 0.0, max_num_nodes: int | None = None
) -> tuple[Tensor, Tensor]:
    """Ragged rows ``(Q, *)`` with a PyG batch vector -> a padded dense batch ``(B, G_max, *)`` and its mask.

    The same contract as ``torch_geometric.utils.to_dense_batch`` (no PyG needed): row ``i`` of cloud ``b``
    goes to ``out[b, i]``; padding holds ``fill_value``; ``mask`` is True for real rows, so
    ``out[mask]`` gives ``x`` back. This is the one call between pa3d's ragged layers and the dense
    Transformer (which :class:`TransformerEncoder` also makes itself when given ``batch``).

    Args:
        x: ragged rows, e.g. patch tokens ``(Q, D)``.
        batch: ``(Q,)`` long, sorted cloud index of each row (every cloud in ``[0, B)`` has a row).
        fill_value: value of the padding.
        max_num_nodes: G_max; default the largest cloud. Must be at least the largest cloud.

    Returns:
        ``(dense, mask)``: ``(B, G_max, *)`` and ``(B, G_max)`` bool.

    Shape:
        - x: ``(Q, *)``; batch: ``(Q,)``
        - output: ``(B, G_max, *)`` and ``(B, G_max)``

    Examples:
        >>> dense, mask = to_dense_batch(torch.arange(5.0).view(5, 1), torch.tensor([0, 0, 0, 1, 1]))
        >>> dense[..., 0], mask
        (tensor([[0., 1., 2.],
                [3., 4., 0.]]), tensor([[ True,  True,  True],
                [ True,  True, False]]))
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of ragged rows (Q, *), got {got}")
    check_batch_vector(batch, x.shape[0], "batch")
    counts = torch.bincount(batch)
    largest = int(counts.max())
    g = largest if max_num_nodes is None else max_num_nodes
    if isinstance(g, bool) or not isinstance(g, int) or g < largest:
        raise ValueError(
            f"max_num_nodes must be None or an int >= the largest cloud ({largest}), got {max_num_nodes!r}"
        )
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    local = torch.arange(x.shape[0], device=x.device) - ptr[batch]
    dense = x.new_full((counts.numel(), g) + tuple(x.shape[1:]), fill_value)
    dense[batch, local] = x
    mask = torch.zeros(counts.numel(), g, dtype=torch.bool, device=x.device)
    mask[batch, local] = True
    return dense, mask


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> Tensor:
    """Stochastic depth: zero the whole residual branch of random samples (per sample, not per element).

    Args:
        x: a residual branch ``(B, ...)``.
        drop_prob: probability of dropping a sample's branch.
        training: drop only in training; identity otherwise.
        scale_by_keep: divide kept samples by ``1 - drop_prob`` so the expectation is unchanged.

    Returns:
        ``x`` with some samples zeroed, same shape.

    Examples:
        >>> x = torch.ones(4, 3)
        >>> torch.equal(drop_path(x, 0.5, training=False), x)
        True
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob!r}")
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    if keep > 0.0 and scale_by_keep:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; active only in training mode.

    Args:
        drop_prob: probability of dropping a sample's residual branch.
        scale_by_keep: divide kept samples by ``1 - drop_prob``.

    Shape:
        - input: ``(B, *)``
        - output: same as input

    Examples:
        >>> DropPath(0.1).eval()(torch.ones(2, 3)).sum().item()
        6.0
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob!r}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        """Drop whole samples of ``x`` in training mode."""
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4g}"


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention`` (scale ``head_dim ** -0.5``).

    Keys ``qkv`` (one Linear for queries, keys, values; no bias by default) and ``proj``, with the head
    layout of the official release, so its weights load.

    Args:
        embed_dim: D.
        num_heads: attention heads; must divide D.
        qkv_bias: give ``qkv`` a bias.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after ``proj``.

    Shape:
        - x: ``(B, G, D)``; mask: ``(B, G)`` bool, True for real tokens
        - output: ``(B, G, D)``

    Examples:
        >>> tuple(Attention(8, 2)(torch.rand(2, 5, 8)).shape)
        (2, 5, 8)
    """

    def __init__(
        self, embed_dim: int, num_heads: int = 6, qkv_bias: bool = False, attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"num_heads must divide embed_dim={embed_dim}, got {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dim, embed_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Self-attention over the tokens of ``x``; ``mask`` (B, G) hides padding keys."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        dropout = self.attn_drop if self.training else 0.0
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and dropout == 0.0:
            out = _attention_low_precision(q, k, v, attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


def _attention_low_precision(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with bf16/fp16 products and the softmax computed in float32 inside the kernel.

    The same function as ``F.scaled_dot_product_attention``; on CPU its fused kernel is slower in bf16 than two
    batched GEMMs here. The scale is applied to ``q`` (T x d values, not T x T scores; exact for d = 64) and
    ATen's low-precision softmax accumulates in float32 and rounds once, so the (T x T) scores make no float32
    round trip: the probabilities are those of a float32 softmax rounded to the products' dtype, which is what
    the second product reads anyway.
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


class Mlp(nn.Module):
    """Two-layer MLP ``fc1 -> GELU (exact) -> fc2`` with optional dropout.

    Args:
        in_channels: input and output channels.
        hidden_channels: hidden width.
        drop: dropout after each layer.

    Shape:
        - input: ``(*, in_channels)``
        - output: ``(*, in_channels)``

    Examples:
        >>> tuple(Mlp(8, 32)(torch.rand(3, 8)).shape)
        (3, 8)
    """

    def __init__(self, in_channels: int, hidden_channels: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, in_channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP on the last dim."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: ``x + DropPath(Attn(LN1(x)))``, then ``x + DropPath(MLP(LN2(x)))``.

    Args:
        embed_dim: D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: give the qkv projection a bias.
        drop: dropout after attention and MLP projections.
        attn_drop: dropout on attention weights.
        drop_path: stochastic-depth rate of this block (Identity when 0).
        norm_eps: LayerNorm epsilon.

    Shape:
        - x: ``(B, G, D)``
        - output: ``(B, G, D)``

    Examples:
        >>> tuple(TransformerBlock(8, 2)(torch.rand(2, 5, 8)).shape)
        (2, 5, 8)
    """

    def __init__(
        self, embed_dim: int, num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = False, *,
        drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.attn = Attention(embed_dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.mlp = Mlp(embed_dim, int(embed_dim * mlp_ratio), drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Apply the block; ``mask`` (B, G) hides padding tokens as attention keys."""
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """The official initialisation, for ``module.apply``: Linear truncated normal (std 0.02, bias 0),
    LayerNorm weight 1 and bias 0; other layers keep PyTorch's defaults.

    Args:
        module: a submodule visited by ``nn.Module.apply``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TransformerEncoder(nn.Module):
    """The PatchAlign3D Transformer over patch tokens, with the positions re-added before every block.

    ``x <- block_i(x + pos)`` for i = 1..depth, then the final LayerNorm ``norm``. Drop-path rates rise
    linearly, ``linspace(0, drop_path_rate, depth)`` (block 0 has none). With ``cls_token=True`` a learned
    token (``cls_token``, zeros) and its position (``cls_pos``, standard normal) are prepended to x and
    pos, and dropped from the output.

    Official checkpoints hold this as ``blocks.blocks.{i}.*`` (a model attribute ``blocks`` holding this
    encoder, whose ModuleList is also ``blocks``); their ``norm``, ``cls_token`` and ``cls_pos`` sit at the
    model's top level, so a model either builds this with ``final_norm=False`` and owns them, or renames
    those three keys when loading.

    Args:
        embed_dim: D.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: give the qkv projections a bias (the official model has none).
        drop_path_rate: stochastic depth of the last block.
        drop_rate: dropout after attention and MLP projections.
        attn_drop_rate: dropout on attention weights.
        cls_token: prepend a learned class token.
        final_norm: apply the final LayerNorm (``norm``); Identity otherwise.
        norm_eps: LayerNorm epsilon.

    Shape:
        - x: ``(B, G, D)`` patch tokens, or ragged ``(Q, D)`` with ``batch (Q,)``
        - pos: ``(B, G, D)`` position embeddings (or None); ``(Q, D)`` when ragged
        - mask: ``(B, G)`` bool, True for real tokens (padded batches of clouds with different G)
        - output: ``(B, G, D)``, or ``(Q, D)`` when ragged

    Examples:
        >>> enc = TransformerEncoder(32, depth=2, num_heads=4)
        >>> tuple(enc(torch.rand(2, 10, 32), torch.rand(2, 10, 32)).shape)
        (2, 10, 32)
        >>> batch = torch.tensor([0, 0, 0, 1, 1])  # ragged: 3 tokens of cloud 0, 2 of cloud 1
        >>> tuple(enc(torch.rand(5, 32), torch.rand(5, 32), batch=batch).shape)
        (5, 32)
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path_rate: float = 0.1,
        *,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        cls_token: bool = False,
        final_norm: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, v in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"num_heads must divide embed_dim={embed_dim}, got {num_heads}")
        if not 0.0 <= drop_path_rate <= 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1], got {drop_path_rate!r}")
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.drop_path_rate = drop_path_rate
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim, num_heads, mlp_ratio, qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=rates[i], norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.apply(init_weights)
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.cls_pos = nn.Parameter(torch.randn(1, 1, embed_dim))
        else:
            self.register_parameter("cls_token", None)
            self.register_parameter("cls_pos", None)

    def _prepare(self, x: Tensor, pos: Tensor | None, mask: Tensor | None):
        check_rank(x, "x", 3, f"(B, G, {self.embed_dim}) float")
        if x.shape[-1] != self.embed_dim or not x.is_floating_point():
            raise ValueError(f"x must be (B, G, {self.embed_dim}) float, got shape {tuple(x.shape)} dtype {x.dtype}")
        if pos is not None and (not isinstance(pos, Tensor) or pos.shape != x.shape):
            got = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(f"pos must be None or have the shape of x {tuple(x.shape)}, got {got}")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                got = (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"mask must be None or (B, G) = {tuple(x.shape[:2])} bool, got {got}")
        if self.cls_token is not None:
            b = x.shape[0]
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            cls_pos = self.cls_pos.expand(b, -1, -1)
            pos = torch.cat([cls_pos, pos if pos is not None else torch.zeros_like(x[:, 1:])], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        return x, pos, mask

    def forward(
        self, x: Tensor, pos: Tensor | None = None, *, mask: Tensor | None = None, batch: Tensor | None = None
    ) -> Tensor:
        """Encode tokens ``x (B, G, D)`` with positions ``pos (B, G, D)``; returns ``(B, G, D)``.

        With ``batch`` the input is ragged, PyG style: ``x (Q, D)``, ``pos (Q, D)`` and ``batch (Q,)`` (the
        cloud of each token); tokens attend only within their cloud, and the output is ragged ``(Q, D)``.
        This is :func:`to_dense_batch`, the dense forward with the padding mask, and ``out[mask]``.
        """
        if batch is not None:
            if mask is not None:
                raise ValueError("mask must be None when batch is given (the padding mask comes from batch)")
            check_rank(x, "x", 2, f"(Q, {self.embed_dim}) float when batch is given")
            if pos is not None and (not isinstance(pos, Tensor) or pos.shape != x.shape):
                got = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
                raise ValueError(f"pos must be None or have the shape of x {tuple(x.shape)}, got {got}")
            dense, keep = to_dense_batch(x, batch)
            dense_pos = None if pos is None else to_dense_batch(pos, batch)[0]
            return self.forward(dense, dense_pos, mask=keep)[keep]
        x, pos, mask = self._prepare(x, pos, mask)
        for block in self.blocks:
            x = block(x if pos is None else x + pos, mask)
        x = self.norm(x)
        return x if self.cls_token is None else x[:, 1:]

    def forward_intermediates(
        self, x: Tensor, pos: Tensor | None = None, layers: int | Sequence[int] | None = None, *,
        mask: Tensor | None = None, norm: bool = False, stop_early: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Run the encoder and also return the outputs of chosen blocks.

        Args:
            x: patch tokens ``(B, G, D)``.
            pos: position embeddings ``(B, G, D)`` or None.
            layers: block indices (negative counts from the end, e.g. ``(3, 7, 11)`` as Point-MAE's
                segmentation reads), an int n for the last n blocks, or None for all blocks.
            mask: ``(B, G)`` bool, True for real tokens.
            norm: apply the final norm to each returned intermediate.
            stop_early: stop after the last requested block; the final output is then None.

        Returns:
            ``(final, intermediates)``: the ``forward`` output (or None with ``stop_early``) and a list of
            ``(B, G, D)`` tensors in the order of ``layers`` (cls token dropped).
        """
        if layers is None:
            wanted = list(range(self.depth))
        elif isinstance(layers, int):
            if not 1 <= layers <= self.depth:
                raise ValueError(f"layers must be an int in [1, depth={self.depth}] or a sequence, got {layers}")
            wanted = list(range(self.depth - layers, self.depth))
        else:
            wanted = []
            for i in layers:
                if not -self.depth <= i < self.depth:
                    raise ValueError(f"layers must be block indices in [-{self.depth}, {self.depth}), got {i}")
                wanted.append(i % self.depth)
        x, pos, mask = self._prepare(x, pos, mask)
        start = 0 if self.cls_token is None else 1
        found: dict[int, Tensor] = {}
        last = max(wanted) if wanted else -1
        for i, block in enumerate(self.blocks):
            x = block(x if pos is None else x + pos, mask)
            if i in wanted:
                found[i] = (self.norm(x) if norm else x)[:, start:]
            if stop_early and i >= last:
                return None, [found[j] for j in wanted]
        return self.norm(x)[:, start:], [found[j] for j in wanted]

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, depth={self.depth}, num_heads={self.num_heads}, "
            f"drop_path_rate={self.drop_path_rate}, cls_token={self.cls_token is not None}"
        )


class PatchEmbedding(nn.Sequential):
    """Position embedding of patch centres: ``Linear(C, 128) -> GELU -> Linear(128, D)``.

    Applied to the absolute centre coordinates. Keys ``0.*`` and ``2.*``, the official ``pos_embed``
    layout. Linear layers use the official initialisation (:func:`init_weights`).

    Args:
        in_channels: C, coordinates per centre.
        embed_dim: D.
        hidden_channels: hidden width.

    Shape:
        - centers: ``(B, G, C)`` or ``(Q, C)``
        - output: ``(B, G, D)`` or ``(Q, D)``

    Examples:
        >>> tuple(PatchEmbedding(3, 384)(torch.rand(2, 16, 3)).shape)
        (2, 16, 384)
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 384, hidden_channels: int = 128) -> None:
        for name, v in (("in_channels", in_channels), ("embed_dim", embed_dim), ("hidden_channels", hidden_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        super().__init__(nn.Linear(in_channels, hidden_channels), nn.GELU(), nn.Linear(hidden_channels, embed_dim))
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.apply(init_weights)

    def forward(self, centers: Tensor) -> Tensor:  # type: ignore[override]
        """Embed centres ``(..., C)`` into ``(..., D)``."""
        if not isinstance(centers, Tensor) or centers.dim() < 2 or centers.shape[-1] != self.in_channels:
            got = tuple(centers.shape) if isinstance(centers, Tensor) else type(centers).__name__
            raise ValueError(f"centers must be (B, G, {self.in_channels}) or (Q, {self.in_channels}), got {got}")
        return super().forward(centers)
