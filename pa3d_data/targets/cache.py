"""A resumable on-disk cache of Stage-1 targets: one ``<shape_id>.safetensors`` per shape plus ``cache.json``.

Each shape file holds ``centers (G, 3)`` and unit-norm ``targets (G, T)`` (float32, or float16 when asked)
and, as string metadata, the run's settings (teacher, views, G, K, seed, image size, ...) and its shape id.
Files are written to a temporary name in the same folder and moved into place with ``os.replace``, so a
reader never sees a half-written file; temporary files a killed writer left behind are removed when the cache
is opened again (once they are older than ``stale_after`` seconds, so a live writer's file is never touched).
``cache.json`` records the settings, written with the first shape file (a run that fails before writing
anything leaves no settings behind to refuse the corrected run); opening the cache again with other settings
raises instead of mixing targets of two runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["TargetCache", "CacheMismatchError", "load_targets", "FORMAT"]

FORMAT = "pa3d-teacher-targets/1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class CacheMismatchError(ValueError):
    """The cache folder was written with other settings than the ones asked for."""


def _settings_json(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(settings), sort_keys=True))  # plain JSON types, comparable


def load_targets(path: str | os.PathLike) -> dict[str, Any]:
    """Read one cached shape: ``{"centers": (G, 3), "targets": (G, T), "metadata": {str: str}}``.

    Raises:
        ValueError: when the file is not a valid target file (unreadable, tensors missing or misshapen).
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises several types for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    centers, targets = tensors.get("centers"), tensors.get("targets")
    if centers is None or targets is None:
        raise ValueError(f"{path}: needs tensors 'centers' and 'targets', has {sorted(tensors)}")
    if centers.dim() != 2 or centers.shape[1] != 3 or targets.dim() != 2 or targets.shape[0] != centers.shape[0]:
        raise ValueError(
            f"{path}: centers must be (G, 3) and targets (G, T), got {tuple(centers.shape)} and {tuple(targets.shape)}"
        )
    return {"centers": centers, "targets": targets, "metadata": metadata}


class TargetCache:
    """The cache folder of one precompute run.

    Args:
        root: the folder (created when missing).
        settings: what defines the run (teacher, views, image_size, num_groups, group_size, seed, ...);
            JSON-serialisable. Stored in ``cache.json`` on first use and in every shape file's metadata.
        info: extra description for ``cache.json`` (dataset root, command line); not compared on resume.
        stale_after: temporary files older than this (seconds) are removed on opening: an interrupted
            write's leftovers (see ``clean_stale_temp_files``).

    Raises:
        CacheMismatchError: when ``cache.json`` exists with other settings or is unreadable.
        ValueError: when ``root`` is a file, or the settings are not JSON-serialisable.

    Examples:
        >>> import tempfile
        >>> cache = TargetCache(tempfile.mkdtemp(), {"teacher": "tiny", "num_groups": 2})
        >>> path = cache.write("s1", torch.zeros(2, 3), torch.nn.functional.normalize(torch.ones(2, 4), dim=-1))
        >>> cache.is_done("s1"), cache.load("s1")["targets"].shape
        (True, torch.Size([2, 4]))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        settings: Mapping[str, Any],
        *,
        info: Mapping[str, Any] | None = None,
        stale_after: float = 120.0,
    ):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"cache folder {self.root} exists and is not a folder")
        try:
            self.settings = _settings_json({"format": FORMAT, **settings})
            self._info = _settings_json(dict(info or {}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"settings and info must be JSON-serialisable: {err}") from None
        self.root.mkdir(parents=True, exist_ok=True)
        self._claimed = False
        if self.manifest.exists():  # resume: refuse other settings before any work
            self._check_manifest()
            self._claimed = True
        self._metadata = {key: str(value) for key, value in self.settings.items()}
        self.removed_temp_files = self.clean_stale_temp_files(stale_after)

    @property
    def manifest(self) -> Path:
        """``cache.json``."""
        return self.root / "cache.json"

    def clean_stale_temp_files(self, older_than: float = 120.0) -> list[Path]:
        """Remove temporary files of interrupted writes (``.<name>.*.tmp``, ``.cache.json.tmp-*``) older than
        ``older_than`` seconds; returns the removed paths. Younger ones may belong to a live writer."""
        now = time.time()
        removed = []
        for path in self.root.glob(".*"):
            name = path.name
            if not (name.startswith(".cache.json.tmp-") or (name.endswith(".tmp") and ".safetensors." in name)):
                continue
            try:
                if path.is_file() and now - path.stat().st_mtime > older_than:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # another worker removed it first
                continue
        return removed

    def _claim(self) -> None:
        """Write ``cache.json`` once (atomically, first writer wins), or check it matches."""
        if self._claimed:
            return
        if not self.manifest.exists():
            tmp = self.root / f".cache.json.tmp-{os.getpid()}"
            try:
                tmp.write_text(json.dumps({"settings": self.settings, "info": self._info}, indent=2, sort_keys=True))
                os.link(tmp, self.manifest)  # fails if another worker created it first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        self._check_manifest()
        self._claimed = True

    def _check_manifest(self) -> None:
        try:
            stored = json.loads(self.manifest.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CacheMismatchError(
                f"{self.manifest} is unreadable ({type(err).__name__}: {err}); remove it or use another --out"
            ) from None
        if not isinstance(stored, dict):
            raise CacheMismatchError(
                f"{self.manifest} is unreadable ('settings' is a {type(stored).__name__}); "
                "remove it or use another --out"
            )
        if stored != self.settings:
            diff = sorted(k for k in stored.keys() | self.settings.keys() if stored.get(k) != self.settings.get(k))
            details = ", ".join(f"{k}: cached {stored.get(k)!r} vs asked {self.settings.get(k)!r}" for k in diff)
            raise CacheMismatchError(
                f"{self.root} holds targets of other settings ({details}); resume with the same settings or use "
                f"another --out"
            )

    def path(self, shape_id: str) -> Path:
        """The file of a shape; characters outside ``[A-Za-z0-9._-]`` become ``_``."""
        if not shape_id:
            raise ValueError("shape_id must be a non-empty string")
        return self.root / f"{_SAFE.sub('_', str(shape_id))}.safetensors"

    def is_done(self, shape_id: str) -> bool:
        """True when the shape's file exists, reads back, matches the settings and holds unit-norm targets.

        A damaged or foreign file gives False, so the shape is computed again (and the file replaced).
        """
        path = self.path(shape_id)
        if not path.is_file():
            return False
        try:
            data = load_targets(path)
        except ValueError:
            return False
        meta = data["metadata"]
        if any(meta.get(key) != value for key, value in self._metadata.items()) or meta.get("shape_id") != shape_id:
            return False
        targets = data["targets"].float()
        if not bool(torch.isfinite(targets).all()) or not bool(torch.isfinite(data["centers"]).all()):
            return False
        num_groups = self.settings.get("num_groups")
        if num_groups is not None and targets.shape[0] != num_groups:
            return False
        return bool(((targets.norm(dim=-1) - 1).abs() < 1e-2).all())

    def write(
        self, shape_id: str, centers: torch.Tensor, targets: torch.Tensor, *, dtype: torch.dtype | None = None
    ) -> Path:
        """Store a shape's ``centers (G, 3)`` and ``targets (G, T)`` atomically; returns the file."""
        from safetensors.torch import save

        from pa3d_models.files import atomic_write_bytes

        if centers.dim() != 2 or centers.shape[-1] != 3:
            raise ValueError(f"centers must be (G, 3), got {tuple(centers.shape)}")
        if targets.dim() != 2 or targets.shape[0] != centers.shape[0]:
            raise ValueError(f"targets must be (G, T) with G={centers.shape[0]}, got {tuple(targets.shape)}")
        dtype = dtype or torch.float32
        tensors = {
            "centers": centers.detach().to("cpu", torch.float32).contiguous(),
            "targets": targets.detach().to("cpu", dtype).contiguous(),
        }
        metadata = {**self._metadata, "shape_id": str(shape_id), "feature_dim": str(targets.shape[1])}
        data = save(tensors, metadata=metadata)
        self._claim()  # the settings are recorded with the first file, once work has succeeded
        return atomic_write_bytes(self.path(shape_id), data)

    def load(self, shape_id: str) -> dict[str, Any]:
        """Read a shape's entry (see [load_targets][pa3d_data.targets.load_targets])."""
        return load_targets(self.path(shape_id))
