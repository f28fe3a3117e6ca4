"""Collate `PartSample`s into the batch dicts the losses and models read.

Dense batches follow the pa3d_losses protocol: `points (B, N, 3)`, `labels (B, N)` (-1 = unlabelled, indices
into that shape's texts), `label_masks (B, L, N)` bool and `text_mask (B, L)` bool, where L is the largest
label count in the batch and padded texts are masked out. `text_feats (B, L, D)` are added later (by the
recipe, from a text bank keyed by `texts`). Ragged batches use PyG's `(pos (P, 3), batch (P,))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pa3d_models.deps import require

from .sample import PartSample

__all__ = ["collate_dense", "collate_ragged"]


def _text_fields(samples: Sequence[PartSample]) -> tuple[int, dict[str, Any]]:
    num_labels = max((s.num_labels for s in samples), default=0)
    text_mask = torch.zeros(len(samples), num_labels, dtype=torch.bool)
    for b, s in enumerate(samples):
        text_mask[b, : s.num_labels] = True
    return num_labels, {
        "text_mask": text_mask,
        "num_labels": torch.tensor([s.num_labels for s in samples], dtype=torch.long),
        "label_names": [list(s.label_names) for s in samples],
        "texts": [s.texts for s in samples],
        "categories": [s.category for s in samples],
        "shape_ids": [s.shape_id for s in samples],
    }


def _check(samples: Sequence[PartSample]) -> None:
    if len(samples) == 0:
        raise ValueError("samples must be a non-empty sequence of PartSample, got an empty batch")
    for s in samples:
        if not isinstance(s, PartSample):
            raise ValueError(f"samples must be PartSample instances, got {type(s).__name__}")


def collate_dense(samples: Sequence[PartSample]) -> dict[str, Any]:
    """Stack shapes with the same number of points into a dense batch.

    Returns:
        A dict with `points (B, N, 3)`, `labels (B, N)` long, `label_masks (B, L, N)` bool (the samples'
        `label_masks`, or one-hot of their labels; False for padded labels), `text_mask (B, L)` bool,
        `num_labels (B,)`, `label_names`, `texts` (prompt texts) , `categories` and `shape_ids` (lists per
        shape), and `normals`/`colors (B, N, 3)` when every sample has them.

    Shape:
        points `(B, N, 3)`, labels `(B, N)`, label_masks `(B, L, N)`, text_mask `(B, L)`.

    Examples:
        >>> a = PartSample(torch.rand(5, 3), torch.tensor([0, 0, 1, 1, -1]), ["seat", "leg"], "stool", "0")
        >>> b = PartSample(torch.rand(5, 3), torch.zeros(5, dtype=torch.long), ["body"], "mug", "1")
        >>> batch = collate_dense([a, b])
        >>> batch["points"].shape, batch["label_masks"].shape, batch["text_mask"].tolist()
        (torch.Size([2, 5, 3]), torch.Size([2, 2, 5]), [[True, True], [True, False]])
    """
    _check(samples)
    sizes = {s.num_points for s in samples}
    if len(sizes) != 1:
        ids = ", ".join(f"{s.shape_id}: {s.num_points}" for s in samples)
        raise ValueError(
            f"points must have the same N in a dense batch, got {ids}; sample a fixed number of points "
            "(num_points=, sampler=) or use collate_ragged"
        )
    n = sizes.pop()
    num_labels, out = _text_fields(samples)
    masks = torch.zeros(len(samples), num_labels, n, dtype=torch.bool)
    for b, s in enumerate(samples):
        masks[b, : s.num_labels] = s.masks()
    out.update(
        points=torch.stack([s.points for s in samples]),
        labels=torch.stack([s.labels for s in samples]),
        label_masks=masks,
    )
    for key in ("normals", "colors"):
        if all(getattr(s, key) is not None for s in samples):
            out[key] = torch.stack([getattr(s, key) for s in samples])
    return out


def collate_ragged(samples: Sequence[PartSample], *, as_pyg: bool = False) -> Any:
    """Concatenate shapes of any sizes into a PyG-style ragged batch.

    Args:
        samples: the shapes.
        as_pyg: return a `torch_geometric.data.Batch` (attributes `pos`, `batch`, `ptr`, `labels`,
            `label_masks`, `text_mask`, `label_names`, `texts`, ...) instead of a dict.

    Returns:
        A dict with `pos (P, 3)`, `batch (P,)` long (sorted shape index of each point), `ptr (B + 1,)`,
        `labels (P,)` long (indices into that shape's own texts), `label_masks (P, L)` bool (point-major:
        row p holds the masks of its shape's labels, padded with False), `text_mask (B, L)`, `num_labels`,
        `label_names`, `texts`, `categories`, `shape_ids`, and `normals`/`colors (P, 3)` when every sample has
        them.

    Shape:
        pos `(P, 3)`, batch `(P,)`, labels `(P,)`, label_masks `(P, L)`, text_mask `(B, L)`.

    Examples:
        >>> a = PartSample(torch.rand(3, 3), torch.tensor([0, 1, 2]), ["a", "b", "c"], "x", "0")
        >>> b = PartSample(torch.rand(2, 3), torch.tensor([0, -1]), ["d"], "y", "1")
        >>> r = collate_ragged([a, b])
        >>> r["pos"].shape, r["batch"].tolist(), r["label_masks"].shape, r["text_mask"].sum(1).tolist()
        (torch.Size([5, 3]), [0, 0, 0, 1, 1], torch.Size([5, 3]), [3, 1])
    """
    _check(samples)
    num_labels, out = _text_fields(samples)
    counts = torch.tensor([s.num_points for s in samples], dtype=torch.long)
    masks = []
    for s in samples:
        m = torch.zeros(s.num_points, num_labels, dtype=torch.bool)
        m[:, : s.num_labels] = s.masks().T
        masks.append(m)
    ptr = torch.zeros(len(samples) + 1, dtype=torch.long)
    ptr[1:] = counts.cumsum(0)
    out.update(
        pos=torch.cat([s.points for s in samples]),
        batch=torch.arange(len(samples)).repeat_interleave(counts),
        ptr=ptr,
        labels=torch.cat([s.labels for s in samples]),
        label_masks=torch.cat(masks),
    )
    for key in ("normals", "colors"):
        if all(getattr(s, key) is not None for s in samples):
            out[key] = torch.cat([getattr(s, key) for s in samples])
    if not as_pyg:
        return out
    pyg_data = require("torch_geometric.data", "collate(as_pyg=True)")
    Batch, Data = pyg_data.Batch, pyg_data.Data

    data = []
    for b, s in enumerate(samples):
        lo, hi = int(ptr[b]), int(ptr[b + 1])
        d = Data(pos=out["pos"][lo:hi], labels=out["labels"][lo:hi], label_masks=out["label_masks"][lo:hi],
                 text_mask=out["text_mask"][b : b + 1], num_labels=out["num_labels"][b : b + 1],
                 label_names=s.label_names, texts=s.texts, category=s.category, shape_id=s.shape_id)
        for key in ("normals", "colors"):
            if key in out:
                d[key] = out[key][lo:hi]
        data.append(d)
    return Batch.from_data_list(data)
