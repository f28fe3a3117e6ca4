"""The PatchAlign3D model: a Point-BERT-layout patch encoder with a teacher head and a text head.

``PatchEncoder`` composes the pa3d_layers blocks (grouper, mini-PointNet tokenizer, reduce to the
Transformer width, centre embedding, cls token, Transformer, final norm) with the official release's
state-dict keys, so the official ``"model"`` dict loads strictly. ``PatchAlign3D`` adds the Stage-1 head
(to the 2D teacher's space, T = 768 for DINOv2-base) and the Stage-2 head (to the text space, D = 1280 for
open_clip ViT-bigG-14), both L2-normalised, and owns the logit scale and bias the losses use.

The model never permutes axes: dataset conventions (the official Y/Z swap, up axes) are data transforms
applied before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pa3d_layers import PatchEmbedding, PatchGrouper, PointNetTokenizer, TransformerEncoder
from pa3d_layers._checks import check_batch_vector, check_finite, check_points, check_tokenizer_widths
from pa3d_losses import LogitScaleBias

from .checkpoint import PretrainedMixin

if TYPE_CHECKING:  # pragma: no cover
    from .text import TextBank, TextEncoder

__all__ = [
    "PatchEncoder",
    "PatchAlign3D",
    "SegmentResult",
    "MODELS",
    "register_model",
    "check_model_kwargs",
    "create_model",
    "list_models",
    "freeze_for_stage2",
    "STAGE2_TRAINABLE",
]


def _unpack(points: Any, batch: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Accept a dense tensor, ``(pos, batch)`` or a PyG ``Data``/``Batch`` (``.pos`` and ``.batch``)."""
    if not isinstance(points, Tensor) and hasattr(points, "pos"):
        pos = points.pos
        if batch is None:
            batch = getattr(points, "batch", None)
            if batch is None:  # a single Data object
                batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return pos, batch
    return points, batch


class PatchEncoder(nn.Module):
    """Point cloud -> one feature per patch: the PatchAlign3D / Point-BERT backbone.

    FPS (from point 0) picks ``num_groups`` centres, kNN gathers ``group_size`` points around each, a
    mini-PointNet turns each patch into a ``tokenizer_dim`` token, ``reduce_dim`` maps it to ``embed_dim``,
    an MLP embeds the absolute centre (re-added before every block), a cls token is prepended, ``depth``
    pre-norm Transformer blocks and a final LayerNorm follow, and the cls token is dropped.

    The state-dict keys are the official release's (``cls_token``, ``cls_pos``, ``encoder.*``,
    ``reduce_dim.*``, ``pos_embed.*``, ``blocks.blocks.{i}.*``, ``norm.*``: 160 keys and 21,858,816
    parameters for the defaults).

    Args:
        in_channels: input channels per point (3: xyz).
        num_groups: G, patches per cloud.
        group_size: K, points per patch.
        tokenizer_dim: width of the mini-PointNet token (256).
        tokenizer_hidden_dims: the mini-PointNet's inner widths ``(H1, H2, H3)`` (official ``(128, 256, 512)``;
            see :class:`~pa3d_layers.PointNetTokenizer`).
        embed_dim: Transformer width D (384).
        depth: number of Transformer blocks (12).
        num_heads: attention heads (6).
        mlp_ratio: MLP hidden width / D (4).
        qkv_bias: bias in the qkv projection (False, as released).
        drop_path_rate: stochastic depth of the last block; linear from 0 (0.1).
        pos_hidden_dim: hidden width of the centre embedding MLP (128).
        backend: grouping backend, ``"auto"``, ``"torch"`` or ``"cluster"``.

    Shape:
        - points: ``(B, N, 3)``, or ragged ``(P, 3)`` with ``batch (P,)``
        - output of :meth:`forward`: ``(B, G, D)``

    Examples:
        >>> enc = PatchEncoder(num_groups=8, group_size=4, tokenizer_dim=16, embed_dim=16, depth=1, num_heads=2)
        >>> enc(torch.rand(2, 64, 3)).shape
        torch.Size([2, 8, 16])
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        num_groups: int = 128,
        group_size: int = 32,
        tokenizer_dim: int = 256,
        tokenizer_hidden_dims: Sequence[int] = (128, 256, 512),
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path_rate: float = 0.1,
        pos_hidden_dim: int = 128,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(
                f"num_groups must be an int >= 1 (a fixed G per cloud; the Transformer batches clouds densely), "
                f"got {num_groups!r}"
            )
        if in_channels != 3:
            raise ValueError(f"in_channels must be 3 (xyz; extra features are not supported yet), got {in_channels}")
        self._config = dict(
            in_channels=in_channels,
            num_groups=num_groups,
            group_size=group_size,
            tokenizer_dim=tokenizer_dim,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=float(mlp_ratio),
            qkv_bias=bool(qkv_bias),
            drop_path_rate=float(drop_path_rate),
            pos_hidden_dim=pos_hidden_dim,
            backend=backend,
        )
        # Registration order = the official one (cls_token, cls_pos, encoder, reduce_dim, pos_embed, blocks, norm).
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.encoder = PointNetTokenizer(in_channels, embed_dim=tokenizer_dim, hidden_dims=tokenizer_hidden_dims)
        self._config["tokenizer_hidden_dims"] = list(self.encoder.hidden_dims)  # validated there; JSON: a list
        self.reduce_dim = nn.Linear(tokenizer_dim, embed_dim)
        self.pos_embed = PatchEmbedding(3, embed_dim, hidden_channels=pos_hidden_dim)
        self.blocks = TransformerEncoder(
            embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            final_norm=False,  # the final norm and the cls token/position live here, under official keys
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.grouper = PatchGrouper(num_groups, group_size, backend=backend)
        self._init_linear_and_norm()

    def _init_linear_and_norm(self) -> None:
        """The release's init: Linear trunc-normal std 0.02 with zero bias, LayerNorm 1/0 (the blocks and
        ``pos_embed`` are initialised so by pa3d_layers already)."""
        nn.init.trunc_normal_(self.reduce_dim.weight, std=0.02)
        nn.init.zeros_(self.reduce_dim.bias)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable)."""
        return dict(self._config)

    @property
    def embed_dim(self) -> int:
        return int(self._config["embed_dim"])

    @property
    def num_groups(self) -> int:
        return int(self._config["num_groups"])

    def group(self, points: Any, batch: Tensor | None = None) -> dict[str, Tensor]:
        """Group ``points`` into patches, always returning dense ``(B, G, ...)`` tensors.

        For ragged input ``patch_idx`` holds row indices into the stacked ``(P, 3)`` points and
        ``center_batch`` is ``(B, G)``.
        """
        points, batch = _unpack(points, batch)
        if batch is None:  # group_points checks the points (and skips the data-dependent checks when compiling)
            groups = self.grouper(points)
            return {
                "centers": groups.centers,
                "neighborhoods": groups.neighborhoods,
                "patch_idx": groups.patch_idx,
            }
        check_points(points, "points", ragged=True)
        check_batch_vector(batch, points.shape[0])
        groups = self.grouper(points, batch)
        G = self.num_groups
        Q = groups.centers.shape[0]
        B = int(batch[-1]) + 1
        if Q != B * G:  # pragma: no cover - the grouper gives G per cloud
            raise ValueError(f"ragged grouping gave {Q} patches for {B} clouds, expected {B * G}")
        return {
            "centers": groups.centers.reshape(B, G, 3),
            "neighborhoods": groups.neighborhoods.reshape(B, G, -1, 3),
            "patch_idx": groups.patch_idx.reshape(B, G, -1),
            "center_batch": groups.center_batch.reshape(B, G),
        }

    def forward_tokens(self, neighborhoods: Tensor, centers: Tensor) -> Tensor:
        """Patches -> features: ``neighborhoods (B, G, K, 3)``, ``centers (B, G, 3)`` -> ``(B, G, D)``.

        Points of another float dtype than the model's (float64 from numpy, half) are grouped in their own
        precision and cast to the model's dtype here, at the tokenizer's input.
        """
        dtype = self.cls_token.dtype
        neighborhoods, centers = neighborhoods.to(dtype), centers.to(dtype)
        tokens = self.reduce_dim(self.encoder(neighborhoods))
        pos = self.pos_embed(centers)
        B = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(B, -1, -1), pos], dim=1)
        x = self.blocks(x, pos)
        return self.norm(x)[:, 1:]

    def forward_patches(self, points: Any, batch: Tensor | None = None) -> dict[str, Tensor]:
        """Group and encode: a dict with ``feats (B, G, D)``, ``centers``, ``patch_idx`` (and ``center_batch``)."""
        groups = self.group(points, batch)
        out = {k: v for k, v in groups.items() if k != "neighborhoods"}
        out["feats"] = self.forward_tokens(groups["neighborhoods"], groups["centers"])
        return out

    def forward(self, points: Any, batch: Tensor | None = None) -> Tensor:
        """Encode ``points (B, N, 3)`` (or ragged ``(P, 3)`` + ``batch``) into patch features ``(B, G, D)``."""
        return self.forward_patches(points, batch)["feats"]


class SegmentResult(NamedTuple):
    """Per-point zero-shot segmentation (for a ragged batch, :meth:`PatchAlign3D.segment` returns one per cloud).

    Attributes:
        labels: index into the part names per point, -1 where the score is below ``min_score``;
            ``(N,)`` for one shape, ``(B, N)`` for a batch.
        scores: the model's probability for the chosen part, ``sigmoid(scale * cos + bias)``; same shape.
        similarities: cosine similarity of every point (through its patch) with every part name,
            ``(N, L)`` or ``(B, N, L)``.
    """

    labels: Tensor
    scores: Tensor
    similarities: Tensor


class PatchAlign3D(PretrainedMixin, nn.Module):
    """Patch encoder + Stage-1 teacher head + Stage-2 text head + learnable logit scale and bias.

    Args:
        encoder: the backbone; None builds ``PatchEncoder(**encoder_kwargs)``.
        teacher_dim: T, width of the Stage-1 head (768: DINOv2-base).
        text_dim: width of the Stage-2 head (1280: open_clip ViT-bigG-14).
        logit_mode: ``"paper"`` (scale initialised to 10 and bias to -10, both learnable) or ``"official"``
            (log-scale initialised to ln(1/0.07), scale clamped at 100, no bias).
        logit_scale_init: initial scale (paper: 10); ignored in official mode.
        logit_bias_init: initial bias (paper: -10); ignored in official mode.
        **encoder_kwargs: passed to :class:`PatchEncoder` when ``encoder`` is None.

    Shape:
        - points: ``(B, N, 3)`` or ragged ``(P, 3)`` with ``batch (P,)``
        - patch_feats: ``(B, G, D)``; teacher_feats: ``(B, G, T)``

    Examples:
        >>> model = create_model("patchalign3d_tiny")
        >>> out = model(torch.rand(2, 256, 3), return_teacher=True)
        >>> tuple(out["patch_feats"].shape), tuple(out["teacher_feats"].shape)
        ((2, 32, 64), (2, 32, 32))
    """

    def __init__(
        self,
        encoder: PatchEncoder | None = None,
        *,
        teacher_dim: int = 768,
        text_dim: int = 1280,
        logit_mode: str = "paper",
        logit_scale_init: float = 10.0,
        logit_bias_init: float = -10.0,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        if encoder is None:
            encoder = PatchEncoder(**encoder_kwargs)
        elif encoder_kwargs:
            raise ValueError(f"pass either an encoder or encoder keyword arguments, not both: {sorted(encoder_kwargs)}")
        if logit_mode not in ("paper", "official"):
            raise ValueError(f"logit_mode must be 'paper' or 'official', got {logit_mode!r}")
        self.encoder = encoder
        D = encoder.embed_dim
        self.teacher_head = nn.Linear(D, teacher_dim)
        self.text_head = nn.Linear(D, text_dim)
        for head in (self.teacher_head, self.text_head):
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        self.logit_mode = logit_mode
        self.logit = _make_logit_module(logit_mode, logit_scale_init, logit_bias_init)
        self._head_config = dict(
            teacher_dim=int(teacher_dim),
            text_dim=int(text_dim),
            logit_mode=logit_mode,
            logit_scale_init=float(logit_scale_init),
            logit_bias_init=float(logit_bias_init),
        )
        self.freeze_bn_stats = False

    # -- config and checkpoints ----------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model: ``{"encoder": {...}, "teacher_dim": ..., ...}``."""
        return {"encoder": self.encoder.config, **self._head_config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchAlign3D:
        """Build a model from :attr:`config`."""
        config = dict(config)
        enc = PatchEncoder(**config.pop("encoder", {}))
        return cls(enc, **config)

    @property
    def text_dim(self) -> int:
        return int(self._head_config["text_dim"])

    @property
    def teacher_dim(self) -> int:
        return int(self._head_config["teacher_dim"])

    def set_official_log_scale(self, log_scale: Tensor | float) -> None:
        """Set the official-mode temperature from a release checkpoint's ``temp.log_scale``."""
        if self.logit_mode != "official":
            raise ValueError("set_official_log_scale needs logit_mode='official'")
        _set_log_scale(self.logit, log_scale)

    # -- forward --------------------------------------------------------------------------------------------
    def logit_params(self) -> tuple[Tensor, Tensor | None]:
        """``(logit_scale, logit_bias)`` as 0-dim tensors (bias None in official mode)."""
        return _logit_values(self.logit)

    def forward(
        self, points: Any, batch: Tensor | None = None, *, return_teacher: bool = False, return_text: bool = True
    ) -> dict[str, Tensor | None]:
        """Run the model; the output dict is the loss protocol of pa3d_losses.

        Args:
            points: ``(B, N, 3)`` dense; or ``(P, 3)`` with ``batch``; or a PyG ``Batch``.
            batch: ``(P,)`` cloud index of each point for ragged input.
            return_teacher: also compute ``teacher_feats`` (Stage 1).
            return_text: compute ``patch_feats`` (Stage 2; on by default).

        Returns:
            ``patch_feats (B, G, D)`` (L2-normalised text-head output), ``teacher_feats (B, G, T)`` when
            asked, ``encoder_feats (B, G, D_enc)``, ``centers (B, G, 3)``, ``patch_idx (B, G, K)`` (per-shape
            indices; row indices into the stacked points for ragged input, with ``center_batch (B, G)``),
            ``logit_scale`` and ``logit_bias`` (0-dim; bias None in official mode).
        """
        enc = self.encoder.forward_patches(points, batch)
        feats = enc.pop("feats")
        scale, bias = self.logit_params()
        out: dict[str, Tensor | None] = {
            "encoder_feats": feats,
            **enc,
            "logit_scale": scale,
            "logit_bias": bias,
        }
        if return_text:
            out["patch_feats"] = F.normalize(self.text_head(feats), dim=-1)
        if return_teacher:
            out["teacher_feats"] = F.normalize(self.teacher_head(feats), dim=-1)
        return out

    # -- train/eval with frozen BatchNorm ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> PatchAlign3D:
        super().train(mode)
        if mode and self.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters()
                ):
                    m.eval()
        return self

    # -- zero-shot segmentation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def segment(
        self,
        points: Any,
        part_names: Sequence[str],
        text: TextEncoder | TextBank | Tensor,
        *,
        batch: Tensor | None = None,
        assign: str = "nearest",
        min_score: float | None = None,
        k: int = 3,
        calibration: str = "none",
    ) -> SegmentResult | list[SegmentResult]:
        """Zero-shot part segmentation: score every patch against the part names, propagate to points.

        The points are cast to the model's dtype at the door (float64, half and bfloat16 inputs work); the
        values that can silently spoil a result are checked here, outside the compilable forward: points,
        weights and text embeddings must be finite and ``min_score`` a finite number.

        Args:
            points: one shape ``(N, 3)``, a dense batch ``(B, N, 3)``, ragged ``(P, 3)`` with ``batch``, or a
                PyG ``Batch``/``Data`` (``.pos``, ``.batch``).
            part_names: the ``L`` part names (unique after cleaning).
            text: a text encoder, a :class:`~pa3d_models.TextBank` holding the names, or their embeddings
                ``(L, D)``.
            batch: ``(P,)`` cloud index of each point for ragged ``points``.
            assign: patch -> point propagation: ``"nearest"`` centre (the release's default),
                ``"membership"`` (mean over the patches holding the point) or ``"idw"``.
            min_score: points whose best score is below this get label -1 (no label).
            k: neighbours for ``"idw"``.
            calibration: how the labels are read from the similarities: ``"none"`` (the best-scoring name
                per point, the release's rule) or ``"prior"`` (:func:`~pa3d_layers.prior_correction` at its
                default strength over each shape's points first, with the model's logit scale: a name that
                wins over the whole shape is lowered; docs/results.md has what it does on L-PSB). It assumes
                the names are those of the shape's category; ``scores`` and ``similarities`` stay the model's.

        Returns:
            :class:`SegmentResult` with ``labels``, ``scores`` and ``similarities`` (``(N,)``/``(N, L)`` for
            one shape, ``(B, N)``/``(B, N, L)`` for a dense batch); for ragged input a list with one
            :class:`SegmentResult` per cloud, in cloud order.

        Shape:
            - points: ``(N, 3)``, ``(B, N, 3)`` or ``(P, 3)`` with ``batch (P,)``
            - labels, scores: ``(N,)``, ``(B, N)`` or per cloud ``(N_b,)``
            - similarities: ``(N, L)``, ``(B, N, L)`` or per cloud ``(N_b, L)``

        Examples:
            >>> from pa3d_models import FixedTextEncoder
            >>> m = create_model("patchalign3d_tiny").eval()
            >>> res = m.segment(torch.rand(300, 3), ["leg", "seat"], FixedTextEncoder(dim=64))
            >>> tuple(res.labels.shape), tuple(res.similarities.shape)
            ((300,), (300, 2))
            >>> pos, b = torch.rand(500, 3), torch.cat([torch.zeros(200), torch.ones(300)]).long()
            >>> [tuple(r.labels.shape) for r in m.segment(pos, ["leg", "seat"], FixedTextEncoder(dim=64), batch=b)]
            [(200,), (300,)]
        """
        import math

        from pa3d_layers import prior_correction, propagate_to_points
        from pa3d_layers.calibration import check_calibration

        from .text import _check_names, clean_part_name, text_embeddings

        check_calibration(calibration)
        names = _check_names(part_names, "part_names")
        cleaned = [clean_part_name(n) for n in names]
        dup = sorted({n for n in cleaned if cleaned.count(n) > 1})
        if dup:
            raise ValueError(f"part_names must be unique, got duplicates {dup}")
        if min_score is not None:
            if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score):
                raise ValueError(f"min_score must be a finite number or None, got {min_score!r}")
        text_feats = text_embeddings(text, names)
        if not isinstance(text_feats, Tensor) or text_feats.dim() != 2 or text_feats.shape[0] != len(names):
            shape = tuple(text_feats.shape) if isinstance(text_feats, Tensor) else type(text_feats).__name__
            raise ValueError(f"text embeddings must be (L, D) with L = {len(names)}, got {shape}")
        if text_feats.shape[1] != self.text_dim:
            raise ValueError(
                f"text dimension {text_feats.shape[1]} does not match the model's text head ({self.text_dim}): "
                "use the text encoder the checkpoint was trained with"
            )
        if not bool(torch.isfinite(text_feats).all()):
            raise ValueError(
                f"text embeddings must be finite, got {int((~torch.isfinite(text_feats)).any(-1).sum())} of "
                f"{len(names)} part names with NaN/Inf features"
            )
        for tensor_name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"the model's weights must be finite, but {tensor_name} holds NaN/Inf values")

        pos, batch = _unpack(points, batch)
        param = next(self.parameters())
        ragged = batch is not None
        if ragged:
            check_points(pos, "points", ragged=True)
            check_batch_vector(batch, pos.shape[0])
            pts = pos
        else:
            single = isinstance(pos, Tensor) and pos.dim() == 2
            pts = pos[None] if single else pos
            check_points(pts, "points", ragged=False)
        if pts.dtype != param.dtype:  # cast at the door; a value that overflows the model's dtype is refused
            pts = pts.to(param.dtype)
            check_finite(pts, f"points (cast to {param.dtype})")
        pts = pts.to(param.device)
        was_training = self.training
        self.eval()
        try:
            out = self(pts, batch.to(param.device) if ragged else None)
        finally:
            self.train(was_training)
        patch = out["patch_feats"]
        text_feats = F.normalize(text_feats.to(patch), dim=-1)
        sim = torch.einsum("bgd,ld->bgl", patch, text_feats)
        scale, bias = out["logit_scale"], out["logit_bias"]

        def finish(point_sim: Tensor) -> SegmentResult:
            if calibration == "prior":  # the mean over the points of each shape (dim -2 of (B, N, L))
                labels = prior_correction(point_sim, scale.detach()).argmax(dim=-1)
                best = point_sim.gather(-1, labels[..., None])[..., 0]
            else:
                best, labels = point_sim.max(dim=-1)
            scores = torch.sigmoid(scale * best + (bias if bias is not None else 0.0))
            if min_score is not None:
                labels = torch.where(scores >= min_score, labels, torch.full_like(labels, -1))
            return SegmentResult(labels, scores, point_sim)

        if not ragged:
            point_sim = propagate_to_points(sim, pts, out["centers"], patch_idx=out["patch_idx"], mode=assign, k=k)
            res = finish(point_sim)
            return SegmentResult(*(t[0] for t in res)) if single else res
        counts = torch.bincount(batch.to(param.device)).tolist()
        results: list[SegmentResult] = []
        start = 0
        for b, n in enumerate(counts):
            cloud = pts[start : start + n][None]
            idx = (out["patch_idx"][b] - start)[None]
            point_sim = propagate_to_points(sim[b : b + 1], cloud, out["centers"][b : b + 1], patch_idx=idx,
                                            mode=assign, k=k)
            results.append(SegmentResult(*(t[0] for t in finish(point_sim))))
            start += n
        return results


# ------------------------------------------------------------------------------------------ logit module


def _make_logit_module(mode: str, scale_init: float, bias_init: float) -> nn.Module:
    if mode == "official":
        return LogitScaleBias(mode="official")
    return LogitScaleBias(mode="paper", init_scale=scale_init, init_bias=bias_init)


def _logit_values(module: LogitScaleBias) -> tuple[Tensor, Tensor | None]:
    scale, bias = module()
    return scale, bias


def _set_log_scale(module: LogitScaleBias, log_scale: Tensor | float) -> None:
    value = torch.as_tensor(log_scale, dtype=torch.float32)
    with torch.no_grad():
        module.log_scale.copy_(value.reshape(module.log_scale.shape).to(module.log_scale))


# ------------------------------------------------------------------------------------------------ registry

#: Registered model configs: name -> keyword arguments of :class:`PatchAlign3D` (encoder keys flat).
MODELS: dict[str, dict[str, Any]] = {}


_POSITIVE_INTS = ("in_channels", "num_groups", "group_size", "tokenizer_dim", "embed_dim", "depth", "num_heads",
                  "pos_hidden_dim", "teacher_dim", "text_dim")


def _accepted_model_kwargs() -> set[str]:
    import inspect

    head = set(inspect.signature(PatchAlign3D.__init__).parameters) - {"self", "encoder", "encoder_kwargs"}
    return head | (set(inspect.signature(PatchEncoder.__init__).parameters) - {"self"})


def check_model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown or invalid :class:`PatchAlign3D` / :class:`PatchEncoder` keywords, naming the argument.

    Called by :func:`create_model` and :func:`register_model` before anything is built.

    Args:
        config: flat keyword arguments (encoder keys beside the head's).

    Returns:
        ``config`` unchanged.

    Examples:
        >>> check_model_kwargs({"text_dim": 0})
        Traceback (most recent call last):
        ...
        ValueError: text_dim must be an int >= 1, got 0
    """
    import math

    unknown = sorted(set(config) - _accepted_model_kwargs())
    if unknown:
        raise ValueError(f"unknown model argument(s) {unknown}; accepted: {sorted(_accepted_model_kwargs())}")
    for key in _POSITIVE_INTS:
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an int >= 1, got {value!r}")

    def number(key: str) -> float | None:
        value = config.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return float(value)

    if (ratio := number("mlp_ratio")) is not None and ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {config['mlp_ratio']!r}")
    if "tokenizer_hidden_dims" in config:
        check_tokenizer_widths(config["tokenizer_hidden_dims"], "tokenizer_hidden_dims")
    if (rate := number("drop_path_rate")) is not None and not 0 <= rate < 1:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {config['drop_path_rate']!r}")
    if (scale := number("logit_scale_init")) is not None and scale <= 0:
        raise ValueError(f"logit_scale_init must be > 0, got {config['logit_scale_init']!r}")
    number("logit_bias_init")
    embed_dim, num_heads = config.get("embed_dim"), config.get("num_heads")
    if embed_dim is not None and num_heads is not None and embed_dim % num_heads:
        raise ValueError(f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim}, num_heads={num_heads}")
    for key, allowed in (("logit_mode", ("paper", "official")), ("backend", ("auto", "torch", "cluster"))):
        if key in config and (not isinstance(config[key], str) or config[key] not in allowed):
            raise ValueError(f"{key} must be one of {allowed}, got {config[key]!r}")
    if "qkv_bias" in config and not isinstance(config["qkv_bias"], bool):
        raise ValueError(f"qkv_bias must be a bool, got {config['qkv_bias']!r}")
    return config


def register_model(name: str, **config: Any) -> None:
    """Register a named config for :func:`create_model` (tested automatically by the registry test).

    The config is checked now (:func:`check_model_kwargs`), so a bad registration fails where it is made.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    MODELS[name] = dict(check_model_kwargs(dict(config)))


register_model(
    "patchalign3d_base",  # the paper / official release
    num_groups=128,
    group_size=32,
    tokenizer_dim=256,
    embed_dim=384,
    depth=12,
    num_heads=6,
    mlp_ratio=4.0,
    drop_path_rate=0.1,
    teacher_dim=768,
    text_dim=1280,
)
register_model(
    "patchalign3d_tiny",  # tests and CPU demos
    num_groups=32,
    group_size=16,
    tokenizer_dim=64,
    embed_dim=64,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    drop_path_rate=0.0,
    pos_hidden_dim=32,
    teacher_dim=32,
    text_dim=64,
)

register_model(
    "patchalign3d_small",  # the CPU demo (`make demo`): the paper's architecture, narrower and shallower
    num_groups=64,
    group_size=16,
    tokenizer_dim=128,
    # half the official mini-PointNet widths: a third of its work per point, 1.5x the training steps in a
    # budget, +4 held-out mIoU on L-PSB in 4-minute probes (docs/results.md)
    tokenizer_hidden_dims=(64, 128, 256),
    embed_dim=128,
    depth=4,
    num_heads=4,
    mlp_ratio=4.0,
    drop_path_rate=0.0,
    pos_hidden_dim=64,
    teacher_dim=384,
    text_dim=384,
)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(name: str = "patchalign3d_base", **overrides: Any) -> PatchAlign3D:
    """Build a registered model, with keyword overrides.

    Args:
        name: a registered name (:func:`list_models`): ``"patchalign3d_base"`` (the paper) or
            ``"patchalign3d_tiny"`` (tests, CPU demos).
        **overrides: any :class:`PatchAlign3D` / :class:`PatchEncoder` keyword, e.g. ``text_dim=384``.

    Returns:
        A randomly initialised model.

    Examples:
        >>> create_model("patchalign3d_tiny", text_dim=384).text_dim
        384
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}")
    config = check_model_kwargs({**MODELS[name], **overrides})
    return PatchAlign3D(**config)


# ------------------------------------------------------------------------------------------------ freezing

#: Parameter-name patterns trained in Stage 2 (relative to the PatchAlign3D model; ``{last}`` = depth - 1).
STAGE2_TRAINABLE: dict[str, tuple[str, ...]] = {
    "paper": ("encoder.blocks.blocks.{last}.", "encoder.norm.", "text_head.", "logit."),
    "official": (
        "encoder.blocks.blocks.{last}.",
        "encoder.norm.",
        "text_head.",
        "logit.",
        "encoder.reduce_dim.",
        "encoder.cls_token",
        "encoder.cls_pos",
    ),
}


def freeze_for_stage2(model: PatchAlign3D, policy: str = "paper", *, freeze_bn_stats: bool = True) -> list[str]:
    """Freeze ``model`` for Stage 2 and return the names of the parameters left trainable.

    ``policy="paper"`` trains the last Transformer block, the final norm, the text head and the logit
    scale/bias; ``"official"`` also trains ``reduce_dim``, ``cls_token`` and ``cls_pos`` (the release's
    ``--train_last_block_only``). With ``freeze_bn_stats`` (default) the frozen tokenizer's BatchNorm stays
    in eval mode through ``model.train()``; the release lets its running statistics drift (``False``).

    Args:
        model: the model.
        policy: ``"paper"`` or ``"official"``.
        freeze_bn_stats: keep frozen BatchNorm layers in eval mode.

    Returns:
        Sorted names of the trainable parameters.
    """
    if not isinstance(model, PatchAlign3D):
        raise ValueError(f"model must be a PatchAlign3D, got {type(model).__name__}")
    if not isinstance(policy, str) or policy not in STAGE2_TRAINABLE:
        raise ValueError(f"policy must be one of {sorted(STAGE2_TRAINABLE)}, got {policy!r}")
    if not isinstance(freeze_bn_stats, bool):
        raise ValueError(f"freeze_bn_stats must be a bool, got {freeze_bn_stats!r}")
    last = str(model.encoder.config["depth"] - 1)
    prefixes = tuple(p.replace("{last}", last) for p in STAGE2_TRAINABLE[policy])
    trainable = []
    for name, p in model.named_parameters():
        keep = name.startswith(prefixes)
        p.requires_grad_(keep)
        if keep:
            trainable.append(name)
    model.freeze_bn_stats = freeze_bn_stats
    model.train(model.training)
    return sorted(trainable)


