"""What every pa3d dataset shares: seeded per-item generators, fixed-size sampling, transforms, text maps and
the `on_error` policy."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .sample import DataFormatError, PartSample, prompt_names

__all__ = ["PartDataset", "item_generator"]

_ON_ERROR = ("raise", "skip")


def item_generator(*keys: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded from a tuple of ints (e.g. `(seed, epoch, index)`), so that an item's
    randomness does not depend on the order items are read in."""
    seed = 0x9E3779B97F4A7C15
    for k in keys:
        seed = (seed ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 % (1 << 64)
        seed ^= seed >> 29
    g = torch.Generator()
    g.manual_seed(seed % (1 << 63))
    return g


class PartDataset(Dataset):
    """Base class of the file-based datasets: subclasses list their items and implement `load(index)`.

    `__getitem__` loads item `index`, then applies `sampler` (or a seeded random subset of `num_points`) and
    `transform`, each called as `f(sample, generator=g)` with a generator seeded by `(seed, epoch, index)`.

    Args:
        num_points: fixed number of points per shape (a seeded random subset without replacement); None keeps
            every point. A shape with fewer points raises an error naming its file.
        sampler: a callable `(sample, generator=None) -> PartSample` used instead of `num_points`
            (e.g. `MaskAwareSample(2048)`).
        transform: a callable `(sample, generator=None) -> PartSample` (e.g. `Compose([...])`).
        seed: base seed of the per-item generators.
        on_error: `"raise"` (default) or `"skip"`: skip unreadable shapes with a warning, recording
            `(path, problem)` in `skipped`, and return the next readable one.
        text_map: prompt text per raw label name (`{"backsupport": "backrest"}` or `{"Chair/support": "seat"}`),
            merged over the dataset's `TEXT_MAP`; fills `PartSample.prompts`.
    """

    TEXT_MAP: dict[str, str] = {}

    def __init__(
        self,
        *,
        num_points: int | None = None,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        seed: int = 0,
        on_error: str = "raise",
        text_map: dict[str, str] | None = None,
    ):
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
            raise ValueError(f"num_points must be a positive int or None, got {num_points!r}")
        self.num_points = num_points
        self._subsample = num_points
        #: keep every point of a shape that has fewer than ``num_points`` instead of refusing it (evaluation at
        #: "N points, or all the shape has")
        self.allow_fewer = False
        self.sampler = sampler
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.on_error = on_error
        self.text_map = {**self.TEXT_MAP, **(text_map or {})}
        self.skipped: list[tuple[str, str]] = []

    # -- subclass interface -------------------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> PartSample:
        """The raw sample `index`, before sampling and transforms."""
        raise NotImplementedError  # pragma: no cover

    # -- shared behaviour ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Mix `epoch` into the per-item seeds, so sampling and augmentation differ between epochs."""
        self.epoch = int(epoch)

    def prompt_names(self, sample: PartSample) -> list[str]:
        """The prompt text of each of `sample`'s labels under this dataset's text map."""
        return prompt_names(sample.label_names, self.text_map, category=sample.category)

    def _skip_or_raise(self, path: str | Path, problem: str) -> None:
        if self.on_error == "raise":
            raise DataFormatError(path, problem)
        self.skipped.append((str(path), problem))
        warnings.warn(f"skipping {path}: {problem}", stacklevel=3)

    def _finish(self, sample: PartSample, index: int) -> PartSample:
        if sample.prompts is None:
            sample.prompts = self.prompt_names(sample)
        g = item_generator(self.seed, self.epoch, index)
        if self.sampler is not None:
            sample = self.sampler(sample, generator=g)
        elif self._subsample is not None and not (self.allow_fewer and sample.num_points <= self._subsample):
            from .sampling import random_sample

            sample = random_sample(sample, self._subsample, generator=g)
        if self.transform is not None:
            sample = self.transform(sample, generator=g)
        return sample

    def __getitem__(self, index: int) -> PartSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} shapes")
        index = index % n
        for attempt in range(n):
            i = (index + attempt) % n
            try:
                return self._finish(self.load(i), i)
            except (DataFormatError, OSError) as err:
                if self.on_error == "raise":
                    raise
                path = err.path if isinstance(err, DataFormatError) else getattr(err, "filename", "?")
                problem = err.problem if isinstance(err, DataFormatError) else str(err)
                self.skipped.append((str(path), problem))
                warnings.warn(f"skipping {path}: {problem}", stacklevel=2)
        raise DataFormatError(self._describe_root(), "no readable shape in the dataset (see .skipped)")

    def _describe_root(self) -> str:
        return str(getattr(self, "root", type(self).__name__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self._describe_root()!r}, shapes={len(self)})"

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @staticmethod
    def _check_root(root: str | Path | None, what: str) -> Path:
        if root is None:
            raise ValueError(f"root must be the {what} folder, got None")
        path = Path(root).expanduser()
        if not path.exists():
            raise DataFormatError(path, f"{what} root does not exist")
        return path
