"""The same run with several seeds: ``--seeds 0,1,2`` trains and evaluates once per seed (``OUT/seed_<s>``) and
reports the mean and standard deviation of every mIoU (``OUT/seeds.json``, ``OUT/seeds.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["parse_seeds", "mean_sd", "summarise_seeds", "seeds_markdown", "run_seeds"]


def parse_seeds(value: str | Sequence[int]) -> list[int]:
    """``"0,1,2"`` (or a list) -> ``[0, 1, 2]``; refuses repeats, negatives and non-integers.

    Examples:
        >>> parse_seeds("0, 1,2")
        [0, 1, 2]
    """
    items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    try:
        seeds = [int(s) for s in items]
    except (TypeError, ValueError):
        raise ValueError(f"--seeds must be comma-separated integers, got {value!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be comma-separated integers >= 0, got {value!r}")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"--seeds repeats {dup}: each seed runs once (got {value!r})")
    return seeds


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value).

    Examples:
        >>> [round(x, 4) for x in mean_sd([0.5, 0.7])]
        [0.6, 0.1414]
    """
    if not values:
        raise ValueError("values must not be empty")
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return round(m, 12), sd


def summarise_seeds(per_seed: Mapping[int, Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, Any]:
    """``{seed: {run: {set: summary}}}`` -> ``{run: {set: {metric: {"mean", "sd", "values"}}}}`` for the instance
    and category mIoU, the instance mIoU without the calibration and the reference baselines when present."""
    out: dict[str, Any] = {}
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    for run, sets in first.items():
        for name in sets:
            rows: dict[str, list[float]] = {}
            for s in seeds:
                summary = per_seed[s][run][name]
                for metric in ("instance_miou", "category_miou"):
                    rows.setdefault(metric, []).append(float(summary[metric]))
                if "uncalibrated" in summary:
                    rows.setdefault("uncalibrated_instance_miou", []).append(
                        float(summary["uncalibrated"]["instance_miou"]))
                for ref, values in summary.get("baselines", {}).items():
                    if isinstance(values, Mapping):
                        rows.setdefault(f"{ref}_instance_miou", []).append(float(values["instance_miou"]))
            out.setdefault(run, {})[name] = {
                k: {"mean": mean_sd(v)[0], "sd": mean_sd(v)[1], "values": v} for k, v in rows.items()
            }
    return out


def seeds_markdown(summary: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """A markdown table (percent, mean +- sd over the seeds) of :func:`summarise_seeds`."""
    lines = [f"Seeds: {', '.join(map(str, seeds))} (mean +- sample sd, percent)", "",
             "| run | set | instance mIoU | category mIoU | without calibration | patch ceiling | one label |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def cell(row: Mapping[str, Any], key: str) -> str:
        return f"{100 * row[key]['mean']:.1f} +- {100 * row[key]['sd']:.1f}" if key in row else "-"

    for run, sets in summary.items():
        for name, row in sets.items():
            lines.append(f"| {run} | {name} | {cell(row, 'instance_miou')} | {cell(row, 'category_miou')} | "
                         f"{cell(row, 'uncalibrated_instance_miou')} | {cell(row, 'patch_ceiling_instance_miou')} | "
                         f"{cell(row, 'one_label_instance_miou')} |")
    return "\n".join(lines)


def run_seeds(cfg: Mapping[str, Any], seeds: Sequence[int], run: Callable[[dict[str, Any]], Mapping[str, Any]]
              ) -> dict[str, Any]:
    """Run ``run(cfg)`` once per seed with ``out = OUT/seed_<s>``; write ``OUT/seeds.json`` and ``OUT/seeds.md``.

    Returns:
        The :func:`summarise_seeds` summary.
    """
    from pa3d_models.files import atomic_write_bytes

    seeds = parse_seeds(list(seeds))
    out = Path(cfg["out"])
    per_seed = {}
    for seed in seeds:
        result = run({**cfg, "seed": seed, "seeds": None, "out": str(out / f"seed_{seed}")})
        per_seed[seed] = result["results"]
    summary = summarise_seeds(per_seed) if any(per_seed.values()) else {}
    atomic_write_bytes(out / "seeds.json", json.dumps({"seeds": seeds, "summary": summary}, indent=2).encode())
    text = seeds_markdown(summary, seeds)
    atomic_write_bytes(out / "seeds.md", (text + "\n").encode())
    print(text)
    return summary
