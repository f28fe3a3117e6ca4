"""Dataset-level helpers for training runs: label noise, per-category splits, and each category's names.

These work on any dataset of :class:`PartSample` and use a dataset's own description (``label_names`` per
category, the synthetic categories) when it has one, so they do not load every shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import item_generator
from .sample import PartSample, prompt_names

__all__ = ["corrupt_labels", "LabelNoise", "PartSubset", "split_by_category", "category_names"]


def corrupt_labels(
    sample: PartSample, p: float, *, generator: torch.Generator | None = None, seed: Sequence[int] | None = None
) -> PartSample:
    """Give a random fraction ``p`` of the labelled points another name of the same shape (annotation noise).

    The new name is drawn uniformly among the other names present in the shape (among the category's other
    names when the shape shows only one). Unlabelled points stay unlabelled. With ``label_masks``, a
    corrupted point leaves every mask and joins its new label's mask.

    Args:
        sample: the shape.
        p: fraction of labelled points to corrupt, in ``[0, 1)``.
        generator: randomness; or ``seed`` (a tuple of ints) for a per-item generator.
        seed: see ``generator``.

    Returns:
        A new sample; ``sample`` is not modified.

    Examples:
        >>> s = PartSample(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), ["seat", "leg"], "stool", "0")
        >>> corrupt_labels(s, 0.0).labels.tolist()
        [0, 0, 1, 1]
        >>> noisy = corrupt_labels(s, 0.99, seed=(0,))
        >>> bool((noisy.labels != s.labels).any()), noisy.labels.tolist() != s.labels.tolist()
        (True, True)
    """
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    if p == 0 or sample.num_labels < 2:
        return sample
    if generator is None:
        generator = item_generator(*(seed or (0,)))
    labels = sample.labels.clone()
    labelled = torch.nonzero(labels >= 0).flatten()
    chosen = labelled[torch.rand(labelled.numel(), generator=generator) < p]
    if chosen.numel() == 0:
        return sample
    present = torch.unique(labels[labelled])
    pool = present if present.numel() >= 2 else torch.arange(sample.num_labels)
    # draw among the pool minus the point's own label: an offset in [1, len(pool)) around the pool
    position = {int(v): i for i, v in enumerate(pool.tolist())}
    own = torch.tensor([position.get(int(v), 0) for v in labels[chosen].tolist()], dtype=torch.long)
    offset = torch.randint(1, len(pool), (chosen.numel(),), generator=generator)
    new = pool[(own + offset) % len(pool)]
    labels[chosen] = new
    changes: dict[str, Any] = {"labels": labels}
    if sample.label_masks is not None:
        masks = sample.label_masks.clone()
        masks[:, chosen] = False
        masks[new, chosen] = True
        changes["label_masks"] = masks
    return sample.replace(**changes)


class LabelNoise:
    """Transform form of :func:`corrupt_labels`, called as ``t(sample, generator=g)``.

    Args:
        p: fraction of labelled points given another name of the shape.
    """

    def __init__(self, p: float) -> None:
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return corrupt_labels(sample, self.p, generator=generator)

    def __repr__(self) -> str:
        return f"LabelNoise(p={self.p})"


class PartSubset(torch.utils.data.Dataset):
    """A view of some items of a dataset that keeps the dataset's interface (``set_epoch``, ``text_map``,
    ``label_names``, ...): attributes not defined here are read from the base dataset.

    Args:
        dataset: the base dataset.
        indices: the base indices in this subset.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> PartSample:
        return self.dataset[self.indices[index]]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "indices"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"PartSubset({self.dataset!r}, {len(self)} shapes)"


def _categories_by_index(dataset: Any) -> list[str]:
    if isinstance(dataset, PartSubset):
        base = _categories_by_index(dataset.dataset)
        return [base[i] for i in dataset.indices]
    items = getattr(dataset, "items", None)
    if isinstance(items, list) and items and isinstance(items[0], tuple) and isinstance(items[0][0], str):
        return [item[0] for item in items]
    data = getattr(dataset, "_data", None)
    cats = getattr(dataset, "categories", None)
    if isinstance(data, dict) and "category" in data and cats is not None:  # the synthetic dataset
        return [cats[int(c)] for c in data["category"]]
    return [dataset[i].category for i in range(len(dataset))]


def split_by_category(dataset: Any, fraction: float = 0.5) -> tuple[PartSubset, PartSubset]:
    """Split every category's shapes in dataset order: the first ``fraction`` of each category, the rest.

    Both parts see every category (with at least one shape each when the category has two or more).

    Examples:
        >>> from pa3d_data import SyntheticPartDataset
        >>> a, b = split_by_category(SyntheticPartDataset(28, num_points=64, cache=False))  # 2 per category
        >>> len(a), len(b), sorted({s.category for s in a}) == sorted({s.category for s in b})
        (14, 14, True)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    by_cat: dict[str, list[int]] = {}
    for i, cat in enumerate(_categories_by_index(dataset)):
        by_cat.setdefault(cat, []).append(i)
    first: list[int] = []
    second: list[int] = []
    for idx in by_cat.values():
        cut = min(max(1, round(len(idx) * fraction)), len(idx) - 1) if len(idx) > 1 else len(idx)
        first += idx[:cut]
        second += idx[cut:]
    return PartSubset(dataset, sorted(first)), PartSubset(dataset, sorted(second))


def category_names(dataset: Any) -> dict[str, tuple[list[str], list[str]]]:
    """``category -> (label names, prompt texts)`` of the categories present in ``dataset``.

    Uses the dataset's own description when it has one (``label_names`` per category, the synthetic part
    lists), otherwise reads every shape once.

    Examples:
        >>> from pa3d_data import SyntheticPartDataset
        >>> category_names(SyntheticPartDataset(2, num_points=64, cache=False))["chair"]
        (['seat', 'backrest', 'leg', 'armrest'], ['seat', 'backrest', 'leg', 'armrest'])
    """
    from .synthetic import SYNTHETIC_PART_NAMES, SyntheticPartDataset

    base = dataset.dataset if isinstance(dataset, PartSubset) else dataset
    text_map = getattr(base, "text_map", {})
    present = list(dict.fromkeys(_categories_by_index(dataset)))
    table = getattr(base, "label_names", None)
    if isinstance(base, SyntheticPartDataset):
        table = SYNTHETIC_PART_NAMES
    if isinstance(table, dict) and all(c in table for c in present):
        return {c: (list(table[c]), prompt_names(list(table[c]), text_map, category=c)) for c in present}
    out: dict[str, tuple[list[str], list[str]]] = {}
    for sample in dataset:
        if sample.category not in out:
            out[sample.category] = (list(sample.label_names), list(sample.texts))
    return out
