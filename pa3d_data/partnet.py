"""PartNet / PartNet-Mobility point samples, and PartNet-E (the PartSLIP test set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import PartDataset
from .readers import _load_json, read_ply, read_table
from .sample import DataFormatError, PartSample

__all__ = ["PartNetDataset", "PartNetEDataset", "partnet_node_names"]


def partnet_node_names(tree: list[dict[str, Any]], level: str | int = "leaf") -> dict[int, str]:
    """Map every node id of a PartNet `result.json` hierarchy to a part name.

    Args:
        tree: the parsed `result.json` (a list of root nodes with `id`, `name`, `children`).
        level: `"leaf"`: each node's own `name`; an int d: the name of the node's ancestor at depth d (the root
            is depth 0), or its own name for nodes shallower than d.

    Examples:
        >>> tree = [{"id": 0, "name": "chair", "children": [{"id": 1, "name": "chair_back",
        ...          "children": [{"id": 2, "name": "back_surface"}]}]}]
        >>> partnet_node_names(tree), partnet_node_names(tree, 1)
        ({0: 'chair', 1: 'chair_back', 2: 'back_surface'}, {0: 'chair', 1: 'chair_back', 2: 'chair_back'})
    """
    out: dict[int, str] = {}

    def walk(node: dict[str, Any], path: list[str]) -> None:
        path = path + [str(node.get("name", node.get("text", "")))]
        name = path[-1] if level == "leaf" else path[min(int(level), len(path) - 1)]
        out[int(node["id"])] = name
        for child in node.get("children", []) or []:
            walk(child, path)

    for root in tree:
        walk(root, [])
    return out


def _leaf_ids(tree: list[dict[str, Any]]) -> set[int]:
    out: set[int] = set()
    stack = list(tree)
    while stack:
        node = stack.pop()
        children = node.get("children") or []
        if children:
            stack.extend(children)
        else:
            out.add(int(node["id"]))
    return out


class PartNetDataset(PartDataset):
    """PartNet-style objects: `point_sample/pts-10000.txt` (xyz rows), `label-10000.txt` (a PartNet node id
    per point) and `result.json` (the part hierarchy giving each id its name).

    Objects are found as `root` itself or any folder up to three levels below it that holds
    `point_sample/pts-10000.txt`. `category` is `meta.json`'s `model_cat` (else the root node's name),
    `shape_id` the object's folder name. `label_names` of an object are the names (at `level`) that its
    category uses across the dataset, sorted; `meta["point_node_ids"]` keeps the original node id of each
    point (instances: the four legs of a chair have four ids and one name).

    Args:
        root: an object folder or a folder of them (e.g. PartNet-Mobility's `assets/`).
        level: `"leaf"` (default) or a hierarchy depth (1 = `chair_back`, `chair_seat`, ...).
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
        level: str | int = "leaf",
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        if level != "leaf" and not (isinstance(level, int) and level >= 0):
            raise ValueError(f"level must be 'leaf' or a depth >= 0, got {level!r}")
        self.level = level
        self.root = self._check_root(root, "PartNet")
        pattern = "point_sample/pts-10000.txt"
        found = sorted({p.parent.parent for k in range(4) for p in self.root.glob("*/" * k + pattern)})
        self.items: list[tuple[str, Path, dict[int, str]]] = []
        names: dict[str, set[str]] = {}
        for obj in found:
            try:
                tree = _load_json(obj / "result.json")
                nodes = partnet_node_names(tree, level)
                cat = self._category(obj, nodes)
            except DataFormatError as err:
                self._skip_or_raise(err.path, err.problem)
                continue
            names.setdefault(cat, set()).update(nodes[i] for i in _leaf_ids(tree))
            self.items.append((cat, obj, nodes))
        if not self.items:
            raise DataFormatError(self.root, f"no PartNet object ({pattern} + result.json) found")
        self._used: dict[str, set[str]] = names

    @staticmethod
    def _category(obj: Path, nodes: dict[int, str]) -> str:
        meta = obj / "meta.json"
        if meta.exists():
            cat = _load_json(meta).get("model_cat")
            if cat:
                return str(cat)
        return nodes[min(nodes)] if nodes else obj.name

    def __len__(self) -> int:
        return len(self.items)

    def label_names_of(self, category: str) -> list[str]:
        """The sorted part names (at the dataset's `level`) of the leaves of every `category` object."""
        return sorted(self._used[category])

    def load(self, index: int) -> PartSample:
        cat, obj, nodes = self.items[index]
        pts_file = obj / "point_sample" / "pts-10000.txt"
        lab_file = obj / "point_sample" / "label-10000.txt"
        points = read_table(pts_file)[:, :3]
        ids = read_table(lab_file)[:, 0].astype(np.int64)
        if len(ids) != len(points):
            raise DataFormatError(lab_file, f"holds {len(ids)} labels for {len(points)} points")
        unknown = sorted(set(ids.tolist()) - set(nodes))
        if unknown:
            raise DataFormatError(lab_file, f"node ids {unknown[:5]} are not in result.json")
        names = self.label_names_of(cat)
        inner = sorted({nodes[i] for i in set(ids.tolist())} - set(names))
        if inner:
            raise DataFormatError(lab_file, f"points carry inner hierarchy nodes {inner}, not leaves")
        lookup = {nid: names.index(n) for nid, n in nodes.items() if n in names}
        labels = np.array([lookup[i] for i in ids.tolist()], dtype=np.int64)
        return PartSample(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(labels), names, cat, obj.name,
                          meta={"path": str(pts_file), "point_node_ids": torch.from_numpy(ids)})


class PartNetEDataset(PartDataset):
    """PartNet-E, the PartSLIP benchmark: `<Category>/<id>/pc.ply` (xyz + rgb), `label.npy` (a pickled dict with
    `semantic_seg`, -1 = unlabelled, and `instance_seg`) and `PartNetE_meta.json` (category -> part names).

    `label.npy` is a pickle: read only files you trust. `meta["point_instance_ids"]` keeps `instance_seg`.

    Args:
        root: the split folder (`.../test`) or its parent; `PartNetE_meta.json` is looked up in `root`, its
            parent and grandparent unless `meta_file` is given.
        categories: categories to keep (default all found).
        meta_file: path of `PartNetE_meta.json`.
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
        categories: Sequence[str] | None = None,
        meta_file: str | Path | None = None,
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        root = self._check_root(root, "PartNet-E")
        if (root / "test").is_dir() and not any(root.glob("*/*/pc.ply")):
            root = root / "test"
        self.root = root
        if meta_file is None:
            candidates = [d / "PartNetE_meta.json" for d in (root, root.parent, root.parent.parent)]
            meta_file = next((c for c in candidates if c.exists()), candidates[0])
        meta = _load_json(Path(meta_file))
        self.part_names: dict[str, list[str]] = {str(k): [str(n) for n in v] for k, v in meta.items()}
        found = sorted({p.parent.parent.name for p in root.glob("*/*/pc.ply")})
        cats = found if categories is None else [categories] if isinstance(categories, str) else list(categories)
        self.items: list[tuple[str, Path]] = []
        for cat in cats:
            if cat not in self.part_names:
                raise DataFormatError(meta_file, f"category {cat!r} has no part names")
            dirs = sorted((p.parent for p in (root / cat).glob("*/pc.ply")), key=lambda p: (len(p.name), p.name))
            if not dirs:
                self._skip_or_raise(root / cat, "category folder holds no <id>/pc.ply")
            self.items += [(cat, d) for d in dirs]
        if not self.items:
            raise DataFormatError(root, "no PartNet-E object (<Category>/<id>/pc.ply) found")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PartSample:
        cat, obj = self.items[index]
        ply = read_ply(obj / "pc.ply")
        label_file = obj / "label.npy"
        try:
            raw = np.load(label_file, allow_pickle=True)
        except FileNotFoundError:
            raise DataFormatError(label_file, "label file does not exist") from None
        except Exception as err:
            raise DataFormatError(label_file, f"cannot be read ({err})") from None
        data = raw.item() if raw.dtype == object and raw.shape == () else {"semantic_seg": raw}
        if "semantic_seg" not in data:
            raise DataFormatError(label_file, f"has no 'semantic_seg' (keys: {sorted(data)})")
        sem = np.asarray(data["semantic_seg"]).reshape(-1).astype(np.int64)
        n = len(ply["points"])
        if len(sem) != n:
            raise DataFormatError(label_file, f"holds {len(sem)} labels for the {n} points of pc.ply")
        names = self.part_names[cat]
        if sem.size and sem.max() >= len(names):
            raise DataFormatError(label_file, f"label {int(sem.max())} is beyond {cat}'s {len(names)} part names")
        meta: dict[str, Any] = {"path": str(obj / "pc.ply")}
        if "instance_seg" in data:
            meta["point_instance_ids"] = torch.as_tensor(np.asarray(data["instance_seg"]).reshape(-1).astype(np.int64))
        return PartSample(torch.from_numpy(ply["points"]), torch.from_numpy(np.maximum(sem, -1)), names, cat, obj.name,
                          colors=ply.get("colors"), normals=ply.get("normals"), meta=meta)
