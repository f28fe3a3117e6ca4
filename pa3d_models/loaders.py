"""Loading any checkpoint into a :class:`~pa3d_models.PatchAlign3D`: pa3d's own directories, the training
recipe's ``last.pt`` and the official release's ``.pt``.

- :func:`load_pretrained`, :func:`load_official_checkpoint`, :func:`load_checkpoint` build a model from a
  checkpoint (its architecture comes from the checkpoint).
- :func:`init_from_checkpoint` initialises a model you built (its architecture, text width and logit form
  are yours) from any checkpoint kind, for fine-tuning: the encoder, the text head and the logit scale/bias
  are taken from it, and the returned :class:`InitReport` records where the weights came from (path and
  SHA-256) so that the fine-tuned model can say where it started.

Official format (facts section 1): a ``torch.save`` dict ``{"model": encoder state dict (160 keys),
"proj": {"proj.weight", "proj.bias"}, "temp": {"log_scale"} (Stage 2 only), "epoch", "args"}``.
What was verified: state dicts built in the documented key layout load strictly and reproduce a plain
re-statement of the official forward to 1e-4; the released file itself could not be downloaded here. To
reproduce the official pipeline end to end, apply the official Y/Z swap to the points before the model.

No file is unpickled beyond plain data unless ``trusted=True`` is passed (see
:func:`~pa3d_models.load_torch_file`), and every loaded weight is checked to be finite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    _config_diff,
    _listing,
    _read_safetensors,
    _state_fit,
    check_state_dict,
    file_sha256,
    load_torch_file,
    load_weights,
    read_config,
    read_metadata,
    resolve_checkpoint,
)
from .model import PatchAlign3D, PatchEncoder

__all__ = [
    "load_pretrained",
    "load_official_checkpoint",
    "load_checkpoint",
    "init_from_checkpoint",
    "InitReport",
    "CheckpointOrigin",
]

TRAINING_STATE_FORMAT = "pa3d-training-state/1"


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


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _is_training_state(ckpt: Any) -> bool:
    if not isinstance(ckpt, Mapping):
        return False
    fmt = ckpt.get("format")
    if isinstance(fmt, str) and fmt.startswith("pa3d-training-state"):
        return True
    model = ckpt.get("model")  # a recipe checkpoint of another format version: PatchAlign3D keys under "model"
    if not isinstance(model, Mapping):
        return False
    keys = [str(k) for k in model]
    return any(k.endswith("encoder.cls_token") for k in keys) and any(
        k.split(".", 1)[-1].startswith(("text_head.", "teacher_head.", "logit.")) or
        k.startswith(("text_head.", "teacher_head.", "logit.")) for k in keys
    )


def training_state_weights(ckpt: Mapping[str, Any]) -> Any:
    """The weights a recipe ``last.pt`` was trained to: its weight average (``--ema``) when it holds one, else
    the last step's ``model``."""
    extra = ckpt.get("extra")
    ema = extra.get("ema") if isinstance(extra, Mapping) else None
    if isinstance(ema, Mapping) and isinstance(ema.get("weights"), Mapping):
        return ema["weights"]
    return ckpt.get("model")


def _official_parts(ckpt: Mapping[str, Any], where: str) -> tuple[dict, dict | None, torch.Tensor | None, dict]:
    """Checked pieces of an official checkpoint: encoder state (official keys), proj, temp log-scale, args."""
    enc_state = check_state_dict(ckpt["model"], where, name="'model'")
    enc_state = _strip_prefix(_strip_prefix(enc_state, "module."), "encoder.")
    proj = ckpt.get("proj")
    if proj is not None:
        proj = _strip_prefix(check_state_dict(proj, where, name="'proj'"), "module.")
        if set(proj) != {"proj.weight", "proj.bias"}:
            raise ValueError(f"{where}: 'proj' must hold 'proj.weight' and 'proj.bias', got {sorted(proj)}")
        w, b = proj["proj.weight"], proj["proj.bias"]
        if w.dim() != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"{where}: 'proj' must be proj.weight (out, D) and proj.bias (out,), got "
                             f"{tuple(w.shape)} and {tuple(b.shape)}")
    log_scale = None
    temp = ckpt.get("temp")
    if temp is not None:
        if not isinstance(temp, Mapping) or not isinstance(temp.get("log_scale"), torch.Tensor):
            raise ValueError(f"{where}: 'temp' must be {{'log_scale': tensor}}, got {temp!r:.80}")
        log_scale = check_state_dict({"temp.log_scale": temp["log_scale"]}, where)["temp.log_scale"]
        if log_scale.numel() != 1:
            raise ValueError(f"{where}: temp.log_scale must be a scalar, got shape {tuple(log_scale.shape)}")
    args = ckpt.get("args") or {}
    if not isinstance(args, Mapping):  # a legacy argparse.Namespace (trusted files only)
        args = vars(args) if hasattr(args, "__dict__") else {}
    return enc_state, proj, log_scale, dict(args)


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
        trusted: allow full unpickling of the file (needed only if it holds arbitrary Python objects; it can
            run code from the file, so pass it only for a file whose source you trust).
        **overrides: other model keyword arguments (e.g. ``num_groups``, ``drop_path_rate``).

    Returns:
        The model in eval mode; ``patch_feats`` equal the official ``normalize(proj(forward_patches(x)))``.
    """
    if head not in ("auto", "text", "teacher"):
        raise ValueError(f"head must be 'auto', 'text' or 'teacher', got {head!r}")
    if isinstance(checkpoint, Mapping):
        ckpt = checkpoint
        where = "checkpoint dict"
    else:
        path = resolve_checkpoint(checkpoint)
        if path.is_dir():
            raise ValueError(
                f"checkpoint {path} is a directory: load_official_checkpoint reads one official .pt file; for a "
                "save_pretrained folder use load_pretrained (load_checkpoint reads both)"
            )
        ckpt = load_torch_file(path, trusted=trusted)
        where = str(path)
    if _is_training_state(ckpt):
        raise ValueError(
            f"{where} is a pa3d training state (a recipe's last.pt), not an official checkpoint: load the "
            "save_pretrained folder the recipe wrote beside it (OUT/<stage>/model), or initialise a model from "
            "it with init_from_checkpoint"
        )
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{where} is not an official PatchAlign3D checkpoint: no 'model' entry (got {keys})")
    enc_state, proj, log_scale, args = _official_parts(ckpt, where)
    try:
        embed_dim = int(enc_state["cls_token"].shape[-1])
        tokenizer_dim = int(enc_state["reduce_dim.weight"].shape[1])
        tokenizer_hidden = [int(enc_state[f"encoder.{k}.weight"].shape[0])
                            for k in ("first_conv.0", "first_conv.3", "second_conv.0")]
        depth = 1 + max(int(k.split(".")[2]) for k in enc_state if k.startswith("blocks.blocks."))
        mlp_ratio = enc_state["blocks.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
        pos_hidden = int(enc_state["pos_embed.0.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"{where}: 'model' is not the official encoder layout (missing {err})") from err
    heads = num_heads or args.get("num_heads") or 6
    kwargs: dict[str, Any] = dict(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=int(heads),
        mlp_ratio=float(mlp_ratio),
        tokenizer_dim=tokenizer_dim,
        tokenizer_hidden_dims=tokenizer_hidden,
        qkv_bias="blocks.blocks.0.attn.qkv.bias" in enc_state,
        pos_hidden_dim=pos_hidden,
    )
    enc_keys = set(kwargs)
    kwargs.update({k: v for k, v in overrides.items() if k in enc_keys or k in _ENCODER_EXTRA})
    model_over = {k: v for k, v in overrides.items() if k not in kwargs}
    if embed_dim % int(kwargs["num_heads"]):
        raise ValueError(f"{where}: width {embed_dim} is not divisible by num_heads={kwargs['num_heads']}; "
                         "pass the num_heads the checkpoint was trained with")
    encoder = PatchEncoder(**kwargs)
    out_dim = None
    if proj is not None:
        out_dim = int(proj["proj.weight"].shape[0])
        if int(proj["proj.weight"].shape[1]) != embed_dim:
            raise ValueError(f"{where}: proj.weight is {tuple(proj['proj.weight'].shape)}, expected (D, {embed_dim})")
    if head == "auto":
        head = "text" if proj is not None and (log_scale is not None or out_dim != teacher_dim) else "teacher"
    text_dim = out_dim if proj is not None and head == "text" else model_over.pop("text_dim", 1280)
    model_over.pop("text_dim", None)
    if head == "teacher" and out_dim is not None:
        teacher_dim = out_dim
    if log_scale is not None:
        model_over.setdefault("logit_mode", "official")
    model = PatchAlign3D(encoder, teacher_dim=teacher_dim, text_dim=text_dim, **model_over)
    problems = _state_fit(model.encoder.state_dict(), enc_state)
    if problems:
        raise ValueError(f"{where}: encoder weights do not fit: " + "; ".join(problems))
    model.encoder.load_state_dict(enc_state)
    if proj is not None:
        target = model.text_head if head == "text" else model.teacher_head
        target.load_state_dict({"weight": proj["proj.weight"], "bias": proj["proj.bias"]})
    if log_scale is not None and model.logit_mode == "official":
        model.set_official_log_scale(log_scale)
    return model.eval()


_ENCODER_EXTRA = {"in_channels", "num_groups", "group_size", "drop_path_rate", "backend"}


def _folder_without_weights(path: Path) -> FileNotFoundError:
    found = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
    hint = ""
    if "last.pt" in found:
        hint = f"; it holds a recipe checkpoint: pass {path / 'last.pt'}"
    elif "model" in found and (path / "model" / WEIGHTS_NAME).is_file():
        hint = f"; pass {path / 'model'}"
    return FileNotFoundError(
        f"checkpoint folder {path} holds no weights: a save_pretrained folder has {WEIGHTS_NAME} and "
        f"{CONFIG_NAME}, found {found or 'nothing'}{hint}"
    )


def load_checkpoint(spec: str | os.PathLike, **kwargs: Any) -> PatchAlign3D:
    """Load either format: a pa3d directory (``config.json`` + ``model.safetensors``) or an official file.

    Args:
        spec: a folder, a ``.pt`` file, or an ``hf://`` id (resolved from the local cache when offline).
        **kwargs: passed to :func:`load_official_checkpoint` for an official file (``trusted``,
            ``num_heads``, ``num_groups``, ...).
    """
    path = resolve_checkpoint(spec)
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise _folder_without_weights(path)
        return load_pretrained(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return load_official_checkpoint(path, **kwargs)


# --------------------------------------------------------------------------------------- init for fine-tuning


@dataclass(frozen=True)
class CheckpointOrigin:
    """Where a model's initial weights came from (stored in the fine-tuned checkpoint's metadata).

    Attributes:
        spec: the checkpoint as given (a path or an ``hf://`` id).
        path: the resolved absolute path (a folder or a file).
        kind: ``"pretrained"`` (a save_pretrained folder), ``"training_state"`` (a recipe ``last.pt``),
            ``"official"`` (the release's layout) or ``"state_dict"`` (a bare pa3d state dict).
        weights: the weight file that was hashed.
        sha256: hex SHA-256 of ``weights``.
    """

    spec: str
    path: str
    kind: str
    weights: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-able copy."""
        return asdict(self)


class InitReport(NamedTuple):
    """What :func:`init_from_checkpoint` did.

    Attributes:
        origin: where the weights came from (path, kind, SHA-256).
        loaded: the parts taken from the checkpoint (``"encoder"``, ``"text_head"``, ``"logit"``,
            ``"teacher_head"``).
        reinitialised: the parts re-initialised instead (``"text_head"`` with ``reinit_text_head``).
        notes: one line per decision a user should see in the log (a kept initialisation, a skipped
            teacher head, a re-initialised text head).
    """

    origin: CheckpointOrigin
    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]
    notes: tuple[str, ...]


def _read_any(
    spec: str | os.PathLike, *, trusted: bool, head: str, teacher_dim: int
) -> tuple[dict[str, torch.Tensor], CheckpointOrigin, dict[str, Any]]:
    """Any checkpoint kind -> (a state dict under PatchAlign3D's keys, its origin, facts: config, num_heads)."""
    path = resolve_checkpoint(spec).resolve()
    facts: dict[str, Any] = {}
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise _folder_without_weights(path)
        if (path / CONFIG_NAME).is_file():
            facts["config"] = read_config(path)
            facts["metadata"] = read_metadata(path)
        state = _read_safetensors(weights)
        kind = "pretrained"
    elif not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    elif path.suffix == ".safetensors":
        weights, state, kind = path, _read_safetensors(path), "state_dict"
    else:
        weights = path
        payload = load_torch_file(path, trusted=trusted)
        where = str(path)
        if _is_training_state(payload):
            state = _strip_prefix(check_state_dict(training_state_weights(payload), where, name="'model'"),
                                  "module.")
            kind = "training_state"
            saved = payload.get("config")
            if saved is not None and not isinstance(saved, Mapping):
                raise ValueError(f"{where}: 'config' of a training state must be a dict, got {type(saved).__name__}")
        elif isinstance(payload, Mapping) and "model" in payload:
            state = _official_state(payload, where, head=head, teacher_dim=teacher_dim, facts=facts)
            kind = "official"
        elif isinstance(payload, Mapping) and payload and any(str(k).endswith("cls_token") for k in payload):
            state = check_state_dict(payload, where)
            bare_official = "cls_token" in _strip_prefix(state, "module.")
            state = (_official_state({"model": state}, where, head=head, teacher_dim=teacher_dim, facts=facts)
                     if bare_official else _strip_prefix(state, "module."))
            kind = "official" if bare_official else "state_dict"
        else:
            got = f"keys {sorted(map(str, payload))[:8]}" if isinstance(payload, Mapping) else type(payload).__name__
            raise ValueError(
                f"{where} is not a checkpoint pa3d can initialise from: expected a save_pretrained folder, a "
                f"recipe checkpoint (a dict with 'format': {TRAINING_STATE_FORMAT!r} and 'model'), an official "
                f"release file (a dict with 'model', 'proj', 'temp') or a state dict; got {got}"
            )
    origin = CheckpointOrigin(spec=str(spec), path=str(path), kind=kind, weights=str(weights),
                              sha256=file_sha256(weights))
    return state, origin, facts


def _official_state(
    ckpt: Mapping[str, Any], where: str, *, head: str, teacher_dim: int, facts: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """An official checkpoint under PatchAlign3D's keys (``proj`` goes to the text or the teacher head)."""
    enc_state, proj, log_scale, args = _official_parts(ckpt, where)
    state = {f"encoder.{k}": v for k, v in enc_state.items()}
    if args.get("num_heads"):
        facts["num_heads"] = args["num_heads"]
    if proj is not None:
        out_dim = int(proj["proj.weight"].shape[0])
        if head == "auto":  # a Stage-2 file has temp; a Stage-1 file's proj is the teacher head
            head = "text" if log_scale is not None or out_dim != teacher_dim else "teacher"
        state[f"{head}_head.weight"], state[f"{head}_head.bias"] = proj["proj.weight"], proj["proj.bias"]
    if log_scale is not None:
        state["logit.log_scale"] = log_scale.reshape(())
    return state


def init_from_checkpoint(
    model: PatchAlign3D,
    checkpoint: str | os.PathLike,
    *,
    reinit_text_head: bool = False,
    trusted: bool = False,
    head: str = "auto",
) -> InitReport:
    """Initialise ``model`` (in place) from any checkpoint, to fine-tune it.

    Accepted: a :func:`~pa3d_models.save_pretrained` folder, a training recipe's checkpoint
    (``OUT/<stage>/last.pt``), an official release ``.pt`` (read with ``weights_only=True``; a legacy pickle
    that needs code loads only with ``trusted=True``), a bare state dict, or an ``hf://`` id (resolved from
    the local cache when offline).

    Taken from it: the encoder (every weight and BatchNorm buffer; it must fit ``model``'s architecture
    exactly), the text head, the logit scale and bias, and the teacher head when it has the model's width
    (Stage 2 does not need it). An official checkpoint has no logit bias: the model's bias is set to 0,
    which keeps the release's logits ``scale * cos``. What the checkpoint lacks keeps ``model``'s
    initialisation and is said in ``notes``.

    Args:
        model: the model to fine-tune, built with the architecture of the checkpoint and the text width of
            the text encoder you will train with.
        checkpoint: folder, file or ``hf://`` id.
        reinit_text_head: start a new text head (trunc-normal std 0.02, zero bias) instead of the
            checkpoint's: needed when fine-tuning with a text encoder of another width.
        trusted: allow full unpickling of a ``.pt`` holding arbitrary Python objects (can run code from the
            file: only for files whose source you trust).
        head: for an official file, where its ``proj`` goes: ``"auto"`` (the text head when the file has
            ``temp``, i.e. a Stage-2 file, or ``proj`` is not the teacher's width), ``"text"`` or ``"teacher"``.

    Returns:
        An :class:`InitReport`. ``model.init_origin`` holds ``report.origin.to_dict()``, and
        :func:`~pa3d_models.save_pretrained` writes it into the saved folder's metadata.

    Raises:
        FileNotFoundError: the checkpoint does not exist (or an ``hf://`` id is not in the local cache offline),
            or a folder holds no weights.
        ValueError: an unreadable, empty, truncated or untrusted file; non-finite weights; an encoder of
            another architecture or size (the message names the mismatching keys and shapes); a text head of
            another width without ``reinit_text_head`` (the message names both widths); a logit bias the model
            cannot hold.

    Examples:
        >>> from pa3d_models import create_model
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = create_model("patchalign3d_tiny").save_pretrained(folder)
        >>> model = create_model("patchalign3d_tiny")
        >>> report = init_from_checkpoint(model, folder)
        >>> report.loaded, report.origin.kind
        (('encoder', 'text_head', 'logit', 'teacher_head'), 'pretrained')
    """
    if not isinstance(model, PatchAlign3D):
        raise ValueError(f"model must be a PatchAlign3D, got {type(model).__name__}")
    if head not in ("auto", "text", "teacher"):
        raise ValueError(f"head must be 'auto', 'text' or 'teacher', got {head!r}")
    state, origin, facts = _read_any(checkpoint, trusted=trusted, head=head, teacher_dim=model.teacher_dim)
    where = f"checkpoint {origin.path} ({origin.kind.replace('_', ' ')})"
    model_state = model.state_dict()

    # encoder: must fit exactly (architecture and size)
    enc_model = {k: v for k, v in model_state.items() if k.startswith("encoder.")}
    enc_ckpt = {k: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc_ckpt:
        raise ValueError(f"{where} holds no encoder weights (keys: {_listing(sorted(state))})")
    problems = []
    saved_enc = (facts.get("config") or {}).get("encoder")
    if isinstance(saved_enc, Mapping):  # num_heads is invisible in the weights; the folder's config says it
        ignore = {"drop_path_rate", "backend", "random_start", "num_groups", "group_size"}
        problems += [d for d in _config_diff(saved_enc, model.encoder.config) if d.split(":")[0] not in ignore]
    elif facts.get("num_heads") and int(facts["num_heads"]) != model.encoder.config["num_heads"]:
        problems.append(f"num_heads: checkpoint {facts['num_heads']} vs model {model.encoder.config['num_heads']}")
    problems += _state_fit(enc_model, enc_ckpt)
    if problems:
        raise ValueError(
            f"{where} does not fit the model's architecture: " + "; ".join(problems)
            + ". Build the model with the checkpoint's architecture (registry name or config), e.g. "
            "create_model('patchalign3d_base', text_dim=...) for the official release"
        )
    take: dict[str, torch.Tensor] = dict(enc_ckpt)
    loaded, reinitialised, notes = ["encoder"], [], []

    # text head: the checkpoint's, of the model's width, unless a new one is asked for
    if reinit_text_head:
        reinitialised.append("text_head")
        notes.append(f"text head re-initialised ({model.text_dim}-d, trunc-normal std 0.02): not taken from "
                     "the checkpoint (reinit_text_head)")
    elif "text_head.weight" in state:
        width = int(state["text_head.weight"].shape[0])
        if width != model.text_dim:
            raise ValueError(
                f"{where}: text head width: checkpoint {width} vs model {model.text_dim} (the text encoder's "
                "embedding width). Fine-tune with the text encoder the checkpoint was trained with, or start a "
                "new text head with reinit_text_head=True (recipe: --reinit-text-head)"
            )
        head_state = {k: v for k, v in state.items() if k.startswith("text_head.")}
        problems = _state_fit({k: v for k, v in model_state.items() if k.startswith("text_head.")}, head_state)
        if problems:
            raise ValueError(f"{where}: the text head does not fit: " + "; ".join(problems))
        take.update(head_state)
        loaded.append("text_head")
    else:
        notes.append("text head: not in the checkpoint (a Stage-1 checkpoint?), kept the model's initialisation")

    # logit scale and bias
    has_bias = "logit.bias" in model_state
    if "logit.log_scale" in state:
        take["logit.log_scale"] = state["logit.log_scale"].reshape(model_state["logit.log_scale"].shape)
        if has_bias and "logit.bias" in state:
            take["logit.bias"] = state["logit.bias"].reshape(model_state["logit.bias"].shape)
        elif has_bias:
            take["logit.bias"] = torch.zeros_like(model_state["logit.bias"])
            notes.append("logit bias: not in the checkpoint (the official form has none), set to 0 so the "
                         "logits stay scale * cos; it is learned from there")
        elif "logit.bias" in state:
            raise ValueError(
                f"{where} has a logit bias ({float(state['logit.bias']):.4g}) but the model's logit_mode="
                f"{model.logit_mode!r} has none: build the model with logit_mode='paper'"
            )
        loaded.append("logit")
    else:
        notes.append("logit scale/bias: not in the checkpoint, kept the model's initialisation")

    # teacher head: taken when it fits; Stage 2 does not need it
    teacher = {k: v for k, v in state.items() if k.startswith("teacher_head.")}
    if teacher and not _state_fit({k: v for k, v in model_state.items() if k.startswith("teacher_head.")}, teacher):
        take.update(teacher)
        loaded.append("teacher_head")
    elif teacher:
        notes.append(f"teacher head: the checkpoint's is {int(teacher['teacher_head.weight'].shape[0])}-d, the "
                     f"model's {model.teacher_dim}-d; not taken (Stage 2 does not use it)")
    else:
        notes.append("teacher head: not in the checkpoint, kept the model's initialisation (Stage 2 does not use it)")
    ignored = sorted(k for k in state if k not in take and not k.startswith(("text_head.", "teacher_head.", "logit.")))
    if ignored:
        notes.append("ignored checkpoint entries: " + _listing(ignored))

    model.load_state_dict(take, strict=False)
    if reinit_text_head:
        with torch.no_grad():
            nn.init.trunc_normal_(model.text_head.weight, std=0.02)
            nn.init.zeros_(model.text_head.bias)
    model.init_origin = origin.to_dict()
    return InitReport(origin, tuple(loaded), tuple(reinitialised), tuple(notes))
