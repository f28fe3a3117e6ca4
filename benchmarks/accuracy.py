"""bf16 autocast accuracy: a tiny model trained briefly on synthetic shapes, evaluated in fp32 and in bf16.

Training: ``patchalign3d_tiny`` with the Stage-2 loss (multi-positive sigmoid on fractional patch labels)
against fixed random text embeddings, one per part name, on ``SyntheticPartDataset`` shapes, for a bounded
number of steps. Evaluation on held-out synthetic shapes: the mean cosine between the fp32 and the bf16
patch features, and the share of points whose argmax part label (patch-text similarity, propagated to points
from the nearest centre) is the same in both. Targets: cosine >= 0.99, agreement >= 99%.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Context

__all__ = ["run"]


def run(ctx: Context) -> dict[str, Any]:
    from pa3d_data import SyntheticPartDataset, collate_dense
    from pa3d_layers import propagate_to_points
    from pa3d_losses import fractional_patch_labels, multi_positive_sigmoid_loss
    from pa3d_models import create_model

    n_train, n_test, n_pts, steps, batch = (16, 4, 256, 3, 4) if ctx.toy else (256, 32, 1024, 150, 16)
    budget = 5.0 if ctx.toy else (20.0 if ctx.quick else 45.0)
    dev = ctx.device
    torch.manual_seed(0)
    train = SyntheticPartDataset(n_train, num_points=n_pts, cache=False, seed=0)
    test = SyntheticPartDataset(n_test, num_points=n_pts, cache=False, seed=1, split="test")
    model = create_model("patchalign3d_tiny").to(dev)
    names = sorted({n for ds in (train, test) for i in range(len(ds)) for n in ds[i].label_names})
    vocab = F.normalize(torch.randn(len(names), model.text_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    index = {n: i for i, n in enumerate(names)}

    def texts_of(b: dict[str, Any]) -> torch.Tensor:
        L = b["text_mask"].shape[1]
        t = torch.zeros(len(b["label_names"]), L, model.text_dim)
        for i, shape_names in enumerate(b["label_names"]):
            for j, n in enumerate(shape_names):
                t[i, j] = vocab[index[n]]
        return t.to(dev)

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0, done, losses = time.perf_counter(), 0, []
    while done < steps and time.perf_counter() - t0 < budget:
        idx = torch.randint(0, len(train), (batch,), generator=g).tolist()
        b = collate_dense([train[i] for i in idx])
        out = model(b["points"].to(dev))
        y = fractional_patch_labels(out["patch_idx"], label_masks=b["label_masks"].to(dev))
        loss = multi_positive_sigmoid_loss(out["patch_feats"], texts_of(b), y, logit_scale=out["logit_scale"],
                                           logit_bias=out["logit_bias"], text_mask=b["text_mask"].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        done += 1
    train_s = time.perf_counter() - t0

    model.eval()
    b = collate_dense([test[i] for i in range(len(test))])
    pts, mask = b["points"].to(dev), b["text_mask"].to(dev)
    text = texts_of(b)
    with torch.inference_mode():
        o32 = model(pts)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            o16 = model(pts)
        f32, f16 = o32["patch_feats"].float(), o16["patch_feats"].float()
        cos = F.cosine_similarity(f32, f16, dim=-1)

        def point_labels(o: dict[str, Any], feats: torch.Tensor) -> torch.Tensor:
            sim = torch.einsum("bgd,bld->bgl", feats, text).masked_fill(~mask[:, None], -2.0)
            ps = propagate_to_points(sim, pts, o["centers"], patch_idx=o["patch_idx"], mode="nearest")
            return ps.argmax(-1)

        l32, l16 = point_labels(o32, f32), point_labels(o16, f16)
    agree = float((l32 == l16).float().mean())
    gt = b["labels"].to(dev)
    valid = gt >= 0
    acc32 = float((l32 == gt)[valid].float().mean())
    rows = [{
        "name": "tiny model bf16 vs fp32", "train_steps": done, "train_s": train_s,
        "loss_first": losses[0] if losses else float("nan"), "loss_last": losses[-1] if losses else float("nan"),
        "test_shapes": len(test), "points": n_pts, "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
        "argmax_agreement": agree, "fp32_point_accuracy": acc32,
    }]
    targets = [
        {"target": "bf16 patch features mean cosine to fp32 >= 0.99", "measured": float(cos.mean()), "goal": 0.99,
         "unit": "", "met": bool(cos.mean() >= 0.99)},
        {"target": "bf16 argmax part agreement >= 99% of points", "measured": 100 * agree, "goal": 99.0,
         "unit": "%", "met": bool(agree >= 0.99)},
    ]
    notes = [f"patchalign3d_tiny trained {done} steps (batch {batch}, {train_s:.1f} s, budget {budget:.0f} s) on "
             f"{n_train} synthetic shapes with random fixed text embeddings; evaluated on {len(test)} test shapes.",
             "fp32_point_accuracy: the fp32 model's point accuracy against the synthetic ground truth (sanity check "
             "that training did something)."]
    return {"rows": rows, "notes": notes, "targets": targets}
