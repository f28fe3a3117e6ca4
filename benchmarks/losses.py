"""Losses forward + backward: the vectorised pa3d losses vs a per-shape Python loop of the same function.

Stage 2: ``multi_positive_sigmoid_loss`` at B = 32, G = 128, L = 8 texts, D = 1280 (ViT-bigG-14 text width).
Stage 1: ``cosine_distillation_loss`` at B = 32, G = 128, T = 768 (DINOv2-base). The loop computes each
shape's loss separately and averages them, which equals the vectorised ``"mean"`` reduction.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Context, time_fn

__all__ = ["run"]


def run(ctx: Context) -> dict[str, Any]:
    from pa3d_losses import cosine_distillation_loss, multi_positive_sigmoid_loss

    B, G, L, D, T = (4, 16, 4, 32, 16) if ctx.toy else (32, 128, 8, 1280, 768)
    g = torch.Generator().manual_seed(0)
    dev = ctx.device
    patch = torch.randn(B, G, D, generator=g).to(dev).requires_grad_()
    text = F.normalize(torch.randn(B, L, D, generator=g), dim=-1).to(dev)
    targets = torch.rand(B, G, L, generator=g).to(dev)
    mask = torch.ones(B, L, dtype=torch.bool, device=dev)
    mask[::2, L - 2 :] = False  # ragged label counts, as in a real batch
    pred = torch.randn(B, G, T, generator=g).to(dev).requires_grad_()
    teach = torch.randn(B, G, T, generator=g).to(dev)

    def s2_vec() -> torch.Tensor:
        p = F.normalize(patch, dim=-1)
        loss = multi_positive_sigmoid_loss(p, text, targets, logit_scale=10.0, logit_bias=-10.0, text_mask=mask)
        loss.backward()
        return loss

    def s2_loop() -> torch.Tensor:
        p = F.normalize(patch, dim=-1)
        loss = sum(
            multi_positive_sigmoid_loss(p[b : b + 1], text[b : b + 1], targets[b : b + 1], logit_scale=10.0,
                                        logit_bias=-10.0, text_mask=mask[b : b + 1])
            for b in range(B)
        ) / B
        loss.backward()
        return loss

    def s1_vec() -> torch.Tensor:
        loss = cosine_distillation_loss(pred, teach)
        loss.backward()
        return loss

    def s1_loop() -> torch.Tensor:
        loss = sum(cosine_distillation_loss(pred[b : b + 1], teach[b : b + 1]) for b in range(B)) / B
        loss.backward()
        return loss

    diff2 = float((s2_vec().detach() - s2_loop().detach()).abs())
    diff1 = float((s1_vec().detach() - s1_loop().detach()).abs())
    rows = []
    for name, vec, loop, diff in (
        (f"stage2 multi_positive_sigmoid B={B} G={G} L={L} D={D}", s2_vec, s2_loop, diff2),
        (f"stage1 cosine_distillation B={B} G={G} T={T}", s1_vec, s1_loop, diff1),
    ):
        tv = time_fn(vec, ctx)
        tl = time_fn(loop, ctx)
        rows.append({"name": name, "variant": "vectorised", **tv, "speedup_vs_loop": tl["median_ms"] / tv["median_ms"],
                     "abs_diff_vs_loop": diff})
        rows.append({"name": name, "variant": "per-shape loop", **tl})
    return {"rows": rows, "notes": ["forward + backward of the loss only (inputs are leaf tensors)."]}
