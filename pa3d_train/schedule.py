"""Learning-rate schedules, time budgets and run progress: plain functions and two small classes.

A schedule is a function of the run's *progress* in ``[0, 1]``, not of a step count, so the same schedule
spans a fixed number of steps or a wall-clock budget: the engine feeds it ``max(step / total_steps,
elapsed / budget)`` (see [fit][pa3d_train.fit]).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

__all__ = [
    "SCHEDULES",
    "lr_factor",
    "warmup_cosine",
    "split_budget",
    "Budget",
    "RunProgress",
    "format_duration",
]

SCHEDULES = ("constant", "cosine", "linear")
"""Names accepted by [lr_factor][pa3d_train.lr_factor]."""


def warmup_cosine(progress: float, *, warmup: float = 0.05, min_factor: float = 0.0) -> float:
    """Linear warm-up from 0 over the first ``warmup`` of the run, then a cosine from 1 down to ``min_factor``.

    Args:
        progress: fraction of the run done, clipped to ``[0, 1]``.
        warmup: fraction of the run spent warming up, in ``[0, 1)``.
        min_factor: the factor at the end of the run, in ``[0, 1]``.

    Returns:
        The factor the base learning rate is multiplied by.

    Examples:
        >>> warmup_cosine(0.0, warmup=0.1), warmup_cosine(0.05, warmup=0.1), warmup_cosine(0.1, warmup=0.1)
        (0.0, 0.5, 1.0)
        >>> round(warmup_cosine(0.55, warmup=0.1), 6), warmup_cosine(1.0, warmup=0.1, min_factor=0.1)
        (0.5, 0.1)
    """
    return lr_factor(progress, schedule="cosine", warmup=warmup, min_factor=min_factor)


def lr_factor(progress: float, *, schedule: str = "cosine", warmup: float = 0.0, min_factor: float = 0.0) -> float:
    """The learning-rate factor at ``progress`` for a named schedule, after a linear warm-up.

    Args:
        progress: fraction of the run done; values outside ``[0, 1]`` are clipped.
        schedule: ``"constant"`` (1 after warm-up), ``"cosine"`` or ``"linear"`` (decay to ``min_factor``).
        warmup: fraction of the run spent in the linear warm-up from 0, in ``[0, 1)``.
        min_factor: the decayed schedules' final factor, in ``[0, 1]``.

    Returns:
        A factor in ``[0, 1]``.

    Examples:
        >>> lr_factor(0.5, schedule="linear"), lr_factor(0.5, schedule="constant", warmup=0.2)
        (0.5, 1.0)
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction of the run in [0, 1), got {warmup!r}")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")
    p = min(max(float(progress), 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return p / warmup
    if schedule == "constant":
        return 1.0
    t = (p - warmup) / (1.0 - warmup)
    decay = 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t
    return min_factor + (1.0 - min_factor) * decay


def split_budget(total_s: float, weights: Mapping[str, float]) -> dict[str, float]:
    """Share ``total_s`` seconds between parts in proportion to their weights.

    Args:
        total_s: the time to share (>= 0).
        weights: part -> weight (>= 0, at least one positive).

    Returns:
        part -> seconds; the values sum to ``total_s``.

    Examples:
        >>> split_budget(600, {"stage1": 1, "stage2": 2, "eval": 1})
        {'stage1': 150.0, 'stage2': 300.0, 'eval': 150.0}
    """
    if total_s < 0 or not math.isfinite(total_s):
        raise ValueError(f"total_s must be a finite number of seconds >= 0, got {total_s!r}")
    bad = {k: w for k, w in weights.items() if not (w >= 0 and math.isfinite(w))}
    if bad or not any(w > 0 for w in weights.values()):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {dict(weights)}")
    total_w = sum(weights.values())
    return {k: total_s * w / total_w for k, w in weights.items()}


class Budget:
    """A wall-clock budget for a whole command, shared between its parts as they start.

    Each part, when it starts, is allotted the time left in proportion to its weight among the parts not yet
    started, so a part that ends early (or late) gives (or takes) time to the following ones. Parts whose time
    cannot be enforced (evaluation) still count: their weight reserves time for them.

    Args:
        minutes: the budget of the whole command, or None for no budget (every allotment is None).
        weights: part -> weight, in the order the parts run.
        started: ``time.monotonic()`` when the command started (default: now).

    Examples:
        >>> b = Budget(10, {"stage1": 1, "stage2": 3, "eval": 1}, started=0.0)
        >>> b.allot("stage1", now=0.0), b.allot("stage2", now=60.0), b.allot("eval", now=500.0)
        (120.0, 405.0, 100.0)
    """

    def __init__(self, minutes: float | None, weights: Mapping[str, float], *, started: float | None = None) -> None:
        if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
            raise ValueError(f"minutes must be a positive number, got {minutes!r}")
        split_budget(1.0, weights)  # validates the weights
        self.minutes = minutes
        self.weights = dict(weights)
        self.started = time.monotonic() if started is None else started
        self.allotted: dict[str, float] = {}
        self.begun: dict[str, float] = {}
        self.reserved: dict[str, float] = {}

    def reserve(self, part: str, seconds: float) -> None:
        """Cap what ``part`` will need at ``seconds`` (an estimate, e.g. of evaluation timed on a few shapes).

        Its weighted share still bounds it; what the cap frees goes to the parts before it, so a quick
        evaluation leaves its unused share to training instead of to the end of the run.

        Examples:
            >>> b = Budget(10, {"stage2": 2, "eval": 1}, started=0.0)
            >>> b.reserve("eval", 30.0)
            >>> b.allot("stage2", now=0.0), b.allot("eval", now=570.0)
            (570.0, 30.0)
        """
        if part not in self.weights:
            raise ValueError(f"part must be one of {list(self.weights)}, got {part!r}")
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self.reserved[part] = float(seconds)

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value at which the budget ends (None without a budget)."""
        return None if self.minutes is None else self.started + 60.0 * self.minutes

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left (never negative), or None without a budget."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    def allot(self, part: str, *, now: float | None = None) -> float | None:
        """Start ``part`` and return its seconds: the time left times its share among the parts not yet begun."""
        if part not in self.weights:
            raise ValueError(f"part must be one of {list(self.weights)}, got {part!r}")
        now = time.monotonic() if now is None else now
        self.begun[part] = now
        left = self.remaining(now)
        if left is None:
            return None
        pending = {k: w for k, w in self.weights.items() if k not in self.allotted}
        total = sum(pending.values())
        share = pending[part] / total if total > 0 else 1.0
        seconds = left * share
        if part not in self.reserved:  # the shares that later capped parts will not use come to this one
            free = sum(left * w / total - min(self.reserved[k], left * w / total)
                       for k, w in pending.items() if k in self.reserved and k != part) if total > 0 else 0.0
            uncapped = sum(w for k, w in pending.items() if k not in self.reserved)
            seconds += free * (pending[part] / uncapped if uncapped > 0 else 0.0)
        self.allotted[part] = seconds
        return self.allotted[part]

    def summary(self, now: float | None = None) -> str:
        """One line: how the budget was split and what each begun part has used so far."""
        now = time.monotonic() if now is None else now
        begun = sorted(self.begun, key=self.begun.get)
        used = {p: (self.begun[begun[i + 1]] if i + 1 < len(begun) else now) - self.begun[p] for i, p in
                enumerate(begun)}
        head = "no time budget" if self.minutes is None else f"budget {self.minutes:g} min"
        parts = [f"{p} {format_duration(used[p])}" + (f" of {format_duration(self.allotted[p])}"
                                                     if p in self.allotted else "") for p in begun]
        return head + (": " + ", ".join(parts) if parts else "") + f"; total {format_duration(now - self.started)}"


class RunProgress:
    """Steps planned and done per stage of a run, for an ETA of the whole run (not only of the epoch).

    Args:
        planned: stage -> planned optimiser steps (0 or None for a stage bounded only by time).
        deadline: ``time.monotonic()`` at which a time budget ends, if any; the ETA never exceeds it.

    Examples:
        >>> p = RunProgress({"stage1": 100, "stage2": 300})
        >>> p.update("stage1", 50, steps_per_s=10.0)
        >>> p.eta_s()
        35.0

        A stage bounded only by a time budget (0 planned steps) runs until the deadline:

        >>> RunProgress({"stage2": 0}, deadline=100.0).eta_s(now=40.0)
        60.0
    """

    def __init__(self, planned: Mapping[str, int | None], *, deadline: float | None = None) -> None:
        self.planned = {k: int(v or 0) for k, v in planned.items()}
        self.done = dict.fromkeys(self.planned, 0)
        self.deadline = deadline
        self.rate: float | None = None

    def update(self, stage: str, steps_done: int, *, steps_per_s: float | None = None) -> None:
        """Record that ``stage`` has done ``steps_done`` steps, at ``steps_per_s`` when known."""
        self.planned.setdefault(stage, 0)
        self.done[stage] = steps_done
        if steps_per_s and steps_per_s > 0:
            self.rate = steps_per_s

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds until the run's training ends (None when nothing is known yet)."""
        left = None
        if self.rate:
            left = sum(max(0, self.planned[k] - self.done.get(k, 0)) for k in self.planned) / self.rate
        if self.deadline is not None:
            until = max(0.0, self.deadline - (time.monotonic() if now is None else now))
            # a stage with no planned step count runs until the budget ends: its steps are not countable
            open_ended = any(v <= 0 for v in self.planned.values())
            left = until if left is None or open_ended else min(left, until)
        return left


def format_duration(seconds: float | None) -> str:
    """``"1h02m"``, ``"3m05s"``, ``"42s"``, or ``"?"`` for None.

    Examples:
        >>> format_duration(3725), format_duration(185), format_duration(4.2), format_duration(None)
        ('1h02m', '3m05s', '4s', '?')
    """
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
