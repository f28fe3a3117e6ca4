"""Evaluation sets of other zero-shot part segmentation work: ScanObjectNN-Part (COPS), Objaverse-General
(Find3D) and FAUST-style `.npz` files (PatchAlign3D)."""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import PartDataset
from .readers import _load_json, read_pcd, read_points
from .sample import DataFormatError, PartSample

__all__ = [
    "ScanObjectNNPartDataset",
    "ObjaverseGeneralDataset",
    "FaustNpzDataset",
    "SCANOBJECTNN_CATEGORIES",
    "SCANOBJECTNN_PART_REMAP",
]

SCANOBJECTNN_CATEGORIES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed", "pillow", "sink",
    "sofa", "toilet",
)
"""ScanObjectNN's 15 categories; the index is the category id of `split_new.txt`."""

SCANOBJECTNN_PART_REMAP: dict[int, list[int]] = {
    0: [0, 1, 2, 3], 1: [0, 1, 2, -1, 3], 2: [0, 1, 2, 3, 4], 3: [0, 1, 2, 3, 4, 5, 6], 4: [0, -1, 1, 2, 3, 4],
    5: [0, 1, 2, 3], 6: [0, 1, 2], 7: [0, 1, 2], 8: [0, 1, 2, 3], 9: [0, 1, 2], 10: [0, 1, 2], 11: [0, 1],
    12: [0, 1, 2, 3], 13: [0, 1, 2, 3, 4], 14: [0, 1, 2, 3, 4, 5],
}
"""COPS' per-category remapping of raw part ids to contiguous ids (-1 = dropped)."""

_SOO_DIR = "object_dataset_complete_with_parts_"
_SOO_NAMES = "ScanObjectNN-Part_part_names.json"


class ScanObjectNNPartDataset(PartDataset):
    """ScanObjectNN with part annotations, in the COPS layout.

    `object_dataset_complete_with_parts_/split_new.txt` lists `file<TAB>category id<TAB>flag` (`t` = test);
    `<category>/<stem>.bin` is float32 (a leading count, then N rows of 11 values: xyz at 0-2, rgb at 6-8,
    the object/background instance id last) and `<stem>_part.bin` float32 (a leading count, then N rows of 2,
    the part id last). Part ids are remapped as COPS does (`SCANOBJECTNN_PART_REMAP`, off with
    `remap_labels=False`); names (starting with `"background"`) come from COPS'
    `ScanObjectNN-Part_part_names.json`, looked up in `root` unless `part_names` gives them.

    Args:
        root: the folder holding `object_dataset_complete_with_parts_/`, or that folder.
        split: `"test"` or `"train"`.
        part_names: category -> names, or the path of the names JSON.
        remap_labels: apply COPS' id remapping.
        filter_background: keep only the points of the main object (the most frequent instance id other
            than 0, 1, 2), as COPS' default.
        num_points: fixed number of points per shape (a seeded random subset); None keeps every point.
        seed: base seed of the per-item generators.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`.
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        on_error: `"raise"` or `"skip"` (skip unreadable shapes with a warning, recorded in `skipped`).
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "test",
        part_names: dict[str, list[str]] | str | Path | None = None,
        remap_labels: bool = True,
        filter_background: bool = False,
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = self._check_root(root, "ScanObjectNN-Part")
        self.root = root / _SOO_DIR if (root / _SOO_DIR).is_dir() else root
        if part_names is None or isinstance(part_names, str | Path):
            names_file = Path(part_names) if part_names is not None else next(
                (d / _SOO_NAMES for d in (self.root, self.root.parent) if (d / _SOO_NAMES).exists()),
                self.root / _SOO_NAMES)
            if not names_file.exists():
                raise DataFormatError(names_file, "part-name file does not exist (pass part_names=)")
            part_names = _load_json(names_file)
        self.part_names = {str(k): [str(n) for n in v] for k, v in dict(part_names).items()}
        self.split, self.remap_labels, self.filter_background = split, remap_labels, filter_background
        split_file = self.root / "split_new.txt"
        if not split_file.exists():
            raise DataFormatError(split_file, "split file does not exist")
        self.items: list[tuple[str, int]] = []
        for line in split_file.read_text().splitlines():
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) < 2 or not cols[0]:
                continue
            is_test = len(cols) > 2 and cols[2] == "t"
            if is_test == (split == "test"):
                self.items.append((cols[0], int(cols[1])))
        if not self.items:
            raise DataFormatError(split_file, f"split {split!r} is empty")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PartSample:
        file, cat_id = self.items[index]
        cat = SCANOBJECTNN_CATEGORIES[cat_id]
        stem = file[:-4] if file.endswith(".bin") else file
        path = self.root / cat / f"{stem}.bin"
        part_path = self.root / cat / f"{stem}_part.bin"
        for p in (path, part_path):
            if not p.exists():
                raise DataFormatError(p, "file does not exist")
        raw = np.fromfile(path, dtype=np.float32)[1:]
        part = np.fromfile(part_path, dtype=np.float32)[1:]
        if raw.size % 11 or part.size % 2 or raw.size // 11 != part.size // 2:
            raise DataFormatError(part_path, f"holds {part.size // 2} part rows for {raw.size // 11} points "
                                             "(expected N x 11 and N x 2 float32 after a count)")
        cloud, ids = raw.reshape(-1, 11), part.reshape(-1, 2)[:, -1].astype(np.int64)
        if self.filter_background:
            inst = cloud[:, -1]
            fg = inst[~np.isin(inst, (0, 1, 2))]
            if fg.size:
                values, counts = np.unique(fg, return_counts=True)
                keep = inst == values[np.argmax(counts)]
                cloud, ids = cloud[keep], ids[keep]
        names = self.part_names.get(cat)
        if names is None:
            raise DataFormatError(path, f"no part names for category {cat!r}")
        if self.remap_labels:
            remap = np.array(SCANOBJECTNN_PART_REMAP[cat_id])
            ok = (ids >= 0) & (ids < len(remap))
            ids = np.where(ok, remap[np.clip(ids, 0, len(remap) - 1)], -1)
        ids = np.where(ids < len(names), ids, -1)
        rgb = cloud[:, 6:9]
        colors = rgb / 255.0 if rgb.size and rgb.max() > 1 else rgb
        return PartSample(torch.from_numpy(cloud[:, :3].copy()), torch.from_numpy(ids), names, cat, stem,
                          colors=torch.from_numpy(np.ascontiguousarray(colors, dtype=np.float32)),
                          meta={"path": str(path)})


class ObjaverseGeneralDataset(PartDataset):
    """Find3D's Objaverse-General benchmark: `<root>/<subset>/<class_name>_<uid>/` with `points5000.pcd`
    (points, normals, colours), `label_map.json` (`{"1": name, ...}`) and `labels.npy` (0 = unlabelled,
    1..K). `labels` are shifted to 0..K-1 (-1 = unlabelled), `category` is the class name with `_` -> space,
    `shape_id` the uid.

    Args:
        root: the benchmark root, or one subset folder.
        subsets: which of `seenclass`, `unseen`, `shapenetpart` (default: all found).
        num_points: fixed number of points per shape (a seeded random subset); None keeps every point.
        seed: base seed of the per-item generators.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`.
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        on_error: `"raise"` or `"skip"` (skip unreadable shapes with a warning, recorded in `skipped`).
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.
    """

    SUBSETS = ("seenclass", "unseen", "shapenetpart")

    def __init__(
        self,
        root: str | Path,
        *,
        subsets: Sequence[str] | None = None,
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        self.root = self._check_root(root, "Objaverse-General")
        if subsets is None:
            dirs = [self.root / s for s in self.SUBSETS if (self.root / s).is_dir()] or [self.root]
        else:
            bad = [s for s in subsets if s not in self.SUBSETS]
            if bad:
                raise ValueError(f"subsets must be among {self.SUBSETS}, got {bad}")
            dirs = [self.root / s for s in subsets]
            for d in dirs:
                if not d.is_dir():
                    raise DataFormatError(d, "subset folder does not exist")
        self.items = [p.parent for d in dirs for p in sorted(d.glob("*/points5000.pcd"))]
        if not self.items:
            raise DataFormatError(self.root, "no object folder with points5000.pcd found")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PartSample:
        obj = self.items[index]
        data = read_pcd(obj / "points5000.pcd")
        label_map = _load_json(obj / "label_map.json")
        try:
            raw = np.load(obj / "labels.npy", allow_pickle=False).reshape(-1).astype(np.int64)
        except FileNotFoundError:
            raise DataFormatError(obj / "labels.npy", "file does not exist") from None
        n = len(data["points"])
        if len(raw) != n:
            raise DataFormatError(obj / "labels.npy", f"holds {len(raw)} labels for {n} points")
        k = max((int(key) for key in label_map), default=0)
        names = [str(label_map.get(str(i), f"part {i}")) for i in range(1, k + 1)]
        if raw.size and (raw.min() < 0 or raw.max() > k):
            raise DataFormatError(obj / "labels.npy", f"labels must lie in [0, {k}], got [{raw.min()}, {raw.max()}]")
        cls, _, uid = obj.name.rpartition("_")
        return PartSample(torch.from_numpy(data["points"]), torch.from_numpy(raw - 1), names,
                          (cls or obj.name).replace("_", " "), uid or obj.name, normals=data.get("normals"),
                          colors=data.get("colors"), meta={"path": str(obj / "points5000.pcd"),
                                                          "subset": obj.parent.name})


class FaustNpzDataset(PartDataset):
    """FAUST-style `.npz` shapes as PatchAlign3D evaluates them: keys `points (N, 3)`, `labels (N,)`,
    `label_names (K,)` and optionally `category`.

    Args:
        paths: a folder (its `*.npz`), a glob pattern, a file, or a list of these.
        category: the category of shapes whose file has none (FAUST: `"human"`).
        num_points: fixed number of points per shape (a seeded random subset); None keeps every point.
        seed: base seed of the per-item generators.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`. The official
            evaluation draws 2048 points, with replacement only when a shape has fewer:
            `sampler=RandomSample(2048, replace=True)` for those.
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        on_error: `"raise"` or `"skip"` (skip unreadable shapes with a warning, recorded in `skipped`).
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        category: str = "human",
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        entries = [paths] if isinstance(paths, str | Path) else list(paths)
        files: list[Path] = []
        for entry in entries:
            text = str(entry)
            if any(ch in text for ch in "*?["):
                files += sorted(Path(p) for p in glob.glob(text) if p.endswith(".npz"))
                continue
            p = Path(entry).expanduser()
            if p.is_dir():
                files += sorted(p.glob("*.npz"))
            elif p.exists():
                files.append(p)
            else:
                raise DataFormatError(p, "path does not exist")
        if not files:
            raise DataFormatError(", ".join(map(str, entries)), "no .npz file found")
        self.files, self.category = files, category
        self.root = str(files[0].parent)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> PartSample:
        path = self.files[index]
        data = read_points(path)
        if "labels" not in data or "label_names" not in data:
            raise DataFormatError(path, "needs 'labels' and 'label_names' arrays")
        names, labels = data["label_names"], data["labels"]
        if len(labels) != len(data["points"]):
            raise DataFormatError(path, f"holds {len(labels)} labels for {len(data['points'])} points")
        if labels.size and (labels.min() < -1 or labels.max() >= len(names)):
            raise DataFormatError(path, f"labels must lie in [-1, {len(names)}), got [{labels.min()}, {labels.max()}]")
        return PartSample(torch.from_numpy(np.ascontiguousarray(data["points"], dtype=np.float32)),
                          torch.from_numpy(labels), names, data.get("category") or self.category, path.stem,
                          meta={"path": str(path)})
