"""A plain-PyTorch re-statement of the official PatchAlign3D encoder (the Point-BERT backbone).

Written from the facts about the official release (``reference/patchalign3d_facts.md`` section 1), not copied
from it. It keeps the official layout on purpose, so it serves as the *baseline* that pa3d's
:class:`~pa3d_models.PatchEncoder` is benchmarked against and as an independent reference for checkpoint
tests:

- the tokenizer is 1x1 ``Conv1d`` on channels-first ``(B*G, C, K)`` patches, with the 256-d max-pooled global
  vector tiled over the K points and concatenated *in front of* the per-point features (512 channels) before
  the second ``Conv1d(512 -> 512)``: the unfactorised form, which spends a 512x512 matmul on every point;
- attention is written out by hand: ``softmax(q @ k^T * head_dim^-0.5) @ v``;
- the position sequence ``[cls_pos; pos_embed(centers)]`` is re-added at the input of every block;
- a cls token is prepended, a final LayerNorm is applied to all tokens, and the cls token is dropped;
- the state-dict keys are exactly the official ones (``cls_token``, ``cls_pos``, ``encoder.first_conv.*``,
  ``encoder.second_conv.*``, ``reduce_dim.*``, ``pos_embed.{0,2}.*``, ``blocks.blocks.{i}.*``, ``norm.*``:
  160 keys, 21,858,816 parameters with the defaults), so ``ReferenceEncoder`` and ``PatchEncoder`` load
  each other's weights.

Grouping is re-stated too (the official release uses CUDA kernels): FPS from point 0 with a plain loop over
the samples, and kNN by a full distance matrix and ``topk``. The official FPS kernel's quirk of never
picking a point within ~0.03 of the origin after the first pick is *not* reproduced.

Dimensions: B batch, N points, G patches, K points per patch, C channels, D embedding dim.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "ReferenceEncoder",
    "reference_fps",
    "reference_knn",
    "reference_group",
]


def reference_fps(points: Tensor, num_samples: int) -> Tensor:
    """Farthest point sampling from point 0, one sample per iteration (squared Euclidean distances).

    Args:
        points: dense point clouds.
        num_samples: S, centres per cloud (at most N).

    Returns:
        Per-cloud indices of the picks, the first being 0.

    Shape:
        - points: ``(B, N, 3)``; output: ``(B, S)`` long.

    Examples:
        >>> reference_fps(torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0]]]), 2)
        tensor([[0, 1]])
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    B, N, _ = points.shape
    if not 1 <= num_samples <= N:
        raise ValueError(f"num_samples must be in [1, N={N}], got {num_samples}")
    idx = torch.zeros(B, num_samples, dtype=torch.long, device=points.device)
    dist = torch.full((B, N), float("inf"), dtype=points.dtype, device=points.device)
    last = torch.zeros(B, dtype=torch.long, device=points.device)
    rows = torch.arange(B, device=points.device)
    for s in range(1, num_samples):
        d = ((points - points[rows, last][:, None, :]) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(dim=1)
        idx[:, s] = last
    return idx


def reference_knn(points: Tensor, queries: Tensor, k: int) -> Tensor:
    """The k nearest points of each query by a full distance matrix (ascending distance).

    Args:
        points: the reference clouds.
        queries: the query points of each cloud.
        k: neighbours per query.

    Returns:
        Per-cloud indices into ``points``.

    Shape:
        - points: ``(B, N, 3)``; queries: ``(B, M, 3)``; output: ``(B, M, k)`` long.

    Examples:
        >>> reference_knn(torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]]]), torch.tensor([[[0.9, 0, 0]]]), 2)
        tensor([[[1, 0]]])
    """
    d = torch.cdist(queries, points)
    return d.topk(k, dim=-1, largest=False).indices


def reference_group(points: Tensor, num_groups: int, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The official patching: FPS centres, their kNN, neighbourhoods relative to the centre.

    Args:
        points: dense point clouds.
        num_groups: G, patches per cloud.
        group_size: K, points per patch (the centre is one of them).

    Returns:
        ``(neighborhoods, centers, patch_idx)``.

    Shape:
        - points: ``(B, N, 3)``; neighborhoods: ``(B, G, K, 3)``; centers: ``(B, G, 3)``;
          patch_idx: ``(B, G, K)`` long.

    Examples:
        >>> nb, c, idx = reference_group(torch.rand(2, 64, 3), 8, 4)
        >>> nb.shape, c.shape, idx.shape
        (torch.Size([2, 8, 4, 3]), torch.Size([2, 8, 3]), torch.Size([2, 8, 4]))
    """
    B = points.shape[0]
    rows = torch.arange(B, device=points.device)
    center_idx = reference_fps(points, num_groups)
    centers = points[rows[:, None], center_idx]
    patch_idx = reference_knn(points, centers, group_size)
    neighborhoods = points[rows[:, None, None], patch_idx] - centers[:, :, None, :]
    return neighborhoods, centers, patch_idx


class _Tokenizer(nn.Module):
    """The official mini-PointNet (``Encoder``), channels-first, with the unfactorised global-first concat."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, out_channels, 1)
        )

    def forward(self, neighborhoods: Tensor) -> Tensor:
        B, G = neighborhoods.shape[:2]
        x = rearrange(neighborhoods, "b g k c -> (b g) c k")
        f = self.first_conv(x)  # (BG, 256, K)
        glob = f.max(dim=2, keepdim=True).values  # (BG, 256, 1)
        f = torch.cat([glob.expand(-1, -1, f.shape[2]), f], dim=1)  # global first -> (BG, 512, K)
        f = self.second_conv(f).max(dim=2).values  # (BG, C, )
        return rearrange(f, "(b g) c -> b g c", b=B, g=G)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        qkv = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj(rearrange(attn @ v, "b h t d -> b t (h d)"))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class _Blocks(nn.Module):
    """Held as ``blocks`` with its ModuleList also named ``blocks`` (the official ``blocks.blocks.{i}`` keys)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, dpr: float) -> None:
        super().__init__()
        rates = torch.linspace(0, dpr, depth).tolist() if depth > 1 else [0.0]
        self.blocks = nn.ModuleList(_Block(dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class ReferenceEncoder(nn.Module):
    """The official PatchAlign3D encoder, re-stated in plain PyTorch: the benchmark baseline.

    See the module docstring for what is kept from the official layout. Its state dict has the official keys
    and loads into (and from) :class:`~pa3d_models.PatchEncoder` with the same configuration.

    Args:
        in_channels: input channels per point (3: xyz).
        num_groups: G, patches per cloud.
        group_size: K, points per patch.
        tokenizer_dim: width of the mini-PointNet token (the official ``encoder_dims``, 256).
        embed_dim: Transformer width D (``trans_dim``, 384).
        depth: number of Transformer blocks (12).
        num_heads: attention heads (6).
        mlp_ratio: MLP hidden width / D (4).
        qkv_bias: bias in the qkv projection (False, as released).
        drop_path_rate: stochastic depth of the last block, linear from 0 (0.1).

    Shape:
        - points: ``(B, N, 3)`` (the official ``forward`` takes ``(B, 3, N)``; pa3d's doors are channels-last)
        - output: ``(B, G, D)`` (the official ``patch_emb`` is its transpose, ``(B, D, G)``)

    Examples:
        >>> ref = ReferenceEncoder(num_groups=8, group_size=4, embed_dim=16, depth=1, num_heads=2).eval()
        >>> ref(torch.rand(2, 64, 3)).shape
        torch.Size([2, 8, 16])
        >>> len(ReferenceEncoder().state_dict())
        160
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        num_groups: int = 128,
        group_size: int = 32,
        tokenizer_dim: int = 256,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size
        # Registration order = the official one.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.encoder = _Tokenizer(in_channels, tokenizer_dim)
        self.reduce_dim = nn.Linear(tokenizer_dim, embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, embed_dim))
        self.blocks = _Blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, group_size={self.group_size}"

    def forward_tokens(self, neighborhoods: Tensor, centers: Tensor) -> Tensor:
        """Patches -> features: ``neighborhoods (B, G, K, 3)``, ``centers (B, G, 3)`` -> ``(B, G, D)``."""
        tokens = self.reduce_dim(self.encoder(neighborhoods))
        pos = self.pos_embed(centers)
        B = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(B, -1, -1), pos], dim=1)
        x = self.norm(self.blocks(x, pos))
        return x[:, 1:]

    def forward_patches(self, points: Tensor) -> dict[str, Tensor]:
        """Group with :func:`reference_group` and encode: ``feats (B, G, D)``, ``centers``, ``patch_idx``."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3) float, got {tuple(points.shape)}")
        neighborhoods, centers, patch_idx = reference_group(points, self.num_groups, self.group_size)
        return {"feats": self.forward_tokens(neighborhoods, centers), "centers": centers, "patch_idx": patch_idx}

    def forward(self, points: Tensor) -> Tensor:
        """Encode ``points (B, N, 3)`` into patch features ``(B, G, D)``."""
        return self.forward_patches(points)["feats"]
