"""2D teachers: images ``(V, 3, H, W)`` in ``[0, 1]`` -> dense features ``(V, T, h, w)``.

``DINOv2Teacher`` wraps timm's DINOv2 ViTs (``vit_{small,base,large,giant}_patch14_dinov2`` and the
``_reg4_`` variants). The model is built with ``pretrained=False`` and its weights come from a local file;
timm's hub download is used only when ``allow_download=True``. ``TinyTeacher`` is a seeded random
patchifier for tests and offline demos.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from pa3d_layers._checks import check_rank

from .deps import require

__all__ = [
    "Teacher",
    "DINOv2Teacher",
    "TinyTeacher",
    "GeometryTeacher",
    "geometry_features",
    "resolve_teacher_name",
    "build_teacher",
    "TEACHERS",
    "default_weights_path",
    "MissingWeightsError",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Short teacher names -> timm architectures. Any timm DINOv2 name is accepted as is too.
TEACHERS: dict[str, str] = {
    "dinov2_vits14": "vit_small_patch14_dinov2",
    "dinov2_vitb14": "vit_base_patch14_dinov2",
    "dinov2_vitl14": "vit_large_patch14_dinov2",
    "dinov2_vitg14": "vit_giant_patch14_dinov2",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2",
    "dinov2_vitl14_reg": "vit_large_patch14_reg4_dinov2",
    "dinov2_vitg14_reg": "vit_giant_patch14_reg4_dinov2",
}


class MissingWeightsError(FileNotFoundError):
    """Teacher weights are neither at the given path nor in the default location."""


@runtime_checkable
class Teacher(Protocol):
    """What the Stage-1 pipeline needs from a 2D teacher.

    Attributes:
        name: identifier stored in the cache metadata.
        feature_dim: ``T``.
    """

    name: str
    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Dense features ``(V, T, h, w)`` of images ``(V, 3, H, W)`` in ``[0, 1]``."""
        ...


def _check_images(images: object) -> torch.Tensor:
    check_rank(images, "images", 4, "(V, 3, H, W) float")
    assert isinstance(images, torch.Tensor)
    if images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be (V, 3, H, W) float, got shape {tuple(images.shape)} dtype {images.dtype}")
    return images


def default_weights_path(arch: str) -> Path:
    """Where a teacher's weights are looked for when none are given: ``$PA3D_WEIGHTS/<arch>.safetensors``.

    ``$PA3D_WEIGHTS`` defaults to ``~/.cache/pa3d/weights``.
    """
    root = os.environ.get("PA3D_WEIGHTS", os.path.join("~", ".cache", "pa3d", "weights"))
    return Path(root).expanduser() / f"{arch}.safetensors"


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read teacher weights without unpickling code: safetensors, or ``torch.load(weights_only=True)``.

    Raises:
        ValueError: naming the file, for anything that is not a readable dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"teacher weights {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors, truncated zips, safetensors errors: one message
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"teacher weights {path} are not a safetensors file or a weights-only torch checkpoint "
            f"({type(err).__name__}{': ' + first[:200] if first else ''}); pickled code is never loaded"
        ) from None
    for key in ("model", "state_dict", "teacher"):  # common wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"teacher weights {path} must hold a non-empty dict of tensors, got {type(state).__name__}")
    return state


class DINOv2Teacher(nn.Module):
    """Dense DINOv2 patch features from timm, with DINOv2's preprocessing.

    Images are resized (bicubic) to ``image_size`` (a multiple of 14), normalised with the ImageNet mean/std,
    and run through the ViT; the final-norm tokens are kept, the cls and register tokens dropped, and the
    patch tokens reshaped to a ``(T, image_size/14, image_size/14)`` grid. Views run in chunks of
    ``view_batch`` under ``torch.inference_mode``.

    Args:
        arch: a timm DINOv2 architecture, e.g. ``"vit_base_patch14_dinov2"``, or a short name from
            ``TEACHERS`` (``"dinov2_vitb14"``).
        weights: local weights file (timm/HF ``.safetensors`` or the original ``dinov2_*_pretrain.pth``).
            Default: [default_weights_path][pa3d_models.default_weights_path].
        allow_download: fetch the weights with timm from the hub when no local file is found (needs network).
        random_weights_ok: with no weights found (and no download), keep timm's random init instead of raising;
            ``weights_note`` then says so (for offline demos: the targets carry no DINOv2 knowledge).
        image_size: side of the teacher input; must be a multiple of 14 (518 gives a 37 x 37 grid).
        view_batch: views per forward pass.

    Raises:
        MissingWeightsError: when no weights file is found and downloading is not allowed.

    Shape:
        images ``(V, 3, H, W)`` in ``[0, 1]`` -> features ``(V, T, image_size/14, image_size/14)``.
    """

    def __init__(
        self,
        arch: str = "vit_base_patch14_dinov2",
        *,
        weights: str | os.PathLike | None = None,
        allow_download: bool = False,
        random_weights_ok: bool = False,
        image_size: int = 518,
        view_batch: int = 10,
    ) -> None:
        super().__init__()
        timm = require("timm", "DINOv2Teacher")

        arch = TEACHERS.get(arch, arch)
        if arch not in timm.list_models("*dinov2*"):
            raise ValueError(f"arch must be a timm DINOv2 model ({sorted(TEACHERS)} or timm names), got {arch!r}")
        if image_size % 14 != 0 or image_size < 14:
            raise ValueError(f"image_size must be a positive multiple of 14 (the ViT patch), got {image_size}")
        self.arch = arch
        self.name = arch
        self.image_size = image_size
        self.view_batch = view_batch
        path = Path(weights).expanduser() if weights is not None else default_weights_path(arch)
        #: None for real weights; a sentence when the teacher runs on random weights.
        self.weights_note: str | None = None
        if path.is_file():
            from timm.models.vision_transformer import checkpoint_filter_fn

            with torch.device("meta"):  # no random init: every tensor comes from the file
                self.model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
            state = checkpoint_filter_fn(_load_state_dict(path), self.model)
            self.model.load_state_dict(state, assign=True)
            self.weights = str(path)
        elif allow_download:
            self.model = timm.create_model(arch, pretrained=True, num_classes=0, dynamic_img_size=True)
            self.weights = f"hub:{self.model.pretrained_cfg.get('hf_hub_id', arch)}"
        elif random_weights_ok:
            self.model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
            self.weights = "random"
            self.weights_note = f"random weights: no {arch} weights at {path} (pass weights=FILE for real targets)"
        else:
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(arch)
            hub = (cfg.hf_hub_id if cfg is not None else None) or arch
            raise MissingWeightsError(
                f"DINOv2 teacher weights for {arch!r} not found at {path}. Get them once on a machine with network, "
                f"e.g. `python -c \"import timm; from safetensors.torch import save_file; "
                f"save_file(timm.create_model('{arch}', pretrained=True).state_dict(), '{path}')\"` "
                f"(timm hub id {hub!r}), then pass --weights FILE (or weights=FILE), or place the file at {path} "
                f"($PA3D_WEIGHTS sets the folder); allow_download=True (--download) fetches it from the hub."
            )
        self.model.eval().requires_grad_(False)
        self.feature_dim = int(self.model.embed_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, image_size={self.image_size}, view_batch={self.view_batch}"

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images)
        grid = self.image_size // 14
        out = []
        for chunk in images.split(self.view_batch):
            x = chunk.to(self.mean)  # the teacher's device and dtype
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size,) * 2, mode="bicubic", align_corners=False)
            x = (x - self.mean) / self.std
            tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
            out.append(tokens.transpose(1, 2).reshape(x.shape[0], self.feature_dim, grid, grid))
        return torch.cat(out)


class TinyTeacher(nn.Module):
    """A random, seeded patch teacher for tests: ``Conv(patch) -> GELU -> Conv(1x1)`` on normalised images.

    Deterministic for a given ``seed`` whatever the global RNG state; responds to image content, so nearby
    points get similar features.

    Args:
        feature_dim: ``T``.
        patch_size: stride of the feature grid.
        seed: seed of the random weights.

    Shape:
        images ``(V, 3, H, W)`` -> features ``(V, T, H // patch_size, W // patch_size)``.

    Examples:
        >>> TinyTeacher(feature_dim=8)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, feature_dim: int = 32, *, patch_size: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.name = "tiny"
        self.feature_dim = feature_dim
        self.patch_size = patch_size
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        hidden = 2 * feature_dim
        self.patchify = nn.Conv2d(3, hidden, patch_size, stride=patch_size)
        self.proj = nn.Conv2d(hidden, feature_dim, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) / max(1, p[0].numel()) ** 0.5)
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, patch_size={self.patch_size}, seed={self.seed}"

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images)
        x = (images.to(self.mean) - self.mean) / self.std
        return self.proj(F.gelu(self.patchify(x)))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(V, C, H, W)`` with zero padding (outside the image is background)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def _derivatives(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Central differences ``(dx, dy, dxx, dyy, dxy)`` of ``(V, C, H, W)`` (replicate padding)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    dxx = p[..., 1:-1, 2:] - 2 * c + p[..., 1:-1, :-2]
    dyy = p[..., 2:, 1:-1] - 2 * c + p[..., :-2, 1:-1]
    dxy = (p[..., 2:, 2:] - p[..., 2:, :-2] - p[..., :-2, 2:] + p[..., :-2, :-2]) / 4
    return dx, dy, dxx, dyy, dxy


def geometry_features(
    images: torch.Tensor, scales: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16), *, background: float = 0.99
) -> torch.Tensor:
    """Weight-free multi-scale descriptors of rendered shapes: 6 channels per scale, standardised per view.

    The render's silhouette (pixels darker than ``background``) and its shading (the facing ratio of the
    surface, or the depth cue of a splat render) are blurred at each scale ``sigma = scale * H``; per scale the
    channels are: the filled fraction around the pixel (thickness), the two scale-normalised eigenvalues of
    its Hessian (ridges of limbs and tips vs. flat interiors), its gradient magnitude (nearness to the
    outline), the mean shading over the surface and the shading's gradient magnitude (creases, curvature).
    Each channel is then centred and scaled over the view's surface pixels, so that features differ between
    the parts of a shape (a constant descriptor would make Stage-1 targets nearly collinear).

    Args:
        images: ``(V, 3, H, W)`` renders in ``[0, 1]`` on a white background.
        scales: blur widths as fractions of the image height.
        background: pixels whose channel mean is at least this are background.

    Returns:
        ``(V, 6 * len(scales), H, W)`` float; zero on the background.

    Examples:
        >>> img = torch.ones(1, 3, 32, 32); img[..., 8:24, 12:20] = 0.5
        >>> f = geometry_features(img, (0.05, 0.1))
        >>> f.shape, bool(f[:, :, 0, 0].abs().max() == 0)
        (torch.Size([1, 12, 32, 32]), True)
    """
    x = _check_images(images).float()
    mask = (x.mean(1, keepdim=True) < background).float()
    shade = x.mean(1, keepdim=True) * mask
    height = x.shape[-2]
    chans = []
    for scale in scales:
        sigma = max(0.5, float(scale) * height)
        m = _gaussian_blur(mask, sigma)
        s = _gaussian_blur(shade, sigma) / m.clamp_min(1e-3)
        mdx, mdy, mxx, myy, mxy = _derivatives(m)
        half_trace, det_part = (mxx + myy) / 2, torch.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
        sdx, sdy, *_ = _derivatives(s)
        chans += [m, (half_trace - det_part) * sigma**2, (half_trace + det_part) * sigma**2,
                  torch.sqrt(mdx**2 + mdy**2) * sigma, s, torch.sqrt(sdx**2 + sdy**2) * sigma]
    feats = torch.cat(chans, dim=1)
    count = mask.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean = (feats * mask).sum(dim=(2, 3), keepdim=True) / count
    std = (((feats - mean) * mask) ** 2).sum(dim=(2, 3), keepdim=True).div(count).sqrt()
    return ((feats - mean) / std.clamp_min(1e-6)) * mask


class GeometryTeacher(nn.Module):
    """An offline Stage-1 teacher with no weights: [geometry_features][pa3d_models.geometry_features] of
    the rendered views, average-pooled to a grid of stride ``patch_size``.

    It encodes what a render shows of the geometry (thickness and elongation of the silhouette around each
    pixel, outline and shading structure, at five scales), so that Stage 1 distils a signal that differs
    between parts, where a random-weight DINOv2 gives nearly constant targets. It is not a pretrained image
    model: no semantics, only geometry. With real DINOv2 weights (``--teacher-weights``) use
    [DINOv2Teacher][pa3d_models.DINOv2Teacher].

    Args:
        scales: blur widths as fractions of the image height.
        patch_size: stride of the output grid.

    Shape:
        images ``(V, 3, H, W)`` -> features ``(V, 6 * len(scales), H // patch_size, W // patch_size)``.

    Examples:
        >>> GeometryTeacher(patch_size=4)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 30, 8, 8])
    """

    pretrained = False

    def __init__(self, scales: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16), *, patch_size: int = 4) -> None:
        super().__init__()
        if not scales or any(not 0 < float(s) for s in scales):
            raise ValueError(f"scales must be positive fractions of the image height, got {scales!r}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.name = "geometry"
        self.scales = tuple(float(s) for s in scales)
        self.patch_size = int(patch_size)
        self.feature_dim = 6 * len(self.scales)
        self.weights = "none"
        #: A sentence for logs and reports: what Stage 1 distils.
        self.weights_note = ("weight-free geometry teacher: multi-scale silhouette and shading filters of the "
                             "renders (no pretrained 2D model; pass --teacher-weights for DINOv2)")

    def extra_repr(self) -> str:
        return f"scales={self.scales}, patch_size={self.patch_size}"

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = geometry_features(images, self.scales)
        return F.avg_pool2d(feats, self.patch_size) if self.patch_size > 1 else feats


def resolve_teacher_name(name: str, weights: str | os.PathLike | None = None) -> str:
    """``"auto"`` -> ``"dinov2_vits14"`` when its weights are given or in the default place, else
    ``"geometry"`` (no download, no random-weight DINOv2); other names unchanged.

    Examples:
        >>> resolve_teacher_name("tiny")
        'tiny'
    """
    if name != "auto":
        return name
    if weights is not None or default_weights_path(TEACHERS["dinov2_vits14"]).is_file():
        return "dinov2_vits14"
    return "geometry"


def build_teacher(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    random_weights_ok: bool = False,
    image_size: int = 518,
    view_batch: int = 10,
) -> nn.Module:
    """A teacher by name: ``"auto"`` (DINOv2 ViT-S/14 when its weights are found, else ``"geometry"``),
    ``"geometry"`` (weight-free, :class:`GeometryTeacher`), ``"tiny"``, a short DINOv2 name from ``TEACHERS``,
    or a timm DINOv2 architecture.

    Args:
        name: teacher name.
        weights: local weights file for DINOv2 teachers.
        allow_download: let timm fetch DINOv2 weights from the hub.
        random_weights_ok: build a randomly initialised DINOv2 when no weights are found (``weights_note`` says so).
        image_size: DINOv2 input side (multiple of 14).
        view_batch: views per forward pass (DINOv2).

    Examples:
        >>> build_teacher("tiny").feature_dim
        32
    """
    name = resolve_teacher_name(name, weights)
    if name == "tiny":
        return TinyTeacher()
    if name == "geometry":
        return GeometryTeacher()
    if name in TEACHERS or "dinov2" in name:
        return DINOv2Teacher(
            name, weights=weights, allow_download=allow_download, random_weights_ok=random_weights_ok,
            image_size=image_size, view_batch=view_batch,
        )
    raise ValueError(f"name must be 'auto', 'geometry', 'tiny', one of {sorted(TEACHERS)} or a timm DINOv2 "
                     f"architecture, got {name!r}")
