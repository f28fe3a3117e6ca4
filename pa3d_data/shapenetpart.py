"""ShapeNetPart in the standard `shapenetcore_partanno_segmentation_benchmark_v0_normal` layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import PartDataset
from .readers import _load_json, read_table
from .sample import DataFormatError, PartSample

__all__ = [
    "ShapeNetPartDataset",
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_PART_NAMES",
    "SHAPENETPART_FIND3D_NAMES",
    "SHAPENETPART_SEG_CLASSES",
]

SHAPENETPART_CATEGORIES: dict[str, str] = {
    "Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343", "Chair": "03001627",
    "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134", "Lamp": "03636649", "Laptop": "03642806",
    "Motorbike": "03790512", "Mug": "03797390", "Pistol": "03948459", "Rocket": "04099429",
    "Skateboard": "04225987", "Table": "04379243",
}
"""Category name -> synset, in class-id order."""

SHAPENETPART_PART_NAMES: dict[str, list[str]] = {
    "Airplane": ["body", "wing", "tail", "engine or frame"],
    "Bag": ["handle", "body"],
    "Cap": ["crown", "brim"],
    "Car": ["roof", "hood", "wheel", "body"],
    "Chair": ["back", "seat", "leg", "arm"],
    "Earphone": ["earcup", "headband", "data wire"],
    "Guitar": ["headstock", "neck", "body"],
    "Knife": ["blade", "handle"],
    "Lamp": ["base", "lampshade", "fixing bracket", "pole"],
    "Laptop": ["keyboard", "screen"],
    "Motorbike": ["gas tank", "seat", "wheel", "handles or handlebars", "headlight", "engine or frame"],
    "Mug": ["handle", "cup"],
    "Pistol": ["barrel", "handle or grip", "trigger and guard"],
    "Rocket": ["body", "fin", "nose"],
    "Skateboard": ["wheel", "deck", "belt for foot"],
    "Table": ["desktop", "leg or support", "drawer"],
}
"""The PatchAlign3D zero-shot part names of each category, in global part-id order (the files themselves
hold only ids)."""

SHAPENETPART_FIND3D_NAMES: dict[str, list[str]] = {
    **SHAPENETPART_PART_NAMES,
    "Cap": ["panels or crown", "visor or peak"],
    "Car": ["roof", "hood", "wheel or tire", "body"],
    "Chair": ["back", "seat pad", "leg", "armrest"],
    "Guitar": ["head or tuners", "neck", "body"],
    "Lamp": ["base", "lampshade", "fixing bracket", "stem"],
    "Laptop": ["keyboard", "screen or monitor"],
    "Motorbike": ["gas tank", "seat", "wheel", "handles or handlebars", "light", "engine or frame"],
    "Pistol": ["barrel", "handle", "trigger and guard"],
    "Rocket": ["body", "fin", "nose cone"],
}
"""Find3D's `cat2part` names, usable as prompts (`ShapeNetPartDataset(..., prompt_set="find3d")`)."""


def _seg_classes() -> dict[str, list[int]]:
    out, start = {}, 0
    for cat, names in SHAPENETPART_PART_NAMES.items():
        out[cat] = list(range(start, start + len(names)))
        start += len(names)
    return out


SHAPENETPART_SEG_CLASSES: dict[str, list[int]] = _seg_classes()
"""Category -> its global part ids (0-49)."""

_NORMAL_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
_SPLITS = ("train", "val", "test")


class ShapeNetPartDataset(PartDataset):
    """ShapeNetPart shapes with normals and global part ids.

    Reads `synsetoffset2category.txt`, `train_test_split/shuffled_<split>_file_list.json` and
    `<synset>/<token>.txt` rows `x y z nx ny nz label`. `labels` index the category's parts (global id minus
    the category's first id); `label_names` are the PatchAlign3D names of the category (all of them, in
    global-id order); `meta["part_ids"]` gives the global id of each label, `meta["class_id"]` the category
    index. Points are the file's (no normalisation unless a transform asks).

    Args:
        root: the dataset folder (holding `synsetoffset2category.txt`), or its parent.
        split: `"train"`, `"val"`, `"test"`, `"trainval"` or a list of these.
        class_choice: category names to keep (e.g. `["Cap"]`); default all 16.
        prompt_set: `"pa3d"` (prompts = label names) or `"find3d"` (Find3D's names as prompts).
        num_points: fixed number of points per shape (a seeded random subset); None keeps every point.
        seed: base seed of the per-item generators.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`.
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        on_error: `"raise"` or `"skip"` (skip unreadable shapes with a warning, recorded in `skipped`).
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.

    Raises:
        DataFormatError: a missing root or split file, an empty split, or (with `on_error="raise"`) split
            entries whose files are missing, e.g. the whole category when only some categories are present.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | Sequence[str] = "test",
        class_choice: Sequence[str] | str | None = None,
        prompt_set: str = "pa3d",
        num_points: int | None = None,
        seed: int = 0,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(num_points=num_points, sampler=sampler, transform=transform, seed=seed, on_error=on_error,
                         text_map=text_map)
        if prompt_set not in ("pa3d", "find3d"):
            raise ValueError(f"prompt_set must be 'pa3d' or 'find3d', got {prompt_set!r}")
        self.prompt_set = prompt_set
        root = self._check_root(root, "ShapeNetPart")
        if not (root / "synsetoffset2category.txt").exists() and (root / _NORMAL_DIR).is_dir():
            root = root / _NORMAL_DIR
        self.root = root
        cat_file = root / "synsetoffset2category.txt"
        if not cat_file.exists():
            raise DataFormatError(cat_file, "category file does not exist")
        synset_to_cat: dict[str, str] = {}
        for line in cat_file.read_text().splitlines():
            if line.strip():
                name, synset = line.split()[:2]
                synset_to_cat[synset] = name
        unknown = set(synset_to_cat.values()) - set(SHAPENETPART_CATEGORIES)
        if unknown:
            raise DataFormatError(cat_file, f"unknown categories {sorted(unknown)}")
        if class_choice is None:
            chosen = set(synset_to_cat.values())
        else:
            chosen = {class_choice} if isinstance(class_choice, str) else set(class_choice)
            bad = chosen - set(SHAPENETPART_CATEGORIES)
            if bad:
                raise ValueError(f"class_choice must name ShapeNetPart categories {list(SHAPENETPART_CATEGORIES)}, "
                                 f"got {sorted(bad)}")
        splits = ["train", "val"] if split == "trainval" else [split] if isinstance(split, str) else list(split)
        for s in splits:
            if s not in _SPLITS:
                raise ValueError(f"split must be one of {_SPLITS + ('trainval',)} or a list of them, got {split!r}")
        self.split = split
        self.items: list[tuple[str, str, Path]] = []
        missing: list[Path] = []
        for s in splits:
            list_file = root / "train_test_split" / f"shuffled_{s}_file_list.json"
            for entry in _load_json(list_file):
                _, synset, token = str(entry).split("/")[-3:]
                cat = synset_to_cat.get(synset)
                if cat is None or cat not in chosen:
                    continue
                path = root / synset / f"{token}.txt"
                if path.exists():
                    self.items.append((cat, token, path))
                else:
                    missing.append(path)
        if missing:
            cats = sorted({synset_to_cat[p.parent.name] for p in missing})
            problem = (f"{len(missing)} shape files listed in split {split!r} are missing (categories {cats}); "
                       "restrict the loader with class_choice=[...]")
            self._skip_or_raise(root / "train_test_split", problem)
            self.skipped[-1:] = [(str(p), "listed in the split but missing") for p in missing]
        if not self.items:
            raise DataFormatError(root, f"split {split!r} with class_choice={class_choice!r} holds no shapes")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> PartSample:
        cat, token, path = self.items[index]
        table = read_table(path)
        if table.shape[1] != 7:
            raise DataFormatError(path, f"rows must be 'x y z nx ny nz label' (7 columns), got {table.shape[1]}")
        ids = SHAPENETPART_SEG_CLASSES[cat]
        global_ids = table[:, 6].astype(np.int64)
        if global_ids.min() < ids[0] or global_ids.max() > ids[-1]:
            raise DataFormatError(path, f"part ids {sorted(set(global_ids.tolist()))} fall outside {cat}'s {ids}")
        names = SHAPENETPART_PART_NAMES[cat]
        prompts = SHAPENETPART_FIND3D_NAMES[cat] if self.prompt_set == "find3d" else None
        return PartSample(
            torch.from_numpy(table[:, :3].astype(np.float32)),
            torch.from_numpy(global_ids - ids[0]),
            names,
            cat,
            token,
            normals=torch.from_numpy(table[:, 3:6].astype(np.float32)),
            prompts=prompts,
            meta={"path": str(path), "part_ids": list(ids), "class_id": list(SHAPENETPART_CATEGORIES).index(cat)},
        )
