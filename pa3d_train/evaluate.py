"""Zero-shot segmentation evaluation over a dataset: candidates per category, metrics, predictions on disk.

The candidate names of a shape are, by default, every name its category uses (``PartSample.label_names``);
a ``candidates`` map can widen them (e.g. every name the category uses in a training root). Ground-truth
names outside the candidates stay in the scoring (they can only be missed), so a restricted candidate list
never inflates the score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pa3d_models.deps import require
from pa3d_models.text import text_embeddings

from .metrics import SegmentationMeter, point_accuracy

__all__ = ["Candidates", "evaluate_segmentation", "write_prediction"]

Candidates = Mapping[str, tuple[Sequence[str], Sequence[str]]]
"""category -> (names, prompts): the part names a shape of that category is scored against and their texts."""


def write_prediction(
    directory: str | os.PathLike, category: str, shape_id: str, points: torch.Tensor, pred: torch.Tensor, names
) -> Path:
    """Write ``<directory>/<category>/<shape_id>.npz`` with ``points (N, 3)``, ``pred (N,)`` and ``names``
    (atomically), so that anyone can score the predictions independently."""
    import io

    from pa3d_models.files import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        points=points.detach().cpu().numpy().astype(np.float32),
        pred=pred.detach().cpu().numpy().astype(np.int64),
        names=np.array(list(names)),
    )
    safe_id = str(shape_id).replace(os.sep, "_")
    return atomic_write_bytes(Path(directory) / str(category) / f"{safe_id}.npz", buf.getvalue())


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    samples: Iterable[Any],
    text: Any,
    *,
    candidates: Candidates | None = None,
    transform: Callable[[Any], Any] | None = None,
    assign: str = "nearest",
    convention: str = "strict",
    predictions_dir: str | os.PathLike | None = None,
    keep: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Segment every shape zero-shot and score it.

    Args:
        model: a :class:`~pa3d_models.PatchAlign3D` (anything with its ``segment`` method).
        samples: ``PartSample`` objects with points in the source coordinates.
        text: a :class:`TextBank` holding every prompt, or a text encoder.
        candidates: per-category ``(names, prompts)``; default: each sample's ``label_names`` and prompts.
        transform: applied to a sample before the model sees it (normalisation, axis swap); predictions are
            written for the sample's own points, in its source coordinates.
        assign: patch -> point assignment (``"nearest"``, ``"membership"``, ``"idw"``).
        convention: IoU convention (:func:`~pa3d_train.metrics.shape_iou`).
        predictions_dir: when given, one ``.npz`` per shape is written under it.
        keep: return this many shapes' points, predictions and targets (for figures).
        progress: show a tqdm bar.

    Returns:
        The meter's summary (``instance_miou``, ``category_miou``, ``per_category``, ``accuracy``, ...),
        plus ``per_shape`` rows and ``examples`` (the first ``keep`` shapes).
    """
    from pa3d_data import prompt_names

    meter = SegmentationMeter(convention=convention)
    per_shape: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    cache: dict[tuple[str, ...], torch.Tensor] = {}
    iterator: Iterable[Any] = samples
    if progress:
        tqdm = require("tqdm.auto", "evaluate(progress=True)", extra="train").tqdm

        iterator = tqdm(samples, desc="eval", unit="shape", dynamic_ncols=True)
    for sample in iterator:
        if candidates is not None and sample.category in candidates:
            names, prompts = (list(x) for x in candidates[sample.category])
        else:
            names = list(sample.label_names)
            prompts = list(sample.prompts) if sample.prompts is not None else prompt_names(names)
        if not names:
            raise ValueError(f"shape {sample.category}/{sample.shape_id} has no candidate part names")
        key = tuple(prompts)
        if key not in cache:
            cache[key] = text_embeddings(text, prompts)
        model_input = transform(sample) if transform is not None else sample
        # raw names stand for the part identities (prompts may coincide after mapping)
        result = model.segment(model_input.points, [f"{i}:{n}" for i, n in enumerate(names)], cache[key], assign=assign)
        pred = result.labels.cpu()
        # ground truth in candidate space; names outside the candidates get extra slots (never predicted)
        index = {n: i for i, n in enumerate(names)}
        extra = [n for n in sample.label_names if n not in index]
        full = {**index, **{n: len(names) + j for j, n in enumerate(extra)}}
        mapping = torch.tensor([full[n] for n in sample.label_names] or [0], dtype=torch.long)
        labels = sample.labels.cpu()
        target = torch.where(labels >= 0, mapping[labels.clamp(min=0)], torch.full_like(labels, -1))
        miou = meter.update(
            pred, target, num_parts=len(names) + len(extra), category=sample.category, shape_id=str(sample.shape_id)
        )
        per_shape.append(
            {
                "category": sample.category,
                "shape_id": str(sample.shape_id),
                "miou": miou,
                "accuracy": point_accuracy(pred, target),
            }
        )
        if predictions_dir is not None:
            write_prediction(predictions_dir, sample.category, sample.shape_id, sample.points, pred, names)
        if len(examples) < keep:
            examples.append(
                {
                    "points": model_input.points.cpu(),
                    "pred": pred,
                    "target": target,
                    "names": names + extra,
                    "title": f"{sample.category} {sample.shape_id}",
                }
            )
    summary = meter.compute()
    summary["per_shape"] = per_shape
    summary["examples"] = examples
    return summary
