"""The Find3D / PatchAlign3D training layout: points with overlapping, named multi-view masks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .base import PartDataset
from .sample import DataFormatError, PartSample, readable_part_name

__all__ = ["Find3DDataset", "merge_named_masks"]


def merge_named_masks(masks: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """OR together masks that share a name (e.g. one per view); empty names are dropped.

    Args:
        masks: `(M, N)` masks (any dtype; nonzero = inside).
        names: one name per mask (a longer list is truncated to M, a shorter one truncates the masks).

    Returns:
        `(label_masks (L, N) bool, label_names (L,), labels (N,) long)`: names in order of first appearance,
        and for each point the last label whose mask covers it (-1 when none), as the official loader.

    Examples:
        >>> m = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]])
        >>> masks, names, labels = merge_named_masks(m, ["leg", "seat", "leg"])
        >>> names, masks.int().tolist(), labels.tolist()
        (['leg', 'seat'], [[1, 1, 1, 0], [0, 0, 1, 0]], [0, 0, 1, -1])
    """
    k = min(len(names), masks.shape[0])
    masks, names = masks[:k].bool(), [str(n).strip() for n in names[:k]]
    order: list[str] = []
    for n in names:
        if n and n not in order:
            order.append(n)
    merged = torch.zeros(len(order), masks.shape[1], dtype=torch.bool)
    for m, n in zip(masks, names):
        if n:
            merged[order.index(n)] |= m
    ids = torch.arange(len(order)).unsqueeze(1).expand_as(merged)
    labels = torch.where(merged, ids, torch.full_like(ids, -1)).max(dim=0).values if len(order) else \
        torch.full((masks.shape[1],), -1, dtype=torch.long)
    return merged, order, labels.long()


def _load_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataFormatError(path, "file does not exist") from None
    except Exception as err:
        raise DataFormatError(path, f"cannot be read ({err})") from None


class Find3DDataset(PartDataset):
    """The Find3D data-engine / PatchAlign3D training data.

    Layout under `root` (the folder holding `labeled/`, or `labeled/` itself):
    `labeled/split/<split>.txt` (one item id `<category>_<uid>` per line; the uid follows the last `_`),
    `labeled/points/<uid>/points.pt` `(N, 3)` (optional `normals.pt`, `rgb.pt`), and
    `labeled/rendered/<item>/oriented/masks/merged/mask2points.pt` `(M, N)` with `mask_labels.txt` (one name
    per mask). Masks with the same name are merged (`merge_named_masks`); each sample carries
    `label_masks (L, N)` and hard `labels` (the last covering label). `category` is the item id without the
    uid (`_` kept), `shape_id` the uid, `meta["item_id"]` the item id.

    Args:
        root: the dataset root.
        split: `"train"`, `"val"` or the path of a list file.
        exclude_category_label: drop a label whose cleaned name equals the cleaned category (the official
            `--exclude_category_label`).
        num_points: fixed number of points per shape (a seeded random subset); None keeps every point.
        seed: base seed of the per-item generators.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`
            (`MaskAwareSample(2048)` is the official sampling).
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        on_error: `"raise"` or `"skip"` (skip unreadable shapes with a warning, recorded in `skipped`).
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.

    Raises:
        DataFormatError: a missing root or split file, an empty split, or (when loading) missing or
            mismatched points and masks, or an item with no named mask.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path = "train",
        *,
        exclude_category_label: bool = False,
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        root = self._check_root(root, "Find3D")
        self.root = root / "labeled" if (root / "labeled").is_dir() else root
        self.split = str(split)
        list_file = Path(split) if Path(split).suffix == ".txt" else self.root / "split" / f"{split}.txt"
        if not list_file.exists():
            raise DataFormatError(list_file, "split file does not exist")
        self.items = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        if not self.items:
            raise DataFormatError(list_file, "split is empty")
        self.exclude_category_label = exclude_category_label

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PartSample:
        item = self.items[index]
        category, _, uid = item.rpartition("_")
        if not uid or not category:
            raise DataFormatError(self.root / "split", f"item id {item!r} is not '<category>_<uid>'")
        pdir = self.root / "points" / uid
        points = torch.as_tensor(_load_pt(pdir / "points.pt")).float()
        if points.dim() != 2 or points.shape[1] != 3:
            raise DataFormatError(pdir / "points.pt", f"points must be (N, 3), got {tuple(points.shape)}")
        mdir = self.root / "rendered" / item / "oriented" / "masks" / "merged"
        masks = torch.as_tensor(_load_pt(mdir / "mask2points.pt"))
        if masks.dim() != 2 or masks.shape[1] != points.shape[0]:
            raise DataFormatError(mdir / "mask2points.pt",
                                  f"masks must be (M, N) with N={points.shape[0]}, got {tuple(masks.shape)}")
        label_file = mdir / "mask_labels.txt"
        if not label_file.exists():
            raise DataFormatError(label_file, "mask label file does not exist")
        names = label_file.read_text(encoding="utf-8").splitlines()
        label_masks, label_names, labels = merge_named_masks(masks, names)
        if self.exclude_category_label:
            cat = readable_part_name(category)
            keep = [i for i, n in enumerate(label_names) if readable_part_name(n) != cat]
            if len(keep) < len(label_names):
                label_masks, label_names, labels = merge_named_masks(label_masks[keep], [label_names[i] for i in keep])
        if not label_names:
            raise DataFormatError(label_file, "item has no named mask")
        extra: dict[str, Any] = {}
        for name, key in (("normals.pt", "normals"), ("rgb.pt", "colors")):
            if (pdir / name).exists():
                value = torch.as_tensor(_load_pt(pdir / name)).float()
                extra[key] = value / 255.0 if key == "colors" and value.numel() and value.max() > 1 else value
        return PartSample(points, labels, label_names, category, uid, label_masks=label_masks, **extra,
                          meta={"path": str(pdir / "points.pt"), "item_id": item})
