"""Run reports: ``metrics.json`` and a markdown report with per-category IoU tables.

A report is built from evaluation summaries (what :func:`~pa3d_train.evaluate.evaluate_segmentation`
returns), keyed by run (e.g. ``"stage1+stage2"``, ``"stage2 only"``) and evaluation set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pa3d_models.files import atomic_write_bytes

__all__ = ["miou_table", "write_metrics", "write_report"]

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""run name -> evaluation set -> evaluation summary."""


def miou_table(results: Results, eval_set: str) -> str:
    """A markdown table: one row per category, one column per run, then the category and instance means.

    Examples:
        >>> s = {"per_category": {"mug": 0.5}, "category_miou": 0.5, "instance_miou": 0.5}
        >>> print(miou_table({"A": {"test": s}}, "test"))
        | category | A |
        | --- | --- |
        | mug | 50.0 |
        | **category mIoU** | **50.0** |
        | instance mIoU | 50.0 |
    """
    runs = [r for r in results if eval_set in results[r]]
    if not runs:
        raise ValueError(f"no run has an evaluation named {eval_set!r}")
    cats = sorted({c for r in runs for c in results[r][eval_set]["per_category"]})
    lines = ["| category | " + " | ".join(runs) + " |", "| --- | " + " | ".join("---" for _ in runs) + " |"]

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * float(value):.1f}"

    def row(label: str, values: list[str]) -> str:
        return f"| {label} | " + " | ".join(values) + " |"

    for cat in cats:
        lines.append(row(cat, [pct(results[r][eval_set]["per_category"].get(cat)) for r in runs]))
    lines.append(row("**category mIoU**", [f"**{pct(results[r][eval_set]['category_miou'])}**" for r in runs]))
    lines.append(row("instance mIoU", [pct(results[r][eval_set]["instance_miou"]) for r in runs]))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "examples"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as indented JSON, atomically (figures' example tensors are left out)."""
    return atomic_write_bytes(path, (json.dumps(_jsonable(metrics), indent=2, sort_keys=False) + "\n").encode())


def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    results: Results,
    notes: Sequence[str] = (),
    figures: Mapping[str, str] | None = None,
    extra_sections: Mapping[str, str] | None = None,
) -> Path:
    """Write a markdown report: notes, one IoU table per evaluation set, figures and extra sections.

    Args:
        path: the ``.md`` file (written atomically).
        title: the report's heading.
        results: run -> evaluation set -> summary.
        notes: bullet points shown first (what ran, with which teacher and text model, caveats).
        figures: caption -> image path relative to the report.
        extra_sections: heading -> markdown body.
    """
    eval_sets = list(dict.fromkeys(s for run in results.values() for s in run))
    parts = [f"# {title}", ""]
    if notes:
        parts += [f"- {n}" for n in notes] + [""]
    for eval_set in eval_sets:
        parts += [f"## {eval_set}: mIoU (%)", "", miou_table(results, eval_set), ""]
    for caption, image in (figures or {}).items():
        parts += [f"### {caption}", "", f"![{caption}]({image})", ""]
    for heading, body in (extra_sections or {}).items():
        parts += [f"## {heading}", "", body.rstrip(), ""]
    return atomic_write_bytes(path, "\n".join(parts).encode())
