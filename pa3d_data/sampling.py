"""Fixed-size point sampling of a `PartSample`: random, farthest point, and the official mask-aware sampling.

Each sampler is a function (`random_sample`, `fps_sample`, `mask_aware_sample`) plus a small callable class
(`RandomSample`, `FPSSample`, `MaskAwareSample`) that stores the settings and is passed to a dataset's
`sampler=`. All take a seeded `torch.Generator`; labels, masks, normals, colours and per-point meta stay
aligned with the points. Asking for more points than a shape has raises an error naming its file.
"""

from __future__ import annotations

import torch

from .sample import DataFormatError, PartSample

__all__ = [
    "random_indices",
    "fps_indices",
    "mask_aware_indices",
    "random_sample",
    "fps_sample",
    "mask_aware_sample",
    "RandomSample",
    "FPSSample",
    "MaskAwareSample",
]


def _too_few(sample: PartSample | None, have: int, want: int) -> ValueError:
    problem = f"shape has {have} points, fewer than the {want} requested"
    if sample is not None and "path" in sample.meta:
        return DataFormatError(sample.meta["path"], problem)
    where = f" (shape {sample.category}/{sample.shape_id})" if sample is not None else ""
    return ValueError(f"num_points: {problem}{where}")


def _check_num(num_points: int) -> None:
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 1:
        raise ValueError(f"num_points must be a positive int, got {num_points!r}")


def random_indices(
    num_total: int, num_points: int, *, generator: torch.Generator | None = None, replace: bool = False
) -> torch.Tensor:
    """`(num_points,)` long indices into `num_total` points, uniformly at random (without replacement unless
    `replace`)."""
    _check_num(num_points)
    if replace:
        return torch.randint(num_total, (num_points,), generator=generator)
    if num_points > num_total:
        raise _too_few(None, num_total, num_points)
    return torch.randperm(num_total, generator=generator)[:num_points]


def fps_indices(
    points: torch.Tensor, num_points: int, *, generator: torch.Generator | None = None, random_start: bool = False
) -> torch.Tensor:
    """`(num_points,)` long indices of farthest point sampling on `points (N, 3)` via `pa3d_layers.fps`
    (first pick index 0, or a random start drawn from `generator`)."""
    _check_num(num_points)
    if num_points > points.shape[0]:
        raise _too_few(None, int(points.shape[0]), num_points)
    return _fps(points, num_points, generator=generator, random_start=random_start)


def _fps(points: torch.Tensor, k: int, *, generator: torch.Generator | None, random_start: bool) -> torch.Tensor:
    # The random start is drawn here, from `generator`, and the cloud rolled so that it comes first: the
    # picks are then reproducible whichever backend pa3d_layers.fps uses.
    from pa3d_layers import fps

    n = points.shape[0]
    start = int(torch.randint(n, (1,), generator=generator)) if random_start and n > 1 else 0
    order = torch.roll(torch.arange(n), -start)
    picks = fps(points[order].float().unsqueeze(0), k)[0].long()
    return order[picks]


def mask_aware_indices(
    points: torch.Tensor,
    masks: torch.Tensor,
    num_points: int = 2048,
    *,
    min_per_label: int = 32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The official mask-aware sampling: sorted `(num_points,)` long indices that keep at least
    `min(min_per_label, |mask|)` points of every label (when `L * min_per_label <= num_points`).

    Per label, farthest point sampling (random start) picks `min(min_per_label, |mask|)` points inside the
    mask; the rest is filled by farthest point sampling over the remaining points; if the picks exceed
    `num_points` (many labels), farthest point sampling thins them to `num_points`.

    Args:
        points: `(N, 3)` coordinates.
        masks: `(L, N)` bool label masks (may overlap).
        num_points: how many points to keep.
        min_per_label: m, the points kept per label.
        generator: seeds the random starts.

    Shape:
        points `(N, 3)`, masks `(L, N)`; returns `(num_points,)`.
    """
    _check_num(num_points)
    n = points.shape[0]
    if masks.dim() != 2 or masks.shape[1] != n:
        raise ValueError(f"masks must be (L, N) = (L, {n}) bool, got shape {tuple(masks.shape)}")
    if num_points > n:
        raise _too_few(None, n, num_points)
    if num_points == n:
        return torch.arange(n)
    chosen = torch.zeros(n, dtype=torch.bool)
    for mask in masks.bool():
        inside = mask.nonzero().flatten()
        if inside.numel() == 0:
            continue
        k = min(min_per_label, inside.numel())
        chosen[inside[_fps(points[inside], k, generator=generator, random_start=True)]] = True
    picked = chosen.nonzero().flatten()
    if picked.numel() < num_points:
        rest = (~chosen).nonzero().flatten()
        extra = rest[_fps(points[rest], num_points - picked.numel(), generator=generator, random_start=True)]
        picked = torch.cat([picked, extra])
    elif picked.numel() > num_points:
        picked = picked[_fps(points[picked], num_points, generator=generator, random_start=True)]
    return picked.sort().values


def random_sample(
    sample: PartSample, num_points: int, *, generator: torch.Generator | None = None, replace: bool = False
) -> PartSample:
    """A random subset of `num_points` points (with replacement only when `replace`, as the official
    ShapeNetPart evaluation does).

    Examples:
        >>> s = PartSample(torch.rand(10, 3), torch.arange(10) % 2, ["a", "b"], "x", "0")
        >>> random_sample(s, 4, generator=torch.Generator().manual_seed(0)).points.shape
        torch.Size([4, 3])
    """
    _check_num(num_points)
    if not replace and num_points > sample.num_points:
        raise _too_few(sample, sample.num_points, num_points)
    return sample.select(random_indices(sample.num_points, num_points, generator=generator, replace=replace))


def fps_sample(
    sample: PartSample, num_points: int, *, generator: torch.Generator | None = None, random_start: bool = False
) -> PartSample:
    """`num_points` points by farthest point sampling (distinct input points)."""
    _check_num(num_points)
    if num_points > sample.num_points:
        raise _too_few(sample, sample.num_points, num_points)
    return sample.select(fps_indices(sample.points, num_points, generator=generator, random_start=random_start))


def mask_aware_sample(
    sample: PartSample,
    num_points: int = 2048,
    *,
    min_per_label: int = 32,
    generator: torch.Generator | None = None,
) -> PartSample:
    """`mask_aware_indices` applied to a sample (its `label_masks`, or one-hot masks of its labels)."""
    _check_num(num_points)
    if num_points > sample.num_points:
        raise _too_few(sample, sample.num_points, num_points)
    idx = mask_aware_indices(
        sample.points, sample.masks(), num_points, min_per_label=min_per_label, generator=generator
    )
    return sample.select(idx)


class RandomSample:
    """Callable form of `random_sample`, for a dataset's `sampler=`.

    Examples:
        >>> s = PartSample(torch.rand(10, 3), torch.zeros(10, dtype=torch.long), ["a"], "x", "0")
        >>> RandomSample(3)(s).num_points
        3
    """

    def __init__(self, num_points: int = 2048, *, replace: bool = False):
        _check_num(num_points)
        self.num_points, self.replace = num_points, replace

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return random_sample(sample, self.num_points, generator=generator, replace=self.replace)

    def __repr__(self) -> str:
        return f"RandomSample(num_points={self.num_points}, replace={self.replace})"


class FPSSample:
    """Callable form of `fps_sample`."""

    def __init__(self, num_points: int = 2048, *, random_start: bool = False):
        _check_num(num_points)
        self.num_points, self.random_start = num_points, random_start

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return fps_sample(sample, self.num_points, generator=generator, random_start=self.random_start)

    def __repr__(self) -> str:
        return f"FPSSample(num_points={self.num_points}, random_start={self.random_start})"


class MaskAwareSample:
    """Callable form of `mask_aware_sample` (the official default: 2048 points, at least 32 per label)."""

    def __init__(self, num_points: int = 2048, *, min_per_label: int = 32):
        _check_num(num_points)
        if min_per_label < 0:
            raise ValueError(f"min_per_label must be >= 0, got {min_per_label}")
        self.num_points, self.min_per_label = num_points, min_per_label

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return mask_aware_sample(sample, self.num_points, min_per_label=self.min_per_label, generator=generator)

    def __repr__(self) -> str:
        return f"MaskAwareSample(num_points={self.num_points}, min_per_label={self.min_per_label})"
