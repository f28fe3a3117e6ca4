"""Checkpoints: pa3d's own format (safetensors + JSON config) and the official release's ``.pt``.

pa3d format: a directory with ``model.safetensors`` (the state dict) and ``config.json`` (the model's
constructor arguments, see :attr:`PatchAlign3D.config`, plus optional ``metadata`` such as where a fine-tuned
model started from), both written atomically (temporary file + ``os.replace``), so a crash never leaves a
half-written checkpoint behind.

Reading never runs code from a file: ``.pt`` files go through :func:`load_torch_file`
(``torch.load(weights_only=True)``; full unpickling only with an explicit ``trusted=True``), weights through
safetensors, and every loaded floating-point tensor is checked to be finite.

Official format (facts section 1): a ``torch.save`` dict ``{"model": encoder state dict (160 keys),
"proj": {"proj.weight", "proj.bias"}, "temp": {"log_scale"} (Stage 2 only), "epoch", "args"}``.
:func:`load_official_checkpoint` maps it onto a :class:`~pa3d_models.PatchAlign3D`. What was verified: state
dicts built in the documented key layout load strictly and reproduce a plain re-statement of the
official forward to 1e-4; the released file itself could not be downloaded here. To reproduce the official
pipeline end to end, apply the official Y/Z swap to the points before the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .deps import require
from .files import atomic_write_bytes
from .version import __version__

__all__ = [
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "PretrainedMixin",
    "save_pretrained",
    "read_config",
    "load_weights",
    "resolve_checkpoint",
    "read_metadata",
    "load_torch_file",
    "file_sha256",
    "check_state_dict",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_FORMAT = "pa3d.PatchAlign3D"


# ------------------------------------------------------------------------------------------- reading files


def file_sha256(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (for provenance records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _numpy_safe_globals() -> list:
    """NumPy constructors that only build arrays and scalars (a training state's NumPy RNG state holds one)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    found = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return found


def load_torch_file(
    path: str | os.PathLike, *, trusted: bool = False, map_location: str | torch.device = "cpu"
) -> Any:
    """Read a ``torch.save`` file without running code from it.

    The file is read with ``torch.load(weights_only=True)``: tensors, plain containers, numbers, strings and
    NumPy arrays load; any other Python object is refused, because unpickling it can run arbitrary code. Such a
    file (e.g. a legacy checkpoint holding an ``argparse.Namespace``) loads only with ``trusted=True``, which
    unpickles it fully: pass it only for a file whose source you trust.

    Args:
        path: the file.
        trusted: allow full unpickling.
        map_location: device for the loaded tensors.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, is empty, is truncated or not a torch file, or (untrusted) holds
            Python objects other than data; the message says which and names the objects.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; a single torch.save file (.pt) is expected here")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): an interrupted download or copy?")
    try:
        if trusted:
            return torch.load(str(path), map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = [] if trusted else _unsafe_globals(path)
        if unsafe:
            raise ValueError(
                f"checkpoint {path} holds Python objects other than tensors and plain data ({', '.join(unsafe)}); "
                "unpickling them can run arbitrary code, so it is refused. If you trust the file's source, "
                "load it with trusted=True"
            ) from err
        raise ValueError(_unreadable(path, size, err)) from err
    except Exception as err:  # noqa: BLE001 - garbage makes the unpickler fail in many ways (IndexError, ...)
        raise ValueError(_unreadable(path, size, err)) from err


def _unsafe_globals(path: Path) -> list[str]:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint at all: nothing to name
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
    return [g for g in found if g not in allowed]


def _unreadable(path: Path, size: int, err: BaseException) -> str:
    detail = str(err).strip().splitlines()
    # torch's weights-only message is long and suggests weights_only=False: not the point for a broken file
    detail = "" if not detail or detail[0].startswith("Weights only load failed") else f": {detail[0][:200]}"
    return (f"checkpoint {path} ({size} bytes) cannot be read: truncated, corrupt or not written by torch.save "
            f"({type(err).__name__}{detail})")


def check_state_dict(state: Any, where: str, *, name: str = "state dict") -> dict[str, torch.Tensor]:
    """Check that ``state`` maps parameter names to finite tensors; return it as a plain dict.

    Args:
        state: the loaded object.
        where: what it came from (a path), for the messages.
        name: what it is called in the message (e.g. ``"'model'"``).

    Raises:
        ValueError: not a mapping, a non-string key, a non-tensor value, or NaN/inf values (the message names
            the keys).
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: {name} must map parameter names to tensors, got {type(state).__name__}")
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"{where}: {name} must have string keys, got {bad_keys[:3]!r}")
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{where}: {name} must map parameter names to tensors; not tensors: "
                         + _listing(not_tensors))
    non_finite = [
        f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()})"
        for k, v in state.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    ]
    if non_finite:
        raise ValueError(f"{where}: non-finite (NaN/inf) weights in " + _listing(non_finite)
                         + "; the checkpoint was saved from a diverged run or is corrupt")
    return dict(state)


def _listing(items: list[str], limit: int = 6) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _state_fit(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Differences between a model's state dict and a checkpoint's: missing and unexpected keys, shape
    mismatches (each problem one readable string; empty when ``state`` loads strictly)."""
    problems = []
    shapes = [
        f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    if shapes:
        problems.append("shape mismatches: " + _listing(shapes))
    if missing:
        problems.append("missing from the checkpoint: " + _listing(missing))
    if unexpected:
        problems.append("not in the model: " + _listing(unexpected))
    return problems


# ------------------------------------------------------------------------------------------- pa3d format


def save_pretrained(
    model: nn.Module, directory: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` + ``directory/config.json`` (atomically).

    Args:
        model: a :class:`~pa3d_models.PatchAlign3D` (any module with a JSON-able ``config``).
        directory: target directory (created if needed).
        metadata: JSON-able facts stored beside the config (:func:`read_metadata` returns them). A model
            initialised by :func:`~pa3d_models.init_from_checkpoint` records its origin there
            (``metadata["init_checkpoint"]``: path, kind and SHA-256 of the weights it started from) without
            being asked.

    Returns:
        The directory.
    """
    from safetensors.torch import save

    directory = Path(directory)
    meta = dict(metadata or {})
    origin = getattr(model, "init_origin", None)
    if origin is not None:
        meta.setdefault("init_checkpoint", dict(origin))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config: dict[str, Any] = {"format": _FORMAT, "pa3d_version": __version__, "config": model.config}
    if meta:
        config["metadata"] = meta
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"  # fails on a non-JSON-able value before writing
    blob = save(state, metadata={"format": _FORMAT})
    atomic_write_bytes(directory / WEIGHTS_NAME, blob)
    atomic_write_bytes(directory / CONFIG_NAME, text)
    return directory


def _read_meta(directory: Path) -> dict:
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory} is not a pa3d checkpoint: {CONFIG_NAME} is missing")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt checkpoint config {cfg_path}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or "config" not in meta:
        raise ValueError(f"{cfg_path} is not a pa3d PatchAlign3D config (format {_FORMAT!r} expected)")
    if not isinstance(meta.get("metadata", {}), dict):
        raise ValueError(f"{cfg_path}: 'metadata' must be a JSON object, got {type(meta['metadata']).__name__}")
    return meta


def read_config(directory: str | os.PathLike) -> dict:
    """The model config stored in a pa3d checkpoint directory (``config.json``), checked for its format and
    values (a ``ValueError`` names the file, the key and the value)."""
    directory = Path(directory)
    config = _read_meta(directory)["config"]
    _check_model_config(config, str(directory / CONFIG_NAME))
    return config


def read_metadata(directory: str | os.PathLike) -> dict:
    """The ``metadata`` stored beside the config by :func:`save_pretrained` (``{}`` when there is none)."""
    return dict(_read_meta(Path(directory)).get("metadata") or {})


_POSITIVE_INTS = ("in_channels", "num_groups", "group_size", "tokenizer_dim", "embed_dim", "depth", "num_heads",
                  "pos_hidden_dim")


def _check_model_config(config: Any, where: str) -> None:
    """Values a model can be built from, or a ValueError naming the key, the value and what was expected."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not isinstance(config, dict):
        raise ValueError(f"{where}: 'config' must be a JSON object of model settings, got {type(config).__name__}")
    enc = config.get("encoder", {})
    if not isinstance(enc, dict):
        raise ValueError(f"{where}: 'config.encoder' must be a JSON object, got {type(enc).__name__}")
    for key in _POSITIVE_INTS:
        if key in enc and not positive_int(enc[key]):
            raise ValueError(f"{where}: config.encoder.{key} must be an int >= 1, got {enc[key]!r}")
    for key in ("teacher_dim", "text_dim"):
        if key in config and not positive_int(config[key]):
            raise ValueError(f"{where}: config.{key} must be an int >= 1, got {config[key]!r}")
    hidden = enc.get("tokenizer_hidden_dims", [1, 1, 1])
    if not isinstance(hidden, list) or len(hidden) != 3 or not all(positive_int(v) for v in hidden):
        raise ValueError(f"{where}: config.encoder.tokenizer_hidden_dims must be a list of three ints >= 1, "
                         f"got {hidden!r}")
    ratio = enc.get("mlp_ratio", 1.0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"{where}: config.encoder.mlp_ratio must be a finite number > 0, got {ratio!r}")
    rate = enc.get("drop_path_rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{where}: config.encoder.drop_path_rate must be a number in [0, 1), got {rate!r}")
    heads = enc.get("num_heads")
    if positive_int(enc.get("embed_dim")) and positive_int(heads) and enc["embed_dim"] % heads:
        raise ValueError(f"{where}: config.encoder.embed_dim ({enc['embed_dim']}) must be divisible by "
                         f"num_heads ({enc['num_heads']})")
    if config.get("logit_mode", "paper") not in ("paper", "official"):
        raise ValueError(f"{where}: config.logit_mode must be 'paper' or 'official', got {config['logit_mode']!r}")


def _config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_diff(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: checkpoint {a!r} vs model {b!r}")
    return diffs


#: Config keys that do not change the parameters' shapes or meaning; they may differ when loading.
_FREE_KEYS = {"drop_path_rate", "backend", "random_start"}

#: Encoder keys added after checkpoints were first saved, with the value a config without them meant.
_LATER_ENCODER_KEYS = {"tokenizer_hidden_dims": [128, 256, 512]}


def _with_later_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every later-added encoder key it lacks set to what its absence meant."""
    config = dict(config)
    if isinstance(config.get("encoder"), Mapping):
        config["encoder"] = {**_LATER_ENCODER_KEYS, **config["encoder"]}
    return config


def _read_safetensors(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, checked to be finite; a clear ``ValueError`` when it is corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.stat().st_size == 0:
        raise ValueError(f"corrupt checkpoint weights {path}: the file is empty (0 bytes)")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"corrupt checkpoint weights {path}: {err}") from err
    return check_state_dict(state, str(path))


def load_weights(
    model: nn.Module, directory: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load the weights of a pa3d checkpoint directory into ``model``, whose config must match the saved one.

    Args:
        model: a model with a ``config`` (keys that only change behaviour, such as ``drop_path_rate``, may
            differ); a ``ValueError`` names every other mismatch.
        directory: a directory written by :func:`save_pretrained`.
        map_location: device for the loaded tensors.

    Returns:
        ``model``, in eval mode.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config = _with_later_keys(read_config(directory))
    diffs = [d for d in _config_diff(config, model.config) if d.split(":")[0].split(".")[-1] not in _FREE_KEYS]
    if diffs:
        raise ValueError(f"checkpoint {directory} was saved from another config: " + "; ".join(diffs))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not a pa3d checkpoint: {WEIGHTS_NAME} is missing")
    state = _read_safetensors(weights, map_location=map_location)
    problems = _state_fit(model.state_dict(), state)
    if problems:
        raise ValueError(f"checkpoint {weights} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state)
    return model.eval()


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a module with a ``config`` and a ``from_config``.

    The model class passes itself in (``cls``), so this module never imports the model.
    """

    def save_pretrained(self, directory: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (with optional ``metadata``) to ``directory`` atomically."""
        return save_pretrained(self, directory, metadata=metadata)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any):
        """Load a directory written by :meth:`save_pretrained` (or ``hf://org/repo``).

        ``overrides`` (e.g. ``drop_path_rate=0.0``) change the saved config before building; changing a
        key that shapes the weights (e.g. ``embed_dim``) fails with a message naming the mismatch.
        """
        path = resolve_checkpoint(directory)
        if not path.is_dir():
            if path.is_file():
                raise ValueError(f"{path} is a file; from_pretrained reads a save_pretrained folder "
                                 "(load_checkpoint also takes official .pt files)")
            raise FileNotFoundError(f"checkpoint directory {path} does not exist")
        config = read_config(path)
        enc = dict(config.get("encoder", {}))
        for k, v in overrides.items():
            if k in enc:
                enc[k] = v
            else:
                config[k] = v
        config["encoder"] = enc
        try:
            model = cls.from_config(config)  # type: ignore[attr-defined]
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path / CONFIG_NAME}: cannot build the model from this config: {err}") from err
        return load_weights(model, path)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """Turn a checkpoint spec into a local path.

    ``hf://org/repo`` (a pa3d directory on the Hugging Face hub) or ``hf://org/repo/file.pt`` (one file,
    e.g. the official ``hf://patchalign3d/patchalign3d-encoder/patchalign3d.pt``) resolve through
    ``huggingface_hub``, from its cache when offline; anything else is a local path.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"checkpoint must be a path or an hf:// id, got {type(spec).__name__}")
    spec = str(spec)
    if not spec.strip():
        raise ValueError("checkpoint must be a path or an hf:// id, got an empty string")
    if not spec.startswith("hf://"):
        return Path(spec).expanduser()
    parts = spec[len("hf://") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"hf:// checkpoint must be hf://ORG/REPO[/FILE], got {spec!r}")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    huggingface_hub = require("huggingface_hub", "loading hf:// checkpoints")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=offline))
        if repo_id == "patchalign3d/patchalign3d-encoder":  # the official release: one .pt file
            return Path(huggingface_hub.hf_hub_download(repo_id, "patchalign3d.pt", local_files_only=offline))
        return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=offline))
    except Exception as err:  # noqa: BLE001 - offline / not found: one clear message
        reason = "offline (HF_HUB_OFFLINE=1): not in the local cache" if offline else f"{type(err).__name__}: {err}"
        raise FileNotFoundError(f"cannot resolve {spec} ({reason})") from err
