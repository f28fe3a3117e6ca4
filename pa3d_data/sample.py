"""The one sample structure every pa3d dataset returns, and the error type of the data readers."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PartSample", "DataFormatError", "readable_part_name", "prompt_names"]


class DataFormatError(ValueError):
    """A file that cannot be read as the expected format; the message names the file and the problem.

    Attributes:
        path: the offending file (or folder).
        problem: what is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _as_tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


@dataclass
class PartSample:
    """One part-annotated shape.

    Every dataset of `pa3d_data` returns this structure. Points stay in the source file's coordinates
    unless a transform is asked for.

    Args:
        points: `(N, 3)` float32 coordinates.
        labels: `(N,)` long, indices into `label_names`; -1 marks an unlabelled point.
        label_names: every part name of the shape's category, in a fixed order per category, spelled as in the
            dataset's files (never renamed).
        category: the category (e.g. the L-PSB folder name).
        shape_id: the shape's id (the file's stem for file-based datasets, e.g. `"101"`).
        label_masks: optional `(L, N)` bool, one possibly overlapping mask per label (the Find3D format).
        normals: optional `(N, 3)` float32.
        colors: optional `(N, 3)` float32 in [0, 1].
        prompts: optional text to prompt for each label (`(L,)` strings); `None` means
            `readable_part_name(name)` for each name. A dataset's text map fills it (`backsupport` -> "backrest").
        meta: anything else. Keys starting with `point_` hold per-point `(N, ...)` tensors that sampling indexes
            together with the points (e.g. `point_face_ids`).

    Shape:
        points `(N, 3)`, labels `(N,)`, label_masks `(L, N)`, normals `(N, 3)`, colors `(N, 3)`.

    Examples:
        >>> s = PartSample(torch.zeros(4, 3), torch.tensor([0, 1, 1, -1]), ["seat", "leg"], "stool", "0")
        >>> s.num_points, s.num_labels, s.texts
        (4, 2, ['seat', 'leg'])
        >>> s.select(torch.tensor([1, 3])).labels.tolist()
        [1, -1]
    """

    points: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]
    category: str = ""
    shape_id: str = ""
    label_masks: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    prompts: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = _as_tensor(self.points, torch.float32)
        self.labels = _as_tensor(self.labels, torch.long)
        self.label_names = [str(n) for n in self.label_names]
        self.category = str(self.category)
        self.shape_id = str(self.shape_id)
        where = f" (shape {self.category}/{self.shape_id})" if self.shape_id else ""
        if self.points.dim() != 2 or self.points.shape[-1] != 3:
            raise ValueError(f"points must be (N, 3) float, got shape {tuple(self.points.shape)}{where}")
        n = self.points.shape[0]
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be (N,) = ({n},) long, got shape {tuple(self.labels.shape)}{where}")
        num_labels = len(self.label_names)
        if n and (int(self.labels.min()) < -1 or int(self.labels.max()) >= num_labels):
            raise ValueError(
                f"labels must lie in [-1, {num_labels}) to index label_names, got range "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]{where}"
            )
        if self.label_masks is not None:
            self.label_masks = _as_tensor(self.label_masks, torch.bool)
            if self.label_masks.shape != (num_labels, n):
                raise ValueError(
                    f"label_masks must be (L, N) = ({num_labels}, {n}) bool, got shape "
                    f"{tuple(self.label_masks.shape)}{where}"
                )
        for name in ("normals", "colors"):
            value = getattr(self, name)
            if value is not None:
                value = _as_tensor(value, torch.float32)
                if value.shape != (n, 3):
                    raise ValueError(f"{name} must be (N, 3) = ({n}, 3) float, got shape {tuple(value.shape)}{where}")
                setattr(self, name, value)
        if self.prompts is not None:
            self.prompts = [str(p) for p in self.prompts]
            if len(self.prompts) != num_labels:
                raise ValueError(f"prompts must have one text per label ({num_labels}), got {len(self.prompts)}{where}")

    @property
    def num_points(self) -> int:
        """N, the number of points."""
        return int(self.points.shape[0])

    @property
    def num_labels(self) -> int:
        """L, the number of label names."""
        return len(self.label_names)

    @property
    def texts(self) -> list[str]:
        """The text to prompt for each label: `prompts`, or the cleaned `label_names`."""
        if self.prompts is not None:
            return list(self.prompts)
        return [readable_part_name(n) for n in self.label_names]

    def masks(self) -> torch.Tensor:
        """`(L, N)` bool label masks: `label_masks` when given, else one-hot of `labels`."""
        if self.label_masks is not None:
            return self.label_masks
        ids = torch.arange(self.num_labels, device=self.labels.device)
        return self.labels.unsqueeze(0) == ids.unsqueeze(1)

    def replace(self, **changes: Any) -> PartSample:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def select(self, index: torch.Tensor) -> PartSample:
        """The sample restricted to the points `index` (`(M,)` long indices or `(N,)` bool mask), with labels,
        masks, normals, colours and per-point `meta["point_*"]` entries kept aligned."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.long()
        meta = dict(self.meta)
        for key, value in self.meta.items():
            if key.startswith("point_") and isinstance(value, torch.Tensor | np.ndarray):
                meta[key] = value[index] if isinstance(value, torch.Tensor) else value[index.numpy()]
        return dataclasses.replace(
            self,
            points=self.points[index],
            labels=self.labels[index],
            label_masks=None if self.label_masks is None else self.label_masks[:, index],
            normals=None if self.normals is None else self.normals[index],
            colors=None if self.colors is None else self.colors[index],
            meta=meta,
        )


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_DIGITS = re.compile(r"(?<=[A-Za-z])(?=\d)")


def readable_part_name(name: str) -> str:
    """A raw dataset part name as plain words for a prompt: camelCase and digits split, `_`/`-` and punctuation
    to spaces, lowercase. (`pa3d_models.clean_part_name` is the official release's lighter cleaning, applied
    to any text before it is encoded; it leaves these words unchanged.)

    Examples:
        >>> readable_part_name("lowerArm"), readable_part_name("back_soft_surface"), readable_part_name("finger1")
        ('lower arm', 'back soft surface', 'finger 1')
    """
    text = _DIGITS.sub(" ", _CAMEL.sub(" ", str(name).strip()))
    text = re.sub(r"[^\w\s]|_", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def prompt_names(label_names: list[str], text_map: dict[str, str] | None = None, *, category: str = "") -> list[str]:
    """The prompt text of each label name: `text_map["Category/name"]`, else `text_map["name"]`, else
    `readable_part_name(name)`. Names themselves are never changed.

    Examples:
        >>> prompt_names(["backsupport", "leg"], {"backsupport": "backrest"})
        ['backrest', 'leg']
        >>> prompt_names(["support"], {"Chair/support": "seat"}, category="Chair")
        ['seat']
    """
    text_map = text_map or {}
    out = []
    for name in label_names:
        key = f"{category}/{name}"
        out.append(text_map[key] if key in text_map else text_map.get(name, readable_part_name(name)))
    return out
