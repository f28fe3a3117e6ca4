"""Cross-category splits: train on some categories, evaluate zero-shot on others.

A split names its training and evaluation categories; a split file is JSON
(`{"train": ["Airplane", ...], "eval": ["Bird", ...]}`). `check_category_split` refuses, before any training,
a category the data lacks, a category on both sides, and an evaluation category with no usable part names
(its candidate names are its own vocabulary, so it needs at least one). `select_categories` keeps the shapes of
some categories of any dataset.

Prompt texts stay those of the dataset (its `TEXT_MAP`), the same whether a category is trained on or not:
nothing here depends on the split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sample import readable_part_name
from .utils import PartSubset, _categories_by_index

__all__ = [
    "CategorySplit",
    "LPSB_CROSS_CATEGORY",
    "load_category_split",
    "save_category_split",
    "check_category_split",
    "select_categories",
    "shared_part_names",
]


@dataclass(frozen=True)
class CategorySplit:
    """Training and evaluation categories of a cross-category run.

    Examples:
        >>> s = CategorySplit(train=("Chair", "Human"), eval=("Table",))
        >>> s.to_dict()
        {'train': ['Chair', 'Human'], 'eval': ['Table']}
    """

    train: tuple[str, ...]
    eval: tuple[str, ...]

    def __post_init__(self) -> None:
        for side in ("train", "eval"):
            value = getattr(self, side)
            if isinstance(value, str) or not all(isinstance(c, str) and c for c in value):
                raise ValueError(f"{side} categories must be a list of non-empty names, got {value!r}")
            if len(set(value)) != len(value):
                dup = sorted({c for c in value if list(value).count(c) > 1})
                raise ValueError(f"{side} categories repeat {dup}")
            object.__setattr__(self, side, tuple(value))
        both = sorted(set(self.train) & set(self.eval))
        if both:
            raise ValueError(f"categories {both} are both trained on and evaluated: a cross-category split keeps "
                             "them apart")

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "eval": list(self.eval)}


#: The visible L-PSB split of docs/results.md: four evaluation categories whose every part name (prompt text)
#: also names a part of a training category (Teddy: ear/hand/head/leg/torso; Bird: body/head/leg/tail/wing;
#: Cup: body/handle; Octopus: body/leg); the other 15 categories train.
LPSB_CROSS_CATEGORY = CategorySplit(
    train=("Airplane", "Ant", "Armadillo", "Bearing", "Bust", "Chair", "Fish", "FourLeg", "Glasses", "Hand",
           "Human", "Mech", "Plier", "Table", "Vase"),
    eval=("Bird", "Cup", "Octopus", "Teddy"),
)


def load_category_split(path: str | os.PathLike) -> CategorySplit:
    """Read a JSON split file `{"train": [...], "eval": [...]}` (`"train"` may be omitted: every other category).

    An omitted `"train"` is returned as an empty tuple; `check_category_split` fills it from the data.

    Raises:
        ValueError: naming the file, when it is unreadable, not JSON, or lacks an `"eval"` list.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"split file {path} cannot be read as JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("eval"), list) or not data["eval"]:
        raise ValueError(f'split file {path} must hold {{"train": [...], "eval": [...]}} with a non-empty "eval" '
                         f"list, got {str(data)[:120]}")
    unknown = sorted(set(data) - {"train", "eval"})
    if unknown:
        raise ValueError(f'split file {path} has unknown keys {unknown}; expected "train" and "eval"')
    train = data.get("train", [])
    if not isinstance(train, list):
        raise ValueError(f'split file {path}: "train" must be a list, got {train!r}')
    return CategorySplit(train=tuple(train), eval=tuple(data["eval"]))


def save_category_split(split: CategorySplit, path: str | os.PathLike) -> Path:
    """Write a split file (atomically)."""
    from pa3d_models.files import atomic_write_bytes

    return atomic_write_bytes(Path(path), (json.dumps(split.to_dict(), indent=2) + "\n").encode())


def _usable(names: Iterable[str]) -> list[str]:
    return [n for n in names if isinstance(n, str) and readable_part_name(n).strip()]


def check_category_split(
    split: CategorySplit,
    available: Sequence[str],
    part_names: Mapping[str, Sequence[str]] | None = None,
) -> CategorySplit:
    """Check a split against the categories a dataset has, and fill an empty training side.

    Args:
        split: the requested split.
        available: the categories of the data.
        part_names: `category -> part names` of the evaluation data (each evaluation category needs one
            usable name).

    Returns:
        The split, with `train` = every available category outside `eval` when it was empty.

    Raises:
        ValueError: a category the data lacks (the message lists what it has), an empty training side,
            or an evaluation category with no usable part names.

    Examples:
        >>> check_category_split(CategorySplit((), ("Cup",)), ["Cup", "Vase"]).train
        ('Vase',)
    """
    have = list(dict.fromkeys(available))
    train = split.train or tuple(c for c in have if c not in split.eval)
    for side, cats in (("train", train), ("eval", split.eval)):
        missing = [c for c in cats if c not in have]
        if missing:
            raise ValueError(f"{side} categories {missing} are not in the data (it has {have})")
    if not train:
        raise ValueError(f"no training category left: every category of the data is evaluated ({list(split.eval)})")
    if part_names is not None:
        for cat in split.eval:
            if not _usable(part_names.get(cat, ())):
                raise ValueError(f"evaluation category {cat!r} has no usable part names "
                                 f"(got {list(part_names.get(cat, ()))}): it cannot be segmented zero-shot")
    return CategorySplit(train=train, eval=split.eval)


def select_categories(dataset: Any, categories: Sequence[str]) -> PartSubset:
    """The shapes of `categories` in `dataset`, in dataset order (a `PartSubset`).

    Raises:
        ValueError: a category with no shape in `dataset`.

    Examples:
        >>> from pa3d_data import SyntheticPartDataset
        >>> ds = SyntheticPartDataset(28, num_points=64, cache=False)
        >>> sub = select_categories(ds, ["chair"])
        >>> len(sub), {s.category for s in sub}
        (2, {'chair'})
    """
    if isinstance(categories, str):
        categories = [categories]
    cats = _categories_by_index(dataset)
    missing = [c for c in categories if c not in cats]
    if missing:
        raise ValueError(f"categories {missing} have no shape in the dataset (it has {sorted(set(cats))})")
    wanted = set(categories)
    return PartSubset(dataset, [i for i, c in enumerate(cats) if c in wanted])


def shared_part_names(
    part_names: Mapping[str, Sequence[str]], split: CategorySplit, prompts: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[str]]:
    """For each evaluation category, which of its part names (or prompts, when given) also occur in training.

    Examples:
        >>> names = {"Chair": ["leg", "seat"], "Table": ["leg", "top"]}
        >>> shared_part_names(names, CategorySplit(("Chair",), ("Table",)))
        {'Table': ['leg']}
    """
    table = prompts if prompts is not None else part_names
    seen = {n for c in split.train for n in table.get(c, ())}
    return {c: [n for n in table.get(c, ()) if n in seen] for c in split.eval}
