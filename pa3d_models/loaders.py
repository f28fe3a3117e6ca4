"""Loading any checkpoint into a :class:`~pa3d_models.PatchAlign3D`: pa3d's own directories and the
official release's ``.pt``.

Official format (facts section 1): a ``torch.save`` dict ``{"model": encoder state dict (160 keys),
"proj": {"proj.weight", "proj.bias"}, "temp": {"log_scale"} (Stage 2 only), "epoch", "args"}``.
:func:`load_official_checkpoint` maps it onto a :class:`~pa3d_models.PatchAlign3D`. What was verified: state
dicts built in the documented key layout load strictly and reproduce a plain re-statement of the
official forward to 1e-4; the released file itself could not be downloaded here. To reproduce the official
pipeline end to end, apply the official Y/Z swap to the points before the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_weights, resolve_checkpoint
from .model import PatchAlign3D, PatchEncoder

__all__ = ["load_pretrained", "load_official_checkpoint", "load_checkpoint"]


def load_pretrained(
    directory: str | os.PathLike, *, model: PatchAlign3D | None = None, map_location: str | torch.device = "cpu"
) -> PatchAlign3D:
    """Load a pa3d checkpoint directory.

    Args:
        directory: a directory written by :func:`~pa3d_models.save_pretrained` (or ``hf://org/repo``, see
            :func:`~pa3d_models.resolve_checkpoint`).
        model: load into this model; its config must match the checkpoint's (except ``drop_path_rate``),
            else a ``ValueError`` names every mismatch. None builds the model from the saved config.
        map_location: device for the loaded tensors.

    Returns:
        The model, in eval mode.
    """
    if model is None:
        return PatchAlign3D.from_pretrained(directory)
    return load_weights(model, resolve_checkpoint(directory), map_location=map_location)


def _torch_load(path: Path, trusted: bool) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not trusted)
    except Exception as err:  # noqa: BLE001 - corrupt or unsafe pickle: one clear message
        hint = "" if trusted else " (if the file is trusted and holds extra Python objects, pass trusted=True)"
        raise ValueError(f"cannot read checkpoint {path}: {err}{hint}") from err


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_official_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    head: str = "auto",
    teacher_dim: int = 768,
    num_heads: int | None = None,
    trusted: bool = False,
    **overrides: Any,
) -> PatchAlign3D:
    """Build a :class:`~pa3d_models.PatchAlign3D` from the official release's checkpoint.

    The encoder config (width, depth, tokenizer width, MLP ratio, qkv bias) is read from the state-dict
    shapes; the number of heads is not visible in the weights and comes from ``num_heads``, else
    ``args["num_heads"]``, else the release's 6. The ``proj`` head goes to the text head or the teacher
    head (``head="auto"``: text when the checkpoint has ``temp`` (Stage 2) or its width is not
    ``teacher_dim``). A Stage-2 ``temp.log_scale`` switches the logit module to the official form
    (``exp(log_scale)`` clamped at 100, no bias).

    Args:
        checkpoint: path to the ``.pt`` (or ``hf://...``), or the loaded dict
            ``{"model", "proj", "temp"?, "epoch"?, "args"?}``.
        head: ``"auto"``, ``"text"`` or ``"teacher"``: where ``proj`` goes.
        teacher_dim: Stage-1 head width T.
        num_heads: attention heads (not stored in the weights).
        trusted: allow full unpickling of the file (needed only if it holds arbitrary Python objects).
        **overrides: other model keyword arguments (e.g. ``num_groups``, ``drop_path_rate``).

    Returns:
        The model in eval mode; ``patch_feats`` equal the official ``normalize(proj(forward_patches(x)))``.
    """
    if isinstance(checkpoint, Mapping):
        ckpt = checkpoint
        where = "checkpoint dict"
    else:
        path = resolve_checkpoint(checkpoint)
        ckpt = _torch_load(path, trusted)
        where = str(path)
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{where} is not an official PatchAlign3D checkpoint: no 'model' entry (got {keys})")
    enc_state = _strip_prefix(_strip_prefix(ckpt["model"], "module."), "encoder.")
    try:
        embed_dim = int(enc_state["cls_token"].shape[-1])
        tokenizer_dim = int(enc_state["reduce_dim.weight"].shape[1])
        depth = 1 + max(int(k.split(".")[2]) for k in enc_state if k.startswith("blocks.blocks."))
        mlp_ratio = enc_state["blocks.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
        pos_hidden = int(enc_state["pos_embed.0.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"{where}: 'model' is not the official encoder layout (missing {err})") from err
    args = ckpt.get("args") or {}
    heads = num_heads or (args.get("num_heads") if isinstance(args, Mapping) else None) or 6
    kwargs: dict[str, Any] = dict(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=int(heads),
        mlp_ratio=float(mlp_ratio),
        tokenizer_dim=tokenizer_dim,
        qkv_bias="blocks.blocks.0.attn.qkv.bias" in enc_state,
        pos_hidden_dim=pos_hidden,
    )
    enc_keys = set(kwargs)
    kwargs.update({k: v for k, v in overrides.items() if k in enc_keys or k in _ENCODER_EXTRA})
    model_over = {k: v for k, v in overrides.items() if k not in kwargs}
    encoder = PatchEncoder(**kwargs)
    proj = ckpt.get("proj")
    if proj is not None:
        proj = _strip_prefix(proj, "module.")
        if "proj.weight" not in proj:
            raise ValueError(f"{where}: 'proj' must hold 'proj.weight' and 'proj.bias', got {sorted(proj)}")
        out_dim = int(proj["proj.weight"].shape[0])
        if int(proj["proj.weight"].shape[1]) != embed_dim:
            raise ValueError(f"{where}: proj.weight is {tuple(proj['proj.weight'].shape)}, expected (D, {embed_dim})")
    temp = ckpt.get("temp")
    if head == "auto":
        head = "text" if proj is not None and (temp is not None or out_dim != teacher_dim) else "teacher"
    if head not in ("text", "teacher"):
        raise ValueError(f"head must be 'auto', 'text' or 'teacher', got {head!r}")
    text_dim = out_dim if proj is not None and head == "text" else model_over.pop("text_dim", 1280)
    model_over.pop("text_dim", None)
    if temp is not None:
        model_over.setdefault("logit_mode", "official")
    model = PatchAlign3D(encoder, teacher_dim=teacher_dim, text_dim=text_dim, **model_over)
    result = model.encoder.load_state_dict(enc_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{where}: encoder weights do not fit: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if proj is not None:
        target = model.text_head if head == "text" else model.teacher_head
        target.load_state_dict({"weight": proj["proj.weight"], "bias": proj["proj.bias"]})
    if temp is not None and "log_scale" in temp and model.logit_mode == "official":
        model.set_official_log_scale(temp["log_scale"])
    return model.eval()


_ENCODER_EXTRA = {"in_channels", "num_groups", "group_size", "drop_path_rate", "backend"}


def load_checkpoint(spec: str | os.PathLike, **kwargs: Any) -> PatchAlign3D:
    """Load either format: a pa3d directory (``config.json`` + ``model.safetensors``) or an official file."""
    path = resolve_checkpoint(spec)
    if path.is_dir():
        return load_pretrained(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return load_official_checkpoint(path, **kwargs)
