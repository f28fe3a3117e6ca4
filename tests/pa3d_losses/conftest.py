"""A shared fake (outputs, batch) pair on the loss protocol, built without a model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def make_pair(
    seed: int = 0,
    *,
    B: int = 3,
    N: int = 48,
    G: int = 8,
    K: int = 6,
    D: int = 16,
    T: int = 12,
    L: int = 4,
    valid_texts: tuple[int, ...] | None = (4, 3, 2),
    masks: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict, dict, dict]:
    """Fake model outputs (with grad-tracked leaves) and a collated batch.

    Returns ``(outputs, batch, leaves)``; ``leaves`` are the tensors gradients flow back to. Padded texts hold
    NaN so that any leak of padding shows up.
    """
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(B, N, 3, generator=g, dtype=dtype)
    centers = points[:, :G].clone()
    patch_idx = torch.cdist(centers, points).topk(K, largest=False).indices
    counts = valid_texts if valid_texts is not None else (L,) * B
    text_mask = torch.arange(L)[None, :] < torch.tensor(counts)[:, None]
    labels = torch.stack([torch.randint(-1, c, (N,), generator=g) for c in counts])
    text_feats = F.normalize(torch.randn(B, L, D, generator=g, dtype=dtype), dim=-1)
    text_feats = torch.where(text_mask[..., None], text_feats, torch.full_like(text_feats, float("nan")))
    leaves = {
        "patch_raw": torch.randn(B, G, D, generator=g, dtype=dtype).requires_grad_(),
        "teacher_raw": torch.randn(B, G, T, generator=g, dtype=dtype).requires_grad_(),
        "log_scale": torch.tensor(2.0, dtype=dtype).requires_grad_(),
        "logit_bias": torch.tensor(-3.0, dtype=dtype).requires_grad_(),
    }
    outputs = {
        "patch_feats": F.normalize(leaves["patch_raw"], dim=-1),
        "teacher_feats": F.normalize(leaves["teacher_raw"], dim=-1),
        "centers": centers,
        "patch_idx": patch_idx,
        "logit_scale": leaves["log_scale"].exp(),
        "logit_bias": leaves["logit_bias"],
    }
    batch = {
        "points": points,
        "labels": labels,
        "text_feats": text_feats,
        "text_mask": text_mask,
        "teacher_centers": torch.rand(B, G + 2, 3, generator=g, dtype=dtype),
        "teacher_targets": torch.randn(B, G + 2, T, generator=g, dtype=dtype),
    }
    if masks:
        label_masks = torch.rand(B, L, N, generator=g) < 0.3
        batch["label_masks"] = label_masks & text_mask[:, :, None]
    return outputs, batch, leaves


@pytest.fixture
def pair():
    """The default shared (outputs, batch, leaves) triple."""
    return make_pair(0)


@pytest.fixture
def make():
    """The factory behind ``pair``, for tests that need other sizes, masks or dtypes."""
    return make_pair
